//! `[inference]` (Ocelot): how `pgml.*` calls are handled. `proxy` (the default) answers the calls Ocelot
//! serves in the proxy; `passthrough` sends every `pgml.*` call to the servers, for servers that have the real
//! PostgresML extension; `off` is the same as passthrough for now (Ocelot never touches `pgml.*`).

use serde::Deserialize;

/// How `pgml.*` calls are handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceMode {
    #[default]
    Proxy,
    Passthrough,
    Off,
}

/// `[inference]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Inference {
    #[serde(default)]
    pub mode: InferenceMode,
}
