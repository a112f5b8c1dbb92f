//! The runtime on real sockets and real time (loopback only, each bounded).

use std::cell::{Cell, RefCell};
use std::io::{Read as _, Write as _};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::driver::Sock;
use super::*;

fn rt() -> Runtime {
    Runtime::new(64).expect("io_uring with DEFER_TASKRUN (Linux 6.1)")
}

/// A connected pair: the ring's end, and a blocking std end for the test to drive.
fn pair(rt: &Runtime) -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ours = rt.block_on(TcpStream::connect(addr)).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (ours, theirs)
}

#[test]
fn spawned_tasks_run_and_block_on_returns_the_main_output() {
    let rt = rt();
    let ran = Rc::new(Cell::new(0));
    let out = rt.block_on({
        let ran = Rc::clone(&ran);
        async move {
            for _ in 0..3 {
                let ran = Rc::clone(&ran);
                spawn(async move { ran.set(ran.get() + 1) });
            }
            sleep_until(Instant::now() + Duration::from_millis(5)).await;
            42
        }
    });
    assert_eq!(out, 42);
    assert_eq!(ran.get(), 3);
}

#[test]
fn sleeps_end_in_deadline_order_and_not_before() {
    let rt = rt();
    let order = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now();
    rt.block_on({
        let order = Rc::clone(&order);
        async move {
            for ms in [30u64, 10, 20] {
                let order = Rc::clone(&order);
                spawn(async move {
                    let at = start + Duration::from_millis(ms);
                    sleep_until(at).await;
                    assert!(Instant::now() >= at);
                    order.borrow_mut().push(ms);
                });
            }
            sleep_until(start + Duration::from_millis(60)).await;
        }
    });
    assert_eq!(*order.borrow(), [10, 20, 30]);
}

#[test]
fn a_reset_sleep_ends_at_its_new_deadline_and_a_dropped_one_never_wakes() {
    let rt = rt();
    let start = Instant::now();
    rt.block_on(async move {
        let mut sleep = sleep_until(start + Duration::from_millis(5));
        // Registered at the first poll.
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut sleep).poll(cx).is_pending());
        sleep.reset(start + Duration::from_millis(40));
        sleep.await;
        assert!(start.elapsed() >= Duration::from_millis(40));

        // A dropped sleep's slot is reused by the next: the old deadline must not fire it.
        let mut early = sleep_until(Instant::now() + Duration::from_millis(5));
        assert!(Pin::new(&mut early).poll(cx).is_pending());
        drop(early);
        let late_at = Instant::now() + Duration::from_millis(40);
        sleep_until(late_at).await;
        assert!(Instant::now() >= late_at);
    });
}

#[test]
fn another_thread_wakes_a_waiting_task() {
    let rt = rt();
    let (tx, mut rx) = tokio::sync::watch::channel(0);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(7).unwrap();
        // Keep the sender alive until the value is seen.
        std::thread::sleep(Duration::from_millis(200));
    });
    let got = rt.block_on(async move {
        rx.changed().await.unwrap();
        *rx.borrow()
    });
    assert_eq!(got, 7);
    sender.join().unwrap();
}

#[test]
fn bytes_go_both_ways_and_a_short_read_clears_the_readiness() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        let (res, _) = ours.write_all(b"ping".to_vec()).await;
        res.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        theirs.write_all(b"pong").unwrap();
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"pong");
        // Drained: clean without asking the socket.
        assert!(ours.idle_clean(|| panic!("no event came since the read")));

        // A byte arrives while idle: the poll marks it, and the peek decides.
        theirs.write_all(b"!").unwrap();
        ours.readable().await;
        assert!(!ours.idle_clean(|| false));

        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        let (res, buf) = ours.read_ready(buf).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(buf, b"pong!");
        let (res, _) = ours.read_ready(buf).await;
        assert_eq!(res.unwrap(), 0, "the end of the stream");
    });
}

#[test]
fn a_read_dropped_in_flight_is_cancelled_and_the_socket_still_works() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        // Nothing to read: the read waits in the ring until the timeout drops it.
        let read = ours.read(Vec::with_capacity(64));
        let deadline = Instant::now() + Duration::from_millis(20);
        let mut read = std::pin::pin!(read);
        let mut sleep = sleep_until(deadline);
        std::future::poll_fn(|cx| {
            if read.as_mut().poll(cx).is_ready() {
                panic!("nothing was sent");
            }
            Pin::new(&mut sleep).poll(cx)
        })
        .await;
    });
    rt.block_on(async {
        theirs.write_all(b"after").unwrap();
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"after");
    });
}

