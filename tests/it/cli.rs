//! The `ocelot` binary: config checking and exit codes, PgCat's flags, and SIGINT/SIGTERM shutdown.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ocelot");

fn write_config(text: &str) -> tempfile_path::Path {
    tempfile_path::Path::new(text)
}

/// A config file in a temp dir, removed on drop.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn new(text: &str) -> Path {
            let p = std::env::temp_dir().join(format!(
                "ocelot-cli-{}-{}.toml",
                std::process::id(),
                super::free_port()
            ));
            std::fs::write(&p, text).expect("write config");
            Path(p)
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn check_accepts_valid_and_warns_about_unknown_keys() {
    let cfg = write_config(&config_toml(5432, 2, "mystery_key = 1", ""));
    let out = Command::new(BIN)
        .arg("--check")
        .arg(&cfg.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("general.mystery_key"));
    // The repository's example config is valid too.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/pgcat.toml");
    assert!(Command::new(BIN)
        .args(["--check", example])
        .status()
        .unwrap()
        .success());
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let cfg = write_config(&config_toml(5432, 2, "", "pool_mode = \"statement\""));
    let out = Command::new(BIN)
        .arg("--check")
        .arg(&cfg.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pools.app.pool_mode"), "{err}");
    // The same when starting for real, with the path from CONFIG_FILE and PgCat's flags.
    let out = Command::new(BIN)
        .args(["-l", "debug", "-F", "structured", "-n"])
        .env("CONFIG_FILE", &cfg.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .arg("/nonexistent/pgcat.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn spawn(cfg: &tempfile_path::Path) -> Child {
    Command::new(BIN)
        .arg(&cfg.0)
        .args(["-l", "info"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_connect(port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(port, "postgres", None, "app").await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("ocelot did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn sigint_lets_transactions_finish_then_exits() {
    let pg = Postgres::start();
    let port = free_port();
    let toml = config_toml(pg.port, 2, "shutdown_timeout = 10000", "")
        .replace("port = 0", &format!("port = {port}"));
    let cfg = write_config(&toml);
    let mut child = spawn(&cfg);
    let mut in_tx = wait_connect(port).await;
    let idle = wait_connect(port).await;
    in_tx.simple_query("CREATE TABLE s (x int)").await.unwrap();
    let tx = in_tx.transaction().await.unwrap();
    tx.simple_query("INSERT INTO s VALUES (1)").await.unwrap();
    signal(&child, "INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused; the idle client was disconnected; the open transaction still commits.
    let e = connect(port, "postgres", None, "app").await.unwrap_err();
    let code = e.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("57P03"), "{e}");
    // The admin console still opens (PgCat's test_shutdown_logic), and does not hold up the exit.
    let admin = connect(port, "admin", Some("admin"), "pgcat")
        .await
        .unwrap();
    assert!(!admin
        .simple_query("SHOW DATABASES")
        .await
        .unwrap()
        .is_empty());
    assert!(idle.simple_query("SELECT 1").await.is_err());
    tx.simple_query("INSERT INTO s VALUES (2)").await.unwrap();
    tx.commit().await.unwrap();
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("exited after the last transaction");
    assert!(status.success());
    assert_eq!(pg.psql_admin_db("app", "SELECT count(*) FROM s"), "2");
}

#[tokio::test]
async fn sigint_gives_up_after_shutdown_timeout_and_sigterm_is_immediate() {
    let pg = Postgres::start();
    let port = free_port();
    let toml = config_toml(pg.port, 2, "shutdown_timeout = 500", "")
        .replace("port = 0", &format!("port = {port}"));
    let cfg = write_config(&toml);
    let mut child = spawn(&cfg);
    let mut c = wait_connect(port).await;
    let tx = c.transaction().await.unwrap();
    tx.simple_query("SELECT 1").await.unwrap();
    let started = Instant::now();
    signal(&child, "INT");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("exited after shutdown_timeout");
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_millis(400));
    drop(tx);

    let mut child = spawn(&cfg);
    let mut c = wait_connect(port).await;
    let _tx = c.transaction().await.unwrap();
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(status.is_some(), "SIGTERM exits at once");
    let _ = std::io::stdout().flush();
}

/// `pool_size` of `user`'s first server as SHOW DATABASES reports it.
fn shown_pool_size(port: u16) -> Option<String> {
    let res = admin_psql(port, "SHOW DATABASES").ok()?;
    let row = res
        .1
        .iter()
        .find(|r| admin_value(&res, r, "force_user") == "postgres")?;
    Some(admin_value(&res, row, "pool_size").to_owned())
}

async fn wait_pool_size(port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while shown_pool_size(port).as_deref() != Some(want) {
        assert!(Instant::now() < deadline, "pool_size never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_and_autoreload_reload_and_admin_shutdown_exits() {
    let pg = Postgres::start();
    let port = free_port();
    let toml = |size: u32, general: &str| {
        config_toml(pg.port, size, general, "").replace("port = 0", &format!("port = {port}"))
    };
    let cfg = write_config(&toml(2, ""));
    let mut child = spawn(&cfg);
    let c = wait_connect(port).await;
    wait_pool_size(port, "2").await;
    std::fs::write(&cfg.0, toml(3, "")).unwrap();
    signal(&child, "HUP");
    wait_pool_size(port, "3").await;
    c.simple_query("SELECT 1")
        .await
        .expect("the client survived the reload");
    // A broken file on SIGHUP is refused: the proxy keeps serving with what it had.
    std::fs::write(&cfg.0, "[general\n").unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shown_pool_size(port).as_deref(), Some("3"));
    c.simple_query("SELECT 1").await.unwrap();

    // SHUTDOWN from the admin console exits cleanly once clients are gone.
    drop(c);
    let res = admin_psql(port, "SHUTDOWN").unwrap();
    assert_eq!(res.1, vec![vec!["t".to_owned()]]);
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("exited after SHUTDOWN");
    assert!(status.success());

    // autoreload polls the file.
    std::fs::write(&cfg.0, toml(2, "autoreload = 100")).unwrap();
    let mut child = spawn(&cfg);
    let _c = wait_connect(port).await;
    wait_pool_size(port, "2").await;
    std::fs::write(&cfg.0, toml(5, "autoreload = 100")).unwrap();
    wait_pool_size(port, "5").await;
    signal(&child, "TERM");
    let _ =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5))).await;
}
