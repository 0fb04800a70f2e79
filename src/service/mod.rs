//! The service layer: what the API asks for, done through storage, git
//! and the runtime. `App` holds them; each module is one kind of work.

pub mod api_tokens;
pub mod compose;
pub mod edits;
pub mod elements;
pub mod environments;
pub mod gate;
pub mod graph;
pub mod imports;
pub mod manifests;
pub mod policy;
pub mod principal;
pub mod quotas;
pub mod realtime;
pub mod source_sync;
pub mod streams;
pub mod throttle;
pub mod variables;

use crate::config::Config;
use crate::events::Bus;
use crate::limits::RateLimits;
use crate::runtime::Runtime;
use crate::secrets::Secrets;
use crate::source::Source;
use crate::store::Db;
use crate::types::Registry;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub types: Registry,
    pub bus: Bus,
    pub source: Source,
    pub limits: Arc<RateLimits>,
    pub secrets: Arc<Secrets>,
    /// Live websocket hubs.
    pub runtime: Runtime,
    /// Writers of each element, in order.
    pub writers: elements::Writers,
    /// Open event streams, held to their limits.
    pub streams: crate::service::streams::Streams,
    /// When tokens were last used, written in batches.
    pub touches: api_tokens::Touches,
    /// Failed token checks per address.
    pub auth_failures: throttle::AuthFailures,
    /// Running git processes, per node, token and address.
    pub git_places: Arc<throttle::Places>,
    /// Each circle's share of the write path, and its quotas.
    pub quotas: quotas::Quotas,
    /// Turns true when the server starts shutting down; long-lived
    /// responses (event streams) end on it.
    pub shutdown: watch::Receiver<bool>,
}

pub type SharedApp = Arc<App>;

impl App {
    /// Holds the pre-receive script every `git receive-pack` runs.
    pub fn hooks_dir(&self) -> PathBuf {
        self.config.data_dir.join("hooks")
    }

    /// The elementd binary the hook script runs.
    pub fn hook_bin(&self) -> PathBuf {
        self.config
            .hook_bin
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("elementd"))
    }
}
