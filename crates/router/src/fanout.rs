//! Deciding how a query with no sharding key runs on a sharded pool ([`plan`]): on the default shard when it does
//! not touch the sharded table; on every shard with the rows concatenated, merged in ORDER BY order with OFFSET and
//! LIMIT applied after the merge, or as partial aggregates per group combined ([`grouped`]); a keyless UPDATE or
//! DELETE on every shard, affected rows summed; COPY FROM STDIN split by key. What cannot be merged exactly
//! (WITH, joins, window functions, set operations, several statements) is refused with an error that says how to
//! target one shard, never answered from one shard as if it were all the data. A multi-row INSERT is split by the
//! shard of each row ([`split_insert`]).

use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions, Expr, GroupByExpr, SetExpr, Statement};

use super::grouped;
pub use super::grouped::{Aggregate, Grouped, Output};
use super::select::{limit_offset, literal_u64, SortColumn, SortKey, AGGREGATES};
use super::shard_key::KeySpec;

/// How a keyless query over the sharded table runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The query does not touch the sharded table: the default shard answers it.
    NotSharded,
    /// Every shard runs it; rows are concatenated.
    Rows,
    /// Every shard runs a rewritten query returning partial aggregates per group; equal groups are combined,
    /// then ORDER BY, OFFSET and LIMIT apply.
    Grouped(Grouped),
    /// Every shard runs `shard_sql` (the query with LIMIT raised to LIMIT + OFFSET and no OFFSET); rows are
    /// merged in ORDER BY order, then OFFSET and LIMIT apply.
    Ordered(Ordered),
    /// A write (UPDATE or DELETE) every shard runs, affected rows summed.
    Write,
    /// COPY FROM STDIN into the sharded table: rows split by their key.
    CopyIn(super::copy::CopyPlan),
    /// It touches the sharded table but its results cannot be merged yet.
    Unsupported(&'static str),
}

/// How to merge a sorted and/or limited keyless query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub keys: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    pub shard_sql: String,
    /// How many sort columns the shards return after the client's (see [`SortColumn::Hidden`]).
    pub hidden: usize,
}

/// Where the shards' rows carry the sort expression `e`: a select-list position, a column `*` brings (by name),
/// or a hidden column appended to `extra`.
fn sort_column(
    s: &sqlparser::ast::Select,
    e: &Expr,
    extra: &mut Vec<sqlparser::ast::SelectItem>,
) -> Result<SortColumn, &'static str> {
    use sqlparser::ast::{Ident, SelectItem};
    Ok(if let Some(n) = literal_u64(e) {
        SortColumn::Position((n as usize).checked_sub(1).ok_or("ORDER BY 0")?)
    } else if let Some(pos) = s.projection.iter().position(|item| match item {
        SelectItem::UnnamedExpr(item) => item == e,
        SelectItem::ExprWithAlias { expr, alias } => {
            *expr == *e || matches!(e, Expr::Identifier(i) if i.value == alias.value)
        }
        _ => false,
    }) {
        SortColumn::Position(pos)
    } else {
        let wildcard = s.projection.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        match e {
            // A column `*` brings, found in the result by name.
            Expr::Identifier(i) if wildcard => SortColumn::Name(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) if wildcard => SortColumn::Name(
                parts
                    .last()
                    .map(|p| p.value.to_lowercase())
                    .unwrap_or_default(),
            ),
            // Sorted by a column of its own, appended to the shards' select list (a nearest-neighbour
            // search orders by a distance it does not select).
            other => {
                if s.distinct.is_some() {
                    return Err("SELECT DISTINCT ordered by an expression that is not selected");
                }
                extra.push(SelectItem::ExprWithAlias {
                    expr: other.clone(),
                    alias: Ident::new(format!("ocelot_sort_{}", extra.len())),
                });
                SortColumn::Hidden(extra.len() - 1)
            }
        }
    })
}

