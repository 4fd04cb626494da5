//! `pgml.*` statements over the extended protocol (asyncpg, JDBC, tokio-postgres and psycopg with parameters).
//! While no server is held, Ocelot takes the statements it serves out of the message stream: it answers Parse with
//! ParseComplete, Describe with the parameter types and result columns (asking a server to describe a per-row
//! query), Bind by putting the values into the SQL as literals, Execute by serving that SQL as it serves a simple
//! Query and sending the answer in the formats the Bind asked for, Close, and Sync with ReadyForQuery. Messages
//! about other statements are left for the server; an error skips to the Sync, as on a server. In passthrough mode
//! it decides where `pgml.*` requests go (predictions to replicas, training to the primary).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::Session;

/// What is known of a statement text with given declared parameter types.
pub(super) struct Known {
    declared: Box<[u32]>,
    shape: Option<Arc<Shape>>,
    /// Parameter types inferred from the text, once asked for.
    inferred: Option<Vec<u32>>,
}

/// Statement shapes and parameter types by text, then by declared parameter types.
pub(super) type ShapeCache = HashMap<Box<str>, Vec<Known>>;
use crate::database::balance::Want;
use crate::inference::sql::params;
use crate::inference::sql::statement::{self, Shape};
use crate::protocol::codes::{backend, frontend, sqlstate, txn};
use crate::protocol::encode::{self, Severity};
use crate::protocol::extended::{self, BindValues};
use crate::protocol::frame::{Header, Piece};
use crate::proxy::error::ClientError;

/// A prepared `pgml.*` statement.
#[derive(Debug)]
struct Statement {
    sql: String,
    types: Vec<u32>,
    /// Parameter types were completed by a server's description.
    described: bool,
}

/// The bound unnamed portal: the SQL with its values, the result formats, and its answer once run.
#[derive(Debug)]
struct Portal {
    sql: String,
    formats: Vec<i16>,
    answer: Option<BytesMut>,
}

/// The `pgml.*` statements and portal of one session.
#[derive(Debug, Default)]
pub(super) struct PgmlStatements {
    statements: HashMap<String, Statement>,
    portal: Option<Portal>,
}

/// What the client loop does with a request that may be a `pgml.*` call.
pub(super) enum Intercept {
    /// Not one Ocelot serves: route it as usual.
    Pass,
    /// Answered.
    Served,
    /// The rest of the request (up to its Sync) has not arrived.
    Wait,
    /// The held server is still answering earlier requests: answer after it.
    Hold,
}

impl PgmlStatements {
    /// Binds statement `name` into the unnamed portal: its SQL with the values as literals.
    fn bind(&self, portal: &str, name: &str, bind: BindValues) -> Result<Portal, BytesMut> {
        if !portal.is_empty() {
            return Err(failure(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "Ocelot serves pgml statements through the unnamed portal only",
            ));
        }
        let stmt = self.statements.get(name).ok_or_else(|| {
            failure(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &format!("prepared statement \"{name}\" does not exist"),
            )
        })?;
        if bind.params.len() != stmt.types.len() {
            return Err(failure(
                sqlstate::PROTOCOL_VIOLATION,
                &format!(
                    "bind message supplies {} parameters, but prepared statement \"{name}\" requires {}",
                    bind.params.len(),
                    stmt.types.len()
                ),
            ));
        }
        let sql = params::substitute(&stmt.sql, &stmt.types, &bind)
            .map_err(|e| failure(sqlstate::INVALID_TEXT_REPRESENTATION, &e))?;
        Ok(Portal {
            sql,
            formats: bind.result_formats,
            answer: None,
        })
    }
}

