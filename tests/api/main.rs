//! Integration tests: the real server, real HTTP clients.

mod auth;
mod cli;
mod compose;
mod elements;
mod errors;
mod events;
mod git;
mod helpers;
mod reads;
