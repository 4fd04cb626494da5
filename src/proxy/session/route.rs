//! Where a session's next transaction runs: the read/write route of the request waiting in the client buffer
//! (classified once per distinct query text and cached per session), PgCat's session overrides (`SET SERVER ROLE`,
//! `SET PRIMARY READS`), and transparent failover of a read whose replica died before answering.

use tokio::io::AsyncWriteExt;

use super::Session;
use crate::config::{DefaultRole, DefaultShard, ServerRole};
use crate::database::balance::Want;
use crate::database::fanout::Merge;
use crate::pool::PoolError;
use crate::protocol::codes::frontend;
use crate::protocol::extended;
use crate::proxy::error::ClientError;
use crate::router::classify::Route;
use crate::router::commands::RoleChoice;
use crate::router::fanout::{self, Plan};
use crate::router::route::{parse, Analyzer, Rules};
use crate::router::shard_key::KeyValue;
use crate::router::sharding::Shards;
use sqlparser::ast::Statement;

/// Where a request runs.
pub(super) enum Target {
    One(usize),
    /// Nothing in the request or the session names a shard: the default shard, or the transaction's.
    Default,
    /// Several shards (every one for a keyless read of the sharded table), results merged.
    All(Merge, Vec<usize>),
    /// A write on several shards: each runs its own statement (the rows of a split INSERT, or the same UPDATE or
    /// DELETE), counts summed.
    Write(Vec<WritePart>),
    /// A pipelined extended-protocol request (several Bind/Execute before one Sync) whose statements belong to
    /// different shards: the shard of each Bind, in order.
    Batch(Vec<usize>),
    /// COPY FROM STDIN into the sharded table, rows split by key; true for a simple Query.
    CopyIn(crate::router::copy::CopyPlan, bool),
}

/// One shard's statement of a write on several shards: (shard, SQL, the Bind parameters it uses, renumbered from
/// $1, or `None` for all of them).
pub(super) type WritePart = (usize, String, Option<Vec<usize>>);

/// Bind parameter values (value, binary format), owned.
type OwnedParams = Vec<(Option<Vec<u8>>, bool)>;

/// The request waiting in the client buffer, as routing sees it.
struct Pending {
    /// The text of its first Query or Parse (or the known statement of its Bind).
    sql: Option<Vec<u8>>,
    /// The values of its first Bind (value, binary format).
    params: OwnedParams,
    /// A simple Query.
    simple: bool,
    /// It has a Bind (so it executes, not only prepares).
    bound: bool,
}

/// What happens to a request inside a transaction of a sharded pool.
pub(super) enum Cross {
    Forward,
    /// The current shard is still answering: decide once it has.
    Wait,
    /// Answered by Ocelot.
    Handled,
    /// Replaced by the Query in `scratch`.
    Refused,
    /// The client went away while Ocelot was answering.
    ClientLeft,
    /// The held server only prepared statements since its last Sync and this Bind belongs elsewhere: end the
    /// server's sequence with a Sync of Ocelot's own and route the Bind again.
    Resync,
}

/// Largest extended-protocol request Ocelot holds back waiting for its Sync before routing it anyway.
const MAX_HELD_REQUEST: usize = 64 * 1024 * 1024;

/// Whether the extended-protocol request at the start of `buf` is complete (up to a Sync or Flush), or too large
/// to hold back.
pub(super) fn request_complete(buf: &[u8]) -> bool {
    buf.len() > MAX_HELD_REQUEST
        || whole_messages(buf, 0)
            .any(|(code, _)| matches!(code, frontend::SYNC | frontend::FLUSH | frontend::QUERY))
}

