//! The admin HTTP server: `GET /metrics` (Prometheus text) and `GET /healthz`, on
//! `admin_listen`. It runs on the control plane's own runtime, so a scrape never delays a request.

use std::io;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http1::limits::Limits;
use crate::http1::request::{parse_request, Method};
use crate::metrics::{Format, Renderer};
use crate::worker::listener::AcceptBackoff;
use crate::worker::Stop;

/// An admin request must arrive whole within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin requests have no body worth reading; their heads are small.
const LIMITS: Limits = Limits {
    max_header_bytes: 8192,
    max_body: 0,
};

/// Serves admin requests until the future is dropped. `draining` turns `/healthz` to 503, so a
/// balancer in front stops sending new connections while requests in progress finish.
pub async fn serve(listener: TcpListener, renderer: Renderer, mut stop: watch::Receiver<Stop>) {
    // Readiness is read here rather than through tokio's `accept`, so that running out of
    // descriptors can be told apart from an empty queue (below).
    let listener = match listener
        .into_std()
        .map_err(|e| e.to_string())
        .and_then(|std| {
            // SAFETY: `std` owns its descriptor, and the AsyncFd owns `std` from here on.
            unsafe { AsyncFd::register(std) }.map_err(|e| e.to_string())
        }) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "admin listener");
            return;
        }
    };
    let mut backoff = AcceptBackoff::default();
    // One descriptor held in reserve: when the process runs out (`EMFILE`), giving it back lets
    // the admin port take one connection and say so, rather than go silent with the data plane.
    let mut reserve = reserve_fd();
    loop {
        if reserve.is_none() {
            reserve = reserve_fd();
        }
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(error = %e, "admin listener");
                    return;
                }
            },
            // The new process answers on this socket now.
            _ = stop.wait_for(|&s| s == Stop::HandedOver) => return,
        };
        let stream = match accept_now(ready.get_inner()) {
            Ok(stream) => {
                backoff.reset();
                stream
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.clear_ready();
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && reserve.is_some() => {
                drop(reserve.take());
                match accept_now(ready.get_inner()) {
                    Ok(stream) => {
                        // Served here rather than spawned, so that its descriptor, once
                        // closed, is the reserve again before the data plane's accept loops
                        // take it: the next scrape finds one too.
                        let draining = *stop.borrow() != Stop::No;
                        let served = handle(stream, &renderer, draining);
                        let _ = tokio::time::timeout(READ_TIMEOUT, served).await;
                    }
                    // Nothing was queued after all: wait for the next connection with the
                    // reserve taken back, not without it.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                    Err(_) => {}
                }
                reserve = reserve_fd();
                continue;
            }
            Err(e) => {
                let pause = backoff.next();
                tracing::warn!(error = %e, ?pause, "admin accept failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let renderer = renderer.clone();
        let draining = *stop.borrow() != Stop::No;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, handle(stream, &renderer, draining)).await;
        });
    }
}

/// One connection from the queue, or `WouldBlock` when it is empty.
fn accept_now(listener: &std::net::TcpListener) -> io::Result<TcpStream> {
    let (stream, _) = listener.accept()?;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// The value of the `Accept` field of a request head that parsed.
fn accept(head: &[u8]) -> Option<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; crate::http1::limits::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    // Leading empty lines were allowed by the parse that accepted the head; skip them here too.
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    request.parse(&head[start..]).ok()?;
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("accept"))
        .map(|h| h.value)
}

/// A descriptor to give back when the process has none left.
fn reserve_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

async fn handle(mut stream: TcpStream, renderer: &Renderer, draining: bool) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut forward = Vec::new();
    let mut head_only = false;
    let (status, content_type, body): (u16, &str, String) = loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        match parse_request(&buf, &LIMITS, &mut forward) {
            Ok(None) => continue,
            Err(e) => break (e.status(), "text/plain", String::new()),
            Ok(Some(head)) => {
                head_only = head.method == Method::Head;
                let get = matches!(head.method, Method::Get | Method::Head);
                break match (head.path(&buf), get) {
                    (b"/metrics", true) => {
                        let format = Format::for_accept(accept(&buf[..head.head_len]));
                        (200, format.content_type(), renderer.render(format))
                    }
                    (b"/healthz", true) if draining => (503, "text/plain", "draining\n".into()),
                    (b"/healthz", true) => (200, "text/plain", "ok\n".into()),
                    (_, true) => (404, "text/plain", "not found\n".into()),
                    (_, false) => (405, "text/plain", "method not allowed\n".into()),
                };
            }
        }
    };
    let reason = crate::http1::encode::reason(status);
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
