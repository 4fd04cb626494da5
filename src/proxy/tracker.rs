//! Sans-IO bookkeeping of one client/server pairing: how many answers (ReadyForQuery) are still owed, whether an
//! extended-protocol sequence is open, whether COPY FROM STDIN is running, and the last transaction status. It
//! decides when a server can go back to the pool in transaction mode: only when every Query and Sync sent has been
//! answered, no Parse/Bind/Execute awaits its Sync, no COPY is running, and the server said it is idle ('I').
//!
//! One subtlety: PostgreSQL ignores Sync while in COPY-in mode started by an extended-protocol Execute, so Syncs
//! a driver pipelined behind that Execute (tokio-postgres does) produce no ReadyForQuery and must not be counted.
//! <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-COPY>

use std::collections::VecDeque;

use crate::protocol::codes::{backend, frontend, txn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A simple Query or FunctionCall.
    Simple,
    /// A Sync ending an extended-protocol sequence.
    Extended,
}

/// Tracks what a server still owes a client.
#[derive(Debug, Clone)]
pub(crate) struct TxnTracker {
    pending: VecDeque<Unit>,
    /// Parse/Bind/Describe/Execute/Close sent since the last Sync.
    unsynced: bool,
    /// The server is in COPY-in mode and the client has not sent CopyDone/CopyFail yet.
    copy_in: bool,
    /// COPY-in was started by an extended-protocol Execute, so Syncs are ignored by the server until it ends.
    copy_in_extended: bool,
    syncs_since_execute: usize,
    status: u8,
}

impl Default for TxnTracker {
    fn default() -> Self {
        TxnTracker {
            pending: VecDeque::new(),
            unsynced: false,
            copy_in: false,
            copy_in_extended: false,
            syncs_since_execute: 0,
            status: txn::IDLE,
        }
    }
}

impl TxnTracker {
    /// Records a message forwarded from the client to the server (called once per message, at its start).
    pub(crate) fn client_message(&mut self, code: u8) {
        match code {
            frontend::QUERY | frontend::FUNCTION_CALL => self.pending.push_back(Unit::Simple),
            frontend::SYNC => {
                if !self.copy_in_extended {
                    self.pending.push_back(Unit::Extended);
                    self.unsynced = false;
                }
                self.syncs_since_execute += 1;
            }
            frontend::EXECUTE => {
                self.unsynced = true;
                self.syncs_since_execute = 0;
            }
            frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE => {
                self.unsynced = true
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.copy_in = false;
                self.copy_in_extended = false;
            }
            _ => {}
        }
    }

    /// Records a message received from the server (called once per message, at its start).
    pub(crate) fn server_message(&mut self, code: u8, rfq_status: Option<u8>) {
        match code {
            backend::READY_FOR_QUERY => {
                self.pending.pop_front();
                self.status = rfq_status.unwrap_or(txn::FAILED);
                // A server that sends ReadyForQuery has left COPY mode (it ended or failed).
                self.copy_in = false;
                self.copy_in_extended = false;
            }
            backend::COPY_IN_RESPONSE | backend::COPY_BOTH_RESPONSE => {
                self.copy_in = true;
                if self.pending.front() != Some(&Unit::Simple) {
                    self.copy_in_extended = true;
                    self.unsynced = true;
                    for _ in 0..self.syncs_since_execute {
                        if self.pending.back() == Some(&Unit::Extended) {
                            self.pending.pop_back();
                        }
                    }
                    self.syncs_since_execute = 0;
                }
            }
            _ => {}
        }
    }

    /// Whether the server owes nothing and the session is outside a transaction.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.unsynced && !self.copy_in && self.status == txn::IDLE
    }

    /// Whether the server is still answering whole requests made outside a transaction and no other request is
    /// open: the client's next request starts afresh and may belong on another server.
    pub(crate) fn between_requests(&self) -> bool {
        !self.pending.is_empty() && !self.unsynced && !self.copy_in && self.status == txn::IDLE
    }

    /// Whether the server owes no answer: nothing sent is unanswered, in or out of a transaction.
    pub(crate) fn is_quiet(&self) -> bool {
        self.pending.is_empty() && !self.unsynced && !self.copy_in
    }

    /// Whether Parse/Bind/Describe/Execute/Close went to the server without their Sync yet.
    pub(crate) fn is_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Whether the server is in the middle of answering (so its connection state is unknown to Ocelot).
    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty() || self.copy_in
    }

    /// Requests (Query, FunctionCall or Sync) not answered yet.
    pub(crate) fn pending_units(&self) -> usize {
        self.pending.len()
    }

    /// Whether COPY FROM STDIN is running (the client must be able to send its data).
    pub(crate) fn in_copy(&self) -> bool {
        self.copy_in
    }

    /// Sets the status after Ocelot itself began a transaction on the server (a deferred BEGIN).
    pub(crate) fn set_status(&mut self, status: u8) {
        self.status = status;
    }

    /// Transaction status from the last ReadyForQuery.
    pub(crate) fn status(&self) -> u8 {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(t: &mut TxnTracker, codes: &[u8]) {
        codes.iter().for_each(|&c| t.client_message(c));
    }
    fn rfq(t: &mut TxnTracker, s: u8) {
        t.server_message(b'Z', Some(s));
    }

    #[test]
    fn simple_query_round_trip() {
        let mut t = TxnTracker::default();
        client(&mut t, b"Q");
        assert!(!t.is_idle());
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn explicit_transaction_keeps_the_server() {
        let mut t = TxnTracker::default();
        client(&mut t, b"Q");
        rfq(&mut t, b'T');
        assert!(!t.is_idle() && !t.is_busy());
        client(&mut t, b"Q");
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn pipelined_extended_sequences() {
        let mut t = TxnTracker::default();
        client(&mut t, b"PBDES");
        client(&mut t, b"BES");
        rfq(&mut t, b'I');
        assert!(!t.is_idle());
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn unsynced_extended_messages_keep_the_server() {
        let mut t = TxnTracker::default();
        client(&mut t, b"PDH");
        assert!(!t.is_idle());
        client(&mut t, b"S");
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn simple_copy_in() {
        let mut t = TxnTracker::default();
        client(&mut t, b"Q");
        t.server_message(b'G', None);
        client(&mut t, b"ddd");
        assert!(!t.is_idle());
        client(&mut t, b"c");
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn extended_copy_in_ignores_pipelined_sync() {
        // tokio-postgres: Bind, Execute, Sync; then CopyData..., CopyDone, Sync. One ReadyForQuery in all.
        let mut t = TxnTracker::default();
        client(&mut t, b"BES");
        t.server_message(b'2', None);
        t.server_message(b'G', None);
        client(&mut t, b"dd");
        client(&mut t, b"S");
        assert!(!t.is_idle());
        client(&mut t, b"c");
        assert!(!t.is_idle());
        client(&mut t, b"S");
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }

    #[test]
    fn copy_error_ends_copy_mode() {
        let mut t = TxnTracker::default();
        client(&mut t, b"Q");
        t.server_message(b'G', None);
        client(&mut t, b"d");
        t.server_message(b'E', None);
        rfq(&mut t, b'I');
        assert!(t.is_idle());
    }
}
