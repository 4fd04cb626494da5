//! Constant `pgml.embed(...)` calls inside a bigger query (`ORDER BY pgml.cosine_similarity(emb,
//! pgml.embed('m', 'question')) DESC LIMIT 5`, `INSERT ... VALUES (1, pgml.embed('m', 'text'))`): Ocelot computes
//! each embedding once and puts it in the query as an `ARRAY[...]::real[]` literal before the query goes to the
//! servers, which then need no extension. Likewise the table functions only Ocelot can answer,
//! `pgml.drift(project)` and `pgml.live_metrics(project)`, in a query that filters, sorts or joins them: their
//! result goes into the query as a `VALUES` list with the functions' column names and types.

use std::sync::Arc;

use crate::backend::Backend;
use crate::serving::serve::ResultTable;
use crate::sql::call::{find_calls, Arg};
use ocelot_router::session_sql::{quote_literal, skip_quoted};

/// Byte ranges of the `pgml.embed(...)` calls in `sql`, outside literals and comments.
fn embed_spans(sql: &str) -> Vec<(usize, usize)> {
    call_spans(sql, b"pgml.embed")
}

/// Byte ranges of the calls of `function` (`pgml.name`, any case) in `sql`, outside literals and comments.
fn call_spans(sql: &str, function: &[u8]) -> Vec<(usize, usize)> {
    let n = function.len();
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = skip_quoted(b, i) {
            i = end;
            continue;
        }
        let rest = &b[i..];
        let boundary =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.');
        if boundary && rest.len() >= n && rest[..n].eq_ignore_ascii_case(function) {
            let mut j = i + n;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&b'(') {
                let mut depth = 0usize;
                let mut k = j;
                while k < b.len() {
                    if let Some(end) = skip_quoted(b, k) {
                        k = end;
                        continue;
                    }
                    match b[k] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                spans.push((i, k + 1));
                                break;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                i = k + 1;
                continue;
            }
        }
        i += 1;
    }
    spans
}

