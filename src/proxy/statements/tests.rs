use super::*;
use crate::protocol::decode;

fn parse_body(name: &str, query: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(query.as_bytes());
    v.extend_from_slice(&[0, 0, 0]);
    v
}

fn bind_body(stmt: &str) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(stmt.as_bytes());
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    v
}

/// The (code, first cstring) of each message in `out`.
fn messages(out: &BytesMut) -> Vec<(char, String)> {
    let mut v = Vec::new();
    let mut rest = &out[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let body = &rest[5..1 + len];
        let name = match rest[0] {
            b'B' => extended::bind(body).unwrap().1.to_owned(),
            b'C' | b'D' => extended::target(rest[0], body).unwrap().1.to_owned(),
            _ => decode::Cursor::new(rest[0], body)
                .cstr("x")
                .unwrap()
                .to_owned(),
        };
        v.push((rest[0] as char, name));
        rest = &rest[1 + len..];
    }
    v
}

struct World {
    map: StatementMap,
    server: ServerStatements,
    registry: Registry,
    out: BytesMut,
}

impl World {
    fn new() -> Self {
        World {
            map: StatementMap::default(),
            server: ServerStatements::default(),
            registry: Registry::default(),
            out: BytesMut::new(),
        }
    }
    fn send(&mut self, code: u8, body: &[u8]) -> ClientAction {
        self.map
            .client_message(
                code,
                body,
                &mut self.server,
                &self.registry,
                2,
                &mut self.out,
            )
            .unwrap()
    }
    fn recv(&mut self, code: u8) -> (bool, BytesMut) {
        let mut before = BytesMut::new();
        let fwd = self.map.server_message(code, &mut self.server, &mut before);
        (fwd, before)
    }
}

#[test]
fn named_parse_is_renamed_then_reused_unnamed() {
    let mut w = World::new();
    assert_eq!(
        w.send(b'P', &parse_body("s1", "select 1")),
        ClientAction::Replaced
    );
    assert_eq!(messages(&w.out), vec![('P', "ocelot_0".to_owned())]);
    assert_eq!(w.send(b'S', &[]), ClientAction::Forward);
    assert!(w.recv(b'1').0);
    assert!(w.recv(b'Z').0);
    // Another client, same text, same server: an unnamed Parse answers its ParseComplete.
    let mut other = StatementMap::default();
    let mut out = BytesMut::new();
    let a = other
        .client_message(
            b'P',
            &parse_body("q", "select 1"),
            &mut w.server,
            &w.registry,
            2,
            &mut out,
        )
        .unwrap();
    assert_eq!(a, ClientAction::Replaced);
    assert_eq!(messages(&out), vec![('P', String::new())]);
}

#[test]
fn bind_on_a_new_server_prepares_first_and_swallows_its_parse_complete() {
    let mut w = World::new();
    w.send(b'P', &parse_body("s1", "select 1"));
    w.send(b'S', &[]);
    w.recv(b'1');
    w.recv(b'Z');
    // The client moves to a server that never saw the statement.
    w.server = ServerStatements::default();
    w.map.attach();
    w.out.clear();
    assert_eq!(w.send(b'B', &bind_body("s1")), ClientAction::Replaced);
    assert_eq!(
        messages(&w.out),
        vec![('P', "ocelot_0".to_owned()), ('B', "ocelot_0".to_owned())]
    );
    assert_eq!(w.send(b'E', &[0, 0, 0, 0, 0]), ClientAction::Forward);
    w.send(b'S', &[]);
    assert!(!w.recv(b'1').0, "injected ParseComplete is swallowed");
    assert!(w.recv(b'2').0);
    assert!(w.recv(b'C').0);
    assert!(w.recv(b'Z').0);
    // Unknown names pass through, so the server reports 26000 itself.
    w.out.clear();
    assert_eq!(w.send(b'B', &bind_body("nope")), ClientAction::Forward);
}

#[test]
fn failed_injected_parse_is_forgotten() {
    let mut w = World::new();
    w.send(b'P', &parse_body("s1", "select * from t"));
    w.send(b'S', &[]);
    w.recv(b'1');
    w.recv(b'Z');
    w.server = ServerStatements::default();
    w.map.attach();
    w.send(b'B', &bind_body("s1"));
    w.send(b'S', &[]);
    assert!(w.recv(b'E').0, "the real error reaches the client");
    assert!(w.recv(b'Z').0);
    assert!(
        !w.server.lookup("ocelot_0"),
        "the statement was not created"
    );
}

