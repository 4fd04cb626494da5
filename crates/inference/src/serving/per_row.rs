//! Per-row inference: `SELECT id, pgml.predict('fraud', ARRAY[amount, n_24h]) AS score FROM txns WHERE ...
//! [ORDER BY score DESC] [LIMIT n]`. Ocelot sends the query with the call replaced by its feature expressions
//! (as extra columns), predicts every returned row with the cached model, and answers with the columns the client
//! asked for, in its order, the prediction as `real`. An ORDER BY on the prediction, and the LIMIT/OFFSET after
//! it, are applied by Ocelot; other orderings stay in the query. On a sharded pool the rows are fetched from every
//! shard and merged first, as any keyless read is.

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, OrderByKind, Query, Select,
    SelectItem, SetExpr, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::sql::call::Arg;
use ocelot_router::select::literal_u64;

/// How to answer a per-row prediction query.
#[derive(Debug, Clone, PartialEq)]
pub struct PerRow {
    /// What the servers run: the query with the call's features as trailing columns.
    pub sql: String,
    /// What each row gets.
    pub output: Output,
    /// The model: a project name or a model id (`Null` when it comes per row from `target_col`).
    pub(crate) target: Arg,
    /// The column of the servers' answer that holds each row's model id.
    pub(crate) target_col: Option<usize>,
    /// The client's columns: `None` is the prediction, `Some(i)` the i-th column of the servers' answer.
    pub outputs: Vec<Option<usize>>,
    /// Columns of the servers' answer holding the features, in order.
    pub(crate) features: Vec<usize>,
    /// The features came as `ROW(...)`: the model's preprocessing applies.
    pub(crate) row: bool,
    /// The one feature expression is an array (a column such as PostgresML's `image`): its elements, flattened,
    /// are the features.
    pub(crate) spread: bool,
    /// The prediction column's name.
    pub name: String,
    /// ORDER BY the prediction (`Some(descending)`), applied by Ocelot with OFFSET and LIMIT.
    pub(crate) order: Option<bool>,
    pub(crate) limit: Option<u64>,
    pub(crate) offset: u64,
}

/// How a call gives its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Given {
    /// `ARRAY[a, b, ...]`: one expression per feature.
    Array,
    /// `ROW(a, b, ...)` or `(a, b, ...)`: preprocessed by the model.
    Row,
    /// Any other expression, an array-valued column: its elements are the features.
    Spread,
}

/// What a per-row call returns for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `pgml.predict`: a `real`.
    Predict,
    /// `pgml.predict_proba`: the class probabilities, a `real[]`.
    Proba,
    /// `pgml.predict_joint`: one value per target of a joint regression, a `real[]`.
    Joint,
    /// `pgml.decompose`: the vector in a decomposition's component space, a `real[]`.
    Decompose,
}

impl Output {
    /// The column's type oid and length.
    pub fn column_type(self) -> (u32, i16) {
        match self {
            Output::Predict => (700, 4),
            Output::Proba | Output::Joint | Output::Decompose => (1021, -1),
        }
    }
}

/// The model a call names: a constant (project name or model id), or an expression the servers evaluate per
/// row (`pgml.predict(model_id, ...)` with the id from a column).
type Target = Result<Arg, Expr>;

/// A per-row call (`pgml.predict`, `predict_proba`, `predict_joint`): what it returns, its target, its feature
/// expressions, and how they are given.
fn is_predict(e: &Expr) -> Option<(Output, Target, Vec<Expr>, Given)> {
    let Expr::Function(f) = e else {
        return None;
    };
    let parts: Vec<String> = f
        .name
        .0
        .iter()
        .map(|p| p.to_string().to_lowercase())
        .collect();
    let output = match parts.as_slice() {
        [pgml, f] if pgml == "pgml" && f == "predict" => Output::Predict,
        [pgml, f] if pgml == "pgml" && f == "predict_proba" => Output::Proba,
        [pgml, f] if pgml == "pgml" && f == "predict_joint" => Output::Joint,
        [pgml, f] if pgml == "pgml" && f == "decompose" => Output::Decompose,
        _ => return None,
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(target)), FunctionArg::Unnamed(FunctionArgExpr::Expr(features))] =
        list.args.as_slice()
    else {
        return None;
    };
    let target = match target {
        Expr::Value(_) | Expr::UnaryOp { .. } | Expr::Cast { .. } => {
            let constant =
                crate::sql::call::find_calls(&format!("SELECT pgml.predict({target}, ARRAY[0])"))
                    .ok()?
                    .into_iter()
                    .next()?
                    .args
                    .into_iter()
                    .next()?
                    .1;
            match constant {
                a @ (Arg::Text(_) | Arg::Number(_)) => Ok(a),
                // A parameter is bound as a literal before the query is planned for running.
                Arg::Expr(e) if e.starts_with('$') => return None,
                _ => Err(target.clone()),
            }
        }
        e => Err(e.clone()),
    };
    let mut features = features;
    while let Expr::Cast { expr, .. } | Expr::Nested(expr) = features {
        features = expr;
    }
    match features {
        Expr::Array(array) => Some((output, target, array.elem.clone(), Given::Array)),
        Expr::Tuple(items) => Some((output, target, items.clone(), Given::Row)),
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("row") => {
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            let items: Option<Vec<Expr>> = list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            Some((output, target, items?, Given::Row))
        }
        Expr::Value(_) => None,
        e => Some((output, target, vec![e.clone()], Given::Spread)),
    }
}

