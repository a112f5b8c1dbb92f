//! Raw TCP backends run by the test itself, for what the mock backend cannot do: see the exact
//! bytes the splitter forwards, answer late, byte by byte, twice or with garbage.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::http::{Fill, RawRequest};

/// One connection accepted by a raw peer.
pub struct PeerConn {
    stream: TcpStream,
    buf: Vec<u8>,
    tx: Sender<RawRequest>,
}

impl PeerConn {
    /// Reads the next request (Content-Length or chunked body), and also hands it to the peer's
    /// `requests`; `None` at the end of the stream or on an error.
    pub fn next_request(&mut self) -> Option<RawRequest> {
        let PeerConn { stream, buf, tx } = self;
        let req = RawRequest::read(buf, |buf| fill(stream, buf)).ok()?;
        let _ = tx.send(req.clone());
        Some(req)
    }

    /// Writes `bytes`; false when the splitter has gone.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Closes the connection with a reset (`SO_LINGER` 0), not a FIN: what a crashing or
    /// overloaded server does.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid `linger` for SO_LINGER on our own socket, which stays open until the
        // drop below.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }

    /// The accepted socket itself, for what the methods above do not do (timeouts, buffer
    /// sizes, half-closes).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Reads more bytes into `buf`: the socket's own timeouts bound the wait.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Fill {
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n > 0);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A raw TCP backend: one thread per accepted connection, each calling the handler. Every
/// request read through [`PeerConn::next_request`] is also sent to `requests`.
pub struct RawPeer {
    pub addr: SocketAddr,
    pub requests: Receiver<RawRequest>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawPeer {
    pub fn start<F>(handler: F) -> RawPeer
    where
        F: Fn(PeerConn) + Send + Sync + 'static,
    {
        RawPeer::start_on("127.0.0.1:0".parse().unwrap(), handler)
    }

    /// [`RawPeer::start`] listening on `addr` (port 0: any free one), for a peer on another
    /// loopback address than 127.0.0.1, or on a port another peer has on another address.
    pub fn start_on<F>(addr: SocketAddr, handler: F) -> RawPeer
    where
        F: Fn(PeerConn) + Send + Sync + 'static,
    {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("raw peer: bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        // Non-blocking, so the accept loop sees `stop` and ends with the peer.
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let handler = Arc::new(handler);
        {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_secs(30)))
                                .unwrap();
                            stream
                                .set_write_timeout(Some(Duration::from_secs(10)))
                                .unwrap();
                            let _ = stream.set_nodelay(true);
                            let conn = PeerConn {
                                stream,
                                buf: Vec::new(),
                                tx: tx.clone(),
                            };
                            let handler = Arc::clone(&handler);
                            thread::spawn(move || handler(conn));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        RawPeer {
            addr,
            requests: rx,
            accepted,
            stop,
        }
    }

    /// A keep-alive peer answering every request with `reply(request)`.
    pub fn replying<F>(reply: F) -> RawPeer
    where
        F: Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static,
    {
        RawPeer::start(move |mut conn| {
            while let Some(req) = conn.next_request() {
                let out = reply(&req);
                if !conn.write(&out) {
                    return;
                }
            }
        })
    }

    /// Next request received (bounded wait).
    pub fn next_request(&self, timeout: Duration) -> RawRequest {
        self.requests
            .recv_timeout(timeout)
            .expect("the raw backend received no request in time")
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
