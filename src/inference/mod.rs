//! In-proxy inference for the PostgresML `pgml.*` API will live here (model registry, cache, runtimes). It is not
//! implemented yet and nothing intercepts `pgml.*` calls: they reach the server unchanged.
