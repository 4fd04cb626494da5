//! The model registry: PostgresML's `pgml` schema (enums, projects, snapshots, models, deployments, files and
//! the overview views) created by Ocelot in the registry database the first time it is needed. The schema is
//! versioned in `pgml.ocelot_registry`; migrations run in order, each once, under a table lock so that several
//! Ocelot instances starting together apply them exactly once. Below it: what is stored there and how it is made,
//! `models` (a model's stored form, registry connections), `train` (pgml.train), `relation` (reading the training
//! data from the shards) and `deploy` (pgml.deploy and its strategies).

pub(crate) mod datasets;
pub(crate) mod deploy;
pub(crate) mod joint;
pub(crate) mod models;
pub(crate) mod relation;
pub(crate) mod train;

use crate::backend::BackendError;
use crate::backend::Conn;

/// Schema migrations, in order; the version of a migration is its position + 1.
const MIGRATIONS: &[&str] = &[
    // 1: PostgresML 2.10's tables, enums and views (the enum labels in PostgresML's declaration order).
    r#"
CREATE TYPE pgml.task AS ENUM ('regression', 'classification', 'decomposition', 'clustering',
  'question_answering', 'summarization', 'translation', 'text_classification', 'text_generation', 'text2text',
  'embedding', 'text_pair_classification', 'conversation');
CREATE TYPE pgml.algorithm AS ENUM ('linear', 'xgboost', 'xgboost_random_forest', 'svm', 'lasso', 'elastic_net',
  'ridge', 'kmeans', 'dbscan', 'knn', 'random_forest', 'least_angle', 'lasso_least_angle',
  'orthogonal_matching_pursuit', 'bayesian_ridge', 'automatic_relevance_determination',
  'stochastic_gradient_descent', 'perceptron', 'passive_aggressive', 'ransac', 'theil_sen', 'huber', 'quantile',
  'kernel_ridge', 'gaussian_process', 'nu_svm', 'ada_boost', 'bagging', 'extra_trees', 'gradient_boosting_trees',
  'hist_gradient_boosting', 'linear_svm', 'lightgbm', 'transformers', 'affinity_propagation', 'birch',
  'feature_agglomeration', 'mini_batch_kmeans', 'mean_shift', 'optics', 'spectral', 'spectral_bi', 'spectral_co',
  'catboost', 'pca');
CREATE TYPE pgml.strategy AS ENUM ('new_score', 'best_score', 'most_recent', 'rollback', 'specific');
CREATE TYPE pgml.sampling AS ENUM ('random', 'last', 'stratified');
CREATE TYPE pgml.search AS ENUM ('grid', 'random');
CREATE TYPE pgml.runtime AS ENUM ('python', 'rust', 'openai');
CREATE TYPE pgml.status AS ENUM ('in_progress', 'successful', 'failed');

CREATE FUNCTION pgml.set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at) THEN
    NEW.updated_at := clock_timestamp();
  END IF;
  RETURN NEW;
END;
$$;

CREATE TABLE pgml.projects (
  id BIGSERIAL PRIMARY KEY,
  name TEXT NOT NULL,
  task pgml.task NOT NULL,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp());
CREATE UNIQUE INDEX projects_name_idx ON pgml.projects (name);
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON pgml.projects FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();

CREATE TABLE pgml.snapshots (
  id BIGSERIAL PRIMARY KEY,
  relation_name TEXT NOT NULL,
  y_column_name TEXT[],
  test_size FLOAT4 NOT NULL,
  test_sampling pgml.sampling NOT NULL,
  status TEXT NOT NULL,
  columns JSONB,
  analysis JSONB,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  materialized BOOLEAN DEFAULT false);
CREATE TRIGGER snapshots_updated_at BEFORE UPDATE ON pgml.snapshots FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();

CREATE TABLE pgml.models (
  id BIGSERIAL PRIMARY KEY,
  project_id BIGINT NOT NULL REFERENCES pgml.projects(id) ON DELETE CASCADE,
  snapshot_id BIGINT REFERENCES pgml.snapshots(id) ON DELETE SET NULL,
  num_features INT NOT NULL,
  algorithm TEXT NOT NULL,
  runtime pgml.runtime DEFAULT 'python'::pgml.runtime,
  hyperparams JSONB NOT NULL,
  status TEXT NOT NULL,
  metrics JSONB,
  search TEXT,
  search_params JSONB NOT NULL,
  search_args JSONB NOT NULL,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp());
CREATE INDEX models_project_id_idx ON pgml.models (project_id);
CREATE INDEX models_snapshot_id_idx ON pgml.models (snapshot_id);
CREATE TRIGGER models_updated_at BEFORE UPDATE ON pgml.models FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();

