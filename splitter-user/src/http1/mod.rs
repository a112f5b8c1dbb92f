//! HTTP/1.1 framing, sans-IO: bytes in, decisions and bytes out; no sockets, no clock.
//!
//! - [`request`]: client request heads, parsed strictly, and the head forwarded to backends.
//! - [`response`]: backend response heads and how their bodies are framed.
//! - [`body`]: how a body is delimited, and the one body decoder both roles use.
//! - [`reply`]: one backend reply read to its end, within its byte and read budgets.
//! - [`chunked`]: the chunked transfer coding, both ways.
//! - [`encode`]: what the splitter writes to clients, and which fields are hop-by-hop.
//! - [`limits`]: every size bound.
//!
//! Rules shared by both roles (framing fields, connection options, line endings) live in a private
//! `fields` module; its error type is re-exported here.

pub mod body;
pub mod chunked;
pub mod encode;
mod fields;
pub mod limits;
pub mod reply;
pub mod request;
pub mod response;

pub use fields::FramingError;
