//! The web dashboard on the metrics port: `/` shows the traffic of the last hour, the pools, servers and bans,
//! the models served with their A/B tests and the prediction log; `/models/<project>` shows one project's
//! models, A/B arms, live metrics against actual outcomes and the drift of each feature as charts. The pages are
//! read-only HTML with inline SVG and style, built from the same tables as the admin console's `SHOW`
//! commands; nothing is loaded from elsewhere, not even a script.
//!
//! The admin credentials are asked for (HTTP basic auth) when the exporter listens on an address other than
//! loopback, or when `dashboard_auth` is set; `/metrics` stays open for Prometheus, as in PgCat.

mod charts;
mod html;

use std::sync::Arc;

use base64::Engine as _;

use crate::admin::show;
use crate::shared::Shared;
use charts::{drift_chart, line_chart, Series};
use html::{decode_segment, encode_segment, esc, page, section};

/// A dashboard page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Page {
    Overview,
    Model(String),
}

/// The page at `path`, if any.
pub(crate) fn route(path: &str) -> Option<Page> {
    match path {
        "/" | "/index.html" => Some(Page::Overview),
        _ => {
            let project = path.strip_prefix("/models/")?;
            (!project.is_empty() && !project.contains('/'))
                .then(|| decode_segment(project))
                .flatten()
                .map(Page::Model)
        }
    }
}

/// Whether a request with `head` may see the dashboard.
pub(crate) fn authorized(shared: &Shared, head: &str) -> bool {
    let snapshot = shared.snapshot();
    let g = &snapshot.config.general;
    let loopback = shared
        .metrics_addr
        .get()
        .is_some_and(|a| a.ip().is_loopback());
    if loopback && !g.dashboard_auth {
        return true;
    }
    let Some(given) = basic_credentials(head) else {
        return false;
    };
    let want = format!("{}:{}", g.admin_username, g.admin_password);
    // Compared in full whatever the first difference, so the time taken does not tell how much was right.
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `user:password` from an `Authorization: Basic` header.
fn basic_credentials(head: &str) -> Option<String> {
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        String::from_utf8(raw).ok()
    })
}

/// The HTML of `page`, or `None` when the project is unknown to every pool.
pub(crate) async fn render(shared: &Shared, page: &Page) -> Option<String> {
    match page {
        Page::Overview => Some(overview(shared)),
        Page::Model(project) => model_page(shared, project).await,
    }
}

fn admin_table(shared: &Shared, what: &[&str]) -> crate::admin::table::Table {
    let args: Vec<String> = what.iter().map(|s| (*s).to_owned()).collect();
    show::table(shared, &args, crate::admin::Console::PgBouncer)
        .unwrap_or_else(|_| crate::admin::table::Table::new(&[]))
}

fn no_link(_: &str, _: &str) -> Option<String> {
    None
}

fn project_link(column: &str, value: &str) -> Option<String> {
    (column == "project").then(|| format!("/models/{}", encode_segment(value)))
}

fn overview(shared: &Shared) -> String {
    let mut body = section(
        "traffic",
        "Traffic, last hour",
        &format!("<div class=\"charts\">{}</div>", traffic_charts(shared)),
    );
    for (id, heading, what, empty) in [
        ("pools", "Pools", "pools", "No pools."),
        (
            "servers",
            "Servers",
            "servers",
            "No server connections open.",
        ),
        ("bans", "Bans", "bans", "No server is banned."),
        (
            "models",
            "Models",
            "models",
            "No model has been served yet.",
        ),
        ("ab", "A/B tests", "ab", "No A/B test is running."),
    ] {
        let link: &dyn Fn(&str, &str) -> Option<String> = if matches!(what, "models" | "ab") {
            &project_link
        } else {
            &no_link
        };
        body.push_str(&section(
            id,
            heading,
            &html::table(&admin_table(shared, &[what]), empty, link),
        ));
    }
    body.push_str(&section("log", "Prediction log", &log_table(shared)));
    page("Overview", &body)
}

/// The charts of the last hour's throughput, request time and predictions.
fn traffic_charts(shared: &Shared) -> String {
    let points = shared.history.points(crate::admin::reading(shared));
    let times: Vec<u64> = points.iter().map(|p| p.at).collect();
    let pick = |f: fn(&crate::stats::history::Point) -> f64| points.iter().map(f).collect();
    [
        line_chart(
            "throughput",
            "Throughput",
            "/s",
            &times,
            &[
                Series {
                    name: "requests",
                    color: "#1f6feb",
                    values: pick(|p| p.queries_per_s),
                },
                Series {
                    name: "transactions",
                    color: "#12b76a",
                    values: pick(|p| p.xacts_per_s),
                },
                Series {
                    name: "errors",
                    color: "#d92d20",
                    values: pick(|p| p.errors_per_s),
                },
            ],
        ),
        line_chart(
            "latency",
            "Mean request time",
            " µs",
            &times,
            &[Series {
                name: "request",
                color: "#7a5af8",
                values: pick(|p| p.mean_query_us),
            }],
        ),
        line_chart(
            "predictions",
            "Predictions served by Ocelot",
            "/s",
            &times,
            &[Series {
                name: "predictions",
                color: "#f79009",
                values: pick(|p| p.predictions_per_s),
            }],
        ),
    ]
    .concat()
}

