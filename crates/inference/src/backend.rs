//! What inference asks of the databases it serves, as traits of its own: a [`Backend`] is one pool seen from
//! inference (its name, shard count, key sharding, model cache and registry, a server connection of a shard, the
//! shared LISTEN connection), a [`Conn`] a server connection held for a few simple queries (registry reads and
//! writes, training reads, COPY of loaded datasets), and a [`RowSource`] a client's read route for the rows of a
//! per-row prediction. The pools implement them above this layer, so inference never sees how servers are chosen,
//! pooled or synced. Futures are boxed so the traits stay object-safe: these calls are the slow path (one per
//! training read or registry lookup), never the per-query forwarding path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedSender;

use crate::serving::cache::Models;
use ocelot_protocol::decode::ErrorFields;
use ocelot_protocol::rows::Answer;
use ocelot_router::merge::Merge;
use ocelot_router::sharding::Sharder;

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which server of a shard a connection is wanted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The primary: writes, and reads that must see them.
    Primary,
    /// Any healthy server, replicas included.
    Any,
}

/// A failure of a backend call.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server answered the query with an ErrorResponse.
    #[error("{}", .0.message)]
    Query(Box<ErrorFields>),
    /// No answer (no server, the connection was lost, a timeout...), with the SQLSTATE a client would see.
    #[error("{message}")]
    Unavailable { code: String, message: String },
}

impl BackendError {
    /// The SQLSTATE of the failure.
    pub(crate) fn code(&self) -> &str {
        match self {
            BackendError::Query(fields) => &fields.code,
            BackendError::Unavailable { code, .. } => code,
        }
    }
}

/// One pool as inference sees it.
pub trait Backend: Send + Sync + 'static {
    /// The pool's database name (for logs).
    fn database(&self) -> &str;
    /// How many shards the pool has (at least one).
    fn shard_count(&self) -> usize;
    /// How the pool's queries map to shards.
    fn sharder(&self) -> &Sharder;
    /// The pool's deployed models and their registry state.
    fn models(&self) -> &Models;
    /// The pool holding this one's registry, when it is another one (`[inference] registry_pool`).
    fn registry(&self) -> Option<Arc<dyn Backend>>;
    /// A server connection on `shard`, held until the returned value is dropped.
    fn conn(
        &self,
        shard: usize,
        which: Which,
    ) -> BoxFuture<'_, Result<Box<dyn Conn>, BackendError>>;
    /// Subscribes `mailbox` (as listener `id`) to `channel` on the pool's shared LISTEN connection.
    fn listen<'a>(
        &'a self,
        id: i32,
        channel: &'a str,
        mailbox: UnboundedSender<Bytes>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A server connection held for a few simple queries.
pub trait Conn: Send {
    /// Runs `sql`, discarding any rows.
    fn run<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;
    /// The first column of the first row of `sql`'s answer (NULL and no row as `None`).
    fn query_value<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>>;
    /// The first row of `sql`'s answer, as text.
    fn query_row<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Option<String>>>, BackendError>>;
    /// Every row of `sql`'s answer, as text.
    fn query_rows<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<Option<String>>>, BackendError>>;
    /// Runs `sql` (a `COPY ... FROM STDIN`) and sends `data` as its rows.
    fn copy_in<'a>(
        &'a mut self,
        sql: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Sends `query` (a whole Query message) and gathers the answer, row bytes included.
    fn exec<'a>(&'a mut self, query: &'a [u8]) -> BoxFuture<'a, Result<Answer, BackendError>>;
}

/// A client's reads: where the rows of a per-row prediction come from, under the client's session settings.
pub trait RowSource: Send + Sync {
    /// Sends each `(shard, Query message)` and merges the answers as `merge` says (without ReadyForQuery).
    fn fan_out<'a>(
        &'a self,
        requests: &'a [(usize, Bytes)],
        merge: &'a Merge,
    ) -> BoxFuture<'a, Result<BytesMut, BackendError>>;
}
