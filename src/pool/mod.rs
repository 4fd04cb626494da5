//! Server connections and the pools that share them among clients: connecting and authenticating to PostgreSQL
//! ([`connect`]), one live server connection with the state Ocelot tracks on it ([`server`]), a bounded pool per
//! (pool, user, shard, server) with an RAII checkout guard ([`pool`]), and the set of all pools built from the
//! config ([`cluster`]).

pub mod address;
pub mod balance;
pub mod canonical;
pub mod cluster;
pub mod connect;
mod dynamic;
pub mod error;
pub mod health;
pub mod lag;
pub mod listener;
pub mod params;
#[allow(clippy::module_inception)]
pub mod pool;
pub mod prepared;
pub mod server;
mod upkeep;

pub use address::Address;
pub use cluster::{Cluster, UserPool};
pub use error::PoolError;
pub use params::ServerParams;
pub use pool::{Pooled, ServerPool};
pub use server::{CancelTarget, ServerConn};
