//! Extended-protocol requests that run on several shards. Ocelot reads the whole request up to its Sync (an
//! optional Parse, the Bind with its parameter values and result formats, an optional Describe of the portal, the
//! Execute), runs it on each shard as an unnamed statement with the client's values and formats (or a subset of
//! them, for the rows of a split INSERT), and answers with what one server would send: ParseComplete,
//! BindComplete, the RowDescription when the portal was described, the merged rows, CommandComplete and
//! ReadyForQuery.

use bytes::{Bytes, BytesMut};

use crate::protocol::codes::{backend, frontend};
use crate::protocol::encode;
use crate::protocol::extended::{self, BindValues};
use crate::protocol::frame::Header;

use super::statements::StatementMap;

/// The row limit of an Execute body (portal name, then the limit).
fn execute_max_rows(body: &[u8]) -> i32 {
    body.iter()
        .position(|&b| b == 0)
        .and_then(|nul| body.get(nul + 1..nul + 5))
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// The type and body of the whole message at `at` in `buf`, moving `at` past it; `None` when it is not all there.
fn next_whole<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<(u8, &'a [u8])>, Unsupported> {
    let h = match Header::parse(&buf[*at..], u32::MAX) {
        Ok(Some(h)) if buf.len() >= *at + h.total() => h,
        Ok(_) => return Ok(None),
        Err(_) => return Err("a malformed message"),
    };
    let body = &buf[*at + 5..*at + h.total()];
    *at += h.total();
    Ok(Some((h.code, body)))
}

/// A whole extended-protocol request waiting in the client buffer.
#[derive(Debug)]
pub(crate) struct ExtRequest {
    /// Bytes up to and including the Sync.
    pub(crate) len: usize,
    /// A Parse came with it (answered with ParseComplete); a named one is remembered for later Binds.
    pub(crate) parse: Option<(String, Vec<u8>)>,
    pub(crate) sql: String,
    pub(crate) types: Vec<u32>,
    pub(crate) bind: BindValues,
    pub(crate) describe_portal: bool,
    /// The Execute's row limit (0: all rows). With more rows than that the portal is suspended, and closed by
    /// the request's Sync.
    pub(crate) max_rows: i32,
}

/// Why a request cannot run on several shards.
pub(crate) type Unsupported = &'static str;

/// Reads the request at the start of `buf`: `Ok(None)` when its Sync has not arrived yet.
pub(crate) fn decode(
    buf: &[u8],
    stmts: Option<&StatementMap>,
) -> Result<Option<ExtRequest>, Unsupported> {
    let mut at = 0;
    let mut parse: Option<(String, Vec<u8>)> = None;
    let mut query: Option<(String, Vec<u32>)> = None;
    let mut bind = None;
    let mut describe_portal = false;
    let mut executed = false;
    let mut limit = 0;
    loop {
        let Some((code, body)) = next_whole(buf, &mut at)? else {
            return Ok(None);
        };
        match code {
            frontend::PARSE if parse.is_none() && bind.is_none() => {
                let (name, rest) = extended::parse(body).map_err(|_| "a malformed Parse")?;
                query = Some(extended::parse_query(rest).map_err(|_| "a malformed Parse")?);
                parse = Some((name.to_owned(), rest.to_vec()));
            }
            frontend::BIND if bind.is_none() => {
                let (portal, name, rest) = extended::bind(body).map_err(|_| "a malformed Bind")?;
                if !portal.is_empty() {
                    return Err("named portals");
                }
                if query.is_none() || parse.as_ref().is_some_and(|(n, _)| n != name) {
                    let body = stmts
                        .and_then(|m| m.statement_body(name))
                        .ok_or("a statement Ocelot does not know")?;
                    query = Some(extended::parse_query(&body).map_err(|_| "a malformed Parse")?);
                }
                bind = Some(BindValues::decode(rest).map_err(|_| "a malformed Bind")?);
            }
            frontend::DESCRIBE if bind.is_some() && !executed => {
                match extended::target(code, body) {
                    Ok((b'P', "")) => describe_portal = true,
                    _ => return Err("Describe of a statement in the same request"),
                }
            }
            frontend::EXECUTE if bind.is_some() && !executed => {
                let max_rows = execute_max_rows(body);
                limit = max_rows.max(0);
                executed = true;
            }
            frontend::SYNC => break,
            _ => return Err("this sequence of extended-protocol messages"),
        }
    }
    let (Some((sql, types)), Some(bind), true) = (query, bind, executed) else {
        return Err("an extended-protocol request without Bind and Execute");
    };
    Ok(Some(ExtRequest {
        len: at,
        parse,
        sql,
        types,
        bind,
        describe_portal,
        max_rows: limit,
    }))
}

impl ExtRequest {
    /// What one shard runs: `sql` with the parameters at `subset` (all of them when `None`), renumbered.
    /// `result_formats` replaces the client's when Ocelot needs other formats for its merge.
    pub(crate) fn shard_request(
        &self,
        sql: &str,
        subset: Option<&[usize]>,
        result_formats: Option<&[i16]>,
    ) -> Bytes {
        let (types, mut bind) = match subset {
            None => (self.types.clone(), self.bind.clone()),
            Some(idx) => (
                if self.types.is_empty() {
                    Vec::new()
                } else {
                    idx.iter()
                        .map(|&i| self.types.get(i).copied().unwrap_or(0))
                        .collect()
                },
                self.bind.subset(idx),
            ),
        };
        if let Some(f) = result_formats {
            bind.result_formats = f.to_vec();
        }
        let mut b = BytesMut::new();
        extended::encode_unnamed_request(&mut b, sql, &types, &bind);
        b.freeze()
    }

    /// Wraps a merged answer (RowDescription first when there is one, or an ErrorResponse) the way one server
    /// answers this request, ReadyForQuery excluded.
    pub(crate) fn envelope(&self, merged: &[u8], out: &mut BytesMut) {
        if merged.first() == Some(&backend::ERROR_RESPONSE) {
            out.extend_from_slice(merged);
            return;
        }
        if self.parse.is_some() {
            encode::empty(out, backend::PARSE_COMPLETE);
        }
        encode::empty(out, backend::BIND_COMPLETE);
        let mut rest = merged;
        if merged.first() == Some(&backend::ROW_DESCRIPTION) {
            let len = Header::parse(merged, u32::MAX)
                .ok()
                .flatten()
                .map_or(0, |h| h.total());
            if self.describe_portal {
                out.extend_from_slice(&merged[..len]);
            }
            rest = &merged[len..];
        } else if self.describe_portal {
            encode::empty(out, backend::NO_DATA);
        }
        if self.max_rows <= 0 {
            out.extend_from_slice(rest);
            return;
        }
        // Execute with a row limit: that many rows, then PortalSuspended when more were left.
        let mut at = 0;
        let mut rows = 0;
        while let Ok(Some(h)) = Header::parse(&rest[at..], u32::MAX) {
            let msg = &rest[at..(at + h.total()).min(rest.len())];
            at += h.total();
            match h.code {
                backend::DATA_ROW if rows >= self.max_rows => {}
                backend::DATA_ROW => {
                    rows += 1;
                    out.extend_from_slice(msg);
                }
                backend::COMMAND_COMPLETE if rest_rows(rest) > self.max_rows as usize => {
                    encode::empty(out, backend::PORTAL_SUSPENDED);
                }
                _ => out.extend_from_slice(msg),
            }
            if at >= rest.len() {
                break;
            }
        }
    }
}

/// One Bind/Execute of a batch.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) sql: String,
    pub(crate) types: Vec<u32>,
    pub(crate) bind: BindValues,
    pub(crate) describe: bool,
}

