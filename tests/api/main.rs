//! Integration tests: the real server, real HTTP clients.

mod auth;
mod cli;
mod elements;
mod errors;
mod events;
mod helpers;
mod reads;
mod ws;
mod ws_client;
mod ws_ops;
mod ws_runtime;
