//! Property tests (proptest): every message Ocelot encodes decodes back to what it was made from, the frame
//! splitter yields the same messages however the bytes are cut into reads, and the sharding hashes equal
//! PostgreSQL's own functions on generated keys, with routing by a key literal, a text parameter and a binary
//! parameter all agreeing with the hash.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use crate::common::*;
use ocelot::protocol::codes::frontend;
use ocelot::protocol::frame::{Piece, Splitter};
use ocelot::protocol::{decode, encode, extended, startup};
use ocelot::router::hash::{
    bigint_partition, hash_bytes_extended, hashint8extended, text_partition, HASH_PARTITION_SEED,
};
use ocelot::router::sharding::{Sharder, Shards};

/// A C string: any text without NUL.
fn cstring() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

/// A frontend or backend message: a type byte and a body of any bytes.
fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop::sample::select(b"QPBEDCSHFdcfXTKZDRt".to_vec()),
        prop::collection::vec(any::<u8>(), 0..600),
    )
}

fn framed(messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (code, body) in messages {
        out.push(*code);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// Feeds `bytes` to a splitter in reads of the given sizes, as a socket would deliver them, and collects the
/// messages it yields (streamed parts are joined). Query messages must be delivered whole.
fn split(bytes: &[u8], reads: &[usize]) -> Vec<(u8, Vec<u8>)> {
    let mut splitter = Splitter::new(1 << 20);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut reads = reads.iter().cycle();
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut partial: Option<(u8, Vec<u8>)> = None;
    loop {
        while let Some(piece) = splitter.next(&buf, |code| code == frontend::QUERY).unwrap() {
            let len = piece.len();
            match piece {
                Piece::Whole(h) => {
                    assert!(partial.is_none());
                    out.push((h.code, buf[5..h.total()].to_vec()));
                }
                Piece::Part { code, first, .. } => {
                    assert_ne!(code, frontend::QUERY, "an inspected message was streamed");
                    if first {
                        assert!(partial.is_none());
                        partial = Some((code, buf[..len].to_vec()));
                    } else if let Some((_, p)) = partial.as_mut() {
                        p.extend_from_slice(&buf[..len]);
                    }
                    if !splitter.is_streaming() {
                        let (code, whole) = partial.take().unwrap();
                        out.push((code, whole[5..].to_vec()));
                    }
                }
            }
            buf.drain(..len);
        }
        if fed == bytes.len() {
            assert!(buf.is_empty(), "bytes left over");
            return out;
        }
        let n = (*reads.next().unwrap()).min(bytes.len() - fed);
        buf.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn splitter_yields_the_messages_however_reads_cut_them(
        messages in prop::collection::vec(message(), 1..12),
        big in prop::option::of(prop::collection::vec(any::<u8>(), 9000..40_000)),
        reads in prop::collection::vec(1usize..9000, 1..8),
    ) {
        let mut messages = messages;
        if let Some(body) = big {
            // Larger than the streaming threshold: passed on in parts unless it is a Query.
            messages.insert(messages.len() / 2, (frontend::COPY_DATA, body.clone()));
            messages.push((frontend::QUERY, body));
        }
        let bytes = framed(&messages);
        prop_assert_eq!(split(&bytes, &reads), messages);
    }

    #[test]
    fn startup_message_round_trips(
        params in prop::collection::vec(("[a-z_]{1,20}", cstring()), 0..8),
    ) {
        let mut buf = BytesMut::new();
        encode::startup_message(&mut buf, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        prop_assert_eq!(startup::packet_len(&buf).unwrap(), Some(buf.len()));
        let parsed = startup::parse(&buf).unwrap();
        prop_assert_eq!(parsed, startup::StartupRequest::Startup { minor: 0, params });
    }

    #[test]
    fn error_response_round_trips(
        fatal in any::<bool>(),
        code in "[0-9A-Z]{5}",
        msg in cstring(),
        detail in prop::option::of(cstring()),
    ) {
        let mut buf = BytesMut::new();
        let severity = if fatal { encode::Severity::Fatal } else { encode::Severity::Error };
        encode::error_response(&mut buf, severity, &code, &msg, detail.as_deref());
        prop_assert_eq!(buf[0], b'E');
        prop_assert_eq!(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize, buf.len() - 1);
        let f = decode::error_fields(&buf[5..]).unwrap();
        prop_assert_eq!(f.severity, if fatal { "FATAL" } else { "ERROR" });
        prop_assert_eq!(f.code, code);
        prop_assert_eq!(f.message, msg);
        prop_assert_eq!(f.detail, detail);
    }

    #[test]
    fn parse_bind_and_targets_round_trip(
        name in cstring(),
        portal in cstring(),
        sql in cstring(),
        types in prop::collection::vec(any::<u32>(), 0..6),
        param_formats in prop::collection::vec(0i16..2, 0..4),
        params in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..64)), 0..10),
        result_formats in prop::collection::vec(0i16..2, 0..4),
        kind in prop::sample::select(vec![b'S', b'P']),
    ) {
        // Parse: what follows the name is kept byte for byte, and its query and types decode.
        let mut rest = BytesMut::new();
        rest.put_slice(sql.as_bytes());
        rest.put_u8(0);
        rest.put_i16(types.len() as i16);
        for t in &types {
            rest.put_u32(*t);
        }
        let mut buf = BytesMut::new();
        extended::encode_parse(&mut buf, &name, &rest);
        let (n, r) = extended::parse(&buf[5..]).unwrap();
        prop_assert_eq!(n, name.as_str());
        prop_assert_eq!(r, &rest[..]);
        prop_assert_eq!(extended::parse_query(r).unwrap(), (sql.clone(), types.clone()));

        // Bind: renaming keeps the values; the three decoders agree.
        let values = extended::BindValues { param_formats, params, result_formats };
        let mut request = BytesMut::new();
        extended::encode_unnamed_request(&mut request, &sql, &types, &values);
        let mut s = Splitter::new(u32::MAX);
        let parse_len = s.next(&request, |_| true).unwrap().unwrap().len();
        let bind = &request[parse_len..];
        let bind_len = s.next(bind, |_| true).unwrap().unwrap().len();
        let (p, st, bind_rest) = extended::bind(&bind[5..bind_len]).unwrap();
        prop_assert_eq!((p, st), ("", ""));
        let mut renamed = BytesMut::new();
        extended::encode_bind(&mut renamed, &portal, &name, bind_rest);
        let (p, st, rest2) = extended::bind(&renamed[5..]).unwrap();
        prop_assert_eq!((p, st), (portal.as_str(), name.as_str()));
        let decoded = extended::BindValues::decode(rest2).unwrap();
        prop_assert_eq!(&decoded, &values);
        let plain: Vec<Option<Vec<u8>>> = extended::bind_params(rest2)
            .unwrap()
            .into_iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect();
        prop_assert_eq!(&plain, &values.params);
        let with_formats = extended::bind_params_formats(rest2).unwrap();
        for (i, (v, binary)) in with_formats.into_iter().enumerate() {
            prop_assert_eq!(v.map(<[u8]>::to_vec), values.params[i].clone());
            prop_assert_eq!(binary, values.param_format(i) == 1);
        }

        // Describe and Close.
        for code in [frontend::DESCRIBE, frontend::CLOSE] {
            let mut t = BytesMut::new();
            extended::encode_target(&mut t, code, kind, &name);
            prop_assert_eq!(extended::target(code, &t[5..]).unwrap(), (kind, name.as_str()));
        }
    }

    /// A Bind cut anywhere is an error, never a panic or a wrong value.
    #[test]
    fn truncated_bind_is_an_error(
        params in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..32)), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let values = extended::BindValues { param_formats: vec![1], params, result_formats: vec![] };
        let mut request = BytesMut::new();
        extended::encode_unnamed_request(&mut request, "x", &[], &values);
        let parse_len = Splitter::new(u32::MAX).next(&request, |_| true).unwrap().unwrap().len();
        let bind = &request[parse_len + 5 + 2..];
        let bind_len = u32::from_be_bytes([request[parse_len + 1], request[parse_len + 2], request[parse_len + 3], request[parse_len + 4]]) as usize - 4 - 2;
        // The result-format count is the last two bytes: cutting into the parameters must fail.
        let at = cut.index(bind_len - 2);
        let full = extended::BindValues::decode(&bind[..bind_len]).unwrap();
        prop_assert_eq!(&full, &values);
        prop_assert!(extended::bind_params(&bind[..at]).is_err());
    }
}

