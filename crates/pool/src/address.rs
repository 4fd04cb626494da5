//! The identity of one server pool: which client-facing pool and user it serves and which server it reaches.

use std::fmt;

use ocelot_config::ServerRole;

/// One (pool, user, shard, server) combination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Client-facing database (pool) name.
    pub pool: String,
    /// Client-facing user name.
    pub user: String,
    pub shard: usize,
    /// Position of the server inside its shard's `servers` list.
    pub index: usize,
    pub host: String,
    pub port: u16,
    pub role: ServerRole,
    /// Database name on the server.
    pub database: String,
}

impl Address {
    /// The address's name in admin output and metrics: `<pool>_shard_<n>_<role>_<index>`.
    pub fn name(&self) -> String {
        format!(
            "{}_shard_{}_{}_{}",
            self.pool, self.shard, self.role, self.index
        )
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{} ({} of pool \"{}\" shard {}, user \"{}\")",
            self.host, self.port, self.database, self.role, self.pool, self.shard, self.user
        )
    }
}
