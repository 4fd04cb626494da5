//! The client's side of connection start-up: SSL/GSSENC negotiation (declined), CancelRequest, the
//! StartupMessage, authentication by the user's `auth_type` (md5, scram-sha-256, trust), and the greeting
//! (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery) that PostgreSQL sends.
//! <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-START-UP>

use std::sync::Arc;

use bytes::BytesMut;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use super::error::ClientError;
use crate::config::{AdminAuthType, AuthType};
use crate::database::balance::Want;
use crate::database::ClientAuth;
use crate::database::UserPool;
use crate::net::{read_message, read_startup_packet, Stream};
use crate::pool::client_params::ClientParams;
use crate::pool::ServerParams;
use crate::protocol::auth::{md5, scram, AuthError, ScramKeys, ScramServer, Secret};
use crate::protocol::codes::{frontend, txn};
use crate::protocol::startup::{self, StartupRequest};
use crate::protocol::{decode, encode, ProtocolError};
use crate::shared::cancel::Registration;
use crate::shared::Shared;

/// Largest authentication message a client may send (passwords and SASL messages are small).
const MAX_AUTH_MESSAGE: u32 = 8192;

/// What a new connection turned out to be.
pub(crate) enum Login {
    Cancel {
        pid: i32,
        secret: i32,
    },
    Ready(Box<LoggedIn>),
    /// The admin user, greeted, for the admin console on database `pgcat` (PgCat's units) or `pgbouncer`
    /// (PgBouncer's), with who logged in (listed by SHOW CLIENTS, as PgCat lists its admin connections).
    Admin {
        console: crate::admin::Console,
        database: String,
        user: String,
        application_name: String,
    },
}

/// An authenticated client, greeted and ready for queries.
pub(crate) struct LoggedIn {
    pub(crate) pool: Arc<UserPool>,
    pub(crate) params: ClientParams,
    pub(crate) registration: Registration,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) application_name: String,
    /// See [`UserPool::reserve`].
    pub(crate) reserved: Option<crate::pool::Pooled>,
}

