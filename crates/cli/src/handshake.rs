//! Admission of TCP connections: a connection reaches the gRPC server only once it has sent a
//! whole HTTP/2 client preface (the magic line and the SETTINGS frame, RFC 9113 §3.4) or a whole
//! HTTP/1.1 request head of at most `max_header_bytes`, within `handshake_timeout_secs`. A
//! connection that sends nothing, too little or something else is closed; one whose HTTP/1.1 head
//! is too large gets 431 and is closed. Each connection is checked on its own task, so a slow one
//! never holds up accepting others, and at most `max_pending_handshakes` are checked at once:
//! beyond that, new connections wait in the kernel's accept queue, so silent connections cannot
//! use up the process's file descriptors.
//!
//! tonic's server has no such timeout (hyper waits for a first byte forever), so the check sits in
//! front of it, on the incoming stream. The bytes read while checking are handed on with the
//! connection and read again by the server. An HTTP/1.1 connection carries one request (the
//! [`OneRequestPerHttp1Connection`] layer answers `Connection: close`), so every HTTP/1.1 head
//! passes this check.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryFutureExt;
use futures::future::{Either, MapOk};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The first 24 bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: 24-bit length, type, flags, 31-bit stream id.
const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
/// Each setting is a 16-bit id and a 32-bit value.
const SETTING_LEN: usize = 6;
/// The largest frame a peer may send before it has seen our SETTINGS (RFC 9113 §4.2).
const INITIAL_MAX_FRAME: usize = 16_384;
/// How long accepting pauses after a failed accept (e.g. no file descriptor left), so that the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The limits of admission (`server.handshake_timeout_secs`, `server.max_pending_handshakes`,
/// `server.max_header_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_pending: usize,
    pub max_head_bytes: usize,
}

/// What the bytes received so far prove.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A whole HTTP/2 preface or HTTP/1.1 request head: hand the connection on.
    Complete,
    /// Nothing wrong yet; wait for more.
    NeedMore,
    /// An HTTP/1.1 head larger than allowed: answer 431 and close.
    TooLarge,
    /// Neither protocol: close.
    Foreign,
}

fn verdict(received: &[u8], max_head_bytes: usize) -> Verdict {
    let Some(&first) = received.first() else {
        return Verdict::NeedMore;
    };
    let common = received.len().min(H2_PREFACE.len());
    if received[..common] == H2_PREFACE[..common] {
        return h2_verdict(received);
    }
    // Every request line starts with a method token; mail clients send POST or GET.
    if !first.is_ascii_alphabetic() {
        return Verdict::Foreign;
    }
    let window = &received[..received.len().min(max_head_bytes)];
    let ends =
        window.windows(4).any(|w| w == b"\r\n\r\n") || window.windows(2).any(|w| w == b"\n\n");
    if ends {
        Verdict::Complete
    } else if received.len() >= max_head_bytes {
        Verdict::TooLarge
    } else {
        Verdict::NeedMore
    }
}

/// `received` starts with (a prefix of) the HTTP/2 magic line; complete once the SETTINGS frame
/// that must follow it is in as well.
fn h2_verdict(received: &[u8]) -> Verdict {
    let Some(header) = received.get(H2_PREFACE.len()..H2_PREFACE.len() + FRAME_HEADER) else {
        return Verdict::NeedMore;
    };
    let length =
        usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let (kind, flags, stream) = (header[3], header[4], &header[5..9]);
    let well_formed = kind == SETTINGS
        && flags == 0
        && stream.iter().all(|b| *b == 0)
        && length % SETTING_LEN == 0
        && length <= INITIAL_MAX_FRAME;
    if !well_formed {
        Verdict::Foreign
    } else if received.len() >= H2_PREFACE.len() + FRAME_HEADER + length {
        Verdict::Complete
    } else {
        Verdict::NeedMore
    }
}

/// Reads until the connection has proved a protocol; the bytes read come back with it.
async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    max_head_bytes: usize,
) -> io::Result<Option<Admitted<S>>> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match verdict(&received, max_head_bytes) {
            Verdict::Complete => {
                return Ok(Some(Admitted {
                    stream,
                    replay: received,
                    replayed: 0,
                }));
            }
            Verdict::NeedMore => {}
            Verdict::TooLarge => {
                stream.write_all(TOO_LARGE).await?;
                stream.shutdown().await?;
                // Closing with unread bytes would reset the connection, and the client could
                // lose the answer: read the rest of what it sends (until it closes, or the
                // handshake timeout ends this).
                while stream.read(&mut chunk).await? > 0 {}
                return Ok(None);
            }
            Verdict::Foreign => return Ok(None),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        received.extend_from_slice(&chunk[..n]);
    }
}

/// Accepts connections on `listener` and yields those that prove a protocol within the limits,
/// until the returned stream is dropped (then the listener is closed too).
pub fn admit(
    listener: TcpListener,
    limits: Limits,
) -> ReceiverStream<io::Result<Admitted<TcpStream>>> {
    let (admitted, incoming) = mpsc::channel(limits.max_pending);
    tokio::spawn(accept_loop(listener, limits, admitted, |stream| async {
        Ok(stream)
    }));
    ReceiverStream::new(incoming)
}