#[test]
fn a_listener_accepts_and_a_refused_connect_fails() {
    let rt = rt();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = TcpListener::from_std(std_listener);
    rt.block_on(async {
        let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
        let accepted = listener.accept().await.unwrap();
        let client = client.join().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());

        // A port nobody listens on (bound, not listening).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let err = TcpStream::connect(closed_addr).await.err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    });
}

#[test]
fn many_tasks_exchange_on_many_sockets() {
    let rt = rt();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..32 {
            let (mut s, _) = listener.accept().unwrap();
            peers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => s.write_all(&buf[..n]).unwrap(),
                    }
                }
            }));
        }
        for p in peers {
            p.join().unwrap();
        }
    });
    let done = Rc::new(Cell::new(0));
    rt.block_on({
        let done = Rc::clone(&done);
        async move {
            for i in 0..32u8 {
                let done = Rc::clone(&done);
                spawn(async move {
                    let s = TcpStream::connect(addr).await.unwrap();
                    for round in 0..20u8 {
                        let msg = vec![i ^ round; 100];
                        let (res, msg) = s.write_all(msg).await;
                        res.unwrap();
                        let mut got = Vec::with_capacity(256);
                        while got.len() < 100 {
                            let (res, back) = s.read_ready(got).await;
                            got = back;
                            assert!(res.unwrap() > 0);
                        }
                        assert_eq!(got, msg);
                    }
                    done.set(done.get() + 1);
                });
            }
            let until = Instant::now() + Duration::from_secs(10);
            while done.get() < 32 && Instant::now() < until {
                sleep_until(Instant::now() + Duration::from_millis(5)).await;
            }
        }
    });
    assert_eq!(done.get(), 32);
    echo.join().unwrap();
}

#[test]
fn the_end_of_the_stream_that_came_with_the_last_bytes_is_read() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    // The last bytes and the FIN arrive before any read: the poll reports both at once, and the
    // short read that takes the bytes must not hide the end of the stream behind it.
    theirs.write_all(b"last").unwrap();
    theirs.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    rt.block_on(async {
        ours.readable().await;
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 4);
        let read = ours.read_ready(buf);
        let mut read = std::pin::pin!(read);
        let mut give_up = sleep_until(Instant::now() + Duration::from_secs(2));
        let n = std::future::poll_fn(|cx| {
            if let Poll::Ready((res, _)) = read.as_mut().poll(cx) {
                return Poll::Ready(res.unwrap());
            }
            if Pin::new(&mut give_up).poll(cx).is_ready() {
                panic!("the end of the stream was never read");
            }
            Poll::Pending
        })
        .await;
        assert_eq!(n, 0);
    });
}

/// A waker that counts its wake-ups.
struct Counting(std::sync::atomic::AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_read_armed_before_the_bytes_is_submitted_by_the_poll_and_wakes_its_task_once() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        let wakes = Arc::new(Counting(0.into()));
        let waker = Waker::from(Arc::clone(&wakes));
        let read = ours.read_ready(Vec::with_capacity(64));
        let mut read = std::pin::pin!(read);
        let cx = &mut Context::from_waker(&waker);
        assert!(read.as_mut().poll(cx).is_pending(), "nothing was sent");
        theirs.write_all(b"bytes").unwrap();
        // Other turns go by (this task sleeps on its own waker) until the read is done.
        let give_up = Instant::now() + Duration::from_secs(2);
        while wakes.0.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < give_up, "the armed read never completed");
            sleep_until(Instant::now() + Duration::from_millis(1)).await;
        }
        let Poll::Ready((res, buf)) = read.as_mut().poll(cx) else {
            panic!("woken before the read completed");
        };
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"bytes");
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "woken by the read only, not first by the poll's event"
        );
    });
}

#[test]
fn an_armed_read_dropped_before_its_event_leaves_nothing_behind() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        {
            let read = ours.read_ready(Vec::with_capacity(64));
            let mut read = std::pin::pin!(read);
            let cx = &mut Context::from_waker(Waker::noop());
            assert!(read.as_mut().poll(cx).is_pending());
        }
        // The event that comes now has no read to submit; the next read takes the bytes.
        theirs.write_all(b"later").unwrap();
        ours.readable().await;
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"later");
    });
}

#[test]
fn a_write_nobody_waits_for_ends_whole_past_a_full_socket_buffer() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    // Far more than the socket buffers hold: the kernel must finish the short write itself.
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        theirs.read_exact(&mut got).unwrap();
        assert!(got == expected, "the bytes arrive whole and in order");
        theirs.write_all(b"done").unwrap();
    });
    rt.block_on(async {
        let mut write = ours.start_write(big);
        assert!(
            !write.ended_whole(),
            "still in flight: the peer has not read"
        );
        let (res, _) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 4);
        assert!(write.ended_whole());
    });
    reader.join().unwrap();
}

#[test]
fn a_write_to_a_reset_connection_does_not_end_whole() {
    let rt = rt();
    let (ours, theirs) = pair(&rt);
    // Closed with unread bytes, so the kernel resets the connection.
    socket2::SockRef::from(&theirs)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(theirs);
    rt.block_on(async {
        let mut write = ours.start_write(vec![1u8; 64 << 10]);
        let (res, _) = ours.read_ready(Vec::with_capacity(64)).await;
        assert!(matches!(res, Ok(0) | Err(_)), "the read sees the reset");
        // The write failed as it was submitted, in the turn before the read's.
        assert!(!write.ended_whole());
    });
}