impl Session {
    /// In passthrough mode, where the `pgml.*` request at the start of `cbuf` goes: training, deploys and dataset
    /// loads write the registry on the primary; predictions go to replicas by least outstanding connections.
    pub(super) fn passthrough_want(&self) -> Option<Want> {
        let (code, body) = super::route::whole_messages(&self.cbuf, 0).next()?;
        let sql = match code {
            frontend::QUERY => body.strip_suffix(&[0]).unwrap_or(body),
            frontend::PARSE => {
                let (_, rest) = crate::protocol::extended::parse(body).ok()?;
                let end = rest.iter().position(|b| *b == 0)?;
                &rest[..end]
            }
            _ => return None,
        };
        if !crate::inference::serving::serve::mentions_pgml(sql) {
            return None;
        }
        let calls = crate::inference::sql::call::find_calls(std::str::from_utf8(sql).ok()?).ok()?;
        const WRITES: &[&str] = &[
            "train",
            "train_joint",
            "deploy",
            "deploy_ab",
            "end_ab",
            "load_dataset",
            "tune",
            "snapshot",
        ];
        if calls.iter().any(|c| WRITES.contains(&c.function.as_str())) {
            return Some(Want::Primary);
        }
        (!calls.is_empty()
            && crate::router::classify::classify(std::str::from_utf8(sql).ok()?, &[])
                == crate::router::classify::Route::Read)
            .then_some(Want::Predict)
    }

    /// Answers the request at the start of `cbuf` when it is a `pgml.*` call Ocelot serves: a simple Query, or
    /// extended-protocol messages about its statements.
    pub(super) async fn intercept_pgml(&mut self, piece: &Piece) -> Result<Intercept, ClientError> {
        let Piece::Whole(h) = *piece else {
            return Ok(Intercept::Pass);
        };
        if self.pool.inference_mode != crate::config::InferenceMode::Proxy {
            return Ok(Intercept::Pass);
        }
        let simple = h.code == frontend::QUERY
            && crate::inference::serving::serve::mentions_pgml(&self.cbuf[..h.total()]);
        let extended = !simple && self.starts_pgml_request(h.code, h.total());
        if !simple && !extended {
            return Ok(Intercept::Pass);
        }
        let status = if self.server.is_some() {
            if self.core.tracker.pending_units() > 0
                || (extended && self.core.tracker.is_unsynced())
            {
                return Ok(Intercept::Hold);
            }
            self.core.tracker.status()
        } else if self.pending_begin.is_some() {
            txn::IN_TRANSACTION
        } else {
            txn::IDLE
        };
        if simple {
            // Boxed: these futures are large and rare, and would otherwise size every idle session.
            if Box::pin(self.serve_inference(h.total(), status)).await?
                || Box::pin(self.inline_pgml(h.total(), status)).await?
            {
                return Ok(Intercept::Served);
            }
            return Ok(Intercept::Pass);
        }
        if !super::route::request_complete(&self.cbuf) {
            return Ok(Intercept::Wait);
        }
        Box::pin(self.serve_pgml_messages(status)).await?;
        Ok(Intercept::Served)
    }

    /// Replaces the Query of `len` bytes at the start of `cbuf` by the same query with its constant `pgml.embed`
    /// calls and its `pgml.drift` and `pgml.live_metrics` tables computed and inlined, for the client loop to route afresh (an error is answered instead). Returns
    /// false when there is nothing to inline.
    async fn inline_pgml(&mut self, len: usize, status: u8) -> Result<bool, ClientError> {
        let body = &self.cbuf[5..len];
        let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned();
        let backend: Arc<dyn crate::inference::backend::Backend> = self.pool.clone();
        match crate::inference::sql::inline::inline(&backend, &sql).await {
            None => Ok(false),
            Some(Ok(inlined)) => {
                let mut q = BytesMut::with_capacity(inlined.len() + 6 + self.cbuf.len() - len);
                encode::query(&mut q, &inlined);
                q.extend_from_slice(&self.cbuf[len..]);
                self.cbuf = q;
                Ok(true)
            }
            Some(Err((code, message))) => {
                self.cbuf.advance(len);
                encode::error_response(&mut self.core.out, Severity::Error, code, &message, None);
                encode::ready_for_query(&mut self.core.out, status);
                self.flush_out().await?;
                Ok(true)
            }
        }
    }

    /// Whether the whole message of `code` at the start of `cbuf` begins a request about a `pgml.*` statement
    /// Ocelot serves: its Parse, Bind, or Describe or Close of the statement. (The unnamed portal Ocelot bound
    /// lives only until the request's Sync.)
    fn starts_pgml_request(&mut self, code: u8, total: usize) -> bool {
        matches!(
            code,
            frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE
        ) && self.is_pgml_message(code, total)
    }

