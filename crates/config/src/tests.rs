use super::*;

const MINIMAL: &str = r#"
[general]
admin_username = "a"
admin_password = "b"

[pools.db.users.0]
username = "u"
password = "p"
pool_size = 3

[pools.db.shards.0]
database = "real"
servers = [["127.0.0.1", 5432, "primary"], ["10.0.0.2", 5433, "replica"]]
"#;

#[test]
fn parses_the_example_config() {
    let loaded = Config::parse_and_validate(include_str!("../../../pgcat.toml")).unwrap();
    let c = loaded.config;
    assert_eq!(c.general.port, 6432);
    assert_eq!(c.pools["sharded_db"].shards.len(), 3);
    assert_eq!(
        c.pools["sharded_db"].users["0"].auth_type,
        AuthType::ScramSha256
    );
    assert_eq!(c.pools["simple_db"].pool_mode, PoolMode::Session);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn defaults_follow_pgcat_except_the_port() {
    let c = Config::parse_and_validate(MINIMAL).unwrap().config;
    assert_eq!(c.general.port, 6432);
    assert_eq!(c.general.connect_timeout, 1000);
    assert_eq!(c.general.idle_timeout, 600_000);
    assert_eq!(c.general.server_lifetime, 3_600_000);
    assert!(!c.general.server_round_robin);
    let p = &c.pools["db"];
    assert_eq!(p.pool_mode, PoolMode::Transaction);
    assert_eq!(p.default_shard, DefaultShard::Shard(0));
    assert_eq!(p.regex_search_limit, Some(1000));
    assert_eq!(p.users["0"].auth_type, AuthType::Md5);
    assert_eq!(p.shards["0"].servers[1].2, ServerRole::Replica);
    let s = c.user_settings(p, &p.users["0"]);
    assert_eq!(s.pool_size, 3);
    assert_eq!(s.connect_timeout_ms, 1000);
}

#[test]
fn unknown_keys_are_warnings_naming_the_key() {
    let text = MINIMAL.replace(
        "admin_password = \"b\"",
        "admin_password = \"b\"\nfrobnicate = 1",
    );
    let text = text.replace("pool_size = 3", "pool_size = 3\ncolour = \"red\"");
    let loaded = Config::parse_and_validate(&text).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("general.frobnicate")));
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("pools.db.users.0.colour")));
}

#[test]
fn type_errors_name_the_key() {
    let text = MINIMAL.replace("pool_size = 3", "pool_size = \"three\"");
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("pools.db.users.0.pool_size"), "{err}");
    let text = MINIMAL.replace("[general]", "[general]\npool_mode_x = 1\nport = 70000");
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("general.port"), "{err}");
    let text = MINIMAL.replace("\"replica\"]", "\"standby\"]");
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("servers"), "{err}");
}

#[test]
fn missing_required_keys_are_reported() {
    let text = MINIMAL.replace("admin_username = \"a\"\n", "");
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("admin_username"), "{err}");
}

#[test]
fn rule_violations_name_the_key() {
    let cases = [
        (
            "pool_size = 3",
            "pool_size = 3\nmin_pool_size = 4",
            "min_pool_size",
        ),
        ("pool_size = 3", "pool_size = 0", "pool_size"),
        ("password = \"p\"\n", "", "password"),
        (
            "[pools.db.shards.0]",
            "[pools.db]\ndefault_shard = \"shard_3\"\n[pools.db.shards.0]",
            "default_shard",
        ),
        (
            "\"primary\"], [\"10.0.0.2\", 5433, \"replica\"]",
            "\"primary\"], [\"10.0.0.2\", 5433, \"primary\"]",
            "servers",
        ),
        ("[pools.db.shards.0]", "[pools.db.shards.1]", "shards"),
        (
            "[pools.db.shards.0]",
            "[pools.db]\nquery_parser_read_write_splitting = true\n[pools.db.shards.0]",
            "query_parser_read_write_splitting",
        ),
    ];
    for (from, to, key) in cases {
        let text = MINIMAL.replace(from, to);
        let err = Config::parse_and_validate(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{to}: {err}");
    }
}

#[test]
fn auth_types_and_secrets_must_match() {
    let md5 = postgres_protocol::password::md5(b"p", "u");
    let text = MINIMAL.replace(
        "password = \"p\"",
        &format!("password = \"{md5}\"\nauth_type = \"scram-sha-256\""),
    );
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("pools.db.users.0.password"), "{err}");
    let text = MINIMAL.replace("password = \"p\"", "auth_type = \"trust\"");
    assert!(Config::parse_and_validate(&text).is_ok());
}

#[test]
fn load_balancing_aliases() {
    for (v, want) in [
        ("random", LoadBalancingMode::Random),
        ("loc", LoadBalancingMode::LeastOutstandingConnections),
        ("LOC", LoadBalancingMode::LeastOutstandingConnections),
        (
            "least_outstanding_connections",
            LoadBalancingMode::LeastOutstandingConnections,
        ),
        ("round_robin", LoadBalancingMode::RoundRobin),
    ] {
        let text = MINIMAL.replace(
            "[pools.db.shards.0]",
            &format!("[pools.db]\nload_balancing_mode = \"{v}\"\n[pools.db.shards.0]"),
        );
        let c = Config::parse_and_validate(&text).unwrap().config;
        assert_eq!(c.pools["db"].load_balancing_mode, want);
    }
}

