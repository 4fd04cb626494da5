//! Model operations in the data path: A/B and canary tests of a project's models (`pgml.deploy_ab`, `ab_key`,
//! `SHOW AB`, `END AB`, `pgml.end_ab`).

mod common;

use common::*;
use ocelot::inference::ab::{arm_of, number_key};

/// Which model answered `pgml.predict('line', ARRAY[x])`: A (the linear model, exactly 3x + 1) or B (the heavily
/// regularised ridge model, near the mean).
fn arm_of_answer(x: i64, answer: &str) -> usize {
    let y: f64 = answer.parse().unwrap();
    usize::from((y - (3 * x + 1) as f64).abs() > 0.5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_tests_split_predictions_by_key() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 3 * g + 1 FROM generate_series(1, 400) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let port = proxy.local_addr().port();
    let c = connect(port, "postgres", None, "app").await.unwrap();
    for sql in [
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y')",
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y', algorithm => 'ridge', hyperparams => '{\"alpha\": 100000000}', automatic_deploy => false)",
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
