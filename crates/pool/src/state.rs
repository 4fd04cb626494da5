//! What Ocelot knows of the session on one server connection, apart from the socket: the parameters the server
//! reported, the settings Ocelot applied there for a client, what a client left that must be cleaned before the
//! next one, the proxy-wide statements prepared on it and its transaction status. Kept apart from the socket so
//! the session's protocol logic can be driven in tests without a server.

use super::prepared::ServerStatements;
use super::ServerParams;
use ocelot_protocol::codes::txn;

/// The session state of one server connection.
#[derive(Debug)]
pub struct ServerState {
    /// Reported parameters, as the server last reported them.
    pub params: ServerParams,
    /// Session state Ocelot applied on a client's behalf.
    pub applied: Applied,
    pub dirty: Dirty,
    /// Ocelot's proxy-wide prepared statements that exist on this connection.
    pub statements: ServerStatements,
    /// Transaction status from the last ReadyForQuery.
    pub txn_status: u8,
}

impl ServerState {
    pub fn new(params: ServerParams) -> Self {
        ServerState {
            params,
            applied: Applied::default(),
            dirty: Dirty::default(),
            statements: ServerStatements::default(),
            txn_status: txn::IDLE,
        }
    }
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState::new(ServerParams::default())
    }
}

/// Session state Ocelot applied on a server for the client using it: startup settings that the server does not
/// report (`SET name = value`), the client's own SET statements, and its SQL-level PREPAREs, each by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub(crate) startup: ServerParams,
    pub(crate) sets: ServerParams,
    pub(crate) prepares: ServerParams,
}

impl Applied {
    /// Mirrors a session command a client ran on this server itself, so later syncs start from the truth.
    pub fn observe(&mut self, cmd: &ocelot_router::session_sql::SessionCommand) {
        use ocelot_router::session_sql::SessionCommand as C;
        match cmd {
            // Tracked parameters are followed through ParameterStatus instead.
            C::Set { name, statement } if !super::params::is_tracked(name) => {
                self.sets.set(name, statement);
            }
            C::Reset { name } => {
                self.sets.remove(name);
                self.startup.remove(name);
            }
            C::ResetAll => {
                self.sets.clear();
                self.startup.clear();
            }
            C::Prepare { name, statement } => {
                self.prepares.set(name, statement);
            }
            C::Deallocate { name } => self.prepares.remove(name),
            C::DeallocateAll => self.prepares.clear(),
            C::DiscardAll => *self = Applied::default(),
            _ => {}
        }
    }
}

/// Session state a client left on a server that must be undone before another client gets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirty {
    pub reset_all: bool,
    pub deallocate_all: bool,
    pub(crate) unlisten: bool,
    pub(crate) close_cursors: bool,
    /// The client left in session mode (or left a pinned transaction-mode server): what it may have left cannot
    /// be read from command tags (temporary tables, advisory locks, Parse-prepared statements, `set_config`), so
    /// the server is reset as PgBouncer's `server_reset_query = DISCARD ALL` does.
    pub discard_all: bool,
}

impl Dirty {
    pub fn any(&self) -> bool {
        self.reset_all
            || self.deallocate_all
            || self.unlisten
            || self.close_cursors
            || self.discard_all
    }

    /// Whether a CommandComplete tag says every prepared statement of the session is gone.
    pub fn drops_all_statements(tag: &[u8]) -> bool {
        tag == b"DISCARD ALL" || tag == b"DEALLOCATE ALL"
    }

    /// Updates the flags from a CommandComplete tag the server sent to a client.
    pub fn observe_tag(&mut self, tag: &[u8]) {
        let word = tag.split(|&b| b == b' ').next().unwrap_or_default();
        match word {
            b"SET" | b"RESET" => self.reset_all = true,
            b"PREPARE" => self.deallocate_all = true,
            b"LISTEN" => self.unlisten = true,
            b"DECLARE" => self.close_cursors = true,
            b"DISCARD" if tag == b"DISCARD ALL" => *self = Dirty::default(),
            b"DEALLOCATE" if tag == b"DEALLOCATE ALL" => self.deallocate_all = false,
            _ => {}
        }
    }

    /// The SQL that undoes what the flags say other than `discard_all`, or `None` when there is none. A SET is undone
    /// with PgCat's own `RESET ROLE;` and `RESET ALL;` even before a DISCARD ALL that covers it, so operators who
    /// count these statements in pg_stat_statements (as PgCat's specs do) see what they saw with PgCat. DISCARD ALL
    /// runs as a query of its own: PostgreSQL refuses it in a multi-statement query, an implicit transaction.
    pub(crate) fn cleanup_sql(&self) -> Option<String> {
        let mut sql = String::new();
        let piecewise = !self.discard_all;
        for (flag, stmt) in [
            (self.close_cursors && piecewise, "CLOSE ALL;"),
            (self.unlisten && piecewise, "UNLISTEN *;"),
            (self.deallocate_all && piecewise, "DEALLOCATE ALL;"),
            // RESET ALL leaves the role and the session authorization alone.
            (
                self.reset_all,
                "RESET ROLE;RESET SESSION AUTHORIZATION;RESET ALL;",
            ),
        ] {
            if flag {
                sql.push_str(stmt);
            }
        }
        (!sql.is_empty()).then_some(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_flags_follow_command_tags() {
        let mut d = Dirty::default();
        d.observe_tag(b"SELECT 1");
        assert!(!d.any());
        d.observe_tag(b"SET");
        d.observe_tag(b"PREPARE");
        assert_eq!(
            d.cleanup_sql().as_deref(),
            Some("DEALLOCATE ALL;RESET ROLE;RESET SESSION AUTHORIZATION;RESET ALL;")
        );
        d.observe_tag(b"DISCARD ALL");
        assert!(!d.any());
        d.observe_tag(b"LISTEN");
        d.observe_tag(b"DECLARE CURSOR");
        assert_eq!(d.cleanup_sql().as_deref(), Some("CLOSE ALL;UNLISTEN *;"));
        d.discard_all = true;
        assert_eq!(
            d.cleanup_sql(),
            None,
            "DISCARD ALL covers the rest and runs alone"
        );
        assert!(d.any());
        d.observe_tag(b"SET");
        assert_eq!(
            d.cleanup_sql().as_deref(),
            Some("RESET ROLE;RESET SESSION AUTHORIZATION;RESET ALL;")
        );
    }
}
