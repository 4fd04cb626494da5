//! The model registry against a real PostgreSQL: PostgresML's tables, columns and enums are created once, by
//! however many Ocelot connections try at the same time, and a second run changes nothing.

use crate::common::*;
use ocelot::inference::backend::{Backend, Which};
use ocelot::inference::registry;

#[tokio::test]
async fn registry_schema_is_postgresml_and_created_once() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let snapshot = proxy.shared().snapshot();
    let pool = snapshot.cluster.get("app", "postgres").unwrap().clone();
    // Two connections race to create it: one applies the migration, the other finds it done.
    let (mut a, mut b) = (
        pool.conn(0, Which::Primary).await.unwrap(),
        pool.conn(0, Which::Primary).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(registry::ensure(&mut *a), registry::ensure(&mut *b));
    let mut found = [ra.unwrap(), rb.unwrap()];
    found.sort();
    assert_eq!(found, [0, registry::VERSION]);
    assert_eq!(registry::ensure(&mut *a).await.unwrap(), registry::VERSION);
    let columns = |table: &str| {
        pg.psql_admin_db(
            "app",
            &format!(
                "SELECT string_agg(column_name || ':' || udt_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'pgml' AND table_name = '{table}'"
            ),
        )
    };
    assert_eq!(
        columns("projects"),
        "id:int8,name:text,task:task,created_at:timestamp,updated_at:timestamp"
    );
    assert_eq!(
        columns("models"),
        "id:int8,project_id:int8,snapshot_id:int8,num_features:int4,algorithm:text,runtime:runtime,hyperparams:jsonb,status:text,metrics:jsonb,search:text,search_params:jsonb,search_args:jsonb,created_at:timestamp,updated_at:timestamp"
    );
    assert_eq!(
        columns("deployments"),
        "id:int8,project_id:int8,model_id:int8,strategy:strategy,created_at:timestamp"
    );
    assert_eq!(
        columns("files"),
        "id:int8,model_id:int8,path:text,part:int4,created_at:timestamp,updated_at:timestamp,data:bytea"
    );
    assert_eq!(
        columns("snapshots"),
        "id:int8,relation_name:text,y_column_name:_text,test_size:float4,test_sampling:sampling,status:text,columns:jsonb,analysis:jsonb,created_at:timestamp,updated_at:timestamp,materialized:bool"
    );
    assert_eq!(
        pg.psql_admin_db("app", "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'pgml.strategy'::regtype"),
        "new_score,best_score,most_recent,rollback,specific"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT count(*) FROM pg_enum WHERE enumtypid = 'pgml.algorithm'::regtype"
        ),
        "45"
    );
    for view in ["overview", "trained_models", "deployed_models"] {
        pg.psql_admin_db("app", &format!("SELECT * FROM pgml.{view}"));
    }
}

