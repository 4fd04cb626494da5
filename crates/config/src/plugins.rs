//! `[plugins]` and `[pools.<name>.plugins]`: PgCat's four compiled-in plugins, as PgCat spells them. What they do
//! is in `router::plugins`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Plugins {
    #[serde(default)]
    pub intercept: Option<Intercept>,
    #[serde(default)]
    pub table_access: Option<TableAccess>,
    #[serde(default)]
    pub query_logger: Option<QueryLogger>,
    #[serde(default)]
    pub prewarmer: Option<Prewarmer>,
}

impl Plugins {
    /// Whether any plugin is switched on.
    pub fn any_enabled(&self) -> bool {
        self.intercept.as_ref().is_some_and(|p| p.enabled)
            || self.table_access.as_ref().is_some_and(|p| p.enabled)
            || self.query_logger.as_ref().is_some_and(|p| p.enabled)
            || self.prewarmer.as_ref().is_some_and(|p| p.enabled)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Intercept {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub queries: BTreeMap<String, InterceptQuery>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InterceptQuery {
    pub query: String,
    #[serde(default)]
    pub schema: Vec<Vec<String>>,
    #[serde(default)]
    pub result: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TableAccess {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueryLogger {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Prewarmer {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub queries: Vec<String>,
}
