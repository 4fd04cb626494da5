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
use ocelot_net::{configure_server_socket, read_message, NetError, Stream};
use ocelot_protocol::auth::{md5, scram, ScramKeyClient, Secret};
use ocelot_protocol::codes::backend;
use ocelot_protocol::decode::{self, AuthRequest};
use ocelot_protocol::encode;

/// Who Ocelot logs in as on the server, and over what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCredentials {
    pub user: String,
    pub password: Option<Secret>,
    pub tls: ServerTls,
}

/// `server_tls`, `verify_server_certificate` and `server_tls_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTls {
    pub enabled: bool,
    pub verify: bool,
    pub ca_file: Option<String>,
}

/// Asks the server for TLS (SSLRequest) and does the handshake. A server that declines is used in plain text
/// unless its certificate must be verified, which then fails.
async fn start_tls(
    mut tcp: TcpStream,
    tls: &ServerTls,
    address: &Address,
) -> std::io::Result<Stream> {
    use tokio::io::AsyncReadExt;
    let mut req = BytesMut::with_capacity(8);
    encode::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let connector = ocelot_net::tls::connector(tls.verify, tls.ca_file.as_deref())
                .map_err(std::io::Error::other)?;
            let name =
                ocelot_net::tls::server_name(&address.host).map_err(std::io::Error::other)?;
            let s = connector.connect(name, tcp).await?;
            Ok(Stream::TlsClient(Box::new(s)))
        }
        b'N' if !tls.verify => {
            tracing::warn!(server = %address, "server_tls: the server does not offer TLS; going on in plain text");
            Ok(Stream::Tcp(tcp))
        }
        b'N' => Err(std::io::Error::other(
            "the server does not offer TLS and verify_server_certificate is on",
        )),
        other => Err(std::io::Error::other(format!(
            "unexpected answer {:?} to SSLRequest",
            other as char
        ))),
    }
}

/// Connects and authenticates to the server of `address`. The caller applies the connect timeout.
pub(crate) async fn connect(
    address: Arc<Address>,
    creds: &ServerCredentials,
    max_message: u32,
    keepalive: ocelot_net::Keepalive,
) -> Result<ServerConn, PoolError> {
    let server = || address.to_string();
    let (mut stream, handle) = open_stream(&address, creds, keepalive).await?;
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
    let mut scram_client: Option<ScramClient> = None;
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
                    fields: Box::new(decode::error_fields(&body).map_err(proto)?),
                })
            }
            backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
            backend::READY_FOR_QUERY => break,
            other => {
                return Err(proto(ocelot_protocol::ProtocolError::Unexpected {
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
    let conn = ServerConn::new(stream, rbuf, params, cancel, address, max_message);
    if let Some(h) = handle {
        let _ = conn.info.socket.set(h);
    }
    Ok(conn)
}

/// Opens the TCP connection (and TLS when configured), with a second handle on the socket for
/// reading its state later.
async fn open_stream(
    address: &Address,
    creds: &ServerCredentials,
    keepalive: ocelot_net::Keepalive,
) -> Result<(Stream, Option<std::net::TcpStream>), PoolError> {
    let server = || address.to_string();
    let tcp = TcpStream::connect((address.host.as_str(), address.port))
        .await
        .map_err(|source| PoolError::Connect {
            server: server(),
            source,
        })?;
    configure_server_socket(&tcp, keepalive);
    let handle = std::os::fd::AsFd::as_fd(&tcp)
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from);
    let stream = if creds.tls.enabled {
        start_tls(tcp, &creds.tls, address)
            .await
            .map_err(|source| PoolError::Connect {
                server: server(),
                source,
            })?
    } else {
        Stream::Tcp(tcp)
    };
    Ok((stream, handle))
}

async fn write(
    stream: &mut Stream,
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

/// A SCRAM exchange with a server: from a cleartext password, or from a client's keys (`auth_query` users).
enum ScramClient {
    Password(ScramSha256),
    Keys(ScramKeyClient),
}

impl ScramClient {
    fn message(&self) -> &[u8] {
        match self {
            ScramClient::Password(c) => c.message(),
            ScramClient::Keys(c) => c.message(),
        }
    }

    fn update(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            ScramClient::Password(c) => c.update(data).map_err(|e| e.to_string()),
            ScramClient::Keys(c) => c.update(data).map_err(|e| e.to_string()),
        }
    }

    fn finish(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            ScramClient::Password(c) => c.finish(data).map_err(|e| e.to_string()),
            ScramClient::Keys(c) => c.finish(data).map_err(|e| e.to_string()),
        }
    }
}

/// The message answering one authentication request, if any.
fn auth_reply(
    req: AuthRequest<'_>,
    creds: &ServerCredentials,
    scram_client: &mut Option<ScramClient>,
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
            let client = match &creds.password {
                Some(Secret::Plain(p)) => ScramClient::Password(ScramSha256::new(
                    p.as_bytes(),
                    ChannelBinding::unsupported(),
                )),
                Some(Secret::ScramKeys(k)) => ScramClient::Keys(ScramKeyClient::new(k.clone())),
                _ => return Err(cannot("SCRAM-SHA-256 (needs a cleartext server_password)")),
            };
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
