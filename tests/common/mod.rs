//! Test harness: real PostgreSQL 15 clusters in temporary directories on free loopback ports, and Ocelot running
//! in-process on port 0. A template cluster is initialised once per machine (initdb is the slow part) and copied
//! for each test; every cluster is stopped when its handle drops, also when a test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use ocelot::app::Proxy;
use ocelot::config::Config;

pub const MD5_USER: (&str, &str) = ("md5user", "md5pass");
pub const SCRAM_USER: (&str, &str) = ("scramuser", "scrampass");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL server program as `postgres` when we are root (initdb refuses root).
fn pg_command(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn chown_postgres(path: &Path) {
    if is_root() {
        run({
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(path);
            c
        });
    }
}

fn make_dir(prefix: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).ok();
    chown_postgres(&dir);
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// The template data directory: roles md5user (md5-hashed password), scramuser (SCRAM), database `app`, and
/// pg_hba rules that make PostgreSQL itself ask for md5, SCRAM or nothing.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let stable = std::env::temp_dir().join("ocelot-pg-template-v2");
        if stable.join("data").join("READY").exists() {
            return stable.join("data");
        }
        let dir = make_dir("ocelot-pg-template-build");
        let data = dir.join("data");
        run({
            let mut c = pg_command("initdb");
            c.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C", "-D"]).arg(&data);
            c
        });
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost replication all 127.0.0.1/32 trust\nhost all md5user 127.0.0.1/32 md5\nhost all scramuser 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba");
        let pg = Postgres::start_from(&data, "");
        pg.psql_admin(&format!(
            "SET password_encryption = 'md5'; CREATE ROLE {} LOGIN PASSWORD '{}';
             SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN PASSWORD '{}';",
            MD5_USER.0, MD5_USER.1, SCRAM_USER.0, SCRAM_USER.1
        ));
        pg.psql_admin("CREATE DATABASE app");
        pg.psql_admin_db("app", "GRANT ALL ON SCHEMA public TO PUBLIC;");
        run({
            let mut c = pg_command("pg_ctl");
            c.args(["-w", "-D"]).arg(&data).args(["-m", "fast", "stop"]).stdout(Stdio::null());
            c
        });
        std::mem::forget(pg);
        std::fs::write(data.join("READY"), "").expect("marker");
        if std::fs::rename(&dir, &stable).is_err() {
            // Another test binary finished first: use its template.
            let _ = std::fs::remove_dir_all(&dir);
        }
        stable.join("data")
    })
}

/// A running PostgreSQL server, stopped and deleted on drop.
pub struct Postgres {
    pub port: u16,
    pub data: PathBuf,
    owned_dir: Option<PathBuf>,
    /// Settings that differ from the fast test defaults, kept for [`Postgres::restart`].
    extra: String,
}

/// Fast and unsafe against an OS crash, which no test simulates.
const FAST: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";

impl Postgres {
    /// A fresh server copied from the template.
    pub fn start() -> Postgres {
        Postgres::start_with("")
    }

    /// A fresh server whose acknowledged commits survive an immediate stop (`synchronous_commit = on`): what
    /// fault-injection tests check writes against.
    pub fn start_durable() -> Postgres {
        Postgres::start_with("-c synchronous_commit=on")
    }

    fn start_with(extra: &str) -> Postgres {
        let src = template();
        let dir = make_dir("ocelot-pg");
        let data = dir.join("data");
        run({
            let mut c = pg_command("cp");
            c.arg("-a").arg(src).arg(&data);
            c
        });
        let mut pg = Postgres::start_from(&data, extra);
        pg.owned_dir = Some(dir);
        pg
    }

    fn start_from(data: &Path, extra: &str) -> Postgres {
        let pg = Postgres {
            port: free_port(),
            data: data.to_owned(),
            owned_dir: None,
            extra: extra.to_owned(),
        };
        pg.restart();
        pg
    }

