//! TLS with rustls (ring provider): the acceptor for clients (`tls_certificate`, `tls_private_key`) and the
//! connector to servers (`server_tls`, checked against the system's roots, or `server_tls_ca_file`, when
//! `verify_server_certificate` is on; accepting any certificate when it is off, as PgCat does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no usable root certificate for verify_server_certificate: {0}")]
    Roots(String),
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(ring::default_provider())).clone()
}

fn pem_err(what: &'static str, path: &str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_owned();
    move |e| TlsError::Pem {
        what,
        path: path.clone(),
        reason: e.to_string(),
    }
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err("certificate", path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err("certificate", path))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The acceptor for client connections.
pub fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    let certs = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err("private key", key))?;
    // A PKCS#8 key under a PKCS#1 label ("RSA PRIVATE KEY"; PgCat's own test key is one) loads as what it is,
    // as PgCat's older rustls tried both.
    let key = match key {
        PrivateKeyDer::Pkcs1(k)
            if provider()
                .key_provider
                .load_private_key(k.clone_key().into())
                .is_err() =>
        {
            PrivateKeyDer::Pkcs8(k.secret_pkcs1_der().to_vec().into())
        }
        key => key,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connector to servers, built once per (verify, CA file) and shared.
pub fn connector(verify: bool, ca_file: Option<&str>) -> Result<TlsConnector, TlsError> {
    type Cache = Mutex<HashMap<(bool, Option<String>), TlsConnector>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (verify, ca_file.map(str::to_owned));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for c in certificates(path)? {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::Roots(format!("{path}: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Roots(
                        "the system has no CA certificates; set server_tls_ca_file".into(),
                    ));
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    };
    let c = TlsConnector::from(Arc::new(config));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, c.clone());
    Ok(c)
}

/// The name a server's certificate is checked against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| TlsError::Roots(format!("invalid server name {host}: {e}")))
}

/// `verify_server_certificate = false`: encryption without authentication of the server. Signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
