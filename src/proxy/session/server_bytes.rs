//! The server side of a session's loop: what the server sent is forwarded to the client in one write, with the
//! state its messages carry noted on the way (transaction status, reported parameters, command tags, statement
//! bookkeeping, a notification's sender), and the server given back once the transaction is over.

use super::*;

impl Session {
    /// Handles what the server sent: tracks state from the inspected messages and forwards everything to the
    /// client in one write, then gives the server back when the transaction is over.
    /// Returns `Some(reason)` when a replica that has not answered yet reports it is shutting down: the caller
    /// then fails the request over to another server.
    pub(super) async fn on_server_bytes(&mut self) -> Result<Option<String>, ClientError> {
        let replaying = self.replay.is_some();
        let Some(pooled) = self.server.as_mut() else {
            return Ok(None);
        };
        let (spool, server) = pooled.split();
        let mut fwd = 0usize;
        let mut saw_rfq = false;
        loop {
            let inspect = |c: u8| server_inspects(c) || (replaying && c == backend::ERROR_RESPONSE);
            let piece = match self.ssplit.next(&server.rbuf[fwd..], inspect) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    server.broken = true;
                    return Err(ClientError::ServerLost(format!(
                        "invalid message from server: {e}"
                    )));
                }
            };
            if let (Some(map), true) = (self.stmts.as_mut(), piece.starts_message()) {
                self.scratch.clear();
                let keep =
                    map.server_message(piece.code(), &mut server.statements, &mut self.scratch);
                if !keep || !self.scratch.is_empty() {
                    self.out.extend_from_slice(&server.rbuf[..fwd]);
                    self.out.extend_from_slice(&self.scratch);
                    server.rbuf.advance(fwd);
                    fwd = 0;
                }
                if !keep {
                    // Only ParseComplete and CloseComplete are swallowed: always whole, never streamed.
                    server.rbuf.advance(piece.len());
                    continue;
                }
            }
            if piece.starts_message() && piece.code() == backend::ERROR_RESPONSE {
                if let (true, Piece::Whole(h)) = (self.replay.is_some() && fwd == 0, piece) {
                    let fields =
                        decode::error_fields(&server.rbuf[5..h.total()]).unwrap_or_default();
                    if fields.code.starts_with("57P") || fields.code.starts_with("08") {
                        return Ok(Some(format!("{} ({})", fields.message, fields.code)));
                    }
                }
                if let Some(fx) = self.effects.as_mut() {
                    fx.server_error();
                }
                spool.stats.error();
                self.info.error_count.fetch_add(1, Relaxed);
            }
            if let Piece::Whole(h) = piece {
                if h.code == backend::NOTIFICATION_RESPONSE {
                    let body = &mut server.rbuf[fwd + 5..fwd + h.total()];
                    notify::sender_pid(body, &server.cancel, self.slot.pid, &self.shared.cancels);
                }
                let ServerConn {
                    rbuf,
                    params,
                    dirty,
                    txn_status,
                    statements,
                    applied,
                    info,
                    ..
                } = &mut *server;
                let body = &rbuf[fwd + 5..fwd + h.total()];
                match h.code {
                    backend::READY_FOR_QUERY => {
                        let status = decode::ready_for_query(body).unwrap_or(txn::FAILED);
                        *txn_status = status;
                        Self::count_request(
                            &self.info,
                            spool,
                            info,
                            &mut self.request_started,
                            &mut self.xact_started,
                            status,
                        );
                        self.tracker.server_message(h.code, Some(status));
                        if let Some(fx) = self.effects.as_mut() {
                            for cmd in fx.server_ready(status) {
                                applied.observe(&cmd);
                                self.params.apply(cmd);
                            }
                        }
                        saw_rfq = true;
                        self.unsynced_execute = false;
                        if self.swallow_rfq > 0 {
                            self.swallow_rfq -= 1;
                            self.out.extend_from_slice(&rbuf[..fwd]);
                            rbuf.advance(fwd + h.total());
                            fwd = 0;
                            continue;
                        }
                    }
                    backend::PARAMETER_STATUS => {
                        if let Ok((k, v)) = decode::parameter_status(body) {
                            params.set(k, v);
                            if is_tracked(k) {
                                self.params.tracked.set(k, v);
                            }
                        }
                    }
                    backend::COMMAND_COMPLETE => {
                        if let Ok(tag) = decode::command_tag(body) {
                            if crate::pool::prepared::changes_schema(tag) {
                                self.pool.statements.schema_changed();
                            }
                            dirty.observe_tag(tag);
                            self.pins.observe_tag(tag);
                            if let Some(fx) = self.effects.as_mut() {
                                fx.server_tag(tag);
                            }
                            if Dirty::drops_all_statements(tag) {
                                statements.clear();
                                if let Some(map) = self.stmts.as_mut() {
                                    map.clear();
                                }
                            }
                        }
                    }
                    code => self.tracker.server_message(code, None),
                }
            } else if piece.starts_message() {
                self.tracker.server_message(piece.code(), None);
            }
            fwd += piece.len();
        }
        if fwd > 0 || !self.out.is_empty() {
            // The client is hearing the answer: the request can no longer move to another server.
            self.replay = None;
        }
        if self.out.is_empty() {
            self.client.write_all(&server.rbuf[..fwd]).await?;
        } else {
            self.out.extend_from_slice(&server.rbuf[..fwd]);
            self.client.write_all(&self.out).await?;
            self.out.clear();
        }
        server.rbuf.advance(fwd);
        let wanted = self.ssplit.wanted(&server.rbuf);
        let have = server.rbuf.len();
        if wanted > server.rbuf.capacity() {
            server.rbuf.reserve(wanted - have);
        }
        if saw_rfq
            && self.mode == PoolMode::Transaction
            && self.tracker.is_idle()
            && self.pins.is_empty()
        {
            self.release();
        }
        Ok(None)
    }
}
