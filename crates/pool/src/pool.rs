//! A bounded pool of connections to one server for one user. A semaphore with `pool_size` permits bounds the
//! connections checked out; a connection is only ever created while holding a permit and with no idle one to
//! reuse, so open connections never exceed `pool_size`. Waiting clients are served in arrival order (the tokio
//! semaphore is fair). Idle connections wait in a deque: FIFO reuse spreads load (`server_round_robin = true`),
//! LIFO keeps few connections hot.
//!
//! The idle deque sits behind a std `Mutex`: the critical sections are a push or a pop, no `.await` is held
//! across it, and there is one mutex per server pool, not one for the process.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::{connect, ServerCredentials};
use super::{Address, PoolError, ServerConn, ServerParams};
use ocelot_config::ServerRole;
use ocelot_stats::{ConnInfo, ConnState};

/// Limits and timeouts of one server pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub server_lifetime: Duration,
    /// FIFO (true) or LIFO (false) reuse of idle connections.
    pub fifo: bool,
    pub max_message: u32,
    /// How long a dirty connection's cleanup (ROLLBACK, RESET ALL, ...) may take before it is discarded.
    pub cleanup_timeout: Duration,
    /// An idle connection unused for longer than this is checked with `;` before it is handed out.
    pub healthcheck_delay: Duration,
    pub healthcheck_timeout: Duration,
    /// The prewarmer plugin's queries, run on every new connection.
    pub prewarm: Vec<String>,
    /// PgCat's `cleanup_server_connections`: when false, what a client left (SET, PREPARE, ...) stays for the
    /// next one; an open transaction is still rolled back.
    pub cleanup: bool,
    /// `tcp_keepalives_*` and `tcp_user_timeout`, applied to server sockets as PgCat does.
    pub keepalive: ocelot_net::Keepalive,
}

/// Why and when a server was banned, for `SHOW BANS`.
#[derive(Debug, Clone)]
pub struct BanInfo {
    pub reason: String,
    /// Seconds.
    pub duration: u64,
    pub at: std::time::SystemTime,
}

impl Default for BanInfo {
    fn default() -> Self {
        BanInfo {
            reason: String::new(),
            duration: 0,
            at: std::time::UNIX_EPOCH,
        }
    }
}

/// Milliseconds on a process-wide monotonic clock, for lock-free ban deadlines.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Connections to one server for one user.
#[derive(Debug)]
pub struct ServerPool {
    pub address: Arc<Address>,
    /// Swapped by a reload that changes only settings (see `upkeep.rs`), so connections are kept.
    pub(super) settings: arc_swap::ArcSwap<PoolSettings>,
    creds: ServerCredentials,
    pub(super) permits: Arc<Semaphore>,
    idle: Mutex<VecDeque<ServerConn>>,
    /// Connections open now: idle, checked out, or being cleaned.
    open: AtomicUsize,
    /// What a fresh connection reports, captured from the first one: the defaults clients are told at login.
    defaults: OnceLock<Arc<ServerParams>>,
    /// Until when (on [`now_ms`]'s clock) the server is banned; 0 when it is not.
    banned_until: AtomicU64,
    /// Why it was banned, for logs and SHOW BANS.
    ban_reason: Mutex<BanInfo>,
    /// A replica lagging the primary by more than `ban_replica_lag`.
    lagging: std::sync::atomic::AtomicBool,
    /// Traffic through this server for this user (`SHOW STATS`, `pgcat_stats_*`).
    pub stats: ocelot_stats::Counters,
    /// Open connections, for `SHOW SERVERS`; changed only when one opens or closes.
    conns: Mutex<Vec<Arc<ConnInfo>>>,
    /// Connections being opened now (`sv_login`).
    logging_in: AtomicUsize,
    /// Until when (on [`now_ms`]'s clock) the server counts as failing, primaries included (which are never
    /// banned): `default_shard = "random_healthy"` avoids shards whose server failed within `ban_time`.
    unhealthy_until: AtomicU64,
    /// Bumped by `RECONNECT`: connections opened before are closed when they come back.
    epoch: AtomicU64,
    /// Until when (on [`now_ms`]'s clock) idle connections are checked before reuse, after one broke.
    suspect_until: AtomicU64,
}