#[tokio::test]
async fn train_deploy_and_predict_linear_and_ridge_regression_in_the_proxy() {
    let pg = Postgres::start();
    // price = 50 + 3 size + 10 rooms - 0.5 age, exactly; and a noisy one-feature table.
    pg.psql_admin_db(
        "app",
        "CREATE TABLE house (size float8, rooms int, age int, price float8);
         INSERT INTO house SELECT s, r, a, 50 + 3 * s + 10 * r - 0.5 * a
           FROM (SELECT 40 + (g * 37) % 160 AS s, 1 + (g * 7) % 6 AS r, (g * 13) % 80 AS a FROM generate_series(1, 200) g) t;
         CREATE TABLE noisy (x float8, y float8);
         INSERT INTO noisy SELECT g, 2 * g + 5 + ((g * 7919) % 17) - 8 FROM generate_series(1, 100) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let row = rows_of(
        &c.simple_query(
            "SELECT * FROM pgml.train('houses', 'regression', 'house', 'price', algorithm => 'linear', test_sampling => 'last')",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        row,
        vec![vec![
            Some("houses".to_owned()),
            Some("regression".to_owned()),
            Some("linear".to_owned()),
            Some("t".to_owned())
        ]]
    );
    assert_eq!(
        first_value(
            &c,
            "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[])"
        )
        .await,
        "375"
    );
    // The registry holds what PostgresML's would: metrics on the test split, the snapshot, the deployment.
    assert_eq!(
        pg.psql_admin_db("app", "SELECT round((metrics->>'r2')::numeric, 9), num_features, runtime, status FROM pgml.models"),
        "1.000000000|3|rust|successful"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT analysis->>'samples', test_sampling FROM pgml.snapshots"
        ),
        "200|last"
    );
    // Per-row inference: the call becomes its feature columns on the server; Ocelot predicts, orders and limits.
    let got = rows_of(
        &c.simple_query("SELECT size, pgml.predict('houses', ARRAY[size, rooms, age]) AS p, age FROM house WHERE rooms = 3 ORDER BY p DESC LIMIT 3")
            .await
            .unwrap(),
    );
    let want: Vec<Vec<String>> = pg
        .psql_admin_db("app", "SELECT size, 50 + 3 * size + 10 * rooms - 0.5 * age, age FROM house WHERE rooms = 3 ORDER BY 2 DESC LIMIT 3")
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[0].as_deref(), Some(w[0].as_str()));
        assert_eq!(g[2].as_deref(), Some(w[2].as_str()));
        let (gp, wp): (f64, f64) = (
            g[1].as_deref().unwrap().parse().unwrap(),
            w[1].parse().unwrap(),
        );
        assert!((gp - wp).abs() / wp < 1e-6, "{gp} vs {wp}");
    }
    // Least squares on the training split (the first 75 of 100 rows) equals PostgreSQL's own regression.
    c.simple_query(
        "SELECT pgml.train('noisy', 'regression', 'noisy', 'y', test_sampling => 'last')",
    )
    .await
    .unwrap();
    let reference: f64 = pg
        .psql_admin_db(
            "app",
            "SELECT regr_intercept(y, x) + regr_slope(y, x) * 42 FROM (SELECT * FROM noisy LIMIT 75) t",
        )
        .parse()
        .unwrap();
    let got: f64 = first_value(&c, "SELECT pgml.predict('noisy', ARRAY[42]::float8[])")
        .await
        .parse()
        .unwrap();
    assert!(
        ((got - reference) / reference).abs() < 1e-6,
        "{got} vs {reference}"
    );
    // Ridge shrinks, scores lower on this exact data, and is therefore not deployed automatically.
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.train('houses', algorithm => 'ridge', relation_name => 'house', y_column_name => 'price', hyperparams => '{\"alpha\": 1000}')")
            .await
            .unwrap(),
    );
    assert_eq!(row[0][3].as_deref(), Some("f"));
    let ridge_id = pg.psql_admin_db(
        "app",
        "SELECT max(id) FROM pgml.models WHERE algorithm = 'ridge'",
    );
    let deployed = rows_of(
        &c.simple_query(&format!("SELECT * FROM pgml.deploy({ridge_id})"))
            .await
            .unwrap(),
    );
    assert_eq!(deployed[0][1].as_deref(), Some("specific"));
    let ridge: f64 = first_value(
        &c,
        "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[])",
    )
    .await
    .parse()
    .unwrap();
    assert!(
        (ridge - 375.0).abs() > 0.01,
        "the ridge model answers now: {ridge}"
    );
    // The result column is named as PostgreSQL names it: the function, or the alias.
    let named = c
        .simple_query("SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[]) AS score")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &named[1] else {
        panic!("{named:?}");
    };
    assert_eq!(r.columns()[0].name(), "score");
    // Inside a transaction block the call is still Ocelot's, and the transaction carries on.
    let outside = first_value(
        &c,
        "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[])",
    )
    .await;
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SELECT count(*) FROM house").await.unwrap();
    assert_eq!(
        first_value(
            &c,
            "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[])"
        )
        .await,
        outside
    );
    assert_eq!(first_value(&c, "SELECT count(*) FROM house").await, "200");
    c.simple_query("COMMIT").await.unwrap();
    // Batches: a set of predictions by project, an array by model id; joint predictions for regression.
    let batch = rows_of(
        &c.simple_query(
            "SELECT * FROM pgml.predict_batch('houses', ARRAY[100, 3, 10, 100, 3, 10]::real[])",
        )
        .await
        .unwrap(),
    );
    assert_eq!(batch.len(), 2);
    let linear_id = pg.psql_admin_db(
        "app",
        "SELECT min(id) FROM pgml.models WHERE algorithm = 'linear'",
    );
    assert_eq!(
        first_value(
            &c,
            &format!(
                "SELECT pgml.predict_batch({linear_id}, ARRAY[100, 3, 10, 100, 3, 10]::real[])"
            )
        )
        .await,
        "{375,375}"
    );
    assert_eq!(
        first_value(
            &c,
            &format!("SELECT pgml.predict_joint({linear_id}, ARRAY[100, 3, 10]::real[])")
        )
        .await,
        "{375}"
    );
    // Deploy strategies: rollback returns to the linear model, best_score keeps it, most_recent picks ridge.
    let strategy = |s: &str| format!("SELECT * FROM pgml.deploy('houses', '{s}')");
    let deployed_algorithm = |pg: &Postgres| {
        pg.psql_admin_db(
            "app",
            "SELECT algorithm FROM pgml.deployed_models WHERE name = 'houses'",
        )
    };
    c.simple_query(&strategy("rollback")).await.unwrap();
    assert_eq!(deployed_algorithm(&pg), "linear");
    c.simple_query(&strategy("most_recent")).await.unwrap();
    assert_eq!(deployed_algorithm(&pg), "ridge");
    let row = rows_of(&c.simple_query(&strategy("best_score")).await.unwrap());
    assert_eq!(
        row[0],
        vec![
            Some("houses".to_owned()),
            Some("best_score".to_owned()),
            Some("linear".to_owned())
        ]
    );
    assert_eq!(
        first_value(
            &c,
            "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[])"
        )
        .await,
        "375"
    );
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.deploy('houses', 'most_recent', 'linear')")
            .await
            .unwrap(),
    );
    assert_eq!(row[0][2].as_deref(), Some("linear"));
    // Lasso and elastic net (coordinate descent, scikit-learn's objective) train and score close to exact here.
    for (algorithm, params) in [
        ("lasso", "{\"alpha\": 0.1}"),
        ("elastic_net", "{\"alpha\": 0.01, \"l1_ratio\": 0.7}"),
    ] {
        let row = rows_of(
            &c.simple_query(&format!("SELECT * FROM pgml.train('houses', algorithm => '{algorithm}', relation_name => 'house', y_column_name => 'price', hyperparams => '{params}', test_sampling => 'last')"))
                .await
                .unwrap(),
        );
        assert_eq!(row[0][2].as_deref(), Some(algorithm));
        let r2: f64 = pg
            .psql_admin_db(
                "app",
                &format!("SELECT metrics->>'r2' FROM pgml.models WHERE algorithm = '{algorithm}'"),
            )
            .parse()
            .unwrap();
        assert!(r2 > 0.99, "{algorithm}: {r2}");
    }
    // Errors, with PostgreSQL codes.
    for (sql, code) in [
        ("SELECT pgml.predict('houses', ARRAY[1, 2]::real[])", "22023"),
        ("SELECT * FROM pgml.predict_batch('houses', ARRAY[1, 2, 3, 4]::real[])", "22023"),
        ("SELECT pgml.predict('nobody', ARRAY[1]::real[])", "22023"),
        ("SELECT pgml.train('houses', algorithm => 'svm', relation_name => 'house', y_column_name => 'price')", "0A000"),
        ("SELECT pgml.train('p2', 'regression', 'no_such_table', 'y')", "42P01"),
        ("SELECT pgml.train('p3', 'regression', 'house', 'nope')", "42703"),
        ("SELECT pgml.train('p4', colour => 'red')", "42883"),
        ("SELECT pgml.train('p5')", "22023"),
        ("SELECT * FROM pgml.deploy('nobody', 'best_score')", "22023"),
        ("SELECT * FROM pgml.deploy('houses', 'sideways')", "22P02"),
        ("SELECT * FROM pgml.deploy(99999)", "22023"),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), code, "{sql}: {e:?}");
    }
    // Everyone else is unaffected.
    assert_eq!(first_value(&c, "SELECT count(*) FROM house").await, "200");
}

