//! The accept loop: one task per connection, transient accept errors ridden out.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use super::conn::Conn;
use super::reply::MockConfig;

/// Listen backlog: benchmarks open hundreds of connections at once.
const BACKLOG: u32 = 4096;

/// Accepts connections until the listener fails and serves each in its own task.
///
/// Transient accept errors (a connection aborted before accept, out of descriptors or memory)
/// are logged and retried after a short pause; any other error is returned.
pub async fn serve(listener: TcpListener, cfg: Arc<MockConfig>) -> io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if accept_error_is_transient(&e) => {
                tracing::warn!(error = %e, "mock backend: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        // One write per reply batch: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        tokio::spawn(Conn::new(stream, cfg.clone()).run());
    }
}

fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

/// Binds with `SO_REUSEADDR` (quick restarts in scripts) and a large backlog.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
