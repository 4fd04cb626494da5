//! Any SQL text through the `pgml.*` call extractor: call finding, statement shapes, per-row plans, parameter
//! type inference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ocelot::inference::{call, params, per_row, statement};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = call::find_calls(sql);
    let _ = per_row::plan(sql);
    let _ = statement::shape(sql, &[]);
    let _ = params::infer_types(sql, &[0, 25]);
});
