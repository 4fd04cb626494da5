//! Ocelot's integration tests against real PostgreSQL 15 servers, in one test binary so that the library (with
//! candle) is linked once and the tests of every file share the two test threads. Tests that measure the test
//! process itself (its memory, its log output) or time a load against faults have binaries of their own
//! (`tests/proxy.rs`, `tests/ops.rs`, `tests/limits.rs`, `tests/faults.rs`, `tests/soak.rs`).

#[path = "../common/mod.rs"]
mod common;

mod centroids;
mod cli;
mod dashboard;
mod drivers;
mod fidelity;
mod inference;
mod isolation;
mod modelops;
mod prediction_log;
mod prepared;
mod properties;
mod replicas;
mod sharding;
mod transport;
