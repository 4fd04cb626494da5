//! `pg_prepared_statements` in transaction mode. On a server the view lists the pool's shared statements
//! (`ocelot_<n>`), with the query text of whichever clients prepared them. A Query or Parse that reads the view is
//! rewritten so that it reads this client's own statements instead: its protocol statements under its own names
//! (from Ocelot's statement map), plus the server's SQL-level ones (`from_sql`), which are the client's own since
//! Ocelot replays them for it and deallocates them before anyone else gets the server.

use bytes::{BufMut, BytesMut};

use super::Session;
use crate::protocol::codes::frontend;
use crate::protocol::frame::Piece;

const VIEW: &[u8] = b"pg_prepared_statements";

/// Whether the Query or Parse `piece` at the front of `buf` mentions the view (a cheap scan, before any copy).
pub(super) fn reads_prepared_view(buf: &[u8], piece: &Piece) -> bool {
    match piece {
        Piece::Whole(h) => contains_ignore_case(&buf[5..h.total()], VIEW),
        Piece::Part { .. } => false,
    }
}

impl Session {
    /// Rewrites the Query or Parse at the front of `cbuf` when it reads `pg_prepared_statements`.
    pub(super) fn rewrite_prepared_view(&mut self, piece: &Piece) {
        let (Piece::Whole(h), Some(map)) = (piece, self.stmts.as_ref()) else {
            return;
        };
        let body = &self.cbuf[5..h.total()];
        let (name, sql, rest): (&[u8], &[u8], &[u8]) = match h.code {
            frontend::QUERY => (&[], body.strip_suffix(&[0]).unwrap_or(body), &[]),
            frontend::PARSE => {
                let Some(n) = body.iter().position(|&b| b == 0) else {
                    return;
                };
                let after = &body[n + 1..];
                let Some(s) = after.iter().position(|&b| b == 0) else {
                    return;
                };
                (&body[..n], &after[..s], &after[s + 1..])
            }
            _ => return,
        };
        if !contains_ignore_case(sql, VIEW) {
            return;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        let mine = own_statements(map.client_statements());
        let Some(rewritten) = replace_view(text, &mine) else {
            return;
        };
        let mut msg = BytesMut::with_capacity(rewritten.len() + name.len() + rest.len() + 8);
        msg.put_u8(h.code);
        msg.put_u32(0);
        if h.code == frontend::PARSE {
            msg.put_slice(name);
            msg.put_u8(0);
        }
        msg.put_slice(rewritten.as_bytes());
        msg.put_u8(0);
        msg.put_slice(rest);
        let len = (msg.len() - 1) as u32;
        msg[1..5].copy_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&self.cbuf[h.total()..]);
        self.cbuf = msg;
    }
}

/// The client's statements as the view's rows: a subquery with the view's columns.
fn own_statements<'a>(statements: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sql = String::from(
        "(SELECT * FROM pg_catalog.pg_prepared_statements WHERE from_sql UNION ALL SELECT * FROM (VALUES ",
    );
    let mut any = false;
    for (name, body) in statements {
        let text_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        let text = String::from_utf8_lossy(&body[..text_end]);
        let types: Vec<String> = parameter_types(body.get(text_end + 1..).unwrap_or_default())
            .iter()
            .map(u32::to_string)
            .collect();
        if any {
            sql.push_str(", ");
        }
        any = true;
        sql.push_str(&format!(
            "({}::text, {}::text, now(), '{{{}}}'::oid[]::regtype[], false, 0::int8, 0::int8)",
            literal(name),
            literal(&text),
            types.join(",")
        ));
    }
    if !any {
        sql.push_str(
            "(NULL::text, NULL::text, NULL::timestamptz, NULL::regtype[], false, 0::int8, 0::int8)",
        );
    }
    sql.push_str(") AS own(name, statement, prepare_time, parameter_types, from_sql, generic_plans, custom_plans)");
    if !any {
        sql.push_str(" WHERE own.name IS NOT NULL");
    }
    sql.push(')');
    sql
}

/// The declared parameter type OIDs after a Parse body's query text.
fn parameter_types(rest: &[u8]) -> Vec<u32> {
    let Some(n) = rest
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    else {
        return Vec::new();
    };
    (0..n)
        .filter_map(|i| {
            let b = rest.get(2 + 4 * i..6 + 4 * i)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        })
        .collect()
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `sql` with each reference to the view (bare or `pg_catalog.`-qualified) replaced by `subquery`, aliased with
/// the view's name unless the query names it itself; `None` when there is no reference as a word.
fn replace_view(sql: &str, subquery: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let view = std::str::from_utf8(VIEW).ok()?;
    let mut out = String::with_capacity(sql.len() + subquery.len());
    let (mut at, mut found) = (0, false);
    while let Some(i) = lower[at..].find(view).map(|i| i + at) {
        let end = i + view.len();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if word(lower[..i].chars().next_back()) || word(lower[end..].chars().next()) {
            out.push_str(&sql[at..end]);
            at = end;
            continue;
        }
        let start = if lower[..i].ends_with("pg_catalog.") {
            i - "pg_catalog.".len()
        } else {
            i
        };
        out.push_str(&sql[at..start]);
        out.push_str(subquery);
        if !crate::router::has_alias(&sql[end..]) {
            out.push_str(" AS pg_prepared_statements");
        }
        at = end;
        found = true;
    }
    out.push_str(&sql[at..]);
    found.then_some(out)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_is_replaced_where_it_is_read() {
        let q = replace_view("SELECT count(*) FROM pg_prepared_statements", "(S)").unwrap();
        assert_eq!(q, "SELECT count(*) FROM (S) AS pg_prepared_statements");
        let q = replace_view(
            "select name from pg_catalog.PG_PREPARED_STATEMENTS p where p.name = 'x'",
            "(S)",
        )
        .unwrap();
        assert_eq!(q, "select name from (S) p where p.name = 'x'");
        let q = replace_view("SELECT * FROM pg_prepared_statements WHERE true", "(S)").unwrap();
        assert_eq!(q, "SELECT * FROM (S) AS pg_prepared_statements WHERE true");
        assert!(replace_view("SELECT my_pg_prepared_statements_copy FROM t", "(S)").is_none());
    }

    #[test]
    fn the_clients_statements_become_rows() {
        let mut body = b"SELECT $1, 'it''s'".to_vec();
        body.push(0);
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&23u32.to_be_bytes());
        let s = own_statements([("_pg3_0", &body[..])].into_iter());
        assert!(
            s.contains("('_pg3_0'::text, 'SELECT $1, ''it''''s'''::text, now(), '{23}'"),
            "{s}"
        );
        let empty = own_statements(std::iter::empty());
        assert!(empty.ends_with("WHERE own.name IS NOT NULL)"), "{empty}");
    }
}
