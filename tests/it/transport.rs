//! Transports: client-facing TLS (optional and required) checked with libpq's sslmode=require and verify-full,
//! TLS to servers with and without certificate verification, and the Unix-domain socket listener. Certificates
//! are made by the test with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A test CA and a server certificate for localhost and 127.0.0.1, in a temp dir removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Certs {
        let dir = std::env::temp_dir().join(format!("ocelot-certs-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let sh = |script: &str| {
            let (ok, _, err) = run_tool({
                let mut c = Command::new("sh");
                c.current_dir(&dir).args(["-c", script]);
                c
            });
            assert!(ok, "{script}: {err}");
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=Ocelot test CA' 2>/dev/null");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost' 2>/dev/null");
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext 2>/dev/null");
        Certs { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Turns TLS on in `pg` with the test server certificate.
fn enable_server_ssl(pg: &Postgres, certs: &Certs) {
    for f in ["server.crt", "server.key"] {
        let to = pg.data.join(f);
        std::fs::copy(certs.dir.join(f), &to).unwrap();
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&to)
            .status();
        let _ = Command::new("chmod").arg("600").arg(&to).status();
    }
    pg.psql_admin("ALTER SYSTEM SET ssl = on");
    pg.psql_admin("SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// psql with a libpq connection string: (success, stdout, stderr).
fn psql_conn(conninfo: &str, command: &str) -> (bool, String, String) {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        conninfo,
        "-c",
        command,
    ]);
    run_tool(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_optional_then_required() {
    let certs = Certs::make();
    let pg = Postgres::start();
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"",
        certs.path("server.crt"),
        certs.path("server.key")
    );
    let proxy = start_proxy(&config_toml(pg.port, 2, &tls, "")).await;
    let port = proxy.local_addr().port();
    let base = format!("host=127.0.0.1 port={port} dbname=app user=postgres");
    let (ok, out, err) = psql_conn(&format!("{base} sslmode=require"), "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out} {err}");
    for host in ["127.0.0.1", "localhost"] {
        let conninfo = format!(
            "host={host} port={port} dbname=app user=postgres sslmode=verify-full sslrootcert={}",
            certs.path("ca.crt")
        );
        let (ok, out, err) = psql_conn(&conninfo, "SELECT 40 + 2");
        assert!(ok && out.trim() == "42", "{host}: {out} {err}");
    }
    // TLS is optional here: plain text still works.
    let (ok, out, err) = psql_conn(&format!("{base} sslmode=disable"), "\\conninfo");
    assert!(ok && !out.contains("SSL connection"), "{out} {err}");
    // A client that trusts another CA refuses Ocelot's certificate.
    let (ok, _, err) = psql_conn(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.path("server.crt")
        ),
        "SELECT 1",
    );
    assert!(!ok, "{err}");

    // Required: plain TCP clients are refused with a clear error; TLS and Unix-socket clients get in.
    let sock_dir = std::env::temp_dir().join(format!("ocelot-sock-{}", free_port()));
    std::fs::create_dir_all(&sock_dir).unwrap();
    let required = format!(
        "{tls}\ntls_required = true\nunix_socket_dir = \"{}\"",
        sock_dir.display()
    );
    let proxy = start_proxy(&config_toml(pg.port, 2, &required, "")).await;
    let port = proxy.local_addr().port();
    let base = format!("host=127.0.0.1 port={port} dbname=app user=postgres");
    let (ok, _, err) = psql_conn(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok && err.contains("TLS is required"), "{err}");
    let (ok, out, err) = psql_conn(&format!("{base} sslmode=prefer"), "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out} {err}");
    let socket = proxy.unix_socket().expect("unix socket").to_owned();
    assert_eq!(
        socket,
        Path::new(&sock_dir).join(format!(".s.PGSQL.{port}"))
    );
    let (ok, out, err) = psql_conn(
        &format!(
            "host={} port={port} dbname=app user=postgres",
            sock_dir.display()
        ),
        "SELECT 'over the socket'",
    );
    assert!(ok && out.trim() == "over the socket", "{out} {err}");
    proxy.shutdown().await;
    assert!(!socket.exists(), "the socket file is removed at shutdown");
    let _ = std::fs::remove_dir_all(&sock_dir);
}

/// PgCat's own test key is PKCS#8 under an "RSA PRIVATE KEY" label; PgCat loads it, so Ocelot must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_with_a_mislabelled_pkcs8_key() {
    let certs = Certs::make();
    let pem = std::fs::read_to_string(certs.dir.join("server.key")).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY"), "openssl writes PKCS#8");
    let relabelled = pem.replace("PRIVATE KEY", "RSA PRIVATE KEY");
    std::fs::write(certs.dir.join("mislabelled.key"), relabelled).unwrap();
    let pg = Postgres::start();
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"",
        certs.path("server.crt"),
        certs.path("mislabelled.key")
    );
    let proxy = start_proxy(&config_toml(pg.port, 2, &tls, "")).await;
    let port = proxy.local_addr().port();
    let base = format!("host=127.0.0.1 port={port} dbname=app user=postgres");
    let (ok, out, err) = psql_conn(&format!("{base} sslmode=require"), "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_with_and_without_verification() {
    let certs = Certs::make();
    let pg = Postgres::start();
    enable_server_ssl(&pg, &certs);
    let ssl_in_use = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (general, want) in [
        (String::new(), "false"),
        ("server_tls = true".to_owned(), "true"),
        (
            format!(
                "server_tls = true\nverify_server_certificate = true\nserver_tls_ca_file = \"{}\"",
                certs.path("ca.crt")
            ),
            "true",
        ),
    ] {
        let proxy = start_proxy(&config_toml(pg.port, 2, &general, "")).await;
        let c = connect(proxy.local_addr().port(), "postgres", None, "app")
            .await
            .unwrap_or_else(|e| panic!("{general}: {e}"));
        assert_eq!(first_value(&c, ssl_in_use).await, want, "{general}");
        // md5 and SCRAM logins to the server work over TLS too.
        let m = connect(
            proxy.local_addr().port(),
            MD5_USER.0,
            Some(MD5_USER.1),
            "app",
        )
        .await
        .unwrap();
        assert_eq!(first_value(&m, ssl_in_use).await, want, "{general}");
    }
    // Verification against the system's roots fails: the test CA is not among them.
    let general = "server_tls = true\nverify_server_certificate = true";
    let proxy = start_proxy(&config_toml(pg.port, 2, general, "")).await;
    let e = connect(proxy.local_addr().port(), "postgres", None, "app")
        .await
        .map(|_| ())
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}
