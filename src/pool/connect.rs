//! Opening a server connection: TCP connect, StartupMessage, whatever authentication the server asks for
//! (trust, cleartext, md5, SCRAM-SHA-256), then ParameterStatus and BackendKeyData up to the first ReadyForQuery.
//! <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-START-UP>

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::server::CancelTarget;
use super::{Address, PoolError, ServerConn, ServerParams};
use crate::net::{configure_server_socket, read_message, NetError};
use crate::protocol::auth::{md5, scram, Secret};
use crate::protocol::codes::backend;
use crate::protocol::decode::{self, AuthRequest};
use crate::protocol::encode;

/// Who Ocelot logs in as on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCredentials {
    pub user: String,
    pub password: Option<Secret>,
}

/// Connects and authenticates to the server of `address`. The caller applies the connect timeout.
pub async fn connect(
    address: Arc<Address>,
    creds: &ServerCredentials,
    max_message: u32,
) -> Result<ServerConn, PoolError> {
    let server = || address.to_string();
    let mut stream = TcpStream::connect((address.host.as_str(), address.port))
        .await
        .map_err(|source| PoolError::Connect {
            server: server(),
            source,
        })?;
    configure_server_socket(&stream);
    let mut out = BytesMut::with_capacity(128);
    encode::startup_message(
        &mut out,
        [
            ("user", creds.user.as_str()),
            ("database", address.database.as_str()),
        ],
    );
    write(&mut stream, &mut out, &address).await?;

    let mut rbuf = BytesMut::with_capacity(8192);
    let mut params = ServerParams::default();
    let mut key = None;
    let mut scram_client: Option<ScramSha256> = None;
    loop {
        let (code, body) = read_message(&mut stream, &mut rbuf, max_message)
            .await
            .map_err(|e| net_error(e, &address))?;
        let proto = |source| PoolError::Protocol {
            server: server(),
            source,
        };
        match code {
            backend::AUTHENTICATION => {
                let req = decode::auth_request(&body).map_err(proto)?;
                if let Some(reply) = auth_reply(req, creds, &mut scram_client, &address)? {
                    out.extend_from_slice(&reply);
                    write(&mut stream, &mut out, &address).await?;
                }
            }
            backend::PARAMETER_STATUS => {
                let (k, v) = decode::parameter_status(&body).map_err(proto)?;
                params.set(k, v);
            }
            backend::BACKEND_KEY_DATA => {
                key = Some(decode::backend_key_data(&body).map_err(proto)?)
            }
            backend::ERROR_RESPONSE => {
                return Err(PoolError::LoginRejected {
                    server: server(),
                    fields: decode::error_fields(&body).map_err(proto)?,
                })
            }
            backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
            backend::READY_FOR_QUERY => break,
            other => {
                return Err(proto(crate::protocol::ProtocolError::Unexpected {
                    got: other as char,
                    expected: "a startup reply",
                }))
            }
        }
    }
    let (pid, secret) = key.unwrap_or((0, 0));
    let cancel = CancelTarget {
        host: address.host.clone(),
        port: address.port,
        pid,
        secret,
    };
    Ok(ServerConn::new(
        stream,
        rbuf,
        params,
        cancel,
        address,
        max_message,
    ))
}

async fn write(
    stream: &mut TcpStream,
    out: &mut BytesMut,
    address: &Address,
) -> Result<(), PoolError> {
    let r = stream.write_all(out).await;
    out.clear();
    r.map_err(|e| PoolError::Lost {
        server: address.to_string(),
        reason: e.to_string(),
    })
}

fn net_error(e: NetError, address: &Address) -> PoolError {
    let server = address.to_string();
    match e {
        NetError::Protocol(source) => PoolError::Protocol { server, source },
        NetError::Closed => PoolError::Lost {
            server,
            reason: "server closed the connection during login".into(),
        },
        NetError::Io(e) => PoolError::Lost {
            server,
            reason: e.to_string(),
        },
    }
}

/// The message answering one authentication request, if any.
fn auth_reply(
    req: AuthRequest<'_>,
    creds: &ServerCredentials,
    scram_client: &mut Option<ScramSha256>,
    address: &Address,
) -> Result<Option<BytesMut>, PoolError> {
    let cannot = |method: &str| PoolError::Auth {
        server: address.to_string(),
        method: method.to_owned(),
    };
    let mut out = BytesMut::new();
    match req {
        AuthRequest::Ok => return Ok(None),
        AuthRequest::Cleartext => match &creds.password {
            Some(Secret::Plain(p)) => encode::password(&mut out, p.as_bytes()),
            _ => {
                return Err(cannot(
                    "cleartext password (needs a cleartext server_password)",
                ))
            }
        },
        AuthRequest::Md5 { salt } => {
            let resp = creds
                .password
                .as_ref()
                .and_then(|s| md5::expected_response(s, &creds.user, salt))
                .ok_or_else(|| cannot("md5 (needs a password or md5 hash)"))?;
            encode::password(&mut out, resp.as_bytes());
        }
        AuthRequest::Sasl { mechanisms } => {
            if !mechanisms.contains(&scram::MECHANISM) {
                return Err(cannot(&format!("SASL {mechanisms:?}")));
            }
            let Some(Secret::Plain(p)) = &creds.password else {
                return Err(cannot("SCRAM-SHA-256 (needs a cleartext server_password)"));
            };
            let client = ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported());
            encode::sasl_initial_response(&mut out, scram::MECHANISM, client.message());
            *scram_client = Some(client);
        }
        AuthRequest::SaslContinue(data) => {
            let client = scram_client
                .as_mut()
                .ok_or_else(|| cannot("SASL out of order"))?;
            client
                .update(data)
                .map_err(|e| cannot(&format!("SCRAM-SHA-256 ({e})")))?;
            encode::sasl_response(&mut out, client.message());
        }
        AuthRequest::SaslFinal(data) => {
            let client = scram_client
                .as_mut()
                .ok_or_else(|| cannot("SASL out of order"))?;
            client
                .finish(data)
                .map_err(|e| cannot(&format!("SCRAM-SHA-256 server proof ({e})")))?;
            return Ok(None);
        }
        AuthRequest::Other(code) => return Err(cannot(&format!("method {code}"))),
    }
    Ok(Some(out))
}