impl ServerPool {
    pub fn new(address: Address, settings: PoolSettings, creds: ServerCredentials) -> Arc<Self> {
        Arc::new(ServerPool {
            address: Arc::new(address),
            permits: Arc::new(Semaphore::new(settings.pool_size as usize)),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            creds,
            idle: Mutex::new(VecDeque::new()),
            open: AtomicUsize::new(0),
            defaults: OnceLock::new(),
            banned_until: AtomicU64::new(0),
            ban_reason: Mutex::new(BanInfo::default()),
            lagging: std::sync::atomic::AtomicBool::new(false),
            stats: Default::default(),
            conns: Mutex::new(Vec::new()),
            logging_in: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            unhealthy_until: AtomicU64::new(0),
            suspect_until: AtomicU64::new(0),
        })
    }

    /// The open connections now.
    pub fn connections(&self) -> Vec<Arc<ConnInfo>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Connections being opened now.
    pub fn login_count(&self) -> usize {
        self.logging_in.load(Ordering::Relaxed)
    }

    /// The ban in force and the milliseconds it has left, if the server is banned.
    pub fn ban_state(&self) -> Option<(BanInfo, u64)> {
        let until = self.banned_until.load(Ordering::Acquire);
        let now = now_ms();
        if until == 0 || now >= until {
            return None;
        }
        let info = self
            .ban_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some((info, until - now))
    }

    /// `RECONNECT`: idle connections close now, the others when their client gives them back.
    pub fn reconnect(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let idle: Vec<ServerConn> = self.lock_idle().drain(..).collect();
        for c in idle {
            self.discard(c);
        }
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// The secret this pool logs in to its server with.
    pub fn password(&self) -> Option<&ocelot_protocol::auth::Secret> {
        self.creds.password.as_ref()
    }

    /// Whether this pool connects where and as these would (a reload keeps it then, with its connections).
    pub fn same_server(&self, address: &Address, creds: &ServerCredentials) -> bool {
        *self.address == *address && self.creds == *creds
    }

    /// Connections currently open.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections checked out now (for least-outstanding-connections balancing).
    pub fn busy_count(&self) -> usize {
        (self.settings.load().pool_size as usize).saturating_sub(self.permits.available_permits())
    }

    /// Takes the server out of rotation for `duration`.
    pub fn ban(&self, duration: Duration, reason: &str) {
        let until = now_ms() + duration.as_millis() as u64;
        self.banned_until.store(until, Ordering::Release);
        *self.ban_reason.lock().unwrap_or_else(|p| p.into_inner()) = BanInfo {
            reason: reason.to_owned(),
            duration: duration.as_secs(),
            at: std::time::SystemTime::now(),
        };
        tracing::warn!(server = %self.address, "banned for {} s: {reason}", duration.as_secs());
    }

    pub fn unban(&self) {
        if self.banned_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(server = %self.address, "unbanned");
        }
    }

    /// Notes that a connection to the server failed or broke, for `random_healthy` shard choice.
    pub fn mark_unhealthy(&self, duration: Duration) {
        let until = now_ms() + duration.as_millis() as u64;
        self.unhealthy_until.store(until, Ordering::Relaxed);
    }

    /// Whether no connection to the server failed or broke within the last `ban_time`.
    pub fn is_healthy(&self) -> bool {
        now_ms() >= self.unhealthy_until.load(Ordering::Relaxed)
    }

    /// Whether the server is banned now; a ban that ran out is lifted here.
    pub fn is_banned(&self) -> bool {
        let until = self.banned_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now_ms() >= until {
            self.unban();
            return false;
        }
        true
    }

