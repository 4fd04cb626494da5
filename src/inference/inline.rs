//! Constant `pgml.embed(...)` calls inside a bigger query (`ORDER BY pgml.cosine_similarity(emb,
//! pgml.embed('m', 'question')) DESC LIMIT 5`, `INSERT ... VALUES (1, pgml.embed('m', 'text'))`): Ocelot computes
//! each embedding once and puts it in the query as an `ARRAY[...]::real[]` literal before the query goes to the
//! servers, which then need no extension.

use std::sync::Arc;

use super::call::{find_calls, Arg};
use crate::pool::UserPool;
use crate::router::session_sql::skip_quoted;

/// Byte ranges of the `pgml.embed(...)` calls in `sql`, outside literals and comments.
fn embed_spans(sql: &str) -> Vec<(usize, usize)> {
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
        if boundary && rest.len() >= 10 && rest[..10].eq_ignore_ascii_case(b"pgml.embed") {
            let mut j = i + 10;
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
pub async fn inline_embeddings(
    pool: &Arc<UserPool>,
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
        let args = super::call::bind(
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
    let dir = pool.models.models_dir().to_path_buf();
    let vectors = tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|(m, t)| super::embed_queue::embed_cached(&dir, m, std::slice::from_ref(t)))
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
            .map(|v| v.iter().map(|x| super::serve::float4_text(*x)).collect())
            .unwrap_or_default();
        out.push_str(&format!("ARRAY[{}]::real[]", items.join(",")));
        last = *b;
    }
    out.push_str(&sql[last..]);
    Some(Ok(out))
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
}
