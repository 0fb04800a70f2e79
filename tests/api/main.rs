//! Integration tests: the real server, real HTTP clients.

mod auth;
mod cli;
mod cluster;
mod compose;
mod elements;
mod errors;
mod events;
mod git;
mod git_ops;
mod graph;
mod helpers;
mod inputs;
mod reads;
mod secrets;
mod source_limits;
mod ws;
mod ws_client;
mod ws_ops;
mod ws_policy;
mod ws_runtime;
