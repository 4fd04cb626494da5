//! One socket type for every connection Ocelot holds: plain TCP, a Unix-domain socket, or TLS over TCP in either
//! role (Ocelot as the TLS server to clients, as the TLS client to PostgreSQL). An enum rather than a boxed trait
//! object, so the hot path pays a branch, not an allocation or a virtual call.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client connection Ocelot accepted with TLS.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A server connection Ocelot opened with TLS.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Left behind while the stream is being upgraded to TLS; every operation fails.
    Closed,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// Takes the plain TCP stream out for a TLS handshake, leaving [`Stream::Closed`].
    pub fn take_tcp(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Closed) {
            Stream::Tcp(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Whether an idle connection has something to say (or was closed): one non-blocking read on the socket.
    /// Meant for connections that should be silent; a byte read here is lost, so the caller discards the
    /// connection when this returns true.
    pub fn readable_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut probe),
            Stream::Unix(s) => s.try_read(&mut probe),
            Stream::TlsServer(s) => s.get_ref().0.try_read(&mut probe),
            Stream::TlsClient(s) => s.get_ref().0.try_read(&mut probe),
            Stream::Closed => return true,
        };
        !matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream is being upgraded")
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::TlsServer($s) => $e,
            Stream::TlsClient($s) => $e,
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
            Stream::Closed => false,
        }
    }
}