CREATE TABLE pgml.deployments (
  id BIGSERIAL PRIMARY KEY,
  project_id BIGINT NOT NULL REFERENCES pgml.projects(id) ON DELETE CASCADE,
  model_id BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
  strategy pgml.strategy NOT NULL,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp());
CREATE INDEX deployments_project_id_created_at_idx ON pgml.deployments (project_id);
CREATE INDEX deployments_model_id_created_at_idx ON pgml.deployments (model_id);

CREATE TABLE pgml.files (
  id BIGSERIAL PRIMARY KEY,
  model_id BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  part INTEGER NOT NULL,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  data BYTEA NOT NULL);
CREATE UNIQUE INDEX files_model_id_path_part_idx ON pgml.files (model_id, path, part);
CREATE TRIGGER files_updated_at BEFORE UPDATE ON pgml.files FOR EACH ROW EXECUTE FUNCTION pgml.set_updated_at();

CREATE VIEW pgml.overview AS
SELECT p.name, d.created_at AS deployed_at, p.task, m.algorithm, m.runtime, s.relation_name, s.y_column_name,
       s.test_sampling, s.test_size
FROM pgml.projects p
INNER JOIN pgml.models m ON p.id = m.project_id
INNER JOIN pgml.deployments d ON d.project_id = p.id AND d.model_id = m.id
LEFT JOIN pgml.snapshots s ON s.id = m.snapshot_id
ORDER BY d.created_at DESC;

CREATE VIEW pgml.trained_models AS
SELECT m.id, p.name, p.task, m.algorithm, m.runtime, m.created_at, s.test_sampling, s.test_size,
       d.model_id IS NOT NULL AS deployed
FROM pgml.projects p
INNER JOIN pgml.models m ON p.id = m.project_id
LEFT JOIN pgml.snapshots s ON s.id = m.snapshot_id
LEFT JOIN (
  SELECT DISTINCT ON (project_id) project_id, model_id, created_at
  FROM pgml.deployments ORDER BY project_id, created_at DESC
) d ON d.model_id = m.id
ORDER BY m.created_at DESC;

CREATE VIEW pgml.deployed_models AS
SELECT m.id, p.name, p.task, m.algorithm, m.runtime, d.created_at AS deployed_at
FROM pgml.projects p
INNER JOIN (
  SELECT DISTINCT ON (project_id) project_id, model_id, created_at
  FROM pgml.deployments ORDER BY project_id, created_at DESC
) d ON d.project_id = p.id
INNER JOIN pgml.models m ON m.id = d.model_id
ORDER BY p.name ASC;
"#,
    // Ocelot's A/B and canary tests: the deployed model is arm A, `model_b` gets `share` of the keys.
    r#"
CREATE TABLE pgml.ab_tests (
  id BIGSERIAL PRIMARY KEY,
  project_id BIGINT NOT NULL REFERENCES pgml.projects(id) ON DELETE CASCADE,
  model_a BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
  model_b BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
  share FLOAT8 NOT NULL CHECK (share >= 0 AND share <= 1),
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp(),
  ended_at TIMESTAMP WITHOUT TIME ZONE);
CREATE UNIQUE INDEX ab_tests_active_idx ON pgml.ab_tests (project_id) WHERE ended_at IS NULL;
"#,
    // Ocelot's prediction logging: the per-project setting, the sampled predictions, and their live metrics
    // against the actual outcomes in the table the setting names (regression: r2, MAE; classification: accuracy,
    // macro F1).
    r#"
CREATE TABLE pgml.prediction_logging (
  project_id BIGINT PRIMARY KEY REFERENCES pgml.projects(id) ON DELETE CASCADE,
  sample_rate FLOAT8 NOT NULL CHECK (sample_rate >= 0 AND sample_rate <= 1),
  actuals_table TEXT,
  actuals_key TEXT,
  actuals_column TEXT,
  updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp());

CREATE TABLE pgml.predictions (
  id BIGSERIAL PRIMARY KEY,
  project TEXT NOT NULL,
  model_id BIGINT NOT NULL,
  arm TEXT,
  key TEXT,
  features FLOAT8[] NOT NULL,
  prediction FLOAT8,
  created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT clock_timestamp());
CREATE INDEX predictions_project_created_at_idx ON pgml.predictions (project, created_at);

CREATE FUNCTION pgml.live_metrics(project_name TEXT)
RETURNS TABLE (model_id BIGINT, arm TEXT, predictions BIGINT, with_actuals BIGINT, r2 FLOAT8, mae FLOAT8,
               accuracy FLOAT8, f1 FLOAT8)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  s RECORD;
  target TEXT;
  joined TEXT;
