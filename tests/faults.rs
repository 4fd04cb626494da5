//! Fault injection under load: while writers and readers run through Ocelot, servers are killed, frozen,
//! have their backends terminated, restarted, and the config is reloaded. For every fault: no acknowledged write
//! lost or duplicated, no wrong read, no more failed operations than were in flight (and at most one per client
//! on average), throughput back afterwards. The figures are printed (run with `--nocapture`) and quoted in the README.

mod chaos;
mod common;

use std::time::Duration;

use chaos::*;

/// Writers plus readers.
const CLIENTS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_verifying_load() {
    let cluster = Cluster::start();
    let ocelot = Ocelot::start(&cluster, 8).await;
    let load = Load::start(ocelot.port, CLIENTS as usize / 2, CLIENTS as usize / 2);
    let rss_start = ocelot.rss_kib();
    let [r0, _] = [&cluster.replicas[0], &cluster.replicas[1]];
    let p = &cluster.primary;

    let mut outcomes = Vec::new();
    outcomes.push(
        scenario(
            "replica killed (immediate stop), back after 2 s",
            &load,
            &ocelot,
            || r0.stop(),
            Duration::from_secs(2),
            || r0.restart(),
        )
        .await,
    );
    outcomes.push(
        scenario(
            "replica frozen (SIGSTOP) for 3 s",
            &load,
            &ocelot,
            || r0.freeze(),
            Duration::from_secs(3),
            || r0.thaw(),
        )
        .await,
    );
    outcomes.push(
        scenario(
            "every backend terminated (pg_terminate_backend)",
            &load,
            &ocelot,
            || cluster.terminate_backends(),
            Duration::ZERO,
            || {},
        )
        .await,
    );
    outcomes.push(
        scenario(
            "primary killed (immediate stop), back after 1 s",
            &load,
            &ocelot,
            || p.stop(),
            Duration::from_secs(1),
            || p.restart(),
        )
        .await,
    );
    // The replicas stream again only once they retry (wal_retrieve_retry_interval, 5 s): until then the machine does
    // no WAL shipping or replay, runs the load about twice as fast, and that would be the next baseline.
    tokio::task::block_in_place(|| p.wait_replicated(&cluster.replicas.iter().collect::<Vec<_>>()));
    outcomes.push(
        scenario(
            "primary frozen (SIGSTOP) for 2 s",
            &load,
            &ocelot,
            || p.freeze(),
            Duration::from_secs(2),
            || p.thaw(),
        )
        .await,
    );
    outcomes.push(
        scenario(
            "config reloaded (pool_size 8 -> 12 -> 8)",
            &load,
            &ocelot,
            || ocelot.reload(&cluster, 12),
            Duration::from_secs(1),
            || ocelot.reload(&cluster, 8),
        )
        .await,
    );
    let stats = load.stop().await;
    let (acked, lost, duplicated, rows) = verify_writes(&cluster, &stats).await;
    let rss_end = ocelot.rss_kib();

    for o in &outcomes {
        println!("{o}");
    }
    println!(
        "writes acknowledged {acked}, lost {lost}, duplicated {duplicated} ({rows} rows); reads and writes answered {}; Ocelot RSS {rss_start} -> {rss_end} KiB",
        stats.ops.load(std::sync::atomic::Ordering::Relaxed)
    );
    let errors = stats.errors();
    let log = ocelot.log.display();
    for o in &outcomes {
        assert_eq!(o.wrong, 0, "{o}\n{errors:#?}\nOcelot's log: {log}");
        // No more failures than operations in flight when the fault hit, and never more than there are clients.
        assert!(
            o.failed <= o.in_flight + o.started_during,
            "{o}\n{errors:#?}"
        );
        assert!(o.failed <= CLIENTS, "{o}\n{errors:#?}");
        assert!(o.recovery.is_some(), "{o}");
    }
    assert!(acked > 1000, "too few writes to mean anything: {acked}");
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(duplicated, 0, "writes applied twice");
}
