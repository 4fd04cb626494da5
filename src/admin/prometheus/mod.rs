//! The Prometheus exporter: `GET /metrics` on `host:prometheus_exporter_port` when `enable_prometheus_exporter`
//! is true, in the text exposition format. PgCat's families keep PgCat's names and labels (`pgcat_stats_*`,
//! `pgcat_pools_*`, `pgcat_servers_*`, `pgcat_databases_*`) so existing dashboards work; Ocelot's own are
//! `ocelot_*`. Each scrape reads the counters where they live; nothing is kept for the exporter. The same
//! listener serves the web dashboard (`dashboard`) on every other GET path.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::dashboard;
use crate::database::UserPool;
use crate::pool::ServerPool;
use crate::shared::{Shared, StartError};
use crate::stats::{ConnInfo, ConnState, Totals};

mod models;
use models::{inference_families, router_families};

/// Binds the exporter and serves scrapes for as long as the proxy lives.
pub(crate) async fn spawn(shared: &Arc<Shared>) -> Result<(), StartError> {
    let g = &shared.snapshot().config.general;
    let addr = format!("{}:{}", g.host, g.prometheus_exporter_port.max(0));
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    if let Ok(a) = listener.local_addr() {
        let _ = shared.metrics_addr.set(a);
        tracing::info!("Prometheus exporter on http://{a}/metrics, dashboard on http://{a}/");
    }
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let Some(shared) = weak.upgrade() else { return };
            tokio::spawn(async move {
                let _ = answer(stream, &shared).await;
            });
        }
    });
    Ok(())
}

/// Reads one HTTP request head and answers it.
async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let page = std::str::from_utf8(path).ok().and_then(dashboard::route);
    let mut extra = "";
    let (status, ctype, body) = match (method, path, page) {
        (b"GET", b"/metrics", _) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(shared),
        ),
        (b"GET", _, Some(_)) if !dashboard::authorized(shared, &String::from_utf8_lossy(&head)) => {
            extra = "WWW-Authenticate: Basic realm=\"Ocelot\", charset=\"UTF-8\"\r\n";
            (
                "401 Unauthorized",
                "text/plain",
                "the dashboard asks for the admin credentials\n".into(),
            )
        }
        (b"GET", _, Some(page)) => match dashboard::render(shared, &page).await {
            Some(html) => ("200 OK", "text/html; charset=utf-8", html),
            None => (
                "404 Not Found",
                "text/plain",
                "no model of this project has been served by this Ocelot\n".into(),
            ),
        },
        (b"GET", _, None) => (
            "404 Not Found",
            "text/plain",
            "not found: try / or /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Escapes a label value.
pub(super) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family being written: its samples follow its HELP and TYPE lines.
pub(super) struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }
}

/// PgCat's per-address labels.
fn address_labels(s: &ServerPool) -> String {
    let a = &s.address;
    format!(
        "host=\"{}\",shard=\"{}\",pool=\"{}\",role=\"{}\",index=\"{}\",database=\"{}\",username=\"{}\"",
        esc(&a.host),
        a.shard,
        esc(&a.pool),
        a.role,
        a.index,
        esc(&a.database),
        esc(&a.user)
    )
}

/// The whole exposition.
pub(crate) fn render(shared: &Shared) -> String {
    let snapshot = shared.snapshot();
    let all = snapshot.cluster.all_pools();
    let pools: Vec<&Arc<UserPool>> = all.iter().collect();
    let servers: Vec<&Arc<ServerPool>> = pools.iter().flat_map(|p| p.server_pools()).collect();
    let mut out = String::with_capacity(16 * 1024);
    stats_families(&mut out, &servers);
    pools_families(&mut out, shared, &pools);
    servers_families(&mut out, &pools);
    ocelot_families(&mut out, shared, &pools);
    out
}

type Pick = fn(&Totals) -> u64;

