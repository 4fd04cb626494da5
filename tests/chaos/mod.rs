//! Fault injection under a verifying load, shared by the fault test and the soak test.
//!
//! A durable primary (`synchronous_commit = on`) with two streaming replicas, and the Ocelot binary in front of
//! them as its own process (so its memory can be read from /proc and it reloads on SIGHUP). The load is
//! tokio-postgres clients with prepared statements: writers insert unique ids and record each one the server
//! acknowledged; readers look up rows whose value is known and count every wrong answer. A scenario injects a
//! fault, lifts it, and measures what clients saw: operations failed against those in flight at the fault, the
//! time until throughput is back, and Ocelot's memory before and after. At the end every acknowledged id must
//! be on the primary exactly once.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Rows of `kv`, each `v = k * 7`.
pub const KV_ROWS: i32 = 1000;

/// A durable primary and two streaming replicas, with the tables the load uses.
pub struct Cluster {
    pub primary: Postgres,
    pub replicas: Vec<Postgres>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let primary = Postgres::start_durable();
        primary.psql_admin_db(
            "app",
            &format!(
                "CREATE TABLE ledger (id bigint NOT NULL, writer int NOT NULL, at timestamptz DEFAULT now());
                 CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);
                 INSERT INTO kv SELECT k, k * 7 FROM generate_series(1, {KV_ROWS}) k;"
            ),
        );
        let replicas = vec![
            Postgres::replica_of(&primary),
            Postgres::replica_of(&primary),
        ];
        primary.wait_replicated(&replicas.iter().collect::<Vec<_>>());
        Cluster { primary, replicas }
    }

    /// Ocelot's config: read/write splitting over the three servers, a fast health check and short bans.
    pub fn config(&self, port: u16, pool_size: u32) -> String {
        self.config_with(port, pool_size, "")
    }

    /// [`Cluster::config`] with more `[general]` settings.
    pub fn config_with(&self, port: u16, pool_size: u32, general: &str) -> String {
        format!(
            r#"
[general]
host = "127.0.0.1"
port = {port}
admin_username = "admin"
admin_password = "admin"
connect_timeout = 5000
healthcheck_timeout = 500
ban_time = 2
shutdown_timeout = 1000
{general}

[pools.app]
query_parser_enabled = true
query_parser_read_write_splitting = true

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = {pool_size}

[pools.app.shards.0]
database = "app"
servers = [["127.0.0.1", {}, "primary"], ["127.0.0.1", {}, "replica"], ["127.0.0.1", {}, "replica"]]
"#,
            self.primary.port, self.replicas[0].port, self.replicas[1].port
        )
    }

    /// `pg_terminate_backend` on every client backend of database `app`, on every server at once, waiting until
    /// they have exited.
    pub fn terminate_backends(&self) {
        std::thread::scope(|s| {
            for pg in std::iter::once(&self.primary).chain(&self.replicas) {
                s.spawn(|| {
                    pg.psql_admin(
                        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
                         WHERE datname = 'app' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    )
                });
            }
        });
    }
}

/// The Ocelot binary under test: `OCELOT_BIN` if set (the soak script passes a release build), else the one
/// cargo built for this test.
fn binary() -> String {
    std::env::var("OCELOT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ocelot").to_owned())
}

/// Ocelot running as its own process, killed on drop.
pub struct Ocelot {
    child: Child,
    pub port: u16,
    config: PathBuf,
    /// Ocelot's log (info level), to explain a failure.
    pub log: PathBuf,
}

impl Ocelot {
    pub async fn start(cluster: &Cluster, pool_size: u32) -> Ocelot {
        Ocelot::start_with(cluster, pool_size, "").await
    }

