//! Merging the shards' answers to one fan-out into the answer one server holding all the rows would give: rows in
//! ORDER BY order with OFFSET and LIMIT applied after the merge, partial aggregates of equal groups combined, and
//! the affected-row counts of a write summed.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::BytesMut;

use crate::pool::exec::Answer;
use crate::protocol::codes::{backend, sqlstate};
use crate::protocol::encode::{self, Severity};
use crate::protocol::rows::{cells, fields, split_rows, Field};
use crate::router::binary;
use crate::router::fanout::Aggregate;
use crate::router::fanout::{Grouped, Ordered, Output};
use crate::router::merge::{collatable, combine, compare, divide, group_form, orderable};
use crate::router::select::{SortColumn, SortKey};

use super::NUMERIC;

/// A cell as (type to compare as, text), whatever its format.
pub(super) fn cell_text(oid: u32, binary: bool, cell: &[u8]) -> Option<(u32, String)> {
    if binary {
        binary::decode(oid, cell)
    } else {
        Some((oid, String::from_utf8_lossy(cell).into_owned()))
    }
}

/// Which of `n` result columns are binary, from a Bind's result format codes (none: all text; one: all).
pub(crate) fn binary_columns(codes: &[i16], n: usize) -> Vec<bool> {
    match codes {
        [] => vec![false; n],
        [one] => vec![*one == 1; n],
        many => (0..n).map(|i| many.get(i) == Some(&1)).collect(),
    }
}

pub(super) fn refuse(out: &mut BytesMut, msg: &str) {
    encode::error_response(
        out,
        Severity::Error,
        sqlstate::FEATURE_NOT_SUPPORTED,
        msg,
        None,
    );
}

pub(super) const HINT: &str =
    "target one shard with the sharding key, a /* shard_id: n */ comment or SET SHARD";