#[tokio::test]
async fn classification_with_logistic_regression() {
    let pg = Postgres::start();
    // Three classes in separate regions of the plane, interleaved so the last rows hold every class.
    pg.psql_admin_db(
        "app",
        "CREATE TABLE flowers (a float4, b float4, species int);
         INSERT INTO flowers SELECT (g % 3) * 4 + (g % 7) * 0.2, (g % 3) * 3 + (g % 5) * 0.3, g % 3 FROM generate_series(1, 150) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.train('flowers', 'classification', 'flowers', 'species', test_sampling => 'last')")
            .await
            .unwrap(),
    );
    assert_eq!(
        row[0][1..],
        [
            Some("classification".to_owned()),
            Some("linear".to_owned()),
            Some("t".to_owned())
        ]
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT metrics->>'accuracy', metrics->>'f1', metrics ? 'roc_auc' FROM pgml.models"
        ),
        "1.0|1.0|f"
    );
    for (features, class) in [("0.1, 0.2", "0"), ("4.3, 3.1", "1"), ("8.2, 6.4", "2")] {
        assert_eq!(
            first_value(
                &c,
                &format!("SELECT pgml.predict('flowers', ARRAY[{features}]::real[])")
            )
            .await,
            class
        );
    }
    let proba = first_value(
        &c,
        "SELECT pgml.predict_proba('flowers', ARRAY[8.2, 6.4]::real[])",
    )
    .await;
    let p: Vec<f64> = proba
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(p.len(), 3);
    assert!(
        (p.iter().sum::<f64>() - 1.0).abs() < 1e-5 && p[2] > 0.5,
        "{proba}"
    );
}

#[tokio::test]
async fn training_and_per_row_inference_over_three_shards() {
    let shards: Vec<Postgres> = (0..3).map(|_| Postgres::start()).collect();
    for pg in &shards {
        pg.psql_admin_db(
            "app",
            "CREATE TABLE house (id bigint, size float8, rooms int, age int, price float8);
             CREATE VIEW house_features AS SELECT size, rooms, age, price FROM house;",
        );
    }
    let config = sharded_config(&shards, "house.id");
    let proxy = start_proxy(&config).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let rows: Vec<(i64, f64, i32, i32)> = (1..=300)
        .map(|g: i64| {
            (
                g,
                (40 + (g * 37) % 160) as f64,
                (1 + (g * 7) % 6) as i32,
                ((g * 13) % 80) as i32,
            )
        })
        .collect();
    let values: Vec<String> = rows
        .iter()
        .map(|(id, s, r, a)| {
            format!(
                "({id}, {s}, {r}, {a}, {})",
                50.0 + 3.0 * s + 10.0 * *r as f64 - 0.5 * *a as f64
            )
        })
        .collect();
    c.simple_query(&format!(
        "INSERT INTO house (id, size, rooms, age, price) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    let counts: Vec<i64> = shards
        .iter()
        .map(|pg| {
            pg.psql_admin_db("app", "SELECT count(*) FROM house")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(counts.iter().all(|n| *n > 50), "{counts:?}");
    // Training reads every shard (all columns but the label are features, so a view leaves the id out); the
    // registry lives on shard 0.
    c.simple_query("SELECT * FROM pgml.train('houses', 'regression', 'house_features', 'price', test_sampling => 'last')")
        .await
        .unwrap();
    assert_eq!(
        shards[0].psql_admin_db("app", "SELECT analysis->>'samples' FROM pgml.snapshots"),
        "300"
    );
    // Per-row predictions fetched from every shard, ordered and limited by Ocelot.
    let got = rows_of(
        &c.simple_query("SELECT id, pgml.predict('houses', ARRAY[size, rooms, age]) AS p FROM house WHERE age < 40 ORDER BY p DESC LIMIT 5")
            .await
            .unwrap(),
    );
    let mut want: Vec<(i64, f64)> = rows
        .iter()
        .filter(|r| r.3 < 40)
        .map(|(id, s, r, a)| (*id, 50.0 + 3.0 * s + 10.0 * *r as f64 - 0.5 * *a as f64))
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(got.len(), 5);
    for (g, w) in got.iter().zip(&want) {
        let p: f64 = g[1].as_deref().unwrap().parse().unwrap();
        assert!((p - w.1).abs() / w.1 < 1e-6, "{g:?} vs {w:?}");
    }
    // By key: one shard only.
    let one = rows_of(
        &c.simple_query(
            "SELECT pgml.predict('houses', ARRAY[size, rooms, age]) FROM house WHERE id = 7",
        )
        .await
        .unwrap(),
    );
    let (_, s, r, a) = rows[6];
    let p: f64 = one[0][0].as_deref().unwrap().parse().unwrap();
    assert!((p - (50.0 + 3.0 * s + 10.0 * r as f64 - 0.5 * a as f64)).abs() < 1e-3);
}

#[tokio::test]
async fn passthrough_mode_leaves_pgml_calls_to_the_server() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "").replace(
        "[pools.app]\n",
        "[inference]\nmode = \"passthrough\"\n\n[pools.app]\n",
    ))
    .await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    // A stock PostgreSQL has no pgml schema: the server's own error comes back.
    let e = c
        .simple_query("SELECT pgml.predict('p', ARRAY[1]::real[])")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "3F000", "{e:?}");
}

