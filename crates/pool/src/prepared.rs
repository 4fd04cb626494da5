//! Prepared statements shared across server connections, for transaction mode. A client's named Parse is
//! interned in its pool's [`Registry`] under a proxy-wide name (`ocelot_<n>`), one per distinct query text and
//! parameter types; each server connection remembers which of those names it has prepared, in an LRU bounded by
//! `prepared_statements_cache_size` ([`ServerStatements`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// One distinct statement: its proxy-wide name and the Parse body after the name (query, parameter types).
#[derive(Debug)]
pub struct Statement {
    pub name: Arc<str>,
    pub body: Bytes,
    /// A server accepted its Parse once: the text is valid, so a client's Parse of it may be answered by Ocelot.
    pub parsed: AtomicBool,
}

/// The statements of one pool, by Parse body. Locked only when a client parses a named statement, never per
/// Bind or Execute.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    statements: Mutex<HashMap<Bytes, Arc<Statement>>>,
}

impl Registry {
    /// The statement for a Parse body, created on first sight.
    pub fn intern(&self, body: &[u8]) -> Arc<Statement> {
        // Insert/lookup only: a poisoned map is still consistent.
        let mut map = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(body) {
            return s.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = Bytes::copy_from_slice(body);
        let s = Arc::new(Statement {
            name: format!("ocelot_{n}").into(),
            body: body.clone(),
            parsed: AtomicBool::new(false),
        });
        map.insert(body, s.clone());
        s
    }

    /// The statement for a Parse body that a server has accepted before, if any.
    pub fn known(&self, body: &[u8]) -> Option<Arc<Statement>> {
        let map = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        map.get(body)
            .filter(|s| s.parsed.load(Ordering::Relaxed))
            .cloned()
    }

    /// A statement of this pool changed the schema ([`changes_schema`]): texts parsed from now on get statements
    /// of their own, prepared afresh, as they would be on a direct connection. Clients keep the statements they
    /// have, with PostgreSQL's own answer if the change broke them ("cached plan must not change result type"),
    /// never a plan of another shape under a RowDescription they cached.
    pub fn schema_changed(&self) {
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn len(&self) -> usize {
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a CommandComplete tag is DDL that can change what an existing statement returns or refers to:
/// `ALTER ...`, `DROP ...`, and the `CREATE`s that may replace an object (`OR REPLACE`).
pub fn changes_schema(tag: &[u8]) -> bool {
    const REPLACEABLE: &[&[u8]] = &[
        b"CREATE VIEW",
        b"CREATE FUNCTION",
        b"CREATE PROCEDURE",
        b"CREATE RULE",
        b"CREATE TRIGGER",
    ];
    tag.starts_with(b"ALTER ") || tag.starts_with(b"DROP ") || REPLACEABLE.contains(&tag)
}

/// Counters of one server connection's statement cache (for SHOW SERVERS and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub evictions: u64,
}

/// The proxy-wide statement names prepared on one server connection, least recently used first out.
#[derive(Debug, Default)]
pub struct ServerStatements {
    tick: u64,
    names: HashMap<Arc<str>, u64>,
    pub stats: CacheStats,
}

impl ServerStatements {
    /// Whether `name` is prepared here; counts a hit or a miss and refreshes its recency.
    pub fn lookup(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                self.stats.hits += 1;
                true
            }
            None => {
                self.stats.misses += 1;
                false
            }
        }
    }

    /// Records `name` as prepared; returns the name to close when that pushes the cache over `cap`.
    pub fn insert(&mut self, name: Arc<str>, cap: usize) -> Option<Arc<str>> {
        self.tick += 1;
        self.names.insert(name, self.tick);
        if self.names.len() <= cap.max(1) {
            return None;
        }
        // An eviction scans the cache once: it happens at most once per Parse, and caches hold hundreds.
        let oldest = self
            .names
            .iter()
            .min_by_key(|(_, &t)| t)
            .map(|(n, _)| n.clone())?;
        self.names.remove(&oldest);
        self.stats.evictions += 1;
        Some(oldest)
    }

    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    /// Forgets everything (after DEALLOCATE ALL or DISCARD ALL ran on the server).
    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_names_by_text() {
        let r = Registry::default();
        let a = r.intern(b"select 1\0\0\0");
        let b = r.intern(b"select 1\0\0\0");
        let c = r.intern(b"select 2\0\0\0");
        assert_eq!(a.name, b.name);
        assert_ne!(a.name, c.name);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn ddl_gives_later_parses_statements_of_their_own() {
        let r = Registry::default();
        let before = r.intern(b"select * from t\0\0\0");
        assert!(changes_schema(b"ALTER TABLE") && changes_schema(b"DROP TYPE"));
        assert!(changes_schema(b"CREATE VIEW") && !changes_schema(b"CREATE TABLE"));
        assert!(!changes_schema(b"SELECT 1") && !changes_schema(b"ALTERED"));
        r.schema_changed();
        let after = r.intern(b"select * from t\0\0\0");
        assert_ne!(before.name, after.name);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut s = ServerStatements::default();
        assert_eq!(s.insert("a".into(), 2), None);
        assert_eq!(s.insert("b".into(), 2), None);
        assert!(s.lookup("a"));
        assert_eq!(s.insert("c".into(), 2).as_deref(), Some("b"));
        assert!(!s.lookup("b"));
        assert_eq!(
            s.stats,
            CacheStats {
                hits: 1,
                misses: 1,
                evictions: 1
            }
        );
    }
}
