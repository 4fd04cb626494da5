//! In-proxy inference for the PostgresML `pgml.*` API. So far: finding `pgml.*` calls and binding their arguments
//! to PostgresML's signatures (`call`), and the versioned `pgml` model registry schema (`registry`). Training,
//! deployment and prediction are not served yet, so `pgml.*` calls still reach the servers unchanged.

pub mod call;
pub mod registry;