/// Runs start-up and authentication. The caller applies `client_login_timeout`.
pub(crate) async fn login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Login, ClientError> {
    let (minor, params) = match negotiate(stream, buf, shared).await? {
        Ok(startup) => startup,
        Err(cancel) => return Ok(cancel),
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let user = get("user")
        .filter(|u| !u.is_empty())
        .ok_or(ClientError::NoUser)?
        .to_owned();
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    let application_name = get("application_name").unwrap_or_default().to_owned();
    if !stream.is_tls() && !stream.is_unix() && shared.snapshot().config.general.tls_required {
        return Err(ClientError::TlsRequired);
    }
    let snapshot = shared.snapshot();
    let g = &snapshot.config.general;
    let admin = crate::admin::is_admin_database(&database) && user == g.admin_username;
    // The admin can always get in, to see what is going on (during a shutdown too, as in PgCat).
    if !admin && shared.shutdown.is_draining() {
        return Err(ClientError::ShuttingDown);
    }
    if !admin && shared.shutdown.client_count() > g.max_client_conn {
        return Err(ClientError::TooManyClients);
    }
    if admin {
        admin_login(stream, buf, g, &user, &application_name).await?;
        return Ok(Login::Admin {
            console: crate::admin::Console::of(&database),
            database,
            user,
            application_name,
        });
    }
    let found = snapshot.cluster.get(&database, &user);
    let aq = super::auth_query::needed(found)
        .then(|| super::auth_query::settings(&snapshot.config, &database))
        .flatten();
    if found.is_none() && aq.is_none() {
        return Err(if snapshot.cluster.has_database(&database) {
            ClientError::UnknownRole(user)
        } else {
            ClientError::UnknownDatabase(database)
        });
    }

    let mut out = BytesMut::with_capacity(512);
    let unrecognised: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unrecognised.is_empty() {
        encode::negotiate_protocol_version(&mut out, 0, &unrecognised);
    }
    let startup = Client {
        params,
        user,
        database,
        application_name,
    };
    user_login(
        stream,
        buf,
        shared,
        &snapshot,
        out,
        startup,
        found.cloned(),
        aq,
    )
    .await
}

/// Who a client's startup packet says is logging in.
struct Client {
    params: Vec<(String, String)>,
    user: String,
    database: String,
    application_name: String,
}

/// Authenticates a client of a pool (its password checked against the config or `auth_query`) and greets it
/// after `out` (a NegotiateProtocolVersion, if any).
#[allow(clippy::too_many_arguments)] // one login's state, passed down once
async fn user_login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
    snapshot: &crate::shared::Snapshot,
    mut out: BytesMut,
    startup: Client,
    found: Option<Arc<UserPool>>,
    aq: Option<super::auth_query::AuthQuery<'_>>,
) -> Result<Login, ClientError> {
    let Client {
        params,
        user,
        database,
        application_name,
    } = startup;
    let pool = match (aq, found.as_ref()) {
        (Some(aq), _) => {
            auth_query_login(stream, buf, &mut out, snapshot, &aq, &database, &user).await?
        }
        (None, Some(p)) => match super::auth_query::settings(&snapshot.config, &database) {
            Some(aq) if p.auth.auth_type == AuthType::Md5 => {
                md5_with_refetch(stream, buf, &mut out, snapshot, &aq, p, &database, &user).await?
            }
            _ => {
                authenticate(stream, buf, &mut out, &p.auth, &user).await?;
                p.clone()
            }
        },
        (None, None) => return Err(ClientError::UnknownRole(user)),
    };

    // A session-mode client of a one-server pool gets its server now and is told that server's process id, so
    // what it reads of itself on the server (pg_backend_pid(), pg_stat_activity, a NOTIFY's sender) and
    // pg_terminate_backend of that id mean what they mean on a direct connection.
    let session_mode = pool.settings.pool_mode == crate::config::PoolMode::Session;
    let reserved = match session_mode {
        true => pool.reserve().await,
        false => None,
    };
    // Clients are told the parameters of a real server session; the first connection of the pool provides them.
    let defaults = server_defaults(&pool).await?;
    let client_params = ClientParams::from_startup(&defaults, &params);
    let registration = shared
        .cancels
        .register(reserved.as_ref().map(|c| c.cancel.pid), session_mode);
    encode::auth_ok(&mut out);
    for (k, v) in defaults.iter() {
        let v = client_params.tracked.get(k).unwrap_or(v);
        encode::parameter_status(&mut out, k, v);
    }
    encode::backend_key_data(&mut out, registration.slot.pid, registration.slot.secret);
    encode::ready_for_query(&mut out, txn::IDLE);
    stream.write_all(&out).await?;
    Ok(Login::Ready(Box::new(LoggedIn {
        pool,
        params: client_params,
        registration,
        user,
        database,
        application_name,
        reserved,
    })))
}

/// How the admin user proves who it is: `admin_password` checked by `admin_auth_type`.
fn admin_auth(g: &crate::config::General) -> Result<ClientAuth, AuthError> {
    let secret = Secret::parse(&g.admin_password);
    let (auth_type, scram) = match g.admin_auth_type {
        AdminAuthType::Trust => (AuthType::Trust, None),
        AdminAuthType::Md5 => (AuthType::Md5, None),
        AdminAuthType::ScramSha256 => (AuthType::ScramSha256, Some(secret.scram_verifier()?)),
    };
    Ok(ClientAuth {
        auth_type,
        secret: Some(secret),
        scram,
    })
}

/// A StartupMessage's protocol minor version and parameters.
type Startup = (u16, Vec<(String, String)>);

