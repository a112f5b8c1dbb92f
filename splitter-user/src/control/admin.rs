//! The admin HTTP server: `GET /metrics` (Prometheus text) and `GET /healthz`, on
//! `admin_listen`. It runs on the control plane's own runtime, so a scrape never delays a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http1::limits::Limits;
use crate::http1::request::{parse_request, Method};
use crate::metrics::Renderer;

/// An admin request must arrive whole within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin requests have no body worth reading; their heads are small.
const LIMITS: Limits = Limits {
    max_header_bytes: 8192,
    max_body: 0,
};

/// Serves admin requests until the future is dropped. `draining` turns `/healthz` to 503, so a
/// balancer in front stops sending new connections while requests in progress finish.
pub async fn serve(listener: TcpListener, renderer: Renderer, draining: watch::Receiver<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let renderer = renderer.clone();
        let draining = *draining.borrow();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, handle(stream, &renderer, draining)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, renderer: &Renderer, draining: bool) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut forward = Vec::new();
    let mut head_only = false;
    let (status, content_type, body) = loop {
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
                    (b"/metrics", true) => (
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        renderer.render(),
                    ),
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
