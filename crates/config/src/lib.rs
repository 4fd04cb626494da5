//! PgCat-compatible configuration (`pgcat.toml`): parse, then validate, as two pure steps. Every key of PgCat's
//! schema is accepted, including those whose behaviour arrives later; unknown keys are kept as warnings naming
//! the key; any error names the key and the reason. Publishing a validated config is the caller's job.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod general;
mod inference;
mod plugins;
mod pools;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use error::ConfigError;
pub use general::{AdminAuthType, General, Keepalive, LagLimit};
pub use inference::{
    Device, Inference, InferenceMode, DEPLOY_RECHECK, MODEL_CACHE_BYTES, PREDICTION_LOG_QUEUE,
};
pub use plugins::{Intercept, InterceptQuery, Plugins, Prewarmer, QueryLogger, TableAccess};
pub use pools::{
    AuthType, DefaultRole, DefaultShard, LoadBalancingMode, Pool, PoolMode, ServerRole, Shard,
    ShardingFunction, ShardingKeyType, User, VectorMetric, VectorSharding,
};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub general: General,
    #[serde(default)]
    pub plugins: Option<Plugins>,
    /// Ocelot: `[inference]`.
    #[serde(default)]
    pub inference: inference::Inference,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// PgCat writes the CLI path here; accepted and ignored when present in a file.
    #[serde(default)]
    pub path: Option<String>,
}

/// A parsed and validated config with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_and_validate(&text)
    }

    /// Parses and validates config text.
    pub fn parse_and_validate(text: &str) -> Result<Loaded, ConfigError> {
        let (config, mut warnings) = Self::parse(text)?;
        warnings.extend(config.validate()?);
        Ok(Loaded { config, warnings })
    }

    /// Parses config text; unknown keys come back as warnings.
    pub(crate) fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::new(text);
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            unknown.push(format!("unknown config key `{path}` ignored"))
        };
        let ignored = serde_ignored::Deserializer::new(de, &mut on_unknown);
        let config: Config = serde_path_to_error::deserialize(ignored).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let location = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                key,
                location,
                message: inner.message().trim().to_owned(),
            }
        })?;
        Ok((config, unknown))
    }

    /// Checks the rules serde cannot express; returns warnings for what is accepted but has no effect.
    pub(crate) fn validate(&self) -> Result<Vec<String>, ConfigError> {
        validate::validate(self)
    }
}

/// Settings of one user of one pool after inheritance (user, then pool, then general).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub pool_mode: PoolMode,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub server_lifetime_ms: u64,
    pub statement_timeout_ms: u64,
    /// PgCat's pool-level `checkout_failure_limit`; 0 is no limit.
    pub checkout_failure_limit: u64,
}

impl Config {
    /// Effective settings for `user` of `pool`.
    pub fn user_settings(&self, pool: &Pool, user: &User) -> UserSettings {
        let g = &self.general;
        UserSettings {
            pool_mode: user.pool_mode.unwrap_or(pool.pool_mode),
            pool_size: user.pool_size,
            min_pool_size: user.min_pool_size.unwrap_or(0),
            connect_timeout_ms: user
                .connect_timeout
                .or(pool.connect_timeout)
                .unwrap_or(g.connect_timeout),
            idle_timeout_ms: user
                .idle_timeout
                .or(pool.idle_timeout)
                .unwrap_or(g.idle_timeout),
            server_lifetime_ms: user
                .server_lifetime
                .or(pool.server_lifetime)
                .unwrap_or(g.server_lifetime),
            statement_timeout_ms: user.statement_timeout,
            checkout_failure_limit: pool.checkout_failure_limit.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests;
