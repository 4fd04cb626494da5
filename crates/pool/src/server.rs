//! One live server connection and the state Ocelot keeps about it: the parameters the server reported, settings
//! Ocelot applied on a client's behalf, what a client left behind that must be cleaned before the next client
//! (SET, PREPARE, LISTEN, cursors), and whether it is still usable.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prepared::ServerStatements;
use super::{Address, PoolError, ServerParams};
use ocelot_protocol::codes::{backend, txn};
use ocelot_protocol::{decode, encode, frame::Header};

/// Where to send a CancelRequest for this connection's running query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub pid: i32,
    pub secret: i32,
}

/// What one of Ocelot's own queries returned.
#[derive(Debug, Default)]
struct Exchange {
    /// ParameterStatus values that changed.
    changed: Vec<(String, String)>,
    /// The first row (`None` when there was none; NULLs are `None` values).
    first_row: Option<Vec<Option<String>>>,
    /// The rows after the first, when all were asked for.
    more_rows: Vec<Vec<Option<String>>>,
}

/// Session state Ocelot applied on a server for the client using it: startup settings that the server does not
/// report (`SET name = value`), the client's own SET statements, and its SQL-level PREPAREs, each by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub startup: ServerParams,
    pub sets: ServerParams,
    pub prepares: ServerParams,
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
    pub unlisten: bool,
    pub close_cursors: bool,
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
    pub fn cleanup_sql(&self) -> Option<String> {
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

/// An authenticated connection to a PostgreSQL server.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: ocelot_net::Stream,
    /// Bytes read from the server and not yet consumed.
    pub rbuf: BytesMut,
    /// Reported parameters, as the server last reported them.
    pub params: ServerParams,
    /// Session state Ocelot applied on a client's behalf.
    pub applied: Applied,
    pub dirty: Dirty,
    /// Ocelot's proxy-wide prepared statements that exist on this connection.
    pub statements: ServerStatements,
    /// Transaction status from the last ReadyForQuery.
    pub txn_status: u8,
    /// Set when the connection can no longer be trusted (I/O error, protocol error, lost sync).
    pub broken: bool,
    pub cancel: Arc<CancelTarget>,
    pub created: Instant,
    pub last_used: Instant,
    pub address: Arc<Address>,
    max_message: u32,
    /// What `SHOW SERVERS` reports about this connection.
    pub info: Arc<ocelot_stats::ConnInfo>,
    /// The pool's reconnect epoch when it was opened: `RECONNECT` closes older ones at checkin.
    pub epoch: u64,
}

impl ServerConn {
    pub(crate) fn new(
        stream: ocelot_net::Stream,
        rbuf: BytesMut,
        params: ServerParams,
        cancel: CancelTarget,
        address: Arc<Address>,
        max_message: u32,
    ) -> Self {
        let now = Instant::now();
        ServerConn {
            stream,
            rbuf,
            params,
            applied: Applied::default(),
            dirty: Dirty::default(),
            statements: ServerStatements::default(),
            txn_status: txn::IDLE,
            broken: false,
            cancel: Arc::new(cancel),
            created: now,
            last_used: now,
            address,
            max_message,
            info: Arc::default(),
            epoch: 0,
        }
    }

    /// Largest message this connection accepts from the server.
    pub fn max_message(&self) -> u32 {
        self.max_message
    }

    /// Marks the connection broken and names why, for the error its user gets.
    pub(crate) fn lost(&mut self, reason: impl Into<String>) -> PoolError {
        self.broken = true;
        PoolError::Lost {
            server: self.address.to_string(),
            reason: reason.into(),
        }
    }

    /// Whether the connection can go straight back to the idle list.
    pub fn is_clean(&self) -> bool {
        !self.broken && self.txn_status == txn::IDLE && !self.dirty.any()
    }

    /// Runs `sql` (one or more statements) as a simple Query and reads to ReadyForQuery. ParameterStatus messages
    /// update `params` and are also returned, so a caller can pass changes on to its client. An ErrorResponse
    /// fails the call but leaves the connection usable; I/O and protocol errors mark it broken.
    pub async fn run(&mut self, sql: &str) -> Result<Vec<(String, String)>, PoolError> {
        self.exchange(sql).await.map(|r| r.changed)
    }

    /// Runs `sql` and returns the first column of its first row (`None` for no row or NULL). For Ocelot's own
    /// monitoring queries.
    pub async fn query_value(&mut self, sql: &str) -> Result<Option<String>, PoolError> {
        self.exchange(sql)
            .await
            .map(|r| r.first_row.and_then(|row| row.into_iter().next().flatten()))
    }

    /// Runs `sql` and returns its first row, if any, as text values.
    pub async fn query_row(&mut self, sql: &str) -> Result<Option<Vec<Option<String>>>, PoolError> {
        self.exchange(sql).await.map(|r| r.first_row)
    }

