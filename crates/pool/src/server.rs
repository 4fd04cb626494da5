//! One live server connection and the state Ocelot keeps about it: the parameters the server reported, settings
//! Ocelot applied on a client's behalf, what a client left behind that must be cleaned before the next client
//! (SET, PREPARE, LISTEN, cursors), and whether it is still usable.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::state::{Dirty, ServerState};
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

/// An authenticated connection to a PostgreSQL server.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: ocelot_net::Stream,
    /// Bytes read from the server and not yet consumed.
    pub rbuf: BytesMut,
    /// The session on the server, as Ocelot tracks it.
    pub state: ServerState,
    /// Set when the connection can no longer be trusted (I/O error, protocol error, lost sync).
    pub broken: bool,
    pub cancel: Arc<CancelTarget>,
    pub(crate) created: Instant,
    pub(crate) last_used: Instant,
    pub address: Arc<Address>,
    max_message: u32,
    /// What `SHOW SERVERS` reports about this connection.
    pub info: Arc<ocelot_stats::ConnInfo>,
    /// The pool's reconnect epoch when it was opened: `RECONNECT` closes older ones at checkin.
    pub(crate) epoch: u64,
}

impl ServerConn {
    pub fn new(
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
            state: ServerState::new(params),
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
    pub(crate) fn is_clean(&self) -> bool {
        !self.broken && self.state.txn_status == txn::IDLE && !self.state.dirty.any()
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

    /// Reads until one whole message is buffered and takes it (header included) out of the buffer.
    async fn next_message(&mut self) -> Result<(Header, BytesMut), PoolError> {
        loop {
            let h = match Header::parse(&self.rbuf, self.max_message) {
                Ok(h) => h,
                Err(e) => return Err(self.lost(e.to_string())),
            };
            if let Some(h) = h.filter(|h| self.rbuf.len() >= h.total()) {
                return Ok((h, self.rbuf.split_to(h.total())));
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return Err(self.lost("server closed the connection")),
                Ok(_) => {}
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
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
            let (h, msg) = self.next_message().await?;
            let body = &msg[5..];
            match h.code {
                backend::READY_FOR_QUERY => {
                    self.state.txn_status = decode::ready_for_query(body).unwrap_or(txn::FAILED);
                    break;
                }
                backend::PARAMETER_STATUS => {
                    if let Ok((k, v)) = decode::parameter_status(body) {
                        if self.state.params.set(k, v) {
                            result.changed.push((k.to_owned(), v.to_owned()));
                        }
                    }
                }
                backend::DATA_ROW if !seen_row || all => {
                    let row = text_row(body);
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
    pub(crate) async fn clean(&mut self) -> Result<(), PoolError> {
        if self.state.txn_status != txn::IDLE {
            self.run("ROLLBACK").await?;
        }
        if self.state.dirty.any() {
            if let Some(sql) = self.state.dirty.cleanup_sql() {
                self.run(&sql).await?;
            }
            if self.state.dirty.discard_all {
                self.run("DISCARD ALL").await?;
            }
            if self.state.dirty.reset_all || self.state.dirty.discard_all {
                self.state.applied.startup.clear();
                self.state.applied.sets.clear();
            }
            if self.state.dirty.deallocate_all || self.state.dirty.discard_all {
                self.state.statements.clear();
                self.state.applied.prepares.clear();
            }
            self.state.dirty = Dirty::default();
        }
        Ok(())
    }

    /// Sends Terminate and closes, ignoring errors: used when discarding a connection politely.
    pub(crate) async fn terminate(mut self) {
        let mut b = BytesMut::with_capacity(5);
        encode::terminate(&mut b);
        let _ = self.stream.write_all(&b).await;
        let _ = self.stream.shutdown().await;
    }
}

/// A DataRow's values as text (NULL as None), for the answers to Ocelot's own queries.
fn text_row(body: &[u8]) -> Vec<Option<String>> {
    let mut c = decode::Cursor::new(backend::DATA_ROW, body);
    let n = c.i16().unwrap_or(0).max(0);
    (0..n)
        .map(|_| {
            let len = usize::try_from(c.i32().ok()?).ok()?;
            c.bytes(len)
                .ok()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}
