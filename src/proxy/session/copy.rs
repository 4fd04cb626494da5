//! `COPY table FROM STDIN` into the sharded table: Ocelot starts the COPY on every shard (each in a transaction),
//! tells the client to send its data, cuts the data into rows, sends each row to the shard its key hashes to (in
//! CopyData messages of up to 64 KiB per shard), and at CopyDone commits the shards together with two-phase
//! commit and answers `COPY <total>`. Bad data (a row without its key, a key that is not of the key's type) or a
//! client CopyFail aborts the COPY on every shard.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Session;
use crate::database::distributed::Failure;
use crate::pool::exec::{self, read_answer, send};
use crate::pool::server::ServerConn;
use crate::pool::PoolError;
use crate::protocol::codes::{frontend, sqlstate, txn};
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::Header;
use crate::protocol::ProtocolError;
use crate::proxy::error::ClientError;
use crate::router::copy::{BadCopyData, CopyPlan, Key, RowSplitter};
use crate::router::session_sql::quote_literal;

/// Rows are sent to a shard once this much is waiting for it.
const SHARD_CHUNK: usize = 64 * 1024;
/// The largest CopyData message Ocelot accepts from a client while splitting.
const MAX_COPY_MESSAGE: usize = 64 * 1024 * 1024;

enum Outcome {
    /// Every shard took its rows: the total.
    Copied(u64),
    /// A shard refused (its ErrorResponse).
    ServerError(Bytes),
    /// Ocelot refused the data.
    Refused(&'static str, String),
    Lost(PoolError),
    ClientLeft,
}

impl Session {
    /// Over the extended protocol, answers the messages of a COPY request up to its Sync (Parse, Bind, Describe,
    /// Execute) as PostgreSQL would before the data starts. The Sync stays: during the COPY it is ignored, as
    /// PostgreSQL ignores it, and the client's Sync after CopyDone gets the ReadyForQuery.
    pub(super) fn answer_extended_copy_request(&mut self) {
        use crate::protocol::codes::backend;
        while let Ok(Some(h)) = Header::parse(&self.cbuf, u32::MAX) {
            if self.cbuf.len() < h.total() || h.code == frontend::SYNC {
                break;
            }
            match h.code {
                frontend::PARSE => encode::empty(&mut self.core.out, backend::PARSE_COMPLETE),
                frontend::BIND => encode::empty(&mut self.core.out, backend::BIND_COMPLETE),
                frontend::DESCRIBE => encode::empty(&mut self.core.out, backend::NO_DATA),
                frontend::EXECUTE => {
                    self.cbuf.advance(h.total());
                    break;
                }
                _ => {}
            }
            self.cbuf.advance(h.total());
        }
    }

    /// Refuses a COPY that came over the extended protocol the way drivers expect a failed COPY: it starts, the
    /// data is taken and dropped, and the error comes at its end.
    pub(super) async fn copy_refused(
        &mut self,
        plan: CopyPlan,
        code: &'static str,
        msg: String,
    ) -> Result<bool, ClientError> {
        self.copy_simple = false;
        let explicit = self.in_transaction();
        let outcome = self.copy_stream(&plan, Err((code, msg))).await?;
        self.copy_finish(outcome, explicit).await
    }

    /// Runs a split COPY FROM STDIN. Returns true when the client went away in the middle.
    pub(super) async fn copy_in(
        &mut self,
        plan: CopyPlan,
        simple: bool,
    ) -> Result<bool, ClientError> {
        self.copy_simple = simple;
        let explicit = self.in_transaction();
        let shards: Vec<usize> = (0..self.pool.shards.len()).collect();
        if let Err(e) = self.join_all_shards(&shards, explicit).await {
            self.abandon_parts(explicit).await;
            self.answer_error(Failure::Pool(e), explicit).await?;
            return Ok(false);
        }
        let key = match self.copy_key_index(&plan).await {
            Ok(k) => Ok(k),
            Err(Outcome::Refused(code, msg)) => Err((code, msg)),
            Err(outcome) => return self.copy_finish(outcome, explicit).await,
        };
        let outcome = self.copy_stream(&plan, key).await?;
        self.copy_finish(outcome, explicit).await
    }

