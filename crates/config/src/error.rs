//! Config errors: each names the key it is about and why, so an operator can fix the file from the message alone.

use std::path::PathBuf;

use thiserror::Error;

/// Why a config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type or an unknown variant.
    #[error("{location}key `{key}`: {message}")]
    Parse {
        key: String,
        location: String,
        message: String,
    },
    /// The file parsed but a value breaks a rule.
    #[error("key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
