//! The databases clients connect to, above the server pools: for each (database, user) of the config a
//! [`UserPool`] holding that user's credentials and settings, its routing and sharding, its model cache, and one
//! [`ServerPool`] per server of every shard; choosing a server for a request ([`balance`]); the health checks,
//! lag checks and bans of those servers ([`health`], [`lag`]); pools made at login for auth_query users
//! ([`dynamic`]). The [`Cluster`] of all of them is built off the hot path; clients look their pool up once at
//! login and keep the `Arc`.

pub(crate) mod backend;
pub(crate) mod balance;
pub(crate) mod distributed;
mod dynamic;
pub(crate) mod fanout;
pub(crate) mod health;
pub(crate) mod lag;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{
    AuthType, Config, DefaultRole, DefaultShard, General, LoadBalancingMode, Pool, PoolMode,
    ServerRole, Shard, User, UserSettings,
};
use crate::pool::connect::ServerCredentials;
use crate::pool::listener::Listener;
use crate::pool::pool::PoolSettings;
use crate::pool::prepared::Registry;
use crate::pool::{Address, ServerPool};
use crate::protocol::auth::{AuthError, ScramVerifier, Secret};

/// How a client of one user proves who it is.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    pub(crate) auth_type: AuthType,
    pub(crate) secret: Option<Secret>,
    /// Derived once when the pool is built: PBKDF2 with 4096 rounds is too slow to run per login.
    pub(crate) scram: Option<ScramVerifier>,
}

/// One user of one pool: how clients authenticate and where their queries go.
#[derive(Debug)]
pub struct UserPool {
    pub(crate) database: String,
    pub user: String,
    pub(crate) auth: ClientAuth,
    pub(crate) settings: UserSettings,
    /// `shards[n]` lists the server pools of shard n in config order.
    pub(crate) shards: Vec<Vec<Arc<ServerPool>>>,
    pub(crate) default_shard: DefaultShard,
    pub(crate) default_role: DefaultRole,
    /// Named prepared statements of this pool's clients (transaction mode). Kept across reloads with the server
    /// pools, whose connections have these names prepared.
    pub(crate) statements: Arc<Registry>,
    /// Everything in the config this pool was built from, to tell on reload whether it changed.
    fingerprint: String,
    /// Per-server statement cache size; 0 when statements are passed through untouched (session mode, or
    /// `prepared_statements_cache_size = 0`).
    pub(crate) prepared_cache: usize,
    /// The LISTEN connection shared by this pool's clients in transaction mode, created on first use.
    listener: OnceLock<Listener>,
    pub(crate) routing: Routing,
    /// How requests pick a shard.
    pub(crate) sharder: crate::router::sharding::Sharder,
    /// Position of the round-robin balancer.
    pub(crate) round_robin: AtomicUsize,
    /// Two-phase commit of writes across shards (`two_phase_commit`), and per shard whether Ocelot's commit log
    /// table is known to exist there.
    pub(crate) two_phase: bool,
    /// Deployed `pgml` models served by Ocelot, shared by the pool's clients.
    pub models: crate::inference::serving::serve::Models,
    /// The pool holding the model registry when it is another one (`[inference] registry_pool`).
    pub(crate) registry: OnceLock<std::sync::Weak<UserPool>>,
    /// Whether Ocelot answers `pgml.*` calls (`[inference] mode`).
    pub(crate) inference_mode: crate::config::InferenceMode,
    pub(crate) two_phase_log: Vec<tokio::sync::OnceCell<()>>,
    /// Whether text columns (shard, table OID, attnum; 0, 0 for expressions) sort by bytes, learnt when a
    /// fan-out first has to order or compare them.
    pub(crate) collations: std::sync::Mutex<std::collections::HashMap<(usize, u32, i16), bool>>,
    /// Query-router counters for the metrics: read/write route cache hits and misses, requests run on several
    /// shards.
    pub(crate) route_hits: std::sync::atomic::AtomicU64,
    pub(crate) route_misses: std::sync::atomic::AtomicU64,
    pub fanouts: std::sync::atomic::AtomicU64,
    /// PgCat's plugins in force for this pool, if any is enabled.
    pub(crate) plugins: Option<Arc<crate::router::plugins::PoolPlugins>>,
    /// `PAUSE`: checkouts wait until `RESUME`.
    paused: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
}