/// A client message of a batch that gets an answer, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Parse,
    Group(usize),
}

/// A pipelined extended-protocol request: Parses and Bind/Execute groups before one Sync.
#[derive(Debug)]
pub(crate) struct ExtBatch {
    pub(crate) len: usize,
    pub(crate) items: Vec<Item>,
    pub(crate) groups: Vec<Group>,
    /// Named statements the batch defines (name, Parse body).
    pub(crate) defines: Vec<(String, Vec<u8>)>,
}

/// Reads a batch at the start of `buf`: `Ok(None)` when its Sync has not arrived yet.
pub(crate) fn decode_batch(
    buf: &[u8],
    stmts: Option<&StatementMap>,
) -> Result<Option<ExtBatch>, Unsupported> {
    let mut at = 0;
    let mut items = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut defines = Vec::new();
    let mut statements: Vec<(String, String, Vec<u32>)> = Vec::new();
    let mut open: Option<Group> = None;
    loop {
        let Some((code, body)) = next_whole(buf, &mut at)? else {
            return Ok(None);
        };
        match code {
            frontend::PARSE if open.is_none() => {
                let (name, rest) = extended::parse(body).map_err(|_| "a malformed Parse")?;
                let (sql, types) = extended::parse_query(rest).map_err(|_| "a malformed Parse")?;
                if !name.is_empty() {
                    defines.push((name.to_owned(), rest.to_vec()));
                }
                statements.retain(|(n, _, _)| n != name);
                statements.push((name.to_owned(), sql, types));
                items.push(Item::Parse);
            }
            frontend::BIND if open.is_none() => {
                let (portal, name, rest) = extended::bind(body).map_err(|_| "a malformed Bind")?;
                if !portal.is_empty() {
                    return Err("named portals");
                }
                let (sql, types) = match statements.iter().find(|(n, _, _)| n == name) {
                    Some((_, sql, types)) => (sql.clone(), types.clone()),
                    None => {
                        let body = stmts
                            .and_then(|m| m.statement_body(name))
                            .ok_or("a statement Ocelot does not know")?;
                        extended::parse_query(&body).map_err(|_| "a malformed Parse")?
                    }
                };
                open = Some(Group {
                    sql,
                    types,
                    bind: BindValues::decode(rest).map_err(|_| "a malformed Bind")?,
                    describe: false,
                });
            }
            frontend::DESCRIBE if open.is_some() => match extended::target(code, body) {
                Ok((b'P', "")) => {
                    if let Some(g) = open.as_mut() {
                        g.describe = true;
                    }
                }
                _ => return Err("Describe of a statement inside a batch"),
            },
            frontend::EXECUTE if open.is_some() => {
                let max_rows = execute_max_rows(body);
                if max_rows != 0 {
                    return Err("Execute with a row limit (portal suspension)");
                }
                if let Some(g) = open.take() {
                    items.push(Item::Group(groups.len()));
                    groups.push(g);
                }
            }
            frontend::SYNC if open.is_none() => break,
            _ => return Err("this sequence of extended-protocol messages in a batch"),
        }
    }
    Ok(Some(ExtBatch {
        len: at,
        items,
        groups,
        defines,
    }))
}