#[tokio::test]
async fn trees_clustering_and_preprocessing_through_the_proxy() {
    let pg = Postgres::start();
    // y depends on x1 by steps (trees fit it exactly); x2 has NULLs; the label of `kinds` is a boolean.
    pg.psql_admin_db(
        "app",
        "CREATE TABLE steps (x1 float8, x2 float8, y float8);
         INSERT INTO steps SELECT g % 40, CASE WHEN g % 9 = 0 THEN NULL ELSE g % 11 END, CASE WHEN g % 40 < 20 THEN 10 ELSE -5 END FROM generate_series(1, 400) g;
         CREATE TABLE kinds (a float4, b float4, big boolean);
         INSERT INTO kinds SELECT g % 13, g % 7, (g % 13) > 6 FROM generate_series(1, 300) g;
         CREATE TABLE points (v real[]);
         INSERT INTO points SELECT ARRAY[(g % 3) * 10 + (g % 5) * 0.1, (g % 3) * -10 + (g % 4) * 0.1] FROM generate_series(1, 90) g;",
    );
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_owned()).unwrap_or_default();
    // Missing values need a preprocessor: PostgresML's message.
    let e = c
        .simple_query(
            "SELECT * FROM pgml.train('steps', 'regression', 'steps', 'y', algorithm => 'xgboost')",
        )
        .await
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(msg.starts_with("44 missing values for x2."), "{msg}");
    assert_eq!(code(e), "22023");
    for algorithm in ["xgboost", "random_forest"] {
        c.simple_query(&format!(
            "SELECT * FROM pgml.train('steps_{algorithm}', 'regression', 'steps', 'y', algorithm => '{algorithm}', preprocess => '{{\"x2\": {{\"impute\": \"mean\", \"scale\": \"standard\"}}}}', test_sampling => 'last')"
        ))
        .await
        .unwrap_or_else(|e| panic!("{algorithm}: {e:?}"));
        assert_eq!(
            pg.psql_admin_db("app", &format!("SELECT m.metrics->>'r2', m.algorithm FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'steps_{algorithm}'")),
            format!("1.0|{algorithm}")
        );
        // The ROW overload is preprocessed (the NULL imputed); the array overload takes the values as they are.
        for (features, want) in [
            ("ROW(3, NULL)", "10"),
            ("(33, 4)", "-5"),
            ("ARRAY[3, 4]", "10"),
        ] {
            assert_eq!(
                first_value(
                    &c,
                    &format!("SELECT pgml.predict('steps_{algorithm}', {features})")
                )
                .await,
                want,
                "{algorithm} {features}"
            );
        }
        // Per-row, with a ROW of columns: NULLs in x2 are imputed.
        let rows = rows_of(
            &c.simple_query(&format!("SELECT x1, pgml.predict('steps_{algorithm}', ROW(x1, x2)) AS p FROM steps WHERE x2 IS NULL ORDER BY p LIMIT 3"))
                .await
                .unwrap(),
        );
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter().all(|r| r[1].as_deref() == Some("-5")),
            "{rows:?}"
        );
        let e = c
            .simple_query(&format!(
                "SELECT pgml.predict('steps_{algorithm}', ARRAY[3, NULL])"
            ))
            .await
            .unwrap_err();
        assert_eq!(code(e), "22004");
        let e = c
            .simple_query(&format!(
                "SELECT pgml.predict_proba('steps_{algorithm}', ARRAY[3, 4])"
            ))
            .await
            .unwrap_err();
        assert_eq!(code(e), "22023");
    }
    // Training reports what it does as notices (psql prints them).
    let port = proxy.local_addr().port();
    let (ok, _, notices) = tokio::task::spawn_blocking(move || {
        let mut c = psql_command(port, "app");
        c.args(["-c", "SELECT * FROM pgml.train('noticed', 'regression', 'kinds', 'a', algorithm => 'random_forest', hyperparams => '{\"n_estimators\": 5}')"]);
        run_tool(c)
    })
    .await
    .unwrap();
    assert!(ok, "{notices}");
    assert!(
        notices.contains("NOTICE:  Ocelot: training random_forest for regression on 225 rows of 2 features (75 test rows)")
            && notices.contains("NOTICE:  Ocelot: trained random_forest in"),
        "{notices}"
    );
    // Classification with a boolean label: predictions are 0/1, probabilities per class.
    for algorithm in ["xgboost", "random_forest"] {
        c.simple_query(&format!("SELECT * FROM pgml.train('kinds_{algorithm}', 'classification', 'kinds', 'big', algorithm => '{algorithm}', hyperparams => '{{\"n_estimators\": 20}}')"))
            .await
            .unwrap();
        assert_eq!(
            first_value(
                &c,
                &format!("SELECT pgml.predict('kinds_{algorithm}', ARRAY[9, 1])")
            )
            .await,
            "1"
        );
        let p = first_value(
            &c,
            &format!("SELECT pgml.predict_proba('kinds_{algorithm}', ARRAY[2, 1])"),
        )
        .await;
        let p: Vec<f64> = p
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(p.len() == 2 && p[0] > 0.9, "{p:?}");
    }
    // Clustering: no label, array features, the default algorithm is kmeans; predict is a cluster index.
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.train('points', 'clustering', 'points', hyperparams => '{\"n_clusters\": 3}')")
            .await
            .unwrap(),
    );
    assert_eq!(row[0][2].as_deref(), Some("kmeans"));
    let silhouette: f64 = pg
        .psql_admin_db(
            "app",
            "SELECT metrics->>'silhouette' FROM pgml.models WHERE algorithm = 'kmeans'",
        )
        .parse()
        .unwrap();
    assert!(silhouette > 0.9, "{silhouette}");
    let mut clusters = Vec::new();
    for a in [
        "ARRAY[0.1, 0.1]",
        "ARRAY[10.2, -9.9]",
        "ARRAY[20.3, -19.8]",
        "ARRAY[0.3, 0.2]",
    ] {
        clusters
            .push(first_value(&c, &format!("SELECT pgml.predict('points', {a}::real[])")).await);
    }
    assert_eq!(clusters[0], clusters[3]);
    assert!(clusters[0] != clusters[1] && clusters[1] != clusters[2] && clusters[0] != clusters[2]);
    // Refusals: an algorithm Ocelot does not train, a misspelt hyperparameter, a bad preprocess.
    for (sql, want) in [
        ("SELECT * FROM pgml.train('x', 'regression', 'kinds', 'a', algorithm => 'svm')", "0A000"),
        ("SELECT * FROM pgml.train('x', 'regression', 'kinds', 'a', algorithm => 'xgboost', hyperparams => '{\"max_dpeth\": 2}')", "22023"),
        ("SELECT * FROM pgml.train('x', 'regression', 'kinds', 'a', preprocess => '{\"nope\": {\"scale\": \"standard\"}}')", "22023"),
        ("SELECT * FROM pgml.train('y', 'clustering', 'points', hyperparams => '{\"n_clusters\": 500}')", "22023"),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(e), want, "{sql}");
    }
}