/// Read/write splitting and balancing settings of a pool.
#[derive(Debug, Clone)]
pub(crate) struct Routing {
    /// `query_parser_enabled` and `query_parser_read_write_splitting` are both on.
    pub(crate) split: bool,
    pub(crate) primary_reads_enabled: bool,
    pub(crate) load_balancing_mode: LoadBalancingMode,
    pub(crate) query_parser_max_length: Option<usize>,
    /// Functions whose calls make a SELECT a write (lower case).
    pub(crate) volatile_functions: Vec<String>,
    pub(crate) ban_time: Duration,
    /// `ban_replica_lag` and how often to measure it.
    pub(crate) lag_limit: Option<crate::config::LagLimit>,
    pub(crate) lag_interval: Duration,
}

impl UserPool {
    /// The server pool a query goes to while there is no query router: the default shard's primary (its first
    /// replica when `default_role = "replica"`, or when the shard has no primary).
    pub(crate) fn target(&self) -> &Arc<ServerPool> {
        let shard = match self.default_shard {
            DefaultShard::Shard(n) => n.min(self.shards.len().saturating_sub(1)),
            DefaultShard::Random => self.random_shard(false),
            DefaultShard::RandomHealthy => self.random_shard(true),
        };
        let servers = &self.shards[shard];
        let want = match self.default_role {
            DefaultRole::Replica => ServerRole::Replica,
            _ => ServerRole::Primary,
        };
        servers
            .iter()
            .find(|s| s.address.role == want)
            .or_else(|| {
                servers
                    .iter()
                    .find(|s| s.address.role != ServerRole::Mirror)
            })
            .unwrap_or(&servers[0])
    }

    /// The pool's shared LISTEN connection.
    pub(crate) fn listener(&self) -> &Listener {
        self.listener
            .get_or_init(|| Listener::new(self.target().clone()))
    }

    /// `PAUSE`: new checkouts wait; connections in use are left to finish.
    pub(crate) fn pause(&self) {
        self.paused
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::Release);
        self.resumed.notify_waiters();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns at once unless the pool is paused, else when it is resumed.
    pub(crate) async fn wait_unpaused(&self) {
        while self.is_paused() {
            let resumed = self.resumed.notified();
            if !self.is_paused() {
                break;
            }
            resumed.await;
        }
    }

    /// Connections of this user checked out now, over every server.
    pub(crate) fn busy_count(&self) -> usize {
        self.server_pools().map(|s| s.busy_count()).sum()
    }

    /// Every server pool of this user.
    pub(crate) fn server_pools(&self) -> impl Iterator<Item = &Arc<ServerPool>> {
        self.shards.iter().flatten()
    }
}

/// Every pool of a config, keyed by (database, user).
#[derive(Debug, Default)]
pub struct Cluster {
    pools: HashMap<(String, String), Arc<UserPool>>,
    /// Pools of users authenticated through `auth_query`, made at their first login (locked at login only).
    pub(super) dynamic: std::sync::Mutex<HashMap<(String, String), Arc<UserPool>>>,
    /// Per pool, the connections `auth_query` runs on.
    pub(super) auth_pools: std::sync::Mutex<HashMap<String, Arc<ServerPool>>>,
}

impl Cluster {
    /// Builds the pools of a validated config. Does no I/O; call [`Cluster::start`] to open connections.
    pub(crate) fn build(config: &Config) -> Result<Cluster, AuthError> {
        Self::build_from(config, None)
    }

