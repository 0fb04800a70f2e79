//! The shared state every part of the server works through.

use crate::config::Config;
use crate::events::Bus;
use crate::runtime::Runtime;
use crate::store::Db;
use crate::types::Registry;
use std::sync::Arc;
use tokio::sync::watch;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub types: Registry,
    pub bus: Bus,
    /// Live websocket hubs.
    pub runtime: Runtime,
    /// Turns true when the server starts shutting down; long-lived
    /// responses (event streams) end on it.
    pub shutdown: watch::Receiver<bool>,
}

pub type SharedApp = Arc<App>;