/// Parse, Bind, Describe (when asked) and Execute of one group as an unnamed statement, without Sync.
pub(crate) fn encode_group(buf: &mut BytesMut, g: &Group) {
    let mut one = BytesMut::new();
    extended::encode_unnamed_request(&mut one, &g.sql, &g.types, &g.bind);
    // Drop the Sync (5 bytes) and, when the client did not describe the portal, the Describe (7 bytes) before
    // the Execute (10 bytes).
    let without_sync = &one[..one.len() - 5];
    if g.describe {
        buf.extend_from_slice(without_sync);
    } else {
        let execute = &without_sync[without_sync.len() - 10..];
        buf.extend_from_slice(&without_sync[..without_sync.len() - 17]);
        buf.extend_from_slice(execute);
    }
}

/// A shard's answer to its groups, cut per group: each group's messages from BindComplete to CommandComplete (or
/// to its ErrorResponse, which ends the list).
pub(crate) fn split_groups(messages: &[Bytes]) -> Vec<Vec<Bytes>> {
    let mut out: Vec<Vec<Bytes>> = Vec::new();
    let mut current: Option<Vec<Bytes>> = None;
    for m in messages {
        match m.first().copied() {
            Some(backend::PARSE_COMPLETE) | Some(backend::READY_FOR_QUERY) => {}
            Some(backend::BIND_COMPLETE) => current = Some(vec![m.clone()]),
            Some(backend::COMMAND_COMPLETE) | Some(backend::EMPTY_QUERY_RESPONSE) => {
                let mut g = current.take().unwrap_or_default();
                g.push(m.clone());
                out.push(g);
            }
            Some(backend::ERROR_RESPONSE) => {
                let mut g = current.take().unwrap_or_default();
                g.push(m.clone());
                out.push(g);
                break;
            }
            _ => match current.as_mut() {
                Some(g) => g.push(m.clone()),
                None => out.push(vec![m.clone()]),
            },
        }
    }
    out
}

/// DataRow messages in a merged answer.
fn rest_rows(buf: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Ok(Some(h)) = Header::parse(&buf[at..], u32::MAX) {
        if h.code == backend::DATA_ROW {
            n += 1;
        }
        at += h.total();
        if at >= buf.len() {
            break;
        }
    }
    n
}
