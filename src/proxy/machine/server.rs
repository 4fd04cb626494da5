//! The server half of the session machine: what a run of bytes from the held server means. Messages pass through
//! unread except the few that change what Ocelot tracks (ReadyForQuery, ParameterStatus, CommandComplete,
//! CopyInResponse, and ErrorResponse while a request may still move to another server or statements are mapped);
//! statement-mapping replies the client must not see are cut out. The caller is told how many bytes to forward,
//! whether to give the server back, and whether the request must move to another server.

use bytes::{Buf, BytesMut};

use super::retry::Step;
use super::Core;
use crate::config::PoolMode;
use crate::pool::params::is_tracked;
use crate::pool::prepared::changes_schema;
use crate::pool::state::{Dirty, ServerState};
use crate::protocol::codes::{backend, txn};
use crate::protocol::frame::{Header, Piece};
use crate::protocol::{decode, ProtocolError};

/// What a run of server bytes asks of the driver.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Heard {
    /// Bytes at the front of the server's buffer to send to the client, after [`Core::out`].
    pub(crate) forward: usize,
    /// A ReadyForQuery was among them.
    pub(crate) ready: bool,
    /// The server can go back to the pool: transaction mode, nothing owed, nothing pinned.
    pub(crate) release: bool,
    /// A replica that had not answered yet is going away: the request is to be sent to another server. Nothing
    /// was forwarded.
    pub(crate) failover: Option<String>,
    /// The request met a stale plan and its answer was cut: [`Core::resend`] goes to the server again.
    pub(crate) resend: bool,
}

/// The bookkeeping outside the session that server messages feed (statistics, the pool's statement cache, the
/// sender of a notification), called as the messages are read.
pub(crate) trait Observer {
    /// The server sent an ErrorResponse.
    fn error(&mut self);
    /// A request was answered with ReadyForQuery(`status`).
    fn ready(&mut self, status: u8);
    /// A command that can change the shape of tables completed.
    fn schema_changed(&mut self);
    /// The body of a NotificationResponse, whose sender's process id may be rewritten.
    fn notification(&mut self, body: &mut [u8]);
}

/// PostgreSQL's "cached plan must not change result type" (0A000, raised by `RevalidateCachedQuery`): a
/// statement prepared before a schema change that alters what it returns.
fn is_stale_plan(body: &[u8]) -> bool {
    decode::error_field(body, b'C') == Some(b"0A000")
        && (decode::error_field(body, b'R') == Some(b"RevalidateCachedQuery")
            || decode::error_field(body, b'M')
                .is_some_and(|m| m.starts_with(b"cached plan must not change result type")))
}

/// Server messages whose bodies are read: those that change what is tracked, and errors while a request may
/// still move to another server (`replaying`) or statements are mapped (`mapping`).
fn inspects(code: u8, replaying: bool, mapping: bool) -> bool {
    matches!(
        code,
        backend::READY_FOR_QUERY
            | backend::PARAMETER_STATUS
            | backend::COMMAND_COMPLETE
            | backend::COPY_IN_RESPONSE
    ) || ((replaying || mapping) && code == backend::ERROR_RESPONSE)
}

impl Core {
    /// Reads what the server sent (`rbuf`), updating the session's and the server's state. Bytes Ocelot cut out
    /// are removed from `rbuf`, with what preceded them moved to [`Core::out`]; the rest waits at the front of
    /// `rbuf` for [`Core::forwarded`].
    pub(crate) fn on_server(
        &mut self,
        rbuf: &mut BytesMut,
        server: &mut ServerState,
        obs: &mut impl Observer,
    ) -> Result<Heard, ProtocolError> {
        let replaying = self.replay.is_some();
        let mapping = self.stmts.is_some();
        let mut heard = Heard::default();
        let mut fwd = 0usize;
        while let Some(piece) = self
            .ssplit
            .next(&rbuf[fwd..], |c| inspects(c, replaying, mapping))?
        {
            if piece.starts_message()
                && self.retry_cuts(piece, rbuf, &mut fwd, server, obs, &mut heard)
            {
                continue;
            }
            if piece.starts_message() && !self.map_server_message(piece, rbuf, &mut fwd, server) {
                continue;
            }
            if piece.starts_message() && piece.code() == backend::ERROR_RESPONSE {
                if let (true, Piece::Whole(h)) = (replaying && fwd == 0, piece) {
                    let fields = decode::error_fields(&rbuf[5..h.total()]).unwrap_or_default();
                    if fields.code.starts_with("57P") || fields.code.starts_with("08") {
                        heard.failover = Some(format!("{} ({})", fields.message, fields.code));
                        return Ok(heard);
                    }
                }
                if let (true, Piece::Whole(h)) = (self.stmts.is_some(), piece) {
                    if is_stale_plan(&rbuf[fwd + 5..fwd + h.total()]) {
                        // The schema changed behind Ocelot's back (DDL run on the server directly): statements
                        // prepared on this connection before it fail like this on every use, for every client
                        // mapped onto them. Texts parsed from now on get statements of their own, and this
                        // connection drops all of its statements when it is given back.
                        server.dirty.deallocate_all = true;
                        obs.schema_changed();
                    }
                }
                if let Some(fx) = self.effects.as_mut() {
                    fx.server_error();
                }
                obs.error();
            }
            match piece {
                Piece::Whole(h) => {
                    if self.whole_message(h, rbuf, &mut fwd, server, obs) {
                        heard.ready = true;
                        continue;
                    }
                    heard.ready |= h.code == backend::READY_FOR_QUERY;
                }
                _ if piece.starts_message() => self.tracker.server_message(piece.code(), None),
                _ => {}
            }
            fwd += piece.len();
        }
        if fwd > 0 || !self.out.is_empty() {
            // The client is hearing the answer: the request can no longer move to another server.
            self.replay = None;
        }
        heard.forward = fwd;
        if heard.ready && !heard.resend {
            self.keep_next_request(server);
        }
        heard.release = heard.ready
            && self.mode == PoolMode::Transaction
            && self.tracker.is_idle()
            && self.pins.is_empty();
        Ok(heard)
    }

