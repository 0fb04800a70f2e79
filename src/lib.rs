//! elementd: a Git-backed element platform service.

pub mod api;
pub mod app;
pub mod config;
pub mod elements;
pub mod error;
pub mod events;
pub mod runtime;
pub mod server;
pub mod store;
pub mod types;
