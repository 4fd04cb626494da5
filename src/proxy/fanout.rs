//! Running one simple Query on several shards in parallel and merging the answers into the one a single server
//! holding all the rows would give, for the keyless reads `router::fanout` plans: rows concatenated, rows merged in
//! ORDER BY order with OFFSET/LIMIT applied after the merge, or partial aggregates of equal groups combined. Every
//! shard must describe the same result columns; an error from any shard is the answer. Rows are gathered before they
//! are sent, so a fan-out costs memory in proportion to what the shards return.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::distributed::{exec, Answer};

use super::params::ClientParams;
use crate::pool::balance::Want;
use crate::pool::{PoolError, UserPool};
use crate::protocol::codes::{backend, sqlstate};
use crate::protocol::decode;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::Header;
use std::cmp::Ordering;

use std::collections::HashMap;

use crate::router::fanout::{Grouped, Ordered, Output, SortColumn, SortKey};
use crate::router::merge::{collatable, combine, compare, divide, group_form, orderable};

async fn ask(
    pool: Arc<UserPool>,
    shard: usize,
    want: Want,
    primary_reads: bool,
    mut params: ClientParams,
    query: Bytes,
) -> Result<Answer, PoolError> {
    let mut server = pool.checkout(shard, want, primary_reads).await?;
    sync_params(&mut server, &mut params).await?;
    exec(&mut server, &query).await
}

/// Brings a server's session settings in line with the client's.
pub(super) async fn sync_params(
    server: &mut crate::pool::Pooled,
    params: &mut ClientParams,
) -> Result<(), PoolError> {
    if let Some(sql) = params.sync_sql(&server.params, &server.applied) {
        server.run(&sql).await?;
        let conn = &mut **server;
        params.after_sync(&conn.params, &mut conn.applied);
    }
    Ok(())
}

/// How shard answers are merged.
#[derive(Debug, Clone)]
pub enum Merge {
    /// Rows concatenated.
    Rows,
    /// Partial aggregates per group, combined.
    Grouped(Grouped),
    /// Rows merged in ORDER BY order, then OFFSET and LIMIT.
    Ordered(Ordered),
    /// A write on several shards: affected row counts summed, RETURNING rows concatenated.
    Write,
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
}

const HINT: &str =
    "target one shard with the sharding key, a /* shard_id: n */ comment or SET SHARD";

/// One column of a RowDescription.
struct Field<'a> {
    name: String,
    table: u32,
    attnum: i16,
    oid: u32,
    /// The column's bytes in the RowDescription (name, NUL and the 18 fixed bytes).
    raw: &'a [u8],
}

/// The columns of a RowDescription message (header included).
fn fields(rd: &[u8]) -> Option<Vec<Field<'_>>> {
    let body = rd.get(5..)?;
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let nul = body.get(at..)?.iter().position(|&b| b == 0)?;
        let fixed = body.get(at + nul + 1..at + nul + 19)?;
        out.push(Field {
            name: String::from_utf8_lossy(&body[at..at + nul]).to_lowercase(),
            table: u32::from_be_bytes(fixed[0..4].try_into().ok()?),
            attnum: i16::from_be_bytes(fixed[4..6].try_into().ok()?),
            oid: u32::from_be_bytes(fixed[6..10].try_into().ok()?),
            raw: &body[at..at + nul + 19],
        });
        at += nul + 19;
    }
    Some(out)
}

/// Whether two RowDescriptions have the same column names and types (table OIDs differ between shards).
fn same_columns(a: &[u8], b: &[u8]) -> bool {
    match (fields(a), fields(b)) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter().zip(&y).all(|(p, q)| {
                    p.name == q.name && p.raw[p.raw.len() - 12..] == q.raw[q.raw.len() - 12..]
                })
        }
        _ => false,
    }
}

/// A sort key resolved against the result columns: (column, type, desc, nulls first).
type Key = (usize, u32, bool, bool);

