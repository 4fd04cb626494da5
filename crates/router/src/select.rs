//! Pieces of a SELECT that both fan-out plans read ([`super::fanout`] for sorted and limited queries,
//! [`super::grouped`] for aggregates): ORDER BY keys, literal LIMIT and OFFSET, and the names of PostgreSQL's
//! aggregate functions.

use sqlparser::ast::Expr;

/// A result column to sort by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    /// 0-based position in the select list.
    Position(usize),
    /// A result column name (resolved against the RowDescription).
    Name(String),
    /// The k-th of the columns Ocelot appends to the shards' select list for ORDER BY expressions the client
    /// does not select; they are dropped from the merged answer.
    Hidden(usize),
}

/// One ORDER BY key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: SortColumn,
    pub desc: bool,
    pub nulls_first: bool,
}

/// A literal non-negative integer (a LIMIT or OFFSET).
pub fn literal_u64(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::Number(n, _) => n.to_string().parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A query's literal LIMIT and OFFSET (none and 0 when absent).
pub fn limit_offset(q: &sqlparser::ast::Query) -> Result<(Option<u64>, u64), &'static str> {
    use sqlparser::ast::LimitClause;
    match &q.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => Ok((
            match limit {
                None => None,
                Some(e) => Some(literal_u64(e).ok_or("a LIMIT that is not a number")?),
            },
            match offset {
                None => 0,
                Some(o) => literal_u64(&o.value).ok_or("an OFFSET that is not a number")?,
            },
        )),
        _ => Err("this LIMIT form"),
    }
}

/// Plans ORDER BY / LIMIT / OFFSET of a plain select for a merge.
/// The aggregate functions of PostgreSQL that a fan-out must see to merge a query's groups.
pub(crate) const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "bit_and",
    "bit_or",
    "xmlagg",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "json_object_agg",
    "jsonb_object_agg",
    "range_agg",
    "range_intersect_agg",
];