/// [`admit`] over TLS: the handshake with the acceptor's current certificate comes first, within
/// the same timeout, and the protocol is proved by the decrypted bytes.
pub fn admit_tls(
    listener: TcpListener,
    limits: Limits,
    acceptor: crate::tls::Acceptor,
) -> ReceiverStream<io::Result<Admitted<TlsStream<TcpStream>>>> {
    let (admitted, incoming) = mpsc::channel(limits.max_pending);
    tokio::spawn(accept_loop(listener, limits, admitted, move |stream| {
        acceptor.current().accept(stream)
    }));
    ReceiverStream::new(incoming)
}

async fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    admitted: mpsc::Sender<io::Result<Admitted<S>>>,
    secure: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    loop {
        let permit = tokio::select! {
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = admitted.closed() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = admitted.closed() => return,
        };
        // gRPC answers are small writes that must not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let admitted = admitted.clone();
        let secured = secure(stream);
        tokio::spawn(async move {
            let checked = tokio::time::timeout(limits.timeout, async {
                check(secured.await?, limits.max_head_bytes).await
            })
            .await;
            drop(permit);
            match checked {
                Ok(Ok(Some(connection))) => {
                    // Fails only when the server has stopped accepting; the connection closes.
                    let _ = admitted.send(Ok(connection)).await;
                }
                Ok(Ok(None)) => {
                    tracing::debug!("connection closed: not HTTP/2 or HTTP/1.1 within limits")
                }
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "connection failed before its preface (or its TLS handshake)")
                }
                Err(_) => {
                    tracing::debug!("connection closed: no preface within the handshake timeout")
                }
            }
        });
    }
}

/// A connection that has proved a protocol. Reads first return the bytes read while checking.
#[derive(Debug)]
pub struct Admitted<S> {
    stream: S,
    replay: Vec<u8>,
    replayed: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Admitted<S> {
    // The same as the stream's (TCP, or TLS over TCP with the client's certificates), so that
    // request extensions look as tonic's own listeners make them.
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Answers every HTTP/1.x request with `Connection: close`, so that each HTTP/1.1 head is the
/// first on its connection and admission checks it. (HTTP/1.1 serves only one-click unsubscribe,
/// one request per mail client's connection.)
#[derive(Debug, Clone, Copy, Default)]
pub struct OneRequestPerHttp1Connection;

impl<S> tower::Layer<S> for OneRequestPerHttp1Connection {
    type Service = CloseHttp1<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CloseHttp1 { inner }
    }
}

/// See [`OneRequestPerHttp1Connection`].
#[derive(Debug, Clone)]
pub struct CloseHttp1<S> {
    inner: S,
}

type Close<B> = fn(http::Response<B>) -> http::Response<B>;

fn close<B>(mut response: http::Response<B>) -> http::Response<B> {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

impl<S, Req, ResBody> tower::Service<http::Request<Req>> for CloseHttp1<S>
where
    S: tower::Service<http::Request<Req>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<MapOk<S::Future, Close<ResBody>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        if request.version() < http::Version::HTTP_2 {
            Either::Left(self.inner.call(request).map_ok(close as Close<ResBody>))
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preface_with_settings(settings: usize) -> Vec<u8> {
        let mut bytes = H2_PREFACE.to_vec();
        let length = settings * SETTING_LEN;
        bytes.extend_from_slice(&[
            0,
            (length >> 8) as u8,
            length as u8,
            SETTINGS,
            0,
            0,
            0,
            0,
            0,
        ]);
        bytes.extend(std::iter::repeat_n(0u8, length));
        bytes
    }

    #[test]
    fn an_http2_preface_is_complete_with_its_settings_frame() {
        let whole = preface_with_settings(3);
        for cut in 0..whole.len() {
            assert_eq!(verdict(&whole[..cut], 16_384), Verdict::NeedMore, "{cut}");
        }
        assert_eq!(verdict(&whole, 16_384), Verdict::Complete);
        assert_eq!(
            verdict(&preface_with_settings(0), 16_384),
            Verdict::Complete
        );
        let mut ping = H2_PREFACE.to_vec();
        ping.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
        assert_eq!(verdict(&ping, 16_384), Verdict::Foreign);
    }

    #[test]
    fn an_http1_head_is_complete_at_its_blank_line_and_bounded() {
        let head = b"POST /unsubscribe/abc HTTP/1.1\r\nHost: x\r\n\r\nList-Unsubscribe=One-Click";
        assert_eq!(verdict(&head[..20], 1024), Verdict::NeedMore);
        assert_eq!(verdict(head, 1024), Verdict::Complete);
        assert_eq!(verdict(head, 20), Verdict::TooLarge);
        assert_eq!(verdict(b"\x16\x03\x01", 1024), Verdict::Foreign);
    }
}
