//! The client side of Ocelot: the listener, each client's login and session, cancellation and shutdown.
//! [`Proxy::start`] binds the configured address and serves until [`Proxy::shutdown`] (or SIGINT in the binary).

pub mod auth_query;
pub mod cancel;
pub mod distributed;
pub mod error;
pub mod extfan;
pub mod login;
pub mod notify;
pub mod reload;
pub mod session;
pub mod session_state;
pub mod shutdown;
pub mod statements;
pub mod tracker;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::database::Cluster;
use crate::net::configure_client_socket;
use crate::protocol::encode;
use cancel::CancelRegistry;
use error::ClientError;
use login::Login;
use session::Session;
use shutdown::Shutdown;

/// A config and the pools built from it, published together.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub cluster: Arc<Cluster>,
    /// Client-facing TLS, when `tls_certificate` and `tls_private_key` are set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
pub fn tls_acceptor(
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
    state: ArcSwap<Snapshot>,
    pub cancels: Arc<CancelRegistry>,
    pub shutdown: Arc<Shutdown>,
    pub clients: Arc<crate::stats::ClientRegistry>,
    /// The file the config came from, for reloads.
    pub config_path: Option<std::path::PathBuf>,
    /// Bumped by every reload, so sessions notice a new config with one atomic load.
    pub generation: std::sync::atomic::AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
    pub reloads: std::sync::atomic::AtomicU64,
    pub reload_failures: std::sync::atomic::AtomicU64,
    /// Failed logins per source address, for throttling.
    pub auth_failures: watchdog::AuthFailures,
    /// Where the Prometheus exporter listens, once started.
    pub metrics_addr: std::sync::OnceLock<SocketAddr>,
    /// The last hour of traffic, for the dashboard.
    pub history: crate::stats::history::History,
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

/// A running proxy.
pub struct Proxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// The Unix-domain socket's accept task and path, when `unix_socket_dir` is set.
    unix: Option<(JoinHandle<()>, std::path::PathBuf)>,
}

impl Proxy {
    /// Builds the pools, binds `general.host:general.port` and starts accepting clients.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        Self::start_from(config, None).await
    }

    /// [`Proxy::start`] for a config read from `path`, which `RELOAD`, SIGHUP and `autoreload` read again.
    pub async fn start_from(
        config: Config,
        path: Option<std::path::PathBuf>,
    ) -> Result<Proxy, StartError> {
        let addr = format!("{}:{}", config.general.host, config.general.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let tls = tls_acceptor(&config)?;
        crate::inference::embed_queue::configure(&config.inference);
        let cluster = Cluster::build(&config)?;
        cluster.start();
        for pool in cluster.user_pools() {
            if pool.two_phase && pool.shards.len() > 1 {
                distributed::spawn_recovery(pool);
            }
        }
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(Snapshot {
                config: Arc::new(config),
                cluster: Arc::new(cluster),
                tls,
            }),
            cancels: Arc::default(),
            shutdown: Arc::default(),
            clients: Arc::default(),
            config_path: path,
            generation: Default::default(),
            reload_lock: Default::default(),
            reloads: Default::default(),
            reload_failures: Default::default(),
            metrics_addr: Default::default(),
            history: Default::default(),
            auth_failures: Default::default(),
        });
        watchdog::spawn(&shared);
        if let Some(ms) = shared.snapshot().config.general.autoreload {
            reload::spawn_autoreload(&shared, Duration::from_millis(ms));
        }
        crate::admin::spawn_stats_roller(&shared);
        crate::admin::spawn_history(&shared);
        if shared.snapshot().config.general.enable_prometheus_exporter == Some(true) {
            crate::admin::prometheus::spawn(&shared).await?;
        }
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: "listener".into(),
            source,
        })?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        let unix = match &shared.snapshot().config.general.unix_socket_dir {
            Some(dir) => {
                let path =
                    std::path::Path::new(dir).join(format!(".s.PGSQL.{}", local_addr.port()));
                let listener = bind_unix(&path).map_err(|source| StartError::Bind {
                    addr: path.display().to_string(),
                    source,
                })?;
                Some((tokio::spawn(accept_unix(listener, shared.clone())), path))
            }
            None => None,
        };
        Ok(Proxy {
            local_addr,
            shared,
            accept,
            unix,
        })
    }

    /// The Unix-domain socket clients can connect to, when `unix_socket_dir` is set.
    pub fn unix_socket(&self) -> Option<&std::path::Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown: refuse new clients, disconnect idle ones, let transactions finish, and return when all
    /// clients are gone or `shutdown_timeout` passed. Returns the number of clients still connected.
    pub async fn shutdown(self) -> usize {
        let timeout = Duration::from_millis(self.shared.snapshot().config.general.shutdown_timeout);
        self.shared.shutdown.begin();
        for c in self.shared.clients.list() {
            c.drain();
        }
        let _ = tokio::time::timeout(timeout, self.shared.shutdown.all_clients_gone()).await;
        self.accept.abort();
        if let Some((task, path)) = &self.unix {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
        self.shared.shutdown.client_count()
    }
}

