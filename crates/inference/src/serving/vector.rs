//! PostgresML's vector functions (`pgml.add`, `subtract`, `multiply`, `divide`, `norm_l0/l1/l2/max`,
//! `normalize_l1/l2/max`, `distance_l1/l2`, `dot_product`, `cosine_similarity`) over `real[]` and `double
//! precision[]`. With constant arguments Ocelot evaluates them itself (in `real` arithmetic for `real[]`, as
//! PostgresML's BLAS calls do); for use over table rows it installs equivalent SQL functions in the servers'
//! `pgml` schema, so the same queries run on a stock PostgreSQL. The element-wise aggregates (`pgml.sum`, `min`,
//! `max`, `min_abs`, `max_abs`) are installed there too; on a sharded pool they run on each shard and are not
//! merged across shards.

use bytes::BytesMut;

use crate::registry::models::{refuse, Refusal};
use crate::sql::call::{Arg, Call};
use ocelot_protocol::encode;

/// The functions, with their PostgresML argument names (`subtahend` and `dividend` are PostgresML's spelling).
pub(crate) const FUNCTIONS: &[(&str, &[&str])] = &[
    ("add", &["vector", "addend"]),
    ("subtract", &["vector", "subtahend"]),
    ("multiply", &["vector", "multiplicand"]),
    ("divide", &["vector", "dividend"]),
    ("norm_l0", &["vector"]),
    ("norm_l1", &["vector"]),
    ("norm_l2", &["vector"]),
    ("norm_max", &["vector"]),
    ("normalize_l1", &["vector"]),
    ("normalize_l2", &["vector"]),
    ("normalize_max", &["vector"]),
    ("distance_l1", &["vector", "other"]),
    ("distance_l2", &["vector", "other"]),
    ("dot_product", &["vector", "other"]),
    ("cosine_similarity", &["vector", "other"]),
];

pub(crate) fn is_vector_function(name: &str) -> bool {
    FUNCTIONS.iter().any(|(f, _)| *f == name)
}

/// PostgresML's element-wise vector aggregates, installed on the servers with the functions. Each combines two
/// elements (`a`, the state, and `b`, the row's) after mapping the row's (`x`).
const AGGREGATES: &[(&str, &str, &str)] = &[
    ("sum", "a + b", "x"),
    ("min", "least(a, b)", "x"),
    ("max", "greatest(a, b)", "x"),
    ("min_abs", "least(a, b)", "abs(x)"),
    ("max_abs", "greatest(a, b)", "abs(x)"),
];

/// Whether `name` is one of PostgresML's vector aggregates (`pgml.sum(real[])`, ...).
pub(crate) fn is_vector_aggregate(name: &str) -> bool {
    AGGREGATES.iter().any(|(f, _, _)| *f == name)
}

/// A value of either precision: `real` arithmetic rounds every step to f32.
fn round(v: f64, single: bool) -> f64 {
    if single {
        v as f32 as f64
    } else {
        v
    }
}

fn norms(x: &[f64], single: bool) -> [f64; 4] {
    let mut l1 = 0.0;
    let mut l2 = 0.0;
    let mut max = 0.0f64;
    for v in x {
        l1 = round(l1 + v.abs(), single);
        l2 = round(l2 + v * v, single);
        max = max.max(v.abs());
    }
    let l0 = x.iter().filter(|v| **v != 0.0).count() as f64;
    [l0, l1, round(l2.sqrt(), single), max]
}

fn dot(a: &[f64], b: &[f64], single: bool) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0, |s, (x, y)| round(s + round(x * y, single), single))
}

/// The result of a vector function: a number or an array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Number(f64),
    Array(Vec<f64>),
}

