//! Framing of a message stream: every message after startup is a type byte, a big-endian i32 length that counts
//! itself but not the type byte, and a body. [`Splitter`] walks a receive buffer and says, for each next piece,
//! whether it is a whole message (to inspect) or a run of bytes of a large message that is passed through without
//! being buffered whole, so that a 1 GB DataRow costs a buffer's worth of proxy memory, not 1 GB.
//! <https://www.postgresql.org/docs/15/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS>

use super::ProtocolError;

/// Type byte plus length word.
pub(crate) const HEADER_LEN: usize = 5;

/// Messages at most this large are always delivered whole; larger ones are streamed unless the caller needs them
/// whole. Big enough for every typical row and query, small enough to bound per-connection memory.
pub(crate) const STREAM_THRESHOLD: usize = 64 * 1024;

/// The header of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub code: u8,
    /// The length word: body length plus 4.
    pub(crate) len: u32,
}

impl Header {
    /// Bytes of the whole message, type byte included.
    #[inline]
    pub fn total(&self) -> usize {
        1 + self.len as usize
    }

    /// Reads a header from the start of `buf`; `Ok(None)` when fewer than 5 bytes are there.
    /// Rejects lengths below 4 and above `max` before anything is allocated for the body.
    #[inline]
    pub fn parse(buf: &[u8], max: u32) -> Result<Option<Header>, ProtocolError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let code = h[0];
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        if len < 4 {
            return Err(ProtocolError::LengthTooSmall { len });
        }
        if len > max {
            return Err(ProtocolError::TooLarge {
                code: code as char,
                len,
                max,
            });
        }
        Ok(Some(Header { code, len }))
    }
}

/// The whole messages at the start of `buf`, as (type, body), stopping at the first incomplete or invalid one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = Header::parse(buf.get(at..)?, u32::MAX).ok()??;
        let end = at + h.total();
        let body = buf.get(at + HEADER_LEN..end)?;
        at = end;
        Some((h.code, body))
    })
}

/// What the next bytes of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A whole message occupies `buf[..header.total()]`.
    Whole(Header),
    /// The first `len` bytes of `buf` belong to a message of type `code` that is being streamed through.
    /// `first` is true for the piece that starts the message (its header is inside it).
    Part { code: u8, len: usize, first: bool },
}

impl Piece {
    /// Bytes of the buffer this piece covers.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Piece::Whole(h) => h.total(),
            Piece::Part { len, .. } => *len,
        }
    }

    /// Whether this piece covers no bytes (never true for a piece `Splitter::next` returns).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message type this piece belongs to.
    #[inline]
    pub fn code(&self) -> u8 {
        match self {
            Piece::Whole(h) => h.code,
            Piece::Part { code, .. } => *code,
        }
    }

    /// Whether this piece starts a message (so per-message bookkeeping runs once).
    #[inline]
    pub fn starts_message(&self) -> bool {
        match self {
            Piece::Whole(_) => true,
            Piece::Part { first, .. } => *first,
        }
    }
}

/// Splits one direction of a connection into pieces. It keeps only the count of bytes still owed to a message
/// being streamed; the caller owns the buffer and must consume exactly `piece.len()` bytes after each piece.
#[derive(Debug, Clone)]
pub struct Splitter {
    max_len: u32,
    streaming: Option<(u8, usize)>,
}

impl Splitter {
    /// A splitter that rejects messages whose length word exceeds `max_len`.
    pub fn new(max_len: u32) -> Self {
        Splitter {
            max_len,
            streaming: None,
        }
    }