fn ordered(q: &sqlparser::ast::Query, s: &sqlparser::ast::Select) -> Result<Ordered, &'static str> {
    use sqlparser::ast::{LimitClause, OrderByKind, SelectItem, SetExpr};
    let mut keys = Vec::new();
    let mut extra: Vec<SelectItem> = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return Err("ORDER BY ALL");
        };
        for o in exprs {
            let column = sort_column(s, &o.expr, &mut extra)?;
            let desc = o.options.asc == Some(false);
            keys.push(SortKey {
                column,
                desc,
                nulls_first: o.options.nulls_first.unwrap_or(desc),
            });
        }
    }
    let (limit, offset) = limit_offset(q)?;
    let mut shard_query = q.clone();
    if !extra.is_empty() {
        let mut select = s.clone();
        select.projection.extend(extra.iter().cloned());
        shard_query.body = Box::new(SetExpr::Select(Box::new(select)));
    }
    shard_query.limit_clause = limit.map(|l| LimitClause::LimitOffset {
        limit: Some(Expr::value(sqlparser::ast::Value::Number(
            (l.saturating_add(offset)).to_string(),
            false,
        ))),
        offset: None,
        limit_by: Vec::new(),
    });
    Ok(Ordered {
        keys,
        limit,
        offset,
        shard_sql: Statement::Query(Box::new(shard_query)).to_string(),
        hidden: extra.len(),
    })
}

