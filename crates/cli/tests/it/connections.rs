//! Connection admission over real sockets: silent connections are closed after the handshake
//! timeout, how many may wait is bounded, slow but timely clients are served, and oversized
//! header blocks are refused, all without disturbing other clients.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tutela_testkit::{HealthClient, TestSuite};

/// Waits until the server closes `stream` (read returns 0 or fails), at most `limit`; returns
/// when, or `None` if it stayed open.
async fn closed_within(mut stream: TcpStream, start: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            // The server never writes to a connection that sent nothing; keep reading anyway.
            Ok(Ok(_)) => {}
        }
    }
}

async fn silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    streams
}

/// Health checks on `client` every 50 ms until `stop`; panics on the first failure.
async fn keep_calling(mut client: HealthClient<Channel>, stop: Instant) -> usize {
    let mut calls = 0;
    while Instant::now() < stop {
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("a connected client keeps being served");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    calls
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_handshake_timeout_while_calls_go_on() {
    let suite = TestSuite::start_with(|c| c.server.handshake_timeout_secs = 1)
        .await
        .unwrap();
    let start = Instant::now();
    let streams = silent(suite.addr(), 200).await;
    let calls = tokio::spawn(keep_calling(suite.health(), start + Duration::from_secs(3)));
    let closed = futures::future::join_all(
        streams
            .into_iter()
            .map(|s| closed_within(s, start, Duration::from_secs(10))),
    )
    .await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} of 200 silent connections are still open after 10 s"
    );
    let first = closed.iter().flatten().min().unwrap();
    assert!(
        *first >= Duration::from_secs(1),
        "closed after {first:?}, before the timeout"
    );
    assert!(calls.await.unwrap() > 10);
    // A new client connects and is served as ever.
    let fresh = Endpoint::from_shared(format!("http://{}", suite.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(fresh)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn at_most_the_configured_number_of_connections_wait_for_their_preface() {
    let suite = TestSuite::start_with(|c| {
        c.server.handshake_timeout_secs = 1;
        c.server.max_pending_handshakes = 10;
    })
    .await
    .unwrap();
    // Connected before the flood, so it is not queued behind it.
    let client = suite.health();
    client
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let start = Instant::now();
    let streams = silent(suite.addr(), 30).await;
    let calls = tokio::spawn(keep_calling(client, start + Duration::from_secs(3)));
    let closed = futures::future::join_all(
        streams
            .into_iter()
            .map(|s| closed_within(s, start, Duration::from_secs(15))),
    )
    .await;
    assert!(closed.iter().all(Option::is_some), "{closed:?}");
    // Ten at a time, one timeout each: the last ten were taken up only after two rounds.
    let last = closed.iter().flatten().max().unwrap();
    assert!(
        *last >= Duration::from_millis(2900),
        "all 30 closed within {last:?}: more than 10 waited at once"
    );
    assert!(calls.await.unwrap() > 10);
}

/// A connection that writes its first `slow` bytes one at a time, 30 ms apart.
struct Trickle {
    stream: TcpStream,
    slow: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.slow == 0 || buf.is_empty() {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(30))));
        ready!(pause.as_mut().poll(cx));
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &buf[..1]))?;
        this.pause = None;
        this.slow -= n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_slow_but_timely_preface_or_request_head_is_served() {
    let suite = TestSuite::start_with(|c| c.server.handshake_timeout_secs = 3)
        .await
        .unwrap();
    let addr = suite.addr();
    // HTTP/2: the 24-byte magic and the SETTINGS frame after it, a byte every 30 ms (~1.3 s).
    let start = Instant::now();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            let stream = TcpStream::connect(addr).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Trickle {
                stream,
                slow: 42,
                pause: None,
            }))
        }))
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest::default()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Still served on the same connection once the handshake timeout has long passed.
    tokio::time::sleep_until((start + Duration::from_secs(4)).into()).await;
    health.check(HealthCheckRequest::default()).await.unwrap();

    // HTTP/1.1: a request head a byte every 30 ms.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for byte in b"GET /unsubscribe/abc HTTP/1.1\r\nHost: tutela\r\n\r\n" {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 431"), "{answer}");
    // One request per HTTP/1.1 connection: the server closed it (read_to_end returned).
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[tokio::test]
async fn oversized_header_blocks_are_refused_without_harm_to_other_connections() {
    let suite = TestSuite::start().await.unwrap();
    let limit = suite.config().server.max_header_bytes as usize;
    let bystander = suite.health();
    bystander
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // HTTP/2: metadata beyond the header list size.
    let big = "x".repeat(limit + 1024);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-padding", big.parse().unwrap());
    let refused = HealthClient::new(suite.channel()).check(request).await;
    assert!(refused.is_err(), "{refused:?}");
    // The same channel and another client are served afterwards.
    HealthClient::new(suite.channel())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    bystander
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // HTTP/1.1: a request head beyond the limit gets 431 and the connection is closed.
    let mut stream = TcpStream::connect(suite.addr()).await.unwrap();
    let head = format!("GET /unsubscribe/abc HTTP/1.1\r\nHost: tutela\r\nX-Padding: {big}\r\n\r\n");
    // The server may close before it has read everything; what it answered is what counts.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    bystander
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}
