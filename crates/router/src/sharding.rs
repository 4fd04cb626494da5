//! Choosing a shard for a request, PgCat-compatible and pure: a comment matching `shard_id_regex` or
//! `sharding_key_regex` in the first `regex_search_limit` bytes, else the `automatic_sharding_key` found in the
//! query (literals, or Bind parameters in text or binary format), hashed with the pool's sharding function.
//! The session applies `SET SHARD`/`SET SHARDING KEY` and `default_shard` around this.

use std::collections::BTreeSet;

use regex::bytes::Regex;

use super::hash::{bigint_partition, parse_uuid, sha1_shard, text_partition, uuid_partition};
use super::shard_key::{self, KeySpec, KeyValue};
use ocelot_config::{Pool, ShardingFunction, ShardingKeyType};

/// The shards a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shards {
    /// Nothing in the request names a shard.
    Unknown,
    One(usize),
    /// Several shards (an IN list or multi-row INSERT over keys of different shards).
    Many(BTreeSet<usize>),
}

/// A pool's sharding settings, compiled.
#[derive(Debug, Clone)]
pub struct Sharder {
    pub(crate) shards: usize,
    function: ShardingFunction,
    key_type: ShardingKeyType,
    key: Option<KeySpec>,
    shard_id_re: Option<Regex>,
    key_re: Option<Regex>,
    search_limit: usize,
    /// Centroid sharding, with `sharding_key_type = "vector"`.
    pub vectors: Option<std::sync::Arc<super::vectors::VectorRouter>>,
}

impl Sharder {
    /// Built from a validated pool config (invalid patterns were rejected by validation and are ignored here).
    pub fn new(pool: &Pool) -> Sharder {
        let re = |s: &Option<String>| s.as_deref().and_then(|p| Regex::new(p).ok());
        Sharder {
            shards: pool.shards.len().max(1),
            function: pool.sharding_function,
            key_type: pool.sharding_key_type,
            key: pool
                .automatic_sharding_key
                .as_deref()
                .and_then(KeySpec::parse),
            shard_id_re: re(&pool.shard_id_regex),
            key_re: re(&pool.sharding_key_regex),
            search_limit: pool.regex_search_limit.unwrap_or(1000),
            vectors: match (pool.sharding_key_type, &pool.vector_sharding) {
                (ShardingKeyType::Vector, Some(v)) => {
                    Some(super::vectors::VectorRouter::new(v, pool.shards.len()))
                }
                _ => None,
            },
        }
    }

    /// The shard a key given as text belongs to (`SET SHARDING KEY`, comments, literals).
    pub fn shard_of_text(&self, value: &str) -> Option<usize> {
        let n = self.shards as u64;
        let shard = match (self.key_type, self.function) {
            (ShardingKeyType::Bigint, ShardingFunction::PgBigintHash) => {
                bigint_partition(value.trim().parse().ok()?, n)
            }
            (ShardingKeyType::Bigint, ShardingFunction::Sha1) => {
                sha1_shard(value.trim().parse().ok()?, n)
            }
            (ShardingKeyType::Text, _) => text_partition(value.as_bytes(), n),
            (ShardingKeyType::Uuid, _) => uuid_partition(&parse_uuid(value)?, n),
            (ShardingKeyType::Vector, _) => {
                let v = super::vectors::parse_vector(value)?;
                return self.vectors.as_ref()?.shard_of(&v);
            }
        };
        Some(shard as usize)
    }

    /// The shard a Bind parameter belongs to.
    pub fn shard_of_param(&self, raw: &[u8], binary: bool) -> Option<usize> {
        if !binary {
            return self.shard_of_text(std::str::from_utf8(raw).ok()?);
        }
        let n = self.shards as u64;
        let shard = match self.key_type {
            ShardingKeyType::Bigint => {
                let v = match raw.len() {
                    2 => i16::from_be_bytes([raw[0], raw[1]]) as i64,
                    4 => i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
                    8 => i64::from_be_bytes(raw.try_into().ok()?),
                    _ => return None,
                };
                match self.function {
                    ShardingFunction::PgBigintHash => bigint_partition(v, n),
                    ShardingFunction::Sha1 => sha1_shard(v, n),
                }
            }
            ShardingKeyType::Text => text_partition(raw, n),
            ShardingKeyType::Uuid => uuid_partition(raw.try_into().ok()?, n),
            ShardingKeyType::Vector => {
                let v = super::vectors::decode_binary_array(raw)?;
                return self.vectors.as_ref()?.shard_of(&v);
            }
        };
        Some(shard as usize)
    }

    /// A shard named by a comment in the query's first `regex_search_limit` bytes.
    pub fn from_comment(&self, sql: &[u8]) -> Option<usize> {
        let head = &sql[..sql.len().min(self.search_limit)];
        if let Some(re) = &self.shard_id_re {
            if let Some(n) = re.captures(head).and_then(|c| c.get(1)) {
                let n: usize = std::str::from_utf8(n.as_bytes()).ok()?.parse().ok()?;
                return (n < self.shards).then_some(n);
            }
        }
        let re = self.key_re.as_ref()?;
        let v = re.captures(head)?.get(1)?;
        self.shard_of_text(std::str::from_utf8(v.as_bytes()).ok()?)
    }

    /// The automatic sharding key, if configured.
    pub fn key(&self) -> Option<&KeySpec> {
        self.key.as_ref()
    }

    /// Whether requests are inspected for a key at all.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The shards `sql` needs by its sharding key, with `params` from its Bind (value, binary).
    pub fn from_query(&self, sql: &str, params: &[(Option<&[u8]>, bool)]) -> Shards {
        self.shards_of(self.keys(sql), params)
    }

    /// The key values `sql` restricts the sharding key to (parses the query; callers may cache the result for
    /// parameterised texts, which repeat).
    pub(crate) fn keys(&self, sql: &str) -> Option<Vec<KeyValue>> {
        shard_key::find(sql, self.key.as_ref()?)
    }

    /// The shards of key values found by [`Sharder::keys`], with `params` from the Bind.
    pub fn shards_of(
        &self,
        values: Option<Vec<KeyValue>>,
        params: &[(Option<&[u8]>, bool)],
    ) -> Shards {
        let Some(values) = values else {
            return Shards::Unknown;
        };
        let mut set = BTreeSet::new();
        for v in values {
            let shard = match v {
                KeyValue::Literal(s) => self.shard_of_text(&s),
                KeyValue::Param(i) => match params.get(i) {
                    Some((Some(raw), binary)) => self.shard_of_param(raw, *binary),
                    _ => None,
                },
            };
            match shard {
                Some(s) => {
                    set.insert(s);
                }
                None => return Shards::Unknown,
            }
        }
        match set.len() {
            0 => Shards::Unknown,
            1 => set.into_iter().next().map_or(Shards::Unknown, Shards::One),
            _ => Shards::Many(set),
        }
    }
}
