//! `pgml.deploy`: by model id (strategy `specific`) or by project with best_score, most_recent or rollback.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::models::{refuse, registry_conn, value, Refusal};
use crate::registry::train::text_arg;
use crate::sql::call::{bind, Arg, Call};
use ocelot_protocol::codes::sqlstate;
use ocelot_protocol::encode;
use ocelot_router::session_sql::quote_literal;

pub(crate) async fn deploy_model(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let id = call.args[0]
        .1
        .as_f64()
        .filter(|v| v.fract() == 0.0)
        .ok_or_else(|| {
            refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "only pgml.deploy(model_id) is served by Ocelot so far",
            )
        })? as i64;
    let mut conn = registry_conn(pool).await?;
    let row = value(
        &mut *conn,
        &format!("SELECT p.id || ':' || p.name || ':' || m.algorithm FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.id = {id}"),
    )
    .await?
    .ok_or_else(|| refuse("22023", format!("pgml.models WHERE id = {id} could not be loaded. Does it exist?")))?;
    let mut parts = row.splitn(3, ':');
    let (project_id, project, algorithm) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    conn.run(&format!(
        "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ({project_id}, {id}, 'specific')"
    ))
    .await?;
    crate::serving::cache::announce(pool, &mut *conn, &project).await?;
    encode::row_description_text(out, &["project", "strategy", "algorithm"]);
    encode::data_row_text(out, &[&project, "specific", &algorithm]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// `pgml.deploy(project_name, strategy, algorithm)`: best_score, most_recent or rollback.
pub(crate) async fn deploy_strategy(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let params = [
        ("project_name", None),
        ("strategy", None),
        ("algorithm", Some(Arg::Null)),
    ];
    let args = bind(call, &params)?;
    let project = text_arg(&args, "project_name")
        .ok_or_else(|| refuse("22004", "project_name must not be NULL"))?;
    let strategy =
        text_arg(&args, "strategy").ok_or_else(|| refuse("22004", "strategy must not be NULL"))?;
    let algorithm = text_arg(&args, "algorithm");
    let mut conn = registry_conn(pool).await?;
    let found = value(
        &mut *conn,
        &format!(
            "SELECT id || ':' || task FROM pgml.projects WHERE name = {}",
            quote_literal(&project)
        ),
    )
    .await?
    .ok_or_else(|| {
        refuse(
            "22023",
            format!("Project named `{project}` does not exist."),
        )
    })?;
    let (project_id, task) = found.split_once(':').unwrap_or((&found, ""));
    let metric = crate::estimators::algorithms::deploy_metric(task);
    let only = algorithm
        .as_deref()
        .map(|a| format!(" AND m.algorithm = {}", quote_literal(a)))
        .unwrap_or_default();
    let sql = match strategy.as_str() {
        // Ranked by the metric's value (PostgresML compares the JSON text, which misorders e.g. 0.9 and 0.10).
        "best_score" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m WHERE m.project_id = {project_id}{only} ORDER BY (m.metrics->>'{metric}')::float8 DESC NULLS LAST, m.id DESC LIMIT 1"
        ),
        "most_recent" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m WHERE m.project_id = {project_id}{only} ORDER BY m.created_at DESC, m.id DESC LIMIT 1"
        ),
        "rollback" => format!(
            "SELECT m.id || ':' || m.algorithm FROM pgml.models m JOIN pgml.deployments d ON d.model_id = m.id WHERE m.project_id = {project_id}{only} AND m.id <> (SELECT model_id FROM pgml.deployments WHERE project_id = {project_id} ORDER BY created_at DESC, id DESC LIMIT 1) ORDER BY d.created_at DESC, d.id DESC LIMIT 1"
        ),
        "new_score" | "specific" => return Err(refuse("22023", "invalid strategy")),
        other => {
            return Err(refuse(
                "22P02",
                format!("invalid input value for enum pgml.strategy: \"{other}\""),
            ))
        }
    };
    let chosen = value(&mut *conn, &sql)
        .await?
        .ok_or_else(|| refuse("22023", "No qualified models exist for this deployment."))?;
    let (model_id, algorithm) = chosen.split_once(':').unwrap_or((&chosen, ""));
    conn.run(&format!(
        "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ({project_id}, {model_id}, {}::pgml.strategy)",
        quote_literal(&strategy)
    ))
    .await?;
    crate::serving::cache::announce(pool, &mut *conn, &project).await?;
    encode::row_description_text(out, &["project", "strategy", "algorithm"]);
    encode::data_row_text(out, &[&project, &strategy, algorithm]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}