    /// Whether the whole message of `code` at the start of `cbuf` is about a `pgml.*` statement Ocelot serves.
    fn is_pgml_message(&mut self, code: u8, total: usize) -> bool {
        if code == frontend::PARSE {
            let body = &self.cbuf[5..total];
            if !crate::inference::serving::serve::mentions_pgml(body) {
                return false;
            }
            let Ok((_, rest)) = extended::parse(body) else {
                return false;
            };
            let Ok((sql, types)) = extended::parse_query(rest) else {
                return false;
            };
            return self.shape_of(&sql, &types).is_some();
        }
        let body = &self.cbuf[5..total];
        let mine = |name: &str| {
            self.pgml
                .as_ref()
                .is_some_and(|p| p.statements.contains_key(name))
        };
        match code {
            frontend::BIND => extended::bind(body).is_ok_and(|(_, name, _)| mine(name)),
            frontend::DESCRIBE | frontend::CLOSE => match extended::target(code, body) {
                Ok((b'S', name)) => mine(name),
                Ok((b'P', "")) => self.pgml.as_ref().is_some_and(|p| p.portal.is_some()),
                _ => false,
            },
            frontend::EXECUTE => self.pgml.as_ref().is_some_and(|p| p.portal.is_some()),
            _ => false,
        }
    }

    /// Answers the `pgml.*` messages at the start of `cbuf` up to their Sync or Flush (or the first message that is
    /// the server's).
    /// `status` is what the ReadyForQuery says.
    async fn serve_pgml_messages(&mut self, status: u8) -> Result<(), ClientError> {
        let mut failed = false;
        // The request ended at its Sync, or went on with messages for the server.
        let mut ended = false;
        loop {
            let h = match Header::parse(&self.cbuf, u32::MAX) {
                Ok(Some(h)) if self.cbuf.len() >= h.total() => h,
                _ => break,
            };
            if h.code == frontend::SYNC {
                self.cbuf.advance(h.total());
                encode::ready_for_query(&mut self.core.out, status);
                ended = true;
                break;
            }
            if failed {
                // After an error, everything up to the Sync is ignored, as a server ignores it.
                self.cbuf.advance(h.total());
                continue;
            }
            if h.code == frontend::FLUSH {
                self.cbuf.advance(h.total());
                break;
            }
            if !self.is_pgml_message(h.code, h.total()) {
                ended = true;
                break;
            }
            let body = self.cbuf.split_to(h.total()).split_off(5);
            if let Err(error) = self.pgml_message(h.code, &body).await {
                self.core.out.extend_from_slice(&error);
                failed = true;
            }
        }
        if ended {
            // Ocelot's unnamed portal does not outlive the request.
            if let Some(p) = self.pgml.as_mut() {
                p.portal = None;
            }
        }
        self.flush_out().await
    }

    /// Answers one message about a `pgml.*` statement or portal; the error is an ErrorResponse.
    async fn pgml_message(&mut self, code: u8, body: &[u8]) -> Result<(), BytesMut> {
        let malformed = |_| failure(sqlstate::PROTOCOL_VIOLATION, "malformed message");
        let parsed = match code {
            frontend::PARSE => {
                let (name, rest) = extended::parse(body).map_err(malformed)?;
                let (sql, declared) = extended::parse_query(rest).map_err(malformed)?;
                let types = self.parameter_types(&sql, &declared);
                Some((name, sql, types))
            }
            _ => None,
        };
        let state = self.pgml.get_or_insert_with(Default::default);
        match code {
            frontend::PARSE => {
                let Some((name, sql, types)) = parsed else {
                    return Ok(());
                };
                let stmt = Statement {
                    sql,
                    types,
                    described: false,
                };
                state.statements.insert(name.to_owned(), stmt);
                encode::empty(&mut self.core.out, backend::PARSE_COMPLETE);
            }
            frontend::BIND => {
                let (portal, name, rest) = extended::bind(body).map_err(malformed)?;
                let bind = BindValues::decode(rest).map_err(malformed)?;
                state.portal = Some(state.bind(portal, name, bind)?);
                encode::empty(&mut self.core.out, backend::BIND_COMPLETE);
            }
            frontend::DESCRIBE => match extended::target(code, body).map_err(malformed)? {
                (b'S', name) => self.describe_pgml_statement(name.to_owned()).await?,
                _ => self.describe_pgml_portal().await?,
            },
            frontend::EXECUTE => {
                let answer = self.run_pgml_portal().await;
                if answer.first() == Some(&backend::ERROR_RESPONSE) {
                    return Err(answer);
                }
                // Rows are converted apart from `out` so that a failure leaves no partial answer behind.
                let mut rows = BytesMut::new();
                statement::in_formats(&answer, &self.portal_formats(), false, &mut rows)
                    .map_err(|e| failure(sqlstate::FEATURE_NOT_SUPPORTED, &e))?;
                self.core.out.extend_from_slice(&rows);
            }
            frontend::CLOSE => {
                match extended::target(code, body).map_err(malformed)? {
                    (b'S', name) => {
                        state.statements.remove(name);
                    }
                    _ => state.portal = None,
                }
                encode::empty(&mut self.core.out, backend::CLOSE_COMPLETE);
            }
            _ => {}
        }
        Ok(())
    }

