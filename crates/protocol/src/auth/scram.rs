//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it: no channel binding without TLS, the
//! user name in the client-first-message ignored (the startup packet names the user).
//! <https://www.postgresql.org/docs/15/sasl-authentication.html>

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthError};

pub const MECHANISM: &str = "SCRAM-SHA-256";

type HmacSha256 = Hmac<Sha256>;

/// What the server stores for a user: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramVerifier(<redacted>)")
    }
}

fn key32(b64: &str) -> Result<[u8; 32], AuthError> {
    let v = B64
        .decode(b64)
        .map_err(|_| AuthError::Malformed("verifier key is not base64"))?;
    v.try_into()
        .map_err(|_| AuthError::Malformed("verifier key is not 32 bytes"))
}

impl ScramVerifier {
    /// Parses PostgreSQL's verifier format (as in `pg_authid.rolpassword`).
    pub fn parse(s: &str) -> Result<ScramVerifier, AuthError> {
        let bad = AuthError::Malformed("not a SCRAM-SHA-256 verifier");
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or(bad.clone())?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(bad.clone())?;
        let (iter, salt) = iter_salt.split_once(':').ok_or(bad.clone())?;
        let (stored, server) = keys.split_once(':').ok_or(bad.clone())?;
        Ok(ScramVerifier {
            iterations: iter.parse().map_err(|_| bad)?,
            salt: B64
                .decode(salt)
                .map_err(|_| AuthError::Malformed("verifier salt is not base64"))?,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // A key of any length is valid for HMAC, so new_from_slice cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

enum State {
    Initial,
    SentFirst {
        client_first_bare: String,
        server_first: String,
        nonce: String,
        gs2_header: String,
    },
    Done,
}

/// One SCRAM exchange with one client.
pub struct ScramServer {
    verifier: ScramVerifier,
    state: State,
    /// The client's ClientKey, known once its proof checked out.
    client_key: Option<[u8; 32]>,
}

impl ScramServer {
    pub fn new(verifier: ScramVerifier) -> Self {
        ScramServer {
            verifier,
            state: State::Initial,
            client_key: None,
        }
    }

    /// After a successful exchange: the keys that log in, as this client, to a server holding the same verifier.
    pub fn keys(&self) -> Option<ScramKeys> {
        self.client_key.map(|client_key| ScramKeys {
            client_key,
            server_key: self.verifier.server_key,
        })
    }

    /// Takes the client-first-message and returns the server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<String, AuthError> {
        let msg = std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        // gs2-header: "n,," (no channel binding) or "y,," (client supports it, we offered none); "p=" needs TLS.
        let (gs2_header, bare) = if let Some(b) = msg.strip_prefix("n,") {
            ("n,", b)
        } else if let Some(b) = msg.strip_prefix("y,") {
            ("y,", b)
        } else {
            return Err(AuthError::Unsupported(
                "channel binding is not supported without TLS",
            ));
        };
        let (authzid, bare) = bare
            .split_once(',')
            .ok_or(AuthError::Malformed("missing gs2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::Unsupported(
                "authorization identities are not supported",
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(AuthError::Malformed("missing client nonce"))?;
        let mut raw = [0u8; 18];
        rand::rng().fill_bytes(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.state = State::SentFirst {
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: format!("{gs2_header},"),
        };
        Ok(server_first)
    }

    /// Takes the client-final-message, checks the proof, and returns the server-final-message.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<String, AuthError> {
        let State::SentFirst {
            client_first_bare,
            server_first,
            nonce,
            gs2_header,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::Malformed("unexpected SCRAM message"));
        };
        let msg = std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Malformed("missing proof"))?;
        let mut binding = None;
        let mut got_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                got_nonce = Some(r);
            }
        }
        if binding != Some(B64.encode(gs2_header.as_bytes()).as_str()) {
            return Err(AuthError::Malformed("channel binding mismatch"));
        }
        if got_nonce != Some(nonce.as_str()) {
            return Err(AuthError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| AuthError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(AuthError::Malformed("proof is not 32 bytes"));
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&stored, &self.verifier.stored_key) {
            return Err(AuthError::WrongPassword);
        }
        self.client_key = client_key.try_into().ok();
        let server_sig = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_sig)))
    }
}

/// A user's SCRAM keys as a successful client exchange reveals them: enough to log in to a server that holds the
/// same verifier, without the password (PgBouncer's SCRAM pass-through, used with `auth_query`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramKeys(<redacted>)")
    }
}

