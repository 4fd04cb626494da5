//! Named prepared statements in transaction mode, sans-IO. A client's statement names live only in Ocelot: its
//! named Parse becomes a Parse of a proxy-wide name on whichever server it uses (or, when that server already has
//! the statement, an unnamed Parse of the same text, so the client still gets its own ParseComplete or error in
//! order). Bind and Describe of a known name are renamed, with the statement prepared first on a server that
//! lacks it; the ParseComplete of such an injected Parse is swallowed. Eviction from a server's bounded cache
//! injects a Close whose CloseComplete is swallowed too.
//!
//! Responses are matched to requests by order: each Parse or Close sent has an entry in a queue, tagged with the
//! number of the Sync (or Query) it precedes. When a ReadyForQuery ends that sync group, entries left in it were
//! skipped by the server after an error, and names they would have created are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::pool::prepared::{Registry, ServerStatements, Statement};
use crate::protocol::codes::{backend, frontend, sqlstate};
use crate::protocol::encode::{self, Severity};
use crate::protocol::{extended, ProtocolError};

#[derive(Debug)]
struct Ack {
    group: u64,
    swallow: bool,
    /// The statement this Parse creates on the server under its proxy-wide name.
    creates: Option<Arc<Statement>>,
    /// The client's name this Parse defines: forgotten again if the Parse fails.
    defines: Option<String>,
}

/// A client's statement: the pool's shared one, and when the client defined it (pg_prepared_statements'
/// `prepare_time` for the client, whichever client prepared the shared statement first).
#[derive(Debug)]
struct Named {
    stmt: Arc<Statement>,
    defined: std::time::SystemTime,
}

impl Named {
    fn new(stmt: Arc<Statement>) -> Self {
        Named {
            stmt,
            defined: std::time::SystemTime::now(),
        }
    }
}

/// One of the client's statements as `pg_prepared_statements` shows it.
pub(crate) struct ClientStatement<'a> {
    pub(crate) name: &'a str,
    /// The Parse body: query text, NUL, parameter types.
    pub(crate) body: &'a [u8],
    /// The name it has on servers.
    pub(crate) server_name: &'a str,
    pub(crate) defined: std::time::SystemTime,
}

/// What to do with a client message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientAction {
    /// Forward it unchanged.
    Forward,
    /// Replacement bytes were appended to the output buffer.
    Replaced,
    /// Do not forward it.
    Drop,
}

/// One client's prepared statements and the bookkeeping of the server it currently holds.
#[derive(Debug, Default)]
pub(crate) struct StatementMap {
    by_client_name: HashMap<String, Named>,
    parse_acks: VecDeque<Ack>,
    close_acks: VecDeque<Ack>,
    /// Sync groups sent to and finished by the current server.
    sent_groups: u64,
    done_groups: u64,
    /// An error Ocelot reports itself, emitted before the ReadyForQuery of its group.
    deferred_error: Option<(u64, BytesMut)>,
    server_error_in_group: bool,
    skip_until_sync: bool,
    /// The Parse body of the client's unnamed statement, while it has one (PostgreSQL drops it at a Query).
    unnamed: Option<Vec<u8>>,
    /// Whether the current server holds that unnamed statement: not after a new server is attached, nor after
    /// Ocelot's own unnamed Parse replaced it.
    unnamed_here: bool,
}

/// Whether messages of type `code` must be seen whole by [`StatementMap::client_message`].
pub(crate) fn inspects_client(code: u8) -> bool {
    matches!(
        code,
        frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE
    )
}

impl StatementMap {
    /// Resets the per-server bookkeeping when a new server is attached; the client's names stay.
    pub(crate) fn attach(&mut self) {
        self.parse_acks.clear();
        self.close_acks.clear();
        self.sent_groups = 0;
        self.done_groups = 0;
        self.deferred_error = None;
        self.server_error_in_group = false;
        self.skip_until_sync = false;
        self.unnamed_here = false;
    }

    /// Forgets every name (DEALLOCATE ALL or DISCARD ALL ran).
    pub(crate) fn clear(&mut self) {
        self.by_client_name.clear();
        self.unnamed = None;
    }