/// Plans a per-row prediction query; `None` when `sql` is not one (a constant call, or no call at all).
pub(crate) fn plan(sql: &str) -> Option<Result<PerRow, &'static str>> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let found = match find_predict(s)? {
        Ok(found) => found,
        Err(why) => return Some(Err(why)),
    };
    if found.target.is_ok() && found.features.iter().all(|f| matches!(f, Expr::Value(_))) {
        return None;
    }
    Some(rewrite(q, s, found))
}

/// The plan of a query with a per-row prediction call `found` in its select list.
fn rewrite(q: &Query, s: &Select, found: Found) -> Result<PerRow, &'static str> {
    let Found {
        at,
        output,
        target,
        features,
        alias,
        given,
    } = found;
    if s.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return Err("* next to pgml.predict (list the columns)");
    }
    let name = alias.clone().unwrap_or_else(|| {
        match output {
            Output::Predict => "predict",
            Output::Proba => "predict_proba",
            Output::Joint => "predict_joint",
            Output::Decompose => "decompose",
        }
        .into()
    });
    let order = prediction_order(q, at, alias.as_deref(), output)?;
    let (mut limit, mut offset) = (None, 0);
    let mut query = q.clone();
    if order.is_some() {
        (limit, offset) = ocelot_router::select::limit_offset(q)?;
        query.order_by = None;
        query.limit_clause = None;
    }
    let mut select = s.clone();
    let Projection {
        items: projection,
        outputs,
        features: feature_cols,
        target,
        target_col,
    } = projection(s, at, features, target);
    select.projection = projection;
    query.body = Box::new(SetExpr::Select(Box::new(select)));
    Ok(PerRow {
        sql: Statement::Query(Box::new(query)).to_string(),
        output,
        target,
        target_col,
        outputs,
        features: feature_cols,
        row: given == Given::Row,
        spread: given == Given::Spread,
        name,
        order,
        limit,
        offset,
    })
}

/// The one `pgml.predict` call of a select list and what it predicts with.
struct Found {
    /// Its position in the select list.
    at: usize,
    output: Output,
    target: Target,
    features: Vec<Expr>,
    alias: Option<String>,
    given: Given,
}

/// The select list's prediction call; `None` without one, an error with several.
fn find_predict(s: &Select) -> Option<Result<Found, &'static str>> {
    let mut found = None;
    for (i, item) in s.projection.iter().enumerate() {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => continue,
        };
        if let Some((output, target, features, given)) = is_predict(e) {
            if found.is_some() {
                return Some(Err("more than one pgml.predict per query"));
            }
            found = Some(Found {
                at: i,
                output,
                target,
                features,
                alias,
                given,
            });
        }
    }
    found.map(Ok)
}

/// ORDER BY the prediction (by alias, position or the call itself) is Ocelot's to apply: `Some(descending)`
/// when the query orders by it.
fn prediction_order(
    q: &Query,
    at: usize,
    alias: Option<&str>,
    output: Output,
) -> Result<Option<bool>, &'static str> {
    let Some(ob) = &q.order_by else {
        return Ok(None);
    };
    let OrderByKind::Expressions(exprs) = &ob.kind else {
        return Err("ORDER BY ALL");
    };
    let mut order = None;
    for o in exprs {
        let hits = is_predict(&o.expr).is_some()
            || literal_u64(&o.expr) == Some(at as u64 + 1)
            || matches!((&o.expr, alias), (Expr::Identifier(i), Some(a)) if i.value == a);
        if hits {
            if output != Output::Predict {
                return Err("ORDER BY an array of predictions");
            }
            if exprs.len() > 1 {
                return Err("ORDER BY the prediction together with other keys");
            }
            order = Some(o.options.asc == Some(false));
        }
    }
    Ok(order)
}

