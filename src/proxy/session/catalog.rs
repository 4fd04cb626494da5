//! `pg_prepared_statements` in transaction mode. On a server the view lists the pool's shared statements
//! (`ocelot_<n>`), with the query text of whichever clients prepared them. A Query or Parse that reads the view is
//! rewritten so that it reads this client's own statements instead: its protocol statements under its own names
//! (from Ocelot's statement map), plus the server's SQL-level ones (`from_sql`), which are the client's own since
//! Ocelot replays them for it and deallocates them before anyone else gets the server. An SQL `DEALLOCATE name` of
//! one of its protocol statements (psycopg deallocates so) is answered by Ocelot: the server never had that name.

use bytes::{Buf, BufMut, BytesMut};

use super::Session;
use crate::protocol::codes::frontend;
use crate::protocol::codes::txn;
use crate::protocol::encode;
use crate::protocol::frame::Piece;
use crate::proxy::error::ClientError;
use crate::proxy::statements::ClientStatement;
use crate::router::session_sql::{classify, split_statements, SessionCommand};

const VIEW: &[u8] = b"pg_prepared_statements";

/// Whether the Query or Parse `piece` at the front of `buf` mentions the view (a cheap scan, before any copy).
pub(super) fn reads_prepared_view(buf: &[u8], piece: &Piece) -> bool {
    match piece {
        Piece::Whole(h) => contains_ignore_case(&buf[5..h.total()], VIEW),
        Piece::Part { .. } => false,
    }
}

impl Session {
    /// Answers a Query that is only `DEALLOCATE name` for one of the client's protocol statements, when its
    /// answer would come next (no server, or one with nothing outstanding, not in a failed transaction, where
    /// PostgreSQL would refuse it). Returns whether it did.
    pub(super) async fn try_deallocate(&mut self, piece: &Piece) -> Result<bool, ClientError> {
        let idle_status = self.status_without_server();
        let (Piece::Whole(h), Some(map)) = (piece, self.core.stmts.as_mut()) else {
            return Ok(false);
        };
        let body = &self.cbuf[5..h.total()];
        let word = b"deallocate";
        let start = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        if h.code != frontend::QUERY
            || body.len() > 1024
            || !body[start..]
                .get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            return Ok(false);
        }
        let text = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).unwrap_or_default();
        let name = match split_statements(text).as_slice() {
            [one] => match classify(one) {
                SessionCommand::Deallocate { name } => name,
                _ => return Ok(false),
            },
            _ => return Ok(false),
        };
        let status = match &self.server {
            None => idle_status,
            Some(_) if self.core.tracker.is_quiet() => self.core.tracker.status(),
            Some(_) => return Ok(false),
        };
        if status == txn::FAILED || !map.forget(&name) {
            return Ok(false);
        }
        self.cbuf.advance(h.total());
        encode::command_complete(&mut self.core.out, "DEALLOCATE");
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(true)
    }

    /// Rewrites the Query or Parse at the front of `cbuf` when it reads `pg_prepared_statements`.
    pub(super) fn rewrite_prepared_view(&mut self, piece: &Piece) {
        let (Piece::Whole(h), Some(map)) = (piece, self.core.stmts.as_ref()) else {
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
        // The text is fixed when it is prepared, so a named statement that reads the view sees the statements
        // defined up to and including itself (it exists whenever it runs); later ones it does not.
        let name_text = std::str::from_utf8(name).unwrap_or_default();
        let defining =
            (!name_text.is_empty() && map.statement_text(name_text).is_none()).then(|| {
                ClientStatement {
                    name: name_text,
                    body: &body[name.len() + 1..],
                    server_name: "",
                    defined: std::time::SystemTime::now(),
                }
            });
        let mine = own_statements(map.client_statements().chain(defining));
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

/// The client's statements as the view's rows: a subquery with the view's columns (PostgreSQL 15's). Parameter
/// types and plan counts come from the server's own row for the shared statement when this server has it (types
/// the server inferred, where the client declared none); the time is when the client defined it.
fn own_statements<'a>(statements: impl Iterator<Item = ClientStatement<'a>>) -> String {
    let mut sql = String::from(
        "(SELECT name, statement, prepare_time, parameter_types, from_sql, generic_plans, custom_plans \
         FROM pg_catalog.pg_prepared_statements WHERE from_sql UNION ALL \
         SELECT own.name, own.statement, own.prepare_time, coalesce(s.parameter_types, own.parameter_types), \
         false, coalesce(s.generic_plans, 0), coalesce(s.custom_plans, 0) FROM (VALUES ",
    );
    let mut any = false;
    for st in statements {
        let text_end = st
            .body
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(st.body.len());
        let text = String::from_utf8_lossy(&st.body[..text_end]);
        let types: Vec<String> = parameter_types(st.body.get(text_end + 1..).unwrap_or_default())
            .iter()
            .map(u32::to_string)
            .collect();
        let at = st
            .defined
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if any {
            sql.push_str(", ");
        }
        any = true;
        sql.push_str(&format!(
            "({}::text, {}::text, {}::text, to_timestamp({}.{:06}), '{{{}}}'::oid[]::regtype[])",
            literal(st.name),
            literal(&text),
            literal(st.server_name),
            at.as_secs(),
            at.subsec_micros(),
            types.join(",")
        ));
    }
    if !any {
        sql.push_str("(NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::regtype[])");
    }
    sql.push_str(
        ") AS own(name, statement, server_name, prepare_time, parameter_types) \
         LEFT JOIN pg_catalog.pg_prepared_statements s ON s.name = own.server_name",
    );
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
        let st = ClientStatement {
            name: "_pg3_0",
            body: &body,
            server_name: "ocelot_7",
            defined: std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
        };
        let s = own_statements([st].into_iter());
        let row = "('_pg3_0'::text, 'SELECT $1, ''it''''s'''::text, 'ocelot_7'::text, to_timestamp(1.500000), '{23}'";
        assert!(s.contains(row), "{s}");
        let empty = own_statements(std::iter::empty());
        assert!(empty.ends_with("WHERE own.name IS NOT NULL)"), "{empty}");
    }
}
