//! Model operations in the data path: A/B and canary tests of a project's models (`pgml.deploy_ab`, `ab_key`,
//! `SHOW AB`, `END AB`, `pgml.end_ab`).

use crate::common::*;
use ocelot::inference::ops::ab::{arm_of, number_key};

/// Which model answered `pgml.predict('line', ARRAY[x])`: A (fit to y = 3x + 1) or B (fit to y = 1000 - x); the
/// two lines are at least 1 apart at every integer x.
fn arm_of_answer(x: i64, answer: &str) -> usize {
    let y: f64 = answer.parse().unwrap();
    let (a, b) = ((3 * x + 1) as f64, (1000 - x) as f64);
    assert!(
        (y - a).abs() < 0.25 || (y - b).abs() < 0.25,
        "key {x}: {y} is neither model's answer"
    );
    usize::from((y - b).abs() < (y - a).abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_tests_split_predictions_by_key() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 3 * g + 1 FROM generate_series(1, 400) g;
         CREATE TABLE line_b (x float8, y float8);
         INSERT INTO line_b SELECT g, 1000 - g FROM generate_series(1, 400) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for sql in [
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y', test_sampling => 'last')",
        "SELECT * FROM pgml.train('line', 'regression', 'line_b', 'y', test_sampling => 'last', automatic_deploy => false)",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    let started = rows_of(
        &c.simple_query("SELECT * FROM pgml.deploy_ab('line', model_b => 2, share => 0.3)")
            .await
            .unwrap(),
    );
    assert_eq!(
        started,
        vec![vec![
            Some("line".to_owned()),
            Some("1".to_owned()),
            Some("2".to_owned()),
            Some("0.3".to_owned())
        ]]
    );

    // Each key's arm is the hash of its text, as documented: PostgreSQL computes the same split.
    let by_sql: Vec<usize> = rows_of(
        &c.simple_query(
            "SELECT ((hashtextextended(x::text, 0)::numeric + 2^63) / 2^64 < 0.3)::int FROM generate_series(1, 400) x ORDER BY x",
        )
        .await
        .unwrap(),
    )
    .into_iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect();
    let mut in_b = 0;
    for x in 1..=400i64 {
        let want = arm_of(number_key(x as f64).as_bytes(), 0.3);
        assert_eq!(
            want,
            by_sql[x as usize - 1],
            "key {x}: Ocelot's hash and PostgreSQL's"
        );
        for _ in 0..2 {
            let answer = first_value(
                &c,
                &format!("SELECT pgml.predict('line', ARRAY[{x}]::real[])"),
            )
            .await;
            assert_eq!(arm_of_answer(x, &answer), want, "key {x} answered {answer}");
        }
        in_b += want;
    }
    assert!((80..160).contains(&in_b), "{in_b} of 400 keys in B");

    // An explicit key decides instead of the first feature.
    for user in ["user-1", "user-2", "user-3", "user-4", "user-5", "user-6"] {
        let answer = first_value(
            &c,
            &format!("SELECT pgml.predict('line', ARRAY[5]::real[], ab_key => '{user}')"),
        )
        .await;
        assert_eq!(
            arm_of_answer(5, &answer),
            arm_of(user.as_bytes(), 0.3),
            "{user}"
        );
    }

    // Per-row predictions take each row's arm from its first feature.
    let rows = rows_of(
        &c.simple_query("SELECT x, pgml.predict('line', ARRAY[x]) FROM line ORDER BY x")
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 400);
    for r in &rows {
        let x: i64 = r[0].as_deref().unwrap().parse().unwrap();
        let want = arm_of(number_key(x as f64).as_bytes(), 0.3);
        assert_eq!(arm_of_answer(x, r[1].as_deref().unwrap()), want, "row {x}");
    }

    // SHOW AB counts each arm's predictions.
    let (cols, shown) = admin_psql(port, "SHOW AB").unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    let res = (cols, shown.clone());
    let row = &shown[0];
    assert_eq!(admin_value(&res, row, "project"), "line");
    assert_eq!(admin_value(&res, row, "model_a"), "1");
    assert_eq!(admin_value(&res, row, "model_b"), "2");
    let a: u64 = admin_value(&res, row, "a_predictions").parse().unwrap();
    let b: u64 = admin_value(&res, row, "b_predictions").parse().unwrap();
    assert_eq!(a + b, 800 + 6 + 400);
    assert_eq!(
        b as usize,
        2 * in_b
            + (in_b)
            + ["user-1", "user-2", "user-3", "user-4", "user-5", "user-6"]
                .iter()
                .filter(|u| arm_of(u.as_bytes(), 0.3) == 1)
                .count()
    );

    // Ending the test from the admin console returns every key to A.
    admin_psql(port, "END AB line").unwrap();
    for x in 1..=50i64 {
        let answer = first_value(
            &c,
            &format!("SELECT pgml.predict('line', ARRAY[{x}]::real[])"),
        )
        .await;
        assert_eq!(arm_of_answer(x, &answer), 0, "key {x} after END AB");
    }
    assert!(admin_psql(port, "SHOW AB").unwrap().1.is_empty());
    assert_eq!(first_value(&c, "SELECT pgml.end_ab('line')").await, "f");
    // A canary through SQL, ended through SQL.
    c.simple_query("SELECT * FROM pgml.deploy_ab('line', model_b => 2, share => 1)")
        .await
        .unwrap();
    assert_eq!(
        arm_of_answer(
            7,
            &first_value(&c, "SELECT pgml.predict('line', ARRAY[7]::real[])").await
        ),
        1
    );
    assert_eq!(first_value(&c, "SELECT pgml.end_ab('line')").await, "t");
    assert_eq!(
        arm_of_answer(
            7,
            &first_value(&c, "SELECT pgml.predict('line', ARRAY[7]::real[])").await
        ),
        0
    );

    // Bad arguments are refused with the reason.
    for (sql, code) in [
        (
            "SELECT * FROM pgml.deploy_ab('line', model_b => 2, share => 1.5)",
            "22023",
        ),
        (
            "SELECT * FROM pgml.deploy_ab('line', model_b => 99, share => 0.5)",
            "22023",
        ),
        (
            "SELECT * FROM pgml.deploy_ab('nope', model_b => 2, share => 0.5)",
            "22023",
        ),
        (
            "SELECT pgml.predict('line', ARRAY[1]::real[], colour => 'red')",
            "42883",
        ),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some(code), "{sql}: {e}");
    }
    assert!(admin_psql(port, "END AB nope").is_err());
}

/// Deterministic normal values (Box-Muller over xorshift), `None` for every `missing_every`-th.
fn normal_stream(
    n: usize,
    mean: f64,
    sd: f64,
    seed: u64,
    missing_every: usize,
) -> Vec<Option<f64>> {
    let mut s = seed;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let (u, v) = (uniform(), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            (missing_every == 0 || i % missing_every != missing_every - 1).then_some(mean + sd * z)
        })
        .collect()
}

