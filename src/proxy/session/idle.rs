//! What a session does with a request while it holds no server: answers Ocelot gives itself (local commands,
//! `pgml.*` calls), requests that run on several shards (fan-out reads, writes, COPY, batches), and otherwise
//! checking out the server the request is routed to.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{route, Flow, Session};
use crate::pool::PoolError;
use crate::protocol::codes::{frontend, txn};
use crate::protocol::encode;
use crate::protocol::frame::Piece;
use crate::proxy::error::ClientError;

impl Session {
    /// Handles the piece at the start of `cbuf` when no server is held: answers what Ocelot answers itself,
    /// runs requests that need several shards, or checks out the server the request is routed to.
    pub(super) async fn without_server(&mut self, piece: &Piece) -> Result<Flow, ClientError> {
        let code = piece.code();
        let piece = *piece;
        if self.try_local(&piece).await? || self.skip_without_server(&piece).await? {
            return Ok(Flow::Next);
        }
        match self.parse_locally(&piece).await? {
            Some(true) => return Ok(Flow::Next),
            Some(false) => {}
            None => return Ok(Flow::Wait),
        }
        // pgml.* calls Ocelot serves itself, by simple Query or extended-protocol statements.
        match self.intercept_pgml(&piece).await? {
            super::pgml_ext::Intercept::Pass => {}
            super::pgml_ext::Intercept::Served => return Ok(Flow::Next),
            super::pgml_ext::Intercept::Wait | super::pgml_ext::Intercept::Hold => {
                return Ok(Flow::Wait)
            }
        }
        // In a sharded pool a pipelined request is routed whole: its Binds may name different shards.
        if self.pool.shards.len() > 1
            && matches!(piece, Piece::Whole(_))
            && matches!(code, frontend::PARSE | frontend::BIND)
            && !route::request_complete(&self.cbuf)
        {
            return Ok(Flow::Wait);
        }
        let want = self.want();
        // `shard()` without the default filled in, so random_healthy can try another shard.
        let attached = match self.shard_at(0) {
            Ok(route::Target::Default)
                if self.pool.default_shard == crate::config::DefaultShard::RandomHealthy =>
            {
                self.attach_healthy(want).await
            }
            Ok(route::Target::Default) => {
                let shard = self.default_shard();
                self.attach(want, shard).await
            }
            Ok(route::Target::One(shard)) => self.attach(want, shard).await,
            // Boxed: requests for several shards are rare, and their state would size every client's task.
            Ok(t) => return Box::pin(self.several_shards(t, piece, want)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = attached {
            self.checkout_failed(e, &piece).await?;
            return Ok(Flow::Next);
        }
        Ok(Flow::Attached)
    }

    /// `default_shard = "random_healthy"`: when the chosen shard cannot serve, the other healthy shards are tried
    /// in turn before the client is told.
    async fn attach_healthy(
        &mut self,
        want: crate::database::balance::Want,
    ) -> Result<(), PoolError> {
        let first = self.pool.random_shard(true);
        let mut result = self.attach(want, first).await;
        let mut tried = vec![first];
        while matches!(&result, Err(e) if e.is_retryable()) && tried.len() < self.pool.shards.len()
        {
            let next = self.pool.random_shard(true);
            let next = if tried.contains(&next) {
                match (0..self.pool.shards.len()).find(|s| !tried.contains(s)) {
                    Some(s) => s,
                    None => break,
                }
            } else {
                next
            };
            tried.push(next);
            result = self.attach(want, next).await;
        }
        result
    }

    /// A request for several shards (fan-out, batches, COPY), or one refused for needing them.
    async fn several_shards(
        &mut self,
        t: route::Target,
        piece: Piece,
        want: crate::database::balance::Want,
    ) -> Result<Flow, ClientError> {
        let failed = match t {
            t @ (route::Target::All(..) | route::Target::Write(_)) => {
                let write = matches!(t, route::Target::Write(_));
                let shards: Vec<usize> = match &t {
                    route::Target::All(_, s) => s.clone(),
                    route::Target::Write(p) => p.iter().map(|(s, _, _)| *s).collect(),
                    _ => Vec::new(),
                };
                if write && shards.len() > 1 && !self.pool.two_phase {
                    Err(PoolError::NeedsTwoPhase {
                        pool: self.pool.database.clone(),
                        shards: route::shard_list(shards),
                    })
                } else {
                    match self.shard_requests(t) {
                        // The rest of the extended request is still on its way.
                        Ok(None) => return Ok(Flow::Wait),
                        Err(why) => Err(PoolError::Unmergeable {
                            pool: self.pool.database.clone(),
                            why: why.into(),
                        }),
                        Ok(Some(prepared)) if write => {
                            Box::pin(self.run_on_shards(prepared)).await?;
                            return Ok(Flow::Next);
                        }
                        Ok(Some(prepared)) => match self.fan_out_read(prepared, want).await? {
                            Ok(()) => return Ok(Flow::Next),
                            Err(e) => Err(e),
                        },
                    }
                }
            }
            route::Target::Batch(shards) if !self.pool.two_phase => {
                let mut set = shards.clone();
                set.sort_unstable();
                set.dedup();
                Err(PoolError::NeedsTwoPhase {
                    pool: self.pool.database.clone(),
                    shards: route::shard_list(set),
                })
            }
            route::Target::Batch(shards) => {
                if !Box::pin(self.run_batch(shards)).await? {
                    return Ok(Flow::Wait);
                }
                return Ok(Flow::Next);
            }
            route::Target::CopyIn(plan, simple) => {
                match self.copy_target(plan, simple, &piece).await? {
                    Ok(flow) => return Ok(flow),
                    Err(e) => Err(e),
                }
            }
            route::Target::One(shard) => self.attach(want, shard).await,
            route::Target::Default => self.attach(want, self.attached_shard).await,
        };
        if let Err(e) = failed {
            self.checkout_failed(e, &piece).await?;
            return Ok(Flow::Next);
        }
        Ok(Flow::Attached)
    }

    /// COPY FROM STDIN into the sharded table, rows split by key; refused without two-phase commit (answered
    /// in full for an extended-protocol COPY, whose client sends its data before it reads the error).
    async fn copy_target(
        &mut self,
        plan: crate::router::copy::CopyPlan,
        simple: bool,
        piece: &Piece,
    ) -> Result<Result<Flow, PoolError>, ClientError> {
        let refusal = || PoolError::NeedsTwoPhase {
            pool: self.pool.database.clone(),
            shards: route::shard_list(0..self.pool.shards.len()),
        };
        let left = if !self.pool.two_phase {
            if simple {
                return Ok(Err(refusal()));
            }
            let why = refusal().to_string();
            self.answer_extended_copy_request();
            let code = crate::protocol::codes::sqlstate::FEATURE_NOT_SUPPORTED;
            Box::pin(self.copy_refused(plan, code, why)).await?
        } else {
            if simple {
                self.cbuf.advance(piece.len());
            } else {
                self.answer_extended_copy_request();
            }
            Box::pin(self.copy_in(plan, simple)).await?
        };
        Ok(Ok(if left { Flow::Leave } else { Flow::Next }))
    }

    /// A read fanned out to several shards and answered with the merged rows; the pool's error when a shard
    /// could not answer (nothing was sent to the client then).
    async fn fan_out_read(
        &mut self,
        prepared: super::multi::Prepared,
        want: crate::database::balance::Want,
    ) -> Result<Result<(), PoolError>, ClientError> {
        let codes = prepared
            .ext
            .as_ref()
            .map(|r| r.bind.result_formats.clone())
            .unwrap_or_default();
        let primary_reads = self.primary_reads();
        let answer = crate::database::fanout::run(
            &self.pool,
            &self.core.params,
            &prepared.requests,
            want,
            primary_reads,
            &prepared.merge,
            &codes,
        );
        let merged = match Box::pin(answer).await {
            Ok(merged) => merged,
            Err(e) => return Ok(Err(e)),
        };
        self.cbuf.advance(prepared.len);
        self.answer(&prepared, &merged);
        let status = if self.pending_begin.is_some() {
            txn::IN_TRANSACTION
        } else {
            txn::IDLE
        };
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(Ok(()))
    }

    /// Answers the Query of `len` bytes at the start of `cbuf` when it is a `pgml.*` call Ocelot serves, ending
    /// with ReadyForQuery(`status`). Returns false when the call is the server's.
    pub(super) async fn serve_inference(
        &mut self,
        len: usize,
        status: u8,
    ) -> Result<bool, ClientError> {
        let body = &self.cbuf[5..len];
        let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned();
        let Some(answer) = Box::pin(self.serve_pgml(&sql)).await? else {
            return Ok(false);
        };
        self.cbuf.advance(len);
        self.core.out.extend_from_slice(&answer);
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(true)
    }

    /// Serves `sql` when it is a `pgml.*` call Ocelot answers (`None` when it is the server's), writing the
    /// call's progress notices to the client while it runs.
    pub(super) async fn serve_pgml(&mut self, sql: &str) -> Result<Option<BytesMut>, ClientError> {
        let (want, primary_reads) = (self.want(), self.primary_reads());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reads = crate::database::backend::ClientReads {
            pool: &self.pool,
            params: &self.core.params,
            want,
            primary_reads,
        };
        let route = crate::inference::serving::serve::ReadRoute {
            rows: &reads,
            progress: Some(tx),
        };
        let backend: std::sync::Arc<dyn crate::inference::backend::Backend> = self.pool.clone();
        let serving = crate::inference::serving::serve::serve(&backend, sql, route);
        tokio::pin!(serving);
        let mut notice = BytesMut::new();
        loop {
            tokio::select! {
                answer = &mut serving => {
                    // Notices sent just before the end come before the answer, which the caller adds to `out`.
                    while let Ok(msg) = rx.try_recv() {
                        encode::notice_response(&mut self.core.out, &msg);
                    }
                    return Ok(answer);
                }
                Some(msg) = rx.recv() => {
                    // After what Ocelot already owes the client (ParseComplete, BindComplete).
                    notice.clear();
                    notice.extend_from_slice(&self.core.out);
                    self.core.out.clear();
                    encode::notice_response(&mut notice, &msg);
                    self.client.write_all(&notice).await?;
                }
            }
        }
    }
}
