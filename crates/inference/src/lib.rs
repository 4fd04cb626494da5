//! In-proxy inference for the PostgresML `pgml.*` API, grouped by responsibility: `sql` finds `pgml.*` calls,
//! binds their arguments to PostgresML's signatures and types their parameters over the extended protocol;
//! `serving` answers the calls Ocelot serves (predict and its variants, per-row predictions over a query's rows,
//! embeddings with candle, vector functions, text chunking) from a pool's model cache; `registry` is the versioned
//! `pgml` schema with the stored models, training and deploys; `ops` holds model operations (A/B tests, drift,
//! prediction logging); `estimators` the plain-Rust models. Other `pgml.*` calls reach the servers unchanged.
//! Rows, registry queries and the shared LISTEN connection are asked of a [`backend::Backend`], which the pools
//! above this crate implement: inference knows nothing of how servers are chosen or pooled.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod estimators;
pub mod ops;
pub mod registry;
pub mod serving;
pub mod sql;
