//! The web dashboard on the metrics port: the pages answer over HTTP with the pools, the traffic charts, a
//! project's live metrics and drift charts; the admin credentials are asked for when configured; and the pages
//! pass in headless Chromium (tests/browser/dashboard.mjs through playwright-core) without a console error,
//! with screenshots saved as artifacts (`OCELOT_ARTIFACTS`, by default target/test-artifacts).

use std::path::PathBuf;

use crate::common::*;

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("OCELOT_ARTIFACTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_pools_traffic_models_and_drift() {
    let pg = Postgres::start();
    // k is an entity number and the first feature; x drives y. The stream's x is shifted by 4 (drift).
    pg.psql_admin_db(
        "app",
        "CREATE TABLE pts (k float8, x float8, y float8);
         INSERT INTO pts SELECT g, ((g * 7919) % 1000) / 100.0, 2 * ((g * 7919) % 1000) / 100.0 + 1 FROM generate_series(1, 1000) g;
         CREATE TABLE stream (k int, x float8);
         INSERT INTO stream SELECT g, ((g * 7919) % 1000) / 100.0 + 4 FROM generate_series(1, 600) g;
         CREATE TABLE outcomes (k int, y float8);
         INSERT INTO outcomes SELECT k, 2 * x + 1 + (k % 3) FROM stream;",
    );
    let proxy = start_proxy(&config_toml(
        pg.port,
        4,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0",
        "",
    ))
    .await;
    let addr = *proxy.shared().metrics_addr.get().unwrap();
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM pgml.train('scores', 'regression', 'pts', 'y')",
        "SELECT * FROM pgml.log_predictions('scores', 0.5, actuals_table => 'outcomes', actuals_key => 'k')",
        "SELECT k, pgml.predict('scores', ARRAY[k, x]) FROM stream",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    for _ in 0..50 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    // The log writer's batch lands within its gather interval.
    for _ in 0..100 {
        let n = rows_of(
            &c.simple_query("SELECT count(*) FROM pgml.predictions")
                .await
                .unwrap(),
        );
        if n[0][0].as_deref() == Some("300") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A second passes so the traffic chart has its first point.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (code, _, overview) = http_get(addr, "/", None).await;
    assert_eq!(code, 200, "{overview}");
    for part in [
        "<section id=\"pools\">",
        "<td>app</td>",
        "id=\"throughput\"",
        "<polyline",
        "href=\"/models/scores\"",
        "<section id=\"log\">",
    ] {
        assert!(overview.contains(part), "{part} not in {overview}");
    }
    let (code, _, model) = http_get(addr, "/models/scores", None).await;
    assert_eq!(code, 200, "{model}");
    // Two features, each a chart of 12 bins × (training, window); x drifted, k (the entity number) did too.
    assert_eq!(model.matches("class=\"drift-chart\"").count(), 2, "{model}");
    assert_eq!(model.matches("<rect class=\"live\"").count(), 24);
    assert!(model.contains("figure class=\"chart drifted\""), "{model}");
    // Live metrics: model 1, 300 logged predictions, all with an outcome.
    assert!(
        model.contains(
            "<td class=\"num\">1</td><td></td><td class=\"num\">300</td><td class=\"num\">300</td>"
        ),
        "{model}"
    );
    assert_eq!(http_get(addr, "/models/nope", None).await.0, 404);
    assert_eq!(http_get(addr, "/nope", None).await.0, 404);

    browser_checks(&format!("http://{addr}"), "scores", None);
}

/// Runs the Chromium checks when Chromium and playwright-core are installed (always in CI, which installs them).
fn browser_checks(base: &str, project: &str, credentials: Option<&str>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and run npm install in tests/browser"
        );
        eprintln!(
            "skipping the browser checks: install chromium and run npm install in tests/browser"
        );
        return;
    }
    let out = artifacts();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dir.join("dashboard.mjs"))
        .arg(base)
        .arg(project)
        .arg(&out);
    if let Some(c) = credentials {
        cmd.arg(c);
    }
    let run = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "browser checks failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("browser: {stdout}");
    for shot in ["dashboard-overview.png", "dashboard-model.png"] {
        let len = std::fs::metadata(out.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_admin_credentials_when_configured() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(
        pg.port,
        2,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0\ndashboard_auth = true",
        "",
    ))
    .await;
    let addr = *proxy.shared().metrics_addr.get().unwrap();
    let (code, head, _) = http_get(addr, "/", None).await;
    assert_eq!(code, 401);
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"Ocelot\""),
        "{head}"
    );
    assert_eq!(http_get(addr, "/", Some("admin:wrong")).await.0, 401);
    assert_eq!(http_get(addr, "/", Some("admin:admi")).await.0, 401);
    assert_eq!(
        http_get(addr, "/models/x", Some("nobody:admin")).await.0,
        401
    );
    let (code, _, body) = http_get(addr, "/", Some("admin:admin")).await;
    assert_eq!(code, 200);
    assert!(body.contains("<td>app</td>"), "{body}");
    // Prometheus scrapes without credentials, as from PgCat.
    assert_eq!(http_get(addr, "/metrics", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_dashboard_always_asks_for_the_admin_credentials() {
    let pg = Postgres::start();
    let toml = config_toml(
        pg.port,
        2,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0",
        "",
    )
    .replace("host = \"127.0.0.1\"", "host = \"0.0.0.0\"");
    let proxy = start_proxy(&toml).await;
    let port = proxy.shared().metrics_addr.get().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http_get(addr, "/", None).await.0, 401);
    assert_eq!(http_get(addr, "/", Some("admin:admin")).await.0, 200);
    assert_eq!(http_get(addr, "/metrics", None).await.0, 200);
}
