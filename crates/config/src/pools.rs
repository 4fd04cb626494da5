//! `[pools.<name>]` with its users and shards: field names, types and defaults follow PgCat's `Pool`, `User` and
//! `Shard` structs, with typed enums so a bad value is rejected at parse time with the key it belongs to.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::plugins::Plugins;

/// How long a client keeps a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Until the end of each transaction.
    #[default]
    Transaction,
    /// Until the client disconnects.
    Session,
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        })
    }
}

/// How a server is chosen among the candidates of one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
pub enum LoadBalancingMode {
    #[default]
    #[serde(rename = "random")]
    Random,
    /// Ocelot's addition to PgCat's two modes.
    #[serde(rename = "round_robin")]
    RoundRobin,
    #[serde(rename = "loc", alias = "LOC", alias = "least_outstanding_connections")]
    LeastOutstandingConnections,
}

/// Which servers a query may go to when nothing else decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRole {
    #[default]
    Any,
    Primary,
    Replica,
}

/// A server's role inside its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    Primary,
    Replica,
    Mirror,
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerRole::Primary => "primary",
            ServerRole::Replica => "replica",
            ServerRole::Mirror => "mirror",
        })
    }
}

/// The type of the sharding key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShardingKeyType {
    /// int2/int4/int8 keys, hashed as bigint (PgCat's only kind).
    #[default]
    Bigint,
    /// text/varchar keys.
    Text,
    Uuid,
    /// A vector column (`real[]`, `float8[]`, pgvector's `vector`): each row goes to the shard of its nearest
    /// centroid (`[pools.<name>.vector_sharding]`).
    Vector,
}

/// How vectors are compared with centroids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VectorMetric {
    /// Euclidean distance (`pgml.distance_l2`, `<->`).
    #[default]
    L2,
    /// Cosine distance (`pgml.cosine_similarity`, `<=>`).
    Cosine,
    /// Negative inner product (`pgml.dot_product`, `<#>`).
    Inner,
}

/// `[pools.<name>.vector_sharding]` (Ocelot): centroid sharding of the `automatic_sharding_key` vector column.
/// Centroid `i` belongs to shard `i % shards`. Exactly one source of centroids.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct VectorSharding {
    /// The centroids themselves.
    #[serde(default)]
    pub centroids: Option<Vec<Vec<f32>>>,
    /// A JSON file holding an array of centroids.
    #[serde(default)]
    pub centroids_file: Option<String>,
    /// A `pgml.train` project whose deployed model is kmeans: its cluster centers.
    #[serde(default)]
    pub centroids_model: Option<String>,
    /// How many nearest centroids' shards a nearest-neighbour query searches.
    #[serde(default = "d_probes")]
    pub probes: usize,
    #[serde(default)]
    pub metric: VectorMetric,
}

fn d_probes() -> usize {
    1
}

impl VectorSharding {
    /// Reads the centroids a config gives inline or in a file; `Ok(None)` when they come from a model.
    pub fn read_centroids(&self) -> Result<Option<Vec<Vec<f32>>>, String> {
        if let Some(c) = &self.centroids {
            return Ok(Some(c.clone()));
        }
        if let Some(path) = &self.centroids_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let c: Vec<Vec<f32>> = serde_json::from_str(&text)
                .map_err(|e| format!("{path}: expected a JSON array of arrays of numbers: {e}"))?;
            return Ok(Some(c));
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShardingFunction {
    #[default]
    PgBigintHash,
    Sha1,
}

/// How a client proves its identity to Ocelot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    #[default]
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Trust,
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Trust => "trust",
        })
    }
}

/// The shard used when a query names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultShard {
    Shard(usize),
    Random,
    RandomHealthy,
}

impl Default for DefaultShard {
    fn default() -> Self {
        DefaultShard::Shard(0)
    }
}

impl FromStr for DefaultShard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(DefaultShard::Random),
            "random_healthy" => Ok(DefaultShard::RandomHealthy),
            _ => s
                .strip_prefix("shard_")
                .and_then(|n| n.parse().ok())
                .map(DefaultShard::Shard)
                .ok_or_else(|| {
                    format!("invalid value \"{s}\": expected shard_<n>, random or random_healthy")
                }),
        }
    }
}

impl<'de> Deserialize<'de> for DefaultShard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn d_regex_limit() -> Option<usize> {
    Some(1000)
}
fn d_true() -> bool {
    true
}
fn d_db_activity_init_delay() -> u64 {
    100
}
fn d_db_activity_ttl() -> u64 {
    900
}
fn d_table_mutation_ttl() -> u64 {
    50
}
fn d_prepared_cache() -> usize {
    500
}
fn d_volatile() -> Vec<String> {
    [
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "pg_current_xact_id",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_try_advisory_lock",
        "pg_try_advisory_xact_lock",
        "pg_advisory_lock_shared",
        "pg_notify",
        "set_config",
        "lo_create",
        "lo_import",
        "lo_unlink",
        "pg_switch_wal",
    ]
    .map(String::from)
    .to_vec()
}

