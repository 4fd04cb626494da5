//! The pools as inference's [`Backend`]: a pool's connections checked out through its balancer (primary reads
//! allowed, as the registry and training reads need), and a client's read route for per-row predictions, which
//! fans out with the client's session settings synced to each server.

use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedSender;

use crate::database::balance::Want;
use crate::database::fanout::{run, Merge};
use crate::database::UserPool;
use crate::inference::backend::{Backend, BackendError, BoxFuture, Conn, RowSource, Which};
use crate::inference::serving::cache::Models;
use crate::pool::client_params::ClientParams;
use crate::pool::{exec, PoolError, Pooled};
use crate::protocol::rows::Answer;
use crate::router::sharding::Sharder;

/// A pool's failure as inference sees it: the server's error fields, or the code and message a client would get.
fn backend_error(e: PoolError) -> BackendError {
    match e {
        PoolError::Query { fields, .. } => BackendError::Query(fields),
        other => BackendError::Unavailable {
            code: other.sqlstate().to_owned(),
            message: other.to_string(),
        },
    }
}

impl Backend for UserPool {
    fn database(&self) -> &str {
        &self.database
    }

    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn sharder(&self) -> &Sharder {
        &self.sharder
    }

    fn models(&self) -> &Models {
        &self.models
    }

    fn registry(&self) -> Option<Arc<dyn Backend>> {
        let pool = self.registry.get().and_then(Weak::upgrade)?;
        Some(pool)
    }

    fn conn(
        &self,
        shard: usize,
        which: Which,
    ) -> BoxFuture<'_, Result<Box<dyn Conn>, BackendError>> {
        let want = match which {
            Which::Primary => Want::Primary,
            Which::Any => Want::Any,
        };
        Box::pin(async move {
            let conn = self
                .checkout(shard, want, true)
                .await
                .map_err(backend_error)?;
            Ok(Box::new(Held(conn)) as Box<dyn Conn>)
        })
    }

    fn listen<'a>(
        &'a self,
        id: i32,
        channel: &'a str,
        mailbox: UnboundedSender<Bytes>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.listener().listen(id, channel, &mailbox).await })
    }
}

/// A checked-out server connection, back in its pool when dropped.
struct Held(Pooled);

impl Conn for Held {
    fn run<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { self.0.run(sql).await.map(drop).map_err(backend_error) })
    }

    fn query_value<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        Box::pin(async move { self.0.query_value(sql).await.map_err(backend_error) })
    }

    fn query_row<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Option<String>>>, BackendError>> {
        Box::pin(async move { self.0.query_row(sql).await.map_err(backend_error) })
    }

    fn query_rows<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<Option<String>>>, BackendError>> {
        Box::pin(async move { self.0.query_rows(sql).await.map_err(backend_error) })
    }

    fn copy_in<'a>(
        &'a mut self,
        sql: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move { self.0.copy_in(sql, data).await.map_err(backend_error) })
    }

    fn exec<'a>(&'a mut self, query: &'a [u8]) -> BoxFuture<'a, Result<Answer, BackendError>> {
        Box::pin(async move { exec::exec(&mut self.0, query).await.map_err(backend_error) })
    }
}

/// A client's read route: its pool, session settings, which servers it reads from and whether the primary is one.
pub(crate) struct ClientReads<'a> {
    pub(crate) pool: &'a Arc<UserPool>,
    pub(crate) params: &'a ClientParams,
    pub(crate) want: Want,
    pub(crate) primary_reads: bool,
}

impl RowSource for ClientReads<'_> {
    fn fan_out<'a>(
        &'a self,
        requests: &'a [(usize, Bytes)],
        merge: &'a Merge,
    ) -> BoxFuture<'a, Result<BytesMut, BackendError>> {
        Box::pin(async move {
            run(
                self.pool,
                self.params,
                requests,
                self.want,
                self.primary_reads,
                merge,
                &[],
            )
            .await
            .map_err(backend_error)
        })
    }
}
