//! Finding the sharding key in a query (`automatic_sharding_key = "table.column"` or `"*.column"`): equalities
//! and `IN` lists in the WHERE of SELECT, UPDATE and DELETE (AND narrows, OR unites), join conditions, and the
//! column/VALUES pairs of INSERT. Values are literals or Bind parameters (`$n`), resolved later with the Bind
//! message. `None` means the query does not restrict the key, so no single shard can be chosen from it.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, ObjectName, SetExpr, Statement,
    TableFactor, UnaryOperator, Value, Visit, Visitor,
};

/// A value the key is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// The literal's text (numbers as written, strings unquoted).
    Literal(String),
    /// A Bind parameter, 0-based.
    Param(usize),
}

/// `table.column` of the sharding key; `table` is `*` for any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub table: String,
    pub column: String,
}

impl KeySpec {
    /// Parses the config value (`"data.id"`, `"*.id"`, quotes stripped).
    pub(crate) fn parse(s: &str) -> Option<KeySpec> {
        let (t, c) = s.split_once('.')?;
        let clean = |x: &str| x.trim().trim_matches('"').to_lowercase();
        Some(KeySpec {
            table: clean(t),
            column: clean(c),
        })
    }
}

fn last_ident(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .unwrap_or_default()
}

/// Tables (and their aliases) a statement reads or writes.
#[derive(Default)]
struct Relations {
    /// (table, alias)
    tables: Vec<(String, Option<String>)>,
}

impl Visitor for Relations {
    type Break = ();
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = t {
            self.tables.push((
                last_ident(name),
                alias.as_ref().map(|a| a.name.value.to_lowercase()),
            ));
        }
        ControlFlow::Continue(())
    }
}

struct Ctx<'a> {
    spec: &'a KeySpec,
    rel: Relations,
}

impl Ctx<'_> {
    fn involves_table(&self) -> bool {
        self.spec.table == "*" || self.rel.tables.iter().any(|(t, _)| *t == self.spec.table)
    }

    fn is_key(&self, e: &Expr) -> bool {
        match e {
            Expr::Identifier(i) => {
                i.value.to_lowercase() == self.spec.column && self.involves_table()
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = parts[parts.len() - 1].value.to_lowercase();
                let q = parts[parts.len() - 2].value.to_lowercase();
                col == self.spec.column
                    && (self.spec.table == "*"
                        || q == self.spec.table
                        || self.rel.tables.iter().any(|(t, a)| {
                            *t == self.spec.table && a.as_deref() == Some(q.as_str())
                        }))
            }
            Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => self.is_key(inner),
            _ => false,
        }
    }
}

/// The key value an expression is: a literal (possibly negated or cast) or a Bind parameter.
pub(crate) fn literal(e: &Expr) -> Option<KeyValue> {
    value(e)
}

fn value(e: &Expr) -> Option<KeyValue> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(KeyValue::Literal(n.to_string())),
            Value::SingleQuotedString(s) => Some(KeyValue::Literal(s.clone())),
            Value::Placeholder(p) => p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .map(|n| KeyValue::Param(n - 1)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match value(expr)? {
            KeyValue::Literal(n) => Some(KeyValue::Literal(format!("-{n}"))),
            KeyValue::Param(_) => None,
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => value(inner),
        // A vector key (centroid sharding): `ARRAY[1, 2, ...]`, as PostgreSQL's array text.
        Expr::Array(a) => {
            let parts: Option<Vec<String>> = a
                .elem
                .iter()
                .map(|x| match value(x)? {
                    KeyValue::Literal(n) => Some(n),
                    KeyValue::Param(_) => None,
                })
                .collect();
            Some(KeyValue::Literal(format!("{{{}}}", parts?.join(","))))
        }
        _ => None,
    }
}

/// Key values an expression restricts the key to; `None` when unrestricted.
fn restrict(e: &Expr, ctx: &Ctx) -> Option<Vec<KeyValue>> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => restrict(left, ctx).or_else(|| restrict(right, ctx)),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            let mut a = restrict(left, ctx)?;
            a.extend(restrict(right, ctx)?);
            Some(a)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            if ctx.is_key(left) {
                value(right).map(|v| vec![v])
            } else if ctx.is_key(right) {
                value(left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if ctx.is_key(expr) => list.iter().map(value).collect(),
        Expr::Nested(inner) => restrict(inner, ctx),
        _ => None,
    }
}

fn from_select_like(
    selection: Option<&Expr>,
    joins: Vec<&Expr>,
    ctx: &Ctx,
) -> Option<Vec<KeyValue>> {
    selection
        .and_then(|w| restrict(w, ctx))
        .or_else(|| joins.into_iter().find_map(|on| restrict(on, ctx)))
}

