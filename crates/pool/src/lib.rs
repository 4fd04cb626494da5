//! Server connections and the pools that share them among clients: connecting and authenticating to PostgreSQL
//! ([`connect`]), one live server connection with the state Ocelot tracks on it ([`server`]), a bounded pool per
//! (pool, user, shard, server) with an RAII checkout guard ([`pool`]), statements shared across connections
//! ([`prepared`]) and the shared LISTEN connection ([`listener`]). Which server a request gets, and everything a
//! database is besides its servers (users, shards, routing, models), is the `ocelot` crate's `database`, above this.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod address;
pub mod canonical;
pub mod client_params;
pub mod connect;
pub mod error;
pub mod exec;
pub mod listener;
pub mod params;
#[allow(clippy::module_inception)]
pub mod pool;
pub mod prepared;
pub mod server;
pub mod state;
mod upkeep;

pub use address::Address;
pub use error::PoolError;
pub use params::ServerParams;
pub use pool::{Pooled, ServerPool};
pub use server::{CancelTarget, ServerConn};
pub use state::{Applied, Dirty, ServerState};
