//! In-proxy inference for the PostgresML `pgml.*` API: finding `pgml.*` calls and binding their arguments to
//! PostgresML's signatures (`call`), the versioned `pgml` model registry schema (`registry`), linear and ridge
//! regression as plain Rust (`linear`), and answering the calls Ocelot serves so far (`serve`: train for linear and
//! ridge regression, deploy by model id, predict with constant arguments). Other `pgml.*` calls reach the servers
//! unchanged.

pub mod call;
mod deploy;
pub mod linear;
pub mod logistic;
mod models;
pub mod per_row;
pub mod registry;
pub mod serve;
mod train;
