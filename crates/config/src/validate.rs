//! Rules of a valid config that types alone cannot express, checked after parsing. Each failure names its key.

use super::{AuthType, Config, ConfigError, DefaultShard, ServerRole};
use ocelot_protocol::auth::Secret;

pub(super) fn validate(c: &Config) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    validate_general(c, &mut warnings)?;
    let any_global_plugin = c.plugins.as_ref().is_some_and(|p| p.any_enabled());
    if c.pools.is_empty() {
        warnings.push("no [pools] are configured: every client will be rejected".into());
    }
    for (name, pool) in &c.pools {
        let auth_query = pool.auth_query.is_some() || c.general.auth_query.is_some();
        validate_pool(name, pool, any_global_plugin, &mut warnings)?;
        let mut seen = std::collections::HashSet::new();
        for (idx, user) in &pool.users {
            if !seen.insert(user.username.as_str()) {
                return Err(ConfigError::invalid(
                    format!("pools.{name}.users.{idx}.username"),
                    format!("user \"{}\" appears twice in this pool", user.username),
                ));
            }
            validate_user(name, idx, user, auth_query)?;
        }
    }
    Ok(warnings)
}

/// The `[general]` and `[inference]` settings.
fn validate_general(c: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let g = &c.general;
    if g.tls_certificate.is_some() != g.tls_private_key.is_some() {
        return Err(ConfigError::invalid(
            "general.tls_certificate",
            "tls_certificate and tls_private_key must be set together",
        ));
    }
    if g.tls_required && g.tls_certificate.is_none() {
        return Err(ConfigError::invalid(
            "general.tls_required",
            "tls_required needs tls_certificate and tls_private_key",
        ));
    }
    if c.inference.device == super::Device::Cuda && !cfg!(feature = "cuda") {
        return Err(ConfigError::invalid(
            "inference.device",
            "\"cuda\" needs a build with the cuda feature (cargo build --release --features cuda)",
        ));
    }
    if c.inference.batch_max == 0 {
        return Err(ConfigError::invalid(
            "inference.batch_max",
            "must be at least 1",
        ));
    }
    if let Some(name) = &c.inference.registry_pool {
        if !c.pools.contains_key(name) {
            return Err(ConfigError::invalid(
                "inference.registry_pool",
                format!("there is no pool named {name:?}"),
            ));
        }
    }
    if g.worker_threads == 0 {
        return Err(ConfigError::invalid(
            "general.worker_threads",
            "must be at least 1",
        ));
    }
    if g.max_message_size < 1024 {
        return Err(ConfigError::invalid(
            "general.max_message_size",
            "must be at least 1024 bytes",
        ));
    }
    if g.prepared_statements.is_some() || g.prepared_statements_cache_size.is_some() {
        warnings.push("general.prepared_statements and general.prepared_statements_cache_size are obsolete and ignored: set prepared_statements_cache_size on each pool".into());
    }
    Ok(())
}

/// One pool's settings, its users' aside.
fn validate_pool(
    name: &str,
    pool: &super::Pool,
    any_global_plugin: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pools.{name}.{k}");
    if pool.query_parser_read_write_splitting && !pool.query_parser_enabled {
        return Err(ConfigError::invalid(
            key("query_parser_read_write_splitting"),
            "requires query_parser_enabled = true",
        ));
    }
    let plugins_on = pool
        .plugins
        .as_ref()
        .map_or(any_global_plugin, |p| p.any_enabled());
    if plugins_on && !pool.query_parser_enabled {
        // PgCat accepts this (its specs use it everywhere): the plugins simply do not run.
        warnings.push(format!(
            "{}: plugins do not run while query_parser_enabled = false",
            key("query_parser_enabled")
        ));
    }
    validate_sharding_keys(name, pool)?;
    let a = (
        &pool.auth_query,
        &pool.auth_query_user,
        &pool.auth_query_password,
    );
    if [a.0.is_some(), a.1.is_some(), a.2.is_some()]
        .iter()
        .any(|&x| x)
        && !(a.0.is_some() && a.1.is_some() && a.2.is_some())
    {
        return Err(ConfigError::invalid(
            key("auth_query"),
            "auth_query, auth_query_user and auth_query_password must be set together",
        ));
    }
    validate_vector_sharding(name, pool)?;
    validate_shards(name, pool, warnings)?;
    if let DefaultShard::Shard(n) = pool.default_shard {
        if n >= pool.shards.len() {
            return Err(ConfigError::invalid(
                key("default_shard"),
                format!(
                    "Invalid shard {n}: shard_{n} does not exist, the pool has {} shard(s)",
                    pool.shards.len()
                ),
            ));
        }
    }
    if pool.users.is_empty() {
        return Err(ConfigError::invalid(
            key("users"),
            "a pool needs at least one user",
        ));
    }
    Ok(())
}