    /// Where the key is among the copied columns (looking up the table's column order when none are listed).
    async fn copy_key_index(&mut self, plan: &CopyPlan) -> Result<usize, Outcome> {
        let Some(spec) = self.pool.sharder.key().cloned() else {
            return Err(Outcome::Refused(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "this pool has no sharding key".into(),
            ));
        };
        let mut table_columns = Vec::new();
        if plan.columns.is_empty() {
            let sql = format!(
                "SELECT attname FROM pg_attribute WHERE attrelid = {}::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                quote_literal(&plan.table)
            );
            let Some(server) = self.server.as_mut() else {
                return Err(Outcome::Lost(PoolError::Closed {
                    server: "shard".into(),
                }));
            };
            table_columns = exec::exec_text(server, &sql)
                .await
                .map_err(Outcome::Lost)?
                .into_iter()
                .map(|c| c.to_lowercase())
                .collect();
        }
        plan.key_index(&spec, &table_columns).ok_or_else(|| {
            Outcome::Refused(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "COPY into the sharded table must include the sharding key column \"{}\", so that Ocelot can send each row to its shard",
                    spec.column
                ),
            )
        })
    }

    /// Starts the COPY on every shard and streams the client's rows to them until CopyDone or CopyFail. When the
    /// rows cannot be routed (`key` is the refusal), the client's data is taken and dropped and the refusal comes
    /// at its end, as a server reports bad COPY data (drivers expect the COPY to start).
    async fn copy_stream(
        &mut self,
        plan: &CopyPlan,
        key: Result<usize, (&'static str, String)>,
    ) -> Result<Outcome, ClientError> {
        let Session {
            server,
            parked,
            client,
            cbuf,
            pool,
            attached_shard,
            core,
            ..
        } = self;
        let out = &mut core.out;
        let mut parts: Vec<(usize, &mut ServerConn)> = Vec::new();
        if let Some(s) = server.as_mut() {
            parts.push((*attached_shard, &mut **s));
        }
        for p in parked.iter_mut() {
            parts.push((p.shard, &mut *p.server));
        }
        parts.sort_by_key(|(s, _)| *s);
        let mut slot_of = vec![usize::MAX; pool.shards.len()];
        for (i, (s, _)) in parts.iter().enumerate() {
            slot_of[*s] = i;
        }
        let (key, bad, refusal_code) = match key {
            Ok(k) => (k, None, sqlstate::FEATURE_NOT_SUPPORTED),
            Err((code, msg)) => {
                // Nothing starts on the shards; the client still gets to send its data.
                out.extend_from_slice(&[b'G', 0, 0, 0, 7, 0, 0, 0]);
                client.write_all(out).await?;
                out.clear();
                (0, Some(msg), code)
            }
        };
        let refused_early = bad.is_some();
        if !refused_early {
            match start_on_shards(&mut parts, &plan.shard_sql).await {
                Ok(Some(copy_in)) => {
                    // After what Ocelot already answered (BindComplete over the extended protocol).
                    out.extend_from_slice(&copy_in);
                    client.write_all(out).await?;
                    out.clear();
                }
                Ok(None) => {}
                Err(outcome) => return Ok(outcome),
            }
        }
        let mut rows = Rows {
            sharder: &pool.sharder,
            slot_of,
            splitter: RowSplitter::new(plan.format.clone(), key),
            bufs: parts.iter().map(|_| BytesMut::new()).collect(),
            bad,
            client_fail: None,
        };
        if let Some(outcome) = rows.relay(client, cbuf, &mut parts).await? {
            return Ok(outcome);
        }
        if refused_early {
            return Ok(match (rows.client_fail, rows.bad) {
                (None, Some(why)) => Outcome::Refused(refusal_code, why),
                (Some(reason), _) => Outcome::Refused(
                    sqlstate::QUERY_CANCELED,
                    format!("COPY from stdin failed: {reason}"),
                ),
                (None, None) => Outcome::Copied(0),
            });
        }
        Ok(finish_on_shards(&mut parts, rows.client_fail, rows.bad).await)
    }

    /// Answers the client and ends or keeps the transaction.
    async fn copy_finish(&mut self, outcome: Outcome, explicit: bool) -> Result<bool, ClientError> {
        let simple = self.copy_simple;
        let error = match outcome {
            Outcome::ClientLeft => return Ok(true),
            Outcome::Lost(e) => {
                self.abandon_parts(explicit).await;
                self.answer_error(Failure::Pool(e), explicit).await?;
                return Ok(false);
            }
            Outcome::Copied(total) if explicit => {
                encode::command_complete(&mut self.core.out, &format!("COPY {total}"));
                let status = self
                    .server
                    .as_ref()
                    .map_or(txn::FAILED, |s| s.state.txn_status);
                self.core.tracker.set_status(status);
                if simple {
                    encode::ready_for_query(&mut self.core.out, status);
                }
                self.flush_out().await?;
                return Ok(false);
            }
            Outcome::Copied(total) => match self.commit_all().await {
                Ok(()) => {
                    encode::command_complete(&mut self.core.out, &format!("COPY {total}"));
                    self.end_parts();
                    if simple {
                        encode::ready_for_query(&mut self.core.out, txn::IDLE);
                    }
                    self.flush_out().await?;
                    return Ok(false);
                }
                Err(f) => f.error_response(),
            },
            Outcome::ServerError(e) => {
                let mut b = BytesMut::new();
                b.extend_from_slice(&e);
                b
            }
            Outcome::Refused(code, msg) => {
                let mut b = BytesMut::new();
                encode::error_response(&mut b, Severity::Error, code, &msg, None);
                b
            }
        };
        self.core.out.extend_from_slice(&error);
        let status = if explicit {
            self.fail_all().await;
            self.core.tracker.set_status(txn::FAILED);
            txn::FAILED
        } else {
            self.rollback_all().await;
            self.end_parts();
            txn::IDLE
        };
        // Over the extended protocol the client's Sync brings the ReadyForQuery (from the server in a transaction,
        // whose parts were failed above, or from Ocelot).
        if simple {
            encode::ready_for_query(&mut self.core.out, status);
        }
        self.flush_out().await?;
        Ok(false)
    }
}

/// The shards of a COPY, in shard order, with their held connections.
type Parts<'a> = [(usize, &'a mut ServerConn)];