#[test]
fn replica_lag_limits() {
    for (v, want) in [
        ("1048576", LagLimit::Bytes(1 << 20)),
        ("\"16MB\"", LagLimit::Bytes(16 << 20)),
        ("\"5s\"", LagLimit::Millis(5000)),
        ("\"250ms\"", LagLimit::Millis(250)),
    ] {
        let text = MINIMAL.replace("[general]", &format!("[general]\nban_replica_lag = {v}"));
        let c = Config::parse_and_validate(&text).unwrap().config;
        assert_eq!(c.general.ban_replica_lag, Some(want), "{v}");
    }
    let text = MINIMAL.replace("[general]", "[general]\nban_replica_lag = \"5 parsecs\"");
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("ban_replica_lag"), "{err}");
}

#[test]
fn inference_device_and_batch_settings() {
    let c = Config::parse_and_validate(&format!(
        "{MINIMAL}\n[inference]\ndevice = \"auto\"\nbatch_max = 8\nbatch_wait_ms = 5\n"
    ))
    .unwrap()
    .config;
    assert_eq!(c.inference.device, Device::Auto);
    assert_eq!((c.inference.batch_max, c.inference.batch_wait_ms), (8, 5));
    let cuda = Config::parse_and_validate(&format!("{MINIMAL}\n[inference]\ndevice = \"cuda\"\n"));
    if cfg!(feature = "cuda") {
        assert!(cuda.is_ok());
    } else {
        let e = cuda.unwrap_err().to_string();
        assert!(
            e.contains("inference.device") && e.contains("--features cuda"),
            "{e}"
        );
    }
    let zero = Config::parse_and_validate(&format!("{MINIMAL}\n[inference]\nbatch_max = 0\n"));
    assert!(zero.unwrap_err().to_string().contains("batch_max"));
    let tls = Config::parse_and_validate(&MINIMAL.replace(
        "admin_password = \"b\"",
        "admin_password = \"b\"\ntls_required = true",
    ));
    assert!(tls.unwrap_err().to_string().contains("tls_required"));
}

#[test]
fn vector_sharding_reads_centroids_inline_or_from_a_file() {
    let pool = |table: &str| {
        MINIMAL.replace(
            "[pools.db.users.0]",
            &format!("[pools.db]\nautomatic_sharding_key = \"docs.emb\"\nsharding_key_type = \"vector\"\n{table}\n[pools.db.users.0]"),
        )
    };
    let file = std::env::temp_dir().join(format!("ocelot-centroids-{}.json", std::process::id()));
    std::fs::write(&file, "[[1, 0], [0, 1]]").unwrap();
    let c = Config::parse_and_validate(&pool(&format!(
        "[pools.db.vector_sharding]\ncentroids_file = \"{}\"\nprobes = 2",
        file.display()
    )))
    .unwrap()
    .config;
    let v = c.pools["db"].vector_sharding.as_ref().unwrap();
    assert_eq!(v.read_centroids().unwrap().unwrap().len(), 2);
    assert_eq!(v.probes, 2);
    std::fs::remove_file(&file).unwrap();
    for (table, complaint) in [
        ("", "needs a [vector_sharding]"),
        (
            "[pools.db.vector_sharding]\ncentroids = [[1, 0]]\ncentroids_model = \"m\"",
            "exactly one",
        ),
        (
            "[pools.db.vector_sharding]\ncentroids = [[1, 0], [1]]",
            "one dimension",
        ),
        (
            "[pools.db.vector_sharding]\ncentroids_file = \"/nonexistent.json\"",
            "cannot read",
        ),
    ] {
        let e = Config::parse_and_validate(&pool(table))
            .unwrap_err()
            .to_string();
        assert!(e.contains(complaint), "{table}: {e}");
    }
}

#[test]
fn plugins_without_the_parser_are_a_warning_as_in_pgcat() {
    // PgCat's own spec configs enable plugins on pools whose parser is off.
    let text = MINIMAL.replace(
        "[pools.db.users.0]",
        "[pools.db.plugins.query_logger]\nenabled = true\n\n[pools.db.users.0]",
    );
    let loaded = Config::parse_and_validate(&text).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("pools.db.query_parser_enabled") && w.contains("do not run")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn an_invalid_default_shard_is_reported_as_pgcat_reports_it() {
    let text = MINIMAL.replace(
        "[pools.db.users.0]",
        "[pools.db]\ndefault_shard = \"shard_99\"\n\n[pools.db.users.0]",
    );
    let err = Config::parse_and_validate(&text).unwrap_err().to_string();
    assert!(err.contains("Invalid shard 99"), "{err}");
}
