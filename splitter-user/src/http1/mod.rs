//! HTTP/1.1 framing, sans-IO.

pub mod chunked;
pub mod encode;
pub mod limits;
pub mod request;
pub mod response;
