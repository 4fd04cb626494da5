//! What a client sends: start-up packets (SSL, cancel, startup parameters), then framed messages split as the
//! session splits them, and the bodies Ocelot decodes (password and SASL messages, Parse, Bind, Describe/Close).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ocelot::protocol::{decode, extended, frame::Splitter, startup};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = startup::packet_len(data) {
        if n <= data.len() {
            let _ = startup::parse(&data[..n]);
        }
    }
    let mut split = Splitter::new(1 << 20);
    let mut at = 0;
    while at < data.len() {
        match split.next(&data[at..], |c| c != b'd') {
            Ok(Some(piece)) => {
                if let ocelot::protocol::frame::Piece::Whole(h) = piece {
                    let body = &data[at + 5..at + h.total()];
                    let _ = decode::password(body);
                    let _ = decode::sasl_initial_response(body);
                    let _ = extended::parse(body).map(|(_, rest)| extended::parse_query(rest));
                    let _ = extended::bind(body).map(|(_, _, rest)| {
                        let _ = extended::bind_params_formats(rest);
                        extended::BindValues::decode(rest)
                    });
                    let _ = extended::target(h.code, body);
                }
                let len = piece.len();
                if len == 0 {
                    break;
                }
                at += len;
            }
            _ => break,
        }
    }
});
