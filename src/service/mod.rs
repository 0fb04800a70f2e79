//! The service layer: what the API asks for, done through storage, git
//! and the runtime. `App` holds them; each module is one kind of work.

pub mod api_tokens;
pub mod compose;
pub mod ctx;
pub mod edits;
pub mod elements;
pub mod environments;
pub mod facets;
pub mod gate;
pub mod graph;
pub mod imports;
pub mod manifests;
pub mod node;
pub mod policy;
pub mod principal;
pub mod quotas;
pub mod realtime;
pub mod source_sync;
pub mod streams;
pub mod throttle;
pub mod variables;
pub mod webhooks;
pub mod write_rules;
pub mod ws_checks;

use crate::clock::Clock;
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
    pub(in crate::service) config: Config,
    pub(in crate::service) db: Db,
    pub(in crate::service) types: Registry,
    pub(in crate::service) bus: Bus,
    pub(in crate::service) source: Source,
    pub(in crate::service) limits: Arc<RateLimits>,
    pub(in crate::service) secrets: Arc<Secrets>,
    /// Live websocket hubs.
    pub(in crate::service) runtime: Runtime,
    /// Writers of each element, in order.
    pub(in crate::service) writers: elements::Writers,
    /// Open event streams, held to their limits.
    pub(in crate::service) streams: crate::service::streams::Streams,
    /// When tokens were last used, written in batches.
    pub(in crate::service) touches: api_tokens::Touches,
    /// Failed token checks per address.
    pub(in crate::service) auth_failures: throttle::AuthFailures,
    /// Running git processes, per node, token and address.
    pub(in crate::service) git_places: Arc<throttle::Places>,
    /// Each circle's share of the write path, and its quotas.
    pub(in crate::service) quotas: quotas::Quotas,
    /// Turns true when the server starts shutting down; long-lived
    /// responses (event streams) end on it.
    pub(in crate::service) shutdown: watch::Receiver<bool>,
    /// This server's clock (the caches, the bus and the runtime hold
    /// clones): token expiry and the auth throttle read it.
    pub(in crate::service) clock: Clock,
}

pub type SharedApp = Arc<App>;

/// The parts `App` is composed of at start.
pub struct Parts {
    pub config: Config,
    pub db: Db,
    pub types: Registry,
    pub bus: Bus,
    pub secrets: Arc<Secrets>,
    pub runtime: Runtime,
    pub shutdown: watch::Receiver<bool>,
    /// The one the database's caches, the bus and the runtime were given.
    pub clock: Clock,
}

impl App {
    /// The composition root: the server hands in the parts it started.
    pub fn new(p: Parts) -> App {
        App {
            source: Source::new(p.config.repos_dir()),
            config: p.config,
            db: p.db,
            types: p.types,
            bus: p.bus,
            limits: Default::default(),
            secrets: p.secrets,
            runtime: p.runtime,
            streams: Default::default(),
            writers: Default::default(),
            touches: Default::default(),
            auth_failures: Default::default(),
            git_places: Default::default(),
            quotas: Default::default(),
            shutdown: p.shutdown,
            clock: p.clock,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn types(&self) -> &Registry {
        &self.types
    }
    /// The realtime runtime, for the upgrade that hands it a socket and
    /// for shutdown.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
    /// Counters every op and message is charged to.
    pub fn rate_limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }
    pub fn streams(&self) -> &streams::Streams {
        &self.streams
    }
    pub fn touches(&self) -> &api_tokens::Touches {
        &self.touches
    }
    pub fn auth_failures(&self) -> &throttle::AuthFailures {
        &self.auth_failures
    }
    pub fn git_places(&self) -> &Arc<throttle::Places> {
        &self.git_places
    }
    /// This server's clock: judge times by it, not by the system's.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
    /// Turns true when the server starts shutting down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

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

#[cfg(test)]
pub(crate) mod tests;
