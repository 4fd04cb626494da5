//! Query inspection, pure functions without I/O: read/write classification with sqlparser ([`classify`]), PgCat's
//! routing commands ([`commands`]), and the small pre-parser for session commands ([`session_sql`]) that
//! transaction mode needs, shard keys and sharding functions, fan-out plans and the merging of their rows, COPY
//! splitting, and vector (centroid) routing. Nothing here does I/O or knows a pool.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod binary;
pub mod classify;
pub mod commands;
pub mod copy;
pub mod fanout;
pub mod grouped;
pub mod hash;
pub mod lex;
pub mod merge;
pub mod pinning;
pub mod plugins;
pub mod route;
pub mod select;
pub mod session_sql;
pub mod shard_key;
pub mod sharding;
pub mod vectors;

/// Words that may follow an item in FROM without being its alias.
const NOT_ALIAS: &[&str] = &[
    "where",
    "join",
    "left",
    "right",
    "inner",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "order",
    "group",
    "having",
    "limit",
    "offset",
    "union",
    "except",
    "intersect",
    "window",
    "fetch",
    "for",
    "returning",
    "lateral",
    "with",
];

/// Whether the text after an item in FROM (a table function call, a subquery) gives it an alias (`AS d`, `d`).
pub fn has_alias(after: &str) -> bool {
    let word: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '"')
        .collect();
    !word.is_empty() && !NOT_ALIAS.contains(&word.to_ascii_lowercase().as_str())
}