    /// The client's statements.
    pub(crate) fn client_statements(&self) -> impl Iterator<Item = ClientStatement<'_>> {
        self.by_client_name.iter().map(|(n, s)| ClientStatement {
            name: n,
            body: &s.stmt.body,
            server_name: &s.stmt.name,
            defined: s.defined,
        })
    }

    /// Forgets the client's statement `name` (an SQL DEALLOCATE of it); false when there is none.
    pub(crate) fn forget(&mut self, name: &str) -> bool {
        self.by_client_name.remove(name).is_some()
    }

    /// The query text of the client's statement `name`, if Ocelot knows it.
    pub(crate) fn statement_text(&self, name: &str) -> Option<Vec<u8>> {
        let named = self.by_client_name.get(name)?;
        Some(
            named
                .stmt
                .body
                .split(|&b| b == 0)
                .next()
                .unwrap_or_default()
                .to_vec(),
        )
    }

    /// The Parse body (query text and parameter types) of a client's statement.
    pub(crate) fn statement_body(&self, name: &str) -> Option<bytes::Bytes> {
        self.by_client_name.get(name).map(|s| s.stmt.body.clone())
    }

    /// Defines a client's named statement whose Parse Ocelot answered itself (a request run on several shards);
    /// it is prepared on a server when first used there.
    pub(crate) fn define(&mut self, name: &str, body: &[u8], registry: &Registry) {
        self.by_client_name
            .insert(name.to_owned(), Named::new(registry.intern(body)));
    }

    /// Handles one client message (`body` is whole for the codes [`inspects_client`] names). Replacement
    /// messages are appended to `out`.
    pub(crate) fn client_message(
        &mut self,
        code: u8,
        body: &[u8],
        server: &mut ServerStatements,
        registry: &Registry,
        cap: usize,
        out: &mut BytesMut,
    ) -> Result<ClientAction, ProtocolError> {
        if self.skip_until_sync && code != frontend::SYNC {
            return Ok(ClientAction::Drop);
        }
        match code {
            frontend::SYNC => {
                self.skip_until_sync = false;
                self.sent_groups += 1;
                Ok(ClientAction::Forward)
            }
            frontend::QUERY | frontend::FUNCTION_CALL => {
                if code == frontend::QUERY {
                    self.unnamed = None;
                }
                self.sent_groups += 1;
                Ok(ClientAction::Forward)
            }
            frontend::PARSE => self.parse(body, server, registry, cap, out),
            frontend::BIND => {
                let (portal, name, rest) = extended::bind(body)?;
                if name.is_empty() {
                    return Ok(self.unnamed_before(code, body, out));
                }
                let Some(stmt) = self.by_client_name.get(name).map(|n| n.stmt.clone()) else {
                    return Ok(ClientAction::Forward);
                };
                self.ensure_prepared(&stmt, server, cap, out);
                extended::encode_bind(out, portal, &stmt.name, rest);
                Ok(ClientAction::Replaced)
            }
            frontend::DESCRIBE => {
                let (kind, name) = extended::target(code, body)?;
                if kind == b'S' && name.is_empty() {
                    return Ok(self.unnamed_before(code, body, out));
                }
                let stmt = (kind == b'S')
                    .then(|| self.by_client_name.get(name).map(|n| n.stmt.clone()))
                    .flatten();
                let Some(stmt) = stmt else {
                    return Ok(ClientAction::Forward);
                };
                self.ensure_prepared(&stmt, server, cap, out);
                extended::encode_target(out, code, b'S', &stmt.name);
                Ok(ClientAction::Replaced)
            }
            frontend::CLOSE => {
                let (kind, name) = extended::target(code, body)?;
                if kind == b'S' {
                    // The server never had the client's name, so closing it there is a no-op that still answers
                    // CloseComplete in order; the shared statement stays for other clients.
                    self.by_client_name.remove(name);
                }
                self.close_acks.push_back(Ack {
                    group: self.sent_groups,
                    swallow: false,
                    creates: None,
                    defines: None,
                });
                Ok(ClientAction::Forward)
            }
            _ => Ok(ClientAction::Forward),
        }
    }

    fn parse(
        &mut self,
        body: &[u8],
        server: &mut ServerStatements,
        registry: &Registry,
        cap: usize,
        out: &mut BytesMut,
    ) -> Result<ClientAction, ProtocolError> {
        let (name, rest) = extended::parse(body)?;
        if name.is_empty() {
            let kept = self.unnamed.get_or_insert_with(Vec::new);
            kept.clear();
            kept.extend_from_slice(rest);
            self.unnamed_here = true;
            self.push_parse(false, None, None);
            return Ok(ClientAction::Forward);
        }
        if self.by_client_name.contains_key(name) {
            let mut err = BytesMut::new();
            encode::error_response(
                &mut err,
                Severity::Error,
                sqlstate::DUPLICATE_PREPARED_STATEMENT,
                &format!("prepared statement \"{name}\" already exists"),
                None,
            );
            self.deferred_error.get_or_insert((self.sent_groups, err));
            self.skip_until_sync = true;
            return Ok(ClientAction::Drop);
        }
        let stmt = registry.intern(rest);
        self.by_client_name
            .insert(name.to_owned(), Named::new(stmt.clone()));
        if server.lookup(&stmt.name) {
            // Already prepared here: an unnamed Parse of the same text gives the client its ParseComplete (or
            // the real error, should the text no longer parse) in the right place.
            extended::encode_parse(out, "", rest);
            self.unnamed_here = false;
            self.push_parse(false, None, Some(name.to_owned()));
        } else {
            self.evict_for(&stmt.name, server, cap, out);
            extended::encode_parse(out, &stmt.name, rest);
            self.push_parse(false, Some(stmt.clone()), Some(name.to_owned()));
        }
        Ok(ClientAction::Replaced)
    }

    /// A Bind or Describe of the unnamed statement on a server that does not hold the client's: its Parse is sent
    /// first (its ParseComplete swallowed), as a client may prepare it in one request and use it in the next.
    fn unnamed_before(&mut self, code: u8, body: &[u8], out: &mut BytesMut) -> ClientAction {
        let Some(kept) = self.unnamed.as_ref().filter(|_| !self.unnamed_here) else {
            return ClientAction::Forward;
        };
        extended::encode_parse(out, "", kept);
        self.unnamed_here = true;
        self.push_parse(true, None, None);
        out.put_u8(code);
        out.put_u32(body.len() as u32 + 4);
        out.put_slice(body);
        ClientAction::Replaced
    }

    fn push_parse(
        &mut self,
        swallow: bool,
        creates: Option<Arc<Statement>>,
        defines: Option<String>,
    ) {
        self.parse_acks.push_back(Ack {
            group: self.sent_groups,
            swallow,
            creates,
            defines,
        });
    }

    /// Makes room for `name` in the server's cache, closing the least recently used statement when full.
    fn evict_for(
        &mut self,
        name: &Arc<str>,
        server: &mut ServerStatements,
        cap: usize,
        out: &mut BytesMut,
    ) {
        if let Some(old) = server.insert(name.clone(), cap) {
            extended::encode_target(out, frontend::CLOSE, b'S', &old);
            self.close_acks.push_back(Ack {
                group: self.sent_groups,
                swallow: true,
                creates: None,
                defines: None,
            });
        }
    }

    fn ensure_prepared(
        &mut self,
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        cap: usize,
        out: &mut BytesMut,
    ) {
        if server.lookup(&stmt.name) {
            return;
        }
        self.evict_for(&stmt.name, server, cap, out);
        extended::encode_parse(out, &stmt.name, &stmt.body);
        self.push_parse(true, Some(stmt.clone()), None);
    }

    /// Handles the start of one server message; returns whether to forward it. Bytes Ocelot must send to the
    /// client before this message (a deferred error) are appended to `before`.
    pub(crate) fn server_message(
        &mut self,
        code: u8,
        server: &mut ServerStatements,
        before: &mut BytesMut,
    ) -> bool {
        match code {
            backend::PARSE_COMPLETE => self.pop(true, server).is_none_or(|swallow| !swallow),
            backend::CLOSE_COMPLETE => self.pop(false, server).is_none_or(|swallow| !swallow),
            backend::ERROR_RESPONSE => {
                self.server_error_in_group = true;
                true
            }
            backend::READY_FOR_QUERY => {
                if let Some((group, err)) = self.deferred_error.take() {
                    if group == self.done_groups && !self.server_error_in_group {
                        before.extend_from_slice(&err);
                    } else if group > self.done_groups {
                        self.deferred_error = Some((group, err));
                    }
                }
                self.done_groups += 1;
                self.server_error_in_group = false;
                self.drop_stale(server);
                true
            }
            _ => true,
        }
    }

    /// Pops the entry a ParseComplete (`parse`) or CloseComplete answers; `Some(swallow)`.
    fn pop(&mut self, parse: bool, server: &mut ServerStatements) -> Option<bool> {
        self.drop_stale(server);
        let q = if parse {
            &mut self.parse_acks
        } else {
            &mut self.close_acks
        };
        let ack = q.pop_front()?;
        if let Some(stmt) = &ack.creates {
            stmt.parsed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some(ack.swallow)
    }

    /// A request that is only `Parse` of a named statement and `Sync`, for a text the pool has prepared on a server
    /// before: Ocelot defines the client's name and answers ParseComplete itself, and the statement is prepared
    /// where it is first bound. A client that prepares while others hold every server (pgbench -M prepared
    /// blocks a whole thread of clients in PQprepare) then needs none. `false` when the request is anything else.
    pub(crate) fn parse_without_server(&mut self, body: &[u8], registry: &Registry) -> bool {
        let Ok((name, rest)) = extended::parse(body) else {
            return false;
        };
        if name.is_empty() || self.by_client_name.contains_key(name) {
            return false;
        }
        let Some(stmt) = registry.known(rest) else {
            return false;
        };
        self.by_client_name
            .insert(name.to_owned(), Named::new(stmt));
        true
    }

    /// Gets the one request in flight (`sent`, as the server received it) ready to be sent again to the same
    /// server, after PostgreSQL found a shared statement it uses stale: appends to `out` a Close of every named
    /// statement the request names and a Parse of those it uses without parsing. The answers to those, and the
    /// `parses` and `closes` the server already answered before its error, will be swallowed when they come
    /// again. False, with nothing changed, when the request cannot be sent again: it names a statement whose text
    /// is not known, or binds one without describing it (the client then reads the rows with the columns it was
    /// told of before the change, and only PostgreSQL's own error is right).
    pub(crate) fn reprepare(
        &mut self,
        sent: &[u8],
        parses: usize,
        closes: usize,
        out: &mut BytesMut,
    ) -> bool {
        let Some((parsed, used)) = names_to_reprepare(sent) else {
            return false;
        };
        let mut again = Vec::with_capacity(used.len());
        for name in &used {
            let Some(n) = self
                .by_client_name
                .values()
                .find(|n| &*n.stmt.name == *name)
            else {
                return false;
            };
            again.push(n.stmt.clone());
        }
        let ack = |creates: Option<Arc<Statement>>| Ack {
            group: self.done_groups,
            swallow: true,
            creates,
            defines: None,
        };
        let mut close_acks = Vec::new();
        for name in parsed.iter().chain(&used) {
            extended::encode_target(out, frontend::CLOSE, b'S', name);
            close_acks.push(ack(None));
        }
        let mut parse_acks = Vec::new();
        for stmt in again {
            extended::encode_parse(out, &stmt.name, &stmt.body);
            parse_acks.push(ack(Some(stmt)));
        }
        parse_acks.extend((0..parses).map(|_| ack(None)));
        close_acks.extend((0..closes).map(|_| ack(None)));
        for a in parse_acks.into_iter().rev() {
            self.parse_acks.push_front(a);
        }
        for a in close_acks.into_iter().rev() {
            self.close_acks.push_front(a);
        }
        true
    }

    /// Entries of finished groups were skipped after an error: names they would have created do not exist.
    fn drop_stale(&mut self, server: &mut ServerStatements) {
        while self
            .parse_acks
            .front()
            .is_some_and(|a| a.group < self.done_groups)
        {
            let Some(ack) = self.parse_acks.pop_front() else {
                break;
            };
            if let Some(stmt) = ack.creates {
                server.remove(&stmt.name);
            }
            if let Some(client_name) = ack.defines {
                self.by_client_name.remove(&client_name);
            }
        }
        while self
            .close_acks
            .front()
            .is_some_and(|a| a.group < self.done_groups)
        {
            self.close_acks.pop_front();
        }
    }
}

