//! `io = "auto" | "uring" | "epoll"`: each shell serves, and the start-up line names the one in
//! use. (The whole suite also runs once per shell: see `with_io_shell` in the harness.)

mod common;

use common::{config, Mock, Splitter, SPLITTER};

fn start_with(io: &str, backend: &Mock) -> Splitter {
    SPLITTER.run(&config(
        &format!("io = \"{io}\""),
        "",
        &[("a", backend.addr)],
        &[("/", 2000)],
    ))
}

fn started_line(s: &Splitter) -> String {
    s.log_snapshot()
        .into_iter()
        .find(|l| l.contains("splitter started"))
        .expect("start-up line")
}

#[test]
fn epoll_shell_serves_and_says_so() {
    let backend = SPLITTER.mock_backend("a", &["--price", "3"]);
    let s = start_with("epoll", &backend);
    assert!(
        started_line(&s).contains("io=\"epoll\""),
        "{}",
        started_line(&s)
    );
    for i in 0..20 {
        s.request(&common::bid("/x", &format!("e{i}")))
            .assert_won(&format!("e{i}"));
    }
}

#[test]
fn uring_shell_serves_and_says_so() {
    let backend = SPLITTER.mock_backend("a", &["--price", "3"]);
    let s = start_with("uring", &backend);
    assert!(
        started_line(&s).contains("io=\"uring\""),
        "{}",
        started_line(&s)
    );
    for i in 0..20 {
        s.request(&common::bid("/x", &format!("u{i}")))
            .assert_won(&format!("u{i}"));
    }
}

#[test]
fn auto_picks_uring_where_the_kernel_allows_it() {
    let backend = SPLITTER.mock_backend("a", &["--price", "3"]);
    let s = start_with("auto", &backend);
    // This machine allows io_uring (the uring test above proves it), so auto must take it.
    assert!(
        started_line(&s).contains("io=\"uring\""),
        "{}",
        started_line(&s)
    );
}