/// Reads start-up packets, answering SSLRequest (TLS when configured) and GSSENCRequest, up to the
/// StartupMessage: its protocol minor version and parameters, or the CancelRequest it turned out to be.
async fn negotiate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Result<Startup, Login>, ClientError> {
    loop {
        let packet = read_startup_packet(stream, buf).await?;
        match startup::parse(&packet)? {
            StartupRequest::Ssl => match (&shared.snapshot().tls, stream.take_tcp()) {
                (Some(acceptor), Some(tcp)) => {
                    if !buf.is_empty() {
                        // Bytes sent before the handshake would be read as if they had come over TLS.
                        return Err(ProtocolError::Unexpected {
                            got: buf[0] as char,
                            expected: "nothing before the TLS handshake",
                        }
                        .into());
                    }
                    let mut tcp = tcp;
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await?;
                    *stream = Stream::TlsServer(Box::new(tls));
                }
                (_, tcp) => {
                    if let Some(tcp) = tcp {
                        *stream = Stream::Tcp(tcp);
                    }
                    // No TLS configured (or already on it): 'N' tells the client to go on in plain text.
                    stream.write_all(b"N").await?;
                }
            },
            StartupRequest::GssEnc => stream.write_all(b"N").await?,
            StartupRequest::Cancel { pid, secret } => {
                return Ok(Err(Login::Cancel { pid, secret }))
            }
            StartupRequest::Unsupported { major, minor } => {
                return Err(ClientError::UnsupportedProtocol(major, minor))
            }
            StartupRequest::Startup { minor, params } => return Ok(Ok((minor, params))),
        }
    }
}

/// Authenticates the admin user and greets it as a server would, for the admin console.
async fn admin_login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    g: &crate::config::General,
    user: &str,
    application_name: &str,
) -> Result<(), ClientError> {
    let mut out = BytesMut::with_capacity(512);
    let auth = admin_auth(g).map_err(|source| ClientError::AuthProtocol {
        user: user.to_owned(),
        source,
    })?;
    authenticate(stream, buf, &mut out, &auth, user).await?;
    encode::auth_ok(&mut out);
    for (k, v) in [
        ("server_version", "15.0 (Ocelot admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", application_name),
    ] {
        encode::parameter_status(&mut out, k, v);
    }
    encode::backend_key_data(&mut out, 0, 0);
    encode::ready_for_query(&mut out, txn::IDLE);
    stream.write_all(&out).await?;
    Ok(())
}