    /// Whether the replica is out of rotation for lagging.
    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Acquire)
    }

    pub fn set_lagging(&self, lagging: bool, detail: &str) {
        if self.lagging.swap(lagging, Ordering::AcqRel) != lagging {
            if lagging {
                tracing::warn!(server = %self.address, "replica lags ({detail}): out of rotation");
            } else {
                tracing::info!(server = %self.address, "replica caught up ({detail}): back in rotation");
            }
        }
    }

    pub(super) fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<ServerConn>> {
        // A panic while holding this lock cannot leave the deque inconsistent (push/pop only), so poisoning is
        // ignored rather than propagated to every later client.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The parameters a fresh server connection reports, once any connection has been made.
    pub fn server_defaults(&self) -> Option<Arc<ServerParams>> {
        self.defaults.get().cloned()
    }

    /// Waits up to `connect_timeout` for a connection: an idle one if any, else a new one.
    ///
    /// A primary that refuses connections or drops them is retried, with backoff, until `connect_timeout` runs
    /// out: a restart or a failover of the primary then delays requests instead of failing them, as PgBouncer
    /// queues clients while its server is down. A replica fails at once, so that the balancer bans it and tries
    /// the next one.
    ///
    /// Cancel-safe: dropping the future gives back the permit and any connection it made.
    pub async fn checkout(self: &Arc<Self>) -> Result<Pooled, PoolError> {
        let started = Instant::now();
        let timeout = self.settings.load().connect_timeout;
        let permit = match tokio::time::timeout(timeout, self.permits.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(PoolError::Closed {
                    server: self.address.to_string(),
                })
            }
            Err(_) => return Err(self.checkout_timeout(started)),
        };
        let mut backoff = Duration::from_millis(20);
        loop {
            let e = match self.connection(started + timeout).await {
                Ok(conn) => return Ok(self.guard(conn, permit)),
                Err(e) => e,
            };
            let left = timeout.saturating_sub(started.elapsed());
            if self.address.role != ServerRole::Primary || !e.is_transient() || left <= backoff {
                return Err(e);
            }
            tracing::debug!(server = %self.address, "primary unavailable, retrying: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// A connection without waiting for room: an idle one, or a new one while the pool has room; `None` when it
    /// is full or the connection fails.
    pub async fn try_checkout(self: &Arc<Self>) -> Option<Pooled> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let deadline = Instant::now() + self.settings.load().connect_timeout;
        let conn = self.connection(deadline).await.ok()?;
        Some(self.guard(conn, permit))
    }

    /// One attempt at a connection: a reusable idle one, else a new one opened before `deadline`. An idle one is
    /// checked with `;` first when it sat unused for `healthcheck_delay`, or when a connection of this pool broke
    /// a moment ago: a restart or `pg_terminate_backend` kills idle connections too, and some may not have said
    /// so yet. One that fails the check is closed and the next is tried; one that does not answer in
    /// `healthcheck_timeout` means the server does not, and fails the attempt.
    pub(super) async fn connection(&self, deadline: Instant) -> Result<ServerConn, PoolError> {
        loop {
            let Some(conn) = self.take_idle() else { break };
            if conn.last_used.elapsed() < self.settings.load().healthcheck_delay
                && !self.is_suspect()
            {
                return Ok(conn);
            }
            // Boxed, as the rare branches below are: every client's task is sized for its largest future.
            match Box::pin(self.health_check(conn)).await {
                Ok(conn) => return Ok(conn),
                Err(Some(e)) => return Err(e),
                Err(None) => {}
            }
        }
        Box::pin(self.open_new(deadline.saturating_duration_since(Instant::now()))).await
    }

    /// `;` on an idle connection. A connection that fails it is closed (`Err(None)`: try another); one that does
    /// not answer within `healthcheck_timeout` is closed and reported.
    async fn health_check(&self, mut conn: ServerConn) -> Result<ServerConn, Option<PoolError>> {
        conn.info.set_state(ConnState::Tested);
        let timeout = self.settings.load().healthcheck_timeout;
        match tokio::time::timeout(timeout, conn.run(";")).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => {
                tracing::debug!(server = %self.address, "idle connection failed its health check: {e}");
                conn.broken = true;
                self.discard(conn);
                Err(None)
            }
            Err(_) => {
                conn.broken = true;
                self.discard(conn);
                Err(Some(PoolError::HealthCheck {
                    server: self.address.to_string(),
                    reason: format!(
                        "no answer within {} ms",
                        self.settings.load().healthcheck_timeout.as_millis()
                    ),
                }))
            }
        }
    }

    /// Whether a connection of this pool broke in the last second.
    fn is_suspect(&self) -> bool {
        now_ms() < self.suspect_until.load(Ordering::Relaxed)
    }

    fn checkout_timeout(&self, started: Instant) -> PoolError {
        PoolError::CheckoutTimeout {
            pool: self.address.pool.clone(),
            user: self.address.user.clone(),
            server: format!("{}:{}", self.address.host, self.address.port),
            waited_ms: started.elapsed().as_millis() as u64,
        }
    }

    pub(super) fn guard(
        self: &Arc<Self>,
        conn: ServerConn,
        permit: OwnedSemaphorePermit,
    ) -> Pooled {
        conn.info.set_state(ConnState::Active);
        Pooled {
            conn: Some(conn),
            pool: self.clone(),
            permit: Some(permit),
        }
    }

    /// Pops a reusable idle connection, closing any that outlived `server_lifetime`.
    fn take_idle(&self) -> Option<ServerConn> {
        let lifetime = self.settings.load().server_lifetime;
        loop {
            let conn = {
                let mut idle = self.lock_idle();
                if self.settings.load().fifo {
                    idle.pop_front()
                } else {
                    idle.pop_back()
                }
            }?;
            if Self::closed_while_idle(&conn) {
                let mut conn = conn;
                conn.broken = true;
                self.discard(conn);
                continue;
            }
            if conn.created.elapsed() < lifetime {
                return Some(conn);
            }
            self.discard(conn);
        }
    }

    /// An idle server has nothing to say; readable bytes or EOF mean it was terminated (e.g. by
    /// `pg_terminate_backend`) or broke. One non-blocking read, so a dead connection is never handed out.
    fn closed_while_idle(conn: &ServerConn) -> bool {
        conn.stream.readable_while_idle()
    }

    pub(super) async fn open_new(&self, timeout: Duration) -> Result<ServerConn, PoolError> {
        let settings = self.settings.load();
        let fut = connect(
            self.address.clone(),
            &self.creds,
            settings.max_message,
            settings.keepalive,
        );
        drop(settings);
        self.logging_in.fetch_add(1, Ordering::Relaxed);
        let connected = tokio::time::timeout(timeout, fut).await;
        self.logging_in.fetch_sub(1, Ordering::Relaxed);
        let mut conn = match connected {
            Ok(r) => r?,
            Err(_) => {
                return Err(PoolError::ConnectTimeout {
                    server: self.address.to_string(),
                    ms: timeout.as_millis() as u64,
                })
            }
        };
        let settings = self.settings.load_full();
        for sql in &settings.prewarm {
            if let Err(e) = conn.run(sql).await {
                tracing::warn!(server = %self.address, "prewarmer query failed: {e}");
            }
        }
        conn.epoch = self.epoch.load(Ordering::Acquire);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.info.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        let _ = self.defaults.set(Arc::new(conn.state.params.clone()));
        tracing::debug!(server = %self.address, "opened server connection");
        Ok(conn)
    }

    /// Opens a connection outside the pool's accounting, for a long-lived dedicated use (the LISTEN
    /// connection).
    pub async fn connect_dedicated(&self) -> Result<ServerConn, PoolError> {
        let settings = self.settings.load_full();
        match tokio::time::timeout(
            settings.connect_timeout,
            connect(
                self.address.clone(),
                &self.creds,
                settings.max_message,
                settings.keepalive,
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(PoolError::ConnectTimeout {
                server: self.address.to_string(),
                ms: settings.connect_timeout.as_millis() as u64,
            }),
        }
    }

    /// Closes a connection and forgets it.
    pub(super) fn discard(&self, conn: ServerConn) {
        if conn.broken {
            self.suspect_until.store(now_ms() + 1000, Ordering::Relaxed);
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| !Arc::ptr_eq(c, &conn.info));
        tracing::debug!(server = %self.address, broken = conn.broken, "closing server connection");
        if !conn.broken {
            tokio::spawn(conn.terminate());
        }
    }

    /// Takes a connection back. Clean ones go to the idle list at once; dirty ones are cleaned in a task that
    /// holds the permit until done, so the pool never lends more than `pool_size` connections.
    pub(super) fn checkin(self: &Arc<Self>, mut conn: ServerConn, permit: OwnedSemaphorePermit) {
        let st = &conn.state.statements;
        conn.info
            .publish_prepared(st.stats.hits, st.stats.misses, st.stats.evictions, st.len());
        if conn.broken || !conn.rbuf.is_empty() || conn.epoch < self.epoch.load(Ordering::Acquire) {
            self.discard(conn);
            return;
        }
        if !self.settings.load().cleanup {
            conn.state.dirty = super::state::Dirty::default();
        }
        if self.open_count() > self.settings.load().pool_size as usize {
            // A reload made the pool smaller: it shrinks as connections come back.
            self.discard(conn);
            return;
        }
        if conn.is_clean() {
            conn.info.set_state(ConnState::Idle);
            conn.last_used = Instant::now();
            self.lock_idle().push_back(conn);
            drop(permit);
            return;
        }
        conn.info.set_state(ConnState::Used);
        let pool = self.clone();
        tokio::spawn(async move {
            let timeout = pool.settings.load().cleanup_timeout;
            let cleaned = tokio::time::timeout(timeout, conn.clean()).await;
            match cleaned {
                Ok(Ok(())) => pool.checkin(conn, permit),
                Ok(Err(e)) => {
                    tracing::warn!(server = %pool.address, "cleaning a server connection failed, closing it: {e}");
                    conn.broken = true;
                    pool.discard(conn);
                }
                Err(_) => {
                    tracing::warn!(server = %pool.address, "cleaning a server connection timed out, closing it");
                    conn.broken = true;
                    pool.discard(conn);
                }
            }
        });
    }
}

/// A checked-out connection. Dropping it returns the connection to its pool (cleaned first when a client left
/// state on it or a transaction open), or closes it when it is broken.
#[derive(Debug)]
pub struct Pooled {
    conn: Option<ServerConn>,
    pool: Arc<ServerPool>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Pooled {
    pub fn pool(&self) -> &Arc<ServerPool> {
        &self.pool
    }

    /// The pool and the connection at once, to update the pool's counters while reading the connection.
    pub fn split(&mut self) -> (&ServerPool, &mut ServerConn) {
        let conn = self.conn.as_mut().unwrap_or_else(|| unreachable!());
        (&self.pool, conn)
    }
}

impl Deref for Pooled {
    type Target = ServerConn;
    #[inline]
    fn deref(&self) -> &ServerConn {
        // `conn` is only taken in Drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Pooled {
    #[inline]
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) {
            self.pool.checkin(conn, permit);
        }
    }
}

impl Drop for ServerPool {
    /// A pool dropped after a reload or a removed config says goodbye to its idle servers instead of cutting them
    /// off (which PostgreSQL logs as an unexpected EOF).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for conn in idle {
                if !conn.broken {
                    rt.spawn(conn.terminate());
                }
            }
        }
    }
}