    /// Builds the pools of a new config, keeping what did not change from `old`: a user's pool whose settings
    /// are all the same is kept as it is (clients see no change); otherwise its server pools whose address,
    /// limits and credentials are the same are kept with their connections.
    pub(crate) fn build_from(config: &Config, old: Option<&Cluster>) -> Result<Cluster, AuthError> {
        let mut pools = HashMap::new();
        let registry_changed = config.inference.registry_pool.as_ref().is_some_and(|name| {
            config.pools.get(name).is_none_or(|pool| {
                pool.users.values().any(|u| {
                    let key = (name.clone(), u.username.clone());
                    old.and_then(|o| o.pools.get(&key))
                        .is_none_or(|p| p.fingerprint != fingerprint(config, pool, u))
                })
            })
        });
        for (db, pool) in &config.pools {
            for user in pool.users.values() {
                let key = (db.clone(), user.username.clone());
                let previous = old.and_then(|o| o.pools.get(&key));
                if let Some(p) = previous {
                    if !registry_changed && p.fingerprint == fingerprint(config, pool, user) {
                        pools.insert(key, p.clone());
                        continue;
                    }
                }
                let up = user_pool(config, db, pool, user, previous.map(|p| &**p), None)?;
                pools.insert(key, Arc::new(up));
            }
        }
        if let Some(name) = &config.inference.registry_pool {
            for ((db, user), p) in &pools {
                if db == name || p.registry.get().is_some() {
                    continue;
                }
                // The registry pool's entry for the same user, else any of its users.
                let registry = pools
                    .get(&(name.clone(), user.clone()))
                    .or_else(|| pools.iter().find(|((d, _), _)| d == name).map(|(_, r)| r));
                if let Some(r) = registry {
                    let _ = p.registry.set(Arc::downgrade(r));
                }
            }
        }
        Ok(Cluster {
            pools,
            ..Default::default()
        })
    }

    /// Every user pool, those made for `auth_query` users included, by (database, user).
    pub fn all_pools(&self) -> Vec<Arc<UserPool>> {
        let dynamic = self.dynamic.lock().unwrap_or_else(|p| p.into_inner());
        // A listed user without a password is served by its dynamic pool once it has logged in.
        let mut v: Vec<Arc<UserPool>> = self
            .pools
            .iter()
            .filter(|(k, _)| !dynamic.contains_key(*k))
            .map(|(_, p)| p.clone())
            .collect();
        v.extend(dynamic.values().cloned());
        v.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        v
    }

    /// Starts the maintenance task of every server pool (idle and lifetime expiry, `min_pool_size`).
    pub fn start(&self) {
        self.start_new(None);
    }

    /// Starts the background tasks of the pools that are not carried over from `old`; returns those user pools.
    pub(crate) fn start_new(&self, old: Option<&Cluster>) -> Vec<Arc<UserPool>> {
        let old_servers: Vec<&Arc<ServerPool>> = old
            .map(|o| o.pools.values().flat_map(|p| p.server_pools()).collect())
            .unwrap_or_default();
        let mut fresh = Vec::new();
        for (key, p) in &self.pools {
            if old
                .and_then(|o| o.pools.get(key))
                .is_some_and(|o| Arc::ptr_eq(o, p))
            {
                continue;
            }
            for s in p.server_pools() {
                if !old_servers.iter().any(|o| Arc::ptr_eq(o, s)) {
                    s.spawn_maintenance();
                }
            }
            health::spawn(p);
            if let Some(limit) = p.routing.lag_limit {
                lag::spawn(p, limit, p.routing.lag_interval);
            }
            spawn_centroid_loader(p);
            fresh.push(p.clone());
        }
        fresh
    }

    /// Pools of `old` that this cluster no longer has.
    pub(crate) fn removed_from(&self, old: &Cluster) -> Vec<(String, String)> {
        old.pools
            .keys()
            .filter(|k| !self.pools.contains_key(*k))
            .cloned()
            .collect()
    }

    pub fn get(&self, database: &str, user: &str) -> Option<&Arc<UserPool>> {
        self.pools.get(&(database.to_owned(), user.to_owned()))
    }

    /// Whether any user has a pool named `database`.
    pub(crate) fn has_database(&self, database: &str) -> bool {
        self.pools.keys().any(|(d, _)| d == database)
    }

    pub(crate) fn user_pools(&self) -> impl Iterator<Item = &Arc<UserPool>> {
        self.pools.values()
    }
}

