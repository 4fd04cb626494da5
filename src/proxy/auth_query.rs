//! `auth_query`: users whose passwords are not in the config (listed without one, or not listed at all) are
//! checked against the secret the server itself stores, fetched at each login by running `auth_query` (PgCat's
//! default: `SELECT usename, passwd FROM pg_shadow WHERE usename='$1'`) as `auth_query_user`. An md5 hash
//! serves md5 logins and logs in to the servers too; a SCRAM verifier serves SCRAM logins, and the keys the
//! client's exchange reveals log in to the servers on its behalf. Fetching at each login means a password changed
//! on the server applies from the next login.

use crate::config::Config;
use crate::database::UserPool;
use crate::pool::PoolError;
use crate::protocol::auth::Secret;

/// The `auth_query` settings in force for a pool (its own, else `[general]`'s).
pub(crate) struct AuthQuery<'a> {
    pub(crate) query: &'a str,
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
}

pub(crate) fn settings<'a>(config: &'a Config, db: &str) -> Option<AuthQuery<'a>> {
    let g = &config.general;
    let p = config.pools.get(db)?;
    let pick = |a: &'a Option<String>, b: &'a Option<String>| a.as_deref().or(b.as_deref());
    Some(AuthQuery {
        query: pick(&p.auth_query, &g.auth_query)?,
        user: pick(&p.auth_query_user, &g.auth_query_user)?,
        password: pick(&p.auth_query_password, &g.auth_query_password)?,
    })
}

/// Whether a login to `found` (the user's configured pool, if any) needs its secret from `auth_query`.
pub(crate) fn needed(found: Option<&std::sync::Arc<UserPool>>) -> bool {
    found.is_none_or(|p| {
        p.auth.secret.is_none() && p.auth.auth_type != crate::config::AuthType::Trust
    })
}

/// Runs the auth query for `user`: its stored secret, or `None` when the server has no such user (or no password
/// for it).
pub(crate) async fn fetch(
    cluster: &crate::database::Cluster,
    config: &Config,
    db: &str,
    aq: &AuthQuery<'_>,
    user: &str,
) -> Result<Option<Secret>, PoolError> {
    let Some(pool) = cluster.auth_pool(config, db, (aq.user, aq.password)) else {
        return Ok(None);
    };
    // The user name goes inside the query's quotes ('$1'), so it is escaped as a literal's contents.
    let sql = aq.query.replace("$1", &user.replace('\'', "''"));
    let mut conn = pool.checkout().await?;
    let row = conn.query_row(&sql).await?;
    let passwd = row.and_then(|r| r.into_iter().nth(1).flatten());
    Ok(passwd.filter(|p| !p.is_empty()).map(|p| Secret::parse(&p)))
}
