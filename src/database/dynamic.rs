//! Pools made at login for users authenticated through `auth_query` (see `proxy::auth_query`): the connections
//! the query runs on, and each such user's pool, built from the config like any other but with the secret the
//! server returned.

use std::sync::Arc;
use std::time::Duration;

use super::{user_pool, ClientAuth, Cluster, UserPool};
use crate::config::{AuthType, Config, ServerRole, User};
use crate::pool::connect::{ServerCredentials, ServerTls};
use crate::pool::pool::PoolSettings;
use crate::pool::{Address, ServerPool};
use crate::protocol::auth::{AuthError, Secret};

impl ClientAuth {
    /// Authentication by a stored secret (from `auth_query`): md5 for an md5 hash, SCRAM for a SCRAM verifier.
    pub(crate) fn for_secret(secret: Secret) -> Result<ClientAuth, AuthError> {
        let (auth_type, scram) = match &secret {
            Secret::Scram(_) => (AuthType::ScramSha256, Some(secret.scram_verifier()?)),
            Secret::ScramKeys(_) => {
                return Err(AuthError::Unsupported("SCRAM keys are not a stored secret"))
            }
            Secret::Md5Hash(_) | Secret::Plain(_) => (AuthType::Md5, None),
        };
        Ok(ClientAuth {
            auth_type,
            secret: Some(secret),
            scram,
        })
    }
}

impl Cluster {
    /// The server pool `auth_query` runs on for pool `db`: its shard 0 primary (else first server), logged in as
    /// `auth_query_user`.
    pub(crate) fn auth_pool(
        &self,
        config: &Config,
        db: &str,
        login: (&str, &str),
    ) -> Option<Arc<ServerPool>> {
        let mut pools = self.auth_pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(db) {
            return Some(p.clone());
        }
        let pool = config.pools.get(db)?;
        let shard = pool.shards.get("0")?;
        let (host, port, role) = shard
            .servers
            .iter()
            .find(|s| s.2 == ServerRole::Primary)
            .or(shard.servers.first())?;
        let g = &config.general;
        let address = Address {
            pool: db.to_owned(),
            user: login.0.to_owned(),
            shard: 0,
            index: 0,
            host: host.clone(),
            port: *port,
            role: *role,
            database: shard.database.clone(),
        };
        let settings = PoolSettings {
            pool_size: 2,
            min_pool_size: 0,
            connect_timeout: Duration::from_millis(
                pool.connect_timeout.unwrap_or(g.connect_timeout),
            ),
            idle_timeout: Duration::from_millis(g.idle_timeout),
            server_lifetime: Duration::from_millis(g.server_lifetime),
            fifo: false,
            max_message: u32::MAX,
            cleanup_timeout: Duration::from_millis(g.healthcheck_timeout.max(1000)),
            healthcheck_delay: Duration::from_millis(g.healthcheck_delay),
            healthcheck_timeout: Duration::from_millis(g.healthcheck_timeout),
            prewarm: Vec::new(),
            cleanup: pool.cleanup_server_connections,
            keepalive: g.keepalive(),
        };
        let creds = ServerCredentials {
            user: login.0.to_owned(),
            password: Some(Secret::parse(login.1)),
            tls: ServerTls {
                enabled: g.server_tls,
                verify: g.verify_server_certificate,
                ca_file: g.server_tls_ca_file.clone(),
            },
        };
        let sp = ServerPool::new(address, settings, creds);
        sp.spawn_maintenance();
        pools.insert(db.to_owned(), sp.clone());
        Some(sp)
    }

    /// The pool of a user authenticated through `auth_query` with `auth` (the fetched secret), logging in to the
    /// servers with `server_secret`. Kept while the secret stays the same; a changed password makes a new one
    /// (clients of the old one keep it until they leave).
    pub(crate) fn dynamic_pool(
        &self,
        config: &Config,
        db: &str,
        user: &str,
        auth: ClientAuth,
        server_secret: Secret,
    ) -> Result<Arc<UserPool>, AuthError> {
        let key = (db.to_owned(), user.to_owned());
        let mut dynamic = self.dynamic.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = dynamic.get(&key) {
            let same_server = p
                .server_pools()
                .next()
                .is_some_and(|s| s.password() == Some(&server_secret));
            if same_server && p.auth.secret == auth.secret {
                return Ok(p.clone());
            }
        }
        let Some(pool) = config.pools.get(db) else {
            return Err(AuthError::Unsupported("no such pool"));
        };
        let listed = pool.users.values().find(|u| u.username == user).cloned();
        let template = listed.unwrap_or_else(|| User {
            username: user.to_owned(),
            password: None,
            auth_type: auth.auth_type,
            server_username: None,
            server_password: None,
            pool_size: pool.auth_query_pool_size,
            min_pool_size: None,
            pool_mode: None,
            server_lifetime: None,
            statement_timeout: 0,
            connect_timeout: None,
            idle_timeout: None,
        });
        let up = Arc::new(user_pool(
            config,
            db,
            pool,
            &template,
            None,
            Some((auth, server_secret)),
        )?);
        for s in up.server_pools() {
            s.spawn_maintenance();
        }
        dynamic.insert(key, up.clone());
        Ok(up)
    }
}
