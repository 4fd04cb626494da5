//! Query inspection. So far only the small pre-parser for session commands ([`session_sql`]) that transaction
//! mode needs; read/write splitting, shard keys and fan-out will live here too. Nothing routes yet: every query
//! of a pool goes to its default shard's primary (see `pool::UserPool::target`).

pub mod classify;
pub mod session_sql;
