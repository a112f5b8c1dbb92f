//! A raw HTTP/1.1 client: writes the bytes a test gives it, reads responses back one at a time
//! (pipelined ones stay buffered), and tells a close from a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::http::{bid, Fill, Response};

/// Default socket read and write timeout of a client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What a read that gave up waiting returns, so that [`Client::closed_within`] can tell it apart.
const TIMED_OUT: &str = "timed out";

/// A raw TCP client with a buffer for pipelined responses.
pub struct Client {
    stream: TcpStream,
    /// Received and not yet read as a response.
    pub buf: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects to `addr`; fails the test if it cannot.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects to `addr`; a refused or timed out connection is an error, not a panic.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes; an error (the peer closed) is returned, not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response (bounded by `timeout`).
    pub fn try_read_response_within(&mut self, timeout: Duration) -> Result<Response, String> {
        let until = Instant::now() + timeout;
        let Client { stream, buf, eof } = self;
        Response::read(buf, |buf| fill(stream, eof, buf, until))
    }

    pub fn try_read_response(&mut self) -> Result<Response, String> {
        self.try_read_response_within(IO_TIMEOUT)
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// True when the peer closes (EOF or reset) within `timeout`; bytes that arrive meanwhile
    /// (a final status) are kept in the buffer.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            match fill(&mut self.stream, &mut self.eof, &mut self.buf, until) {
                Ok(false) => return true,
                Ok(true) => continue,
                Err(e) if e == TIMED_OUT => return false,
                Err(_) => return true,
            }
        }
    }

    /// Reads a final status (if any) and checks the connection is then closed.
    pub fn expect_status_then_close(&mut self, status: u16, timeout: Duration) -> Response {
        let r = self
            .try_read_response_within(timeout)
            .unwrap_or_else(|e| panic!("expected a {status} response: {e}"));
        assert_eq!(r.status, status, "status; response {r:?}");
        assert!(
            self.closed_within(timeout),
            "the connection must be closed after a {status}"
        );
        r
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Reads more bytes into `buf`, waiting until `until` at the latest; `Ok(false)` at the end of
/// the stream, which `eof` remembers.
fn fill(stream: &mut TcpStream, eof: &mut bool, buf: &mut Vec<u8>, until: Instant) -> Fill {
    if *eof {
        return Ok(false);
    }
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(TIMED_OUT.into());
    }
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk) {
        Ok(0) => {
            *eof = true;
            Ok(false)
        }
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(TIMED_OUT.into())
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
        Err(e) => {
            *eof = true;
            Err(format!("read error: {e}"))
        }
    }
}

/// One `GET path` on a fresh connection: for an admin endpoint or a stats page.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut c = Client::try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.try_send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    c.try_read_response()
}

/// Connects to `addr` and checks that a simple request gets a 200 with its own id.
pub fn assert_serves(addr: SocketAddr, path: &str, req_id: &str) {
    Client::connect(addr)
        .request(&bid(path, req_id))
        .assert_won(req_id);
}