const SHARDED: &str = r#"
[general]
admin_username = "a"
admin_password = "b"

[pools.db]
automatic_sharding_key = "t.k"
sharding_key_type = "KEYTYPE"

[pools.db.users.0]
username = "u"
password = "p"
pool_size = 1

[pools.db.shards.0]
database = "d"
servers = [["127.0.0.1", 5432, "primary"]]
[pools.db.shards.1]
database = "d"
servers = [["127.0.0.1", 5432, "primary"]]
[pools.db.shards.2]
database = "d"
servers = [["127.0.0.1", 5432, "primary"]]
"#;

fn sharder(key_type: &str) -> Sharder {
    let c = ocelot::config::Config::parse_and_validate(&SHARDED.replace("KEYTYPE", key_type))
        .unwrap()
        .config;
    Sharder::new(&c.pools["db"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A bigint key routes to the same shard whether it is a literal in the query, a text parameter or a binary
    /// int2/int4/int8 parameter, and that shard is the key's hash partition.
    #[test]
    fn bigint_routing_agrees_with_the_hash(k in any::<i64>()) {
        let s = sharder("bigint");
        let want = Shards::One(bigint_partition(k, 3) as usize);
        prop_assert_eq!(s.from_query(&format!("SELECT * FROM t WHERE k = {k}"), &[]), want.clone());
        let text = k.to_string();
        prop_assert_eq!(s.from_query("SELECT * FROM t WHERE k = $1", &[(Some(text.as_bytes()), false)]), want.clone());
        prop_assert_eq!(s.from_query("SELECT * FROM t WHERE k = $1", &[(Some(&k.to_be_bytes()[..]), true)]), want.clone());
        if let Ok(small) = i32::try_from(k) {
            prop_assert_eq!(s.shard_of_param(&small.to_be_bytes(), true), Some(bigint_partition(k, 3) as usize));
        }
        prop_assert_eq!(s.from_query(&format!("INSERT INTO t (k, v) VALUES ({k}, 'x')"), &[]), want);
    }

    #[test]
    fn text_routing_agrees_with_the_hash(key in "[^'\u{0}]{0,30}") {
        let s = sharder("text");
        let want = Shards::One(text_partition(key.as_bytes(), 3) as usize);
        prop_assert_eq!(s.from_query(&format!("SELECT * FROM t WHERE k = '{key}'"), &[]), want.clone());
        prop_assert_eq!(s.from_query("SELECT * FROM t WHERE k = $1", &[(Some(key.as_bytes()), true)]), want);
    }
}

/// Ocelot's hashes against PostgreSQL's own functions on generated keys: one server, one query per batch.
#[test]
fn hashes_equal_postgresql_on_generated_keys() {
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The connection task runs whenever the runtime is driven, by the queries below.
    let client = rt
        .block_on(connect(pg.port, "postgres", None, "app"))
        .unwrap();
    let seed = HASH_PARTITION_SEED as i64;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(
            &(
                prop::collection::vec(any::<i64>(), 1..200),
                prop::collection::vec("\\PC{0,24}", 1..100),
            ),
            |(ints, texts)| {
                let (int_rows, text_rows) = rt.block_on(async {
                    let a = client
                        .query(
                            "SELECT k, hashint8extended(k, $2) FROM unnest($1::int8[]) WITH ORDINALITY u(k, i) ORDER BY i",
                            &[&ints, &seed],
                        )
                        .await
                        .unwrap();
                    let b = client
                        .query(
                            "SELECT k, hashtextextended(k, $2) FROM unnest($1::text[]) WITH ORDINALITY u(k, i) ORDER BY i",
                            &[&texts, &seed],
                        )
                        .await
                        .unwrap();
                    (a, b)
                });
                for (row, k) in int_rows.iter().zip(&ints) {
                    prop_assert_eq!(row.get::<_, i64>(0), *k);
                    prop_assert_eq!(hashint8extended(*k, HASH_PARTITION_SEED) as i64, row.get::<_, i64>(1), "int8 {}", k);
                }
                for (row, k) in text_rows.iter().zip(&texts) {
                    prop_assert_eq!(hash_bytes_extended(k.as_bytes(), HASH_PARTITION_SEED) as i64, row.get::<_, i64>(1), "text {:?}", k);
                }
                Ok(())
            },
        )
        .unwrap();
}
