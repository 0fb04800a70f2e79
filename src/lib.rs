//! elementd: a Git-backed element platform service.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod error_codes;
pub mod event_kind;
pub mod events;
pub mod ids;
pub mod json;
pub mod limits;
pub mod model;
pub mod modifiers;
pub mod named;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod service;
pub mod source;
pub mod store;
pub mod sync;
pub mod types;
pub mod var_types;
pub mod vars;
pub mod webhook;