#[test]
fn duplicate_name_gets_42p05_before_ready_for_query() {
    let mut w = World::new();
    w.send(b'P', &parse_body("s1", "select 1"));
    w.send(b'S', &[]);
    w.recv(b'1');
    w.recv(b'Z');
    assert_eq!(
        w.send(b'P', &parse_body("s1", "select 2")),
        ClientAction::Drop
    );
    assert_eq!(w.send(b'B', &bind_body("s1")), ClientAction::Drop);
    assert_eq!(w.send(b'S', &[]), ClientAction::Forward);
    let (fwd, before) = w.recv(b'Z');
    assert!(fwd);
    let f = decode::error_fields(&before[5..]).unwrap();
    assert_eq!(f.code, "42P05");
    // The session goes on normally.
    assert_eq!(w.send(b'B', &bind_body("s1")), ClientAction::Replaced);
}

#[test]
fn eviction_closes_the_oldest_and_swallows_close_complete() {
    let mut w = World::new();
    for (i, q) in ["select 1", "select 2", "select 3"].iter().enumerate() {
        w.send(b'P', &parse_body(&format!("s{i}"), q));
    }
    w.send(b'S', &[]);
    assert_eq!(
        messages(&w.out),
        vec![
            ('P', "ocelot_0".to_owned()),
            ('P', "ocelot_1".to_owned()),
            ('C', "ocelot_0".to_owned()),
            ('P', "ocelot_2".to_owned()),
        ]
    );
    assert!(w.recv(b'1').0);
    assert!(w.recv(b'1').0);
    assert!(!w.recv(b'3').0, "injected CloseComplete is swallowed");
    assert!(w.recv(b'1').0);
    assert!(w.recv(b'Z').0);
    assert_eq!(w.server.stats.evictions, 1);
    // Client Close of its own name: forwarded (a no-op on the server) and answered.
    assert_eq!(w.send(b'C', b"Ss1\0"), ClientAction::Forward);
    assert!(w.recv(b'3').0);
}

#[test]
fn the_unnamed_statement_follows_the_client_to_its_next_server() {
    let mut w = World::new();
    assert_eq!(
        w.send(b'P', &parse_body("", "select $1")),
        ClientAction::Forward
    );
    assert_eq!(w.send(b'S', &[]), ClientAction::Forward);
    // Same server: used as it is.
    assert_eq!(w.send(b'D', b"S\0"), ClientAction::Forward);
    // A new server does not have it: its Parse goes first and its ParseComplete is swallowed.
    w.map.attach();
    w.server = ServerStatements::default();
    assert_eq!(w.send(b'D', b"S\0"), ClientAction::Replaced);
    assert_eq!(
        messages(&w.out),
        vec![('P', String::new()), ('D', String::new())]
    );
    assert!(!w.recv(b'1').0, "the injected ParseComplete is swallowed");
    w.out.clear();
    assert_eq!(w.send(b'B', &bind_body("")), ClientAction::Forward);
    // Ocelot's own unnamed Parse (a named statement this server already has) replaces it on the server.
    w.send(b'P', &parse_body("s1", "select 2"));
    w.send(b'S', &[]);
    w.map.attach();
    w.out.clear();
    w.send(b'P', &parse_body("s2", "select 2"));
    assert_eq!(messages(&w.out), vec![('P', String::new())]);
    w.out.clear();
    assert_eq!(w.send(b'B', &bind_body("")), ClientAction::Replaced);
    assert_eq!(
        messages(&w.out),
        vec![('P', String::new()), ('B', String::new())]
    );
    // A simple Query ends the unnamed statement, as in PostgreSQL.
    w.send(b'Q', b"select 3\0");
    w.map.attach();
    assert_eq!(w.send(b'B', &bind_body("")), ClientAction::Forward);
}

#[test]
fn a_known_text_is_parsed_without_a_server() {
    let mut w = World::new();
    let body = parse_body("p1", "select 1");
    assert!(
        !w.map.parse_without_server(&body, &w.registry),
        "no server has accepted it yet"
    );
    w.send(b'P', &body);
    w.send(b'S', &[]);
    assert!(w.recv(b'1').0, "the client's own ParseComplete");
    // Another client: answered by Ocelot, prepared where it is first bound.
    let mut other = StatementMap::default();
    assert!(other.parse_without_server(&parse_body("q", "select 1"), &w.registry));
    assert!(
        !other.parse_without_server(&parse_body("q", "select 1"), &w.registry),
        "already defined"
    );
    assert!(!other.parse_without_server(&parse_body("r", "select 2"), &w.registry));
    let mut server = ServerStatements::default();
    let mut out = BytesMut::new();
    let action = other
        .client_message(b'B', &bind_body("q"), &mut server, &w.registry, 2, &mut out)
        .unwrap();
    assert_eq!(action, ClientAction::Replaced);
    let sent = messages(&out);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].0, 'P');
    assert!(sent[0].1.starts_with("ocelot_"), "{sent:?}");
}
