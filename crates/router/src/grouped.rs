//! Planning keyless aggregate, GROUP BY and DISTINCT reads of the sharded table as a two-step computation: every
//! shard runs a rewritten query that returns partial results per group (the group keys, each mergeable aggregate,
//! and `avg(x)` split into `sum(x)` and `count(x)`), and Ocelot combines the partials of equal groups, then applies
//! the query's ORDER BY, OFFSET and LIMIT. Anything whose partials cannot be combined exactly (HAVING, DISTINCT
//! aggregates, ordered-set aggregates, expressions over aggregates, `DISTINCT ON`) is refused by the caller.

use sqlparser::ast::{
    Distinct, Expr, FunctionArguments, GroupByExpr, Ident, OrderByKind, Query, Select, SelectItem,
    SetExpr, Statement,
};

use super::select::{limit_offset, literal_u64, SortColumn, SortKey, AGGREGATES};

/// An aggregate Ocelot combines across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
    BoolAnd,
    BoolOr,
}

/// One column of the merged result, taken from the shard result columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A group key, passed through.
    Key(usize),
    /// An aggregate combined across shards.
    Agg(Aggregate, usize),
    /// `avg`: the shards' `sum` divided by their `count`, as PostgreSQL's numeric division does it.
    Avg {
        sum: usize,
        count: usize,
        name: String,
    },
}

/// How to run and merge a grouped read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    /// What each shard runs.
    pub shard_sql: String,
    /// The merged result's columns.
    pub outputs: Vec<Output>,
    /// Shard result columns whose values identify a group (empty: one group, as for a plain aggregate).
    pub keys: Vec<usize>,
    /// ORDER BY over the merged result's columns.
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
}

fn function_name(f: &sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .map(|p| p.to_string().to_lowercase())
        .unwrap_or_default()
}

/// The aggregate an expression is, when Ocelot can combine it: `Ok(None)` for a plain expression.
fn aggregate_of(
    e: &Expr,
) -> Result<Option<(&'static str, &sqlparser::ast::Function)>, &'static str> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = function_name(f);
    let kind = match name.as_str() {
        "count" => "count",
        "sum" => "sum",
        "min" => "min",
        "max" => "max",
        "avg" => "avg",
        "bool_and" | "every" => "bool_and",
        "bool_or" => "bool_or",
        _ if AGGREGATES.contains(&name.as_str()) => {
            return Err("aggregates other than count, sum, min, max, avg, bool_and and bool_or")
        }
        _ => return Ok(None),
    };
    if f.over.is_some() {
        return Err("window functions");
    }
    if let FunctionArguments::List(list) = &f.args {
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err("DISTINCT or ordered aggregates");
        }
    }
    if !f.within_group.is_empty() {
        return Err("ordered-set aggregates");
    }
    Ok(Some((kind, f)))
}

/// Whether an expression contains an aggregate anywhere.
fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            if AGGREGATES.contains(&function_name(f).as_str()) {
                found = true;
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

fn item_expr(item: &SelectItem) -> Option<(&Expr, Option<&Ident>)> {
    match item {
        SelectItem::UnnamedExpr(e) => Some((e, None)),
        SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias))),
        _ => None,
    }
}

/// Plans a select with aggregates, GROUP BY or DISTINCT.
pub(crate) fn plan(q: &Query, s: &Select) -> Result<Grouped, &'static str> {
    if s.having.is_some() {
        return Err("HAVING");
    }
    let distinct = match &s.distinct {
        None => false,
        Some(Distinct::Distinct) => true,
        Some(Distinct::On(_)) => return Err("DISTINCT ON"),
    };
    let group_exprs: Vec<Expr> = match &s.group_by {
        GroupByExpr::Expressions(e, mods) if mods.is_empty() => e.clone(),
        _ => return Err("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS"),
    };
    let (grouped_items, hidden) = group_items(s, &group_exprs)?;
    let ShardProjection {
        mut items,
        outputs,
        mut keys,
    } = shard_projection(s, distinct, &grouped_items, group_exprs.is_empty())?;
    for h in hidden {
        keys.push(items.len());
        items.push(SelectItem::UnnamedExpr(h));
    }
    let order = order_keys(q, s)?;
    let (limit, offset) = limit_offset(q)?;
    let mut shard_select = s.clone();
    shard_select.projection = items;
    let mut shard_query = q.clone();
    shard_query.body = Box::new(SetExpr::Select(Box::new(shard_select)));
    shard_query.order_by = None;
    shard_query.limit_clause = None;
    Ok(Grouped {
        shard_sql: Statement::Query(Box::new(shard_query)).to_string(),
        outputs,
        keys,
        order,
        limit,
        offset,
    })
}

