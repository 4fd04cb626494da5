//! PgCat's plugins, compiled once per pool from `[plugins]` (or the pool's own `[pools.<name>.plugins]`, which
//! replaces the global table entirely): `query_logger` logs each query; `intercept` answers configured queries
//! (matched lower-cased and trimmed) with a canned result, `${USER}` and `${DATABASE}` substituted;
//! `table_access` refuses queries that touch listed tables; `prewarmer` runs queries on every new server
//! connection (applied by the server pool).

use std::collections::HashMap;

use bytes::BytesMut;

use ocelot_config::Plugins;
use ocelot_protocol::encode;

/// A canned answer: columns (name, type name) and rows of text values.
type Canned = (Vec<(String, String)>, Vec<Vec<String>>);

/// The plugins in force for one pool.
#[derive(Debug, Default)]
pub struct PoolPlugins {
    pub query_logger: bool,
    /// Normalised query text to (columns with their type names, rows).
    intercept: HashMap<String, Canned>,
    /// Lower-cased table names, bare or schema-qualified as configured.
    denied: Vec<String>,
    pub prewarm: Vec<String>,
}

/// Normalises a query for intercept matching, as PgCat does: trimmed, without a final `;`, lower case.
fn normalise(sql: &str) -> String {
    sql.trim().trim_end_matches(';').trim().to_lowercase()
}

impl PoolPlugins {
    /// The plugins for a pool: its own table if it has one, else the global one. `None` when none is enabled.
    pub fn compile(global: Option<&Plugins>, own: Option<&Plugins>) -> Option<PoolPlugins> {
        let p = own.or(global)?;
        if !p.any_enabled() {
            return None;
        }
        let mut out = PoolPlugins {
            query_logger: p.query_logger.as_ref().is_some_and(|q| q.enabled),
            ..Default::default()
        };
        if let Some(i) = p.intercept.as_ref().filter(|i| i.enabled) {
            for q in i.queries.values() {
                let cols = q
                    .schema
                    .iter()
                    .map(|c| {
                        let name = c.first().cloned().unwrap_or_default();
                        let ty = c.get(1).cloned().unwrap_or_else(|| "text".into());
                        (name, ty)
                    })
                    .collect();
                out.intercept
                    .insert(normalise(&q.query), (cols, q.result.clone()));
            }
        }
        if let Some(t) = p.table_access.as_ref().filter(|t| t.enabled) {
            out.denied = t.tables.iter().map(|t| t.to_lowercase()).collect();
        }
        if let Some(w) = p.prewarmer.as_ref().filter(|w| w.enabled) {
            out.prewarm = w.queries.clone();
        }
        Some(out)
    }

    pub fn intercepts(&self) -> bool {
        !self.intercept.is_empty()
    }

    pub fn checks_tables(&self) -> bool {
        !self.denied.is_empty()
    }

    /// The canned answer to `sql`, if it is intercepted: RowDescription, DataRows and CommandComplete.
    pub fn intercept(&self, sql: &str, user: &str, database: &str, out: &mut BytesMut) -> bool {
        let Some((cols, rows)) = self.intercept.get(&normalise(sql)) else {
            return false;
        };
        let described: Vec<(&str, u32, i16)> = cols
            .iter()
            .map(|(n, t)| {
                let (oid, len) = type_oid(t);
                (n.as_str(), oid, len)
            })
            .collect();
        encode::row_description_typed(out, &described);
        for r in rows {
            let values: Vec<Option<String>> = r
                .iter()
                .map(|v| Some(v.replace("${USER}", user).replace("${DATABASE}", database)))
                .collect();
            encode::data_row_opt(out, &values);
        }
        encode::command_complete(out, &format!("SELECT {}", rows.len()));
        true
    }

    /// The first listed table `sql` touches, if any. SQL the parser cannot read is let through, as in PgCat.
    pub fn denied_table(&self, sql: &str) -> Option<String> {
        self.denied_table_parsed(&super::route::parse(sql)?)
    }

    /// [`Self::denied_table`] of a query already parsed.
    pub(crate) fn denied_table_parsed(
        &self,
        statements: &[sqlparser::ast::Statement],
    ) -> Option<String> {
        let mut found = None;
        for s in statements {
            let _ = sqlparser::ast::visit_relations(s, |name| {
                let full = name.to_string().to_lowercase().replace('"', "");
                let bare = full.rsplit('.').next().unwrap_or(&full).to_owned();
                if found.is_none() {
                    found = self
                        .denied
                        .iter()
                        .find(|d| **d == full || **d == bare)
                        .cloned();
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
        found
    }
}

/// The OID and length of a type named in an intercept schema (PgCat writes `text`, `int4`, `bool`, ...).
fn type_oid(name: &str) -> (u32, i16) {
    match name.to_lowercase().as_str() {
        "bool" | "boolean" => (16, 1),
        "int8" | "bigint" => (20, 8),
        "int2" | "smallint" => (21, 2),
        "int4" | "int" | "integer" => (23, 4),
        "float4" | "real" => (700, 4),
        "float8" | "double precision" => (701, 8),
        "numeric" => (1700, -1),
        "oid" => (26, 4),
        "name" => (19, 64),
        "varchar" => (1043, -1),
        _ => (25, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocelot_config::{Intercept, InterceptQuery, TableAccess};

    fn plugins() -> PoolPlugins {
        let mut queries = std::collections::BTreeMap::new();
        queries.insert(
            "0".into(),
            InterceptQuery {
                query: "select current_database() as a, current_schemas(false) as b".into(),
                schema: vec![
                    vec!["a".into(), "text".into()],
                    vec!["b".into(), "text".into()],
                ],
                result: vec![vec!["${DATABASE}".into(), "{public}".into()]],
            },
        );
        let p = Plugins {
            intercept: Some(Intercept {
                enabled: true,
                queries,
            }),
            table_access: Some(TableAccess {
                enabled: true,
                tables: vec!["secrets".into(), "audit.log".into()],
            }),
            ..Default::default()
        };
        PoolPlugins::compile(Some(&p), None).unwrap()
    }

    #[test]
    fn intercept_matches_normalised_text_and_substitutes() {
        let p = plugins();
        let mut out = BytesMut::new();
        assert!(p.intercept(
            "  SELECT current_database() AS a, current_schemas(false) AS b; ",
            "u",
            "shop",
            &mut out
        ));
        assert!(out.windows(4).any(|w| w == b"shop"));
        assert!(!p.intercept("select 1", "u", "shop", &mut out));
    }

    #[test]
    fn table_access_finds_listed_tables_anywhere() {
        let p = plugins();
        assert_eq!(
            p.denied_table("SELECT * FROM secrets"),
            Some("secrets".into())
        );
        assert_eq!(
            p.denied_table("SELECT 1 FROM t JOIN public.\"Secrets\" s ON true"),
            Some("secrets".into())
        );
        assert_eq!(
            p.denied_table("DELETE FROM audit.log"),
            Some("audit.log".into())
        );
        assert_eq!(p.denied_table("SELECT * FROM log"), None);
        assert_eq!(p.denied_table("SELECT 1"), None);
        assert_eq!(p.denied_table("not sql at all"), None);
    }
}
