//! The `[general]` table: listener, timeouts, TLS, admin credentials and Ocelot's own limits. Field names, types
//! and defaults follow PgCat's `General` struct, except the listen port (6432, as PgCat documents it).

use serde::Deserialize;

fn d_host() -> String {
    "0.0.0.0".into()
}
fn d_port() -> u16 {
    6432
}
fn d_prometheus_port() -> i16 {
    9930
}
fn d_connect_timeout() -> u64 {
    1000
}
fn d_idle_timeout() -> u64 {
    600_000
}
fn d_keepalive() -> u64 {
    5
}
fn d_keepalive_count() -> u32 {
    5
}
fn d_tcp_user_timeout() -> u64 {
    10_000
}
fn d_dns_ttl() -> u64 {
    30
}
fn d_shutdown_timeout() -> u64 {
    60_000
}
fn d_healthcheck_timeout() -> u64 {
    1000
}
fn d_healthcheck_delay() -> u64 {
    30_000
}
fn d_ban_time() -> i64 {
    60
}
fn d_server_lifetime() -> u64 {
    3_600_000
}
fn d_true() -> bool {
    true
}
fn d_worker_threads() -> usize {
    4
}
fn d_lag_interval() -> u64 {
    1000
}
fn d_client_login_timeout() -> u64 {
    60_000
}
fn d_max_client_conn() -> usize {
    10_000
}

fn d_max_auth_failures() -> u32 {
    10
}

fn d_auth_failure_block() -> u64 {
    60_000
}

fn d_max_message_size() -> u32 {
    // PostgreSQL's own limit for a single message (PQ_LARGE_MESSAGE_LIMIT).
    0x3fff_ffff
}

/// A replica lag limit: WAL bytes behind the primary, or time behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    Bytes(u64),
    Millis(u64),
}

impl std::str::FromStr for LagLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid lag \"{s}\": expected a number with a unit such as 16MB or 5s")
        })?;
        Ok(match unit.trim() {
            "" | "B" => LagLimit::Bytes(n),
            "kB" | "KB" => LagLimit::Bytes(n << 10),
            "MB" => LagLimit::Bytes(n << 20),
            "GB" => LagLimit::Bytes(n << 30),
            "ms" => LagLimit::Millis(n),
            "s" => LagLimit::Millis(n * 1000),
            "min" => LagLimit::Millis(n * 60_000),
            u => {
                return Err(format!(
                    "invalid lag unit \"{u}\": use B, kB, MB, GB, ms, s or min"
                ))
            }
        })
    }
}

impl serde::Serialize for LagLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LagLimit::Bytes(n) => s.serialize_str(&format!("{n}B")),
            LagLimit::Millis(n) => s.serialize_str(&format!("{n}ms")),
        }
    }
}

