//! Errors of the server side: connecting, authenticating, checking out and running internal queries. Each says
//! whether retrying on another connection could help.

use thiserror::Error;

use ocelot_protocol::decode::ErrorFields;
use ocelot_protocol::ProtocolError;

/// A failure on the server side of Ocelot.
#[derive(Debug, Error)]
pub enum PoolError {
    #[error("timed out after {waited_ms} ms waiting for a server connection in pool \"{pool}\" (user \"{user}\", server {server})")]
    CheckoutTimeout {
        pool: String,
        user: String,
        server: String,
        waited_ms: u64,
    },
    #[error("cannot connect to server {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to server {server} took longer than {ms} ms")]
    ConnectTimeout { server: String, ms: u64 },
    #[error("server {server} refused the login: {} ({})", .fields.message, .fields.code)]
    LoginRejected {
        server: String,
        fields: Box<ErrorFields>,
    },
    #[error("server {server} asks for {method} authentication, which Ocelot cannot answer with the configured credentials")]
    Auth { server: String, method: String },
    #[error("server {server} sent an invalid message: {source}")]
    Protocol {
        server: String,
        #[source]
        source: ProtocolError,
    },
    #[error("connection to server {server} was lost: {reason}")]
    Lost { server: String, reason: String },
    #[error("server {server} failed Ocelot's query: {} ({})", .fields.message, .fields.code)]
    Query {
        server: String,
        fields: Box<ErrorFields>,
    },
    #[error("pool for server {server} is closed")]
    Closed { server: String },
    #[error("server {server} failed its health check: {reason}")]
    HealthCheck { server: String, reason: String },
    #[error("this query needs shards {shards} of pool \"{pool}\": queries across shards are not supported yet; add the sharding key, a /* shard_id: n */ comment, or SET SHARD TO 'n'")]
    CrossShard { pool: String, shards: String },
    #[error("this write needs shards {shards} of pool \"{pool}\": writes across shards need two-phase commit, which is off for this pool (set two_phase_commit = true, and max_prepared_transactions on the servers), or target one shard")]
    NeedsTwoPhase { pool: String, shards: String },
    #[error("this query uses the sharded table of pool \"{pool}\" without a sharding key, and Ocelot cannot run it across shards ({why}); add the sharding key to the WHERE clause, a /* shard_id: n */ comment, or SET SHARD TO 'n'")]
    Unmergeable { pool: String, why: String },
    #[error("no server available for {what} in pool \"{pool}\" shard {shard}: {reason}")]
    AllServersDown {
        pool: String,
        shard: usize,
        what: String,
        reason: String,
    },
}

impl PoolError {
    /// Whether another attempt (on a new connection) might succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PoolError::Connect { .. }
                | PoolError::ConnectTimeout { .. }
                | PoolError::Lost { .. }
                | PoolError::HealthCheck { .. }
                | PoolError::LoginRejected { .. }
        )
    }

    /// Whether the server is likely down for a moment only (restarting, failing over, or its connection was
    /// cut): not a refused password, a bad configuration or a timeout already spent.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            PoolError::Connect { .. } | PoolError::Lost { .. } | PoolError::HealthCheck { .. } => {
                true
            }
            // admin_shutdown, crash_shutdown, cannot_connect_now ("the database system is starting up").
            PoolError::LoginRejected { fields, .. } => {
                matches!(fields.code.as_str(), "57P01" | "57P02" | "57P03")
            }
            _ => false,
        }
    }

    /// The SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> &str {
        use ocelot_protocol::codes::sqlstate;
        match self {
            // PgCat's code for "could not get connection from the pool" (its specs rescue PG::SystemError).
            PoolError::CheckoutTimeout { .. } => sqlstate::SYSTEM_ERROR,
            PoolError::LoginRejected { fields, .. } | PoolError::Query { fields, .. } => {
                &fields.code
            }
            PoolError::Closed { .. } => sqlstate::CANNOT_CONNECT_NOW,
            PoolError::CrossShard { .. }
            | PoolError::NeedsTwoPhase { .. }
            | PoolError::Unmergeable { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }
}
