//! A request, in a sharded pool, while the session holds a server: whether it can go to that server or must go to
//! other shards (and how: fan-out, a transaction over shards, or refused with the reason).

use bytes::Buf;

use super::route::{request_complete, shard_list, Cross, Target};
use super::{multi, Session};
use crate::protocol::codes::{frontend, txn};
use crate::protocol::encode;
use crate::protocol::frame::Piece;
use crate::proxy::error::ClientError;

impl Session {
    /// Inside a transaction in a sharded pool, decides what happens to the request now at the start of `cbuf`
    /// (whole): it stays on the transaction's current shard; with two-phase commit, the transaction moves to
    /// another shard (joining it) or runs the request on several shards; without, a request for another shard is
    /// refused (the replacement Query is left in `scratch`). A COMMIT or ROLLBACK of a transaction that spans
    /// shards is answered here.
    pub(super) async fn cross_shard(&mut self, piece: &Piece) -> Result<Cross, ClientError> {
        let Piece::Whole(h) = piece else {
            return Ok(Cross::Forward);
        };
        if self.server.is_none() {
            return Ok(Cross::Forward);
        }
        let busy = self.core.tracker.pending_units() > 0;
        if h.code == frontend::QUERY && !self.parked.is_empty() {
            if let Some(how) = multi::transaction_end(&self.cbuf[5..h.total()]) {
                if busy {
                    return Ok(Cross::Wait);
                }
                self.cbuf.advance(h.total());
                self.finish(how).await?;
                return Ok(Cross::Handled);
            }
        }
        if self.core.tracker.status() == txn::IDLE
            && h.code == frontend::BIND
            && !self.core.unsynced_execute
            && self.core.mode == crate::config::PoolMode::Transaction
            && self.core.pins.is_empty()
        {
            return Ok(match self.shard_at(0) {
                Ok(Target::One(s)) if s == self.attached_shard => Cross::Forward,
                Ok(Target::Default) => Cross::Forward,
                _ if !request_complete(&self.cbuf) => Cross::Wait,
                _ => Cross::Resync,
            });
        }
        if self.core.tracker.status() != txn::IN_TRANSACTION {
            return Ok(Cross::Forward);
        }
        let target = match self.shard_at(0) {
            Ok(t) => t,
            Err(e) => return Ok(self.refuse(&e.to_string())),
        };
        match target {
            Target::Default => return Ok(Cross::Forward),
            Target::One(s) if s == self.attached_shard => return Ok(Cross::Forward),
            _ => {}
        }
        if !self.pool.two_phase {
            // One and Batch are refused at once; the others once the server has answered what came before.
            if busy
                && matches!(
                    target,
                    Target::All(..) | Target::Write(_) | Target::CopyIn(..)
                )
            {
                return Ok(Cross::Wait);
            }
            return Ok(self.refuse_across(&target));
        }
        if busy {
            return Ok(Cross::Wait);
        }
        self.run_across(target, h.total()).await
    }

    /// Refuses, without two-phase commit, a request for other shards than the transaction's.
    fn refuse_across(&mut self, target: &Target) -> Cross {
        let needs = match target {
            Target::One(s) => format!("this statement needs shard {s} but"),
            Target::Batch(_) => "this batch needs several shards but".to_owned(),
            Target::CopyIn(..) => "COPY into the sharded table needs every shard, but".to_owned(),
            Target::All(_, s) => {
                format!(
                    "this statement needs shards {} but",
                    shard_list(s.iter().copied())
                )
            }
            Target::Write(p) => format!(
                "this statement needs shards {} but",
                shard_list(p.iter().map(|(s, _, _)| *s))
            ),
            Target::Default => String::new(),
        };
        let current = self.attached_shard;
        self.refuse(&format!(
            "{needs} the transaction runs on shard {current}: transactions across shards need two-phase commit (set two_phase_commit = true for the pool)"
        ))
    }

    /// With two-phase commit, runs a transaction's request for other shards: the transaction joins the shard,
    /// or the request runs on several (`total`: the bytes of a simple Query).
    async fn run_across(&mut self, target: Target, total: usize) -> Result<Cross, ClientError> {
        match target {
            Target::One(s) => match self.swap_to(s).await {
                Ok(()) => Ok(Cross::Forward),
                Err(e) => Ok(self.refuse(&e.to_string())),
            },
            Target::CopyIn(plan, simple) => {
                if simple {
                    self.cbuf.advance(total);
                } else {
                    self.answer_extended_copy_request();
                }
                Ok(if self.copy_in(plan, simple).await? {
                    Cross::ClientLeft
                } else {
                    Cross::Handled
                })
            }
            Target::Batch(shards) => Ok(if self.run_batch(shards).await? {
                Cross::Handled
            } else {
                Cross::Wait
            }),
            target => match self.shard_requests(target) {
                Ok(Some(prepared)) => {
                    self.run_on_shards(prepared).await?;
                    Ok(Cross::Handled)
                }
                Ok(None) => Ok(Cross::Wait),
                Err(why) => Ok(self.refuse(&format!(
                    "Ocelot cannot run this request on several shards: {why}"
                ))),
            },
        }
    }

    /// Leaves in `scratch` a Query that fails on the server with `msg` (0A000).
    fn refuse(&mut self, msg: &str) -> Cross {
        let sql = format!(
            "DO $ocelot_do$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = {}; END$ocelot_do$",
            crate::router::session_sql::quote_literal(msg)
        );
        self.core.scratch.clear();
        encode::query(&mut self.core.scratch, &sql);
        Cross::Refused
    }
}