/// The prediction log's counters per pool.
fn log_table(shared: &Shared) -> String {
    use crate::admin::table::{Col, Table};
    let mut t = Table::new(&[
        Col::Text("database"),
        Col::Text("user"),
        Col::Int("queued"),
        Col::Int("written"),
        Col::Int("dropped"),
        Col::Int("failed"),
    ]);
    for p in shared.snapshot().cluster.all_pools() {
        let c = p.models.log.counters.get();
        if c.iter().any(|n| *n > 0) {
            let mut row = vec![p.database.clone(), p.user.clone()];
            row.extend(c.iter().map(u64::to_string));
            t.row(row);
        }
    }
    html::table(&t, "No prediction has been logged.", &no_link)
}

async fn model_page(shared: &Shared, project: &str) -> Option<String> {
    let models = admin_table(shared, &["models"]).only("project", project);
    let pool = shared
        .snapshot()
        .cluster
        .all_pools()
        .into_iter()
        .find(|p| p.models.rows().iter().any(|m| m.project == project));
    if models.rows().is_empty() {
        return None;
    }
    let mut body = format!("<h2>Project {}</h2>", esc(project));
    body.push_str(&section(
        "project-models",
        "Models served",
        &html::table(&models, "", &no_link),
    ));
    let ab = admin_table(shared, &["ab"]).only("project", project);
    body.push_str(&section(
        "project-ab",
        "A/B test",
        &html::table(&ab, "No A/B test is running.", &no_link),
    ));
    body.push_str(&section(
        "live-metrics",
        "Live metrics (logged predictions against actual outcomes)",
        &live_metrics(pool.as_ref(), project).await,
    ));
    let mut drift = String::new();
    for p in shared.snapshot().cluster.all_pools() {
        for (proj, id, features) in p.models.drift_rows() {
            if proj != project {
                continue;
            }
            let n = features.first().map_or(0, |f| f.n);
            drift.push_str(&format!(
                "<h3>Model {id} ({} {}, {n} predictions in the window)</h3><div class=\"charts\">",
                esc(&p.database),
                esc(&p.user)
            ));
            for f in &features {
                drift.push_str(&drift_chart(
                    &f.feature,
                    f.min,
                    f.max,
                    &f.train_hist,
                    &f.live_hist,
                    f.psi,
                    f.ks,
                ));
            }
            drift.push_str("</div>");
        }
    }
    if drift.is_empty() {
        drift = "<p class=\"none\">No drift statistics: the model was not trained by Ocelot, or has not been fed features since it was loaded.</p>".into();
    }
    let table = admin_table(shared, &["model", "drift"]).only("project", project);
    drift.push_str(&html::table(&table, "", &no_link));
    body.push_str(&section("drift", "Feature drift", &drift));
    Some(page(&format!("Project {project}"), &body))
}

/// The project's live metrics from the registry, or why there are none.
async fn live_metrics(pool: Option<&Arc<crate::database::UserPool>>, project: &str) -> String {
    let Some(pool) = pool else {
        return "<p class=\"none\">No pool serves this project.</p>".into();
    };
    let backend: Arc<dyn crate::inference::backend::Backend> = pool.clone();
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        crate::inference::ops::logging::live_metrics(&backend, project),
    )
    .await;
    let rows = match asked {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return format!("<p class=\"error\">{}</p>", esc(&e)),
        Err(_) => return "<p class=\"error\">The registry did not answer in 3 s.</p>".into(),
    };
    use crate::admin::table::{Col, Table};
    let cols: Vec<Col> = crate::inference::ops::logging::LIVE_COLUMNS
        .iter()
        .map(|(name, oid, _)| {
            if *oid == crate::inference::sql::params::INT8 {
                Col::Int(name)
            } else {
                Col::Text(name)
            }
        })
        .collect();
    let mut t = Table::new(&cols);
    for r in rows {
        t.row(r.into_iter().map(Option::unwrap_or_default).collect());
    }
    html::table(
        &t,
        "No logged predictions: start logging with SELECT pgml.log_predictions(project, sample_rate, actuals_table, actuals_key).",
        &no_link,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_credentials() {
        assert_eq!(route("/"), Some(Page::Overview));
        assert_eq!(
            route("/models/my%20project"),
            Some(Page::Model("my project".into()))
        );
        assert_eq!(route("/models/"), None);
        assert_eq!(route("/models/a/b"), None);
        assert_eq!(route("/nope"), None);
        let head = "GET / HTTP/1.1\r\nHost: x\r\nauthorization: Basic YWRtaW46c2VjcmV0\r\n\r\n";
        assert_eq!(basic_credentials(head).as_deref(), Some("admin:secret"));
        assert_eq!(basic_credentials("GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            basic_credentials("GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n"),
            None
        );
    }
}
