//! Errors on the client side and how each is shown to the client: what it sees (severity, SQLSTATE, message) is
//! rendered here, separately from what is logged.

use thiserror::Error;

use crate::net::NetError;
use crate::pool::PoolError;
use crate::protocol::auth::AuthError;
use crate::protocol::codes::sqlstate;
use crate::protocol::encode::Severity;
use crate::protocol::ProtocolError;

/// Why a client connection ended or a request failed.
#[derive(Debug, Error)]
pub(crate) enum ClientError {
    /// The client went away; nothing to tell it.
    #[error("client closed the connection")]
    Closed,
    #[error("client I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.0")]
    UnsupportedProtocol(u16, u16),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    #[error("authentication of user \"{user}\" failed: {source}")]
    AuthProtocol {
        user: String,
        #[source]
        source: AuthError,
    },
    #[error("canceling authentication due to timeout")]
    LoginTimeout,
    #[error("TLS is required: connect with sslmode=require or stronger")]
    TlsRequired,
    #[error("the connection pooler is shutting down")]
    ShuttingDown,
    #[error("terminating connection due to administrator command")]
    AdminShutdown,
    #[error("terminating connection due to idle-session timeout (client_idle_timeout)")]
    IdleTimeout,
    #[error("terminating connection due to idle-in-transaction timeout (idle_client_in_transaction_timeout)")]
    IdleInTransactionTimeout,
    #[error("checkout failure limit reached ({0} / {0})")]
    CheckoutFailureLimit(u64),
    #[error("sorry, too many clients already (max_client_conn)")]
    TooManyClients,
    #[error("too many failed authentication attempts from this address; try again later")]
    AuthThrottled,
    #[error("{0}")]
    Pool(#[from] PoolError),
    /// The auth query itself failed (wrong `auth_query_user`, a query that does not run): PgCat's words.
    #[error("Error trying to obtain password from auth_query: {0}")]
    AuthQueryFailed(crate::pool::PoolError),
    #[error("server connection lost: {0}")]
    ServerLost(String),
}

impl From<NetError> for ClientError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Closed => ClientError::Closed,
            NetError::Io(e) => ClientError::Io(e),
            NetError::Protocol(p) => ClientError::Protocol(p),
        }
    }
}

impl ClientError {
    /// The SQLSTATE the client sees, or `None` when the client cannot be told anything.
    pub(crate) fn sqlstate(&self) -> Option<&str> {
        Some(match self {
            ClientError::Closed | ClientError::Io(_) => return None,
            ClientError::Protocol(_) | ClientError::LoginTimeout => sqlstate::PROTOCOL_VIOLATION,
            ClientError::UnsupportedProtocol(..) => sqlstate::FEATURE_NOT_SUPPORTED,
            ClientError::NoUser | ClientError::UnknownRole(_) | ClientError::TlsRequired => {
                sqlstate::INVALID_AUTHORIZATION
            }
            ClientError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            ClientError::WrongPassword(_) => sqlstate::INVALID_PASSWORD,
            ClientError::AuthProtocol { source, .. } => match source {
                AuthError::WrongPassword => sqlstate::INVALID_PASSWORD,
                _ => sqlstate::PROTOCOL_VIOLATION,
            },
            ClientError::ShuttingDown => sqlstate::CANNOT_CONNECT_NOW,
            ClientError::AdminShutdown => sqlstate::ADMIN_SHUTDOWN,
            ClientError::IdleTimeout => "57P05",
            ClientError::IdleInTransactionTimeout => "25P03",
            ClientError::TooManyClients => sqlstate::TOO_MANY_CONNECTIONS,
            ClientError::CheckoutFailureLimit(_) => sqlstate::SYSTEM_ERROR,
            ClientError::AuthThrottled => sqlstate::INVALID_AUTHORIZATION,
            ClientError::Pool(p) => p.sqlstate(),
            ClientError::AuthQueryFailed(_) => sqlstate::INVALID_AUTHORIZATION,
            ClientError::ServerLost(_) => sqlstate::CONNECTION_FAILURE,
        })
    }

    /// A failed password check (counted for login throttling).
    pub(crate) fn is_wrong_password(&self) -> bool {
        matches!(
            self,
            ClientError::WrongPassword(_)
                | ClientError::AuthProtocol {
                    source: AuthError::WrongPassword,
                    ..
                }
        )
    }

    /// Errors that end the connection are FATAL.
    pub(crate) fn severity(&self) -> Severity {
        Severity::Fatal
    }

    /// Whether this is worth a warning in the log (as opposed to a client's own mistake or departure).
    pub(crate) fn is_notable(&self) -> bool {
        matches!(self, ClientError::Pool(_) | ClientError::ServerLost(_))
    }
}
