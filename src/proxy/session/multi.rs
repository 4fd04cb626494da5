//! A session's work on several shards at once. A write that touches several shards runs on one primary
//! connection per shard, each in a transaction, and commits atomically through `distributed::commit` (two-phase
//! commit); without `two_phase_commit` it is refused before anything runs. Inside an explicit transaction the
//! connections stay with the client: the current one takes the forwarded traffic and the others are parked until
//! a statement needs their shard, and COMMIT or ROLLBACK ends them all together.

use bytes::BytesMut;
use futures_util::future::join_all;

use super::route::{Target, WritePart};
use super::Session;
use crate::database::balance::Want;
use crate::database::distributed;
use crate::database::fanout::{
    binary_columns, grouped_shard_binary, merge_answers, sync_params, Merge,
};
use crate::pool::exec::{self, exec, Answer};
use crate::pool::{PoolError, Pooled};
use crate::protocol::codes::frontend;
use crate::protocol::codes::{backend, txn};
use crate::protocol::encode;
use crate::protocol::frame::Header;
use crate::protocol::frame::Splitter;
use crate::proxy::error::ClientError;
use crate::proxy::extfan::{self, ExtRequest};
use crate::proxy::tracker::TxnTracker;
use bytes::Buf;

/// A request ready to run on several shards.
pub(super) struct Prepared {
    /// What each shard runs (whole protocol messages).
    pub(crate) requests: Vec<(usize, bytes::Bytes)>,
    pub(crate) merge: Merge,
    /// The client's extended-protocol request, when it is one.
    pub(crate) ext: Option<ExtRequest>,
    /// Bytes of the client buffer the request takes.
    pub(crate) len: usize,
}

/// A connection of the client's cross-shard transaction that is not the current one.
pub(crate) struct Parked {
    pub(crate) shard: usize,
    pub(crate) server: Pooled,
}

/// How a transaction-control statement ends a cross-shard transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    Commit,
    Rollback,
}

/// COMMIT/END or ROLLBACK/ABORT (alone in a simple Query).
pub(super) fn transaction_end(body: &[u8]) -> Option<Finish> {
    let text = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).ok()?;
    let norm = text
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    if norm.contains(';') {
        return None;
    }
    match norm.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["commit" | "end"] | ["commit" | "end", "work" | "transaction"] => Some(Finish::Commit),
        ["rollback" | "abort"] | ["rollback" | "abort", "work" | "transaction"] => {
            Some(Finish::Rollback)
        }
        _ => None,
    }
}

impl Session {
    /// Whether the client is inside a transaction block (one whose BEGIN Ocelot is still holding included).
    pub(super) fn in_transaction(&self) -> bool {
        self.pending_begin.is_some()
            || (self.server.is_some() && self.core.tracker.status() != txn::IDLE)
    }

    /// A primary connection of `shard` with the client's settings and, when `begin` is given, a transaction open.
    pub(super) async fn open(
        &mut self,
        shard: usize,
        begin: Option<&str>,
    ) -> Result<Pooled, PoolError> {
        let mut server = self.pool.checkout(shard, Want::Primary, true).await?;
        sync_params(&mut server, &mut self.core.params).await?;
        if let Some(begin) = begin {
            server.run(begin).await?;
        }
        Ok(server)
    }

    /// Makes `server` the current connection, for `shard`.
    pub(super) fn install(&mut self, shard: usize, server: Pooled) {
        self.slot.attach(&server.cancel);
        if let Some(map) = self.core.stmts.as_mut() {
            map.attach();
        }
        if let Some(fx) = self.core.effects.as_mut() {
            fx.attach();
        }
        self.core.ssplit = Splitter::new(server.max_message());
        self.core.tracker = TxnTracker::default();
        self.core.tracker.set_status(server.state.txn_status);
        self.attached_shard = shard;
        self.attached_want = Some(Want::Primary);
        self.core.replay = None;
        self.server = Some(server);
    }