/// The regular expressions, sharding function and automatic key of pool `name`.
fn validate_sharding_keys(name: &str, pool: &super::Pool) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pools.{name}.{k}");
    for (k, re) in [
        ("shard_id_regex", &pool.shard_id_regex),
        ("sharding_key_regex", &pool.sharding_key_regex),
    ] {
        if let Some(re) = re {
            match regex::Regex::new(re) {
                Ok(r) if r.captures_len() >= 2 => {}
                Ok(_) => {
                    return Err(ConfigError::invalid(
                        key(k),
                        "the pattern needs a capture group for the value",
                    ))
                }
                Err(e) => {
                    return Err(ConfigError::invalid(
                        key(k),
                        format!("invalid regular expression: {e}"),
                    ))
                }
            }
        }
    }
    if pool.sharding_function == crate::ShardingFunction::Sha1
        && pool.sharding_key_type != crate::ShardingKeyType::Bigint
    {
        return Err(ConfigError::invalid(
            key("sharding_function"),
            "sha1 shards integer keys only",
        ));
    }
    if let Some(k) = &pool.automatic_sharding_key {
        let parts: Vec<&str> = k.split('.').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.trim_matches('"').is_empty()) {
            return Err(ConfigError::invalid(
                key("automatic_sharding_key"),
                format!("\"{k}\" must be table.column (or *.column)"),
            ));
        }
    }
    Ok(())
}

