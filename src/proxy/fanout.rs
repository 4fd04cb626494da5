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
use std::cmp::Ordering;

use crate::router::fanout::{Aggregate, Ordered, SortColumn};
use crate::router::merge::{combine, compare, sortable};

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

/// How shard answers are merged.
#[derive(Debug, Clone)]
pub enum Merge {
    /// Rows concatenated.
    Rows,
    /// One row of aggregates, combined column by column.
    Aggregates(Vec<Aggregate>),
    /// Rows merged in ORDER BY order, then OFFSET and LIMIT.
    Ordered(Ordered),
}

/// Column names of a RowDescription, lower case.
fn column_names(rd: &[u8]) -> Option<Vec<String>> {
    let mut c = decode::Cursor::new(backend::ROW_DESCRIPTION, rd.get(5..)?);
    let n = c.bytes(2).ok().map(|b| i16::from_be_bytes([b[0], b[1]]))?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        out.push(String::from_utf8_lossy(c.cstr_bytes().ok()?).to_lowercase());
        c.bytes(18).ok()?;
    }
    Some(out)
}

/// Splits concatenated DataRow messages.
fn split_rows(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some(h)) = Header::parse(&buf[at..], u32::MAX) {
        let end = at + h.total();
        if end > buf.len() {
            break;
        }
        out.push(&buf[at..end]);
        at = end;
    }
    out
}

/// Merges sorted (and limited) answers.
fn merge_ordered(out: &mut BytesMut, shape: Option<&Bytes>, answers: &[Answer], o: &Ordered) {
    let Some(shape) = shape else {
        return refuse(out, "no result description from the shards");
    };
    let (Some(types), Some(names)) = (column_types(shape), column_names(shape)) else {
        return refuse(out, "unexpected result description from the shards");
    };
    let mut keys = Vec::new();
    for k in &o.keys {
        let idx = match &k.column {
            SortColumn::Position(p) => Some(*p).filter(|p| *p < types.len()),
            SortColumn::Name(n) => names.iter().position(|c| c == n),
        };
        let Some(idx) = idx else {
            return refuse(
                out,
                "ORDER BY a column that is not in the result, across shards",
            );
        };
        if !sortable(types[idx]) {
            return refuse(
                out,
                &format!(
                    "Ocelot cannot merge ORDER BY on a column of type oid {} across shards exactly (text order depends on collation); target one shard with the sharding key, a /* shard_id: n */ comment or SET SHARD",
                    types[idx]
                ),
            );
        }
        keys.push((idx, types[idx], k.desc, k.nulls_first));
    }
    let mut rows: Vec<(Vec<Option<String>>, &[u8])> = Vec::new();
    for a in answers {
        for raw in split_rows(&a.rows) {
            match row_values(raw) {
                Some(v) => rows.push((v, raw)),
                None => return refuse(out, "unexpected row from a shard"),
            }
        }
    }
    rows.sort_by(|(a, _), (b, _)| {
        for &(idx, oid, desc, nulls_first) in &keys {
            let ord = match (a[idx].as_deref(), b[idx].as_deref()) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => {
                    if nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (Some(_), None) => {
                    if nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (Some(x), Some(y)) => {
                    let o = compare(oid, x, y);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    out.extend_from_slice(shape);
    let mut n = 0;
    for (_, raw) in rows
        .iter()
        .skip(o.offset as usize)
        .take(o.limit.map_or(usize::MAX, |l| l as usize))
    {
        out.extend_from_slice(raw);
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
    encode::ready_for_query(out, txn::IDLE);
}

/// Type OIDs of a RowDescription's columns.
fn column_types(rd: &[u8]) -> Option<Vec<u32>> {
    let mut c = decode::Cursor::new(backend::ROW_DESCRIPTION, rd.get(5..)?);
    let n = c.bytes(2).ok().map(|b| i16::from_be_bytes([b[0], b[1]]))?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        c.cstr_bytes().ok()?;
        c.bytes(6).ok()?;
        out.push(c.i32().ok()? as u32);
        c.bytes(8).ok()?;
    }
    Some(out)
}

/// The text values of one DataRow message (header included).
fn row_values(row: &[u8]) -> Option<Vec<Option<String>>> {
    let mut c = decode::Cursor::new(backend::DATA_ROW, row.get(5..)?);
    let n = c.bytes(2).ok().map(|b| i16::from_be_bytes([b[0], b[1]]))?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = c.i32().ok()?;
        out.push(if len < 0 {
            None
        } else {
            Some(String::from_utf8_lossy(c.bytes(len as usize).ok()?).into_owned())
        });
    }
    Some(out)
}

fn refuse(out: &mut BytesMut, msg: &str) {
    encode::error_response(
        out,
        Severity::Error,
        sqlstate::FEATURE_NOT_SUPPORTED,
        msg,
        None,
    );
    encode::ready_for_query(out, txn::IDLE);
}

/// Combines each shard's single row of aggregates.
fn merge_aggregates(out: &mut BytesMut, shape: &[u8], answers: &[Answer], aggs: &[Aggregate]) {
    let Some(types) = column_types(shape).filter(|t| t.len() == aggs.len()) else {
        return refuse(
            out,
            "unexpected result shape for an aggregate across shards",
        );
    };
    let rows: Option<Vec<Vec<Option<String>>>> =
        answers.iter().map(|a| row_values(&a.rows)).collect();
    let Some(rows) = rows.filter(|r| r.iter().all(|v| v.len() == aggs.len())) else {
        return refuse(out, "unexpected aggregate rows from the shards");
    };
    let mut merged = Vec::with_capacity(aggs.len());
    for (i, (agg, oid)) in aggs.iter().zip(&types).enumerate() {
        let values: Vec<Option<&str>> = rows.iter().map(|r| r[i].as_deref()).collect();
        match combine(*agg, *oid, &values) {
            Ok(v) => merged.push(v),
            Err(why) => {
                return refuse(
                    out,
                    &format!("Ocelot cannot combine {why} exactly; target one shard with the sharding key, a /* shard_id: n */ comment or SET SHARD"),
                )
            }
        }
    }
    out.extend_from_slice(shape);
    encode::data_row_opt(out, &merged);
    encode::command_complete(out, "SELECT 1");
    encode::ready_for_query(out, txn::IDLE);
}

/// Sends `query` (a whole Query message) to each of `shards` and returns the merged answer, ReadyForQuery
/// included.
pub async fn run(
    pool: &Arc<UserPool>,
    params: &ClientParams,
    query: &[u8],
    want: Want,
    primary_reads: bool,
    merge: Merge,
    shards: &[usize],
) -> Result<BytesMut, PoolError> {
    let query = match &merge {
        Merge::Ordered(o) => {
            let mut q = BytesMut::new();
            encode::query(&mut q, &o.shard_sql);
            q.freeze()
        }
        _ => Bytes::copy_from_slice(query),
    };
    let mut set = JoinSet::new();
    for &shard in shards {
        set.spawn(ask(
            pool.clone(),
            shard,
            want,
            primary_reads,
            params.clone(),
            query.clone(),
        ));
    }
    let mut answers: Vec<Option<Answer>> = shards.iter().map(|_| None).collect();
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
    if let Merge::Ordered(o) = &merge {
        merge_ordered(&mut out, shape.as_ref(), &answers, o);
        return Ok(out);
    }
    if let Merge::Aggregates(aggs) = &merge {
        match &shape {
            Some(shape) => merge_aggregates(&mut out, shape, &answers, aggs),
            None => refuse(&mut out, "no result from the shards for an aggregate"),
        }
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