/// Centroid sharding from a kmeans model: its centers are read from the registry in the background, retried
/// until the project has a deployed kmeans model (rows and queries are not routed by vector until then).
fn spawn_centroid_loader(p: &Arc<UserPool>) {
    let Some(v) = p.sharder.vectors.clone() else {
        return;
    };
    let (Some(project), None) = (v.model.clone(), v.centroids()) else {
        return;
    };
    let weak = Arc::downgrade(p);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let Some(pool) = weak.upgrade() else { return };
            let backend: Arc<dyn crate::inference::backend::Backend> = pool.clone();
            match crate::inference::serving::cache::kmeans_centroids(&backend, &project).await {
                Ok(c) => {
                    tracing::info!(pool = %pool.database, "centroid sharding: {} centroids from the kmeans model of {project}", c.len());
                    v.set_centroids(c);
                    return;
                }
                Err(e) if !warned => {
                    tracing::warn!(pool = %pool.database, "centroid sharding waits for {project}: {e}");
                    warned = true;
                }
                Err(_) => {}
            }
            drop(pool);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// What a user's pool is built from. Passwords are included verbatim: the string is compared, never shown.
fn fingerprint(config: &Config, pool: &Pool, user: &User) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        config.general,
        config.inference,
        config.plugins,
        pool,
        user,
        user.password,
        user.server_password
    )
}

/// The pool of one user of one config pool: its client auth, settings, and a server pool per server of every
/// shard. With `previous` (the same user's pool before a reload), its unchanged server pools and its statement
/// registry are kept.
pub(super) fn user_pool(
    config: &Config,
    db: &str,
    pool: &Pool,
    user: &User,
    previous: Option<&UserPool>,
    fetched: Option<(ClientAuth, Secret)>,
) -> Result<UserPool, AuthError> {
    let settings = config.user_settings(pool, user);
    let mut creds = server_credentials(&config.general, user);
    let auth = client_auth(user, fetched, &mut creds)?;
    let prepared_cache = match settings.pool_mode {
        PoolMode::Transaction => pool.prepared_statements_cache_size,
        PoolMode::Session => 0,
    };
    let shards = server_pools(config, db, pool, user, creds, &settings, previous);
    // As PgCat recreates a changed pool's connections, a new statement cache starts on fresh connections.
    let cache_changed = previous.is_some_and(|p| p.prepared_cache != prepared_cache);
    if cache_changed {
        shards.iter().flatten().for_each(|s| s.reconnect());
    }
    Ok(UserPool {
        database: db.to_owned(),
        user: user.username.clone(),
        auth,
        shards,
        settings,
        default_shard: pool.default_shard,
        default_role: pool.default_role,
        statements: previous
            .filter(|_| !cache_changed)
            .map(|p| p.statements.clone())
            .unwrap_or_default(),
        fingerprint: fingerprint(config, pool, user),
        prepared_cache,
        listener: OnceLock::new(),
        routing: routing(&config.general, pool),
        round_robin: AtomicUsize::new(0),
        collations: Default::default(),
        paused: Default::default(),
        resumed: Default::default(),
        route_hits: Default::default(),
        route_misses: Default::default(),
        fanouts: Default::default(),
        // As in PgCat, the query plugins need the parser; the prewarmer (in `server_pools`) does not.
        plugins: crate::router::plugins::PoolPlugins::compile(
            config.plugins.as_ref(),
            pool.plugins.as_ref(),
        )
        .filter(|_| pool.query_parser_enabled)
        .map(Arc::new),
        two_phase: pool.two_phase_commit,
        models: models(&config.inference),
        registry: OnceLock::new(),
        inference_mode: config.inference.mode,
        two_phase_log: pool.shards.iter().map(|_| Default::default()).collect(),
        sharder: crate::router::sharding::Sharder::new(pool),
    })
}

/// How Ocelot logs in to the user's servers.
fn server_credentials(g: &crate::config::General, user: &User) -> ServerCredentials {
    ServerCredentials {
        tls: crate::pool::connect::ServerTls {
            enabled: g.server_tls,
            verify: g.verify_server_certificate,
            ca_file: g.server_tls_ca_file.clone(),
        },
        user: user
            .server_username
            .clone()
            .unwrap_or_else(|| user.username.clone()),
        password: user
            .server_password
            .as_deref()
            .or(user.password.as_deref())
            .map(Secret::parse),
    }
}

