//! In-proxy inference for the PostgresML `pgml.*` API. `call` finds `pgml.*` calls and binds their arguments to
//! PostgresML's signatures; `registry` is the versioned `pgml` schema; `serve` answers the calls Ocelot serves
//! (train, deploy, predict and its variants, per-row predictions over a query's rows), with `train`, `deploy`,
//! `per_row` and `rows`, `models` and `cache` (the per-pool model cache) behind it. The estimators are plain Rust,
//! in `estimators`. `chunk` splits text as LangChain's splitters do; `vector` has the vector functions; `embed`
//! runs sentence-transformers models with candle, and `inline` puts constant embeddings into bigger queries. Over
//! the extended protocol, `params` types and substitutes a statement's parameters and `statement` describes its
//! result. `ab` splits a project's predictions between two models; `drift` compares the features a model is fed
//! with its training data; `logging` keeps a sample of predictions for live metrics against actual outcomes. Other
//! `pgml.*` calls reach the servers unchanged.

pub mod ab;
pub mod cache;
pub mod call;
pub mod chunk;
mod deploy;
pub mod drift;
pub mod embed;
pub mod embed_queue;
pub mod estimators;
pub mod inline;
pub mod logging;
mod models;
pub mod params;
pub mod per_row;
pub mod registry;
mod relation;
mod rows;
pub mod serve;
pub mod statement;
mod train;
pub mod vector;
