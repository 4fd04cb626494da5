//! Running one simple Query on every shard in parallel and merging the answers into one, for keyless reads of
//! the sharded table that `router::fanout` plans as concatenations: the RowDescription (which every shard must
//! agree on), every shard's rows in shard order, `SELECT <total>`, ReadyForQuery. An error from any shard is the
//! answer. Rows are gathered before they are sent, so a fan-out costs memory in proportion to its result.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::params::ClientParams;
use crate::pool::balance::Want;
use crate::pool::{PoolError, UserPool};
use crate::protocol::codes::{backend, sqlstate, txn};
use crate::protocol::decode;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::Header;

/// One shard's answer.
#[derive(Default)]
struct Answer {
    row_description: Option<Bytes>,
    rows: BytesMut,
    count: u64,
    error: Option<Bytes>,
}

async fn ask(
    pool: Arc<UserPool>,
    shard: usize,
    want: Want,
    primary_reads: bool,
    mut params: ClientParams,
    query: Bytes,
) -> Result<Answer, PoolError> {
    let mut server = pool.checkout(shard, want, primary_reads).await?;
    if let Some(sql) = params.sync_sql(&server.params, &server.applied) {
        server.run(&sql).await?;
        let conn = &mut *server;
        params.after_sync(&conn.params, &mut conn.applied);
    }
    let lost = |e: String, server: &str| PoolError::Lost {
        server: server.to_owned(),
        reason: e,
    };
    let name = server.address.to_string();
    if let Err(e) = server.stream.write_all(&query).await {
        server.broken = true;
        return Err(lost(e.to_string(), &name));
    }
    let mut answer = Answer::default();
    loop {
        let conn = &mut *server;
        let h = match Header::parse(&conn.rbuf, u32::MAX) {
            Ok(Some(h)) if conn.rbuf.len() >= h.total() => h,
            Ok(_) => match conn.stream.read_buf(&mut conn.rbuf).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    conn.broken = true;
                    return Err(lost("server closed the connection".into(), &name));
                }
                Err(e) => {
                    conn.broken = true;
                    return Err(lost(e.to_string(), &name));
                }
            },
            Err(e) => {
                conn.broken = true;
                return Err(lost(e.to_string(), &name));
            }
        };
        let msg = conn.rbuf.split_to(h.total()).freeze();
        match h.code {
            backend::ROW_DESCRIPTION => answer.row_description = Some(msg),
            backend::DATA_ROW => {
                answer.rows.extend_from_slice(&msg);
                answer.count += 1;
            }
            backend::ERROR_RESPONSE => {
                answer.error.get_or_insert(msg);
            }
            backend::READY_FOR_QUERY => {
                conn.txn_status = decode::ready_for_query(&msg[5..]).unwrap_or(txn::FAILED);
                break;
            }
            _ => {}
        }
    }
    Ok(answer)
}

/// Sends `query` (a whole Query message) to every shard and returns the merged answer, ReadyForQuery included.
pub async fn run(
    pool: &Arc<UserPool>,
    params: &ClientParams,
    query: &[u8],
    want: Want,
    primary_reads: bool,
) -> Result<BytesMut, PoolError> {
    let query = Bytes::copy_from_slice(query);
    let mut set = JoinSet::new();
    for shard in 0..pool.shards.len() {
        set.spawn(ask(
            pool.clone(),
            shard,
            want,
            primary_reads,
            params.clone(),
            query.clone(),
        ));
    }
    let mut answers: Vec<Option<Answer>> = (0..pool.shards.len()).map(|_| None).collect();
    let mut index = 0;
    while let Some(joined) = set.join_next().await {
        let answer = match joined {
            Ok(r) => r?,
            Err(e) => {
                return Err(PoolError::Lost {
                    server: format!("pool \"{}\"", pool.database),
                    reason: format!("fan-out task failed: {e}"),
                })
            }
        };
        // Tasks finish in any order; the order of rows across shards is not significant without ORDER BY.
        answers[index] = Some(answer);
        index += 1;
    }
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    let mut out = BytesMut::new();
    if let Some(err) = answers.iter().find_map(|a| a.error.clone()) {
        out.extend_from_slice(&err);
        encode::ready_for_query(&mut out, txn::IDLE);
        return Ok(out);
    }
    let mut shapes = answers.iter().filter_map(|a| a.row_description.as_ref());
    let shape = shapes.next().cloned();
    if shapes.any(|s| Some(s) != shape.as_ref()) {
        encode::error_response(
            &mut out,
            Severity::Error,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the shards returned different result columns; check that every shard has the same schema",
            None,
        );
        encode::ready_for_query(&mut out, txn::IDLE);
        return Ok(out);
    }
    if let Some(shape) = shape {
        out.extend_from_slice(&shape);
    }
    let mut total = 0;
    for mut a in answers {
        total += a.count;
        let rows = a.rows.split();
        out.extend_from_slice(rows.chunk());
    }
    encode::command_complete(&mut out, &format!("SELECT {total}"));
    encode::ready_for_query(&mut out, txn::IDLE);
    Ok(out)
}
