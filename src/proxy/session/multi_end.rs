//! Ending a session's work on several shards: the client's COMMIT or ROLLBACK of a cross-shard transaction
//! (two-phase commit through `distributed::commit`, or a rollback of every part), and giving the parts back when
//! a statement fails or the client leaves mid-transaction.

use futures_util::future::join_all;

use super::multi::{Finish, Parked};
use super::Session;
use crate::database::distributed;
use crate::pool::server::ServerConn;
use crate::pool::PoolError;
use crate::protocol::codes::txn;
use crate::protocol::encode;
use crate::proxy::error::ClientError;

impl Session {
    /// Ends a cross-shard transaction at the client's COMMIT or ROLLBACK.
    pub(super) async fn finish(&mut self, how: Finish) -> Result<(), ClientError> {
        let any_failed = self
            .server
            .as_ref()
            .is_some_and(|s| s.state.txn_status == txn::FAILED)
            || self
                .parked
                .iter()
                .any(|p| p.server.state.txn_status == txn::FAILED);
        if how == Finish::Commit && !any_failed {
            match self.commit_all().await {
                Ok(()) => encode::command_complete(&mut self.core.out, "COMMIT"),
                Err(f) => self.core.out.extend_from_slice(&f.error_response()),
            }
        } else {
            self.rollback_all().await;
            encode::command_complete(&mut self.core.out, "ROLLBACK");
        }
        self.end_parts();
        encode::ready_for_query(&mut self.core.out, txn::IDLE);
        self.flush_out().await
    }

    /// Gives every connection of the cross-shard transaction back.
    pub(super) fn end_parts(&mut self) {
        self.parked.clear();
        self.release();
    }

    pub(super) async fn join_all_shards(
        &mut self,
        shards: &[usize],
        explicit: bool,
    ) -> Result<(), PoolError> {
        let begin = if explicit {
            self.txn_begin.clone()
        } else {
            "BEGIN".to_owned()
        };
        for &shard in shards {
            let joined = (self.server.is_some() && self.attached_shard == shard)
                || self.parked.iter().any(|p| p.shard == shard);
            if joined {
                continue;
            }
            if self.server.is_none() {
                // The transaction's first connection: a BEGIN Ocelot held goes to it first.
                let first = self.pending_begin.clone().unwrap_or_else(|| begin.clone());
                let server = self.open(shard, Some(&first)).await?;
                if let Some(b) = self.pending_begin.take() {
                    self.txn_begin = b;
                }
                self.install(shard, server);
            } else {
                let server = self.open(shard, Some(&begin)).await?;
                self.parked.push(Parked { shard, server });
            }
        }
        Ok(())
    }

    /// The connections of `shards`, in that order.
    pub(super) fn parts(&mut self, shards: &[usize]) -> Vec<(usize, &mut ServerConn)> {
        let mut all: Vec<(usize, &mut ServerConn)> = Vec::new();
        let current = self.attached_shard;
        if let Some(s) = self.server.as_mut() {
            all.push((current, &mut **s));
        }
        for p in self.parked.iter_mut() {
            all.push((p.shard, &mut *p.server));
        }
        let mut out = Vec::with_capacity(shards.len());
        for &shard in shards {
            if let Some(i) = all.iter().position(|(s, _)| *s == shard) {
                out.push(all.swap_remove(i));
            }
        }
        out
    }

    /// Every connection of the transaction.
    pub(super) fn every_part(&mut self) -> Vec<(usize, &mut ServerConn)> {
        let mut shards: Vec<usize> = self.parked.iter().map(|p| p.shard).collect();
        if self.server.is_some() {
            shards.push(self.attached_shard);
        }
        self.parts(&shards)
    }

    pub(super) async fn commit_all(&mut self) -> Result<(), distributed::Failure> {
        let pool = self.pool.clone();
        let mut parts = self.every_part();
        if parts.is_empty() {
            return Ok(());
        }
        distributed::commit(&pool, &mut parts).await
    }

    pub(super) async fn rollback_all(&mut self) {
        let mut parts = self.every_part();
        distributed::rollback(&mut parts).await;
    }

    /// Puts every part that is still healthy into the failed state, so that the whole transaction is aborted as
    /// the client was told.
    pub(super) async fn fail_all(&mut self) {
        let mut parts = self.every_part();
        join_all(parts.iter_mut().map(|(_, c)| async move {
            if c.state.txn_status == txn::IN_TRANSACTION {
                let _ = c
                    .run("DO $ocelot$BEGIN RAISE EXCEPTION 'aborted: another shard of this transaction failed'; END$ocelot$")
                    .await;
            }
        }))
        .await;
    }

    /// After a connection failed mid-way: outside a transaction block everything is rolled back and given back;
    /// inside one the rest is marked failed (the client must roll back).
    pub(super) async fn abandon_parts(&mut self, explicit: bool) {
        if explicit {
            self.fail_all().await;
        } else {
            self.rollback_all().await;
            self.end_parts();
        }
    }

    pub(super) async fn answer_error(
        &mut self,
        f: distributed::Failure,
        explicit: bool,
    ) -> Result<(), ClientError> {
        self.core.out.extend_from_slice(&f.error_response());
        let status = if explicit && (self.server.is_some() || !self.parked.is_empty()) {
            txn::FAILED
        } else if explicit {
            // Nothing was begun on a server: the held BEGIN stays, and so does the client's view.
            txn::IN_TRANSACTION
        } else {
            txn::IDLE
        };
        if self.server.is_some() {
            self.core.tracker.set_status(status);
        }
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await
    }
}
