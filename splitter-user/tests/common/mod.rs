//! The shared harness (`splitter-test-support`), given the binary under test: Cargo names it
//! only while it compiles this package's integration tests.

pub use splitter_test_support::*;

/// The `splitter` executable built for these tests.
pub const SPLITTER: Binary = Binary::new(env!("CARGO_BIN_EXE_splitter"));