/// Starts `sql` (the COPY) on every shard: the CopyInResponse to pass on to the client, or how the COPY ended
/// before it began (a shard refused it, and where it started it is stopped again).
async fn start_on_shards(parts: &mut Parts<'_>, sql: &str) -> Result<Option<Bytes>, Outcome> {
    let mut q = BytesMut::new();
    encode::query(&mut q, sql);
    let started = join_all(parts.iter_mut().map(|(_, c)| {
        let q = &q;
        async move {
            send(c, q).await?;
            read_answer(c).await
        }
    }))
    .await;
    let mut copy_in = None;
    let mut refused = None;
    let mut waiting = Vec::new();
    for (i, a) in started.into_iter().enumerate() {
        match a {
            Err(e) => return Err(Outcome::Lost(e)),
            Ok(a) => match (a.copy_in, a.error) {
                (Some(c), _) => {
                    copy_in.get_or_insert(c);
                    waiting.push(i);
                }
                (None, e) => {
                    refused.get_or_insert(e.unwrap_or_default());
                }
            },
        }
    }
    if let Some(err) = refused {
        let mut fail = BytesMut::new();
        encode::copy_fail(&mut fail, "COPY failed to start on another shard");
        for i in waiting {
            let c = &mut *parts[i].1;
            if send(c, &fail).await.is_ok() {
                let _ = read_answer(c).await;
            }
        }
        return Err(Outcome::ServerError(err));
    }
    Ok(copy_in)
}