/// Evaluates `function` on `x` and, for two-argument functions, `other` (an array, or a scalar for the
/// arithmetic ones). Vector pairs are zipped, so the shorter length wins, as in PostgresML.
pub(crate) fn eval(
    function: &str,
    x: &[f64],
    other: Option<&Operand>,
    single: bool,
) -> Option<Value> {
    let zip = |f: &dyn Fn(f64, f64) -> f64| -> Option<Value> {
        Some(Value::Array(match other? {
            Operand::Scalar(s) => x.iter().map(|v| round(f(*v, *s), single)).collect(),
            Operand::Array(b) => x
                .iter()
                .zip(b)
                .map(|(v, w)| round(f(*v, *w), single))
                .collect(),
        }))
    };
    let array = |other: Option<&Operand>| match other {
        Some(Operand::Array(b)) => Some(b.clone()),
        _ => None,
    };
    let [l0, l1, l2, max] = norms(x, single);
    Some(match function {
        "add" => return zip(&|a, b| a + b),
        "subtract" => return zip(&|a, b| a - b),
        "multiply" => return zip(&|a, b| a * b),
        "divide" => return zip(&|a, b| a / b),
        "norm_l0" => Value::Number(l0),
        "norm_l1" => Value::Number(l1),
        "norm_l2" => Value::Number(l2),
        "norm_max" => Value::Number(max),
        "normalize_l1" | "normalize_l2" | "normalize_max" => {
            let n = match function {
                "normalize_l1" => l1,
                "normalize_l2" => l2,
                _ => max,
            };
            Value::Array(x.iter().map(|v| round(v / n, single)).collect())
        }
        "distance_l1" => {
            let b = array(other)?;
            Value::Number(
                x.iter()
                    .zip(&b)
                    .fold(0.0, |s, (p, q)| round(s + (p - q).abs(), single)),
            )
        }
        "distance_l2" => {
            let b = array(other)?;
            let sq = x
                .iter()
                .zip(&b)
                .fold(0.0, |s, (p, q)| round(s + (p - q) * (p - q), single));
            Value::Number(round(sq.sqrt(), single))
        }
        "dot_product" => Value::Number(dot(x, &array(other)?, single)),
        "cosine_similarity" => {
            let b = array(other)?;
            let nb = norms(&b, single)[2];
            Value::Number(round(dot(x, &b, single) / (l2 * nb), single))
        }
        _ => return None,
    })
}

/// The second argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Scalar(f64),
    Array(Vec<f64>),
}

fn numbers(items: &[Arg], function: &str) -> Result<Vec<f64>, Refusal> {
    items
        .iter()
        .map(|a| match a {
            Arg::Null => Err(refuse(
                "22004",
                format!("pgml.{function}: array elements must not be NULL"),
            )),
            a => a
                .as_f64()
                .ok_or_else(|| refuse("22P02", format!("pgml.{function}: not a number"))),
        })
        .collect()
}

