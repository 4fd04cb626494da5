//! Read/write classification of SQL with sqlparser's PostgreSQL dialect, following PgCat's rules: plain SELECT
//! and `BEGIN READ ONLY` are reads; writes, DDL, `SELECT ... FOR UPDATE/SHARE`, `SELECT INTO`, data-modifying
//! CTEs, calls of configured volatile functions, and anything unparsable are writes. A request with several
//! statements is a write when any of them is.

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, Expr, Query, SetExpr, Statement, TransactionAccessMode, TransactionMode,
};

/// Where a request may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Reads only: a replica may serve it.
    Read,
    /// Writes, or cannot be shown to only read: the primary.
    Write,
}

/// Classifies a query string. `volatile` lists functions (lower case) whose calls make a SELECT a write.
pub fn classify(sql: &str, volatile: &[String]) -> Route {
    match super::route::parse(sql) {
        Some(statements) => classify_parsed(&statements, volatile),
        None => Route::Write,
    }
}

/// [`classify`] of a query already parsed.
pub fn classify_parsed(statements: &[Statement], volatile: &[String]) -> Route {
    if statements.is_empty() {
        return Route::Read;
    }
    if statements
        .iter()
        .all(|s| statement(s, volatile) == Route::Read)
    {
        Route::Read
    } else {
        Route::Write
    }
}

fn statement(s: &Statement, volatile: &[String]) -> Route {
    let route = match s {
        Statement::Query(q) => {
            if query_writes(q) {
                Route::Write
            } else {
                Route::Read
            }
        }
        Statement::StartTransaction { modes, .. } => {
            let read_only = modes.iter().any(|m| {
                matches!(
                    m,
                    TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
                )
            });
            if read_only {
                Route::Read
            } else {
                Route::Write
            }
        }
        Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                self::statement(statement, volatile)
            } else {
                Route::Read
            }
        }
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::Set(_)
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Prepare { .. } => Route::Read,
        _ => Route::Write,
    };
    if route == Route::Read && !volatile.is_empty() && calls_volatile(s, volatile) {
        return Route::Write;
    }
    route
}

fn query_writes(q: &Query) -> bool {
    if !q.locks.is_empty() {
        return true;
    }
    if let Some(with) = &q.with {
        if with.cte_tables.iter().any(|cte| query_writes(&cte.query)) {
            return true;
        }
    }
    set_expr_writes(&q.body)
}

fn set_expr_writes(e: &SetExpr) -> bool {
    match e {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => query_writes(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_writes(left) || set_expr_writes(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => false,
        _ => true,
    }
}

fn calls_volatile(s: &Statement, volatile: &[String]) -> bool {
    let found = visit_expressions(s, |e| {
        if let Expr::Function(f) = e {
            let name = f
                .name
                .0
                .last()
                .map(|p| p.to_string().to_lowercase())
                .unwrap_or_default();
            let name = name.trim_matches('"');
            if volatile.iter().any(|v| v == name) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found.is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> Vec<String> {
        vec!["nextval".into(), "pg_advisory_lock".into()]
    }

    #[test]
    fn reads_and_writes() {
        let v = vol();
        for sql in [
            "SELECT 1",
            "select * from t where id = $1",
            "SELECT a FROM t UNION SELECT b FROM u",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "BEGIN READ ONLY",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "EXPLAIN SELECT 1",
            "SHOW work_mem",
            "SELECT now(); SELECT 2",
            "",
        ] {
            assert_eq!(classify(sql, &v), Route::Read, "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE t (a int)",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * INTO t2 FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT nextval('s')",
            "SELECT pg_catalog.pg_advisory_lock(1)",
            "BEGIN",
            "EXPLAIN ANALYZE DELETE FROM t",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "this is not sql",
        ] {
            assert_eq!(classify(sql, &v), Route::Write, "{sql}");
        }
    }
}