/// Ends the COPY on every shard (CopyDone, or CopyFail with the reason) and sums what they copied.
async fn finish_on_shards(
    parts: &mut Parts<'_>,
    client_fail: Option<String>,
    bad: Option<String>,
) -> Outcome {
    let mut end = BytesMut::new();
    match (&client_fail, &bad) {
        (None, None) => encode::empty(&mut end, frontend::COPY_DONE),
        (Some(reason), _) => encode::copy_fail(&mut end, reason),
        (None, Some(why)) => encode::copy_fail(&mut end, why),
    }
    let answers = join_all(parts.iter_mut().map(|(_, c)| {
        let end = &end;
        async move {
            send(c, end).await?;
            read_answer(c).await
        }
    }))
    .await;
    let mut total = 0u64;
    let mut first_error = None;
    for a in answers {
        match a {
            Err(e) => return Outcome::Lost(e),
            Ok(a) => {
                if let Some(e) = a.error {
                    first_error.get_or_insert(e);
                }
                total += a
                    .tag
                    .as_deref()
                    .and_then(|t| t.strip_prefix("COPY "))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    match (bad, first_error) {
        (Some(why), _) if client_fail.is_none() => {
            Outcome::Refused(sqlstate::BAD_COPY_FILE_FORMAT, why)
        }
        (_, Some(e)) => Outcome::ServerError(e),
        _ => Outcome::Copied(total),
    }
}

/// The client's COPY data on its way to the shards: rows cut out of CopyData and queued per shard.
struct Rows<'a> {
    sharder: &'a crate::router::sharding::Sharder,
    /// Each shard's place in the parts (`usize::MAX`: not part of this COPY).
    slot_of: Vec<usize>,
    splitter: RowSplitter,
    bufs: Vec<BytesMut>,
    /// Why the data is refused (the rest is read and dropped).
    bad: Option<String>,
    /// The client's CopyFail reason.
    client_fail: Option<String>,
}

impl Rows<'_> {
    /// Reads the client's data up to its CopyDone or CopyFail, sending each shard its rows as they fill a chunk.
    /// `Some` when the COPY ended otherwise (a shard was lost, the client left).
    async fn relay(
        &mut self,
        client: &mut crate::net::Stream,
        cbuf: &mut BytesMut,
        parts: &mut Parts<'_>,
    ) -> Result<Option<Outcome>, ClientError> {
        let mut frame = BytesMut::new();
        loop {
            let done = self.take_messages(cbuf)?;
            if done && self.bad.is_none() && self.client_fail.is_none() {
                let Rows {
                    splitter,
                    bufs,
                    sharder,
                    slot_of,
                    ..
                } = self;
                if let Err(e) = splitter.finish(|row, k| route(sharder, slot_of, row, k, bufs)) {
                    self.bad = Some(e.0);
                }
            }
            if self.bad.is_none() {
                for (i, b) in self.bufs.iter_mut().enumerate() {
                    if b.len() >= SHARD_CHUNK || (done && !b.is_empty()) {
                        frame.clear();
                        encode::copy_data(&mut frame, b);
                        b.clear();
                        if let Err(e) = send(parts[i].1, &frame).await {
                            return Ok(Some(Outcome::Lost(e)));
                        }
                    }
                }
            }
            if done {
                return Ok(None);
            }
            if cbuf.capacity() - cbuf.len() < 8192 {
                cbuf.reserve(64 * 1024);
            }
            if client.read_buf(cbuf).await? == 0 {
                return Ok(Some(Outcome::ClientLeft));
            }
        }
    }

    /// Takes the whole messages in `cbuf`; true once the client's CopyDone or CopyFail was among them.
    fn take_messages(&mut self, cbuf: &mut BytesMut) -> Result<bool, ClientError> {
        loop {
            let h = match Header::parse(cbuf, u32::MAX) {
                Ok(Some(h)) if cbuf.len() >= h.total() => h,
                Ok(Some(h)) if h.total() > MAX_COPY_MESSAGE => {
                    return Err(ProtocolError::TooLarge {
                        code: h.code as char,
                        len: h.total() as u32,
                        max: MAX_COPY_MESSAGE as u32,
                    }
                    .into())
                }
                Ok(_) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let msg = cbuf.split_to(h.total());
            match h.code {
                frontend::COPY_DATA if self.bad.is_none() => {
                    let Rows {
                        splitter,
                        bufs,
                        sharder,
                        slot_of,
                        ..
                    } = self;
                    if let Err(e) =
                        splitter.feed(&msg[5..], |row, k| route(sharder, slot_of, row, k, bufs))
                    {
                        self.bad = Some(e.0);
                    }
                }
                frontend::COPY_DATA | frontend::FLUSH | frontend::SYNC => {}
                frontend::COPY_DONE => return Ok(true),
                frontend::COPY_FAIL => {
                    let body = &msg[5..];
                    self.client_fail = Some(
                        String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body))
                            .into_owned(),
                    );
                    return Ok(true);
                }
                other => {
                    return Err(ProtocolError::Unexpected {
                        got: other as char,
                        expected: "COPY data",
                    }
                    .into())
                }
            }
        }
    }
}

/// Queues one row for the shard its key hashes to.
fn route(
    sharder: &crate::router::sharding::Sharder,
    slot_of: &[usize],
    row: &[u8],
    k: Key,
    bufs: &mut [BytesMut],
) -> Result<(), BadCopyData> {
    let shard = match k {
        // PostgreSQL's hash partitioning puts NULL keys in remainder 0.
        Key::Null => 0,
        Key::Value(v) => sharder.shard_of_text(&v).ok_or_else(|| {
            BadCopyData(format!(
                "invalid value for the sharding key in a COPY row: \"{v}\""
            ))
        })?,
    };
    match slot_of.get(shard).copied().filter(|s| *s != usize::MAX) {
        Some(i) => {
            bufs[i].extend_from_slice(row);
            Ok(())
        }
        None => Err(BadCopyData(format!(
            "shard {shard} is not part of this COPY"
        ))),
    }
}
