//! Sending a request again, to the same server, when PostgreSQL answers it with "cached plan must not change result
//! type". The pool's shared statements are prepared once per server; DDL run on the server behind Ocelot's back
//! leaves them stale, and a client that parsed its statement after the change (as it may on PostgreSQL directly)
//! would meet the error for a plan it never made. So, while the server holds no transaction and has not answered
//! anything but ParseComplete and CloseComplete, the session keeps the bytes it sent; on that error it cuts the
//! error and its ReadyForQuery out of the answer, closes and re-prepares the statements the request names, and
//! sends the request again. The client sees one answer, as if the plan had never been stale. Once per request.

use bytes::{Buf, BytesMut};

use super::Core;
use crate::pool::state::ServerState;
use crate::protocol::codes::{backend, frontend, txn};
use crate::protocol::frame::{messages, Header};

/// Requests larger than this are not kept for sending again.
const MAX_KEPT: usize = 64 * 1024;

/// The request kept for sending again (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Retry {
    state: State,
    /// What the server was sent for the request; after a stale plan, what it is sent again.
    sent: BytesMut,
    /// ParseComplete, CloseComplete and ParameterDescription answers the server sent for it so far.
    parses: usize,
    closes: usize,
    descriptions: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No request can be sent again (none is kept, or its answer has begun).
    #[default]
    Off,
    /// Keeping what is sent for the request.
    Keeping,
    /// The request failed on a stale plan: its error is cut and the ReadyForQuery that ends it will be too.
    Cutting,
    /// The request was sent again: this many ParameterDescriptions the client already has are cut from the new
    /// answer (ParseComplete and CloseComplete are the statement mapping's to swallow).
    Skipping(usize),
}

/// What the server half does with a message, as far as retrying goes.
pub(crate) enum Step {
    /// Go on with it as usual.
    Pass,
    /// It was the stale-plan error, cut out of the server's bytes.
    Stale,
    /// It was cut out of the server's bytes: an answer the client already has.
    Skipped,
    /// It was cut, and the request is to be sent again: [`Core::resend`].
    Resend,
}

impl Core {
    /// Starts keeping the next request, when one can be sent again: statements are mapped, the server holds no
    /// transaction and owes nothing.
    pub(crate) fn keep_next_request(&mut self, server: &ServerState) {
        let r = &mut self.retry;
        r.state = State::Off;
        if self.stmts.is_some() && server.txn_status == txn::IDLE && self.tracker.is_idle() {
            r.state = State::Keeping;
            r.sent.clear();
            (r.parses, r.closes, r.descriptions) = (0, 0, 0);
        }
    }

    /// Stops keeping a request (the server is given back, or something else was sent to it).
    pub(crate) fn keep_nothing(&mut self) {
        self.retry.state = State::Off;
    }

    /// Notes bytes written to the server for the request.
    pub(crate) fn sending(&mut self, first: &[u8], second: &[u8]) {
        let r = &mut self.retry;
        if r.state != State::Keeping {
            return;
        }
        if r.sent.len() + first.len() + second.len() > MAX_KEPT {
            r.state = State::Off;
            return;
        }
        r.sent.extend_from_slice(first);
        r.sent.extend_from_slice(second);
    }

    /// The request to send again, once [`Step::Resend`] said so.
    pub(crate) fn resend(&self) -> &[u8] {
        &self.retry.sent
    }

    /// Looks at the start of a whole server message at `rbuf[*fwd..]` (`stale`: it is the stale-plan error).
    /// What it cuts, the bytes before it in `rbuf` go to `out`.
    pub(crate) fn retry_step(
        &mut self,
        h: Option<Header>,
        code: u8,
        stale: bool,
        rbuf: &mut BytesMut,
        fwd: &mut usize,
    ) -> Step {
        match self.retry.state {
            State::Off => return Step::Pass,
            State::Cutting => {
                let (Some(h), backend::READY_FOR_QUERY) = (h, code) else {
                    // Notices and notifications between the error and its ReadyForQuery go on.
                    return Step::Pass;
                };
                self.cut(h, rbuf, fwd);
                let n = self.retry.descriptions;
                self.retry.state = if n > 0 {
                    State::Skipping(n)
                } else {
                    State::Off
                };
                return Step::Resend;
            }
            State::Skipping(n) => {
                let (Some(h), backend::PARAMETER_DESCRIPTION) = (h, code) else {
                    return Step::Pass;
                };
                self.cut(h, rbuf, fwd);
                self.retry.state = if n > 1 {
                    State::Skipping(n - 1)
                } else {
                    State::Off
                };
                return Step::Skipped;
            }
            State::Keeping if h.is_none() => {
                // A message too large to hold whole: the answer cannot be replayed piece by piece.
                self.retry.state = State::Off;
                return Step::Pass;
            }
            State::Keeping => {}
        }
        match code {
            backend::PARSE_COMPLETE => self.retry.parses += 1,
            backend::CLOSE_COMPLETE => self.retry.closes += 1,
            backend::PARAMETER_DESCRIPTION => self.retry.descriptions += 1,
            backend::NOTICE_RESPONSE
            | backend::PARAMETER_STATUS
            | backend::NOTIFICATION_RESPONSE => {}
            backend::ERROR_RESPONSE if stale && one_request(&self.retry.sent) => {
                let (Some(h), Some(map)) = (h, self.stmts.as_mut()) else {
                    self.retry.state = State::Off;
                    return Step::Pass;
                };
                let r = &mut self.retry;
                let mut again = BytesMut::with_capacity(r.sent.len() + 64);
                if !map.reprepare(&r.sent, r.parses, r.closes, &mut again) {
                    r.state = State::Off;
                    return Step::Pass;
                }
                again.extend_from_slice(&r.sent);
                r.sent = again;
                r.state = State::Cutting;
                self.cut(h, rbuf, fwd);
                return Step::Stale;
            }
            _ => self.retry.state = State::Off,
        }
        Step::Pass
    }

    /// Cuts the message at `rbuf[*fwd..]` out, what preceded it moved to `out`.
    fn cut(&mut self, h: Header, rbuf: &mut BytesMut, fwd: &mut usize) {
        self.out.extend_from_slice(&rbuf[..*fwd]);
        rbuf.advance(*fwd + h.total());
        *fwd = 0;
    }
}

/// Whether `sent` is whole messages making one extended-protocol request: its only Sync is its last message.
fn one_request(sent: &[u8]) -> bool {
    let mut len = 0;
    let mut last = 0;
    let mut syncs = 0;
    for (code, body) in messages(sent) {
        match code {
            frontend::SYNC => syncs += 1,
            frontend::PARSE
            | frontend::BIND
            | frontend::DESCRIBE
            | frontend::EXECUTE
            | frontend::CLOSE
            | frontend::FLUSH => {}
            _ => return false,
        }
        len += 5 + body.len();
        last = code;
    }
    len == sent.len() && syncs == 1 && last == frontend::SYNC
}
