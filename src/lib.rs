//! Ocelot: a PostgreSQL connection pooler and sharding router. Clients speak the PostgreSQL v3 protocol to it as
//! if it were the database; it authenticates them, pools a few server connections among many clients in
//! transaction or session mode, and forwards messages as bytes.
//!
//! Layers, bottom up. In crates of their own, which cannot see anything above them: [`protocol`] (sans-IO wire
//! format and auth), [`config`] (PgCat-compatible `pgcat.toml`, parsed and validated as pure steps), [`router`]
//! (query classification, shard keys, fan-out plans and row merging, without I/O), [`stats`] (counters), [`net`]
//! (sockets, TLS and buffers), [`pool`] (server connections and their pools). In this crate: [`database`] (a
//! pool's users, shards, routing and models above its servers; choosing a server), [`inference`] (the
//! in-proxy `pgml.*` API: training, serving, the model registry), [`proxy`] (the client side: login, the session
//! loop, cancellation, shutdown), [`admin`] (the admin console, metrics and dashboard).

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod cli;
pub mod database;
pub mod proxy;
pub mod shared;

// The lower layers' crates, re-exported under the module paths they had before they moved.
pub use ocelot_config as config;
pub use ocelot_inference as inference;
pub use ocelot_net as net;
pub use ocelot_pool as pool;
pub use ocelot_protocol as protocol;
pub use ocelot_router as router;
pub use ocelot_stats as stats;