/// Which select list items the GROUP BY names (GROUP BY 2 and GROUP BY alias name items), and the group
/// expressions that are not in the select list.
fn group_items(s: &Select, group_exprs: &[Expr]) -> Result<(Vec<bool>, Vec<Expr>), &'static str> {
    let mut grouped_items = vec![false; s.projection.len()];
    let mut hidden: Vec<Expr> = Vec::new();
    for g in group_exprs {
        if let Some(n) = literal_u64(g) {
            let i = (n as usize)
                .checked_sub(1)
                .filter(|i| *i < s.projection.len())
                .ok_or("GROUP BY a position outside the select list")?;
            grouped_items[i] = true;
            continue;
        }
        match select_position(s, g) {
            Some(i) => grouped_items[i] = true,
            None => {
                if contains_aggregate(g) {
                    return Err("GROUP BY an aggregate");
                }
                hidden.push(g.clone());
            }
        }
    }
    Ok((grouped_items, hidden))
}

/// The position of `e` in the select list, as the expression itself or as an item's alias.
fn select_position(s: &Select, e: &Expr) -> Option<usize> {
    s.projection.iter().position(|item| match item_expr(item) {
        Some((x, alias)) => {
            x == e || matches!((e, alias), (Expr::Identifier(i), Some(a)) if i.value == a.value)
        }
        None => false,
    })
}

/// What the shards are asked to select, and how the merged result is made of it.
struct ShardProjection {
    items: Vec<SelectItem>,
    outputs: Vec<Output>,
    keys: Vec<usize>,
}

fn shard_projection(
    s: &Select,
    distinct: bool,
    grouped_items: &[bool],
    no_group_by: bool,
) -> Result<ShardProjection, &'static str> {
    let mut p = ShardProjection {
        items: Vec::new(),
        outputs: Vec::new(),
        keys: Vec::new(),
    };
    for (i, item) in s.projection.iter().enumerate() {
        let Some((e, alias)) = item_expr(item) else {
            return Err("* with aggregates, GROUP BY or DISTINCT");
        };
        let idx = p.items.len();
        match aggregate_of(e)? {
            Some(_) if distinct => return Err("DISTINCT with aggregates"),
            Some(("avg", f)) => {
                let mut sum = f.clone();
                sum.name = sqlparser::ast::ObjectName::from(vec![Ident::new("sum")]);
                let mut count = f.clone();
                count.name = sqlparser::ast::ObjectName::from(vec![Ident::new("count")]);
                p.items.push(SelectItem::UnnamedExpr(Expr::Function(sum)));
                p.items.push(SelectItem::UnnamedExpr(Expr::Function(count)));
                p.outputs.push(Output::Avg {
                    sum: idx,
                    count: idx + 1,
                    name: alias.map_or_else(|| "avg".to_owned(), |a| a.value.clone()),
                });
            }
            Some((kind, _)) => {
                let agg = match kind {
                    "count" => Aggregate::Count,
                    "sum" => Aggregate::Sum,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    "bool_and" => Aggregate::BoolAnd,
                    _ => Aggregate::BoolOr,
                };
                p.items.push(item.clone());
                p.outputs.push(Output::Agg(agg, idx));
            }
            None => {
                if contains_aggregate(e) {
                    return Err("expressions over aggregates");
                }
                // PostgreSQL rejects it too unless it is functionally dependent on the group key, which
                // Ocelot cannot see: the shards are asked to group by it as well.
                if !distinct && !grouped_items[i] && no_group_by {
                    return Err("a column outside an aggregate without GROUP BY");
                }
                p.items.push(item.clone());
                p.outputs.push(Output::Key(idx));
                p.keys.push(idx);
            }
        }
    }
    Ok(p)
}

/// ORDER BY over the merged result, by select list position.
fn order_keys(q: &Query, s: &Select) -> Result<Vec<SortKey>, &'static str> {
    let mut order = Vec::new();
    let Some(ob) = &q.order_by else {
        return Ok(order);
    };
    let OrderByKind::Expressions(exprs) = &ob.kind else {
        return Err("ORDER BY ALL");
    };
    for o in exprs {
        let column = if let Some(n) = literal_u64(&o.expr) {
            SortColumn::Position((n as usize).checked_sub(1).ok_or("ORDER BY 0")?)
        } else if let Some(pos) = select_position(s, &o.expr) {
            SortColumn::Position(pos)
        } else {
            return Err("ORDER BY something that is not in the select list");
        };
        let desc = o.options.asc == Some(false);
        order.push(SortKey {
            column,
            desc,
            nulls_first: o.options.nulls_first.unwrap_or(desc),
        });
    }
    Ok(order)
}