#[tokio::test]
async fn instances_share_the_registry_and_the_cache_is_bounded() {
    let pg = Postgres::start();
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 3 * g + 1 FROM generate_series(1, 50) g;",
    );
    // Instance B's cache bound is below any model's size, so it holds one model at a time (how many ~60-byte models
    // fit in a larger bound would depend on the digits of their coefficients), and it would not look a deployment up again for an
    // hour: it switches models because A announces its deploy.
    let a = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let b = start_proxy(&format!(
        "{}\n[inference]\ncache_bytes = 30\ndeploy_recheck_ms = 3600000\n",
        config_toml(pg.port, 4, "", "")
    ))
    .await;
    let ca = connect(a.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let cb = connect(b.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y')",
        "SELECT * FROM pgml.train('line', 'regression', 'line', 'y', algorithm => 'ridge', hyperparams => '{\"alpha\": 100000}', automatic_deploy => false)",
        "SELECT * FROM pgml.train('other', 'regression', 'line', 'y')",
    ] {
        ca.simple_query(sql).await.unwrap();
    }
    async fn predict(c: &tokio_postgres::Client, target: &str) -> String {
        first_value(
            c,
            &format!("SELECT pgml.predict({target}, ARRAY[10]::real[])"),
        )
        .await
    }
    // B serves A's deployed model.
    assert_eq!(predict(&cb, "'line'").await, "31");
    // A deploys the ridge model (id 2); B hears the NOTIFY and switches.
    ca.simple_query("SELECT * FROM pgml.deploy(2)")
        .await
        .unwrap();
    let ridge = predict(&ca, "'line'").await;
    assert_ne!(ridge, "31");
    let switched = std::time::Instant::now();
    while predict(&cb, "'line'").await != ridge {
        assert!(
            switched.elapsed() < std::time::Duration::from_secs(5),
            "B still serves the old model"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Alternating between two models through a one-model cache evicts and reloads, with the same answers.
    for _ in 0..3 {
        assert_eq!(predict(&cb, "1").await, "31");
        assert_eq!(predict(&cb, "'other'").await, "31");
    }
    let snapshot = b.shared().snapshot();
    let pool = snapshot.cluster.get("app", "postgres").unwrap();
    let (bytes, evictions) = pool.models.usage();
    assert!(bytes <= 30 || pool.models.rows().iter().filter(|r| r.loaded).count() == 1);
    assert!(evictions >= 5, "{evictions}");
    let rows = pool.models.rows();
    let served: Vec<(i64, &str, u64)> = rows
        .iter()
        .map(|r| (r.model_id, r.project.as_str(), r.predictions))
        .collect();
    // Model 1 also answered B's polls until the switch.
    assert!(served[0].2 >= 4, "{served:?}");
    assert_eq!(served[1..], [(2, "line", 1), (3, "other", 3)]);
    assert!(rows.iter().all(|r| r.bytes > 0 && r.algorithm.len() > 1));
}

#[tokio::test]
async fn pgml_statements_over_the_extended_protocol() {
    let pg = Postgres::start();
    pg.psql_admin_db("app", HOUSE_SQL);
    let proxy = start_proxy(&config_toml(pg.port, 4, "", "")).await;
    let mut c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    // Training with bound parameters; the row comes back in binary.
    let row = c
        .query_one(
            "SELECT * FROM pgml.train($1, 'regression', 'house', 'price', algorithm => $2, test_sampling => 'last')",
            &[&"houses", &"linear"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "houses");
    assert!(row.get::<_, bool>(3));
    // Typed parameters (text, real[]) inferred from the call; the result is float4.
    let p: f32 = c
        .query_one(
            "SELECT pgml.predict($1, $2)",
            &[&"houses", &vec![100f32, 3.0, 10.0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(p, 375.0);
    // A prepared statement is described (its column named by the alias) and run many times.
    let st = c
        .prepare("SELECT pgml.predict('houses', $1::double precision[]) AS score")
        .await
        .unwrap();
    assert_eq!(st.columns()[0].name(), "score");
    assert_eq!(st.params()[0], tokio_postgres::types::Type::FLOAT8_ARRAY);
    for size in [60f64, 80.0, 120.0] {
        let p: f32 = c
            .query_one(&st, &[&vec![size, 2.0, 20.0]])
            .await
            .unwrap()
            .get(0);
        assert_eq!(p as f64, 50.0 + 3.0 * size + 20.0 - 10.0);
    }
    // Per-row with a parameter whose type only the server knows (rooms is int4).
    let rows = c
        .query(
            "SELECT size, pgml.predict('houses', ARRAY[size, rooms, age]) AS p FROM house WHERE rooms = $1 ORDER BY p DESC LIMIT 3",
            &[&3i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let best: Vec<f32> = rows.iter().map(|r| r.get::<_, f32>(1)).collect();
    assert!(best[0] >= best[1] && best[1] >= best[2], "{best:?}");
    let direct = pg.psql_admin_db(
        "app",
        "SELECT max(50 + 3 * size + 10 * rooms - 0.5 * age) FROM house WHERE rooms = 3",
    );
    assert!((best[0] as f64 - direct.parse::<f64>().unwrap()).abs() < 1e-3);
    // Errors come back as errors, and the session goes on (pgml and ordinary statements alike).
    let e = c
        .query_one("SELECT pgml.predict($1, $2)", &[&"nobody", &vec![1f32]])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023");
    let e = c
        .query_one("SELECT pgml.predict('houses', $1)", &[&vec![1f32, 2.0]])
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22023", "{e:?}");
    let n: i32 = c
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 42);
    // Inside a transaction block too (nothing has reached a server yet).
    let tx = c.transaction().await.unwrap();
    let p: f32 = tx
        .query_one(
            "SELECT pgml.predict('houses', $1::real[])",
            &[&vec![100f32, 3.0, 10.0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(p, 375.0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_registry_can_live_in_another_pool() {
    let pg = Postgres::start();
    pg.psql_admin("CREATE DATABASE models");
    pg.psql_admin_db(
        "app",
        "CREATE TABLE line (x float8, y float8);
         INSERT INTO line SELECT g, 2 * g FROM generate_series(1, 20) g;",
    );
    let config = format!(
        "{}\n[pools.models.users.0]\nusername = \"postgres\"\nauth_type = \"trust\"\npool_size = 2\n\n[pools.models.shards.0]\ndatabase = \"models\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n[inference]\nregistry_pool = \"models\"\n",
        config_toml(pg.port, 2, "", ""),
        pg.port
    );
    let proxy = start_proxy(&config).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("SELECT * FROM pgml.train('line', 'regression', 'line', 'y')")
        .await
        .unwrap();
    assert_eq!(
        first_value(&c, "SELECT pgml.predict('line', ARRAY[7]::real[])").await,
        "14"
    );
    // The registry is in the models database; the app database has no pgml schema.
    assert_eq!(
        pg.psql_admin_db("models", "SELECT count(*) FROM pgml.models"),
        "1"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgml'"
        ),
        "0"
    );
    // A registry pool that does not exist is a config error.
    let bad = format!(
        "{}\n[inference]\nregistry_pool = \"nope\"\n",
        config_toml(pg.port, 2, "", "")
    );
    let err = ocelot::config::Config::parse_and_validate(&bad).unwrap_err();
    assert!(err.to_string().contains("inference.registry_pool"), "{err}");
}

#[tokio::test]
async fn vector_functions_in_the_proxy_and_on_three_shards() {
    let shards: Vec<Postgres> = (0..3).map(|_| Postgres::start()).collect();
    for pg in &shards {
        pg.psql_admin_db("app", "CREATE TABLE vecs (id bigint, v real[])");
    }
    let config = sharded_config(&shards, "vecs.id");
    let proxy = start_proxy(&config).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    let vecs: Vec<(i64, [f32; 3])> = (1..=200)
        .map(|i: i64| {
            let f = i as f32;
            (
                i,
                [
                    (f * 0.37).sin() * 10.0,
                    (f * 0.11).cos() * 5.0,
                    (i % 7) as f32,
                ],
            )
        })
        .collect();
    let values: Vec<String> = vecs
        .iter()
        .map(|(id, v)| format!("({id}, ARRAY[{}, {}, {}]::real[])", v[0], v[1], v[2]))
        .collect();
    c.simple_query(&format!(
        "INSERT INTO vecs (id, v) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    // Exact nearest neighbours across the shards: every shard's top k, merged by distance. The distance
    // function runs on the servers, which get Ocelot's SQL version of it.
    let q = [2.0f32, -1.0, 3.0];
    let rows = rows_of(
        &c.simple_query("SELECT id, pgml.distance_l2(v, ARRAY[2, -1, 3]::real[]) AS d FROM vecs ORDER BY d, id LIMIT 10")
            .await
            .unwrap(),
    );
    let mut want: Vec<(f64, i64)> = vecs
        .iter()
        .map(|(id, v)| {
            let d: f64 = v
                .iter()
                .zip(&q)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            (d, *id)
        })
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let got: Vec<i64> = rows
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, want.iter().take(10).map(|w| w.1).collect::<Vec<_>>());
    for (r, w) in rows.iter().zip(&want) {
        let d: f64 = r[1].as_deref().unwrap().parse().unwrap();
        assert!((d - w.0).abs() < 1e-4 * w.0.max(1.0), "{d} vs {}", w.0);
    }
    // The distance only in ORDER BY (not selected): the same ids.
    let only = rows_of(
        &c.simple_query("SELECT id FROM vecs ORDER BY pgml.distance_l2(v, ARRAY[2, -1, 3]::real[]), id LIMIT 10")
            .await
            .unwrap(),
    );
    assert_eq!(only[0].len(), 1);
    let only: Vec<i64> = only
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(only, got);
    // Constant calls are computed by Ocelot; the servers' SQL versions give the same values.
    for sql in [
        "SELECT pgml.cosine_similarity(ARRAY[1, 2, 3]::real[], ARRAY[3, -2, 1]::real[])",
        "SELECT pgml.norm_l2(ARRAY[3, 4]::real[])",
        "SELECT pgml.norm_l0(ARRAY[0, 4, 0, 1]::real[])",
        "SELECT pgml.dot_product(ARRAY[1.5, 2]::double precision[], ARRAY[2, 4]::double precision[])",
        "SELECT pgml.distance_l1(ARRAY[1, 2]::real[], ARRAY[4, -2]::real[])",
        "SELECT pgml.normalize_l1(ARRAY[1, 3]::real[])",
        "SELECT pgml.add(ARRAY[1, 2, 3]::real[], ARRAY[10, 20]::real[])",
        "SELECT pgml.divide(ARRAY[1, 2]::real[], 4::real)",
    ] {
        let mine = first_value(&c, sql).await;
        let server = shards[0].psql_admin_db("app", sql);
        let parse = |s: &str| -> Vec<f64> {
            s.trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect()
        };
        let (a, b) = (parse(&mine), parse(&server));
        assert_eq!(a.len(), b.len(), "{sql}: {mine} vs {server}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{sql}: {mine} vs {server}");
        }
    }
    assert_eq!(
        first_value(&c, "SELECT pgml.norm_l2(ARRAY[3, 4]::real[])").await,
        "5"
    );
    let e = c
        .simple_query("SELECT pgml.norm_l2(ARRAY[3, NULL]::real[])")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "22004");
    // The element-wise aggregates, as vectors.sql averages: pgml.divide(pgml.sum(v), count(v)), on a key's shard.
    let avg = first_value(
        &c,
        "SELECT pgml.divide(pgml.sum(v), count(v)) FROM vecs WHERE id = 5",
    )
    .await;
    let five = vecs[4].1;
    let got: Vec<f64> = avg
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    for (g, w) in got.iter().zip(five) {
        assert!((g - f64::from(w)).abs() < 1e-5, "{avg} vs {five:?}");
    }
    // On one server over all its rows: sums, signed and absolute extremes; NULL rows skipped; no rows is {}.
    let ids: Vec<usize> = shards[0]
        .psql_admin_db("app", "SELECT string_agg(id::text, ',') FROM vecs")
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    shards[0].psql_admin_db("app", "INSERT INTO vecs VALUES (0, NULL)");
    let mine: Vec<[f32; 3]> = ids.iter().map(|i| vecs[i - 1].1).collect();
    let column = |k: usize| mine.iter().map(move |v| f64::from(v[k]));
    for (agg, want) in [
        (
            "sum",
            (0..3).map(|k| column(k).sum::<f64>()).collect::<Vec<_>>(),
        ),
        (
            "max",
            (0..3).map(|k| column(k).fold(f64::MIN, f64::max)).collect(),
        ),
        (
            "min_abs",
            (0..3)
                .map(|k| column(k).map(f64::abs).fold(f64::MAX, f64::min))
                .collect(),
        ),
    ] {
        let text = shards[0].psql_admin_db("app", &format!("SELECT pgml.{agg}(v) FROM vecs"));
        let got: Vec<f64> = text
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-3 * w.abs().max(1.0),
                "{agg}: {text} vs {want:?}"
            );
        }
    }
    assert_eq!(
        shards[0].psql_admin_db("app", "SELECT pgml.sum(v) FROM vecs WHERE false"),
        "{}"
    );
}

/// A 2-D array column (PostgresML's digits store `image SMALLINT[][]`) trains with one feature per element, in
/// row-major order.
#[tokio::test]
async fn two_dimensional_array_columns_are_flattened_into_features() {
    let pg = Postgres::start();
    let mut rows = Vec::new();
    for i in 0..40 {
        let (hi, lo) = (10 + i % 5, i % 3);
        if i % 2 == 0 {
            rows.push(format!("('{{{{{hi},{hi}}},{{{lo},{lo}}}}}', 1)"));
        } else {
            rows.push(format!("('{{{{{lo},{lo}}},{{{hi},{hi}}}}}', 0)"));
        }
    }
    pg.psql_admin_db(
        "app",
        &format!(
            "CREATE TABLE images (image SMALLINT[][], target INT); INSERT INTO images VALUES {}",
            rows.join(",")
        ),
    );
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    c.simple_query("SELECT * FROM pgml.train('digits2', 'classification', 'images', 'target')")
        .await
        .unwrap();
    assert_eq!(
        pg.psql_admin_db("app", "SELECT num_features FROM pgml.models"),
        "4"
    );
    let top = first_value(&c, "SELECT pgml.predict('digits2', ARRAY[12, 12, 1, 1])").await;
    let bottom = first_value(&c, "SELECT pgml.predict('digits2', ARRAY[1, 1, 12, 12])").await;
    assert_eq!((top.as_str(), bottom.as_str()), ("1", "0"));
    // Per row, from the array column itself, as image_classification.sql predicts.
    let rows = rows_of(
        &c.simple_query("SELECT target, pgml.predict('digits2', image) AS prediction FROM images")
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 40);
    for r in &rows {
        assert_eq!(r[0], r[1], "{rows:?}");
    }
    let e = c
        .simple_query("SELECT pgml.predict('digits2', image[1:1]) FROM images")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22023"), "{e:?}");
}

/// `pgml.load_dataset` makes PostgresML's tables from the data Ocelot carries, and PostgresML's examples train
/// on them unchanged.
#[tokio::test]
async fn load_dataset_creates_postgresmls_tables_and_they_train() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    for (name, rows) in [
        ("iris", "150"),
        ("diabetes", "442"),
        ("breast_cancer", "569"),
        ("linnerud", "20"),
        ("wine", "178"),
    ] {
        let got = rows_of(
            &c.simple_query(&format!("SELECT * FROM pgml.load_dataset('{name}')"))
                .await
                .unwrap(),
        );
        assert_eq!(
            got,
            vec![vec![Some(format!("pgml.{name}")), Some(rows.into())]]
        );
    }
    // Loading again replaces the table; a limit keeps the first rows.
    let got = rows_of(
        &c.simple_query("SELECT * FROM pgml.load_dataset('digits', limit => 300)")
            .await
            .unwrap(),
    );
    assert_eq!(got[0][1].as_deref(), Some("300"));
    let columns = |table: &str| {
        pg.psql_admin_db("app", &format!("SELECT string_agg(column_name || ':' || udt_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'pgml' AND table_name = '{table}'"))
    };
    assert_eq!(
        columns("iris"),
        "sepal_length:float4,sepal_width:float4,petal_length:float4,petal_width:float4,target:int4"
    );
    assert_eq!(columns("digits"), "image:_int2,target:int2");
    assert!(columns("breast_cancer").ends_with("worst fractal dimension:float4,malignant:bool"));
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT array_dims(image) || ' ' || target FROM pgml.digits LIMIT 1"
        ),
        "[1:8][1:8] 0"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT age || ',' || sex || ',' || target FROM pgml.diabetes LIMIT 1"
        ),
        "59,2,151"
    );
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT count(*) FILTER (WHERE malignant) FROM pgml.breast_cancer"
        ),
        "212"
    );
    // As regression.sql and image_classification.sql train on them.
    c.simple_query(
        "SELECT * FROM pgml.train('Diabetes Progression', 'regression', 'pgml.diabetes', 'target')",
    )
    .await
    .unwrap();
    c.simple_query(
        "SELECT * FROM pgml.train('Handwritten Digits', 'classification', 'pgml.digits', 'target')",
    )
    .await
    .unwrap();
    assert_eq!(
        pg.psql_admin_db(
            "app",
            "SELECT string_agg(num_features::text, ',' ORDER BY id) FROM pgml.models"
        ),
        "10,64"
    );
    // Training a project again without naming the data reuses its last snapshot, as regression.sql does.
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.train('Diabetes Progression', algorithm => 'ridge')")
            .await
            .unwrap(),
    );
    assert_eq!(
        row[0][..3],
        [
            Some("Diabetes Progression".into()),
            Some("regression".into()),
            Some("ridge".into())
        ]
    );
    assert_eq!(
        pg.psql_admin_db("app", "SELECT count(DISTINCT snapshot_id) || ' ' || count(*) FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'Diabetes Progression'"),
        "1 2"
    );
    let e = c
        .simple_query("SELECT * FROM pgml.train('Never Trained', 'regression')")
        .await
        .unwrap_err();
    let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(message.contains("the first time you train"), "{message}");
    let e = c
        .simple_query("SELECT * FROM pgml.load_dataset('squad')")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e:?}");
    let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(message.contains("Hugging Face"), "{message}");
}