/// The client side of SCRAM-SHA-256 from [`ScramKeys`]: the server's salt and iteration count are not needed,
/// since ClientKey is what the password would be derived into.
pub struct ScramKeyClient {
    keys: ScramKeys,
    nonce: String,
    message: String,
    auth_message: String,
}

impl ScramKeyClient {
    pub fn new(keys: ScramKeys) -> Self {
        let mut raw = [0u8; 18];
        rand::rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        ScramKeyClient {
            keys,
            message: format!("n,,n=,r={nonce}"),
            nonce,
            auth_message: String::new(),
        }
    }

    /// The next message to send.
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Takes the server-first-message and prepares the client-final-message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), AuthError> {
        let sf =
            std::str::from_utf8(server_first).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let nonce = sf
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|r| r.starts_with(&self.nonce))
            .ok_or(AuthError::Malformed("server nonce does not extend ours"))?;
        let without_proof = format!("c=biws,r={nonce}");
        let client_first_bare = &self.message[3..];
        self.auth_message = format!("{client_first_bare},{sf},{without_proof}");
        let stored: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored, &[self.auth_message.as_bytes()]);
        let proof: Vec<u8> = self
            .keys
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.message = format!("{without_proof},p={}", B64.encode(proof));
        Ok(())
    }

    /// Checks the server-final-message: the server proves it knows the verifier too.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), AuthError> {
        let sf =
            std::str::from_utf8(server_final).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let v = sf
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(AuthError::Malformed("missing server signature"))?;
        let expected = hmac(&self.keys.server_key, &[self.auth_message.as_bytes()]);
        if constant_time_eq(&v, &expected) {
            Ok(())
        } else {
            Err(AuthError::WrongPassword)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(server_pw: &str, client_pw: &str) -> Result<(), AuthError> {
        let verifier = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
            server_pw.as_bytes(),
        ))
        .unwrap();
        let mut server = ScramServer::new(verifier);
        let mut client = ScramSha256::new(client_pw.as_bytes(), ChannelBinding::unsupported());
        let first = server.client_first(client.message())?;
        client.update(first.as_bytes()).unwrap();
        let fin = server.client_final(client.message())?;
        client.finish(fin.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn real_client_authenticates() {
        exchange("s3cret", "s3cret").unwrap();
    }

    #[test]
    fn keys_from_a_client_exchange_log_in_to_the_same_verifier() {
        let verifier_text = postgres_protocol::password::scram_sha_256(b"s3cret");
        let verifier = ScramVerifier::parse(&verifier_text).unwrap();
        let mut front = ScramServer::new(verifier.clone());
        let mut client = ScramSha256::new(b"s3cret", ChannelBinding::unsupported());
        let first = front.client_first(client.message()).unwrap();
        client.update(first.as_bytes()).unwrap();
        front.client_final(client.message()).unwrap();
        let keys = front.keys().expect("keys after success");
        // Ocelot, with only the keys, against a server holding the verifier.
        let mut back = ScramServer::new(verifier);
        let mut ours = ScramKeyClient::new(keys.clone());
        let first = back.client_first(ours.message()).unwrap();
        ours.update(first.as_bytes()).unwrap();
        let fin = back.client_final(ours.message()).unwrap();
        ours.finish(fin.as_bytes()).unwrap();
        // Against another password's verifier they fail.
        let other =
            ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"x")).unwrap();
        let mut back = ScramServer::new(other);
        let mut ours = ScramKeyClient::new(keys);
        let first = back.client_first(ours.message()).unwrap();
        ours.update(first.as_bytes()).unwrap();
        assert_eq!(
            back.client_final(ours.message()),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn wrong_password_is_rejected() {
        assert_eq!(exchange("s3cret", "nope"), Err(AuthError::WrongPassword));
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        let v = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"x")).unwrap();
        let mut s = ScramServer::new(v.clone());
        assert!(s.client_first(b"p=tls-server-end-point,,n=,r=abc").is_err());
        assert!(s.client_first(b"n,,n=").is_err());
        assert!(s.client_final(b"c=biws,r=x,p=AAAA").is_err());
        let mut s = ScramServer::new(v);
        s.client_first(b"n,,n=,r=abc").unwrap();
        assert!(s.client_final(b"c=biws,r=abc,p=!!").is_err());
        assert!(ScramVerifier::parse("SCRAM-SHA-256$x").is_err());
    }
}