impl<'de> Deserialize<'de> for LagLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(LagLimit::Bytes(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// How Ocelot authenticates the admin user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdminAuthType {
    #[default]
    Md5,
    Trust,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

/// `[general]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct General {
    #[serde(default = "d_host")]
    pub host: String,
    #[serde(default = "d_port")]
    pub port: u16,
    #[serde(default)]
    pub enable_prometheus_exporter: Option<bool>,
    #[serde(default = "d_prometheus_port")]
    pub prometheus_exporter_port: i16,
    /// Milliseconds a client waits for a server connection (and a server connect may take).
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: u64,
    #[serde(default = "d_idle_timeout")]
    pub idle_timeout: u64,
    #[serde(default = "d_keepalive")]
    pub(crate) tcp_keepalives_idle: u64,
    #[serde(default = "d_keepalive_count")]
    pub(crate) tcp_keepalives_count: u32,
    #[serde(default = "d_keepalive")]
    pub(crate) tcp_keepalives_interval: u64,
    #[serde(default = "d_tcp_user_timeout")]
    pub(crate) tcp_user_timeout: u64,
    #[serde(default)]
    pub log_client_connections: bool,
    #[serde(default)]
    pub log_client_disconnections: bool,
    #[serde(default)]
    pub(crate) dns_cache_enabled: bool,
    #[serde(default = "d_dns_ttl")]
    pub(crate) dns_max_ttl: u64,
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout: u64,
    #[serde(default = "d_healthcheck_timeout")]
    pub healthcheck_timeout: u64,
    #[serde(default = "d_healthcheck_delay")]
    pub healthcheck_delay: u64,
    #[serde(default = "d_ban_time")]
    pub ban_time: i64,
    #[serde(default)]
    pub idle_client_in_transaction_timeout: u64,
    #[serde(default = "d_server_lifetime")]
    pub server_lifetime: u64,
    /// FIFO (true) or LIFO (false) reuse of idle server connections. PgCat's code defaults to true but its docs
    /// and PgBouncer default to LIFO, which keeps a few server backends hot (warm caches, fewer plans); measured
    /// here, FIFO costs 1-client latency because every transaction lands on a colder backend.
    #[serde(default)]
    pub server_round_robin: bool,
    #[serde(default = "d_worker_threads")]
    pub worker_threads: usize,
    #[serde(default)]
    pub autoreload: Option<u64>,
    #[serde(default)]
    pub tls_certificate: Option<String>,
    #[serde(default)]
    pub tls_private_key: Option<String>,
    /// Ocelot: refuse clients that connect over TCP without TLS (PgCat issue 633). Unix-socket clients are local
    /// and allowed.
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub server_tls: bool,
    #[serde(default)]
    pub verify_server_certificate: bool,
    /// Ocelot: a PEM file of the CA certificates servers are verified against (the system's roots otherwise).
    #[serde(default)]
    pub server_tls_ca_file: Option<String>,
    /// Ocelot: also listen on a Unix-domain socket in this directory, named `.s.PGSQL.<port>` as PostgreSQL names
    /// its own, so `psql -h <dir>` finds it (PgCat issue 365).
    #[serde(default)]
    pub unix_socket_dir: Option<String>,
    pub admin_username: String,
    pub admin_password: String,
    /// Ocelot: ask for the admin credentials (HTTP basic auth) on the dashboard pages even when the exporter
    /// listens on a loopback address; on any other address they are always asked for.
    #[serde(default)]
    pub dashboard_auth: bool,
    #[serde(default)]
    pub admin_auth_type: AdminAuthType,
    #[serde(default = "d_true")]
    pub(crate) validate_config: bool,
    #[serde(default)]
    pub auth_query: Option<String>,
    #[serde(default)]
    pub auth_query_user: Option<String>,
    #[serde(default)]
    pub auth_query_password: Option<String>,
    /// Ocelot: milliseconds a client may take from connecting to finishing authentication (PgBouncer's name).
    #[serde(default = "d_client_login_timeout")]
    pub client_login_timeout: u64,
    /// PgBouncer's: clients allowed at once; more are refused with 53300.
    #[serde(default = "d_max_client_conn")]
    pub max_client_conn: usize,
    /// PgBouncer's: a client holding no server and silent for this long is disconnected (57P05); 0 is off.
    #[serde(default)]
    pub client_idle_timeout: u64,
    /// Ocelot: failed logins from one address before its logins are refused for `auth_failure_block_ms` (0: off).
    #[serde(default = "d_max_auth_failures")]
    pub max_auth_failures: u32,
    #[serde(default = "d_auth_failure_block")]
    pub auth_failure_block_ms: u64,
    /// Ocelot: the largest message a client may send, in bytes; larger ones end the connection with 08P01.
    #[serde(default = "d_max_message_size")]
    pub max_message_size: u32,
    /// Ocelot: take a replica out of rotation while it lags the primary by more than this: a number of bytes
    /// (`16777216`, `"16MB"`) or a time (`"5s"`, `"500ms"`). Off when unset.
    #[serde(default)]
    pub ban_replica_lag: Option<LagLimit>,
    /// Ocelot: how often replica lag is measured, in milliseconds.
    #[serde(default = "d_lag_interval")]
    pub replica_lag_check_interval: u64,
    /// Obsolete PgCat keys that users still paste; accepted and ignored as PgCat does.
    #[serde(default)]
    pub(crate) prepared_statements: Option<bool>,
    #[serde(default)]
    pub(crate) prepared_statements_cache_size: Option<usize>,
}

impl General {
    /// The socket keepalives of `tcp_keepalives_*` and `tcp_user_timeout`, for client and server sockets.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive {
            idle_s: self.tcp_keepalives_idle,
            interval_s: self.tcp_keepalives_interval,
            count: self.tcp_keepalives_count,
            user_timeout_ms: self.tcp_user_timeout,
        }
    }
}

/// Keepalive settings from `[general]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    pub idle_s: u64,
    pub interval_s: u64,
    pub count: u32,
    pub user_timeout_ms: u64,
}