    /// [`Ocelot::start`] with more `[general]` settings.
    pub async fn start_with(cluster: &Cluster, pool_size: u32, general: &str) -> Ocelot {
        let port = free_port();
        let config =
            std::env::temp_dir().join(format!("ocelot-chaos-{}-{port}.toml", std::process::id()));
        std::fs::write(&config, cluster.config_with(port, pool_size, general)).expect("config");
        let log = config.with_extension("log");
        let child = Command::new(binary())
            .arg(&config)
            .args([
                "-l",
                &std::env::var("OCELOT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("ocelot starts");
        let o = Ocelot {
            child,
            port,
            config,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while connect(port, "postgres", None, "app").await.is_err() {
            assert!(Instant::now() < deadline, "ocelot did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        o
    }

    /// Writes a new config and sends SIGHUP.
    pub fn reload(&self, cluster: &Cluster, pool_size: u32) {
        std::fs::write(&self.config, cluster.config(self.port, pool_size)).expect("config");
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "SIGHUP");
    }

    /// Resident memory of the Ocelot process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Ocelot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// What the load saw, shared by its workers.
#[derive(Default)]
pub struct Stats {
    /// Operations answered correctly.
    pub ops: AtomicU64,
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    /// Operations started (sent, or a connection attempted).
    pub started: AtomicU64,
    pub in_flight: AtomicU64,
    /// Operations that returned an error (the client then reconnects if its connection closed).
    pub failed: AtomicU64,
    /// Reads that returned a wrong or missing value.
    pub wrong: AtomicU64,
    /// Per worker: operations failed, to check that none failed more than the one it had in flight.
    failed_by_worker: Mutex<HashMap<usize, u64>>,
    /// Ids whose INSERT the server acknowledged.
    acked: Mutex<Vec<i64>>,
    /// The first error messages, to explain a failure.
    errors: Mutex<Vec<String>>,
    /// (time, writes, reads) every 100 ms.
    samples: Mutex<Vec<(Instant, u64, u64)>>,
}

impl Stats {
    fn fail(&self, worker: usize, e: &dyn std::fmt::Display) {
        self.failed.fetch_add(1, Relaxed);
        *self
            .failed_by_worker
            .lock()
            .unwrap()
            .entry(worker)
            .or_default() += 1;
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(format!("worker {worker}: {e}"));
        }
    }

    pub fn failed_by_worker(&self) -> HashMap<usize, u64> {
        self.failed_by_worker.lock().unwrap().clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn acked(&self) -> Vec<i64> {
        self.acked.lock().unwrap().clone()
    }

    /// Writes and reads per second between `from` and `to`, from the 100 ms samples.
    pub fn rates(&self, from: Instant, to: Instant) -> (f64, f64) {
        let samples = self.samples.lock().unwrap();
        let at = |t: Instant| {
            samples
                .iter()
                .take_while(|(s, _, _)| *s <= t)
                .last()
                .copied()
        };
        match (at(from), at(to)) {
            (Some((t0, w0, r0)), Some((t1, w1, r1))) if t1 > t0 => {
                let secs = t1.duration_since(t0).as_secs_f64();
                ((w1 - w0) as f64 / secs, (r1 - r0) as f64 / secs)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// The verifying load: writers and readers through Ocelot, each on its own connection.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, writers: usize, readers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut tasks = Vec::new();
        for w in 0..writers {
            tasks.push(tokio::spawn(writer(port, w, stop.clone(), stats.clone())));
        }
        for r in 0..readers {
            tasks.push(tokio::spawn(reader(
                port,
                writers + r,
                stop.clone(),
                stats.clone(),
            )));
        }
        let (s, st) = (stop.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            while !s.load(Relaxed) {
                let (w, r) = (st.writes.load(Relaxed), st.reads.load(Relaxed));
                st.samples.lock().unwrap().push((Instant::now(), w, r));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        Load { stop, stats, tasks }
    }

    pub async fn stop(self) -> Arc<Stats> {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            // A worker stuck on a server that never answers would hang the test: give up on it.
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        self.stats
    }
}

/// Runs `op`, counting it as started and in flight while it runs.
async fn tracked<T>(stats: &Stats, op: impl std::future::Future<Output = T>) -> T {
    stats.started.fetch_add(1, Relaxed);
    stats.in_flight.fetch_add(1, Relaxed);
    let r = op.await;
    stats.in_flight.fetch_sub(1, Relaxed);
    r
}

/// A worker's connection through Ocelot with `sql` prepared, counted as one operation; `None` (after a pause)
/// when that failed.
async fn open(
    port: u16,
    me: usize,
    stats: &Stats,
    sql: &str,
) -> Option<(tokio_postgres::Client, tokio_postgres::Statement)> {
    let prepared = tracked(stats, async {
        let c = connect(port, "postgres", None, "app").await?;
        let s = c.prepare(sql).await?;
        Ok::<_, tokio_postgres::Error>((c, s))
    })
    .await;
    match prepared {
        Ok(p) => Some(p),
        Err(e) => {
            stats.fail(me, &describe(&e));
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

async fn writer(port: u16, me: usize, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut seq: i64 = 0;
    while !stop.load(Relaxed) {
        let Some((client, insert)) = open(
            port,
            me,
            &stats,
            "INSERT INTO ledger (id, writer) VALUES ($1, $2)",
        )
        .await
        else {
            continue;
        };
        while !stop.load(Relaxed) {
            seq += 1;
            let id = ((me as i64) << 40) | seq;
            match tracked(&stats, client.execute(&insert, &[&id, &(me as i32)])).await {
                Ok(1) => {
                    stats.acked.lock().unwrap().push(id);
                    stats.ops.fetch_add(1, Relaxed);
                    stats.writes.fetch_add(1, Relaxed);
                }
                Ok(n) => {
                    stats.wrong.fetch_add(1, Relaxed);
                    stats.fail(me, &format!("INSERT reported {n} rows"));
                }
                Err(e) => {
                    stats.fail(me, &describe(&e));
                    if ends_connection(&client, &e) {
                        break;
                    }
                }
            }
        }
    }
}

async fn reader(port: u16, me: usize, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut k: i32 = me as i32 * 97;
    while !stop.load(Relaxed) {
        let Some((client, select)) = open(port, me, &stats, "SELECT v FROM kv WHERE k = $1").await
        else {
            continue;
        };
        while !stop.load(Relaxed) {
            k = k % KV_ROWS + 1;
            match tracked(&stats, client.query_opt(&select, &[&k])).await {
                Ok(Some(row)) if row.get::<_, i32>(0) == k * 7 => {
                    stats.ops.fetch_add(1, Relaxed);
                    stats.reads.fetch_add(1, Relaxed);
                }
                Ok(other) => {
                    stats.wrong.fetch_add(1, Relaxed);
                    let got = other.map(|r| r.get::<_, i32>(0));
                    stats.fail(me, &format!("k = {k}: read {got:?}"));
                }
                Err(e) => {
                    stats.fail(me, &describe(&e));
                    if ends_connection(&client, &e) {
                        break;
                    }
                }
            }
        }
    }
}

/// A client error with the server's SQLSTATE and message when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Whether the client must reconnect: its connection closed, or is about to (a FATAL error).
fn ends_connection(client: &tokio_postgres::Client, e: &tokio_postgres::Error) -> bool {
    client.is_closed() || e.as_db_error().is_none_or(|d| d.severity() != "ERROR")
}

/// What one fault did to the clients.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// Operations in flight when the fault began.
    pub in_flight: u64,
    /// Operations started while the fault was being injected (stopping a server or terminating its backends
    /// takes a moment): they too can meet it.
    pub started_during: u64,
    pub failed: u64,
    /// The most operations any one client saw fail.
    pub worst_client: u64,
    pub wrong: u64,
    /// Writes and reads per second before the fault.
    pub baseline: (f64, f64),
    /// From the fault until writes and reads each stayed at 70% of their baseline or more; `None` if they never
    /// came back.
    pub recovery: Option<Duration>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{:<48} in flight {} (+{} started during injection)  failed {} (worst client {})  wrong {}  before: {:.0} writes/s {:.0} reads/s  recovery {}  RSS {} -> {} KiB",
            self.name,
            self.in_flight,
            self.started_during,
            self.failed,
            self.worst_client,
            self.wrong,
            self.baseline.0,
            self.baseline.1,
            self.recovery
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_else(|| "never".into()),
            self.rss_before_kib,
            self.rss_after_kib
        )
    }
}

/// Injects `fault` under `load`, waits `hold`, runs `heal`, then waits for throughput to come back.
pub async fn scenario(
    name: &str,
    load: &Load,
    ocelot: &Ocelot,
    fault: impl FnOnce(),
    hold: Duration,
    heal: impl FnOnce(),
) -> Outcome {
    let stats = &load.stats;
    // Steady state first: a previous fault's bans have run out and pools have refilled.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t0 = Instant::now();
    let baseline = stats.rates(t0 - Duration::from_millis(1500), t0);
    let rss_before_kib = ocelot.rss_kib();
    let failed0 = stats.failed.load(Relaxed);
    let wrong0 = stats.wrong.load(Relaxed);
    let by_worker0 = stats.failed_by_worker();
    let in_flight0 = stats.in_flight.load(Relaxed);
    let started0 = stats.started.load(Relaxed);
    tokio::task::block_in_place(fault);
    let started_during = stats.started.load(Relaxed) - started0;
    tokio::time::sleep(hold).await;
    tokio::task::block_in_place(heal);
    let healed = Instant::now();

    // Recovered once the last two seconds ran at half the baseline or more, in each half second: a bound loose enough
    // that a busy machine (two cores, a build beside the test) does not read as a fault that never healed.
    let window = Duration::from_millis(500);
    let low = |from: Instant| {
        let (w, r) = stats.rates(from, from + window);
        w < 0.5 * baseline.0 || r < 0.5 * baseline.1
    };
    let deadline = healed + Duration::from_secs(30);
    let mut recovery = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now < healed + Duration::from_secs(2) {
            continue;
        }
        let recent = (1..=4).all(|i| !low(now - window * i));
        if recent {
            // The end of the last slow half second since the fault.
            let mut t = t0;
            let mut last_low_end = t0;
            while t + window <= now {
                if low(t) {
                    last_low_end = t + window;
                }
                t += Duration::from_millis(100);
            }
            recovery = Some(last_low_end.duration_since(t0));
            break;
        }
    }
    let by_worker = stats.failed_by_worker();
    let worst_client = by_worker
        .iter()
        .map(|(w, n)| n - by_worker0.get(w).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    Outcome {
        name: name.to_owned(),
        in_flight: in_flight0,
        started_during,
        failed: stats.failed.load(Relaxed) - failed0,
        worst_client,
        wrong: stats.wrong.load(Relaxed) - wrong0,
        baseline,
        recovery,
        rss_before_kib,
        rss_after_kib: ocelot.rss_kib(),
    }
}

/// Every acknowledged id on the primary exactly once: (acknowledged, lost, duplicated, rows in the table).
pub async fn verify_writes(cluster: &Cluster, stats: &Stats) -> (usize, usize, usize, usize) {
    let (c, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=app",
            cluster.primary.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("direct connection to the primary");
    tokio::spawn(conn);
    let rows = c
        .query("SELECT id, count(*) FROM ledger GROUP BY id", &[])
        .await
        .expect("ledger");
    let counts: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let acked = stats.acked();
    let lost = acked.iter().filter(|id| !counts.contains_key(id)).count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    (acked.len(), lost, duplicated, counts.len())
}