/// Whether two RowDescriptions have the same column names and types (table OIDs differ between shards).
pub(super) fn same_columns(a: &[u8], b: &[u8]) -> bool {
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

/// A sort key resolved against the result columns: (column, desc, nulls first).
type Key = (usize, bool, bool);

/// Resolves ORDER BY keys against result columns (name, type to compare as), refusing types Ocelot cannot order
/// exactly.
pub(super) fn resolve_keys(
    keys: &[SortKey],
    cols: &[(String, u32)],
    hidden: usize,
    bytewise: bool,
) -> Result<Vec<Key>, String> {
    let mut out = Vec::new();
    for k in keys {
        let idx = match &k.column {
            SortColumn::Position(p) => Some(*p).filter(|p| *p < cols.len()),
            SortColumn::Name(n) => cols.iter().position(|(c, _)| c == n),
            SortColumn::Hidden(h) => (cols.len() + h)
                .checked_sub(hidden)
                .filter(|i| *i < cols.len()),
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
        out.push((idx, k.desc, k.nulls_first));
    }
    Ok(out)
}

/// Orders rows by their comparable values (type, text) at the key columns.
pub(super) fn order_rows(
    a: &[Option<(u32, String)>],
    b: &[Option<(u32, String)>],
    keys: &[Key],
) -> Ordering {
    for &(idx, desc, nulls_first) in keys {
        let ord = match (&a[idx], &b[idx]) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some((oid, x)), Some((_, y))) if desc => compare(*oid, x, y).reverse(),
            (Some((oid, x)), Some((_, y))) => compare(*oid, x, y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// The type each column compares as: binary dates and timestamps compare as integers.
pub(super) fn compare_types(cols: &[Field], binary: &[bool]) -> Vec<(String, u32)> {
    cols.iter()
        .enumerate()
        .map(|(i, f)| {
            let oid = if binary.get(i) == Some(&true) {
                match f.oid {
                    1082 | 1083 | 1114 => 20,
                    700 => 701,
                    o => o,
                }
            } else {
                f.oid
            };
            (f.name.clone(), oid)
        })
        .collect()
}

/// Merges sorted (and limited) answers; rows pass through in the format the shards sent.
pub(super) fn merge_ordered(
    out: &mut BytesMut,
    shape: &[u8],
    answers: &[Answer],
    o: &Ordered,
    bytewise: bool,
    codes: &[i16],
) {
    let Some(fields) = fields(shape) else {
        return refuse(out, "unexpected result description from the shards");
    };
    let binary = binary_columns(codes, fields.len());
    let cols = compare_types(&fields, &binary);
    let keys = match resolve_keys(&o.keys, &cols, o.hidden, bytewise) {
        Ok(k) => k,
        Err(why) => return refuse(out, &why),
    };
    let mut rows: Vec<(Vec<Comparable>, &[u8])> = Vec::new();
    for a in answers {
        for raw in split_rows(&a.rows) {
            let Some(c) = cells(raw).filter(|c| c.len() == fields.len()) else {
                return refuse(out, "unexpected row from a shard");
            };
            let mut values = vec![None; fields.len()];
            for &(idx, _, _) in &keys {
                if let Some(cell) = c[idx] {
                    match cell_text(fields[idx].oid, binary[idx], cell) {
                        Some(v) => values[idx] = Some(v),
                        None => return refuse(out, "a sort value Ocelot cannot read"),
                    }
                }
            }
            rows.push((values, raw));
        }
    }
    // A stable sort keeps shard order among ties, as a single server's sort would keep some order.
    rows.sort_by(|(a, _), (b, _)| order_rows(a, b, &keys));
    let shown = fields.len() - o.hidden.min(fields.len());
    if o.hidden == 0 {
        out.extend_from_slice(shape);
    } else {
        message_of(
            out,
            backend::ROW_DESCRIPTION,
            shown,
            fields[..shown].iter().map(|f| f.raw),
        );
    }
    let mut n = 0;
    for (_, raw) in rows
        .iter()
        .skip(o.offset as usize)
        .take(o.limit.map_or(usize::MAX, |l| l as usize))
    {
        if o.hidden == 0 {
            out.extend_from_slice(raw);
        } else {
            let cells = cells(raw).unwrap_or_default();
            let values: Vec<Option<Vec<u8>>> = cells[..shown.min(cells.len())]
                .iter()
                .map(|c| c.map(<[u8]>::to_vec))
                .collect();
            encode::data_row_raw(out, &values);
        }
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
}

/// A RowDescription of `count` columns from their raw field bytes.
pub(super) fn message_of<'a>(
    out: &mut BytesMut,
    code: u8,
    count: usize,
    parts: impl Iterator<Item = &'a [u8]>,
) {
    let at = out.len();
    out.extend_from_slice(&[code, 0, 0, 0, 0]);
    out.extend_from_slice(&(count as i16).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    let len = (out.len() - at - 1) as u32;
    out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
}

pub(super) fn binary_columns_of(binary: &[bool], n: usize) -> Vec<bool> {
    (0..n).map(|i| binary.get(i) == Some(&true)).collect()
}

/// The result formats the shards are asked for in a grouped read: group keys and min/max in the client's format
/// (passed through), everything Ocelot computes in text.
pub(crate) fn grouped_shard_binary(g: &Grouped, out_binary: &[bool]) -> Vec<bool> {
    let width = g
        .outputs
        .iter()
        .map(|o| match o {
            Output::Key(i) | Output::Agg(_, i) => *i + 1,
            Output::Avg { count, .. } => *count + 1,
        })
        .chain(g.keys.iter().map(|k| k + 1))
        .max()
        .unwrap_or(0);
    let mut shard = vec![false; width];
    for (o, bin) in g.outputs.iter().zip(out_binary) {
        match o {
            Output::Key(i) | Output::Agg(Aggregate::Min | Aggregate::Max, i) => shard[*i] = *bin,
            _ => {}
        }
    }
    shard
}

/// A row's cells in the client's format.
type RawRow = Vec<Option<Vec<u8>>>;

/// A value to order by: (type to compare as, text); `None` is NULL.
type Comparable = Option<(u32, String)>;

/// One merged cell: its bytes in the client's format and the value to order it by.
type Cell = (Option<Vec<u8>>, Option<(u32, String)>);

/// Combines partial aggregates of equal groups, then sorts and limits.
pub(super) fn merge_grouped(
    out: &mut BytesMut,
    shape: &[u8],
    answers: &[Answer],
    g: &Grouped,
    bytewise: bool,
    codes: &[i16],
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
    let out_binary = binary_columns(codes, g.outputs.len());
    let shard_binary = binary_columns_of(&grouped_shard_binary(g, &out_binary), width);
    let groups = match group_rows(answers, g, &cols, &shard_binary) {
        Ok(groups) => groups,
        Err(why) => return refuse(out, why),
    };
    let mut merged: Vec<Vec<Cell>> = Vec::with_capacity(groups.len());
    for parts in &groups {
        match merge_group(parts, g, &cols, &out_binary, bytewise) {
            Ok(row) => merged.push(row),
            Err(why) => return refuse(out, &why),
        }
    }
    let (rd, out_cols) = grouped_description(g, &cols, &out_binary);
    let keys = match resolve_keys(&g.order, &out_cols, 0, bytewise) {
        Ok(k) => k,
        Err(why) => return refuse(out, &why),
    };
    let mut sortable: Vec<(Vec<Comparable>, RawRow)> = merged
        .into_iter()
        .map(|row| row.into_iter().map(|(raw, cmp)| (cmp, raw)).unzip())
        .collect();
    sortable.sort_by(|(a, _), (b, _)| order_rows(a, b, &keys));
    out.extend_from_slice(&[backend::ROW_DESCRIPTION]);
    out.extend_from_slice(&((rd.len() + 6) as u32).to_be_bytes());
    out.extend_from_slice(&(g.outputs.len() as i16).to_be_bytes());
    out.extend_from_slice(&rd);
    let mut n = 0;
    for (_, row) in sortable
        .iter()
        .skip(g.offset as usize)
        .take(g.limit.map_or(usize::MAX, |l| l as usize))
    {
        data_row_raw(out, row);
        n += 1;
    }
    encode::command_complete(out, &format!("SELECT {n}"));
}

/// One shard's partial row of a group: its cells.
type Partial<'a> = Vec<Option<&'a [u8]>>;

/// The shards' rows by group, groups in first-seen order, each with every shard's partial row.
fn group_rows<'a>(
    answers: &'a [Answer],
    g: &Grouped,
    cols: &[Field],
    shard_binary: &[bool],
) -> Result<Vec<Vec<Partial<'a>>>, &'static str> {
    let mut index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    let mut groups: Vec<Vec<Partial<'a>>> = Vec::new();
    for a in answers {
        for raw in split_rows(&a.rows) {
            let row = cells(raw)
                .filter(|r| r.len() == cols.len())
                .ok_or("unexpected row from a shard")?;
            let mut key = Vec::with_capacity(g.keys.len());
            for &k in &g.keys {
                key.push(match row[k] {
                    None => None,
                    Some(cell) => {
                        let (oid, v) = cell_text(cols[k].oid, shard_binary[k], cell)
                            .ok_or("a group key Ocelot cannot read")?;
                        Some(group_form(oid, &v).into_owned())
                    }
                });
            }
            let at = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[at].push(row);
        }
    }
    Ok(groups)
}

/// One group's merged row: keys from its first partial row, aggregates combined over all of them.
fn merge_group(
    parts: &[Partial<'_>],
    g: &Grouped,
    cols: &[Field],
    out_binary: &[bool],
    bytewise: bool,
) -> Result<Vec<Cell>, String> {
    let text = |cell: Option<&[u8]>| cell.map(|c| String::from_utf8_lossy(c).into_owned());
    let mut row: Vec<Cell> = Vec::with_capacity(g.outputs.len());
    for (o, &bin) in g.outputs.iter().zip(out_binary) {
        let computed: Result<Option<String>, String> = match o {
            Output::Key(i) => {
                let raw = parts[0][*i];
                let cmp = raw.and_then(|c| cell_text(cols[*i].oid, bin, c));
                row.push((raw.map(<[u8]>::to_vec), cmp));
                continue;
            }
            Output::Agg(Aggregate::Min | Aggregate::Max, i) => {
                let max = matches!(o, Output::Agg(Aggregate::Max, _));
                row.push(min_max(parts, *i, cols[*i].oid, bin, max, bytewise)?);
                continue;
            }
            Output::Agg(agg, i) => {
                let values: Vec<Option<String>> = parts.iter().map(|r| text(r[*i])).collect();
                let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                combine(*agg, cols[*i].oid, &refs, bytewise)
            }
            Output::Avg { sum, count, .. } => {
                let sums: Vec<Option<String>> = parts.iter().map(|r| text(r[*sum])).collect();
                let counts: Vec<Option<String>> = parts.iter().map(|r| text(r[*count])).collect();
                let s: Vec<Option<&str>> = sums.iter().map(|v| v.as_deref()).collect();
                let c: Vec<Option<&str>> = counts.iter().map(|v| v.as_deref()).collect();
                combine(Aggregate::Sum, cols[*sum].oid, &s, false).and_then(|total| {
                    let n = combine(Aggregate::Count, cols[*count].oid, &c, false)?;
                    match (total, n.as_deref()) {
                        (Some(t), Some(n)) if n != "0" => divide(&t, n)
                            .map(Some)
                            .ok_or_else(|| "an average too large to compute exactly".to_owned()),
                        _ => Ok(None),
                    }
                })
            }
        };
        let value =
            computed.map_err(|why| format!("Ocelot cannot combine {why} exactly; {HINT}"))?;
        let oid = match o {
            Output::Agg(_, i) => cols[*i].oid,
            _ => NUMERIC,
        };
        let raw = match (&value, bin) {
            (None, _) => None,
            (Some(v), false) => Some(v.as_bytes().to_vec()),
            (Some(v), true) => Some(binary::encode(oid, v).ok_or_else(|| {
                format!("Ocelot cannot send a combined value of type oid {oid} in binary; ask for text results")
            })?),
        };
        row.push((raw, value.map(|v| (oid, v))));
    }
    Ok(row)
}

/// The smallest (or, with `max`, largest) value of column `i` over a group's partial rows.
fn min_max(
    parts: &[Partial<'_>],
    i: usize,
    oid: u32,
    bin: bool,
    max: bool,
    bytewise: bool,
) -> Result<Cell, String> {
    let mut best: Option<(&[u8], (u32, String))> = None;
    for cell in parts.iter().filter_map(|r| r[i]) {
        let v = cell_text(oid, bin, cell).ok_or("a min/max value Ocelot cannot read")?;
        if !orderable(v.0, bytewise) {
            return Err(format!(
                "Ocelot cannot combine min/max of a column of type oid {oid} across shards exactly; {HINT}"
            ));
        }
        let better = match &best {
            None => true,
            Some((_, b)) => {
                let ord = compare(v.0, &v.1, &b.1);
                if max {
                    ord == Ordering::Greater
                } else {
                    ord == Ordering::Less
                }
            }
        };
        if better {
            best = Some((cell, v));
        }
    }
    Ok(match best {
        Some((raw, v)) => (Some(raw.to_vec()), Some(v)),
        None => (None, None),
    })
}

/// The merged result's own description: key and aggregate columns as the shards described them (in the client's
/// formats), numeric for avg; and each column's name and the type its values are ordered as.
fn grouped_description(
    g: &Grouped,
    cols: &[Field],
    out_binary: &[bool],
) -> (BytesMut, Vec<(String, u32)>) {
    let mut rd = BytesMut::new();
    let mut out_cols = Vec::with_capacity(g.outputs.len());
    for (o, &bin) in g.outputs.iter().zip(out_binary) {
        let format: i16 = if bin { 1 } else { 0 };
        match o {
            Output::Key(i) | Output::Agg(_, i) => {
                let raw = cols[*i].raw;
                rd.extend_from_slice(&raw[..raw.len() - 2]);
                rd.extend_from_slice(&format.to_be_bytes());
                let cmp_oid = match (cols[*i].oid, bin) {
                    (1082 | 1083 | 1114, true) => 20,
                    (700, true) => 701,
                    (o, _) => o,
                };
                out_cols.push((cols[*i].name.clone(), cmp_oid));
            }
            Output::Avg { name, .. } => {
                rd.extend_from_slice(name.as_bytes());
                rd.extend_from_slice(&[0]);
                rd.extend_from_slice(&0u32.to_be_bytes());
                rd.extend_from_slice(&0i16.to_be_bytes());
                rd.extend_from_slice(&NUMERIC.to_be_bytes());
                rd.extend_from_slice(&(-1i16).to_be_bytes());
                rd.extend_from_slice(&(-1i32).to_be_bytes());
                rd.extend_from_slice(&format.to_be_bytes());
                out_cols.push((name.to_lowercase(), NUMERIC));
            }
        }
    }
    (rd, out_cols)
}

pub(super) fn data_row_raw(out: &mut BytesMut, cells: &[Option<Vec<u8>>]) {
    let len: usize = 4
        + 2
        + cells
            .iter()
            .map(|c| 4 + c.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    out.extend_from_slice(&[backend::DATA_ROW]);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&(cells.len() as i16).to_be_bytes());
    for c in cells {
        match c {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

/// Sums the affected rows of a write on several shards (`INSERT 0 n`, `UPDATE n`, `DELETE n`); RETURNING rows
/// are concatenated under the first shard's description.
pub(super) fn merge_writes(out: &mut BytesMut, answers: &[Answer]) {
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
