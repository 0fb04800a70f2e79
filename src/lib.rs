//! elementd: a Git-backed element platform service.

pub mod api;
pub mod app;
pub mod cluster;
pub mod composition;
pub mod config;
pub mod elements;
pub mod error;
pub mod events;
pub mod graph;
pub mod model;
pub mod policy;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod source;
pub mod store;
pub mod types;