/// What the server is asked to select: the client's other items, then the features, then the model's
/// expression when the model is named by a column.
struct Projection {
    items: Vec<SelectItem>,
    /// Per client item, its column in `items` (`None` for the prediction).
    outputs: Vec<Option<usize>>,
    features: Vec<usize>,
    target: Arg,
    target_col: Option<usize>,
}

fn projection(s: &Select, at: usize, features: Vec<Expr>, target: Target) -> Projection {
    let mut items = Vec::new();
    let mut outputs = Vec::new();
    for (i, item) in s.projection.iter().enumerate() {
        if i == at {
            outputs.push(None);
        } else {
            outputs.push(Some(items.len()));
            items.push(item.clone());
        }
    }
    let mut feature_cols = Vec::new();
    for (k, f) in features.into_iter().enumerate() {
        feature_cols.push(items.len());
        items.push(SelectItem::ExprWithAlias {
            expr: f,
            alias: Ident::new(format!("ocelot_feature_{k}")),
        });
    }
    let (target, target_col) = match target {
        Ok(constant) => (constant, None),
        Err(expr) => {
            let col = items.len();
            items.push(SelectItem::ExprWithAlias {
                expr,
                alias: Ident::new("ocelot_model"),
            });
            (Arg::Null, Some(col))
        }
    };
    Projection {
        items,
        outputs,
        features: feature_cols,
        target,
        target_col,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_call_into_feature_columns() {
        let p = plan("SELECT id, pgml.predict('fraud', ARRAY[amount, n_24h]::real[]) AS score, note FROM txns WHERE day = 3 ORDER BY score DESC LIMIT 20")
            .unwrap()
            .unwrap();
        assert_eq!(
            p.sql,
            "SELECT id, note, amount AS ocelot_feature_0, n_24h AS ocelot_feature_1 FROM txns WHERE day = 3"
        );
        assert_eq!(p.outputs, vec![Some(0), None, Some(1)]);
        assert_eq!(p.features, vec![2, 3]);
        assert_eq!(
            (p.order, p.limit, p.name.as_str()),
            (Some(true), Some(20), "score")
        );
        let p = plan("SELECT pgml.predict(7, ARRAY[a, b]) FROM t ORDER BY id")
            .unwrap()
            .unwrap();
        assert_eq!(
            p.sql,
            "SELECT a AS ocelot_feature_0, b AS ocelot_feature_1 FROM t ORDER BY id"
        );
        assert_eq!(p.order, None);
        assert_eq!(p.target, Arg::Number("7".into()));
        assert!(!p.row);
        for sql in [
            "SELECT pgml.predict('p', ROW(a, b)) FROM t",
            "SELECT pgml.predict('p', (a, b)) FROM t",
        ] {
            let p = plan(sql).unwrap().unwrap();
            assert!(p.row, "{sql}");
            assert_eq!(p.features, vec![0, 1]);
        }
        assert!(plan("SELECT pgml.predict('p', ARRAY[1, 2])").is_none());
        // An array column, as PostgresML's image_classification.sql predicts from `image`.
        let p = plan("SELECT target, pgml.predict('digits', image) AS p FROM pgml.digits LIMIT 10")
            .unwrap()
            .unwrap();
        assert!(p.spread && !p.row);
        assert_eq!(
            p.sql,
            "SELECT target, image AS ocelot_feature_0 FROM pgml.digits LIMIT 10"
        );
        assert!(plan("SELECT pgml.predict('p', 'x'::text)").is_none());
        // The model id from a column, as regression.sql's LATERAL query; probabilities per row.
        let p = plan("SELECT model_id, pgml.predict(model_id, ARRAY[a, b]) AS prediction FROM t CROSS JOIN LATERAL (SELECT 7 AS model_id) m")
            .unwrap()
            .unwrap();
        assert_eq!((p.target.clone(), p.target_col), (Arg::Null, Some(3)));
        assert!(p.sql.contains("model_id AS ocelot_model"), "{}", p.sql);
        let p = plan("SELECT pgml.predict_proba('p', ARRAY[a, b]) FROM t")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.output, p.name.as_str()),
            (Output::Proba, "predict_proba")
        );
        assert!(
            plan("SELECT pgml.predict_joint('p', ARRAY[a]) AS j FROM t ORDER BY j")
                .unwrap()
                .is_err()
        );
        assert!(plan("SELECT 1").is_none());
        assert!(plan("SELECT *, pgml.predict('p', ARRAY[a]) FROM t")
            .unwrap()
            .is_err());
    }
}