    /// A streaming replica of `primary` (pg_basebackup -R), started on its own port.
    pub fn replica_of(primary: &Postgres) -> Postgres {
        let dir = make_dir("ocelot-pg-replica");
        let data = dir.join("data");
        run({
            let mut c = pg_command("pg_basebackup");
            c.args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-c",
                "fast",
                "-R",
                "-p",
            ])
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(&data);
            c
        });
        let mut pg = Postgres::start_from(&data, "");
        pg.owned_dir = Some(dir);
        pg
    }

    /// Starts this server again after [`Postgres::stop`], on the same port.
    pub fn restart(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {FAST} -c max_connections=300 -c shared_buffers=32MB -c max_prepared_transactions=20 {}",
            self.port,
            self.data.display(),
            self.extra
        );
        run({
            let mut c = pg_command("pg_ctl");
            c.args(["-w", "-t", "60", "-D"])
                .arg(&self.data)
                .args(["-l"])
                .arg(self.data.join("log"))
                .args(["-o", &opts, "start"]);
            c.stdout(Stdio::null());
            c
        });
    }

    /// Waits until `replicas` have replayed everything the primary wrote so far.
    pub fn wait_replicated(&self, replicas: &[&Postgres]) {
        let lsn = self.psql_admin("SELECT pg_current_wal_insert_lsn()");
        for r in replicas {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while r.psql_admin(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) != "t" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica did not catch up"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The postmaster and every process it started (backends, walreceiver, checkpointer, ...).
    fn processes(&self) -> Vec<String> {
        let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(pid) = pidfile.lines().next().map(str::to_owned) else {
            return Vec::new();
        };
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().map(str::to_owned))
            .collect()
    }

    /// Freezes the whole server with SIGSTOP: it keeps its sockets and answers nothing, like a hung host.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    fn signal_all(&self, sig: &str) {
        let pids = self.processes();
        assert!(!pids.is_empty(), "server {} is not running", self.port);
        run({
            let mut c = Command::new("kill");
            c.arg(format!("-{sig}")).args(&pids);
            c
        });
    }

    /// Runs SQL as superuser on database `postgres`, directly (not through Ocelot).
    pub fn psql_admin(&self, sql: &str) -> String {
        self.psql_admin_db("postgres", sql)
    }

    pub fn psql_admin_db(&self, db: &str, sql: &str) -> String {
        let out = run({
            let mut c = psql_command(self.port, db);
            c.args(["-c", sql]);
            c
        });
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// psql as superuser `postgres` on 127.0.0.1:`port`, unaligned tuples only, stopping at the first error.
pub fn psql_command(port: u16, db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-t",
        "-A",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
    ])
    .args(["-p", &port.to_string(), "-d", db]);
    c
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A server a failed test left frozen could not stop.
        let pids = self.processes();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-CONT").args(&pids).status();
        }
        self.stop();
        if let Some(dir) = &self.owned_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A config with one pool `app` on `pg` for users postgres (trust), md5user and scramuser.
pub fn config_toml(pg_port: u16, pool_size: u32, extra_general: &str, extra_pool: &str) -> String {
    format!(
        r#"
[general]
host = "127.0.0.1"
port = 0
admin_username = "admin"
admin_password = "admin"
connect_timeout = 5000
{extra_general}

[pools.app]
{extra_pool}

[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = {pool_size}

[pools.app.users.1]
username = "{md5u}"
password = "{md5p}"
auth_type = "md5"
pool_size = {pool_size}

[pools.app.users.2]
username = "{scu}"
password = "{scp}"
auth_type = "scram-sha-256"
pool_size = {pool_size}

[pools.app.shards.0]
database = "app"
servers = [["127.0.0.1", {pg_port}, "primary"]]
"#,
        md5u = MD5_USER.0,
        md5p = MD5_USER.1,
        scu = SCRAM_USER.0,
        scp = SCRAM_USER.1,
    )
}

pub async fn start_proxy(toml: &str) -> Proxy {
    let loaded = Config::parse_and_validate(toml).expect("valid test config");
    Proxy::start(loaded.config).await.expect("proxy starts")
}

/// Connects tokio-postgres through `port`, driving the connection in a task.
pub async fn connect(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(user).dbname(db);
    if let Some(p) = password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run_tool(mut c: Command) -> (bool, String, String) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// pgbench as `postgres` against database `app` on `port`: (success, stdout, stderr).
pub fn pgbench(port: u16, args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new("pgbench");
    c.args(["-h", "127.0.0.1", "-U", "postgres", "-p", &port.to_string()])
        .args(args)
        .arg("app");
    run_tool(c)
}

/// `pgbench -i -s 1` through `port`, off the async runtime's threads.
pub async fn pgbench_init(port: u16) {
    let (ok, _, err) = tokio::task::spawn_blocking(move || pgbench(port, &["-i", "-s", "1", "-q"]))
        .await
        .expect("pgbench task");
    assert!(ok, "pgbench -i: {err}");
}

/// One HTTP GET to Ocelot's metrics port, with basic-auth `user:password` if given: the status code, the head
/// and the body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (u16, String, String) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(a)
        )
    });
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head[9..12].parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