    /// Inside a transaction that is idle on its current shard: parks the current connection and makes `shard`'s
    /// current, joining that shard to the transaction if it is new.
    pub(super) async fn swap_to(&mut self, shard: usize) -> Result<(), PoolError> {
        let next = match self.parked.iter().position(|p| p.shard == shard) {
            Some(i) => self.parked.swap_remove(i).server,
            None => {
                let begin = self.txn_begin.clone();
                self.open(shard, Some(&begin)).await?
            }
        };
        if let Some(current) = self.server.take() {
            self.slot.detach();
            self.parked.push(Parked {
                shard: self.attached_shard,
                server: current,
            });
        }
        self.install(shard, next);
        Ok(())
    }

    /// What each shard runs for the request at the start of `cbuf` (a simple Query or a whole extended-protocol
    /// request), going to several shards as `target` says. `Ok(None)` while the extended request is incomplete.
    pub(super) fn shard_requests(&self, target: Target) -> Result<Option<Prepared>, &'static str> {
        let (merge, parts): (Merge, Vec<WritePart>) = match target {
            Target::All(merge, shards) => (
                merge,
                shards
                    .into_iter()
                    .map(|s| (s, String::new(), None))
                    .collect(),
            ),
            Target::Write(parts) => (Merge::Write, parts),
            _ => return Err("this request"),
        };
        let Ok(Some(h)) = Header::parse(&self.cbuf, u32::MAX) else {
            return Ok(None);
        };
        if h.code == frontend::QUERY {
            let body = &self.cbuf[5..h.total()];
            let text =
                String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned();
            let requests = parts
                .into_iter()
                .map(|(shard, sql, _)| {
                    let mut q = BytesMut::new();
                    encode::query(&mut q, &shard_sql(&merge, sql, &text));
                    (shard, q.freeze())
                })
                .collect();
            return Ok(Some(Prepared {
                requests,
                merge,
                ext: None,
                len: h.total(),
            }));
        }
        let Some(req) = extfan::decode(&self.cbuf, self.core.stmts.as_ref())? else {
            return Ok(None);
        };
        let formats = shard_formats(&merge, &req.bind.result_formats);
        let requests = parts
            .into_iter()
            .map(|(shard, sql, subset)| {
                let sql = shard_sql(&merge, sql, &req.sql);
                (
                    shard,
                    req.shard_request(&sql, subset.as_deref(), formats.as_deref()),
                )
            })
            .collect();
        Ok(Some(Prepared {
            requests,
            merge,
            len: req.len,
            ext: Some(req),
        }))
    }

    /// The answer to a request run on several shards, as the client expects it (ReadyForQuery excluded).
    pub(super) fn answer(&mut self, prepared: &Prepared, merged: &[u8]) {
        match &prepared.ext {
            None => self.core.out.extend_from_slice(merged),
            Some(req) => {
                req.envelope(merged, &mut self.core.out);
                if let (Some((name, body)), Some(map)) = (&req.parse, self.core.stmts.as_mut()) {
                    if !name.is_empty()
                        && merged.first() != Some(&crate::protocol::codes::backend::ERROR_RESPONSE)
                    {
                        map.define(name, body, &self.pool.statements);
                    }
                }
            }
        }
    }

    /// Runs a prepared request in one transaction per shard and answers the client with the merged result.
    /// Outside a transaction block the parts commit together (or all roll back); inside one they stay open.
    pub(super) async fn run_on_shards(&mut self, prepared: Prepared) -> Result<(), ClientError> {
        self.cbuf.advance(prepared.len);
        self.pool
            .fanouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let explicit = self.in_transaction();
        let shards: Vec<usize> = prepared.requests.iter().map(|(s, _)| *s).collect();
        if shards.len() > 1
            && !self.pool.two_phase
            && matches!(prepared.merge, Merge::Write)
            && !explicit
        {
            let e = PoolError::NeedsTwoPhase {
                pool: self.pool.database.clone(),
                shards: super::route::shard_list(shards.iter().copied()),
            };
            return self
                .answer_error(distributed::Failure::Pool(e), false)
                .await;
        }
        if let Err(e) = self.join_all_shards(&shards, explicit).await {
            self.abandon_parts(explicit).await;
            return self
                .answer_error(distributed::Failure::Pool(e), explicit)
                .await;
        }
        let answers = {
            let mut parts = self.parts(&shards);
            join_all(
                parts
                    .iter_mut()
                    .zip(&prepared.requests)
                    .map(|((_, c), (_, q))| async move { exec(c, q).await }),
            )
            .await
        };
        let mut ok: Vec<Answer> = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(a) => ok.push(a),
                Err(e) => {
                    self.abandon_parts(explicit).await;
                    return self
                        .answer_error(distributed::Failure::Pool(e), explicit)
                        .await;
                }
            }
        }
        let failed = ok.iter().any(|a| a.error.is_some());
        let codes = prepared
            .ext
            .as_ref()
            .map(|r| r.bind.result_formats.clone())
            .unwrap_or_default();
        let mut merged = BytesMut::new();
        merge_answers(
            &mut merged,
            &self.pool,
            &ok,
            &prepared.merge,
            &shards,
            Want::Primary,
            true,
            &codes,
        )
        .await?;
        let (status, commit) = self.settle_parts(explicit, failed).await;
        match commit {
            None => self.answer(&prepared, &merged),
            Some(f) => self.core.out.extend_from_slice(&f.error_response()),
        }
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await
    }

    /// Ends a request that ran on several shards: inside a transaction block the parts stay open (failed when
    /// the request failed) and their status is reported; outside one they commit together, or all roll back
    /// when `failed`. Returns the status for ReadyForQuery and how the commit failed, if it did.
    async fn settle_parts(
        &mut self,
        explicit: bool,
        failed: bool,
    ) -> (u8, Option<distributed::Failure>) {
        if explicit {
            if failed {
                self.fail_all().await;
            }
            let status = self
                .server
                .as_ref()
                .map_or(txn::FAILED, |s| s.state.txn_status);
            self.core.tracker.set_status(status);
            return (status, None);
        }
        let result = if failed {
            self.rollback_all().await;
            Ok(())
        } else {
            self.commit_all().await
        };
        self.end_parts();
        (txn::IDLE, result.err())
    }

    /// Runs a pipelined batch whose Bind/Execute groups belong to different shards (`shard_of[i]` for group i):
    /// each shard runs its groups in order, in a transaction, and the client gets every answer in its own order,
    /// up to the first error. Outside a transaction block the shards commit together, as the batch's implicit
    /// transaction would; an error rolls all of them back. Returns false while the batch is incomplete.
    pub(super) async fn run_batch(&mut self, shard_of: Vec<usize>) -> Result<bool, ClientError> {
        let why: extfan::Unsupported =
            match extfan::decode_batch(&self.cbuf, self.core.stmts.as_ref()) {
                Ok(None) => return Ok(false),
                Ok(Some(b)) if b.groups.len() == shard_of.len() => {
                    self.cbuf.advance(b.len);
                    return self.run_batch_parts(b, shard_of).await;
                }
                Ok(Some(_)) => "a batch Ocelot read differently while routing it",
                Err(why) => why,
            };
        let len = batch_len(&self.cbuf);
        self.cbuf.advance(len);
        let e = PoolError::Unmergeable {
            pool: self.pool.database.clone(),
            why: why.into(),
        };
        let explicit = self.in_transaction();
        self.answer_error(distributed::Failure::Pool(e), explicit)
            .await?;
        Ok(true)
    }

    /// Runs a complete batch as [`Self::run_batch`] says.
    async fn run_batch_parts(
        &mut self,
        batch: extfan::ExtBatch,
        shard_of: Vec<usize>,
    ) -> Result<bool, ClientError> {
        let explicit = self.in_transaction();
        let mut shards: Vec<usize> = shard_of.clone();
        shards.sort_unstable();
        shards.dedup();
        if let Err(e) = self.join_all_shards(&shards, explicit).await {
            self.abandon_parts(explicit).await;
            self.answer_error(distributed::Failure::Pool(e), explicit)
                .await?;
            return Ok(true);
        }
        let requests = shard_requests_of(&batch, &shard_of, &shards);
        let answers = {
            let mut parts = self.parts(&shards);
            join_all(
                parts
                    .iter_mut()
                    .zip(&requests)
                    .map(|((_, c), q)| async move {
                        exec::send(c, q).await?;
                        exec::read_messages(c).await
                    }),
            )
            .await
        };
        let mut per_shard: Vec<std::collections::VecDeque<Vec<bytes::Bytes>>> = Vec::new();
        for a in answers {
            match a {
                Ok(m) => per_shard.push(extfan::split_groups(&m).into()),
                Err(e) => {
                    self.abandon_parts(explicit).await;
                    self.answer_error(distributed::Failure::Pool(e), explicit)
                        .await?;
                    return Ok(true);
                }
            }
        }
        let failed = self.interleave(&batch, &shard_of, &shards, &mut per_shard)
            | per_shard
                .iter()
                .flatten()
                .flatten()
                .any(|m| m.first() == Some(&backend::ERROR_RESPONSE));
        if !failed {
            if let Some(map) = self.core.stmts.as_mut() {
                for (name, body) in &batch.defines {
                    map.define(name, body, &self.pool.statements);
                }
            }
        }
        let (status, commit) = self.settle_parts(explicit, failed).await;
        if let Some(f) = commit {
            self.core.out.extend_from_slice(&f.error_response());
        }
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(true)
    }

    /// Writes the shards' answers to the batch's groups in the client's order, up to the first error (then
    /// true).
    fn interleave(
        &mut self,
        batch: &extfan::ExtBatch,
        shard_of: &[usize],
        shards: &[usize],
        per_shard: &mut [std::collections::VecDeque<Vec<bytes::Bytes>>],
    ) -> bool {
        for item in &batch.items {
            match item {
                extfan::Item::Parse => encode::empty(&mut self.core.out, backend::PARSE_COMPLETE),
                extfan::Item::Group(i) => {
                    let slot = shards.iter().position(|s| *s == shard_of[*i]).unwrap_or(0);
                    let Some(messages) = per_shard.get_mut(slot).and_then(|q| q.pop_front()) else {
                        return false;
                    };
                    for m in &messages {
                        self.core.out.extend_from_slice(m);
                    }
                    if messages
                        .last()
                        .is_some_and(|m| m.first() == Some(&backend::ERROR_RESPONSE))
                    {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// What a shard runs: its own statement when the plan wrote one (an INSERT's rows for it), else the merge's
/// rewrite of the client's (partial aggregates, hidden sort columns), else the client's.
fn shard_sql(merge: &Merge, own: String, original: &str) -> String {
    if !own.is_empty() {
        return own;
    }
    match merge {
        Merge::Ordered(o) => o.shard_sql.clone(),
        Merge::Grouped(g) => g.shard_sql.clone(),
        Merge::Rows | Merge::Write => original.to_owned(),
    }
}

/// The result formats the shards are asked for when they differ from the client's `client` formats.
fn shard_formats(merge: &Merge, client: &[i16]) -> Option<Vec<i16>> {
    match merge {
        // Grouped merges read the partial aggregates in text; keys and min/max come in the client's formats.
        Merge::Grouped(g) => {
            let out = binary_columns(client, g.outputs.len());
            Some(
                grouped_shard_binary(g, &out)
                    .into_iter()
                    .map(i16::from)
                    .collect(),
            )
        }
        // Hidden sort columns come after the client's: a format list per column needs theirs (text).
        Merge::Ordered(o) if o.hidden > 0 && client.len() > 1 => {
            let mut f = client.to_vec();
            f.extend(std::iter::repeat_n(0, o.hidden));
            Some(f)
        }
        _ => None,
    }
}

/// One request per shard of `shards`: the batch's groups that `shard_of` sends there, in order, and a Sync.
fn shard_requests_of(
    batch: &extfan::ExtBatch,
    shard_of: &[usize],
    shards: &[usize],
) -> Vec<BytesMut> {
    shards
        .iter()
        .map(|s| {
            let mut b = BytesMut::new();
            for (g, _) in batch.groups.iter().zip(shard_of).filter(|(_, t)| *t == s) {
                extfan::encode_group(&mut b, g);
            }
            encode::empty(&mut b, frontend::SYNC);
            b
        })
        .collect()
}

/// The bytes of the request at the start of `buf` up to and including its Sync (all of `buf` without one).
fn batch_len(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Ok(Some(h)) = Header::parse(&buf[at..], u32::MAX) {
        if buf.len() < at + h.total() {
            break;
        }
        at += h.total();
        if h.code == frontend::SYNC {
            return at;
        }
    }
    buf.len()
}
