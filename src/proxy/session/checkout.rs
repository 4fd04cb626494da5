//! Between a client's message and a server: answering what needs no server, checking a server out (and telling the client when
//! that fails), and bringing the server's session in line with the client's.

use super::*;

impl Session {
    /// Answers `Parse` + `Sync` of a statement text the pool has prepared before, without a server (see
    /// [`StatementMap::parse_without_server`]). `Some(true)` when answered, `Some(false)` when the request is not
    /// that, `None` when the message after the Parse has not arrived yet.
    pub(super) async fn parse_locally(
        &mut self,
        piece: &Piece,
    ) -> Result<Option<bool>, ClientError> {
        let (Piece::Whole(h), true) = (*piece, piece.code() == frontend::PARSE) else {
            return Ok(Some(false));
        };
        if self.core.stmts.is_none() || self.core.discard == Discard::ToSyncAnswered {
            return Ok(Some(false));
        }
        let sync = [frontend::SYNC, 0, 0, 0, 4];
        match self.cbuf.get(h.total()..h.total() + 5) {
            None if self.cbuf.len() == h.total() => return Ok(None),
            Some(next) if next == sync => {}
            _ => return Ok(Some(false)),
        }
        let Some(map) = self.core.stmts.as_mut() else {
            return Ok(Some(false));
        };
        if !map.parse_without_server(&self.cbuf[5..h.total()], &self.pool.statements) {
            return Ok(Some(false));
        }
        // Noted as a forwarded Parse would be, so a later Bind of a session-changing statement is recognised.
        self.core.track_effects(&self.cbuf, *piece, None);
        self.cbuf.advance(h.total() + sync.len());
        let status = self.status_without_server();
        encode::empty(&mut self.core.out, backend::PARSE_COMPLETE);
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(Some(true))
    }

    /// The transaction status to report while no server is held: in a transaction once a BEGIN was answered by
    /// Ocelot and is waiting for the first statement that needs a server.
    pub(super) fn status_without_server(&self) -> u8 {
        match self.pending_begin {
            Some(_) => txn::IN_TRANSACTION,
            None => txn::IDLE,
        }
    }

    /// Drops or answers a piece that needs no server. Returns true when the piece was consumed.
    pub(super) async fn skip_without_server(&mut self, piece: &Piece) -> Result<bool, ClientError> {
        let code = piece.code();
        let starts = piece.starts_message();
        let consume = |s: &mut Self| s.cbuf.advance(piece.len());
        if self.core.discard == Discard::ToSyncAnswered {
            consume(self);
            if starts && (code == frontend::SYNC || code == frontend::QUERY) {
                self.core.discard = Discard::Nothing;
                encode::ready_for_query(&mut self.core.out, txn::IDLE);
                self.flush_out().await?;
            }
            return Ok(true);
        }
        // A message continued without a server is one being dropped; stray COPY messages after a COPY ended
        // are dropped by PostgreSQL too.
        if !starts
            || matches!(
                code,
                frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL | frontend::FLUSH
            )
        {
            consume(self);
            return Ok(true);
        }
        if code == frontend::SYNC {
            consume(self);
            let status = self.status_without_server();
            encode::ready_for_query(&mut self.core.out, status);
            self.flush_out().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Tells the client its request could not get a server, and skips the request as a server would skip a
    /// failed one: a Query is answered with ReadyForQuery, extended messages are dropped up to Sync.
    pub(super) async fn checkout_failed(
        &mut self,
        e: PoolError,
        piece: &Piece,
    ) -> Result<(), ClientError> {
        tracing::warn!(pool = %self.pool.database, user = %self.pool.user, "{e}");
        self.refuse_request(e.sqlstate(), &e.to_string(), piece)
            .await?;
        self.checkout_failures += 1;
        let limit = self.pool.settings.checkout_failure_limit;
        if limit > 0 && self.checkout_failures >= limit {
            tracing::warn!(pool = %self.pool.database, user = %self.pool.user, client = self.info.id, "checkout failure limit reached ({limit}): disconnecting the client");
            return Err(ClientError::CheckoutFailureLimit(limit));
        }
        Ok(())
    }

    /// Answers the request that starts with `piece` with an error instead of running it, and skips the rest of it.
    pub(super) async fn refuse_request(
        &mut self,
        code: &str,
        message: &str,
        piece: &Piece,
    ) -> Result<(), ClientError> {
        encode::error_response(&mut self.core.out, Severity::Error, code, message, None);
        if piece.code() == frontend::QUERY || piece.code() == frontend::FUNCTION_CALL {
            self.core.discard = Discard::Nothing;
            self.cbuf.advance(piece.len());
            if !self.csplit.is_streaming() {
                encode::ready_for_query(&mut self.core.out, txn::IDLE);
            } else {
                // The rest of the Query arrives later and is dropped; answer when it ends.
                self.core.discard = Discard::ToSyncAnswered;
            }
        } else {
            self.core.discard = Discard::ToSyncAnswered;
            self.cbuf.advance(piece.len());
            if piece.code() == frontend::SYNC {
                self.core.discard = Discard::Nothing;
                encode::ready_for_query(&mut self.core.out, txn::IDLE);
            }
        }
        self.flush_out().await
    }

    /// Checks out a server and brings its session in line with this client's parameters.
    pub(super) async fn attach(&mut self, want: Want, shard: usize) -> Result<(), PoolError> {
        self.info.wait_begins();
        // A block of its own, so that the result is not kept beside `server` in the future.
        let mut server = {
            let checked_out = match self.reserved.take() {
                Some(server) => Ok(server),
                None => self.pool.checkout(shard, want, self.primary_reads()).await,
            };
            let waited = self.info.wait_ends(checked_out.is_ok());
            let server = checked_out?;
            server.pool().stats.wait(waited);
            server
        };
        self.attached_want = Some(want);
        self.attached_shard = shard;
        self.core.replay =
            (server.address.role != crate::config::ServerRole::Primary).then(BytesMut::new);
        self.core.keep_next_request(&server.state);
        if let Some(sql) = self
            .core
            .params
            .sync_sql(&server.state.params, &server.state.applied)
        {
            let changed = server.run(&sql).await?;
            let conn = &mut *server;
            self.core
                .params
                .after_sync(&conn.state.params, &mut conn.state.applied);
            // The client hears about values the server spelled differently from what it was told.
            for (k, v) in changed {
                if is_tracked(&k) {
                    encode::parameter_status(&mut self.core.out, &k, &v);
                }
            }
        }
        self.slot.attach(&server.cancel);
        if let Some(map) = self.core.stmts.as_mut() {
            map.attach();
        }
        if let Some(fx) = self.core.effects.as_mut() {
            fx.attach();
        }
        self.core.ssplit = Splitter::new(server.max_message());
        self.core.tracker = TxnTracker::default();
        self.txn_begin = "BEGIN".into();
        if let Some(begin) = self.pending_begin.take() {
            server.run(&begin).await?;
            self.core.tracker.set_status(server.state.txn_status);
            self.txn_begin = begin;
        }
        self.server = Some(server);
        Ok(())
    }
}
