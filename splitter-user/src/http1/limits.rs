//! Size limits of the HTTP/1.1 framing core.
//!
//! Every buffer the splitter grows on a peer's behalf is bounded by a value defined here: the
//! configured per-request ones in [`Limits`], the fixed ones as constants.

/// Client request limits, taken from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a request head, leading empty lines, request line, header lines and the final
    /// blank line included (`max_header_bytes`; beyond: 431).
    pub max_header_bytes: usize,
    /// Most bytes of a request body, counted after de-chunking (`max_request_body`; beyond: 413,
    /// a body of exactly this size is accepted).
    pub max_body: usize,
}

/// Most header fields in one head, request or response (beyond: 431 for a client, an invalid
/// response for a backend). Also the size of the stack array handed to `httparse`.
pub const MAX_HEADERS: usize = 100;

/// Most bytes of a backend response head, interim `1xx` responses included.
pub const MAX_RESPONSE_HEAD: usize = 16384;

/// Most hex digits in a chunk size. `usize::MAX` needs 16; more can only be zero padding, which no
/// real sender produces and which would otherwise let a peer stream an endless size line.
pub const MAX_CHUNK_SIZE_DIGITS: usize = 2 * std::mem::size_of::<usize>();

/// Most bytes of chunk extensions and trailer fields in one chunked body. They are parsed and
/// discarded, so without a cap a peer could stream them forever without growing the body.
pub const MAX_CHUNK_METADATA: usize = 16384;