/// How the user's clients log in: with the config's password, or with what `auth_query` fetched (whose
/// secret then logs in to the servers too, unless the config gives a server password).
fn client_auth(
    user: &User,
    fetched: Option<(ClientAuth, Secret)>,
    creds: &mut ServerCredentials,
) -> Result<ClientAuth, AuthError> {
    Ok(match fetched {
        Some((auth, server_secret)) => {
            if user.server_password.is_none() {
                creds.password = Some(server_secret);
            }
            auth
        }
        None => {
            let secret = user.password.as_deref().map(Secret::parse);
            let scram = match (&secret, user.auth_type) {
                (Some(s), AuthType::ScramSha256) => Some(s.scram_verifier()?),
                _ => None,
            };
            ClientAuth {
                auth_type: user.auth_type,
                secret,
                scram,
            }
        }
    })
}

/// The pool's model cache, as the `[inference]` settings size it.
fn models(i: &crate::config::Inference) -> crate::inference::serving::serve::Models {
    crate::inference::serving::serve::Models::new(
        i.cache_bytes,
        std::time::Duration::from_millis(i.deploy_recheck_ms),
        i.models_dir.clone().into(),
    )
    .with_drift_window(std::time::Duration::from_secs(i.drift_window_s.max(1)))
    .with_log_queue(i.prediction_log_queue.max(1))
}

/// One server pool per server of every shard, shards in number order.
fn server_pools(
    config: &Config,
    db: &str,
    pool: &Pool,
    user: &User,
    creds: ServerCredentials,
    settings: &UserSettings,
    previous: Option<&UserPool>,
) -> Vec<Vec<Arc<ServerPool>>> {
    let g = &config.general;
    let pool_settings = PoolSettings {
        pool_size: settings.pool_size,
        min_pool_size: settings.min_pool_size,
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
        server_lifetime: Duration::from_millis(settings.server_lifetime_ms),
        fifo: g.server_round_robin,
        max_message: u32::MAX,
        cleanup_timeout: Duration::from_millis(g.healthcheck_timeout.max(1000)),
        healthcheck_delay: Duration::from_millis(g.healthcheck_delay),
        healthcheck_timeout: Duration::from_millis(g.healthcheck_timeout),
        prewarm: crate::router::plugins::PoolPlugins::compile(
            config.plugins.as_ref(),
            pool.plugins.as_ref(),
        )
        .map(|p| p.prewarm)
        .unwrap_or_default(),
        cleanup: pool.cleanup_server_connections,
        keepalive: g.keepalive(),
    };
    let mut shards: Vec<(usize, &Shard)> = pool
        .shards
        .iter()
        .filter_map(|(k, s)| k.parse().ok().map(|n| (n, s)))
        .collect();
    shards.sort_by_key(|(n, _)| *n);
    shards
        .into_iter()
        .map(|(n, shard)| {
            shard
                .servers
                .iter()
                .enumerate()
                .map(|(index, (host, port, role))| {
                    let address = Address {
                        pool: db.to_owned(),
                        user: user.username.clone(),
                        shard: n,
                        index,
                        host: host.clone(),
                        port: *port,
                        role: *role,
                        database: shard.database.clone(),
                    };
                    // The config was validated before the build, so settings applied here are not undone.
                    match previous
                        .and_then(|p| p.server_pools().find(|s| s.same_server(&address, &creds)))
                    {
                        Some(kept) => {
                            kept.reconfigure(pool_settings.clone());
                            kept.clone()
                        }
                        None => ServerPool::new(address, pool_settings.clone(), creds.clone()),
                    }
                })
                .collect()
        })
        .collect()
}

fn routing(g: &General, pool: &Pool) -> Routing {
    Routing {
        split: pool.query_parser_enabled && pool.query_parser_read_write_splitting,
        primary_reads_enabled: pool.primary_reads_enabled,
        load_balancing_mode: pool.load_balancing_mode,
        query_parser_max_length: pool.query_parser_max_length,
        volatile_functions: pool
            .volatile_functions
            .iter()
            .map(|f| f.to_lowercase())
            .collect(),
        ban_time: Duration::from_secs(g.ban_time.max(0) as u64),
        lag_limit: g.ban_replica_lag,
        lag_interval: Duration::from_millis(g.replica_lag_check_interval.max(10)),
    }
}
