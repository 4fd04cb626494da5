//! md5 password authentication: `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
//! <https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.3>

use md5::{Digest, Md5};

use super::{constant_time_eq, Secret};

/// The response a client must send for `secret`, `user` and `salt`; `None` when the secret is a SCRAM verifier.
pub fn expected_response(secret: &Secret, user: &str, salt: [u8; 4]) -> Option<String> {
    match secret {
        Secret::Plain(p) => Some(postgres_protocol::authentication::md5_hash(
            user.as_bytes(),
            p.as_bytes(),
            salt,
        )),
        Secret::Md5Hash(h) => Some(salted(&h.as_bytes()[3..], salt)),
        Secret::Scram(_) | Secret::ScramKeys(_) => None,
    }
}

/// The second md5 round over an already hashed `hex(md5(password + user))`, so a stored hash works towards a server
/// too (pass-the-hash, as PostgreSQL's own md5 protocol allows).
pub(crate) fn salted(inner_hex: &[u8], salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(inner_hex);
    h.update(salt);
    let digest = h.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether a client's md5 response proves `secret`.
pub fn verify(secret: &Secret, user: &str, salt: [u8; 4], response: &str) -> bool {
    expected_response(secret, user, salt)
        .is_some_and(|e| constant_time_eq(e.as_bytes(), response.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_secrets_agree() {
        let salt = [1, 2, 3, 4];
        let plain = Secret::Plain("secret".into());
        let hashed = Secret::parse(&postgres_protocol::password::md5(b"secret", "bob"));
        let a = expected_response(&plain, "bob", salt).unwrap();
        let b = expected_response(&hashed, "bob", salt).unwrap();
        assert_eq!(a, b);
        assert!(verify(&plain, "bob", salt, &a));
        assert!(!verify(&plain, "bob", [9, 9, 9, 9], &a));
        assert!(!verify(&plain, "eve", salt, &a));
    }
}
