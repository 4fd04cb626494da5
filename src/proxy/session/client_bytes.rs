//! The client side of a session's loop: each run of bytes the client sent is split into messages, which are
//! answered by Ocelot, routed, mapped or forwarded to the server in order, a server being checked out first when
//! one is needed.

use super::*;
use crate::proxy::machine::client::Shared;

impl Session {
    /// Handles what the client sent: forwards whole runs of bytes to the server, checking one out first when
    /// needed. Returns `Some` when the client asked to terminate.
    pub(super) async fn on_client_bytes(&mut self) -> Result<Option<End>, ClientError> {
        self.held_back = false;
        if self.server.is_none() {
            self.follow_reload();
        }
        let mut fwd = 0usize;
        let inspect = self.core.stmts.is_some();
        while let Some(piece) = self.csplit.next(&self.cbuf[fwd..], |c| {
            inspect && statements::inspects_client(c)
        })? {
            let code = piece.code();
            let starts = piece.starts_message();
            if starts && !frontend::is_known(code) {
                return Err(ProtocolError::UnknownType(code).into());
            }
            if starts && code == frontend::TERMINATE {
                self.forward_client(&mut fwd).await?;
                if self.server.is_some() && self.core.tracker.pending_units() > 0 {
                    // As PostgreSQL does, everything sent before the Terminate is answered first.
                    self.held_back = true;
                    break;
                }
                return Ok(Some(End::ClientLeft));
            }
            if self.core.discard == Discard::ToSync {
                self.forward_client(&mut fwd).await?;
                self.cbuf.advance(piece.len());
                if starts && code == frontend::SYNC {
                    self.core.discard = Discard::Nothing;
                }
                continue;
            }
            if starts
                && matches!(code, frontend::QUERY | frontend::PARSE)
                && self.core.stmts.is_some()
                && !self.view_rewritten
                && catalog::reads_prepared_view(&self.cbuf[fwd..], &piece)
            {
                // The message must be at the front of the buffer to be replaced there.
                self.forward_client(&mut fwd).await?;
                self.rewrite_prepared_view(&piece);
                self.view_rewritten = true;
                // Split again: the message at the front may have changed.
                continue;
            }
            self.view_rewritten = false;
            if starts
                && fwd == 0
                && code == frontend::QUERY
                && self.core.stmts.is_some()
                && self.try_deallocate(&piece).await?
            {
                continue;
            }
            if starts && fwd == 0 && self.txn_timed_out {
                self.refuse_after_timeout(&piece).await?;
                continue;
            }
            // The rest of a refused extended request, while a server stays attached (session mode).
            if fwd == 0 && self.core.discard == Discard::ToSyncAnswered && self.server.is_some() {
                self.skip_without_server(&piece).await?;
                continue;
            }
            if starts
                && fwd == 0
                && self.pool.plugins.is_some()
                && self.core.discard != Discard::ToSyncAnswered
            {
                match Box::pin(self.run_plugins(&piece)).await? {
                    plugins::PluginStep::Pass => {}
                    plugins::PluginStep::Served => continue,
                    plugins::PluginStep::Replaced => {
                        self.core.tracker.client_message(code);
                        self.sout.extend_from_slice(&self.core.scratch);
                        self.cbuf.advance(piece.len());
                        continue;
                    }
                }
            }
            if self.server.is_none() {
                // Nothing was forwarded yet in this call, since forwarding needs a server.
                debug_assert_eq!(fwd, 0);
                match self.without_server(&piece).await? {
                    Flow::Attached => {}
                    Flow::Next => continue,
                    Flow::Wait => break,
                    Flow::Leave => return Ok(Some(End::ClientLeft)),
                }
            }
            if starts
                && fwd == 0
                && self.core.mode == PoolMode::Transaction
                && self.routing_sensitive()
                && self.core.tracker.between_requests()
            {
                // A new request while the server still answers the previous one: it is routed once that answer
                // is in and the server kept or released, not sent along to a server it may not belong on.
                break;
            }
            if starts {
                // A pgml.* call while a server is held (a transaction): answered in order, after the server.
                if fwd == 0 {
                    match Box::pin(self.intercept_pgml(&piece)).await? {
                        pgml_ext::Intercept::Pass => {}
                        pgml_ext::Intercept::Served => continue,
                        pgml_ext::Intercept::Wait => break,
                        pgml_ext::Intercept::Hold => {
                            self.held_back = true;
                            break;
                        }
                    }
                }
                if fwd == 0
                    && self.pool.shards.len() > 1
                    && matches!(piece, Piece::Whole(_))
                    && matches!(code, frontend::QUERY | frontend::PARSE | frontend::BIND)
                {
                    match Box::pin(self.cross_shard(&piece)).await? {
                        route::Cross::Forward => {}
                        route::Cross::Wait => break,
                        route::Cross::Handled => continue,
                        route::Cross::ClientLeft => return Ok(Some(End::ClientLeft)),
                        route::Cross::Resync => {
                            // The held server only prepared (a Flush, no Sync): a Sync of Ocelot's own ends that
                            // on it, its ReadyForQuery is swallowed, and the Bind is routed afresh.
                            let mut sync = BytesMut::with_capacity(5 + self.cbuf.len());
                            encode::empty(&mut sync, frontend::SYNC);
                            sync.extend_from_slice(&self.cbuf);
                            self.cbuf = sync;
                            self.core.swallow_rfq += 1;
                            continue;
                        }
                        route::Cross::Refused => {
                            // The server runs a statement that fails with the reason, so client and server agree
                            // the transaction is aborted; the rest of an extended request is dropped.
                            self.core.tracker.client_message(frontend::QUERY);
                            self.sout.extend_from_slice(&self.core.scratch);
                            self.cbuf.advance(piece.len());
                            self.core.discard = if code != frontend::QUERY {
                                Discard::ToSync
                            } else {
                                Discard::Nothing
                            };
                            continue;
                        }
                    }
                }
            }
            let action = match self.server.as_mut() {
                Some(server) => self.core.client_message(
                    &self.cbuf[fwd..],
                    piece,
                    &mut server.state,
                    Shared {
                        registry: &self.pool.statements,
                        cap: self.pool.prepared_cache,
                    },
                )?,
                None => ClientAction::Forward,
            };
            match action {
                ClientAction::Forward => {}
                ClientAction::Replaced => {
                    self.sout.extend_from_slice(&self.cbuf[..fwd]);
                    self.sout.extend_from_slice(&self.core.scratch);
                    self.cbuf.advance(fwd + piece.len());
                    fwd = 0;
                    continue;
                }
                ClientAction::Drop => {
                    self.sout.extend_from_slice(&self.cbuf[..fwd]);
                    self.cbuf.advance(fwd + piece.len());
                    fwd = 0;
                    continue;
                }
            }
            fwd += piece.len();
            // Where requests are routed (replicas, shards), the next request may belong elsewhere: it waits in
            // the buffer until this one is answered and the server is kept or released.
            if self.routing_sensitive()
                && matches!(piece, Piece::Whole(_))
                && matches!(code, frontend::QUERY | frontend::SYNC)
                && self.cbuf.len() > fwd
            {
                break;
            }
        }
        self.forward_client(&mut fwd).await?;
        let wanted = self.csplit.wanted(&self.cbuf);
        if wanted > self.cbuf.capacity() {
            self.cbuf.reserve(wanted - self.cbuf.len());
        }
        Ok(None)
    }
}
