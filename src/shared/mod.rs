//! State every connection shares, below the client sessions and the admin console alike: the published config
//! and the pools built from it ([`Snapshot`], swapped whole by [`reload`]), the cancel registry ([`cancel`]),
//! shutdown coordination ([`shutdown`]), the registry of clients, and login throttling ([`auth_failures`]).

pub(crate) mod auth_failures;
pub(crate) mod cancel;
pub(crate) mod reload;
pub(crate) mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::database::Cluster;
use cancel::CancelRegistry;
use shutdown::Shutdown;

/// A config and the pools built from it, published together.
pub struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub cluster: Arc<Cluster>,
    /// Client-facing TLS, when `tls_certificate` and `tls_private_key` are set.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("cluster", &self.cluster)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The client-facing TLS acceptor a config asks for.
pub(crate) fn tls_acceptor(
    config: &Config,
) -> Result<Option<tokio_rustls::TlsAcceptor>, crate::net::tls::TlsError> {
    match (
        &config.general.tls_certificate,
        &config.general.tls_private_key,
    ) {
        (Some(cert), Some(key)) => crate::net::tls::acceptor(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    pub(crate) state: ArcSwap<Snapshot>,
    pub(crate) cancels: Arc<CancelRegistry>,
    pub(crate) shutdown: Arc<Shutdown>,
    pub(crate) clients: Arc<crate::stats::ClientRegistry>,
    /// The file the config came from, for reloads.
    pub(crate) config_path: Option<std::path::PathBuf>,
    /// Bumped by every reload, so sessions notice a new config with one atomic load.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    pub(crate) reloads: std::sync::atomic::AtomicU64,
    pub(crate) reload_failures: std::sync::atomic::AtomicU64,
    /// Failed logins per source address, for throttling.
    pub(crate) auth_failures: auth_failures::AuthFailures,
    /// Where the Prometheus exporter listens, once started.
    pub metrics_addr: std::sync::OnceLock<SocketAddr>,
    /// The last hour of traffic, for the dashboard.
    pub(crate) history: crate::stats::history::History,
}

impl Shared {
    /// The current config and pools. Each connection takes one snapshot at login and keeps it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }
}

/// Failure to start the proxy.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare user authentication: {0}")]
    Auth(#[from] crate::protocol::auth::AuthError),
    #[error("{0}")]
    Tls(#[from] crate::net::tls::TlsError),
}
