//! Serving the calls Ocelot answers: `serve` dispatches them (predict and its variants, embed, vector functions,
//! chunking), `cache` holds a pool's deployed models, `per_row` and `rows` predict over the rows of a query,
//! `embed` and `embed_queue` run sentence-transformers models with candle, `vector` has the vector functions and
//! `chunk` splits text as LangChain's splitters do.

pub mod cache;
pub(crate) mod chunk;
pub(crate) mod constant;
mod deploys;
pub(crate) mod embed;
pub mod embed_queue;
pub(crate) mod per_row;
pub(crate) mod rows;
pub mod serve;
pub(crate) mod vector;
