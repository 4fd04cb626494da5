//! Ocelot: a PostgreSQL connection pooler and sharding router. Clients speak the PostgreSQL v3 protocol to it as
//! if it were the database; it authenticates them, pools a few server connections among many clients in
//! transaction or session mode, and forwards messages as bytes.
//!
//! Layers, bottom up: [`protocol`] (sans-IO wire format and auth), [`net`] (sockets and buffers), [`pool`]
//! (server connections and their pools), [`proxy`] (the client side: login, the transaction loop, cancellation,
//! shutdown), [`config`] (PgCat-compatible `pgcat.toml`). [`router`] and [`inference`] are placeholders for the
//! query router and the in-proxy `pgml.*` API.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod cli;
pub mod inference;
pub mod net;
pub mod pool;
pub mod proxy;
pub mod stats;

/// So is the configuration (pure parsing and validation).
pub use ocelot_config as config;
/// The wire protocol lives in its own crate (no tokio, no I/O); re-exported so that `crate::protocol` paths hold.
pub use ocelot_protocol as protocol;
/// And the query router (pure functions of the query text and the config).
pub use ocelot_router as router;
