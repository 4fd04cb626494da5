//! What a server sends: the message bodies Ocelot decodes (authentication requests, ParameterStatus,
//! BackendKeyData, ReadyForQuery, CommandComplete, ErrorResponse).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ocelot::protocol::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::auth_request(data);
    let _ = decode::parameter_status(data);
    let _ = decode::backend_key_data(data);
    let _ = decode::ready_for_query(data);
    let _ = decode::command_tag(data);
    let _ = decode::error_fields(data);
    let _ = ocelot::router::vectors::decode_binary_array(data);
});
