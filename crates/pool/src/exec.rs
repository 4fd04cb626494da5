//! Queries Ocelot runs itself on a server connection it holds (fan-out parts, training reads, two-phase commit,
//! registry lookups): send one simple Query and gather the whole answer, up to ReadyForQuery.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::ServerConn;
use crate::PoolError;
use ocelot_protocol::codes::{backend, txn};
use ocelot_protocol::decode;
use ocelot_protocol::frame::Header;
use ocelot_protocol::rows::{cells, split_rows};

pub use ocelot_protocol::rows::Answer;

/// Sends `query` (a whole Query message) and reads the answer up to ReadyForQuery.
pub async fn exec(conn: &mut ServerConn, query: &[u8]) -> Result<Answer, PoolError> {
    send(conn, query).await?;
    read_answer(conn).await
}

/// Writes raw protocol bytes to a server.
pub async fn send(conn: &mut ServerConn, bytes: &[u8]) -> Result<(), PoolError> {
    match conn.stream.write_all(bytes).await {
        Ok(()) => Ok(()),
        Err(e) => Err(conn.lost(e.to_string())),
    }
}

/// Reads a server's answer up to ReadyForQuery, or up to CopyInResponse when it starts waiting for data.
pub async fn read_answer(conn: &mut ServerConn) -> Result<Answer, PoolError> {
    let mut answer = Answer::default();
    loop {
        let msg = next_message(conn).await?;
        match msg[0] {
            backend::ROW_DESCRIPTION => answer.row_description = Some(msg),
            backend::PARAMETER_DESCRIPTION => answer.param_types = Some(msg),
            backend::DATA_ROW => {
                answer.rows.extend_from_slice(&msg);
                answer.count += 1;
            }
            backend::COMMAND_COMPLETE => {
                answer.tag = decode::command_tag(&msg[5..])
                    .ok()
                    .map(|t| String::from_utf8_lossy(t).into_owned());
            }
            backend::ERROR_RESPONSE => {
                answer.error.get_or_insert(msg);
            }
            backend::READY_FOR_QUERY => {
                conn.state.txn_status = decode::ready_for_query(&msg[5..]).unwrap_or(txn::FAILED);
                break;
            }
            backend::COPY_IN_RESPONSE => {
                answer.copy_in = Some(msg);
                break;
            }
            _ => {}
        }
    }
    Ok(answer)
}

/// The next whole message from a server; a closed or failing connection is marked broken.
async fn next_message(conn: &mut ServerConn) -> Result<Bytes, PoolError> {
    loop {
        let failure = match Header::parse(&conn.rbuf, conn.max_message()) {
            Ok(Some(h)) if conn.rbuf.len() >= h.total() => {
                return Ok(conn.rbuf.split_to(h.total()).freeze())
            }
            Ok(_) => match conn.stream.read_buf(&mut conn.rbuf).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => "server closed the connection".to_owned(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        return Err(conn.lost(failure));
    }
}

/// Reads every message of a server's answer up to and including ReadyForQuery.
pub async fn read_messages(conn: &mut ServerConn) -> Result<Vec<Bytes>, PoolError> {
    let mut out = Vec::new();
    loop {
        let msg = next_message(conn).await?;
        if msg[0] == backend::READY_FOR_QUERY {
            conn.state.txn_status = decode::ready_for_query(&msg[5..]).unwrap_or(txn::FAILED);
            out.push(msg);
            return Ok(out);
        }
        out.push(msg);
    }
}

/// The first column of every row of a query, as text (an error answer gives no rows).
pub async fn exec_text(conn: &mut ServerConn, sql: &str) -> Result<Vec<String>, PoolError> {
    let mut q = BytesMut::new();
    ocelot_protocol::encode::query(&mut q, sql);
    let a = exec(conn, &q).await?;
    Ok(split_rows(&a.rows)
        .into_iter()
        .filter_map(|row| {
            let first = cells(row)?.into_iter().next()??;
            Some(String::from_utf8_lossy(first).into_owned())
        })
        .collect())
}