fn d_auth_query_pool_size() -> u32 {
    10
}

/// `[pools.<name>]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pool {
    #[serde(default)]
    pub(crate) pool_mode: PoolMode,
    #[serde(default)]
    pub load_balancing_mode: LoadBalancingMode,
    #[serde(default)]
    pub default_role: DefaultRole,
    #[serde(default)]
    pub query_parser_enabled: bool,
    #[serde(default)]
    pub query_parser_max_length: Option<usize>,
    #[serde(default)]
    pub query_parser_read_write_splitting: bool,
    #[serde(default)]
    pub primary_reads_enabled: bool,
    #[serde(default)]
    pub connect_timeout: Option<u64>,
    #[serde(default)]
    pub(crate) idle_timeout: Option<u64>,
    #[serde(default)]
    pub(crate) server_lifetime: Option<u64>,
    #[serde(default)]
    pub(crate) checkout_failure_limit: Option<u64>,
    #[serde(default)]
    pub sharding_function: ShardingFunction,
    #[serde(default)]
    pub automatic_sharding_key: Option<String>,
    /// Ocelot: writes that touch several shards (in one statement or one transaction) commit with two-phase
    /// commit; when off they are refused. The shards need `max_prepared_transactions` > 0.
    #[serde(default)]
    pub two_phase_commit: bool,
    /// Ocelot: the SQL type of the sharding key, which decides PostgreSQL's partition hash for it.
    #[serde(default)]
    pub sharding_key_type: ShardingKeyType,
    /// Ocelot: centroid sharding, with `sharding_key_type = "vector"`.
    #[serde(default)]
    pub vector_sharding: Option<VectorSharding>,
    #[serde(default)]
    pub sharding_key_regex: Option<String>,
    #[serde(default)]
    pub shard_id_regex: Option<String>,
    #[serde(default = "d_regex_limit")]
    pub regex_search_limit: Option<usize>,
    #[serde(default, alias = "no_shard_specified_behavior")]
    pub default_shard: DefaultShard,
    #[serde(default)]
    pub auth_query: Option<String>,
    #[serde(default)]
    pub auth_query_user: Option<String>,
    #[serde(default)]
    pub auth_query_password: Option<String>,
    /// Ocelot: `pool_size` of users who are not listed in the config and log in through `auth_query`.
    #[serde(default = "d_auth_query_pool_size")]
    pub auth_query_pool_size: u32,
    #[serde(default = "d_true")]
    pub cleanup_server_connections: bool,
    #[serde(default)]
    pub log_client_parameter_status_changes: bool,
    /// Ocelot defaults this to 500 (PgCat: 0); 0 turns protocol-level prepared statement handling off.
    #[serde(default = "d_prepared_cache")]
    pub prepared_statements_cache_size: usize,
    #[serde(default)]
    pub db_activity_based_routing: bool,
    #[serde(
        default = "d_db_activity_init_delay",
        alias = "db_activity_based_ms_init_delay"
    )]
    pub db_activity_init_delay: u64,
    #[serde(default = "d_db_activity_ttl")]
    pub db_activity_ttl: u64,
    #[serde(default = "d_table_mutation_ttl")]
    pub table_mutation_cache_ms_ttl: u64,
    /// Ocelot: functions whose calls make a SELECT a write, so it goes to the primary.
    #[serde(default = "d_volatile")]
    pub volatile_functions: Vec<String>,
    #[serde(default)]
    pub plugins: Option<Plugins>,
    pub shards: BTreeMap<String, Shard>,
    pub users: BTreeMap<String, User>,
}

/// `[pools.<name>.users.<idx>]`.
#[derive(Clone, Deserialize)]
pub struct User {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth_type: AuthType,
    #[serde(default)]
    pub server_username: Option<String>,
    #[serde(default)]
    pub server_password: Option<String>,
    pub pool_size: u32,
    #[serde(default)]
    pub min_pool_size: Option<u32>,
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    #[serde(default)]
    pub server_lifetime: Option<u64>,
    #[serde(default)]
    pub statement_timeout: u64,
    #[serde(default)]
    pub connect_timeout: Option<u64>,
    #[serde(default)]
    pub idle_timeout: Option<u64>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth_type", &self.auth_type)
            .field("server_username", &self.server_username)
            .field(
                "server_password",
                &self.server_password.as_ref().map(|_| "<redacted>"),
            )
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("pool_mode", &self.pool_mode)
            .finish_non_exhaustive()
    }
}

/// `[pools.<name>.shards.<n>]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Shard {
    pub database: String,
    pub servers: Vec<(String, u16, ServerRole)>,
    #[serde(default)]
    pub(crate) mirrors: Option<Vec<(String, u16, usize)>>,
}