    /// The next piece at the start of `buf`, or `Ok(None)` when more bytes are needed. `need_whole(code)` says
    /// which message types must be delivered whole regardless of size (those the caller inspects).
    /// When `None` is returned with a header already read, [`Splitter::wanted`] tells how many bytes to reserve.
    pub fn next(
        &mut self,
        buf: &[u8],
        need_whole: impl Fn(u8) -> bool,
    ) -> Result<Option<Piece>, ProtocolError> {
        if let Some((code, remaining)) = self.streaming {
            if buf.is_empty() {
                return Ok(None);
            }
            let len = remaining.min(buf.len());
            self.streaming = (remaining > len).then_some((code, remaining - len));
            return Ok(Some(Piece::Part {
                code,
                len,
                first: false,
            }));
        }
        let Some(header) = Header::parse(buf, self.max_len)? else {
            return Ok(None);
        };
        let total = header.total();
        if buf.len() >= total {
            return Ok(Some(Piece::Whole(header)));
        }
        if total > STREAM_THRESHOLD && !need_whole(header.code) {
            self.streaming = Some((header.code, total - buf.len()));
            return Ok(Some(Piece::Part {
                code: header.code,
                len: buf.len(),
                first: true,
            }));
        }
        Ok(None)
    }

    /// Whether a streamed message is still being passed through.
    #[inline]
    pub fn is_streaming(&self) -> bool {
        self.streaming.is_some()
    }

    /// Bytes the buffer must hold for the next piece to be whole, given what it holds now.
    #[inline]
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match Header::parse(buf, self.max_len) {
            Ok(Some(h)) if !self.is_streaming() => h.total(),
            _ => HEADER_LEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![code];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn whole_messages_in_order() {
        let mut buf = msg(b'Q', b"select 1\0");
        buf.extend(msg(b'S', b""));
        let mut s = Splitter::new(1 << 20);
        let p = s.next(&buf, |_| false).unwrap().unwrap();
        assert_eq!(
            p,
            Piece::Whole(Header {
                code: b'Q',
                len: 13
            })
        );
        let rest = &buf[p.len()..];
        let p2 = s.next(rest, |_| false).unwrap().unwrap();
        assert_eq!(p2.code(), b'S');
        assert_eq!(p2.len(), 5);
        assert_eq!(s.next(&rest[5..], |_| false).unwrap(), None);
    }

    #[test]
    fn incomplete_header_and_body_wait() {
        let buf = msg(b'Q', b"select 1\0");
        let mut s = Splitter::new(1 << 20);
        assert_eq!(s.next(&buf[..3], |_| false).unwrap(), None);
        assert_eq!(s.next(&buf[..8], |_| false).unwrap(), None);
    }

    #[test]
    fn rejects_short_and_huge_lengths() {
        let mut s = Splitter::new(100);
        assert_eq!(
            s.next(&[b'Q', 0, 0, 0, 3], |_| false),
            Err(ProtocolError::LengthTooSmall { len: 3 })
        );
        assert!(matches!(
            s.next(&[b'Q', 0xff, 0xff, 0xff, 0xff], |_| false),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn large_message_is_streamed_in_parts() {
        let body = vec![7u8; STREAM_THRESHOLD * 3];
        let full = msg(b'D', &body);
        let mut s = Splitter::new(u32::MAX);
        let first = &full[..1000];
        let p = s.next(first, |_| false).unwrap().unwrap();
        assert_eq!(
            p,
            Piece::Part {
                code: b'D',
                len: 1000,
                first: true
            }
        );
        let mut consumed = 1000;
        while consumed < full.len() {
            let chunk = &full[consumed..(consumed + 50_000).min(full.len())];
            let p = s.next(chunk, |_| false).unwrap().unwrap();
            assert!(!p.starts_message());
            consumed += p.len();
        }
        assert_eq!(consumed, full.len());
        assert!(!s.is_streaming());
    }

    #[test]
    fn inspected_large_message_waits_whole() {
        let body = vec![7u8; STREAM_THRESHOLD * 2];
        let full = msg(b'Q', &body);
        let mut s = Splitter::new(u32::MAX);
        assert_eq!(s.next(&full[..1000], |c| c == b'Q').unwrap(), None);
        assert_eq!(s.wanted(&full[..1000]), full.len());
    }
}