    /// Lets [`Core::retry_step`] see the start of a message; true when it cut the message out.
    fn retry_cuts(
        &mut self,
        piece: Piece,
        rbuf: &mut BytesMut,
        fwd: &mut usize,
        server: &mut ServerState,
        obs: &mut impl Observer,
        heard: &mut Heard,
    ) -> bool {
        let whole = match piece {
            Piece::Whole(h) => Some(h),
            _ => None,
        };
        let stale = whole.is_some_and(|h| {
            h.code == backend::ERROR_RESPONSE && is_stale_plan(&rbuf[*fwd + 5..*fwd + h.total()])
        });
        match self.retry_step(whole, piece.code(), stale, rbuf, fwd) {
            Step::Pass => false,
            Step::Skipped => true,
            Step::Stale => {
                // Statements prepared on this connection before the change are stale too: they are dropped
                // when it is given back.
                server.dirty.deallocate_all = true;
                obs.schema_changed();
                true
            }
            Step::Resend => {
                heard.resend = true;
                true
            }
        }
    }

    /// Drops the `forward` bytes the client was sent from `rbuf` and makes room for the rest of a message that
    /// is only partly in.
    pub(crate) fn forwarded(&mut self, rbuf: &mut BytesMut, forward: usize) {
        rbuf.advance(forward);
        let wanted = self.ssplit.wanted(rbuf);
        if wanted > rbuf.capacity() {
            rbuf.reserve(wanted - rbuf.len());
        }
    }

    /// Passes the start of a message through the statement mapping; returns whether it goes on to the client.
    /// A message the mapping swallows, or one it puts a deferred error in front of, moves what precedes it in
    /// `rbuf` to `out`.
    fn map_server_message(
        &mut self,
        piece: Piece,
        rbuf: &mut BytesMut,
        fwd: &mut usize,
        server: &mut ServerState,
    ) -> bool {
        let Some(map) = self.stmts.as_mut() else {
            return true;
        };
        self.scratch.clear();
        let keep = map.server_message(piece.code(), &mut server.statements, &mut self.scratch);
        if !keep || !self.scratch.is_empty() {
            self.out.extend_from_slice(&rbuf[..*fwd]);
            self.out.extend_from_slice(&self.scratch);
            rbuf.advance(*fwd);
            *fwd = 0;
        }
        if !keep {
            // Only ParseComplete and CloseComplete are swallowed: always whole, never streamed.
            rbuf.advance(piece.len());
        }
        keep
    }

    /// Notes what a whole message at `rbuf[fwd..]` says. Returns true when it was a ReadyForQuery Ocelot owed
    /// itself, which is cut out of `rbuf` (what preceded it moved to `out`).
    fn whole_message(
        &mut self,
        h: Header,
        rbuf: &mut BytesMut,
        fwd: &mut usize,
        server: &mut ServerState,
        obs: &mut impl Observer,
    ) -> bool {
        let body = *fwd + 5..*fwd + h.total();
        match h.code {
            backend::NOTIFICATION_RESPONSE => {
                obs.notification(&mut rbuf[body]);
                self.tracker.server_message(h.code, None);
            }
            backend::READY_FOR_QUERY => {
                let status = decode::ready_for_query(&rbuf[body]).unwrap_or(txn::FAILED);
                server.txn_status = status;
                obs.ready(status);
                self.tracker.server_message(h.code, Some(status));
                if let Some(fx) = self.effects.as_mut() {
                    for cmd in fx.server_ready(status) {
                        server.applied.observe(&cmd);
                        self.params.apply(cmd);
                    }
                }
                self.unsynced_execute = false;
                if self.swallow_rfq > 0 {
                    self.swallow_rfq -= 1;
                    self.out.extend_from_slice(&rbuf[..*fwd]);
                    rbuf.advance(*fwd + h.total());
                    *fwd = 0;
                    return true;
                }
            }
            backend::PARAMETER_STATUS => {
                if let Ok((k, v)) = decode::parameter_status(&rbuf[body]) {
                    server.params.set(k, v);
                    if is_tracked(k) {
                        self.params.tracked.set(k, v);
                    }
                }
            }
            backend::COMMAND_COMPLETE => {
                if let Ok(tag) = decode::command_tag(&rbuf[body]) {
                    self.command_complete(tag, server, obs);
                }
            }
            code => self.tracker.server_message(code, None),
        }
        false
    }

    fn command_complete(&mut self, tag: &[u8], server: &mut ServerState, obs: &mut impl Observer) {
        if changes_schema(tag) {
            obs.schema_changed();
        }
        server.dirty.observe_tag(tag);
        self.pins.observe_tag(tag);
        if let Some(fx) = self.effects.as_mut() {
            fx.server_tag(tag);
        }
        if Dirty::drops_all_statements(tag) {
            server.statements.clear();
            if let Some(map) = self.stmts.as_mut() {
                map.clear();
            }
        }
    }
}