/// The proxy's `/metrics` text.
pub async fn metrics_text(proxy: &Proxy) -> String {
    let addr = *proxy.shared().metrics_addr.get().unwrap();
    http_get(addr, "/metrics", None).await.2
}

/// The rows of a simple-query answer, as optional text values.
pub fn rows_of(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The first column of the first row `sql` returns ("" for none or NULL); panics with the error otherwise.
pub async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    let r = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()));
    rows_of(&r)
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .unwrap_or_default()
}

/// A pool `app` sharded over `shards` (one primary each) by `key` (`table.column`), with two-phase commit.
#[allow(dead_code)]
pub fn sharded_config(shards: &[Postgres], key: &str) -> String {
    let mut servers = String::new();
    for (i, pg) in shards.iter().enumerate() {
        servers.push_str(&format!(
            "[pools.app.shards.{i}]\ndatabase = \"app\"\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\n\n",
            pg.port
        ));
    }
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = 0\nadmin_username = \"admin\"\nadmin_password = \"admin\"\n\n[pools.app]\nautomatic_sharding_key = \"{key}\"\ntwo_phase_commit = true\n\n[pools.app.users.0]\nusername = \"postgres\"\nauth_type = \"trust\"\npool_size = 4\n\n{servers}"
    )
}

/// A table `house` of 200 rows where price = 50 + 3 size + 10 rooms - 0.5 age exactly.
#[allow(dead_code)]
pub const HOUSE_SQL: &str = "CREATE TABLE house (size float8, rooms int, age int, price float8);
     INSERT INTO house SELECT s, r, a, 50 + 3 * s + 10 * r - 0.5 * a
       FROM (SELECT 40 + (g * 37) % 160 AS s, 1 + (g * 7) % 6 AS r, (g * 13) % 80 AS a FROM generate_series(1, 200) g) t;";

/// A result of the admin console read with psql: column names, then rows of text values.
pub type AdminResult = (Vec<String>, Vec<Vec<String>>);

/// Runs `sql` in Ocelot's admin console on `port` with psql as `admin`/`admin` (the test configs' admin user):
/// the columns and rows, or psql's error output.
pub fn admin_psql(port: u16, sql: &str) -> Result<AdminResult, String> {
    let mut c = admin_psql_command(port, "pgcat", "admin", sql);
    c.args(["-F", "\u{1f}", "-P", "footer=off", "-v", "ON_ERROR_STOP=1"]);
    let (ok, out, err) = run_tool(c);
    if !ok {
        return Err(err);
    }
    let mut lines = out.lines();
    let cols = lines
        .next()
        .map(|h| h.split('\u{1f}').map(str::to_owned).collect())
        .unwrap_or_default();
    let rows = lines
        .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
        .collect();
    Ok((cols, rows))
}

/// The value of column `col` in `row` of an admin result.
pub fn admin_value<'a>(res: &'a AdminResult, row: &'a [String], col: &str) -> &'a str {
    let i = res
        .0
        .iter()
        .position(|c| c == col)
        .unwrap_or_else(|| panic!("no column {col} in {:?}", res.0));
    &row[i]
}

/// psql (unaligned) to Ocelot's admin console on `port`, database `db` (`pgcat` or `pgbouncer`), as `admin`.
pub fn admin_psql_command(port: u16, db: &str, password: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-A", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "admin", "-d", db, "-c", sql])
        .env("PGPASSWORD", password);
    c
}

/// Log lines written through `tracing` in this test process, once [`capture_logs`] ran.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this test process's `tracing` output, at `filter` level, to a buffer [`captured_logs`] reads.
pub fn capture_logs(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogSink)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// A raw client socket: sends a startup packet for user postgres / database app (trust) and reads up to the first
/// ReadyForQuery.
pub async fn raw_login(port: u16) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut body = vec![0, 3, 0, 0];
    for kv in ["user", "postgres", "database", "app", ""] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    pkt.extend(body);
    s.write_all(&pkt).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed during login");
        got.extend_from_slice(&b[..n]);
    }
    s
}
