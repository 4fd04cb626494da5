//! Query inspection, pure functions without I/O: read/write classification with sqlparser ([`classify`]), PgCat's
//! routing commands ([`commands`]), and the small pre-parser for session commands ([`session_sql`]) that
//! transaction mode needs. Shard keys and fan-out will live here too.

pub mod binary;
pub mod classify;
pub mod commands;
pub mod copy;
pub mod fanout;
pub mod grouped;
pub mod hash;
pub mod merge;
pub mod pinning;
pub mod plugins;
pub mod session_sql;
pub mod shard_key;
pub mod sharding;
pub mod vectors;