fn join_conditions(from: &[sqlparser::ast::TableWithJoins]) -> Vec<&Expr> {
    let mut out = Vec::new();
    for t in from {
        for j in &t.joins {
            let c = match &j.join_operator {
                JoinOperator::Inner(c) | JoinOperator::Join(c) => Some(c),
                _ => None,
            };
            if let Some(JoinConstraint::On(e)) = c {
                out.push(e);
            }
        }
    }
    out
}

/// The key values `sql` is restricted to, per statement kind; `None` when unrestricted or unparsable.
pub(crate) fn find(sql: &str, spec: &KeySpec) -> Option<Vec<KeyValue>> {
    find_parsed(&super::route::parse(sql)?, spec)
}

/// [`find`] in a query already parsed.
pub fn find_parsed(statements: &[Statement], spec: &KeySpec) -> Option<Vec<KeyValue>> {
    let [stmt] = statements else {
        return None;
    };
    let mut rel = Relations::default();
    let _ = stmt.visit(&mut rel);
    let ctx = Ctx { spec, rel };
    match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) => {
                from_select_like(s.selection.as_ref(), join_conditions(&s.from), &ctx)
            }
            _ => None,
        },
        Statement::Update {
            selection, from, ..
        } => {
            let _ = from;
            selection.as_ref().and_then(|w| restrict(w, &ctx))
        }
        Statement::Delete(d) => d.selection.as_ref().and_then(|w| restrict(w, &ctx)),
        Statement::Insert(ins) => {
            let table = match &ins.table {
                sqlparser::ast::TableObject::TableName(n) => last_ident(n),
                _ => return None,
            };
            if spec.table != "*" && table != spec.table {
                return None;
            }
            let idx = ins
                .columns
                .iter()
                .position(|c| c.value.to_lowercase() == spec.column)?;
            let SetExpr::Values(values) = ins.source.as_ref()?.body.as_ref() else {
                return None;
            };
            values
                .rows
                .iter()
                .map(|row| row.get(idx).and_then(value))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> KeySpec {
        KeySpec::parse(s).unwrap()
    }
    fn lit(s: &str) -> KeyValue {
        KeyValue::Literal(s.into())
    }

    #[test]
    fn finds_keys_in_where_in_and_insert() {
        let s = spec("data.id");
        assert_eq!(
            find("SELECT * FROM data WHERE id = 5", &s),
            Some(vec![lit("5")])
        );
        assert_eq!(
            find("SELECT * FROM data d WHERE d.id = -7 AND v = 'x'", &s),
            Some(vec![lit("-7")])
        );
        assert_eq!(
            find("SELECT * FROM data WHERE data.id = $2", &s),
            Some(vec![KeyValue::Param(1)])
        );
        assert_eq!(
            find("SELECT * FROM data WHERE id IN (1, 2, 3)", &s),
            Some(vec![lit("1"), lit("2"), lit("3")])
        );
        assert_eq!(
            find("SELECT * FROM data WHERE id = 1 OR id = 9", &s),
            Some(vec![lit("1"), lit("9")])
        );
        assert_eq!(find("SELECT * FROM data WHERE id = 1 OR v = 'a'", &s), None);
        assert_eq!(find("SELECT * FROM data WHERE v = 'a'", &s), None);
        assert_eq!(find("SELECT * FROM other WHERE id = 1", &s), None);
        assert_eq!(
            find(
                "SELECT * FROM data JOIN meta m ON m.data_id = data.id AND data.id = 4",
                &s
            ),
            Some(vec![lit("4")])
        );
        assert_eq!(
            find("UPDATE data SET v = 'x' WHERE id = '12'", &s),
            Some(vec![lit("12")])
        );
        assert_eq!(
            find("DELETE FROM data WHERE id = $1", &s),
            Some(vec![KeyValue::Param(0)])
        );
        assert_eq!(
            find("INSERT INTO data (v, id) VALUES ('a', 1), ('b', $1)", &s),
            Some(vec![lit("1"), KeyValue::Param(0)])
        );
        assert_eq!(find("INSERT INTO data (v) VALUES ('a')", &s), None);
        assert_eq!(
            find("SELECT * FROM anything WHERE id = 3", &spec("*.id")),
            Some(vec![lit("3")])
        );
    }
}
#[cfg(test)]
mod negative_tests {
    use super::*;
    #[test]
    fn negative_literals() {
        let s = KeySpec::parse("data.id").unwrap();
        assert_eq!(
            find("INSERT INTO data (id, v) VALUES (-1, 'v-1')", &s),
            Some(vec![KeyValue::Literal("-1".into())])
        );
    }
}