fn touches(stmt: &Statement, spec: &KeySpec) -> bool {
    if spec.table == "*" {
        return false;
    }
    let mut found = false;
    let _ = sqlparser::ast::visit_relations(stmt, |name| {
        let last = name
            .0
            .last()
            .map(|p| p.to_string().trim_matches('"').to_lowercase());
        if last.as_deref() == Some(spec.table.as_str()) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

fn uses_aggregate_or_window(stmt: &Statement) -> Option<&'static str> {
    let mut why = None;
    let _ = visit_expressions(stmt, |e| {
        if let Expr::Function(f) = e {
            if f.over.is_some() {
                why = Some("window functions");
                return ControlFlow::Break(());
            }
            let name = f
                .name
                .0
                .last()
                .map(|p| p.to_string().to_lowercase())
                .unwrap_or_default();
            if AGGREGATES.contains(&name.as_str()) {
                // Keep looking: a window function anywhere makes the query unmergeable.
                why = Some("aggregates");
            }
        }
        ControlFlow::Continue(())
    });
    why
}

/// Plans a keyless query for a pool sharded on `spec`.
pub fn plan(sql: &str, spec: &KeySpec) -> Plan {
    match super::route::parse(sql) {
        Some(statements) => plan_parsed(&statements, spec),
        None => Plan::NotSharded,
    }
}

/// [`plan`] of a query already parsed.
pub fn plan_parsed(statements: &[Statement], spec: &KeySpec) -> Plan {
    let [stmt] = statements else {
        return if statements.iter().any(|s| touches(s, spec)) {
            Plan::Unsupported("several statements in one query")
        } else {
            Plan::NotSharded
        };
    };
    if let Statement::Copy { .. } = stmt {
        return match super::copy::plan(stmt, spec) {
            Ok(Some(p)) => Plan::CopyIn(p),
            Ok(None) if touches(stmt, spec) => Plan::Unsupported("this COPY"),
            Ok(None) => Plan::NotSharded,
            Err(why) => Plan::Unsupported(why),
        };
    }
    if !touches(stmt, spec) {
        return Plan::NotSharded;
    }
    match stmt {
        Statement::Query(q) => query_plan(stmt, q),
        Statement::Update { assignments, .. } => {
            if assignments.iter().any(|a| assigns_key(a, spec)) {
                Plan::Unsupported(
                    "an UPDATE of the sharding key, which would move rows between shards",
                )
            } else {
                Plan::Write
            }
        }
        Statement::Delete(_) => Plan::Write,
        Statement::Insert(_) => Plan::Unsupported("INSERT without the sharding key"),
        _ => Plan::Unsupported("this statement"),
    }
}

/// The plan of a SELECT on the sharded table.
fn query_plan(stmt: &Statement, q: &sqlparser::ast::Query) -> Plan {
    if q.with.is_some() {
        return Plan::Unsupported("WITH queries");
    }
    if q.fetch.is_some() {
        return Plan::Unsupported("FETCH");
    }
    if !q.locks.is_empty() {
        return Plan::Unsupported("FOR UPDATE/SHARE");
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Plan::Unsupported("set operations");
    };
    if s.from.iter().any(|t| !t.joins.is_empty()) || s.from.len() > 1 {
        return Plan::Unsupported("joins");
    }
    if s.into.is_some() {
        return Plan::Unsupported("SELECT INTO");
    }
    let grouping = s.distinct.is_some()
        || s.having.is_some()
        || !matches!(&s.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    match uses_aggregate_or_window(stmt) {
        Some("window functions") => Plan::Unsupported("window functions"),
        Some(_) => match grouped::plan(q, s) {
            Ok(g) => Plan::Grouped(g),
            Err(why) => Plan::Unsupported(why),
        },
        None if grouping => match grouped::plan(q, s) {
            Ok(g) => Plan::Grouped(g),
            Err(why) => Plan::Unsupported(why),
        },
        None if q.order_by.is_none() && q.limit_clause.is_none() => Plan::Rows,
        None => match ordered(q, s) {
            Ok(o) => Plan::Ordered(o),
            Err(why) => Plan::Unsupported(why),
        },
    }
}

/// Whether an UPDATE's assignment sets the sharding key (a tuple assignment may).
fn assigns_key(a: &sqlparser::ast::Assignment, spec: &KeySpec) -> bool {
    match &a.target {
        sqlparser::ast::AssignmentTarget::ColumnName(n) => {
            n.0.last()
                .map(|p| p.to_string().trim_matches('"').to_lowercase())
                .as_deref()
                == Some(spec.column.as_str())
        }
        sqlparser::ast::AssignmentTarget::Tuple(_) => true,
    }
}

/// One shard's part of a split INSERT: (shard, SQL, the original parameters it uses in their new order).
pub type SplitPart = (usize, String, Option<Vec<usize>>);

/// Splits a parsed multi-row `INSERT ... VALUES` by the shard each row's key (a literal or a Bind parameter)
/// hashes to: one INSERT per shard with that shard's rows, in shard order. Bind parameters are renumbered from $1
/// in each part, which lists the original (0-based) parameters it uses; literal-only statements list `None`.
/// `None` when a row's key cannot be hashed or the statement is not such an INSERT.
pub fn split_insert_parsed(
    statements: &[Statement],
    spec: &KeySpec,
    shard_of: impl Fn(&super::shard_key::KeyValue) -> Option<usize>,
) -> Option<Vec<SplitPart>> {
    let [Statement::Insert(ins)] = statements else {
        return None;
    };
    let idx = ins
        .columns
        .iter()
        .position(|c| c.value.to_lowercase() == spec.column)?;
    let source = ins.source.as_ref()?;
    let SetExpr::Values(values) = source.body.as_ref() else {
        return None;
    };
    let mut by_shard: std::collections::BTreeMap<usize, Vec<Vec<Expr>>> = Default::default();
    for row in &values.rows {
        let key = super::shard_key::literal(row.get(idx)?)?;
        by_shard
            .entry(shard_of(&key)?)
            .or_default()
            .push(row.clone());
    }
    let parameterised = visit_expressions(&statements[0], |e| match e {
        Expr::Value(v) if matches!(v.value, sqlparser::ast::Value::Placeholder(_)) => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break();
    Some(
        by_shard
            .into_iter()
            .map(|(shard, rows)| {
                let mut part = ins.clone();
                let mut src = (**source).clone();
                let mut v = values.clone();
                v.rows = rows;
                src.body = Box::new(SetExpr::Values(v));
                part.source = Some(Box::new(src));
                let mut stmt = Statement::Insert(part);
                let used = parameterised.then(|| renumber(&mut stmt));
                (shard, stmt.to_string(), used)
            })
            .collect(),
    )
}

/// [`split_insert_parsed`] of SQL text (for tests).
#[cfg(test)]
fn split_insert(
    sql: &str,
    spec: &KeySpec,
    shard_of: impl Fn(&super::shard_key::KeyValue) -> Option<usize>,
) -> Option<Vec<SplitPart>> {
    split_insert_parsed(&super::route::parse(sql)?, spec, shard_of)
}

/// Renumbers the `$n` placeholders of a statement from $1 in order of first use; returns the original 0-based
/// numbers in their new order.
fn renumber(stmt: &mut Statement) -> Vec<usize> {
    use sqlparser::ast::Value;
    let mut used: Vec<usize> = Vec::new();
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                if let Some(n) = p
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n > 0)
                {
                    let pos = match used.iter().position(|u| *u == n - 1) {
                        Some(i) => i,
                        None => {
                            used.push(n - 1);
                            used.len() - 1
                        }
                    };
                    v.value = Value::Placeholder(format!("${}", pos + 1));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_fails_to_parse_with_a_multibyte_character_early() {
        // Found by the router fuzz target: the COPY check sliced inside a character.
        let spec = KeySpec::parse("data.id").unwrap();
        assert!(matches!(plan("8S8\u{6ba}", &spec), Plan::NotSharded));
    }

    #[test]
    fn plans() {
        let s = KeySpec::parse("data.id").unwrap();
        assert_eq!(plan("SELECT now()", &s), Plan::NotSharded);
        assert_eq!(plan("SELECT * FROM other", &s), Plan::NotSharded);
        assert_eq!(
            plan("SELECT id, v FROM data WHERE v LIKE 'a%'", &s),
            Plan::Rows
        );
        assert_eq!(
            plan("UPDATE data SET v = 'x' WHERE v = 'y'", &s),
            Plan::Write
        );
        assert_eq!(plan("DELETE FROM data", &s), Plan::Write);
        assert!(matches!(
            plan("COPY data (id, v) FROM STDIN", &s),
            Plan::CopyIn(_)
        ));
        assert!(matches!(
            plan("UPDATE data SET id = 3 WHERE v = 'y'", &s),
            Plan::Unsupported(_)
        ));
        use crate::shard_key::KeyValue;
        let parts = split_insert(
            "INSERT INTO data (v, id) VALUES ('a', 1), ('b', -2), ('c', 3) RETURNING id",
            &s,
            |k| match k {
                KeyValue::Literal(k) => Some(if k.starts_with('-') { 1 } else { 0 }),
                KeyValue::Param(_) => None,
            },
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![
                (
                    0,
                    "INSERT INTO data (v, id) VALUES ('a', 1), ('c', 3) RETURNING id".to_owned(),
                    None
                ),
                (
                    1,
                    "INSERT INTO data (v, id) VALUES ('b', -2) RETURNING id".to_owned(),
                    None
                )
            ]
        );
        // Parameters are renumbered per part.
        let parts = split_insert(
            "INSERT INTO data (id, v) VALUES ($1, $2), ($3, $4), ($5, $2)",
            &s,
            |k| match k {
                KeyValue::Param(2) => Some(1),
                _ => Some(0),
            },
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![
                (
                    0,
                    "INSERT INTO data (id, v) VALUES ($1, $2), ($3, $2)".to_owned(),
                    Some(vec![0, 1, 4])
                ),
                (
                    1,
                    "INSERT INTO data (id, v) VALUES ($1, $2)".to_owned(),
                    Some(vec![2, 3])
                )
            ]
        );
        let Plan::Grouped(g) = plan("SELECT count(*) FROM data", &s) else {
            panic!("grouped");
        };
        assert_eq!(g.outputs, vec![Output::Agg(Aggregate::Count, 0)]);
        assert!(g.keys.is_empty());
        let Plan::Grouped(g) = plan(
            "SELECT v, avg(id) AS a, count(*) FROM data WHERE id > 3 GROUP BY v ORDER BY a DESC, 1 LIMIT 2 OFFSET 1",
            &s,
        ) else {
            panic!("grouped");
        };
        assert_eq!(
            g.shard_sql,
            "SELECT v, sum(id), count(id), count(*) FROM data WHERE id > 3 GROUP BY v"
        );
        assert_eq!(
            g.outputs,
            vec![
                Output::Key(0),
                Output::Avg {
                    sum: 1,
                    count: 2,
                    name: "a".into()
                },
                Output::Agg(Aggregate::Count, 3)
            ]
        );
        assert_eq!(g.keys, vec![0]);
        assert_eq!((g.limit, g.offset), (Some(2), 1));
        assert_eq!(g.order[0].column, SortColumn::Position(1));
        assert!(g.order[0].desc);
        // A GROUP BY column outside the select list is still a group key on the shards.
        let Plan::Grouped(g) = plan("SELECT count(*) FROM data GROUP BY v", &s) else {
            panic!("grouped");
        };
        assert_eq!(g.shard_sql, "SELECT count(*), v FROM data GROUP BY v");
        assert_eq!(g.keys, vec![1]);
        let Plan::Grouped(g) = plan("SELECT DISTINCT v FROM data ORDER BY v", &s) else {
            panic!("grouped");
        };
        assert_eq!(g.shard_sql, "SELECT DISTINCT v FROM data");
        for (sql, why) in [
            (
                "SELECT count(DISTINCT v) FROM data",
                "DISTINCT or ordered aggregates",
            ),
            (
                "SELECT v, count(*) FROM data GROUP BY v HAVING count(*) > 1",
                "HAVING",
            ),
            (
                "SELECT count(*) + 1 FROM data",
                "expressions over aggregates",
            ),
            ("SELECT DISTINCT ON (v) v, id FROM data", "DISTINCT ON"),
            (
                "SELECT stddev(id) FROM data",
                "aggregates other than count, sum, min, max, avg, bool_and and bool_or",
            ),
            ("SELECT v, count(*) OVER () FROM data", "window functions"),
        ] {
            assert_eq!(plan(sql, &s), Plan::Unsupported(why), "{sql}");
        }
        let Plan::Ordered(o) = plan(
            "SELECT id, v AS name FROM data ORDER BY name DESC, 1 LIMIT 5 OFFSET 2",
            &s,
        ) else {
            panic!("ordered");
        };
        assert_eq!(o.limit, Some(5));
        assert_eq!(o.offset, 2);
        assert_eq!(
            o.shard_sql,
            "SELECT id, v AS name FROM data ORDER BY name DESC, 1 LIMIT 7"
        );
        assert_eq!(
            o.keys,
            vec![
                SortKey {
                    column: SortColumn::Position(1),
                    desc: true,
                    nulls_first: true
                },
                SortKey {
                    column: SortColumn::Position(0),
                    desc: false,
                    nulls_first: false
                },
            ]
        );
        let Plan::Ordered(o) = plan("SELECT * FROM data ORDER BY id NULLS FIRST", &s) else {
            panic!("ordered");
        };
        assert_eq!(o.keys[0].column, SortColumn::Name("id".into()));
        assert!(o.keys[0].nulls_first && o.limit.is_none());
        // An expression that is not selected is sorted by a hidden column of its own.
        let Plan::Ordered(o) = plan("SELECT v FROM data ORDER BY lower(v), id DESC LIMIT 3", &s)
        else {
            panic!("ordered");
        };
        assert_eq!(
            o.shard_sql,
            "SELECT v, lower(v) AS ocelot_sort_0, id AS ocelot_sort_1 FROM data ORDER BY lower(v), id DESC LIMIT 3"
        );
        assert_eq!(o.hidden, 2);
        assert_eq!(o.keys[1].column, SortColumn::Hidden(1));
        assert!(matches!(
            plan("SELECT DISTINCT v FROM data ORDER BY lower(v)", &s),
            Plan::Unsupported(_)
        ));
        assert_eq!(
            plan("SELECT row_number() OVER () FROM data", &s),
            Plan::Unsupported("window functions")
        );
        assert_eq!(
            plan("SELECT * FROM data JOIN m ON m.id = data.id", &s),
            Plan::Unsupported("joins")
        );
    }
}
