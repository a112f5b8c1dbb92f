//! Per-worker buffer reuse: the byte buffers of requests and responses come from, and go back
//! to, a free list owned by the worker's thread, so the steady state allocates nothing for them.
//! Thread-local is the point: each worker thread has its own list, nothing is shared.

use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;

/// Buffers kept per worker. Enough for the requests and responses in flight on a busy worker;
/// beyond it buffers are freed rather than hoarded.
const MAX_POOLED: usize = 1024;

/// Buffers bigger than this (an unusually large body) are freed instead of pooled, so one big
/// request does not pin its memory for the life of the worker. Requests and replies of 1-3 KB,
/// their heads, and a read's room fit many times over.
pub const MAX_POOLED_CAPACITY: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes.
pub fn take(capacity: usize) -> Vec<u8> {
    let mut buf = FREE.with_borrow_mut(Vec::pop).unwrap_or_default();
    buf.reserve(capacity);
    buf
}

/// Returns a buffer for reuse.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    buf.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    });
}

/// A buffer written, as it is, to several sockets (the request every backend gets). Cloning
/// shares it without copying, with a plain (non-atomic) count; the last one returns it to the
/// pool.
#[derive(Clone)]
pub struct Shared(Rc<Pooled>);

struct Pooled(Vec<u8>);

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl Shared {
    /// Shares `buf`.
    pub fn new(buf: Vec<u8>) -> Shared {
        Shared(Rc::new(Pooled(buf)))
    }
}

impl Deref for Shared {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0 .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_capacity() {
        let mut b = take(100);
        b.extend_from_slice(b"hello");
        let cap = b.capacity();
        give(b);
        let again = take(10);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
    }

    #[test]
    fn shared_returns_to_the_pool_when_the_last_clone_goes() {
        let mut b = take(4096);
        b.extend_from_slice(b"request");
        let ptr = b.as_ptr();
        let s = Shared::new(b);
        let t = s.clone();
        drop(s);
        assert_eq!(&*t, b"request");
        drop(t);
        let again = take(1);
        assert_eq!(again.as_ptr(), ptr);
    }

    #[test]
    fn huge_buffers_are_not_kept() {
        give(Vec::with_capacity(MAX_POOLED_CAPACITY + 1));
        assert!(take(0).capacity() <= MAX_POOLED_CAPACITY);
    }
}
