//! Finding `pgml.*` calls in a query and binding their arguments to PostgresML's signatures, sans-IO. A call's
//! arguments are evaluated when they are constants (literals, casts of literals, `ARRAY[...]`, negated numbers,
//! NULL); anything else (a column, an expression over columns) is kept as SQL text for per-row evaluation.
//! Binding follows PostgreSQL's rules for named notation: positional arguments first, then `name => value`,
//! defaults for the rest, and an error naming the function when an argument is unknown, repeated or missing.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgOperator,
    FunctionArguments, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// An argument's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Null,
    Text(String),
    /// A number as written.
    Number(String),
    Bool(bool),
    /// `ARRAY[...]` (or `'{...}'` cast to an array type) with its element type when cast.
    Array(Vec<Arg>, Option<String>),
    /// `ROW(...)` or `(a, b, ...)`: a record of the training relation's columns.
    Row(Vec<Arg>),
    /// Not a constant: the expression's SQL.
    Expr(String),
}

impl Arg {
    pub(crate) fn is_constant(&self) -> bool {
        match self {
            Arg::Expr(_) => false,
            Arg::Array(items, _) | Arg::Row(items) => items.iter().all(Arg::is_constant),
            _ => true,
        }
    }

    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Arg::Text(s) | Arg::Number(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Arg::Number(n) | Arg::Text(n) => n.trim().parse().ok(),
            Arg::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Arg::Bool(b) => Some(*b),
            Arg::Text(t) => match t.to_ascii_lowercase().as_str() {
                "t" | "true" | "on" | "yes" | "1" => Some(true),
                "f" | "false" | "off" | "no" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One `pgml.<function>(...)` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function name, lower case, without the schema.
    pub function: String,
    /// Arguments in order: (name for named notation, value).
    pub(crate) args: Vec<(Option<String>, Arg)>,
}

/// Why a call cannot be bound (PostgreSQL's 42883, undefined_function, or 22023 for a bad value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("function pgml.{function}({args}) does not exist")]
    NoSuchFunction { function: String, args: String },
    #[error("argument \"{name}\" of pgml.{function} is given more than once")]
    Repeated { function: String, name: String },
    #[error("the query could not be parsed: {0}")]
    Parse(String),
}

/// The `pgml.*` calls in `sql`, outermost first.
pub fn find_calls(sql: &str) -> Result<Vec<Call>, CallError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| CallError::Parse(e.to_string()))?;
    let mut calls = Vec::new();
    for s in &statements {
        let _ = sqlparser::ast::visit_expressions(s, |e| {
            if let Expr::Function(f) = e {
                if let Some(c) = pgml_call(f) {
                    calls.push(c);
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    // `SELECT * FROM pgml.train(...)`: a table function in FROM is not an expression in sqlparser's tree.
    if calls.is_empty() {
        for s in &statements {
            collect_table_functions(&s.to_string(), &mut calls);
        }
    }
    Ok(calls)
}

/// Table functions (`FROM pgml.train(...)`) are not expressions in sqlparser's tree: they are found by parsing
/// the FROM item as a SELECT list instead.
fn collect_table_functions(sql: &str, calls: &mut Vec<Call>) {
    let lower = sql.to_ascii_lowercase();
    let Some(from) = lower.find(" from pgml.") else {
        return;
    };
    let rest = &sql[from + 6..];
    // The call runs to its matching parenthesis.
    let mut depth = 0usize;
    let mut end = None;
    for t in ocelot_router::lex::tokens(rest) {
        if t.kind != ocelot_router::lex::Kind::Punct {
            continue;
        }
        match &rest[t.span.clone()] {
            "(" => depth += 1,
            ")" if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    end = Some(t.span.end);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return;
    };
    if let Ok(found) = find_calls(&format!("SELECT {}", &rest[..end])) {
        calls.extend(found);
    }
}

fn pgml_call(f: &Function) -> Option<Call> {
    let parts: Vec<String> = f
        .name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .collect();
    let [schema, name] = parts.as_slice() else {
        return None;
    };
    if schema != "pgml" {
        return None;
    }
    let mut args = Vec::new();
    if let FunctionArguments::List(list) = &f.args {
        for a in &list.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push((None, value(e))),
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    operator: FunctionArgOperator::RightArrow | FunctionArgOperator::Assignment,
                } => args.push((Some(name.value.to_lowercase()), value(e))),
                FunctionArg::ExprNamed {
                    name: Expr::Identifier(name),
                    arg: FunctionArgExpr::Expr(e),
                    operator: FunctionArgOperator::RightArrow | FunctionArgOperator::Assignment,
                } => args.push((Some(name.value.to_lowercase()), value(e))),
                other => args.push((None, Arg::Expr(other.to_string()))),
            }
        }
    }
    Some(Call {
        function: name.clone(),
        args,
    })
}

/// The element type of an array cast, by PostgreSQL's internal name (`float4`, `float8`, `int2`, `int4`, `int8`,
/// `bool`, ...).
fn array_element(t: &DataType) -> Option<String> {
    let DataType::Array(_) = t else {
        return None;
    };
    let s = t.to_string().to_lowercase();
    let el = s.trim_end_matches("[]").trim();
    Some(
        match el {
            "real" | "float4" => "float4",
            "double precision" | "float8" | "float" => "float8",
            "smallint" | "int2" => "int2",
            "int" | "integer" | "int4" => "int4",
            "bigint" | "int8" => "int8",
            "boolean" | "bool" => "bool",
            "numeric" | "decimal" => "numeric",
            other => other,
        }
        .to_owned(),
    )
}

/// An expression's constant value, or its SQL.
fn value(e: &Expr) -> Arg {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Arg::Null,
            Value::Boolean(b) => Arg::Bool(*b),
            Value::Number(n, _) => Arg::Number(n.to_string()),
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: s, .. }) => {
                Arg::Text(s.clone())
            }
            _ => Arg::Expr(e.to_string()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match value(expr) {
            Arg::Number(n) => Arg::Number(format!("-{n}")),
            _ => Arg::Expr(e.to_string()),
        },
        Expr::Nested(inner) => value(inner),
        Expr::Array(a) => Arg::Array(a.elem.iter().map(value).collect(), None),
        Expr::Tuple(items) => Arg::Row(items.iter().map(value).collect()),
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("row") => match &f.args {
            sqlparser::ast::FunctionArguments::List(list) => {
                let items: Option<Vec<Arg>> = list
                    .args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(value(e)),
                        _ => None,
                    })
                    .collect();
                items.map_or_else(|| Arg::Expr(e.to_string()), Arg::Row)
            }
            _ => Arg::Expr(e.to_string()),
        },
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            expr,
            data_type,
            ..
        } => {
            let inner = value(expr);
            match (inner, array_element(data_type)) {
                (Arg::Array(items, _), Some(el)) => Arg::Array(items, Some(el)),
                (Arg::Text(t), Some(el)) => match parse_array_literal(&t) {
                    Some(items) => Arg::Array(items, Some(el)),
                    None => Arg::Expr(e.to_string()),
                },
                (v @ (Arg::Text(_) | Arg::Number(_) | Arg::Null | Arg::Bool(_)), None) => v,
                _ => Arg::Expr(e.to_string()),
            }
        }
        _ => Arg::Expr(e.to_string()),
    }
}

