//! Any SQL text through the query router: read/write classification, session commands, PgCat's routing commands,
//! sharding-key extraction, fan-out planning and nearest-neighbour recognition.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ocelot::router::{classify, commands, fanout, session_sql, shard_key, vectors};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = classify::classify(sql, &["nextval".to_owned()]);
    let _ = session_sql::classify(sql);
    let _ = commands::parse(sql);
    for key in ["data.id", "*.id", "docs.emb"] {
        let spec = shard_key::KeySpec::parse(key).unwrap();
        let _ = shard_key::find(sql, &spec);
        let _ = fanout::plan(sql, &spec);
        let _ = vectors::knn_target(sql, &spec);
    }
    let _ = vectors::parse_vector(sql);
});