/// Binds the Unix-domain socket, replacing a stale socket file left by an earlier run, open to every local user
/// (authentication still applies), as PostgreSQL's own socket is by default.
fn bind_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle_client(crate::net::Stream::Unix(stream), None, shared).await
                });
            }
            Err(e) => {
                tracing::error!("accept on the Unix socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle_tcp_client(stream, peer, shared).await });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_tcp_client(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let g = &shared.snapshot().config.general;
    configure_client_socket(&stream, g.keepalive());
    handle_client(crate::net::Stream::Tcp(stream), Some(peer), shared).await
}

async fn handle_client(
    mut stream: crate::net::Stream,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
) {
    let _token = shared.shutdown.client_token();
    let snapshot = shared.snapshot();
    let g = &snapshot.config.general;
    let peer = addr.map_or_else(|| "unix socket".to_owned(), |a| a.to_string());
    let mut buf = BytesMut::with_capacity(1024);
    let block = Duration::from_millis(g.auth_failure_block_ms);
    let ip = addr.map(|a| a.ip());
    if let Some(ip) = ip {
        if !shared.auth_failures.allowed(ip, g.max_auth_failures, block) {
            report(&mut stream, &ClientError::AuthThrottled).await;
            tracing::warn!(%peer, "login refused: too many failed authentication attempts");
            return;
        }
    }
    let login_timeout = Duration::from_millis(g.client_login_timeout);
    let login =
        match tokio::time::timeout(login_timeout, login::login(&mut stream, &mut buf, &shared))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::LoginTimeout),
        };
    let mut login = match login {
        Ok(Login::Cancel { pid, secret }) => {
            if let Some(target) = shared.cancels.lookup(pid, secret) {
                if let Err(e) = cancel::send_cancel(&target).await {
                    tracing::warn!(
                        "forwarding a cancel request to {}:{} failed: {e}",
                        target.host,
                        target.port
                    );
                }
            }
            return;
        }
        Ok(Login::Ready(l)) => l,
        Ok(Login::Admin {
            console,
            database,
            user,
            application_name,
        }) => {
            let _listed = shared
                .clients
                .register(&database, &user, &application_name, addr);
            if let Err(e) = crate::admin::serve(stream, buf, shared.clone(), console).await {
                tracing::debug!(%peer, "admin session ended: {e}");
            }
            return;
        }
        Err(e) => {
            if let (Some(ip), true) = (ip, e.is_wrong_password()) {
                shared.auth_failures.failed(ip, block);
            }
            report(&mut stream, &e).await;
            if e.sqlstate().is_some() {
                tracing::info!(%peer, "login refused: {e}");
            }
            return;
        }
    };
    if let Some(ip) = ip {
        shared.auth_failures.succeeded(ip);
    }
    if g.log_client_connections {
        tracing::info!(%peer, user = %login.user, database = %login.database, application_name = %login.application_name, "client connected");
    }
    let client =
        shared
            .clients
            .register(&login.database, &login.user, &login.application_name, addr);
    let _ = client
        .info
        .cancel_key
        .set((login.registration.slot.pid, login.registration.slot.secret));
    client.info.statement_timeout_ms.store(
        login.pool.settings.statement_timeout_ms,
        std::sync::atomic::Ordering::Relaxed,
    );
    // Registered after a shutdown began drains at once (shutdown drains the clients it finds registered).
    if shared.shutdown.is_draining() {
        client.info.drain();
    }
    let reserved = login.reserved.take();
    let session = Box::new(Session::new(
        stream,
        buf,
        &login,
        reserved,
        g.max_message_size,
        client.info.clone(),
        shared.clone(),
    ));
    let result = session.run().await;
    match &result {
        Err(e) if e.is_notable() => tracing::warn!(%peer, user = %login.user, "session ended: {e}"),
        Err(e) => tracing::debug!(%peer, user = %login.user, "session ended: {e}"),
        Ok(_) => {}
    }
    if g.log_client_disconnections {
        tracing::info!(%peer, user = %login.user, database = %login.database, "client disconnected");
    }
}

/// Sends a FATAL ErrorResponse for `e` when the client can still receive it.
async fn report(stream: &mut crate::net::Stream, e: &ClientError) {
    if let Some(code) = e.sqlstate() {
        let mut b = BytesMut::new();
        encode::error_response(&mut b, e.severity(), code, &e.to_string(), None);
        let _ = stream.write_all(&b).await;
        let _ = stream.shutdown().await;
    }
}