/// One user of pool `name`; `auth_query` when the pool can look passwords up.
fn validate_user(
    name: &str,
    idx: &str,
    user: &super::User,
    auth_query: bool,
) -> Result<(), ConfigError> {
    let ukey = |k: &str| format!("pools.{name}.users.{idx}.{k}");
    if user.pool_size == 0 {
        return Err(ConfigError::invalid(
            ukey("pool_size"),
            "must be at least 1",
        ));
    }
    if user.min_pool_size.unwrap_or(0) > user.pool_size {
        return Err(ConfigError::invalid(
            ukey("min_pool_size"),
            format!(
                "{} exceeds pool_size {}",
                user.min_pool_size.unwrap_or(0),
                user.pool_size
            ),
        ));
    }
    match (&user.password, user.auth_type) {
        (None, AuthType::Trust) => {}
        (None, _) if auth_query => {}
        (None, t) => {
            return Err(ConfigError::invalid(
                ukey("password"),
                // PgCat's words, which its specs and operators' scripts look for.
                format!("required for auth_type \"{t}\": You have to specify a user password for every pool if auth_query is not specified"),
            ))
        }
        (Some(p), AuthType::Md5) if !Secret::parse(p).supports_md5() => {
            return Err(ConfigError::invalid(
                ukey("password"),
                "a SCRAM verifier cannot serve md5 authentication: use auth_type = \"scram-sha-256\" or a cleartext password",
            ))
        }
        (Some(p), AuthType::ScramSha256) => {
            let secret = Secret::parse(p);
            if !secret.supports_scram() {
                return Err(ConfigError::invalid(
                    ukey("password"),
                    "an md5 hash cannot serve scram-sha-256 authentication: use auth_type = \"md5\" or a cleartext password",
                ));
            }
            if let Err(e) = secret.scram_verifier() {
                return Err(ConfigError::invalid(ukey("password"), e.to_string()));
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate_shards(
    name: &str,
    pool: &super::Pool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if pool.shards.is_empty() {
        return Err(ConfigError::invalid(
            format!("pools.{name}.shards"),
            "a pool needs at least one shard",
        ));
    }
    let mut indices = Vec::new();
    for (idx, shard) in &pool.shards {
        let skey = |k: &str| format!("pools.{name}.shards.{idx}.{k}");
        let n: usize = idx.parse().map_err(|_| {
            ConfigError::invalid(
                format!("pools.{name}.shards.{idx}"),
                "shard names must be numbers 0..N-1",
            )
        })?;
        indices.push(n);
        if shard.servers.is_empty() {
            return Err(ConfigError::invalid(
                skey("servers"),
                "a shard needs at least one server",
            ));
        }
        let primaries = shard
            .servers
            .iter()
            .filter(|s| s.2 == ServerRole::Primary)
            .count();
        if primaries > 1 {
            return Err(ConfigError::invalid(
                skey("servers"),
                "a shard has at most one primary",
            ));
        }
        for (i, s) in shard.servers.iter().enumerate() {
            if shard.servers[..i].iter().any(|o| o.0 == s.0 && o.1 == s.1) {
                return Err(ConfigError::invalid(
                    skey("servers"),
                    format!("server {}:{} is listed twice", s.0, s.1),
                ));
            }
            if s.0.is_empty() {
                return Err(ConfigError::invalid(
                    skey("servers"),
                    "a server host is empty",
                ));
            }
        }
        if let Some(m) = &shard.mirrors {
            for (host, port, target) in m {
                if *target >= shard.servers.len() {
                    return Err(ConfigError::invalid(
                        skey("mirrors"),
                        format!("mirror {host}:{port} targets server index {target}, which does not exist"),
                    ));
                }
            }
            if !m.is_empty() {
                warnings.push(format!(
                    "{}: mirroring is not implemented yet and is ignored",
                    skey("mirrors")
                ));
            }
        }
    }
    indices.sort_unstable();
    if indices.iter().enumerate().any(|(i, &n)| i != n) {
        return Err(ConfigError::invalid(
            format!("pools.{name}.shards"),
            "shards must be numbered 0..N-1 without gaps",
        ));
    }
    Ok(())
}

/// Centroid sharding: a vector key, one source of centroids, all of one dimension.
fn validate_vector_sharding(name: &str, pool: &super::Pool) -> Result<(), ConfigError> {
    let key = |k: &str| format!("pools.{name}.{k}");
    let vector = pool.sharding_key_type == super::ShardingKeyType::Vector;
    let Some(v) = &pool.vector_sharding else {
        if vector {
            return Err(ConfigError::invalid(
                key("vector_sharding"),
                "sharding_key_type = \"vector\" needs a [vector_sharding] table with centroids",
            ));
        }
        return Ok(());
    };
    if !vector {
        return Err(ConfigError::invalid(
            key("sharding_key_type"),
            "vector_sharding needs sharding_key_type = \"vector\"",
        ));
    }
    if pool.automatic_sharding_key.is_none() {
        return Err(ConfigError::invalid(
            key("automatic_sharding_key"),
            "vector_sharding needs automatic_sharding_key = \"table.vector_column\"",
        ));
    }
    let sources = [
        v.centroids.is_some(),
        v.centroids_file.is_some(),
        v.centroids_model.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ConfigError::invalid(
            key("vector_sharding"),
            "give exactly one of centroids, centroids_file and centroids_model",
        ));
    }
    let centroids = v
        .read_centroids()
        .map_err(|e| ConfigError::invalid(key("vector_sharding.centroids_file"), e))?;
    if let Some(c) = centroids {
        let dim = c.first().map_or(0, Vec::len);
        if dim == 0 || c.iter().any(|x| x.len() != dim) {
            return Err(ConfigError::invalid(
                key("vector_sharding.centroids"),
                "centroids must be non-empty vectors of one dimension",
            ));
        }
        if c.len() < pool.shards.len() {
            return Err(ConfigError::invalid(
                key("vector_sharding.centroids"),
                format!(
                    "{} centroid(s) for {} shards: every shard needs at least one",
                    c.len(),
                    pool.shards.len()
                ),
            ));
        }
    }
    Ok(())
}