/// Authenticates a user against the secret `auth_query` fetches, and returns its pool.
async fn auth_query_login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    snapshot: &crate::shared::Snapshot,
    aq: &super::auth_query::AuthQuery<'_>,
    database: &str,
    user: &str,
) -> Result<Arc<UserPool>, ClientError> {
    let c = &snapshot.cluster;
    // An unknown user fails like a wrong password, as PostgreSQL does, to not reveal who exists.
    let secret = super::auth_query::fetch(c, &snapshot.config, database, aq, user)
        .await
        .map_err(ClientError::AuthQueryFailed)?
        .ok_or_else(|| ClientError::WrongPassword(user.to_owned()))?;
    let auth =
        ClientAuth::for_secret(secret.clone()).map_err(|source| ClientError::AuthProtocol {
            user: user.to_owned(),
            source,
        })?;
    let keys = authenticate(stream, buf, out, &auth, user).await?;
    let server_secret = match (secret, keys) {
        (Secret::Scram(_), Some(keys)) => Secret::ScramKeys(keys),
        (secret, _) => secret,
    };
    let pool = c
        .dynamic_pool(&snapshot.config, database, user, auth, server_secret)
        .map_err(|source| ClientError::AuthProtocol {
            user: user.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// md5 for a user with a password in the config, where `auth_query` is also set: a response that does not match
/// the configured password is checked against the secret the auth query fetches now, as PgCat refetches, so a
/// password changed on the server is the one that works (the pool then logs in to servers with the new secret).
#[allow(clippy::too_many_arguments)] // one login's state, passed down once
async fn md5_with_refetch(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    snapshot: &crate::shared::Snapshot,
    aq: &super::auth_query::AuthQuery<'_>,
    configured: &Arc<UserPool>,
    database: &str,
    user: &str,
) -> Result<Arc<UserPool>, ClientError> {
    let salt: [u8; 4] = rand::rng().random();
    encode::auth_md5(out, salt);
    flush(stream, out).await?;
    let body = read_password_message(stream, buf).await?;
    let response = decode::password(&body)?;
    if let Some(secret) = &configured.auth.secret {
        if md5::verify(secret, user, salt, response) {
            return Ok(configured.clone());
        }
    }
    let c = &snapshot.cluster;
    let fetched = super::auth_query::fetch(c, &snapshot.config, database, aq, user)
        .await
        .map_err(ClientError::AuthQueryFailed)?;
    let secret = fetched
        .filter(|s| md5::verify(s, user, salt, response))
        .ok_or_else(|| ClientError::WrongPassword(user.to_owned()))?;
    tracing::info!(
        user,
        database,
        "password changed on the server: using the one auth_query fetched"
    );
    let auth =
        ClientAuth::for_secret(secret.clone()).map_err(|source| ClientError::AuthProtocol {
            user: user.to_owned(),
            source,
        })?;
    c.dynamic_pool(&snapshot.config, database, user, auth, secret)
        .map_err(|source| ClientError::AuthProtocol {
            user: user.to_owned(),
            source,
        })
}

async fn server_defaults(pool: &UserPool) -> Result<Arc<ServerParams>, ClientError> {
    if let Some(d) = pool.server_pools().find_map(|s| s.server_defaults()) {
        return Ok(d);
    }
    // Any healthy server will do: a primary that is down must not stop clients that only read.
    let conn = pool.checkout(0, Want::Any, true).await?;
    let defaults = conn.pool().server_defaults().unwrap_or_default();
    drop(conn);
    Ok(defaults)
}

async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    auth: &ClientAuth,
    user: &str,
) -> Result<Option<ScramKeys>, ClientError> {
    let wrong = || ClientError::WrongPassword(user.to_owned());
    match auth.auth_type {
        AuthType::Trust => Ok(None),
        AuthType::Md5 => {
            let salt: [u8; 4] = rand::rng().random();
            encode::auth_md5(out, salt);
            flush(stream, out).await?;
            let body = read_password_message(stream, buf).await?;
            let response = decode::password(&body)?;
            match &auth.secret {
                Some(secret) if md5::verify(secret, user, salt, response) => Ok(None),
                _ => Err(wrong()),
            }
        }
        AuthType::ScramSha256 => {
            let Some(verifier) = auth.scram.clone() else {
                return Err(wrong());
            };
            let auth_err = |source: AuthError| match source {
                AuthError::WrongPassword => wrong(),
                source => ClientError::AuthProtocol {
                    user: user.to_owned(),
                    source,
                },
            };
            encode::auth_sasl(out, &[scram::MECHANISM]);
            flush(stream, out).await?;
            let body = read_password_message(stream, buf).await?;
            let (mechanism, first) = decode::sasl_initial_response(&body)?;
            if mechanism != scram::MECHANISM {
                return Err(ClientError::AuthProtocol {
                    user: user.to_owned(),
                    source: AuthError::Unsupported("only SCRAM-SHA-256 is offered"),
                });
            }
            let mut server = ScramServer::new(verifier);
            let server_first = server.client_first(first).map_err(auth_err)?;
            encode::auth_sasl_continue(out, server_first.as_bytes());
            flush(stream, out).await?;
            let body = read_password_message(stream, buf).await?;
            let server_final = server.client_final(&body).map_err(auth_err)?;
            encode::auth_sasl_final(out, server_final.as_bytes());
            Ok(server.keys())
        }
    }
}

async fn flush(stream: &mut Stream, out: &mut BytesMut) -> Result<(), ClientError> {
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

async fn read_password_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<bytes::Bytes, ClientError> {
    let (code, body) = read_message(stream, buf, MAX_AUTH_MESSAGE).await?;
    if code != frontend::PASSWORD {
        return Err(ProtocolError::Unexpected {
            got: code as char,
            expected: "a password message",
        }
        .into());
    }
    Ok(body)
}