BEGIN
  SELECT p.task, l.actuals_table, l.actuals_key, l.actuals_column,
         (SELECT sn.y_column_name[1] FROM pgml.models m JOIN pgml.snapshots sn ON sn.id = m.snapshot_id
           WHERE m.project_id = p.id ORDER BY m.id DESC LIMIT 1) AS y
    INTO s
    FROM pgml.projects p LEFT JOIN pgml.prediction_logging l ON l.project_id = p.id
   WHERE p.name = project_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'project "%" does not exist', project_name USING ERRCODE = '22023';
  END IF;
  target := coalesce(s.actuals_column, s.y);
  IF s.actuals_table IS NULL OR target IS NULL THEN
    joined := 'SELECT p.model_id, p.arm, p.prediction AS yhat, NULL::float8 AS y FROM pgml.predictions p WHERE p.project = $1';
  ELSE
    joined := format('SELECT p.model_id, p.arm, p.prediction AS yhat, a.%I::float8 AS y FROM pgml.predictions p '
                     'LEFT JOIN %s a ON a.%I::text = p.key WHERE p.project = $1',
                     target, s.actuals_table::regclass, s.actuals_key);
  END IF;
  IF s.task = 'classification' THEN
    RETURN QUERY EXECUTE format($q$
      WITH j AS (%s),
      m AS (SELECT * FROM j WHERE j.y IS NOT NULL),
      cls AS (SELECT DISTINCT m.model_id, m.arm, v.c FROM m, LATERAL (VALUES (m.y), (m.yhat)) v(c)),
      f AS (SELECT cls.model_id, cls.arm, cls.c,
                   2.0 * count(*) FILTER (WHERE m.y = cls.c AND m.yhat = cls.c)
                   / nullif(count(*) FILTER (WHERE m.y = cls.c OR m.yhat = cls.c)
                            + count(*) FILTER (WHERE m.y = cls.c AND m.yhat = cls.c), 0) AS f1
              FROM cls JOIN m ON m.model_id = cls.model_id AND m.arm IS NOT DISTINCT FROM cls.arm
             GROUP BY 1, 2, 3),
      t AS (SELECT j.model_id, j.arm, count(*) AS n, count(j.y) AS matched,
                   avg((j.y = j.yhat)::int::float8) FILTER (WHERE j.y IS NOT NULL) AS accuracy
              FROM j GROUP BY 1, 2)
      SELECT t.model_id, t.arm, t.n, t.matched, NULL::float8, NULL::float8, t.accuracy::float8,
             (SELECT avg(f.f1)::float8 FROM f WHERE f.model_id = t.model_id AND f.arm IS NOT DISTINCT FROM t.arm)
        FROM t ORDER BY 1, 2$q$, joined) USING project_name;
  ELSE
    RETURN QUERY EXECUTE format($q$
      WITH j AS (%s)
      SELECT j.model_id, j.arm, count(*), count(j.y),
             (1 - sum((j.y - j.yhat) ^ 2) / nullif(var_pop(j.y) * count(j.y), 0))::float8,
             avg(abs(j.y - j.yhat))::float8, NULL::float8, NULL::float8
        FROM j GROUP BY 1, 2 ORDER BY 1, 2$q$, joined) USING project_name;
  END IF;
END;
$fn$;
"#,
];

/// The schema version this Ocelot needs.
pub const VERSION: usize = MIGRATIONS.len();

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS pgml; CREATE TABLE IF NOT EXISTS pgml.ocelot_registry (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// Brings the registry on `conn` (an idle connection to the registry database's primary) to [`VERSION`]; returns
/// the version found before.
pub async fn ensure(conn: &mut dyn Conn) -> Result<usize, BackendError> {
    // Two instances bootstrapping at once can collide on the catalog; the second attempt sees the first's work.
    if conn.run(BOOTSTRAP).await.is_err() {
        conn.run(BOOTSTRAP).await?;
    }
    conn.run("BEGIN").await?;
    let result = async {
        conn.run("LOCK TABLE pgml.ocelot_registry IN EXCLUSIVE MODE")
            .await?;
        let found: usize = conn
            .query_value("SELECT coalesce(max(version), 0) FROM pgml.ocelot_registry")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
            conn.run(sql).await?;
            conn.run(&format!(
                "INSERT INTO pgml.ocelot_registry (version) VALUES ({})",
                i + 1
            ))
            .await?;
        }
        Ok::<usize, BackendError>(found)
    }
    .await;
    match result {
        Ok(found) => {
            conn.run("COMMIT").await?;
            Ok(found)
        }
        Err(e) => {
            let _ = conn.run("ROLLBACK").await;
            Err(e)
        }
    }
}