/// `'{1,2.5,-3}'` as numbers (unquoted elements only).
fn parse_array_literal(s: &str) -> Option<Vec<Arg>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|x| {
            let x = x.trim();
            if x.eq_ignore_ascii_case("null") {
                Some(Arg::Null)
            } else if x.parse::<f64>().is_ok() {
                Some(Arg::Number(x.to_owned()))
            } else {
                match x.to_ascii_lowercase().as_str() {
                    "t" | "true" => Some(Arg::Bool(true)),
                    "f" | "false" => Some(Arg::Bool(false)),
                    _ => None,
                }
            }
        })
        .collect()
}

/// A parameter of a signature: its name and default (`None`: required).
pub(crate) type Param = (&'static str, Option<Arg>);

/// Binds a call's arguments to `params`, PostgreSQL's way.
pub(crate) fn bind(
    call: &Call,
    params: &[Param],
) -> Result<BTreeMap<&'static str, Arg>, CallError> {
    let no_such = || CallError::NoSuchFunction {
        function: call.function.clone(),
        args: call
            .args
            .iter()
            .map(|(n, _)| {
                n.clone()
                    .map_or_else(|| "?".to_owned(), |n| format!("{n} => ?"))
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut out: BTreeMap<&'static str, Arg> = BTreeMap::new();
    let mut named = false;
    for (i, (name, v)) in call.args.iter().enumerate() {
        let param = match name {
            None if named => return Err(no_such()),
            None => params.get(i).map(|p| p.0).ok_or_else(no_such)?,
            Some(n) => {
                named = true;
                params
                    .iter()
                    .find(|p| p.0 == n)
                    .map(|p| p.0)
                    .ok_or_else(no_such)?
            }
        };
        if out.insert(param, v.clone()).is_some() {
            return Err(CallError::Repeated {
                function: call.function.clone(),
                name: param.to_owned(),
            });
        }
    }
    for (name, default) in params {
        if !out.contains_key(name) {
            match default {
                Some(d) => {
                    out.insert(name, d.clone());
                }
                None => return Err(no_such()),
            }
        }
    }
    Ok(out)
}

/// `pgml.train`'s parameters and defaults (PostgresML 2.10).
pub(crate) fn train_params() -> Vec<Param> {
    let text = |s: &str| Some(Arg::Text(s.to_owned()));
    vec![
        ("project_name", None),
        ("task", Some(Arg::Null)),
        ("relation_name", Some(Arg::Null)),
        ("y_column_name", Some(Arg::Null)),
        ("algorithm", text("linear")),
        ("hyperparams", text("{}")),
        ("search", Some(Arg::Null)),
        ("search_params", text("{}")),
        ("search_args", text("{}")),
        ("test_size", Some(Arg::Number("0.25".into()))),
        ("test_sampling", text("stratified")),
        ("runtime", Some(Arg::Null)),
        ("automatic_deploy", Some(Arg::Bool(true))),
        ("materialize_snapshot", Some(Arg::Bool(false))),
        ("preprocess", text("{}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_with_constant_and_row_arguments() {
        let calls =
            find_calls("SELECT pgml.predict('fraud', ARRAY[1, -2.5, 3]::real[]) AS p").unwrap();
        assert_eq!(
            calls,
            vec![Call {
                function: "predict".into(),
                args: vec![
                    (None, Arg::Text("fraud".into())),
                    (
                        None,
                        Arg::Array(
                            vec![
                                Arg::Number("1".into()),
                                Arg::Number("-2.5".into()),
                                Arg::Number("3".into())
                            ],
                            Some("float4".into())
                        )
                    ),
                ]
            }]
        );
        let calls =
            find_calls("SELECT id, pgml.predict(7, ARRAY[amount, n_24h]) FROM txns").unwrap();
        assert_eq!(calls[0].args[0].1, Arg::Number("7".into()));
        assert!(!calls[0].args[1].1.is_constant());
        let calls = find_calls("SELECT pgml.predict('p', '{1,2}'::float8[])").unwrap();
        assert_eq!(
            calls[0].args[1].1,
            Arg::Array(
                vec![Arg::Number("1".into()), Arg::Number("2".into())],
                Some("float8".into())
            )
        );
        assert!(find_calls("SELECT 1").unwrap().is_empty());
        // The record overload, written as ROW(...) or as a bare tuple.
        let row = Arg::Row(vec![Arg::Number("1".into()), Arg::Null]);
        for sql in [
            "SELECT pgml.predict('p', ROW(1, NULL))",
            "SELECT pgml.predict('p', (1, NULL))",
        ] {
            assert_eq!(find_calls(sql).unwrap()[0].args[1].1, row, "{sql}");
        }
        let calls = find_calls("SELECT pgml.predict('p', (a, 2)) FROM t").unwrap();
        assert!(!calls[0].args[1].1.is_constant());
    }

    #[test]
    fn binds_train_arguments_like_postgresql() {
        let calls = find_calls(
            "SELECT * FROM pgml.train('Diabetes', 'regression', 'pgml.diabetes', 'target', algorithm => 'ridge', test_sampling => 'last')",
        )
        .unwrap();
        let b = bind(&calls[0], &train_params()).unwrap();
        assert_eq!(b["project_name"], Arg::Text("Diabetes".into()));
        assert_eq!(b["relation_name"], Arg::Text("pgml.diabetes".into()));
        assert_eq!(b["algorithm"], Arg::Text("ridge".into()));
        assert_eq!(b["test_sampling"], Arg::Text("last".into()));
        assert_eq!(b["test_size"], Arg::Number("0.25".into()));
        assert_eq!(b["automatic_deploy"], Arg::Bool(true));
        let call =
            find_calls("SELECT pgml.train(project_name => 'x', task => 'classification')").unwrap();
        assert!(bind(&call[0], &train_params()).is_ok());
        // Unknown, repeated and missing arguments, and positional after named.
        for sql in [
            "SELECT pgml.train('x', colour => 'red')",
            "SELECT pgml.train(task => 'regression')",
            "SELECT pgml.train(project_name => 'x', 'regression')",
        ] {
            let call = find_calls(sql).unwrap();
            assert!(
                matches!(
                    bind(&call[0], &train_params()),
                    Err(CallError::NoSuchFunction { .. })
                ),
                "{sql}"
            );
        }
        let call = find_calls("SELECT pgml.train('x', project_name => 'y')").unwrap();
        assert!(matches!(
            bind(&call[0], &train_params()),
            Err(CallError::Repeated { .. })
        ));
    }
}
