//! Prediction logging (`pgml.log_predictions`, `pgml.predictions`, `pgml.live_metrics`): a sampled share of the
//! predictions reaches the registry under load without failing any, and the live metrics equal the same metrics
//! computed here from the logged rows and the actual outcomes.

use crate::common::*;

/// Polls `sql` (a count) until it reaches `want` or stops growing for two seconds; returns the last count.
async fn settled_count(c: &tokio_postgres::Client, sql: &str, want: i64) -> i64 {
    let mut last = (-1, std::time::Instant::now());
    loop {
        let n: i64 = rows_of(&c.simple_query(sql).await.unwrap())[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        if n == want {
            return n;
        }
        if n != last.0 {
            last = (n, std::time::Instant::now());
        } else if last.1.elapsed() > std::time::Duration::from_secs(2) {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Bad settings are refused with the right codes, and the client goes on.
async fn refuses_bad_settings(c: &tokio_postgres::Client) {
    for (sql, code) in [
        ("SELECT * FROM pgml.log_predictions('line', 2)", "22023"),
        ("SELECT * FROM pgml.log_predictions('nope', 0.5)", "22023"),
        (
            "SELECT * FROM pgml.log_predictions('line', 0.5, actuals_table => 'missing', actuals_key => 'id')",
            "42P01",
        ),
        (
            "SELECT * FROM pgml.log_predictions('line', 0.5, actuals_table => 'outcomes', actuals_key => 'nope')",
            "42P01",
        ),
        (
            "SELECT * FROM pgml.log_predictions('line', 0.5, actuals_table => 'outcomes')",
            "22023",
        ),
        ("SELECT * FROM pgml.live_metrics('nope')", "22023"),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), code, "{sql}: {e:?}");
    }
}

fn num(v: &Option<String>) -> f64 {
    v.as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_predictions_is_logged_under_load_and_scored_against_actuals() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 3 * g + 1 FROM generate_series(1, 400) g;
         CREATE TABLE outcomes (id int PRIMARY KEY, y float8);
         INSERT INTO outcomes SELECT g, 3 * g + 1 + (g % 7) - 3 FROM generate_series(1, 300) g;",
    );
    let proxy = start_proxy(&config_toml(
        pg.port,
        8,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0",
        "",
    ))
    .await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    c.simple_query("SELECT * FROM pgml.train('line', 'regression', 'line', 'y')")
        .await
        .unwrap();
    let set = rows_of(
        &c.simple_query(
            "SELECT * FROM pgml.log_predictions('line', sample_rate => 0.25, actuals_table => 'outcomes', actuals_key => 'id')",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        set,
        vec![vec![
            Some("line".into()),
            Some("0.25".into()),
            Some("outcomes".into()),
            Some("id".into()),
            None
        ]]
    );

    // 50 clients, 200 predictions each: every one answered, and right.
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "postgres", None, "app").await.unwrap();
            for j in 0..200u32 {
                let x = (i * 200 + j) % 400 + 1;
                let rows = rows_of(
                    &c.simple_query(&format!("SELECT pgml.predict('line', ARRAY[{x}])"))
                        .await
                        .unwrap(),
                );
                let y = num(&rows[0][0]);
                assert!((y - f64::from(3 * x + 1)).abs() < 0.01, "{x}: {y}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The sampler keeps exactly a quarter; the writer may still be on its last batch.
    let logged = settled_count(
        &c,
        "SELECT count(*) FROM pgml.predictions WHERE project = 'line'",
        2500,
    )
    .await;
    assert_eq!(logged, 2500);
    let metrics = metrics_text(&proxy).await;
    for (result, n) in [
        ("queued", 2500),
        ("written", 2500),
        ("dropped", 0),
        ("failed", 0),
    ] {
        let line = format!(
            "ocelot_prediction_log_rows_total{{pool=\"app\",user=\"postgres\",result=\"{result}\"}} {n}\n"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // The rows: model 1, no arm, the entity key (the first feature), the raw features and the prediction.
    let rows = rows_of(
        &c.simple_query(
            "SELECT model_id, arm, key, features[1], prediction FROM pgml.predictions WHERE project = 'line'",
        )
        .await
        .unwrap(),
    );
    for r in &rows {
        assert_eq!(r[0].as_deref(), Some("1"));
        assert_eq!(r[1], None);
        let x = num(&r[3]);
        assert_eq!(r[2].as_deref(), Some(format!("{x}").as_str()));
        assert!((num(&r[4]) - (3.0 * x + 1.0)).abs() < 0.01);
    }

    // Live metrics against the outcomes (ids 1 to 300 have one), computed here from the same rows.
    let joined = rows_of(
        &c.simple_query(
            "SELECT p.prediction, o.y FROM pgml.predictions p JOIN outcomes o ON o.id::text = p.key WHERE p.project = 'line'",
        )
        .await
        .unwrap(),
    );
    let pairs: Vec<(f64, f64)> = joined.iter().map(|r| (num(&r[0]), num(&r[1]))).collect();
    let n = pairs.len() as f64;
    let mean = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let ss_res: f64 = pairs.iter().map(|(p, y)| (y - p).powi(2)).sum();
    let ss_tot: f64 = pairs.iter().map(|(_, y)| (y - mean).powi(2)).sum();
    let mae = pairs.iter().map(|(p, y)| (y - p).abs()).sum::<f64>() / n;
    let live = rows_of(
        &c.simple_query("SELECT * FROM pgml.live_metrics('line')")
            .await
            .unwrap(),
    );
    assert_eq!(live.len(), 1, "{live:?}");
    let l = &live[0];
    assert_eq!(l[0].as_deref(), Some("1"));
    assert_eq!(l[2].as_deref(), Some("2500"));
    assert_eq!(l[3].as_deref(), Some(pairs.len().to_string().as_str()));
    assert!(pairs.len() > 1500 && pairs.len() < 2500, "{}", pairs.len());
    assert!((num(&l[4]) - (1.0 - ss_res / ss_tot)).abs() < 1e-9, "{l:?}");
    assert!((num(&l[5]) - mae).abs() < 1e-9, "{l:?}");
    assert!(l[6].is_none() && l[7].is_none());

    // Rate 0 stops logging.
    c.simple_query("SELECT * FROM pgml.log_predictions('line', 0)")
        .await
        .unwrap();
    for x in 1..=20 {
        c.simple_query(&format!("SELECT pgml.predict('line', ARRAY[{x}])"))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = settled_count(&c, "SELECT count(*) FROM pgml.predictions", 2500).await;
    assert_eq!(after, 2500);

    refuses_bad_settings(&c).await;
    c.simple_query("SELECT 1").await.unwrap();
}

/// Classification scored per arm of an A/B test, with every row of a per-row prediction logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_row_predictions_of_two_arms_are_scored_by_accuracy_and_f1() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE pts (x float8, label int);
         INSERT INTO pts SELECT g, (g > 100)::int FROM generate_series(1, 200) g;
         CREATE TABLE pts_b (x float8, label int);
         INSERT INTO pts_b SELECT g, (g > 150)::int FROM generate_series(1, 200) g;
         CREATE TABLE truth (x int, outcome int);
         INSERT INTO truth SELECT g, CASE WHEN g % 9 = 0 THEN 1 - (g > 120)::int ELSE (g > 120)::int END
           FROM generate_series(1, 200) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for sql in [
        "SELECT * FROM pgml.train('cls', 'classification', 'pts', 'label', algorithm => 'xgboost')",
        "SELECT * FROM pgml.train('cls', 'classification', 'pts_b', 'label', algorithm => 'xgboost', automatic_deploy => false)",
        "SELECT * FROM pgml.deploy_ab('cls', model_b => 2, share => 0.4)",
        "SELECT * FROM pgml.log_predictions('cls', 1, actuals_table => 'truth', actuals_key => 'x', actuals_column => 'outcome')",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    let answered = rows_of(
        &c.simple_query("SELECT x, pgml.predict('cls', ARRAY[x]) FROM pts")
            .await
            .unwrap(),
    );
    assert_eq!(answered.len(), 200);
    let logged = settled_count(&c, "SELECT count(*) FROM pgml.predictions", 200).await;
    assert_eq!(logged, 200);

    let rows = rows_of(
        &c.simple_query(
            "SELECT p.model_id, p.arm, p.prediction, t.outcome FROM pgml.predictions p JOIN truth t ON t.x::text = p.key ORDER BY 1",
        )
        .await
        .unwrap(),
    );
    assert_eq!(rows.len(), 200);
    let live = rows_of(
        &c.simple_query("SELECT * FROM pgml.live_metrics('cls')")
            .await
            .unwrap(),
    );
    assert_eq!(live.len(), 2, "{live:?}");
    for (l, (model, arm)) in live.iter().zip([("1", "A"), ("2", "B")]) {
        assert_eq!(l[0].as_deref(), Some(model));
        assert_eq!(l[1].as_deref(), Some(arm));
        let mine: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r[0].as_deref() == Some(model))
            .inspect(|r| assert_eq!(r[1].as_deref(), Some(arm)))
            .map(|r| (num(&r[2]), num(&r[3])))
            .collect();
        assert!(mine.len() > 40, "{model}: {}", mine.len());
        let accuracy = mine.iter().filter(|(p, y)| p == y).count() as f64 / mine.len() as f64;
        // Macro F1: the mean over the classes seen of 2·tp / (2·tp + fp + fn).
        let mut classes: Vec<f64> = mine.iter().flat_map(|(p, y)| [*p, *y]).collect();
        classes.sort_by(f64::total_cmp);
        classes.dedup();
        let f1 = classes
            .iter()
            .map(|c| {
                let tp = mine.iter().filter(|(p, y)| p == c && y == c).count() as f64;
                let fp = mine.iter().filter(|(p, y)| p == c && y != c).count() as f64;
                let fneg = mine.iter().filter(|(p, y)| p != c && y == c).count() as f64;
                2.0 * tp / (2.0 * tp + fp + fneg)
            })
            .sum::<f64>()
            / classes.len() as f64;
        assert_eq!(l[2].as_deref(), Some(mine.len().to_string().as_str()));
        assert_eq!(l[3], l[2]);
        assert!(l[4].is_none() && l[5].is_none());
        assert!((num(&l[6]) - accuracy).abs() < 1e-9, "{l:?} vs {accuracy}");
        assert!((num(&l[7]) - f1).abs() < 1e-9, "{l:?} vs {f1}");
        assert!(accuracy > 0.5 && accuracy < 1.0, "{accuracy}");
    }
    // Filtered like any table: the rows are inlined into the query.
    let b = rows_of(
        &c.simple_query("SELECT arm, f1 FROM pgml.live_metrics('cls') m WHERE m.model_id = 2")
            .await
            .unwrap(),
    );
    assert_eq!(b, vec![vec![Some("B".into()), live[1][7].clone()]]);
}

/// A queue the writer cannot keep up with drops samples and counts them; every prediction is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_samples_and_counts_them_without_failing_predictions() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 3 * g + 1 FROM generate_series(1, 100) g;",
    );
    let proxy = start_proxy(&config_toml(
        pg.port,
        4,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0\n[inference]\nprediction_log_queue = 8",
        "",
    ))
    .await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for sql in [
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y')",
        "SELECT * FROM pgml.log_predictions('line', 1)",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "postgres", None, "app").await.unwrap();
            for j in 0..100u32 {
                let x = (i + j) % 100 + 1;
                let rows = rows_of(
                    &c.simple_query(&format!("SELECT pgml.predict('line', ARRAY[{x}])"))
                        .await
                        .unwrap(),
                );
                assert!((num(&rows[0][0]) - f64::from(3 * x + 1)).abs() < 0.01);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counters = &proxy
        .shared()
        .snapshot()
        .cluster
        .all_pools()
        .into_iter()
        .find(|p| p.user == "postgres")
        .unwrap()
        .models
        .log
        .counters;
    let [queued, _, dropped, failed] = counters.get();
    assert_eq!(queued + dropped, 2000);
    assert!(
        dropped > 0 && queued >= 8,
        "queued {queued}, dropped {dropped}"
    );
    assert_eq!(failed, 0);
    // What was queued is written.
    let written = settled_count(&c, "SELECT count(*) FROM pgml.predictions", queued as i64).await;
    assert_eq!(written, queued as i64);
    assert_eq!(counters.get()[1], queued);
    let metrics = metrics_text(&proxy).await;
    let line = format!(
        "ocelot_prediction_log_rows_total{{pool=\"app\",user=\"postgres\",result=\"dropped\"}} {dropped}\n"
    );
    assert!(metrics.contains(&line), "{line} in {metrics}");
}
