//! The composition root: [`Proxy::start`] builds the pools from a config, publishes them in the [`Shared`] state,
//! starts the background tasks (health, lag and timeout watchers, two-phase recovery, reloads, statistics, the
//! metrics and dashboard server) and the listeners that hand each client to `proxy`, and serves until
//! [`Proxy::shutdown`] (or SIGINT in the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::database::{distributed, Cluster};
use crate::proxy::{accept_loop, accept_unix, watchdog};
use crate::shared::{reload, tls_acceptor, Shared, Snapshot, StartError};

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
        crate::inference::serving::embed_queue::configure(&config.inference);
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