/// Resolves ORDER BY keys against result columns, refusing types Ocelot cannot order exactly.
fn resolve_keys(
    keys: &[SortKey],
    cols: &[(String, u32)],
    bytewise: bool,
) -> Result<Vec<Key>, String> {
    let mut out = Vec::new();
    for k in keys {
        let idx = match &k.column {
            SortColumn::Position(p) => Some(*p).filter(|p| *p < cols.len()),
            SortColumn::Name(n) => cols.iter().position(|(c, _)| c == n),
        }
        .ok_or_else(|| "ORDER BY a column that is not in the result, across shards".to_owned())?;
        let oid = cols[idx].1;
        if !orderable(oid, bytewise) {
            let why = if collatable(oid) {
                "text order depends on a collation other than C"
            } else {
                "its order is not known to Ocelot"
            };
            return Err(format!(
                "Ocelot cannot merge ORDER BY on a column of type oid {oid} across shards exactly ({why}); {HINT}"
            ));
        }
        out.push((idx, oid, k.desc, k.nulls_first));
    }
    Ok(out)
}

fn order_rows(a: &[Option<String>], b: &[Option<String>], keys: &[Key]) -> Ordering {
    for &(idx, oid, desc, nulls_first) in keys {
        let ord = match (a[idx].as_deref(), b[idx].as_deref()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if desc => compare(oid, x, y).reverse(),
            (Some(x), Some(y)) => compare(oid, x, y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Merges sorted (and limited) answers.
fn merge_ordered(
    out: &mut BytesMut,
    shape: &[u8],
    answers: &[Answer],
    o: &Ordered,
    bytewise: bool,
) {
    let Some(cols) = fields(shape) else {
        return refuse(out, "unexpected result description from the shards");
    };
    let cols: Vec<(String, u32)> = cols.into_iter().map(|f| (f.name, f.oid)).collect();
    let keys = match resolve_keys(&o.keys, &cols, bytewise) {
        Ok(k) => k,
        Err(why) => return refuse(out, &why),
    };
    let mut rows: Vec<(Vec<Option<String>>, &[u8])> = Vec::new();
    for a in answers {
        for raw in split_rows(&a.rows) {
            match row_values(raw) {
                Some(v) => rows.push((v, raw)),
                None => return refuse(out, "unexpected row from a shard"),
            }
        }
    }
    // A stable sort keeps shard order among ties, as a single server's sort would keep some order.
    rows.sort_by(|(a, _), (b, _)| order_rows(a, b, &keys));
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
}

/// Combines partial aggregates of equal groups, then sorts and limits.
fn merge_grouped(
    out: &mut BytesMut,
    shape: &[u8],
    answers: &[Answer],
    g: &Grouped,
    bytewise: bool,
) {
    let Some(cols) = fields(shape) else {
        return refuse(out, "unexpected result description from the shards");
    };
    let width = cols.len();
    if g.outputs.iter().any(|o| match o {
        Output::Key(i) | Output::Agg(_, i) => *i >= width,
        Output::Avg { sum, count, .. } => *sum >= width || *count >= width,
    }) || g.keys.iter().any(|k| *k >= width)
    {
        return refuse(
            out,
            "unexpected result shape for a grouped query across shards",
        );
    }
    // Groups in first-seen order; each holds every shard's partial row.
    let mut index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    let mut groups: Vec<Vec<Vec<Option<String>>>> = Vec::new();
    for a in answers {
        for raw in split_rows(&a.rows) {
            let Some(row) = row_values(raw).filter(|r| r.len() == width) else {
                return refuse(out, "unexpected row from a shard");
            };
            let key: Vec<Option<String>> = g
                .keys
                .iter()
                .map(|&k| {
                    row[k]
                        .as_deref()
                        .map(|v| group_form(cols[k].oid, v).into_owned())
                })
                .collect();
            let at = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[at].push(row);
        }
    }
    let mut merged: Vec<Vec<Option<String>>> = Vec::with_capacity(groups.len());
    for parts in &groups {
        let mut row = Vec::with_capacity(g.outputs.len());
        for o in &g.outputs {
            let column =
                |i: usize| -> Vec<Option<&str>> { parts.iter().map(|r| r[i].as_deref()).collect() };
            let v = match o {
                Output::Key(i) => Ok(parts[0][*i].clone()),
                Output::Agg(agg, i) => combine(*agg, cols[*i].oid, &column(*i), bytewise),
                Output::Avg { sum, count, .. } => {
                    use crate::router::fanout::Aggregate;
                    combine(Aggregate::Sum, cols[*sum].oid, &column(*sum), false).and_then(|s| {
                        let n =
                            combine(Aggregate::Count, cols[*count].oid, &column(*count), false)?;
                        match (s, n.as_deref()) {
                            (_, Some("0")) | (None, _) => Ok(None),
                            (Some(s), Some(n)) => divide(&s, n).map(Some).ok_or_else(|| {
                                "an average too large to compute exactly".to_owned()
                            }),
                            (Some(_), None) => Ok(None),
                        }
                    })
                }
            };
            match v {
                Ok(v) => row.push(v),
                Err(why) => {
                    return refuse(out, &format!("Ocelot cannot combine {why} exactly; {HINT}"));
                }
            }
        }
        merged.push(row);
    }
    // The merged result's own description: key and aggregate columns as the shards described them, numeric for avg.
    let mut rd = BytesMut::new();
    let mut out_cols = Vec::with_capacity(g.outputs.len());
    for o in &g.outputs {
        match o {
            Output::Key(i) | Output::Agg(_, i) => {
                rd.extend_from_slice(cols[*i].raw);
                out_cols.push((cols[*i].name.clone(), cols[*i].oid));
            }
            Output::Avg { name, .. } => {
                rd.extend_from_slice(name.as_bytes());
                rd.extend_from_slice(&[0]);
                rd.extend_from_slice(&0u32.to_be_bytes());
                rd.extend_from_slice(&0i16.to_be_bytes());
                rd.extend_from_slice(&NUMERIC.to_be_bytes());
                rd.extend_from_slice(&(-1i16).to_be_bytes());
                rd.extend_from_slice(&(-1i32).to_be_bytes());
                rd.extend_from_slice(&0i16.to_be_bytes());
                out_cols.push((name.to_lowercase(), NUMERIC));
            }
        }
    }
    let keys = match resolve_keys(&g.order, &out_cols, bytewise) {
        Ok(k) => k,
        Err(why) => return refuse(out, &why),
    };
    merged.sort_by(|a, b| order_rows(a, b, &keys));
    out.extend_from_slice(&[backend::ROW_DESCRIPTION]);
    out.extend_from_slice(&((rd.len() + 6) as u32).to_be_bytes());
    out.extend_from_slice(&(g.outputs.len() as i16).to_be_bytes());
    out.extend_from_slice(&rd);
    let mut n = 0;
    for row in merged
        .iter()
        .skip(g.offset as usize)
        .take(g.limit.map_or(usize::MAX, |l| l as usize))
    {
        encode::data_row_opt(out, row);
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
}

const NUMERIC: u32 = 1700;

/// Collations under which PostgreSQL orders text by its bytes.
fn bytewise_collation(name: &str) -> bool {
    matches!(name, "C" | "POSIX" | "ucs_basic")
}

/// Whether the text columns among `cols` of `shape` (as `shard` described them) sort by byte order: their own
/// collation, or the database's for expressions and columns using the default. Remembered per pool.
async fn text_is_bytewise(
    pool: &Arc<UserPool>,
    shard: usize,
    want: Want,
    primary_reads: bool,
    shape: &[u8],
) -> Result<bool, PoolError> {
    let Some(cols) = fields(shape) else {
        return Ok(false);
    };
    let wanted: Vec<(u32, i16)> = cols
        .iter()
        .filter(|f| collatable(f.oid))
        .map(|f| (f.table, f.attnum))
        .collect();
    let mut unknown = Vec::new();
    {
        let known = pool.collations.lock().unwrap_or_else(|e| e.into_inner());
        for w in &wanted {
            match known.get(&(shard, w.0, w.1)) {
                Some(false) => return Ok(false),
                Some(true) => {}
                None => unknown.push(*w),
            }
        }
    }
    if unknown.is_empty() {
        return Ok(true);
    }
    let mut server = pool.checkout(shard, want, primary_reads).await?;
    let mut all = true;
    for (table, attnum) in unknown {
        let sql = format!(
            "SELECT CASE WHEN c.collname IS NULL OR c.collname = 'default' THEN d.datcollate ELSE c.collname::text END \
             FROM pg_database d LEFT JOIN pg_attribute a ON a.attrelid = {table} AND a.attnum = {attnum} \
             LEFT JOIN pg_collation c ON c.oid = a.attcollation WHERE d.datname = current_database()"
        );
        let name = server.query_value(&sql).await?.unwrap_or_default();
        let ok = bytewise_collation(&name);
        pool.collations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((shard, table, attnum), ok);
        all &= ok;
    }
    Ok(all)
}

/// Sends `query` (a whole Query message) to each of `shards` and returns the merged answer, ending with
/// ReadyForQuery(`status`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pool: &Arc<UserPool>,
    params: &ClientParams,
    query: &[u8],
    want: Want,
    primary_reads: bool,
    merge: Merge,
    shards: &[usize],
    status: u8,
) -> Result<BytesMut, PoolError> {
    let query = match &merge {
        Merge::Ordered(o) => encoded(&o.shard_sql),
        Merge::Grouped(g) => encoded(&g.shard_sql),
        Merge::Rows | Merge::Write => Bytes::copy_from_slice(query),
    };
    let mut set = JoinSet::new();
    for (i, &shard) in shards.iter().enumerate() {
        let task = ask(
            pool.clone(),
            shard,
            want,
            primary_reads,
            params.clone(),
            query.clone(),
        );
        set.spawn(async move { (i, task.await) });
    }
    let mut answers: Vec<Option<Answer>> = shards.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => answers[i] = Some(r?),
            Err(e) => {
                return Err(PoolError::Lost {
                    server: format!("pool \"{}\"", pool.database),
                    reason: format!("fan-out task failed: {e}"),
                })
            }
        }
    }
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    let mut out = BytesMut::new();
    merge_answers(
        &mut out,
        pool,
        &answers,
        &merge,
        shards,
        want,
        primary_reads,
    )
    .await?;
    encode::ready_for_query(&mut out, status);
    Ok(out)
}

fn encoded(sql: &str) -> Bytes {
    let mut q = BytesMut::new();
    encode::query(&mut q, sql);
    q.freeze()
}

pub(super) async fn merge_answers(
    out: &mut BytesMut,
    pool: &Arc<UserPool>,
    answers: &[Answer],
    merge: &Merge,
    shards: &[usize],
    want: Want,
    primary_reads: bool,
) -> Result<(), PoolError> {
    if let Some(err) = answers.iter().find_map(|a| a.error.clone()) {
        out.extend_from_slice(&err);
        return Ok(());
    }
    if let Merge::Write = merge {
        merge_writes(out, answers);
        return Ok(());
    }
    let mut shapes = answers.iter().filter_map(|a| a.row_description.as_ref());
    let shape = shapes.next().cloned();
    if let Some(first) = &shape {
        if shapes.any(|s| !same_columns(s, first)) {
            refuse(
                out,
                "the shards returned different result columns; check that every shard has the same schema",
            );
            return Ok(());
        }
    }
    let Some(shape) = shape else {
        refuse(out, "no result description from the shards");
        return Ok(());
    };
    let needs_text = matches!(merge, Merge::Ordered(_) | Merge::Grouped(_))
        && fields(&shape).is_some_and(|f| f.iter().any(|c| collatable(c.oid)));
    let bytewise = match (
        needs_text,
        answers.iter().position(|a| a.row_description.is_some()),
    ) {
        (true, Some(i)) => text_is_bytewise(pool, shards[i], want, primary_reads, &shape).await?,
        _ => false,
    };
    match merge {
        Merge::Ordered(o) => merge_ordered(out, &shape, answers, o, bytewise),
        Merge::Grouped(g) => merge_grouped(out, &shape, answers, g, bytewise),
        Merge::Rows | Merge::Write => {
            out.extend_from_slice(&shape);
            let mut total = 0;
            for a in answers {
                total += a.count;
                out.extend_from_slice(&a.rows);
            }
            encode::command_complete(out, &format!("SELECT {total}"));
        }
    }
    Ok(())
}

/// Sums the affected rows of a write on several shards (`INSERT 0 n`, `UPDATE n`, `DELETE n`); RETURNING rows
/// are concatenated under the first shard's description.
fn merge_writes(out: &mut BytesMut, answers: &[Answer]) {
    if let Some(rd) = answers.iter().find_map(|a| a.row_description.as_ref()) {
        out.extend_from_slice(rd);
        for a in answers {
            out.extend_from_slice(&a.rows);
        }
    }
    let mut verb = None;
    let mut total: u64 = 0;
    for tag in answers.iter().filter_map(|a| a.tag.as_deref()) {
        let (head, n) = tag.rsplit_once(' ').unwrap_or((tag, "0"));
        verb.get_or_insert_with(|| head.to_owned());
        total += n.parse::<u64>().unwrap_or(0);
    }
    match verb {
        Some(v) => encode::command_complete(out, &format!("{v} {total}")),
        None => encode::empty(out, backend::EMPTY_QUERY_RESPONSE),
    }
}