/// numpy's count, mean, population standard deviation and missing rate of `values`.
fn numpy_stats(values: &[Option<f64>]) -> [f64; 4] {
    let text: Vec<String> = values
        .iter()
        .map(|v| v.map_or_else(|| "nan".to_owned(), |v| format!("{v:?}")))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "ocelot-drift-{}-{}.txt",
        std::process::id(),
        values.len()
    ));
    std::fs::write(&path, text.join("\n")).unwrap();
    let script = "import numpy as np, sys\nx = np.loadtxt(sys.argv[1])\nok = x[~np.isnan(x)]\nprint(len(x), ok.mean(), ok.std(), np.isnan(x).mean())";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 with numpy");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    [v[0], v[1], v[2], v[3]]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_the_features_a_model_is_fed() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(
        pg.port,
        4,
        "enable_prometheus_exporter = true\nprometheus_exporter_port = 0",
        "",
    ))
    .await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    // Training data: a ~ N(0, 1), b ~ N(5, 2) with every 10th missing; y = 2a + b.
    let a = normal_stream(3000, 0.0, 1.0, 11, 0);
    let b = normal_stream(3000, 5.0, 2.0, 12, 10);
    let rows: Vec<String> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| {
            let (a, b) = (
                a.unwrap(),
                b.map_or("NULL".to_owned(), |b| format!("{b:?}")),
            );
            format!("({a:?}, {b}, {a:?} * 2 + coalesce({b}, 5))")
        })
        .collect();
    c.batch_execute(&format!(
        "CREATE TABLE feats (a float8, b float8, y float8); INSERT INTO feats VALUES {}",
        rows.join(",")
    ))
    .await
    .unwrap();
    for p in ["steady", "shifted"] {
        c.simple_query(&format!("SELECT * FROM pgml.train('{p}', 'regression', 'feats', 'y', preprocess => '{{\"b\": {{\"impute\": \"mean\"}}}}')"))
            .await
            .unwrap();
    }
    // A fresh sample of the same distributions to one model, a = N(1, 1) to the other, as per-row predictions
    // over a table (ROW form: a missing b is imputed, and counted as missing).
    async fn feed(c: &tokio_postgres::Client, project: &str, a: &[Option<f64>], b: &[Option<f64>]) {
        let rows: Vec<String> = a
            .iter()
            .zip(b)
            .map(|(a, b)| {
                let f = |v: &Option<f64>| v.map_or("NULL".to_owned(), |v| format!("{v:?}"));
                format!("({}, {})", f(a), f(b))
            })
            .collect();
        c.batch_execute(&format!(
            "CREATE TABLE stream_{project} (a float8, b float8); INSERT INTO stream_{project} VALUES {}",
            rows.join(",")
        ))
        .await
        .unwrap();
        let answered = c
            .simple_query(&format!(
                "SELECT pgml.predict('{project}', ROW(a, b)) FROM stream_{project}"
            ))
            .await
            .unwrap();
        assert_eq!(rows_of(&answered).len(), a.len());
    }
    let (sa, sb) = (
        normal_stream(4000, 0.0, 1.0, 21, 0),
        normal_stream(4000, 5.0, 2.0, 22, 10),
    );
    let (da, db) = (
        normal_stream(4000, 1.0, 1.0, 31, 0),
        normal_stream(4000, 5.0, 2.0, 32, 10),
    );
    feed(&c, "steady", &sa, &sb).await;
    feed(&c, "shifted", &da, &db).await;

    let drift = |project: &str| {
        let c = &c;
        let q = format!("SELECT * FROM pgml.drift('{project}')");
        async move {
            rows_of(&c.simple_query(&q).await.unwrap())
                .into_iter()
                .map(|r| {
                    let name = r[1].clone().unwrap();
                    let v: Vec<f64> = r[2..]
                        .iter()
                        .map(|x| x.as_deref().unwrap().parse().unwrap())
                        .collect();
                    (name, v)
                })
                .collect::<Vec<_>>()
        }
    };
    let steady = drift("steady").await;
    let shifted = drift("shifted").await;
    assert_eq!(
        steady.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // The window's statistics and the training ones equal numpy's on the same values.
    for (row, live, train) in [
        (&steady[0], &sa, &a),
        (&steady[1], &sb, &b),
        (&shifted[0], &da, &a),
    ] {
        let [n, mean, sd, missing] = numpy_stats(live);
        let v = &row.1;
        assert_eq!(v[0], n, "{}", row.0);
        assert!(
            close(v[1], mean) && close(v[2], sd) && close(v[3], missing),
            "{} live {v:?} numpy {mean} {sd} {missing}",
            row.0
        );
        let [_, tmean, tsd, tmissing] = numpy_stats(train);
        assert!(
            close(v[4], tmean) && close(v[5], tsd) && close(v[6], tmissing),
            "{} train {v:?} numpy {tmean} {tsd} {tmissing}",
            row.0
        );
    }
    println!(
        "PSI of a: fresh sample {:.4}, shifted by one standard deviation {:.4}; KS {:.4} and {:.4}",
        steady[0].1[7], shifted[0].1[7], steady[0].1[8], shifted[0].1[8]
    );
    // PSI: the fresh sample stays below 0.1, the shifted feature goes above 0.2; b, unshifted, does not.
    assert!(steady[0].1[7] < 0.1 && steady[1].1[7] < 0.1, "{steady:?}");
    assert!(shifted[0].1[7] > 0.2, "{shifted:?}");
    assert!(shifted[1].1[7] < 0.1, "{shifted:?}");
    assert!(shifted[0].1[8] > steady[0].1[8]);

    drift_in_bigger_queries(&c, shifted[0].1[7], steady[1].1[7] < shifted[1].1[7]).await;

    // The admin console and the metrics show the same.
    let res = admin_psql(port, "SHOW MODEL DRIFT").unwrap();
    assert_eq!(res.1.len(), 4, "{res:?}");
    let psi_of = |project: &str, feature: &str| -> f64 {
        let row = res
            .1
            .iter()
            .find(|r| {
                admin_value(&res, r, "project") == project
                    && admin_value(&res, r, "feature") == feature
            })
            .unwrap();
        admin_value(&res, row, "psi").parse().unwrap()
    };
    assert!((psi_of("shifted", "a") - shifted[0].1[7]).abs() < 1e-3);
    let metrics = metrics_text(&proxy).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ocelot_model_feature_psi{")
                && l.contains("project=\"shifted\"")
                && l.contains("feature=\"a\"")),
        "{metrics}"
    );
    // A model without training statistics is refused with the reason.
    let e = c
        .simple_query("SELECT * FROM pgml.drift('nope')")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22023"));
}