    fn portal_formats(&self) -> Vec<i16> {
        self.pgml
            .as_ref()
            .and_then(|p| p.portal.as_ref())
            .map(|p| p.formats.clone())
            .unwrap_or_default()
    }

    /// Answers Describe of the portal with its RowDescription, which means running it; the rows wait for the
    /// Execute.
    async fn describe_pgml_portal(&mut self) -> Result<(), BytesMut> {
        let answer = self.run_pgml_portal().await;
        if answer.first() == Some(&backend::ERROR_RESPONSE) {
            return Err(answer);
        }
        let end = Header::parse(&answer, u32::MAX)
            .ok()
            .flatten()
            .filter(|h| h.code == backend::ROW_DESCRIPTION)
            .map_or(0, |h| h.total());
        if end == 0 {
            encode::empty(&mut self.core.out, backend::NO_DATA);
        } else {
            statement::in_formats(
                &answer[..end],
                &self.portal_formats(),
                true,
                &mut self.core.out,
            )
            .map_err(|e| failure(sqlstate::FEATURE_NOT_SUPPORTED, &e))?;
        }
        if let Some(p) = self.pgml.as_mut().and_then(|p| p.portal.as_mut()) {
            p.answer = Some(answer);
        }
        Ok(())
    }

    /// The shape of a statement, parsed once per session and text: drivers send the same Parse over and over,
    /// and reading it with the SQL parser costs tens of microseconds.
    pub(super) fn shape_of(&mut self, sql: &str, types: &[u32]) -> Option<Arc<Shape>> {
        self.known(sql, types).shape.clone()
    }

    /// The parameter types of a statement, from its Parse and its text (cached like [`Self::shape_of`]).
    fn parameter_types(&mut self, sql: &str, declared: &[u32]) -> Vec<u32> {
        let k = self.known(sql, declared);
        k.inferred
            .get_or_insert_with(|| params::infer_types(sql, declared))
            .clone()
    }

    fn known(&mut self, sql: &str, types: &[u32]) -> &mut Known {
        const KEPT: usize = 256;
        let cached = self
            .pgml_shapes
            .get(sql)
            .and_then(|v| v.iter().position(|k| *k.declared == *types));
        let i = match cached {
            Some(i) => i,
            None => {
                if self.pgml_shapes.len() >= KEPT {
                    self.pgml_shapes.clear();
                }
                let known = Known {
                    declared: types.into(),
                    shape: statement::shape(sql, types).map(Arc::new),
                    inferred: None,
                };
                let v = self.pgml_shapes.entry(sql.into()).or_default();
                v.push(known);
                v.len() - 1
            }
        };
        // Present: found or just inserted above.
        &mut self
            .pgml_shapes
            .get_mut(sql)
            .unwrap_or_else(|| unreachable!())[i]
    }