/// Answers a vector function call with constant arguments.
pub(crate) fn serve(call: &Call, name: &str, out: &mut BytesMut) -> Result<(), Refusal> {
    let f = call.function.as_str();
    let params: Vec<crate::sql::call::Param> = FUNCTIONS
        .iter()
        .find(|(n, _)| *n == f)
        .map(|(_, p)| p.iter().map(|p| (*p, None)).collect())
        .unwrap_or_default();
    let args = crate::sql::call::bind(call, &params)?;
    let (Some(Arg::Array(items, ty)), other) = (
        args.get("vector"),
        params.get(1).and_then(|p| args.get(p.0)),
    ) else {
        return Err(refuse(
            "42883",
            format!("function pgml.{f} takes an array of real or double precision first"),
        ));
    };
    let single = ty.as_deref() != Some("float8");
    let x = numbers(items, f)?;
    let other = match other {
        None => None,
        Some(Arg::Array(b, _)) => Some(Operand::Array(numbers(b, f)?)),
        Some(Arg::Null) => None,
        Some(a) => Some(Operand::Scalar(a.as_f64().ok_or_else(|| {
            refuse(
                "22P02",
                format!("pgml.{f}: the second argument is not a number"),
            )
        })?)),
    };
    if params.len() == 2 && other.is_none() {
        // STRICT: a NULL argument gives NULL.
        encode::row_description_typed(out, &[(name, if single { 700 } else { 701 }, -1)]);
        encode::data_row_opt(out, &[None]);
        encode::command_complete(out, "SELECT 1");
        return Ok(());
    }
    let value = eval(f, &x, other.as_ref(), single).ok_or_else(|| {
        refuse(
            "42883",
            format!("function pgml.{f} needs an array as its second argument"),
        )
    })?;
    let text = |v: f64| {
        if single {
            crate::serving::serve::float4_text(v as f32)
        } else {
            crate::serving::serve::float8_text(v)
        }
    };
    match value {
        Value::Number(v) => {
            encode::row_description_typed(out, &[(name, if single { 700 } else { 701 }, -1)]);
            encode::data_row_text(out, &[&text(v)]);
        }
        Value::Array(v) => {
            let items: Vec<String> = v.into_iter().map(text).collect();
            encode::row_description_typed(out, &[(name, if single { 1021 } else { 1022 }, -1)]);
            encode::data_row_text(out, &[&format!("{{{}}}", items.join(","))]);
        }
    }
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

/// Installs the SQL versions on every shard's primary, once per pool, unless the functions exist there (the real
/// extension, or an earlier install). A failure is logged; the query then gets the server's own error.
pub(crate) async fn ensure_installed(pool: &std::sync::Arc<dyn crate::backend::Backend>) {
    pool.models()
        .vector_sql()
        .get_or_init(|| async {
            for shard in 0..pool.shard_count() {
                if let Err(e) = install(pool, shard).await {
                    tracing::warn!(pool = %pool.database(), shard, "cannot install pgml vector functions: {e}");
                    return false;
                }
            }
            true
        })
        .await;
}

async fn install(
    pool: &std::sync::Arc<dyn crate::backend::Backend>,
    shard: usize,
) -> Result<(), crate::backend::BackendError> {
    let mut conn = pool.conn(shard, crate::backend::Which::Primary).await?;
    let present = conn
        .query_value("SELECT to_regprocedure('pgml.max_abs(double precision[])') IS NOT NULL")
        .await?;
    if present.as_deref() == Some("t") {
        return Ok(());
    }
    // One Query is one implicit transaction: concurrent installers (other Ocelot instances) take turns on the
    // lock, and a failure leaves nothing half-installed.
    conn.run(&format!(
        "SELECT pg_advisory_xact_lock(7463001); {}",
        sql_definitions()
    ))
    .await?;
    Ok(())
}

/// SQL definitions of the functions for `real[]` and `double precision[]`, for servers without PostgresML.
pub(crate) fn sql_definitions() -> String {
    let mut sql = String::from("CREATE SCHEMA IF NOT EXISTS pgml;\n");
    for (t, arr) in [
        ("real", "real[]"),
        ("double precision", "double precision[]"),
    ] {
        arithmetic(&mut sql, t, arr);
        norm_functions(&mut sql, t, arr);
        distances(&mut sql, t, arr);
        aggregates(&mut sql, t, arr);
    }
    sql
}

// Every function computes in double precision and casts back: products of small `real` values would underflow
// (an error in PostgreSQL) where PostgresML's BLAS rounds them to zero.
const D: &str = "double precision";

fn define(sql: &mut String, name: &str, args: &str, ret: &str, body: &str) {
    sql.push_str(&format!(
        "CREATE OR REPLACE FUNCTION pgml.{name}({args}) RETURNS {ret} LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $ocelot$ {body} $ocelot$;\n"
    ));
}

/// The array of `e` over each element `a` of `vector`, in order, as `t`.
fn each(e: &str, t: &str) -> String {
    format!("SELECT coalesce(array_agg(({e})::{t} ORDER BY i), '{{}}') FROM unnest(vector::{D}[]) WITH ORDINALITY u(a, i)")
}

/// The norm expression `e` over the elements `a` of `vector`.
fn norm(e: &str) -> String {
    format!("(SELECT {e} FROM unnest(vector::{D}[]) a)")
}

/// add, subtract, multiply and divide, by a scalar and element-wise by another array.
fn arithmetic(sql: &mut String, t: &str, arr: &str) {
    let zip = |e: &str, b: &str| {
        format!("SELECT coalesce(array_agg(({e})::{t} ORDER BY i), '{{}}') FROM unnest(vector::{D}[], {b}::{D}[]) WITH ORDINALITY u(a, b, i) WHERE i <= least(cardinality(vector), cardinality({b}))")
    };
    for (name, arg, op) in [
        ("add", "addend", "+"),
        ("subtract", "subtahend", "-"),
        ("multiply", "multiplicand", "*"),
        ("divide", "dividend", "/"),
    ] {
        let scalar = each(&format!("a {op} {arg}::{D}"), t);
        define(sql, name, &format!("vector {arr}, {arg} {t}"), arr, &scalar);
        let pairwise = zip(&format!("a {op} b"), arg);
        define(
            sql,
            name,
            &format!("vector {arr}, {arg} {arr}"),
            arr,
            &pairwise,
        );
    }
}

/// The norms, and normalize_* dividing by each (but l0).
fn norm_functions(sql: &mut String, t: &str, arr: &str) {
    for (name, e) in [
        ("norm_l0", "count(*) FILTER (WHERE a <> 0)"),
        ("norm_l1", "coalesce(sum(abs(a)), 0)"),
        ("norm_l2", "sqrt(coalesce(sum(a * a), 0))"),
        ("norm_max", "coalesce(max(abs(a)), 0)"),
    ] {
        let args = format!("vector {arr}");
        define(sql, name, &args, t, &format!("SELECT {}::{t}", norm(e)));
        if name != "norm_l0" {
            let normalize = name.replace("norm_", "normalize_");
            define(
                sql,
                &normalize,
                &args,
                arr,
                &each(&format!("a / {}", norm(e)), t),
            );
        }
    }
}

/// Distances and similarities between two arrays, over the positions where both have a value.
fn distances(sql: &mut String, t: &str, arr: &str) {
    let pair = |e: &str| {
        format!("(SELECT {e} FROM unnest(vector::{D}[], other::{D}[]) u(a, b) WHERE a IS NOT NULL AND b IS NOT NULL)")
    };
    for (name, e) in [
        ("distance_l1", pair("coalesce(sum(abs(a - b)), 0)")),
        (
            "distance_l2",
            pair("sqrt(coalesce(sum((a - b) * (a - b)), 0))"),
        ),
        ("dot_product", pair("coalesce(sum(a * b), 0)")),
        (
            "cosine_similarity",
            format!(
                "{} / ({} * (SELECT sqrt(sum(b * b)) FROM unnest(other::{D}[]) b))",
                pair("sum(a * b)"),
                norm("sqrt(sum(a * a))")
            ),
        ),
    ] {
        let args = format!("vector {arr}, other {arr}");
        define(sql, name, &args, t, &format!("SELECT ({e})::{t}"));
    }
}

/// The vector aggregates over `arr` (of `t`): NULL rows are skipped and no rows give `{}`, as PostgresML's do;
/// the combine function lets PostgreSQL run them in parallel.
fn aggregates(sql: &mut String, t: &str, arr: &str) {
    let d = "double precision";
    for (name, step, map) in AGGREGATES {
        let mapped = format!(
            "(SELECT array_agg(({})::{t} ORDER BY i) FROM unnest(v::{d}[]) WITH ORDINALITY u(x, i))",
            map
        );
        let state = format!("pgml.ocelot_{name}_state");
        sql.push_str(&format!(
            "CREATE OR REPLACE FUNCTION {state}(s {arr}, v {arr}) RETURNS {arr} LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $ocelot$ \
             SELECT CASE WHEN v IS NULL THEN s WHEN s IS NULL THEN {mapped} ELSE (SELECT array_agg(({step})::{t} ORDER BY i) \
             FROM unnest(s::{d}[], {mapped}::{d}[]) WITH ORDINALITY u(a, b, i)) END $ocelot$;\n\
             CREATE OR REPLACE FUNCTION pgml.ocelot_{name}_combine(s {arr}, v {arr}) RETURNS {arr} LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $ocelot$ \
             SELECT CASE WHEN v IS NULL THEN s WHEN s IS NULL THEN v ELSE (SELECT array_agg(({step})::{t} ORDER BY i) \
             FROM unnest(s::{d}[], v::{d}[]) WITH ORDINALITY u(a, b, i)) END $ocelot$;\n\
             CREATE OR REPLACE FUNCTION pgml.ocelot_{name}_final(s {arr}) RETURNS {arr} LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $ocelot$ \
             SELECT coalesce(s, '{{}}') $ocelot$;\n\
             CREATE OR REPLACE AGGREGATE pgml.{name}({arr}) (SFUNC = {state}, STYPE = {arr}, \
             FINALFUNC = pgml.ocelot_{name}_final, COMBINEFUNC = pgml.ocelot_{name}_combine, PARALLEL = SAFE);\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_like_postgresml() {
        let x = [3.0, 0.0, -4.0];
        let n = |f: &str| match eval(f, &x, None, true) {
            Some(Value::Number(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (n("norm_l0"), n("norm_l1"), n("norm_l2"), n("norm_max")),
            (2.0, 7.0, 5.0, 4.0)
        );
        assert_eq!(
            eval("normalize_l2", &x, None, true),
            Some(Value::Array(
                vec![0.6, 0.0, -0.8]
                    .into_iter()
                    .map(|v: f64| v as f32 as f64)
                    .collect()
            ))
        );
        let other = Operand::Array(vec![1.0, 2.0]);
        // Zipped: the shorter length wins.
        assert_eq!(
            eval("add", &x, Some(&other), false),
            Some(Value::Array(vec![4.0, 2.0]))
        );
        assert_eq!(
            eval("divide", &x, Some(&Operand::Scalar(2.0)), false),
            Some(Value::Array(vec![1.5, 0.0, -2.0]))
        );
        assert_eq!(
            eval("dot_product", &x, Some(&other), false),
            Some(Value::Number(3.0))
        );
        assert_eq!(
            eval(
                "distance_l1",
                &[1.0, 1.0],
                Some(&Operand::Array(vec![4.0, 5.0])),
                false
            ),
            Some(Value::Number(7.0))
        );
        assert_eq!(
            eval(
                "distance_l2",
                &[1.0, 1.0],
                Some(&Operand::Array(vec![4.0, 5.0])),
                false
            ),
            Some(Value::Number(5.0))
        );
        let Some(Value::Number(c)) = eval(
            "cosine_similarity",
            &[1.0, 0.0],
            Some(&Operand::Array(vec![1.0, 1.0])),
            false,
        ) else {
            panic!()
        };
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(eval("distance_l2", &x, None, true), None);
    }

    #[test]
    fn sql_definitions_cover_every_function_in_both_precisions() {
        let sql = sql_definitions();
        for (f, _) in FUNCTIONS {
            assert!(sql.contains(&format!("pgml.{f}(vector real[]")), "{f}");
            assert!(
                sql.contains(&format!("pgml.{f}(vector double precision[]")),
                "{f}"
            );
        }
    }
}
