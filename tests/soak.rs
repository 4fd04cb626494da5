//! Soak: mixed traffic through Ocelot (the verifying tokio-postgres load, and pgbench alternating TPC-B-like and
//! select-only runs) with a fault or a reload at regular intervals, printing throughput, errors and Ocelot's
//! memory as it goes. At the end no acknowledged write may be lost or duplicated, no read wrong, Ocelot must
//! still serve pgbench without an error, and its memory must not have grown without bound.
//!
//! CI runs two minutes of it. `scripts/soak.sh` runs an hour against a release build:
//! `OCELOT_SOAK_SECS` sets the length, `OCELOT_SOAK_REPORT_SECS` the report interval, `OCELOT_BIN` the binary.

mod chaos;
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::*;
use common::*;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// pgbench runs of 5 s back to back, alternating TPC-B-like and select-only, until `stop`.
#[derive(Default)]
struct Bench {
    transactions: AtomicU64,
    /// Runs in which a client aborted (pgbench gives a client up at its first error).
    aborted_runs: AtomicU64,
    runs: AtomicU64,
    /// Whether the last run finished without an error.
    last_ok: AtomicBool,
}

fn bench_loop(port: u16, stop: Arc<AtomicBool>, bench: Arc<Bench>) {
    let mut select_only = false;
    while !stop.load(Relaxed) {
        let mut args = vec!["-n", "-c", "4", "-j", "1", "-T", "5"];
        if select_only {
            args.push("-S");
        }
        select_only = !select_only;
        let (ok, out, _) = pgbench(port, &args);
        let txns = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        bench.transactions.fetch_add(txns, Relaxed);
        bench.runs.fetch_add(1, Relaxed);
        if !ok {
            bench.aborted_runs.fetch_add(1, Relaxed);
        }
        bench.last_ok.store(ok, Relaxed);
    }
}

/// The `i`-th fault of the cycle, injected and lifted; returns its name.
async fn inject(i: u64, cluster: &Cluster, ocelot: &Ocelot, pool_size: &mut u32) -> &'static str {
    let (r, p) = (&cluster.replicas[i as usize % 2], &cluster.primary);
    match i % 5 {
        0 => {
            tokio::task::block_in_place(|| r.stop());
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::block_in_place(|| r.restart());
            "replica killed for 2 s"
        }
        1 => {
            tokio::task::block_in_place(|| r.freeze());
            tokio::time::sleep(Duration::from_secs(3)).await;
            tokio::task::block_in_place(|| r.thaw());
            "replica frozen for 3 s"
        }
        2 => {
            tokio::task::block_in_place(|| cluster.terminate_backends());
            "backends terminated"
        }
        3 => {
            tokio::task::block_in_place(|| p.stop());
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::block_in_place(|| p.restart());
            "primary killed for 1 s"
        }
        _ => {
            *pool_size = if *pool_size == 10 { 12 } else { 10 };
            ocelot.reload(cluster, *pool_size);
            "config reloaded"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_faults_and_reloads() {
    let total = Duration::from_secs(env_secs("OCELOT_SOAK_SECS", 120));
    let report = Duration::from_secs(env_secs(
        "OCELOT_SOAK_REPORT_SECS",
        (total.as_secs() / 4).clamp(10, 60),
    ));
    let fault_every = Duration::from_secs((total.as_secs() / 6).clamp(20, 60));
    let cluster = Cluster::start();
    let mut ocelot = Ocelot::start(&cluster, 10).await;
    pgbench_init(ocelot.port).await;
    cluster
        .primary
        .wait_replicated(&cluster.replicas.iter().collect::<Vec<_>>());

    let load = Load::start(ocelot.port, 2, 2);
    let stop_bench = Arc::new(AtomicBool::new(false));
    let bench = Arc::new(Bench::default());
    let bench_thread = {
        let (port, stop, bench) = (ocelot.port, stop_bench.clone(), bench.clone());
        std::thread::spawn(move || bench_loop(port, stop, bench))
    };

    let started = Instant::now();
    // Faults stop a little before the end, so the last pgbench runs show the state Ocelot is left in.
    let faults_until = total.saturating_sub(Duration::from_secs(15));
    let mut next_fault = Duration::from_secs(15).min(fault_every);
    let mut next_report = report;
    let mut faults = 0u64;
    let mut pool_size = 10;
    let mut rss_warm = 0;
    let mut rss_peak = 0;
    let (mut last_ops, mut last_txns, mut last_t) = (0u64, 0u64, Duration::ZERO);
    println!(
        "soak: {} s, a fault every {} s",
        total.as_secs(),
        fault_every.as_secs()
    );
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = started.elapsed();
        if t >= next_fault && t < faults_until {
            next_fault += fault_every;
            let name = inject(faults, &cluster, &ocelot, &mut pool_size).await;
            faults += 1;
            println!("{:>5} s  fault: {name}", t.as_secs());
        }
        if t >= next_report {
            next_report += report;
            let rss = ocelot.rss_kib();
            if rss_warm == 0 {
                rss_warm = rss;
            }
            rss_peak = rss_peak.max(rss);
            let s = &load.stats;
            let ops = s.ops.load(Relaxed);
            let txns = bench.transactions.load(Relaxed);
            let secs = (t - last_t).as_secs_f64();
            println!(
                "{:>5} s  load {:>6.0} ops/s  failed {}  wrong {}  |  pgbench {:>6.0} tps, {} of {} runs with an aborted client  |  Ocelot RSS {} KiB",
                t.as_secs(),
                (ops - last_ops) as f64 / secs,
                s.failed.load(Relaxed),
                s.wrong.load(Relaxed),
                (txns - last_txns) as f64 / secs,
                bench.aborted_runs.load(Relaxed),
                bench.runs.load(Relaxed),
                rss
            );
            (last_ops, last_txns, last_t) = (ops, txns, t);
        }
    }
    stop_bench.store(true, Relaxed);
    let stats = load.stop().await;
    tokio::task::block_in_place(|| bench_thread.join()).expect("pgbench thread");
    let (acked, lost, duplicated, _) = verify_writes(&cluster, &stats).await;
    let rss_end = ocelot.rss_kib();
    let failed = stats.failed.load(Relaxed);
    println!(
        "soak done: {faults} faults, writes acknowledged {acked}, lost {lost}, duplicated {duplicated}; load failed {failed}, wrong {}; pgbench {} transactions, {} of {} runs with an aborted client; Ocelot RSS warm {rss_warm} KiB, peak {rss_peak} KiB, end {rss_end} KiB",
        stats.wrong.load(Relaxed),
        bench.transactions.load(Relaxed),
        bench.aborted_runs.load(Relaxed),
        bench.runs.load(Relaxed),
    );
    assert!(ocelot.is_running(), "Ocelot exited");
    assert_eq!(stats.wrong.load(Relaxed), 0, "{:#?}", stats.errors());
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(duplicated, 0, "writes applied twice");
    // Each fault may fail what the four load clients had in flight.
    assert!(
        failed <= faults * 4,
        "{failed} failures: {:#?}",
        stats.errors()
    );
    assert!(
        bench.last_ok.load(Relaxed),
        "pgbench fails after the faults"
    );
    assert!(acked > 100, "too few writes to mean anything: {acked}");
    // Pools, caches and buffers reach their size early; growth beyond that would be a leak.
    assert!(
        rss_end < rss_warm + 64 * 1024,
        "Ocelot grew from {rss_warm} KiB to {rss_end} KiB"
    );
}