    /// Answers Describe of statement `name`: its parameter types, then its columns.
    async fn describe_pgml_statement(&mut self, name: String) -> Result<(), BytesMut> {
        let Some(stmt) = self.pgml.as_ref().and_then(|p| p.statements.get(&name)) else {
            return Err(failure(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &format!("prepared statement \"{name}\" does not exist"),
            ));
        };
        let (sql, mut types, described) = (stmt.sql.clone(), stmt.types.clone(), stmt.described);
        let mut columns: Vec<(String, u32, i16)> = Vec::new();
        match self.shape_of(&sql, &types).as_deref() {
            Some(Shape::Columns(cols)) => {
                columns = cols.iter().map(|(n, t)| (n.clone(), *t, -1)).collect();
            }
            Some(Shape::PerRow(plan)) => {
                let (server_types, fields) = self.describe_on_server(&plan.sql).await?;
                if !described {
                    for (t, s) in types.iter_mut().zip(server_types) {
                        if *t == 0 {
                            *t = s;
                        }
                    }
                }
                for o in &plan.outputs {
                    columns.push(match o {
                        None => {
                            let (oid, len) = plan.output.column_type();
                            (plan.name.clone(), oid, len)
                        }
                        Some(i) => fields.get(*i).cloned().ok_or_else(|| {
                            failure(
                                sqlstate::INTERNAL_ERROR,
                                "the server described fewer columns",
                            )
                        })?,
                    });
                }
            }
            Some(Shape::Refused) | None => {}
        }
        // Unknown types are sent as text, which PostgreSQL reads as an untyped literal.
        let shown: Vec<u32> = types
            .iter()
            .map(|t| if *t == 0 { params::TEXT } else { *t })
            .collect();
        if let Some(stmt) = self.pgml.as_mut().and_then(|p| p.statements.get_mut(&name)) {
            stmt.types = types;
            stmt.described = true;
        }
        encode::parameter_description(&mut self.core.out, &shown);
        if columns.is_empty() {
            encode::empty(&mut self.core.out, backend::NO_DATA);
        } else {
            let cols: Vec<(&str, u32, i16, i16)> = columns
                .iter()
                .map(|(n, t, l)| (n.as_str(), *t, *l, 0))
                .collect();
            encode::row_description_formats(&mut self.core.out, &cols);
        }
        Ok(())
    }

    /// Parameter types and columns (name, type, length) of `sql`, as a server describes them.
    async fn describe_on_server(
        &self,
        sql: &str,
    ) -> Result<(Vec<u32>, Vec<(String, u32, i16)>), BytesMut> {
        let failed = |e: crate::pool::PoolError| failure(e.sqlstate(), &e.to_string());
        let mut conn = self
            .pool
            .checkout(0, Want::Any, true)
            .await
            .map_err(failed)?;
        let mut q = BytesMut::new();
        extended::encode_parse(&mut q, "", &parse_rest(sql));
        extended::encode_target(&mut q, frontend::DESCRIBE, b'S', "");
        encode::empty(&mut q, frontend::SYNC);
        let answer = crate::pool::exec::exec(&mut conn, &q)
            .await
            .map_err(failed)?;
        if let Some(e) = answer.error {
            return Err(BytesMut::from(&e[..]));
        }
        let types = answer
            .param_types
            .as_ref()
            .and_then(|m| m.get(7..))
            .map(|b| {
                b.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .unwrap_or_default();
        let fields = answer
            .row_description
            .as_deref()
            .and_then(crate::protocol::rows::fields)
            .map(|f| f.iter().map(|f| (f.name.clone(), f.oid, -1)).collect())
            .unwrap_or_default();
        Ok((types, fields))
    }

    /// The answer of the bound portal (run once: a Describe of the portal runs it before its Execute).
    async fn run_pgml_portal(&mut self) -> BytesMut {
        let Some(portal) = self.pgml.as_mut().and_then(|p| p.portal.as_mut()) else {
            return failure(sqlstate::INVALID_CURSOR_NAME, "portal \"\" does not exist");
        };
        if let Some(a) = portal.answer.take() {
            return a;
        }
        let sql = portal.sql.clone();
        match self.serve_pgml(&sql).await {
            Ok(Some(answer)) => answer,
            Ok(None) => failure(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "Ocelot could not serve this pgml statement with its parameters",
            ),
            Err(e) => failure(sqlstate::CONNECTION_FAILURE, &e.to_string()),
        }
    }
}

/// A Parse body after the statement name: the query, then no parameter types.
fn parse_rest(sql: &str) -> Vec<u8> {
    let mut rest = Vec::with_capacity(sql.len() + 3);
    rest.extend_from_slice(sql.as_bytes());
    rest.push(0);
    rest.extend_from_slice(&0i16.to_be_bytes());
    rest
}

/// An ErrorResponse.
fn failure(code: &str, msg: &str) -> BytesMut {
    let mut e = BytesMut::new();
    encode::error_response(&mut e, Severity::Error, code, msg, None);
    e
}
