//! Running one simple Query on several shards in parallel and merging the answers into the one a single server
//! holding all the rows would give, for the keyless reads `router::fanout` plans: rows concatenated, rows merged in
//! ORDER BY order with OFFSET/LIMIT applied after the merge, or partial aggregates of equal groups combined. Every
//! shard must describe the same result columns; an error from any shard is the answer. Rows are gathered before they
//! are sent, so a fan-out costs memory in proportion to what the shards return. Here the parts are run; the merging
//! itself is [`merge`]. The session uses it for clients' queries, and inference for the rows it trains on.

mod merge;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use crate::database::balance::Want;
use crate::database::UserPool;
use crate::pool::client_params::ClientParams;
use crate::pool::exec::{exec, Answer};
use crate::pool::PoolError;
use crate::protocol::encode;
use crate::protocol::rows::fields;
use crate::router::merge::collatable;
pub(crate) use crate::router::merge::Merge;

pub(crate) use merge::{binary_columns, grouped_shard_binary};
use merge::{merge_grouped, merge_ordered, merge_writes, refuse, same_columns};

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
pub(crate) async fn sync_params(
    server: &mut crate::pool::Pooled,
    params: &mut ClientParams,
) -> Result<(), PoolError> {
    if let Some(sql) = params.sync_sql(&server.state.params, &server.state.applied) {
        server.run(&sql).await?;
        let conn = &mut **server;
        params.after_sync(&conn.state.params, &mut conn.state.applied);
    }
    Ok(())
}

pub(super) const NUMERIC: u32 = 1700;

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

/// Sends each shard its request (whole protocol messages ending in Sync) on a connection of its own, in
/// parallel, and returns the merged answer (without ReadyForQuery).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    pool: &Arc<UserPool>,
    params: &ClientParams,
    requests: &[(usize, Bytes)],
    want: Want,
    primary_reads: bool,
    merge: &Merge,
    codes: &[i16],
) -> Result<BytesMut, PoolError> {
    pool.fanouts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut set = JoinSet::new();
    for (i, (shard, request)) in requests.iter().enumerate() {
        let task = ask(
            pool.clone(),
            *shard,
            want,
            primary_reads,
            params.clone(),
            request.clone(),
        );
        set.spawn(async move { (i, task.await) });
    }
    let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
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
    let shards: Vec<usize> = requests.iter().map(|(s, _)| *s).collect();
    let mut out = BytesMut::new();
    merge_answers(
        &mut out,
        pool,
        &answers,
        merge,
        &shards,
        want,
        primary_reads,
        codes,
    )
    .await?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn merge_answers(
    out: &mut BytesMut,
    pool: &Arc<UserPool>,
    answers: &[Answer],
    merge: &Merge,
    shards: &[usize],
    want: Want,
    primary_reads: bool,
    codes: &[i16],
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
        Merge::Ordered(o) => merge_ordered(out, &shape, answers, o, bytewise, codes),
        Merge::Grouped(g) => merge_grouped(out, &shape, answers, g, bytewise, codes),
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
