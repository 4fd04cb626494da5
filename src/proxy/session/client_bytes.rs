//! The client side of a session's loop: each run of bytes the client sent is split into messages, which are
//! answered by Ocelot, routed, mapped or forwarded to the server in order, a server being checked out first when
//! one is needed.

use super::*;
use crate::proxy::machine::client::Shared;

/// What the loop over the client's pieces does next.
enum Next {
    /// Go on with this piece.
    Go,
    /// Take the next piece.
    Continue,
    /// Stop reading pieces for now.
    Break,
    /// The client went away.
    Leave,
}

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
            match self.answered_by_ocelot(piece, &mut fwd).await? {
                Next::Go => {}
                Next::Continue => continue,
                Next::Break => break,
                Next::Leave => return Ok(Some(End::ClientLeft)),
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
            match self.with_server_held(piece, fwd).await? {
                Next::Go => {}
                Next::Continue => continue,
                Next::Break => break,
                Next::Leave => return Ok(Some(End::ClientLeft)),
            }
            if self.map_to_server(piece, &mut fwd)? {
                continue;
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

    /// Messages Ocelot answers or rewrites itself before any server sees them: reads of the prepared-statements
    /// view, DEALLOCATE, refusals after an idle-transaction timeout, the rest of a refused request, plugins.
    async fn answered_by_ocelot(
        &mut self,
        piece: Piece,
        fwd: &mut usize,
    ) -> Result<Next, ClientError> {
        let code = piece.code();
        let starts = piece.starts_message();
        if starts
            && matches!(code, frontend::QUERY | frontend::PARSE)
            && self.core.stmts.is_some()
            && !self.view_rewritten
            && catalog::reads_prepared_view(&self.cbuf[*fwd..], &piece)
        {
            // The message must be at the front of the buffer to be replaced there.
            self.forward_client(fwd).await?;
            self.rewrite_prepared_view(&piece);
            self.view_rewritten = true;
            // Split again: the message at the front may have changed.
            return Ok(Next::Continue);
        }
        self.view_rewritten = false;
        if starts
            && *fwd == 0
            && code == frontend::QUERY
            && self.core.stmts.is_some()
            && self.try_deallocate(&piece).await?
        {
            return Ok(Next::Continue);
        }
        if starts && *fwd == 0 && self.txn_timed_out {
            self.refuse_after_timeout(&piece).await?;
            return Ok(Next::Continue);
        }
        // The rest of a refused extended request, while a server stays attached (session mode).
        if *fwd == 0 && self.core.discard == Discard::ToSyncAnswered && self.server.is_some() {
            self.skip_without_server(&piece).await?;
            return Ok(Next::Continue);
        }
        if starts
            && *fwd == 0
            && self.pool.plugins.is_some()
            && self.core.discard != Discard::ToSyncAnswered
        {
            match Box::pin(self.run_plugins(&piece)).await? {
                plugins::PluginStep::Pass => {}
                plugins::PluginStep::Served => return Ok(Next::Continue),
                plugins::PluginStep::Replaced => {
                    self.core.tracker.client_message(code);
                    self.sout.extend_from_slice(&self.core.scratch);
                    self.cbuf.advance(piece.len());
                    return Ok(Next::Continue);
                }
            }
        }
        Ok(Next::Go)
    }

    /// With a server held: a request that must wait to be routed, a `pgml.*` call answered in order, and a
    /// statement of a transaction on a sharded pool that belongs to another shard.
    async fn with_server_held(&mut self, piece: Piece, fwd: usize) -> Result<Next, ClientError> {
        let code = piece.code();
        let starts = piece.starts_message();
        if starts
            && fwd == 0
            && self.core.mode == PoolMode::Transaction
            && self.routing_sensitive()
            && self.core.tracker.between_requests()
        {
            // A new request while the server still answers the previous one: it is routed once that answer
            // is in and the server kept or released, not sent along to a server it may not belong on.
            return Ok(Next::Break);
        }
        if starts {
            // A pgml.* call while a server is held (a transaction): answered in order, after the server.
            if fwd == 0 {
                match Box::pin(self.intercept_pgml(&piece)).await? {
                    pgml_ext::Intercept::Pass => {}
                    pgml_ext::Intercept::Served => return Ok(Next::Continue),
                    pgml_ext::Intercept::Wait => return Ok(Next::Break),
                    pgml_ext::Intercept::Hold => {
                        self.held_back = true;
                        return Ok(Next::Break);
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
                    route::Cross::Wait => return Ok(Next::Break),
                    route::Cross::Handled => return Ok(Next::Continue),
                    route::Cross::ClientLeft => return Ok(Next::Leave),
                    route::Cross::Resync => {
                        // The held server only prepared (a Flush, no Sync): a Sync of Ocelot's own ends that
                        // on it, its ReadyForQuery is swallowed, and the Bind is routed afresh.
                        let mut sync = BytesMut::with_capacity(5 + self.cbuf.len());
                        encode::empty(&mut sync, frontend::SYNC);
                        sync.extend_from_slice(&self.cbuf);
                        self.cbuf = sync;
                        self.core.swallow_rfq += 1;
                        return Ok(Next::Continue);
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
                        return Ok(Next::Continue);
                    }
                }
            }
        }
        Ok(Next::Go)
    }

    /// Passes the piece through the machine's client half; true when it was consumed (replaced or dropped)
    /// rather than left to forward.
    fn map_to_server(&mut self, piece: Piece, fwd: &mut usize) -> Result<bool, ClientError> {
        let action = match self.server.as_mut() {
            Some(server) => self.core.client_message(
                &self.cbuf[*fwd..],
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
                self.sout.extend_from_slice(&self.cbuf[..*fwd]);
                self.sout.extend_from_slice(&self.core.scratch);
                self.cbuf.advance(*fwd + piece.len());
                *fwd = 0;
                return Ok(true);
            }
            ClientAction::Drop => {
                self.sout.extend_from_slice(&self.cbuf[..*fwd]);
                self.cbuf.advance(*fwd + piece.len());
                *fwd = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }
}