/// PgCat's `pgcat_stats_*` families: name suffix, whether it is a per-second average (a gauge of the last
/// period) rather than a total, the figure, help text.
const STATS_FAMILIES: [(&str, bool, Pick, &str); 15] = [
    (
        "total_query_count",
        false,
        |x| x.query_count,
        "requests answered",
    ),
    (
        "total_query_time",
        false,
        |x| x.query_time_us,
        "microseconds spent answering requests",
    ),
    (
        "total_received",
        false,
        |x| x.bytes_received,
        "bytes received from the server",
    ),
    (
        "total_sent",
        false,
        |x| x.bytes_sent,
        "bytes sent to the server",
    ),
    ("total_xact_count", false, |x| x.xact_count, "transactions"),
    (
        "total_xact_time",
        false,
        |x| x.xact_time_us,
        "microseconds spent in transactions",
    ),
    (
        "total_wait_time",
        false,
        |x| x.wait_time_us,
        "microseconds clients waited for a server",
    ),
    (
        "avg_query_count",
        true,
        |x| x.query_count,
        "requests per second over the last period",
    ),
    (
        "avg_query_time",
        true,
        |x| x.query_time_us,
        "mean request time in microseconds",
    ),
    (
        "avg_recv",
        true,
        |x| x.bytes_received,
        "bytes received per second",
    ),
    ("avg_sent", true, |x| x.bytes_sent, "bytes sent per second"),
    ("avg_errors", true, |x| x.errors, "errors per second"),
    (
        "avg_xact_count",
        true,
        |x| x.xact_count,
        "transactions per second",
    ),
    (
        "avg_xact_time",
        true,
        |x| x.xact_time_us,
        "mean transaction time in microseconds",
    ),
    (
        "avg_wait_time",
        true,
        |x| x.wait_time_us,
        "mean wait for a server in microseconds",
    ),
];

fn stats_families(out: &mut String, servers: &[&Arc<ServerPool>]) {
    let totals: Vec<(String, Totals, Totals)> = servers
        .iter()
        .map(|s| (address_labels(s), s.stats.totals(), s.stats.averages()))
        .collect();
    for (suffix, avg, pick, help) in STATS_FAMILIES {
        let name = format!("pgcat_stats_{suffix}");
        let mut f = Family::new(out, &name, if avg { "gauge" } else { "counter" }, help);
        for (labels, t, a) in &totals {
            f.sample(&name, labels, pick(if avg { a } else { t }));
        }
    }
}

fn pools_families(out: &mut String, shared: &Shared, pools: &[&Arc<UserPool>]) {
    let clients = shared.clients.list();
    // (labels, [cl_idle, cl_active, cl_waiting], maxwait_us, [sv_active, sv_idle, sv_used, sv_tested, sv_login])
    let rows: Vec<(String, [u64; 3], u64, [u64; 5])> = pools
        .iter()
        .map(|p| {
            let mut cl = [0u64; 3];
            let mut maxwait = 0;
            for c in clients
                .iter()
                .filter(|c| c.database == p.database && c.user == p.user)
            {
                cl[c.state() as usize] += 1;
                maxwait = maxwait.max(c.waiting_us());
            }
            let mut sv = [0u64; 5];
            for s in p.server_pools() {
                for c in s.connections() {
                    sv[conn_slot(c.state())] += 1;
                }
                sv[4] += s.login_count() as u64;
            }
            let labels = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
            (labels, cl, maxwait, sv)
        })
        .collect();
    type Pick = fn(&([u64; 3], u64, [u64; 5])) -> u64;
    let families: [(&str, Pick, &str); 9] = [
        (
            "maxwait_us",
            |r| r.1 % 1_000_000,
            "microsecond part of the longest current wait",
        ),
        (
            "maxwait",
            |r| r.1 / 1_000_000,
            "seconds of the longest current wait",
        ),
        ("cl_waiting", |r| r.0[2], "clients waiting for a server"),
        ("cl_active", |r| r.0[1], "clients holding a server"),
        ("cl_idle", |r| r.0[0], "clients holding no server"),
        ("sv_idle", |r| r.2[1], "idle server connections"),
        ("sv_active", |r| r.2[0], "server connections in use"),
        ("sv_login", |r| r.2[4], "server connections being opened"),
        (
            "sv_tested",
            |r| r.2[3],
            "server connections being health-checked",
        ),
    ];
    for (suffix, pick, help) in families {
        let name = format!("pgcat_pools_{suffix}");
        let mut f = Family::new(out, &name, "gauge", help);
        for (labels, cl, maxwait, sv) in &rows {
            f.sample(&name, labels, pick(&(*cl, *maxwait, *sv)));
        }
    }
}

fn conn_slot(s: ConnState) -> usize {
    match s {
        ConnState::Active => 0,
        ConnState::Idle => 1,
        ConnState::Used => 2,
        ConnState::Tested => 3,
    }
}