/// "0, 2".
pub(super) fn shard_list(shards: impl IntoIterator<Item = usize>) -> String {
    shards
        .into_iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Session {
    /// The shard used when nothing in the request or the session names one.
    pub(super) fn default_shard(&self) -> usize {
        match self.pool.default_shard {
            DefaultShard::Shard(n) => n.min(self.pool.shards.len().saturating_sub(1)),
            DefaultShard::Random => self.pool.random_shard(false),
            DefaultShard::RandomHealthy => self.pool.random_shard(true),
        }
    }

    /// The shard of the request at `cbuf[start..]`, PgCat's order: a comment, then `SET SHARD` / `SET SHARDING
    /// KEY`, then the automatic sharding key; [`Target::Default`] when nothing names one (`default_shard` then).
    pub(super) fn shard_at(&mut self, start: usize) -> Result<Target, PoolError> {
        if self.pool.shards.len() <= 1 {
            return Ok(Target::One(0));
        }
        let sharder = &self.pool.sharder;
        let Pending {
            sql,
            params,
            simple,
            bound,
        } = self.pending_sql_and_params_at(start);
        if let Some(sql) = &sql {
            if let Some(n) = sharder.from_comment(sql) {
                return Ok(Target::One(n));
            }
        }
        match self.shard_override {
            Some(Some(n)) => return Ok(Target::One(n)),
            Some(None) => {
                use rand::Rng;
                return Ok(Target::One(
                    rand::rng().random_range(0..self.pool.shards.len()),
                ));
            }
            None => {}
        }
        if !simple && sharder.has_key() {
            if let Some(target) = self.batch_target(start)? {
                return Ok(target);
            }
        }
        if let (Some(sql), true) = (&sql, self.pool.sharder.has_key()) {
            let text = String::from_utf8_lossy(sql);
            let params: Vec<(Option<&[u8]>, bool)> =
                params.iter().map(|(v, b)| (v.as_deref(), *b)).collect();
            let keys = self.keys_of(&text);
            let sharder = &self.pool.sharder;
            match sharder.shards_of(keys, &params) {
                Shards::One(n) => return Ok(Target::One(n)),
                Shards::Many(set) => return self.several_key_shards(&text, set, &params),
                // A Parse without its Bind only prepares: any shard will do.
                Shards::Unknown if !simple && !bound => {}
                Shards::Unknown => {
                    if let Some(target) = self.keyless_target(&text, &params, simple)? {
                        return Ok(target);
                    }
                }
            }
        }
        Ok(Target::Default)
    }

    /// The target of a request whose keys fall on several shards (`set`): the same merges as a keyless read on
    /// those shards only, or a multi-row INSERT split by row.
    fn several_key_shards(
        &self,
        text: &str,
        set: std::collections::BTreeSet<usize>,
        params: &[(Option<&[u8]>, bool)],
    ) -> Result<Target, PoolError> {
        let sharder = &self.pool.sharder;
        if let Some(spec) = sharder.key() {
            // Fan-out plans rewrite the text: one parse for the plan and the split.
            let statements = parse(text).unwrap_or_default();
            let merge = match fanout::plan_parsed(&statements, spec) {
                Plan::Rows => Some(Merge::Rows),
                Plan::Grouped(g) => Some(Merge::Grouped(g)),
                Plan::Ordered(o) => Some(Merge::Ordered(o)),
                Plan::Write => {
                    return Ok(Target::Write(
                        set.into_iter()
                            .map(|s| (s, text.to_string(), None))
                            .collect(),
                    ))
                }
                _ => None,
            };
            if let Some(merge) = merge {
                return Ok(Target::All(merge, set.into_iter().collect()));
            }
            // A multi-row INSERT: each shard gets its own rows (and their parameters).
            let shard_of = |k: &KeyValue| match k {
                KeyValue::Literal(v) => sharder.shard_of_text(v),
                KeyValue::Param(i) => match params.get(*i) {
                    Some((Some(raw), binary)) => sharder.shard_of_param(raw, *binary),
                    _ => None,
                },
            };
            if let Some(parts) = fanout::split_insert_parsed(&statements, spec, shard_of) {
                return Ok(Target::Write(parts));
            }
        }
        Err(PoolError::CrossShard {
            pool: self.pool.database.clone(),
            shards: shard_list(set),
        })
    }

    /// The target of a request that names no shard: every shard, merged, when it reads (or writes) the sharded
    /// table; `None` when it does not touch it.
    fn keyless_target(
        &self,
        text: &str,
        params: &[(Option<&[u8]>, bool)],
        simple: bool,
    ) -> Result<Option<Target>, PoolError> {
        let sharder = &self.pool.sharder;
        if let Some(spec) = sharder.key() {
            let all: Vec<usize> = (0..self.pool.shards.len()).collect();
            let statements = parse(text).unwrap_or_default();
            let why = match fanout::plan_parsed(&statements, spec) {
                Plan::NotSharded => None,
                Plan::Rows => return Ok(Some(Target::All(Merge::Rows, all))),
                Plan::Grouped(g) => return Ok(Some(Target::All(Merge::Grouped(g), all))),
                Plan::Ordered(o) => {
                    // Centroid sharding: a nearest-neighbour query searches its nearest centroids'
                    // shards only.
                    let shards = knn_shards(sharder, &statements, spec, params).unwrap_or(all);
                    return Ok(Some(Target::All(Merge::Ordered(o), shards)));
                }
                Plan::Write => {
                    return Ok(Some(Target::Write(
                        all.into_iter()
                            .map(|s| (s, text.to_string(), None))
                            .collect(),
                    )))
                }
                Plan::CopyIn(p) => return Ok(Some(Target::CopyIn(p, simple))),
                Plan::Unsupported(why) => Some(why),
            };
            if let Some(why) = why {
                return Err(PoolError::Unmergeable {
                    pool: self.pool.database.clone(),
                    why: why.into(),
                });
            }
        }
        Ok(None)
    }

    /// The key values of a query text, parsed once per query shape.
    fn keys_of(&mut self, text: &str) -> Option<Vec<KeyValue>> {
        self.analyzer.analyze(text, &rules(&self.pool)).keys
    }

    /// For an extended-protocol request with several Binds before its Sync (a driver's batch), the shard of
    /// each: `None` when there are fewer than two Binds or no Bind names a shard; one shard when they agree;
    /// otherwise a [`Target::Batch`]. Statements that do not touch the sharded table go with the Bind before
    /// them; a keyless one that does cannot be batched across shards.
    fn batch_target(&mut self, start: usize) -> Result<Option<Target>, PoolError> {
        let Some(binds) = self.pending_binds(start) else {
            return Ok(None);
        };
        if binds.len() < 2 {
            return Ok(None);
        }
        let mut shards: Vec<Option<usize>> = Vec::with_capacity(binds.len());
        for (text, params) in &binds {
            let keys = self.keys_of(text);
            let params: Vec<(Option<&[u8]>, bool)> =
                params.iter().map(|(v, b)| (v.as_deref(), *b)).collect();
            let sharder = &self.pool.sharder;
            match sharder.shards_of(keys, &params) {
                Shards::One(n) => shards.push(Some(n)),
                Shards::Many(set) => {
                    return Err(PoolError::CrossShard {
                        pool: self.pool.database.clone(),
                        shards: shard_list(set),
                    })
                }
                Shards::Unknown => match sharder.key().map(|spec| fanout::plan(text, spec)) {
                    None | Some(Plan::NotSharded) => shards.push(None),
                    Some(_) => {
                        return Err(PoolError::Unmergeable {
                            pool: self.pool.database.clone(),
                            why: "a statement without the sharding key in a pipelined batch".into(),
                        })
                    }
                },
            }
        }
        let Some(first) = shards.iter().flatten().next().copied() else {
            return Ok(None);
        };
        if shards.iter().flatten().all(|s| *s == first) {
            return Ok(Some(Target::One(first)));
        }
        let mut last = first;
        Ok(Some(Target::Batch(
            shards
                .into_iter()
                .map(|s| {
                    last = s.unwrap_or(last);
                    last
                })
                .collect(),
        )))
    }

    /// The text and parameters of each Bind waiting in `cbuf[start..]` up to the Sync; `None` when a Bind cannot
    /// be read or names a statement whose text is unknown.
    fn pending_binds(&self, start: usize) -> Option<Vec<(String, OwnedParams)>> {
        let mut binds: Vec<(String, OwnedParams)> = Vec::new();
        let mut parsed: Option<(String, String)> = None;
        for (code, body) in whole_messages(&self.cbuf, start) {
            match code {
                frontend::PARSE => {
                    if let Ok((name, rest)) = extended::parse(body) {
                        let sql = rest.split(|&b| b == 0).next().unwrap_or_default();
                        parsed = Some((name.to_owned(), String::from_utf8_lossy(sql).into_owned()));
                    }
                }
                frontend::BIND => {
                    let Ok((_, name, rest)) = extended::bind(body) else {
                        return None;
                    };
                    let text = match &parsed {
                        Some((n, sql)) if n == name => sql.clone(),
                        _ => self
                            .core
                            .stmts
                            .as_ref()
                            .and_then(|m| m.statement_text(name))
                            .map(|t| String::from_utf8_lossy(&t).into_owned())?,
                    };
                    let params = owned_params(rest);
                    binds.push((text, params));
                }
                frontend::SYNC | frontend::QUERY => break,
                _ => {}
            }
        }
        Some(binds)
    }

    /// The text of the first Query or Parse (or known statement of a Bind) waiting in `cbuf[start..]`, and the
    /// values of the first Bind after it (value, binary format). The third value is whether the request is a
    /// simple Query.
    fn pending_sql_and_params_at(&self, start: usize) -> Pending {
        let mut sql = None;
        for (code, body) in whole_messages(&self.cbuf, start) {
            match code {
                frontend::QUERY if sql.is_none() => {
                    return Pending {
                        sql: Some(body.strip_suffix(&[0]).unwrap_or(body).to_vec()),
                        params: Vec::new(),
                        simple: true,
                        bound: false,
                    }
                }
                frontend::PARSE if sql.is_none() => {
                    sql = extended::parse(body).ok().map(|(_, rest)| {
                        rest.split(|&b| b == 0).next().unwrap_or_default().to_vec()
                    });
                }
                frontend::BIND => {
                    let Ok((_, name, rest)) = extended::bind(body) else {
                        break;
                    };
                    if sql.is_none() {
                        sql = self
                            .core
                            .stmts
                            .as_ref()
                            .and_then(|m| m.statement_text(name));
                    }
                    let params = owned_params(rest);
                    return Pending {
                        sql,
                        params,
                        simple: false,
                        bound: true,
                    };
                }
                frontend::SYNC => break,
                _ => {}
            }
        }
        Pending {
            sql,
            params: Vec::new(),
            simple: false,
            bound: false,
        }
    }

    /// Which servers may run the request now waiting at the start of `cbuf`.
    pub(super) fn want(&mut self) -> Want {
        if self.pool.inference_mode == crate::config::InferenceMode::Passthrough {
            if let Some(w) = self.passthrough_want() {
                return w;
            }
        }
        if let Some(role) = self.role_override {
            return match role {
                RoleChoice::Primary => Want::Primary,
                RoleChoice::Replica => Want::ReplicaOnly,
                RoleChoice::Any => Want::Any,
            };
        }
        if self.pool.routing.split {
            return match self.pending_route() {
                Route::Read => Want::Replica,
                Route::Write => Want::Primary,
            };
        }
        match self.pool.default_role {
            DefaultRole::Any => Want::Any,
            DefaultRole::Primary => Want::Primary,
            DefaultRole::Replica => Want::ReplicaOnly,
        }
    }

    pub(super) fn primary_reads(&self) -> bool {
        self.primary_reads_override
            .unwrap_or(self.pool.routing.primary_reads_enabled)
    }

    /// The route of every whole Query and Parse (and Bind of a known statement) up to the first Sync in the
    /// client buffer: a read only when all of them read.
    fn pending_route(&mut self) -> Route {
        let mut seen = false;
        for (code, body) in whole_messages(&self.cbuf, 0) {
            let sql: Option<&[u8]> = match code {
                frontend::QUERY => Some(body.strip_suffix(&[0]).unwrap_or(body)),
                frontend::PARSE => extended::parse(body)
                    .ok()
                    .map(|(_, rest)| rest.split(|&b| b == 0).next().unwrap_or_default()),
                _ => None,
            };
            if let Some(sql) = sql {
                seen = true;
                let r = route_of(&mut self.analyzer, sql, &self.pool);
                if r == Route::Write {
                    return Route::Write;
                }
            } else if code == frontend::BIND {
                let stmt = extended::bind(body).ok().and_then(|(_, name, _)| {
                    self.core
                        .stmts
                        .as_ref()
                        .and_then(|m| m.statement_text(name))
                });
                match stmt {
                    Some(text) => {
                        seen = true;
                        if route_of(&mut self.analyzer, &text, &self.pool) == Route::Write {
                            return Route::Write;
                        }
                    }
                    // A named statement Ocelot does not know (session mode, or caching off): be safe.
                    None if extended::bind(body).is_ok_and(|(_, n, _)| !n.is_empty()) => {
                        return Route::Write
                    }
                    None => {}
                }
            }
            if code == frontend::SYNC || code == frontend::QUERY {
                break;
            }
        }
        // Nothing to classify (Describe, Execute, Sync only): the primary is always right.
        if seen {
            Route::Read
        } else {
            Route::Write
        }
    }

    /// After the server of a read died before the client heard anything: bans it, gets another server for the
    /// same request and sends the request again. Returns false when failover does not apply.
    pub(super) async fn failover(&mut self, reason: &str) -> Result<bool, ClientError> {
        let (Some(replay), Some(want)) = (self.core.replay.take(), self.attached_want) else {
            return Ok(false);
        };
        if let Some(mut dead) = self.server.take() {
            dead.broken = true;
            if dead.address.role != ServerRole::Primary {
                dead.pool().ban(
                    self.pool.routing.ban_time,
                    &format!("broke mid-flight: {reason}"),
                );
            }
            tracing::warn!(server = %dead.address, "read failed over to another server: {reason}");
            self.slot.detach();
        }
        let shard = self.attached_shard;
        if let Err(e) = self.attach(want, shard).await {
            return Err(ClientError::ServerLost(format!(
                "{reason}; no other server: {e}"
            )));
        }
        for code in message_codes(&replay) {
            self.core.tracker.client_message(code);
        }
        let Some(server) = self.server.as_mut() else {
            return Ok(false);
        };
        if let Err(e) = server.stream.write_all(&replay).await {
            return Err(self.server_lost(&e.to_string()));
        }
        self.core.replay = Some(replay);
        Ok(true)
    }
}

fn route_of(analyzer: &mut Analyzer, sql: &[u8], pool: &crate::database::UserPool) -> Route {
    use std::sync::atomic::Ordering::Relaxed;
    let Ok(text) = std::str::from_utf8(sql) else {
        return Route::Write;
    };
    let a = analyzer.analyze(text, &rules(pool));
    if a.hit {
        pool.route_hits.fetch_add(1, Relaxed);
    } else {
        pool.route_misses.fetch_add(1, Relaxed);
    }
    a.route
}

/// The pool's settings that routing reads.
fn rules(pool: &crate::database::UserPool) -> Rules<'_> {
    Rules {
        volatile: &pool.routing.volatile_functions,
        max_length: pool.routing.query_parser_max_length,
        key: pool.sharder.key(),
    }
}

