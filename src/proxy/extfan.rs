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

/// A whole extended-protocol request waiting in the client buffer.
#[derive(Debug)]
pub struct ExtRequest {
    /// Bytes up to and including the Sync.
    pub len: usize,
    /// A Parse came with it (answered with ParseComplete); a named one is remembered for later Binds.
    pub parse: Option<(String, Vec<u8>)>,
    pub sql: String,
    pub types: Vec<u32>,
    pub bind: BindValues,
    pub describe_portal: bool,
}

/// Why a request cannot run on several shards.
pub type Unsupported = &'static str;

/// Reads the request at the start of `buf`: `Ok(None)` when its Sync has not arrived yet.
pub fn decode(buf: &[u8], stmts: Option<&StatementMap>) -> Result<Option<ExtRequest>, Unsupported> {
    let mut at = 0;
    let mut parse: Option<(String, Vec<u8>)> = None;
    let mut query: Option<(String, Vec<u32>)> = None;
    let mut bind = None;
    let mut describe_portal = false;
    let mut executed = false;
    loop {
        let h = match Header::parse(&buf[at..], u32::MAX) {
            Ok(Some(h)) if buf.len() >= at + h.total() => h,
            Ok(_) => return Ok(None),
            Err(_) => return Err("a malformed message"),
        };
        let body = &buf[at + 5..at + h.total()];
        at += h.total();
        match h.code {
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
                match extended::target(h.code, body) {
                    Ok((b'P', "")) => describe_portal = true,
                    _ => return Err("Describe of a statement in the same request"),
                }
            }
            frontend::EXECUTE if bind.is_some() && !executed => {
                let max_rows = body
                    .iter()
                    .position(|&b| b == 0)
                    .and_then(|nul| body.get(nul + 1..nul + 5))
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if max_rows != 0 {
                    return Err("Execute with a row limit (portal suspension)");
                }
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
    }))
}

impl ExtRequest {
    /// What one shard runs: `sql` with the parameters at `subset` (all of them when `None`), renumbered.
    /// `result_formats` replaces the client's when Ocelot needs other formats for its merge.
    pub fn shard_request(
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
    pub fn envelope(&self, merged: &[u8], out: &mut BytesMut) {
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
        out.extend_from_slice(rest);
    }
}