/// The named statements a request parses and those it uses without parsing, or `None` when it binds a statement
/// without the client being told its columns again in the same request (a Describe of the statement or the
/// portal), or uses the unnamed statement it did not parse.
fn names_to_reprepare(sent: &[u8]) -> Option<(Vec<&str>, Vec<&str>)> {
    let (mut parsed, mut used) = (Vec::new(), Vec::new());
    let (mut described, mut binds) = (Vec::new(), Vec::new());
    for (code, body) in crate::protocol::frame::messages(sent) {
        let name = match code {
            frontend::PARSE => extended::parse(body).ok().map(|(n, _)| n),
            frontend::BIND => extended::bind(body).ok().map(|(portal, n, _)| {
                binds.push((portal, n));
                n
            }),
            frontend::DESCRIBE => {
                let target = extended::target(code, body).ok();
                described.extend(target);
                target.filter(|(kind, _)| *kind == b'S').map(|(_, n)| n)
            }
            _ => None,
        };
        match name {
            None => {}
            Some(n) if code == frontend::PARSE => parsed.push(n),
            Some(n) if !parsed.contains(&n) && !used.contains(&n) => used.push(n),
            Some(_) => {}
        }
    }
    let told = |(portal, stmt): &(&str, &str)| {
        parsed.contains(stmt)
            || described.contains(&(b'S', *stmt))
            || described.contains(&(b'P', *portal))
    };
    if !binds.iter().all(told) || used.contains(&"") {
        return None;
    }
    parsed.retain(|n| !n.is_empty());
    Some((parsed, used))
}

#[cfg(test)]
mod tests;