    /// Runs `sql` and returns all its rows as text values.
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PoolError> {
        self.exchange_rows(sql, true, None).await.map(|r| {
            let mut rows = Vec::with_capacity(1 + r.more_rows.len());
            rows.extend(r.first_row);
            rows.extend(r.more_rows);
            rows
        })
    }

    /// Runs `sql`, a `COPY ... FROM STDIN`, sending `data` (in the COPY's format) as its input.
    pub async fn copy_in(&mut self, sql: &str, data: &[u8]) -> Result<(), PoolError> {
        self.exchange_rows(sql, false, Some(data)).await.map(|_| ())
    }

    async fn exchange(&mut self, sql: &str) -> Result<Exchange, PoolError> {
        self.exchange_rows(sql, false, None).await
    }

    /// Sends one simple Query of Ocelot's own and reads its answer to ReadyForQuery, keeping the first row or
    /// (`all`) every row; `copy` is the input of a COPY FROM STDIN.
    async fn exchange_rows(
        &mut self,
        sql: &str,
        all: bool,
        mut copy: Option<&[u8]>,
    ) -> Result<Exchange, PoolError> {
        if !self.rbuf.is_empty() {
            return Err(self.lost("unread bytes before an internal query"));
        }
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        encode::query(&mut out, sql);
        if let Err(e) = self.stream.write_all(&out).await {
            return Err(self.lost(e.to_string()));
        }
        let mut result = Exchange::default();
        let mut error = None;
        let mut seen_row = false;
        loop {
            let h = match Header::parse(&self.rbuf, self.max_message) {
                Ok(h) => h,
                Err(e) => return Err(self.lost(e.to_string())),
            };
            let Some(h) = h.filter(|h| self.rbuf.len() >= h.total()) else {
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) => return Err(self.lost("server closed the connection")),
                    Ok(_) => continue,
                    Err(e) => return Err(self.lost(e.to_string())),
                }
            };
            let msg = self.rbuf.split_to(h.total());
            let body = &msg[5..];
            match h.code {
                backend::READY_FOR_QUERY => {
                    self.txn_status = decode::ready_for_query(body).unwrap_or(txn::FAILED);
                    break;
                }
                backend::PARAMETER_STATUS => {
                    if let Ok((k, v)) = decode::parameter_status(body) {
                        if self.params.set(k, v) {
                            result.changed.push((k.to_owned(), v.to_owned()));
                        }
                    }
                }
                backend::DATA_ROW if !seen_row || all => {
                    let mut c = decode::Cursor::new(h.code, body);
                    let n = c.i16().unwrap_or(0).max(0);
                    let row = (0..n)
                        .map(|_| {
                            let len = usize::try_from(c.i32().ok()?).ok()?;
                            c.bytes(len)
                                .ok()
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                        .collect();
                    if seen_row {
                        result.more_rows.push(row);
                    } else {
                        result.first_row = Some(row);
                    }
                    seen_row = true;
                }
                backend::ERROR_RESPONSE => {
                    error = Some(decode::error_fields(body).unwrap_or_default());
                }
                backend::COPY_IN_RESPONSE if copy.is_some() => {
                    let data = copy.take().unwrap_or_default();
                    let mut out = BytesMut::with_capacity(data.len() + 10);
                    encode::copy_data(&mut out, data);
                    encode::copy_done(&mut out);
                    if let Err(e) = self.stream.write_all(&out).await {
                        return Err(self.lost(e.to_string()));
                    }
                }
                backend::COPY_IN_RESPONSE
                | backend::COPY_OUT_RESPONSE
                | backend::COPY_BOTH_RESPONSE => {
                    return Err(self.lost("internal query started COPY"));
                }
                _ => {}
            }
        }
        match error {
            Some(fields) => Err(PoolError::Query {
                server: self.address.to_string(),
                fields: Box::new(fields),
            }),
            None => Ok(result),
        }
    }

    /// Rolls back an open transaction and undoes session state a client left, so the next client starts clean.
    pub async fn clean(&mut self) -> Result<(), PoolError> {
        if self.txn_status != txn::IDLE {
            self.run("ROLLBACK").await?;
        }
        if self.dirty.any() {
            if let Some(sql) = self.dirty.cleanup_sql() {
                self.run(&sql).await?;
            }
            if self.dirty.discard_all {
                self.run("DISCARD ALL").await?;
            }
            if self.dirty.reset_all || self.dirty.discard_all {
                self.applied.startup.clear();
                self.applied.sets.clear();
            }
            if self.dirty.deallocate_all || self.dirty.discard_all {
                self.statements.clear();
                self.applied.prepares.clear();
            }
            self.dirty = Dirty::default();
        }
        Ok(())
    }

    /// Sends Terminate and closes, ignoring errors: used when discarding a connection politely.
    pub async fn terminate(mut self) {
        let mut b = BytesMut::with_capacity(5);
        encode::terminate(&mut b);
        let _ = self.stream.write_all(&b).await;
        let _ = self.stream.shutdown().await;
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