/// The per-address families: name, type, index in the figures `servers_families` gathers, help text.
const SERVER_FAMILIES: [(&str, &str, usize, &str); 13] = [
    (
        "pgcat_servers_bytes_received",
        "counter",
        0,
        "bytes received from the server",
    ),
    (
        "pgcat_servers_bytes_sent",
        "counter",
        1,
        "bytes sent to the server",
    ),
    (
        "pgcat_servers_transaction_count",
        "counter",
        2,
        "transactions",
    ),
    (
        "pgcat_servers_query_count",
        "counter",
        3,
        "requests answered",
    ),
    (
        "pgcat_servers_error_count",
        "counter",
        4,
        "errors the server returned",
    ),
    ("pgcat_servers_idle_count", "gauge", 5, "idle connections"),
    (
        "pgcat_servers_active_count",
        "gauge",
        6,
        "connections in use",
    ),
    (
        "pgcat_servers_tested_count",
        "gauge",
        7,
        "connections being health-checked",
    ),
    (
        "pgcat_servers_login_count",
        "gauge",
        8,
        "connections being opened",
    ),
    (
        "pgcat_servers_is_banned",
        "gauge",
        9,
        "1 while the server is banned",
    ),
    (
        "pgcat_servers_is_paused",
        "gauge",
        10,
        "1 while the pool is paused",
    ),
    (
        "pgcat_databases_pool_size",
        "gauge",
        11,
        "configured pool_size",
    ),
    (
        "pgcat_databases_current_connections",
        "gauge",
        12,
        "open connections",
    ),
];

fn servers_families(out: &mut String, pools: &[&Arc<UserPool>]) {
    // Per address: [bytes_received, bytes_sent, transactions, queries, errors, idle, active, tested, login,
    // banned, paused, pool_size, current_connections]
    let rows: Vec<(String, [u64; 13])> = pools
        .iter()
        .flat_map(|p| p.server_pools().map(move |s| (p, s)))
        .map(|(p, s)| {
            let t = s.stats.totals();
            let mut by_state = [0u64; 4];
            for c in s.connections() {
                by_state[conn_slot(c.state())] += 1;
            }
            (
                address_labels(s),
                [
                    t.bytes_received,
                    t.bytes_sent,
                    t.xact_count,
                    t.query_count,
                    t.errors,
                    by_state[1],
                    by_state[0] + by_state[2],
                    by_state[3],
                    s.login_count() as u64,
                    s.ban_state().is_some() as u64,
                    p.is_paused() as u64,
                    s.settings().pool_size as u64,
                    s.open_count() as u64,
                ],
            )
        })
        .collect();
    for (name, kind, i, help) in SERVER_FAMILIES {
        let mut f = Family::new(out, name, kind, help);
        for (labels, v) in &rows {
            f.sample(name, labels, v[i]);
        }
    }
}

fn ocelot_families(out: &mut String, shared: &Shared, pools: &[&Arc<UserPool>]) {
    let mut f = Family::new(out, "ocelot_clients", "gauge", "clients logged in");
    f.sample("ocelot_clients", "", shared.clients.list().len());
    let mut f = Family::new(
        out,
        "ocelot_reloads_total",
        "counter",
        "config reloads applied",
    );
    f.sample(
        "ocelot_reloads_total",
        "",
        shared.reloads.load(Ordering::Relaxed),
    );
    let mut f = Family::new(
        out,
        "ocelot_reload_failures_total",
        "counter",
        "config reloads refused",
    );
    f.sample(
        "ocelot_reload_failures_total",
        "",
        shared.reload_failures.load(Ordering::Relaxed),
    );
    let mut f = Family::new(out, "ocelot_bans", "gauge", "servers banned now");
    let banned: usize = pools
        .iter()
        .flat_map(|p| p.server_pools())
        .filter(|s| s.ban_state().is_some())
        .count();
    f.sample("ocelot_bans", "", banned);
    let mut f = Family::new(
        out,
        "ocelot_prepared_statements",
        "gauge",
        "distinct prepared statements known to a pool",
    );
    for p in pools {
        let labels = format!("pool=\"{}\",user=\"{}\"", esc(&p.database), esc(&p.user));
        f.sample("ocelot_prepared_statements", &labels, p.statements.len());
    }
    let mut prepare = [0u64; 3];
    for s in pools.iter().flat_map(|p| p.server_pools()) {
        for c in s.connections() {
            prepare[0] += ConnInfo::get(&c.prepare_hits);
            prepare[1] += ConnInfo::get(&c.prepare_misses);
            prepare[2] += ConnInfo::get(&c.prepare_evictions);
        }
    }
    for (i, (name, help)) in [
        (
            "ocelot_prepare_cache_hits",
            "statements already prepared on the server (open connections)",
        ),
        (
            "ocelot_prepare_cache_misses",
            "statements Ocelot had to prepare (open connections)",
        ),
        (
            "ocelot_prepare_cache_evictions",
            "statements closed to stay within the cache size",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = Family::new(out, name, "gauge", help);
        f.sample(name, "", prepare[i]);
    }
    router_families(out, pools);
    inference_families(out, pools);
}
