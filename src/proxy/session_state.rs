//! Sans-IO tracking of the session state a client creates with SQL (SET, RESET, set_config, PREPARE,
//! DEALLOCATE, DISCARD ALL), so transaction mode can replay it on whichever server the client gets next. An
//! effect counts only once its statement succeeded and, inside an explicit transaction, once that transaction
//! committed; `SET LOCAL` never counts. Statements are matched to results by sync group, as in `statements`.

use std::collections::VecDeque;

use crate::protocol::codes::txn;
use crate::router::session_sql::{classify, may_change_session, split_statements, SessionCommand};

/// Session commands found in one request, in order.
fn effects_of(sql: &[u8]) -> Vec<SessionCommand> {
    if !may_change_session(sql) {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(sql);
    split_statements(&text)
        .into_iter()
        .map(classify)
        .filter(|c| !matches!(c, SessionCommand::Other | SessionCommand::SetLocal))
        .collect()
}

/// Tracks which session commands took effect.
#[derive(Debug)]
pub(crate) struct SessionEffects {
    sent_groups: u64,
    done_groups: u64,
    pending: VecDeque<(u64, Vec<SessionCommand>)>,
    building: Vec<SessionCommand>,
    unnamed_statement: Vec<SessionCommand>,
    unnamed_portal: Vec<SessionCommand>,
    in_transaction: Vec<SessionCommand>,
    error_in_group: bool,
    committed_in_group: bool,
    rolled_back_in_group: bool,
    status: u8,
}

impl Default for SessionEffects {
    fn default() -> Self {
        SessionEffects {
            sent_groups: 0,
            done_groups: 0,
            pending: VecDeque::new(),
            building: Vec::new(),
            unnamed_statement: Vec::new(),
            unnamed_portal: Vec::new(),
            in_transaction: Vec::new(),
            error_in_group: false,
            committed_in_group: false,
            rolled_back_in_group: false,
            status: txn::IDLE,
        }
    }
}

impl SessionEffects {
    /// Resets the per-server counters when a server is attached (the server starts idle).
    pub(crate) fn attach(&mut self) {
        *self = SessionEffects::default();
    }

    /// A simple Query (its text without the terminator).
    pub(crate) fn query(&mut self, sql: &[u8]) {
        let fx = effects_of(sql);
        self.pending.push_back((self.sent_groups, fx));
        self.sent_groups += 1;
    }

    /// A Parse: only the unnamed statement is followed (drivers run SET through it).
    pub(crate) fn parse(&mut self, name: &str, sql: &[u8]) {
        if name.is_empty() {
            self.unnamed_statement = effects_of(sql);
        }
    }

    /// A Bind; `params` are its values (`None` when unreadable), which resolve a parameterised set_config.
    pub(crate) fn bind(&mut self, portal: &str, statement: &str, params: Option<&[Option<&[u8]>]>) {
        if portal.is_empty() {
            self.unnamed_portal = if statement.is_empty() {
                self.unnamed_statement
                    .iter()
                    .filter_map(|c| c.with_params(params.unwrap_or_default()))
                    .collect()
            } else {
                Vec::new()
            };
        }
    }

    pub(crate) fn execute(&mut self, portal: &str) {
        if portal.is_empty() {
            self.building.extend(self.unnamed_portal.iter().cloned());
        }
    }

    pub(crate) fn sync(&mut self) {
        let fx = std::mem::take(&mut self.building);
        self.pending.push_back((self.sent_groups, fx));
        self.sent_groups += 1;
    }

    pub(crate) fn server_error(&mut self) {
        self.error_in_group = true;
    }

    /// A CommandComplete tag: an explicit transaction ends with `COMMIT` (or `ROLLBACK`, also for a failed
    /// COMMIT).
    pub(crate) fn server_tag(&mut self, tag: &[u8]) {
        if tag == b"COMMIT" {
            self.committed_in_group = true;
        } else if tag == b"ROLLBACK" {
            self.committed_in_group = false;
            self.rolled_back_in_group = true;
        }
    }

    /// Ocelot rolled the transaction back itself (idle in it for too long): nothing done in it took effect.
    pub(crate) fn rolled_back(&mut self) {
        self.in_transaction.clear();
        self.status = txn::IDLE;
    }

    /// ReadyForQuery: returns the commands that now took effect, in order.
    pub(crate) fn server_ready(&mut self, status: u8) -> Vec<SessionCommand> {
        let mut fx = Vec::new();
        while let Some((g, _)) = self.pending.front() {
            if *g > self.done_groups {
                break;
            }
            if let Some((g, f)) = self.pending.pop_front() {
                if g == self.done_groups {
                    fx = f;
                }
            }
        }
        let was = self.status;
        let mut out = Vec::new();
        match status {
            txn::IDLE => {
                if self.error_in_group || self.rolled_back_in_group {
                    self.in_transaction.clear();
                } else if was == txn::IDLE
                    && !self.committed_in_group
                    && self.in_transaction.is_empty()
                {
                    out = fx;
                } else if was == txn::IDLE || self.committed_in_group {
                    out = std::mem::take(&mut self.in_transaction);
                    out.extend(fx);
                } else {
                    self.in_transaction.clear();
                }
            }
            txn::IN_TRANSACTION if !self.error_in_group => self.in_transaction.extend(fx),
            _ => {}
        }
        self.status = status;
        self.done_groups += 1;
        self.error_in_group = false;
        self.committed_in_group = false;
        self.rolled_back_in_group = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, stmt: &str) -> SessionCommand {
        SessionCommand::Set {
            name: name.into(),
            statement: stmt.into(),
        }
    }

    #[test]
    fn autocommit_set_takes_effect() {
        let mut s = SessionEffects::default();
        s.query(b"SET work_mem = '8MB'");
        s.server_tag(b"SET");
        assert_eq!(
            s.server_ready(b'I'),
            vec![set("work_mem", "SET work_mem = '8MB'")]
        );
    }

    #[test]
    fn failed_query_takes_no_effect() {
        let mut s = SessionEffects::default();
        s.query(b"SET work_mem = '8MB'; SELECT 1/0");
        s.server_error();
        assert!(s.server_ready(b'I').is_empty());
    }

    #[test]
    fn transaction_effects_wait_for_commit() {
        let mut s = SessionEffects::default();
        s.query(b"BEGIN");
        assert!(s.server_ready(b'T').is_empty());
        s.query(b"SET a.b = 1");
        assert!(s.server_ready(b'T').is_empty());
        s.query(b"SET LOCAL work_mem = '1MB'");
        assert!(s.server_ready(b'T').is_empty());
        s.query(b"COMMIT");
        s.server_tag(b"COMMIT");
        assert_eq!(s.server_ready(b'I'), vec![set("a.b", "SET a.b = 1")]);
        s.query(b"BEGIN");
        s.server_ready(b'T');
        s.query(b"PREPARE p AS SELECT 1");
        s.server_ready(b'T');
        s.query(b"ROLLBACK");
        s.server_tag(b"ROLLBACK");
        assert!(s.server_ready(b'I').is_empty());
        // A whole transaction in one Query.
        s.query(b"BEGIN; SET a = 1; ROLLBACK");
        s.server_tag(b"BEGIN");
        s.server_tag(b"SET");
        s.server_tag(b"ROLLBACK");
        assert!(s.server_ready(b'I').is_empty());
    }

    #[test]
    fn extended_protocol_unnamed_statement() {
        let mut s = SessionEffects::default();
        s.parse("", b"SET search_path TO app");
        s.bind("", "", None);
        s.execute("");
        s.sync();
        assert_eq!(
            s.server_ready(b'I'),
            vec![set("search_path", "SET search_path TO app")]
        );
        // A parameterised set_config resolves with the Bind values.
        s.parse("", b"SELECT set_config($1, $2, false)");
        s.bind("", "", Some(&[Some(b"app.user"), Some(b"7")]));
        s.execute("");
        s.sync();
        assert_eq!(
            s.server_ready(b'I'),
            vec![set("app.user", "SET \"app\".\"user\" TO $ocelot$7$ocelot$")]
        );
        // Prepared only (no Execute): nothing happened.
        s.parse("", b"SET search_path TO other");
        s.sync();
        assert!(s.server_ready(b'I').is_empty());
    }
}
