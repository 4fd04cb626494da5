//! Whole-message reads for the connection phases where every message is inspected. The hot forwarding path does
//! not use these: it splits buffers with `protocol::frame::Splitter` and forwards bytes.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use ocelot_protocol::frame::Header;
use ocelot_protocol::{startup, ProtocolError};

/// Failure to read a message.
#[derive(Debug, Error)]
pub enum NetError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Reads one whole message: its type byte and body (without the length word).
///
/// Cancel-safe: bytes already read stay in `buf`, so calling it again resumes where it stopped.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: u32,
) -> Result<(u8, Bytes), NetError> {
    loop {
        if let Some(h) = Header::parse(buf, max)? {
            let total = h.total();
            if buf.len() >= total {
                let mut msg = buf.split_to(total);
                msg.advance(5);
                return Ok((h.code, msg.freeze()));
            }
            buf.reserve(total - buf.len());
        }
        if r.read_buf(buf).await? == 0 {
            return Err(NetError::Closed);
        }
    }
}

/// Reads the untyped first packet of a connection (length word included).
///
/// Cancel-safe in the same way as [`read_message`].
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Bytes, NetError> {
    loop {
        if let Some(len) = startup::packet_len(buf)? {
            if buf.len() >= len {
                return Ok(buf.split_to(len).freeze());
            }
            buf.reserve(len - buf.len());
        }
        if r.read_buf(buf).await? == 0 {
            return Err(NetError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_messages_split_across_reads() {
        let (mut a, mut b) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&[b'Z', 0, 0, 0, 5, b'I', b'S', 0, 0, 0, 4])
                .await
                .unwrap();
        });
        let mut buf = BytesMut::new();
        let (code, body) = read_message(&mut b, &mut buf, 1024).await.unwrap();
        assert_eq!((code, &body[..]), (b'Z', &b"I"[..]));
        let (code, body) = read_message(&mut b, &mut buf, 1024).await.unwrap();
        assert_eq!((code, body.len()), (b'S', 0));
        writer.await.unwrap();
        assert!(matches!(
            read_message(&mut b, &mut buf, 1024).await,
            Err(NetError::Closed)
        ));
    }
}