/// `pgml.drift` inside bigger queries (filtered, sorted, joined): its rows are inlined and the server does the
/// rest. `shifted_a_psi` is what the whole call gave for the shifted feature; `b_grew` whether b's PSI is larger in
/// the shifted project.
async fn drift_in_bigger_queries(c: &tokio_postgres::Client, shifted_a_psi: f64, b_grew: bool) {
    let alarms = rows_of(
        &c.simple_query(
            "SELECT feature, round(psi::numeric, 6) FROM pgml.drift('shifted') WHERE psi > 0.2 ORDER BY feature",
        )
        .await
        .unwrap(),
    );
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0][0].as_deref(), Some("a"));
    let psi: f64 = alarms[0][1].as_deref().unwrap().parse().unwrap();
    assert!((psi - shifted_a_psi).abs() < 1e-6);
    let joined = rows_of(
        &c.simple_query(
            "SELECT s.feature, s.psi < t.psi FROM pgml.drift('steady') AS s JOIN pgml.drift('shifted') t USING (feature) ORDER BY 1",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        joined,
        vec![
            vec![Some("a".into()), Some("t".into())],
            vec![
                Some("b".into()),
                Some(if b_grew { "t" } else { "f" }.into())
            ]
        ]
    );
    let none = rows_of(
        &c.simple_query("SELECT count(*) FROM pgml.drift('shifted') WHERE psi > 100")
            .await
            .unwrap(),
    );
    assert_eq!(none[0][0].as_deref(), Some("0"));
    let e = c
        .simple_query("SELECT feature FROM pgml.drift('nope') WHERE psi > 0")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023", "{e:?}");
}
