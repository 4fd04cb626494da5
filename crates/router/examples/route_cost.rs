//! What routing one query costs, side by side: sqlparser's parse with classification and key search (what every
//! query with new constants cost before query shapes), and [`ocelot_router::route::Analyzer::analyze`] on a
//! query whose shape it has seen. Run: `cargo run --release -p ocelot-router --example route_cost`.

use std::hint::black_box;
use std::time::Instant;

use ocelot_router::classify::classify_parsed;
use ocelot_router::route::{parse, Analyzer, Rules};
use ocelot_router::shard_key::{find_parsed, KeySpec};

const QUERIES: [&str; 3] = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
    "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = 42;",
    "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id \
     WHERE u.id = {} AND o.created_at > '2024-01-01' ORDER BY o.total DESC LIMIT 10",
];

/// Median nanoseconds per call of `f` over 5 rounds of `n` calls.
fn median_ns(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() {
    let spec = KeySpec {
        table: "users".into(),
        column: "id".into(),
    };
    let rules = Rules {
        volatile: &[],
        max_length: None,
        key: Some(&spec),
    };
    println!(
        "{:>10} {:>10} {:>7}  query",
        "parse ns", "shape ns", "ratio"
    );
    for q in QUERIES {
        let texts: Vec<String> = (0..1000)
            .map(|i| q.replace("{}", &(i * 7919).to_string()))
            .collect();
        let parsed = median_ns(20_000, |i| {
            let t = &texts[i % texts.len()];
            let s = parse(t).unwrap_or_default();
            black_box((classify_parsed(&s, &[]), find_parsed(&s, &spec)));
        });
        let mut a = Analyzer::default();
        let shaped = median_ns(200_000, |i| {
            black_box(a.analyze(&texts[i % texts.len()], &rules));
        });
        println!(
            "{parsed:>10.0} {shaped:>10.0} {:>7.1}  {}",
            parsed / shaped,
            &q[..q.len().min(60)]
        );
    }
}
