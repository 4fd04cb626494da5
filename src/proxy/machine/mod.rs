//! The protocol state of one client session, without I/O. [`Core`] is what the session knows of the conversation
//! between its client and the server it holds: what the server still owes, the mapping of the client's prepared
//! statements, the session commands to replay on the next server, the parameters the client expects, what pins it
//! to its server, and the bytes Ocelot itself must send. Its methods take the bytes that arrived and say what to
//! do with them; `proxy::session` is the async driver that reads, writes, checks servers out and gives them back.
//! So the protocol logic can be driven in unit tests with scripted messages and no PostgreSQL.
//!
//! The server half (what a run of server bytes means) is [`server`]; the client half, for a message on its way
//! to the server, is [`client`]. Which messages need a server, and which Ocelot answers itself, is still decided
//! in the driver's `session/client_bytes.rs`.

pub(crate) mod client;
pub(crate) mod retry;
#[cfg(test)]
mod retry_tests;
pub(crate) mod server;
#[cfg(test)]
mod tests;

use bytes::BytesMut;

use super::session_state::SessionEffects;
use super::statements::StatementMap;
use super::tracker::TxnTracker;
use crate::config::PoolMode;
use crate::pool::client_params::ClientParams;
use crate::protocol::frame::Splitter;
use crate::router::pinning::Pins;

/// The session's protocol state (see the module documentation).
pub(crate) struct Core {
    pub(crate) mode: PoolMode,
    /// What the held server still owes the client.
    pub(crate) tracker: TxnTracker,
    /// Splits the server's bytes into messages, and pieces of messages too large to hold whole.
    pub(crate) ssplit: Splitter,
    /// Named prepared statements, when the pool maps them (transaction mode with a cache).
    pub(crate) stmts: Option<StatementMap>,
    /// Session commands the client runs, replayed on the next server (transaction mode).
    pub(crate) effects: Option<SessionEffects>,
    /// What the client expects of its server session.
    pub(crate) params: ClientParams,
    /// Transaction mode: state on the server that cannot be shared keeps the client on it.
    pub(crate) pins: Pins,
    /// Messages Ocelot itself must send to the client before the next forwarded bytes.
    pub(crate) out: BytesMut,
    /// Scratch space for one rewritten message or one injected reply.
    pub(crate) scratch: BytesMut,
    /// ReadyForQuery answers to Syncs Ocelot injected, not to be passed to the client.
    pub(crate) swallow_rfq: usize,
    /// An Execute went to the server since its last ReadyForQuery.
    pub(crate) unsynced_execute: bool,
    /// The request bytes sent to a replica that has not answered yet, to send again elsewhere if it dies.
    pub(crate) replay: Option<BytesMut>,
    /// Which of the client's messages are being dropped, and how that ends.
    pub(crate) discard: Discard,
    /// The request in flight, kept to be sent again should a shared statement's plan be stale.
    pub(crate) retry: retry::Retry,
}

/// Client messages being dropped instead of reaching a server. One state, since at most one of these holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Nothing is dropped.
    Nothing,
    /// The rest of a streamed message the statement mapping dropped.
    RestOfMessage,
    /// The rest of an extended request Ocelot refused by sending the server a statement that fails with the
    /// reason: up to and including its Sync, which the server's own answer ends.
    ToSync,
    /// The rest of a request refused without a server's part in it (a failed checkout, a plugin, a LISTEN
    /// Ocelot serves): up to its Sync, or a Query, which Ocelot answers with ReadyForQuery itself, as a server
    /// skips the rest of a failed extended request.
    ToSyncAnswered,
}

impl Core {
    /// A session in `mode` whose client expects `params`; `map_statements` when the pool maps named prepared
    /// statements onto its own.
    pub(crate) fn new(mode: PoolMode, params: ClientParams, map_statements: bool) -> Self {
        Core {
            mode,
            tracker: TxnTracker::default(),
            ssplit: Splitter::new(u32::MAX),
            stmts: map_statements.then(StatementMap::default),
            effects: (mode == PoolMode::Transaction).then(SessionEffects::default),
            params,
            pins: Pins::default(),
            out: BytesMut::new(),
            scratch: BytesMut::new(),
            swallow_rfq: 0,
            unsynced_execute: false,
            replay: None,
            discard: Discard::Nothing,
            retry: Default::default(),
        }
    }
}