/// `sql` with each constant `pgml.embed(model, text)` replaced by its embedding; `None` when there is none to
/// replace (or one is not constant: a per-row embedding is the server's). The error is (SQLSTATE, message).
pub(crate) async fn inline_embeddings(
    pool: &Arc<dyn Backend>,
    sql: &str,
) -> Option<Result<String, (&'static str, String)>> {
    let spans = embed_spans(sql);
    if spans.is_empty() {
        return None;
    }
    let mut texts = Vec::new();
    for &(a, b) in &spans {
        let calls = find_calls(&format!("SELECT {}", &sql[a..b])).ok()?;
        let [call] = calls.as_slice() else {
            return None;
        };
        let args = crate::sql::call::bind(
            call,
            &[
                ("transformer", None),
                ("text", None),
                ("kwargs", Some(Arg::Text("{}".into()))),
            ],
        )
        .ok()?;
        let (Some(Arg::Text(model)), Some(Arg::Text(text))) =
            (args.get("transformer"), args.get("text"))
        else {
            return None;
        };
        if !matches!(args.get("kwargs"), Some(Arg::Text(k)) if k.trim() == "{}") {
            return None;
        }
        texts.push((model.clone(), text.clone()));
    }
    let dir = pool.models().models_dir().to_path_buf();
    let vectors = tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|(m, t)| {
                crate::serving::embed_queue::embed_cached(&dir, m, std::slice::from_ref(t))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let vectors = match vectors {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Some(Err(("58P01", e.to_string()))),
        Err(e) => return Some(Err(("XX000", format!("embedding failed: {e}")))),
    };
    let mut out = String::with_capacity(sql.len() + spans.len() * 4096);
    let mut last = 0;
    for ((a, b), v) in spans.iter().zip(vectors) {
        out.push_str(&sql[last..*a]);
        let items: Vec<String> = v
            .first()
            .map(|v| {
                v.iter()
                    .map(|x| crate::serving::serve::float4_text(*x))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!("ARRAY[{}]::real[]", items.join(",")));
        last = *b;
    }
    out.push_str(&sql[last..]);
    Some(Ok(out))
}

/// A computed result as a subquery in FROM: the rows as typed literals under the function's column names.
fn values_subquery(name: &str, (cols, rows): &ResultTable, aliased: bool) -> String {
    let ty = |oid: u32| match oid {
        crate::sql::params::INT8 => "bigint",
        crate::sql::params::FLOAT8 => "float8",
        _ => "text",
    };
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let literal_rows: Vec<String> = if rows.is_empty() {
        // VALUES needs a row: a typed one, filtered out.
        vec![format!(
            "({})",
            cols.iter()
                .map(|c| format!("NULL::{}", ty(c.1)))
                .collect::<Vec<_>>()
                .join(", ")
        )]
    } else {
        rows.iter()
            .map(|r| {
                let cells: Vec<String> = cols
                    .iter()
                    .zip(r)
                    .map(|(c, v)| match v {
                        Some(v) => format!("{}::{}", quote_literal(v), ty(c.1)),
                        None => format!("NULL::{}", ty(c.1)),
                    })
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect()
    };
    let filter = if rows.is_empty() { " WHERE false" } else { "" };
    let inner = format!(
        "(SELECT * FROM (VALUES {}) AS ocelot_{name}({}){filter})",
        literal_rows.join(", "),
        names.join(", ")
    );
    if aliased {
        inner
    } else {
        format!("{inner} AS {name}")
    }
}

/// `sql` with each `pgml.drift(...)` and `pgml.live_metrics(...)` replaced by its result; `None` when there is none.
/// The error is (SQLSTATE, message).
pub(crate) async fn inline_table_functions(
    pool: &Arc<dyn Backend>,
    sql: &str,
) -> Option<Result<String, (&'static str, String)>> {
    let mut spans: Vec<(usize, usize, &str)> = Vec::new();
    for name in ["drift", "live_metrics"] {
        let f = format!("pgml.{name}");
        spans.extend(
            call_spans(sql, f.as_bytes())
                .into_iter()
                .map(|(a, b)| (a, b, name)),
        );
    }
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(sql.len() + 1024);
    let mut last = 0;
    for (a, b, name) in spans {
        let calls = find_calls(&format!("SELECT * FROM {}", &sql[a..b])).ok()?;
        let [call] = calls.as_slice() else {
            return None;
        };
        let table = match name {
            "drift" => crate::serving::serve::drift_table(pool, call).await,
            _ => crate::ops::logging::live_table(pool, call).await,
        };
        let table = match table {
            Ok(t) => t,
            Err(r) => return Some(Err((r.code, r.message))),
        };
        out.push_str(&sql[last..a]);
        out.push_str(&values_subquery(
            name,
            &table,
            ocelot_router::has_alias(&sql[b..]),
        ));
        last = b;
    }
    out.push_str(&sql[last..]);
    Some(Ok(out))
}

/// `sql` with what Ocelot computes inlined: constant embeddings, then its table functions.
pub async fn inline(
    pool: &Arc<dyn Backend>,
    sql: &str,
) -> Option<Result<String, (&'static str, String)>> {
    let embedded = match inline_embeddings(pool, sql).await {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Some(Err(e)),
        None => None,
    };
    let base = embedded.as_deref().unwrap_or(sql);
    match inline_table_functions(pool, base).await {
        Some(r) => Some(r),
        None => embedded.map(Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_calls_outside_literals_and_comments() {
        let sql = "SELECT id FROM d /* pgml.embed('x', 'y') */ WHERE t <> 'pgml.embed(1)' ORDER BY pgml.cosine_similarity(e, PGML.EMBED ('m', 'a (b)')) DESC";
        let spans = embed_spans(sql);
        assert_eq!(spans.len(), 1);
        assert_eq!(&sql[spans[0].0..spans[0].1], "PGML.EMBED ('m', 'a (b)')");
        let sql = "INSERT INTO d VALUES (1, pgml.embed('m', $$x)$$)), (2, pgml.embed('m', 'y'))";
        let found: Vec<&str> = embed_spans(sql).iter().map(|(a, b)| &sql[*a..*b]).collect();
        assert_eq!(found, ["pgml.embed('m', $$x)$$)", "pgml.embed('m', 'y')"]);
        assert!(embed_spans("SELECT xpgml.embed('m', 'y')").is_empty());
    }

    #[test]
    fn table_functions_become_values_with_or_without_an_alias() {
        assert!(ocelot_router::has_alias(" d WHERE x"));
        assert!(ocelot_router::has_alias(" AS d"));
        assert!(!ocelot_router::has_alias(" WHERE psi > 0.2"));
        assert!(!ocelot_router::has_alias(" ORDER BY 1"));
        assert!(!ocelot_router::has_alias(")"));
        assert!(!ocelot_router::has_alias(""));
        let cols = vec![
            ("model_id", crate::sql::params::INT8, 8),
            ("feature", crate::sql::params::TEXT, -1),
        ];
        let rows = vec![
            vec![Some("1".into()), Some("it's".into())],
            vec![Some("1".into()), None],
        ];
        assert_eq!(
            values_subquery("drift", &(cols.clone(), rows), false),
            "(SELECT * FROM (VALUES ($ocelot$1$ocelot$::bigint, $ocelot$it's$ocelot$::text), ($ocelot$1$ocelot$::bigint, NULL::text)) AS ocelot_drift(model_id, feature)) AS drift"
        );
        assert_eq!(
            values_subquery("drift", &(cols, vec![]), true),
            "(SELECT * FROM (VALUES (NULL::bigint, NULL::text)) AS ocelot_drift(model_id, feature) WHERE false)"
        );
    }
}