/// The shards a nearest-neighbour query on a centroid-sharded pool searches (`None`: all of them).
fn knn_shards(
    sharder: &crate::router::sharding::Sharder,
    statements: &[Statement],
    spec: &crate::router::shard_key::KeySpec,
    params: &[(Option<&[u8]>, bool)],
) -> Option<Vec<usize>> {
    use crate::router::vectors::{decode_binary_array, knn_target_parsed, parse_vector};
    let router = sharder.vectors.as_ref()?;
    let v = match knn_target_parsed(statements, spec)? {
        KeyValue::Literal(s) => parse_vector(&s)?,
        KeyValue::Param(i) => match params.get(i)? {
            (Some(raw), true) => decode_binary_array(raw)?,
            (Some(raw), false) => parse_vector(std::str::from_utf8(raw).ok()?)?,
            _ => return None,
        },
    };
    Some(router.probe(&v)?.into_iter().collect())
}

/// The whole messages in `buf` from `start`, as (type, body), stopping at the first incomplete one.
pub(super) fn whole_messages(buf: &[u8], start: usize) -> impl Iterator<Item = (u8, &[u8])> {
    crate::protocol::frame::messages(buf.get(start..).unwrap_or_default())
}

/// The type bytes of the whole messages in `buf`.
fn message_codes(buf: &[u8]) -> Vec<u8> {
    whole_messages(buf, 0).map(|(code, _)| code).collect()
}

/// A Bind's parameter values (value, binary format), copied out of the client's buffer.
fn owned_params(rest: &[u8]) -> OwnedParams {
    extended::bind_params_formats(rest)
        .map(|v| {
            v.into_iter()
                .map(|(p, b)| (p.map(<[u8]>::to_vec), b))
                .collect()
        })
        .unwrap_or_default()
}