#[test]
fn a_connection_waiting_for_its_next_bytes_takes_a_buffer_only_when_they_come() {
    thread_local! {
        static TAKEN: Cell<usize> = const { Cell::new(0) };
    }
    fn take() -> Vec<u8> {
        TAKEN.with(|t| t.set(t.get() + 1));
        Vec::with_capacity(64)
    }
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        let wakes = Arc::new(Counting(0.into()));
        let waker = Waker::from(Arc::clone(&wakes));
        let read = ours.read_next(take);
        let mut read = std::pin::pin!(read);
        let cx = &mut Context::from_waker(&waker);
        assert!(read.as_mut().poll(cx).is_pending());
        // Turns go by with nothing to read: no buffer is taken.
        sleep_until(Instant::now() + Duration::from_millis(5)).await;
        assert_eq!(TAKEN.with(Cell::get), 0, "no buffer while nothing came");
        theirs.write_all(b"next").unwrap();
        let give_up = Instant::now() + Duration::from_secs(2);
        while wakes.0.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < give_up, "the read never completed");
            sleep_until(Instant::now() + Duration::from_millis(1)).await;
        }
        let Poll::Ready((res, buf)) = read.as_mut().poll(cx) else {
            panic!("woken before the read completed");
        };
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"next");
        assert_eq!(TAKEN.with(Cell::get), 1);
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "woken once, by the bytes"
        );

        // Dropped while armed: nothing taken, nothing left; the socket reads on.
        {
            let read = ours.read_next(take);
            let mut read = std::pin::pin!(read);
            assert!(read.as_mut().poll(cx).is_pending());
        }
        theirs.write_all(b"more").unwrap();
        let (res, buf) = ours.read_next(take).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"more");
        assert_eq!(TAKEN.with(Cell::get), 2);
    });
}

#[test]
fn sockets_go_by_registered_slots_which_are_reused_only_after_a_submission() {
    let rt = rt();
    let (ours, mut theirs) = pair(&rt);
    rt.block_on(async {
        let Sock::Fixed(first) = ours.sock() else {
            panic!("a socket made on the runtime is registered");
        };
        let (res, _) = ours.write_all(b"fixed".to_vec()).await;
        res.unwrap();
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"fixed");
        theirs.write_all(b"back").unwrap();
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"back");

        // Given back: not reused before the next submission, reused after it.
        drop(ours);
        let (a, _b) = pair_std();
        let next = TcpStream::from_std(a);
        assert!(matches!(next.sock(), Sock::Fixed(slot) if slot != first));
        sleep_until(Instant::now() + Duration::from_millis(1)).await;
        let (a, _b) = pair_std();
        let reused = TcpStream::from_std(a);
        assert_eq!(reused.sock(), Sock::Fixed(first));
    });
}

#[test]
fn a_socket_made_off_the_runtime_goes_by_its_descriptor() {
    let rt = rt();
    let (a, mut b) = pair_std();
    let ours = TcpStream::from_std(a);
    assert!(matches!(ours.sock(), Sock::Fd(_)));
    rt.block_on(async {
        b.write_all(b"plain").unwrap();
        let (res, buf) = ours.read_ready(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"plain");
    });
}

/// A connected pair of std sockets, the first non-blocking.
fn pair_std() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    a.set_nonblocking(true).unwrap();
    let (b, _) = listener.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (a, b)
}

/// A worker with many sockets waiting sleeps for a batch of completions (`batch`), and a
/// completion that comes alone is taken once the batch's wait has passed: here the one read
/// among 64 waiting ones, with no timer pending that could end the sleep instead. The sockets
/// are connected before the runtime starts, so that wait is the runtime's first sleep, made
/// while batching is on.
#[test]
fn a_lone_completion_on_a_busy_ring_is_taken_without_its_batch() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..64 {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        ours.push(s);
        theirs.push(listener.accept().unwrap().0);
    }
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = rt();
        let got = rt.block_on(async move {
            let mut socks: Vec<_> = ours.into_iter().map(TcpStream::from_std).collect();
            let target = socks.remove(0);
            for s in socks {
                spawn(async move {
                    let _ = s.read_ready(Vec::with_capacity(16)).await;
                });
            }
            let (res, buf) = target.read_ready(Vec::with_capacity(16)).await;
            res.unwrap();
            let driver = with_core(|core| {
                let d = core.driver.borrow();
                (d.batches, d.batched_sleeps)
            });
            (buf, driver)
        });
        let _ = got_tx.send(got);
    });
    // Let the runtime go to sleep on its 64 reads first.
    std::thread::sleep(Duration::from_millis(50));
    theirs[0].write_all(b"x").unwrap();
    let (got, (batches, batched_sleeps)) = got_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the lone read completed");
    assert_eq!(got, b"x");
    if batches {
        assert!(batched_sleeps > 0, "the runtime slept for a batch");
    }
}
