//! Integration tests: the real server, real HTTP clients.

mod abuse;
mod anonymous;
mod auth;
mod cli;
mod cluster;
mod compose;
mod edge;
mod elements;
mod errors;
mod events;
mod git;
mod git_ops;
mod git_policy;
mod graph;
mod helpers;
mod inputs;
mod outbound;
mod reads;
mod secrets;
mod source_limits;
mod tenancy;
mod ws;
mod ws_client;
mod ws_ops;
mod ws_policy;
mod ws_runtime;