/// joint_regression.sql's calls: `pgml.train_joint` fits every label, `pgml.predict_joint` answers them all, as
/// constants and per row; a joint target equals the same target trained alone. Per-row probabilities and a model
/// id taken from a column, as binary_classification.sql and regression.sql use them.
#[tokio::test]
async fn joint_regression_per_row_probabilities_and_model_ids_from_a_column() {
    let pg = Postgres::start();
    let proxy = start_proxy(&config_toml(pg.port, 2, "", "")).await;
    let c = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .unwrap();
    for name in ["linnerud", "iris"] {
        c.simple_query(&format!("SELECT pgml.load_dataset('{name}')"))
            .await
            .unwrap();
    }
    let row = rows_of(
        &c.simple_query("SELECT * FROM pgml.train_joint('Exercise vs Physiology', 'regression', 'pgml.linnerud', ARRAY['weight', 'waist', 'pulse'], test_sampling => 'last')")
            .await
            .unwrap(),
    );
    assert_eq!(row[0][2].as_deref(), Some("linear"));
    // Retraining reuses the snapshot with all three labels.
    c.simple_query(
        "SELECT * FROM pgml.train_joint('Exercise vs Physiology', algorithm => 'ridge')",
    )
    .await
    .unwrap();
    c.simple_query("SELECT * FROM pgml.deploy('Exercise vs Physiology', 'most_recent', 'linear')")
        .await
        .unwrap();
    let joint = first_value(
        &c,
        "SELECT pgml.predict_joint('Exercise vs Physiology', ARRAY[5, 162, 60])",
    )
    .await;
    let joint: Vec<f64> = joint
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(joint.len(), 3);
    pg.psql_admin_db(
        "app",
        "CREATE VIEW weight_only AS SELECT chins, situps, jumps, weight FROM pgml.linnerud",
    );
    c.simple_query("SELECT * FROM pgml.train('weight', 'regression', 'weight_only', 'weight', test_sampling => 'last')")
        .await
        .unwrap();
    let alone: f64 = first_value(&c, "SELECT pgml.predict('weight', ARRAY[5, 162, 60])")
        .await
        .parse()
        .unwrap();
    assert!(
        (alone - joint[0]).abs() < 1e-3 * alone.abs(),
        "{alone} vs {joint:?}"
    );
    let rows = rows_of(
        &c.simple_query("SELECT weight, pgml.predict_joint('Exercise vs Physiology', ARRAY[chins, situps, jumps]) AS prediction FROM pgml.linnerud LIMIT 10")
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 10);
    assert!(rows
        .iter()
        .all(|r| r[1].as_deref().unwrap().split(',').count() == 3));

    c.simple_query(
        "SELECT * FROM pgml.train('Iris Flower Types', 'classification', 'pgml.iris', 'target')",
    )
    .await
    .unwrap();
    let rows = rows_of(
        &c.simple_query("SELECT target, pgml.predict_proba('Iris Flower Types', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) AS p FROM pgml.iris ORDER BY random() LIMIT 10")
            .await
            .unwrap(),
    );
    for r in &rows {
        let p: Vec<f64> = r[1]
            .as_deref()
            .unwrap()
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(p.len(), 3);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
    }
    let rows = rows_of(
        &c.simple_query("SELECT model_id, target, pgml.predict(model_id, ARRAY[sepal_length, sepal_width, petal_length, petal_width]) AS prediction FROM pgml.iris CROSS JOIN LATERAL (SELECT pgml.models.id AS model_id FROM pgml.models INNER JOIN pgml.projects ON pgml.models.project_id = pgml.projects.id WHERE pgml.projects.name = 'Iris Flower Types' LIMIT 1) models LIMIT 10")
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 10);
    let right = rows.iter().filter(|r| r[1] == r[2]).count();
    assert!(right >= 8, "{rows:?}");
}
