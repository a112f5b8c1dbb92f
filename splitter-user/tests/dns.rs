//! SPEC 9, Names: a backend `address` that is a host name is resolved again every
//! `dns_refresh_s` (and by a reload); a backend stays on its address while the answer still
//! has it, whatever the answer's order, and moves, its old connections drained, once its address
//! left the answer; of a fresh answer it takes the first IPv4 address.
//!
//! Black-box, over real sockets: the splitter runs in a mount namespace of its own with a
//! scratch hosts file bind-mounted over `/etc/hosts` ([`with_hosts_file`]), which the test
//! rewrites in place; the machine's `/etc/hosts` is never touched. That takes root, so these
//! tests are `#[ignore]`d; test.sh runs them as root. Two raw peers stand for the two addresses
//! of the name `bk1`: 127.0.0.2 and 127.0.0.3, on one port, each answering with its label.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// How long a test waits for what should follow within a refresh period or two (a bound).
const WAIT: Duration = Duration::from_secs(10);

/// `dns_refresh_s` of the refresh test, and how long its test waits for a move that must not
/// come: two refresh periods and a half.
const REFRESH_S: u64 = 1;
const TWO_REFRESHES: Duration = Duration::from_millis(2_500 * REFRESH_S);

const WHY_ROOT: &str = "a mount namespace with its own /etc/hosts";

/// A keep-alive peer on one address: answers with its label as the body's `backend`, and counts
/// the connections the splitter closed.
struct Peer {
    peer: RawPeer,
    closed: Arc<AtomicUsize>,
}

impl Peer {
    fn start(addr: SocketAddr, label: &'static str) -> Peer {
        let closed = Arc::new(AtomicUsize::new(0));
        let peer = {
            let closed = Arc::clone(&closed);
            RawPeer::start_on(addr, move |mut conn| {
                // The splitter's pool keeps it idle as long as it likes: no timeout of its own,
                // so that only the splitter ends it.
                conn.stream().set_read_timeout(None).unwrap();
                while let Some(req) = conn.next_request() {
                    if !conn.write(&http_json(&priced_body(label, &req.req_id(), "1"), "")) {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
            })
        };
        Peer { peer, closed }
    }

    fn accepted(&self) -> usize {
        self.peer.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The peers of `bk1`: on 127.0.0.2 and 127.0.0.3, at the same port.
fn two_and_three() -> (Peer, Peer) {
    let two = Peer::start("127.0.0.2:0".parse().unwrap(), ".2");
    let port = two.peer.addr.port();
    let three = Peer::start(SocketAddr::from(([127, 0, 0, 3], port)), ".3");
    (two, three)
}

/// A hosts file: `localhost`, then `bk1` at each of `bk1`, in that order.
fn hosts_text(bk1: &[&str]) -> String {
    let mut text = String::from("127.0.0.1 localhost\n");
    for ip in bk1 {
        text.push_str(&format!("{ip} bk1\n"));
    }
    text
}

/// Rewrites the hosts file in place (truncated and written, the same inode): the bind mount in
/// the splitter's namespace shows the new contents.
fn set_hosts(path: &Path, bk1: &[&str]) {
    std::fs::write(path, hosts_text(bk1)).unwrap();
}

/// One worker (one pool), backend `x` at `address`, a route to it, and `top`.
fn splitter_config(top: &str, address: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\n\
         backend_idle_timeout_ms = 600000\n{top}\n\
         [[backend]]\nname = \"x\"\naddress = \"{address}\"\n\
         [[route]]\npath_prefix = \"/\"\ntimeout_ms = 2000\n"
    )
}

/// `splitter run` on `config`, with `hosts` for its `/etc/hosts`.
fn run(config: &str, hosts: &Path) -> Splitter {
    let hosts = PathBuf::from(hosts);
    SPLITTER.run_with(config, move |cmd| with_hosts_file(cmd, &hosts))
}

/// Sends `n` requests on `client`: the label of the peer that answered each.
fn answered_by(client: &mut Client, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let r = client.request(&bid("/x", &id));
            r.assert_won(&id);
            r.json_str("backend").expect("a body with its backend")
        })
        .collect()
}

/// Sends requests on `client` until `label` answers one (bounded): a worker takes a new
/// configuration a moment after the control plane logged it.
fn until_answered_by(client: &mut Client, label: &str, tag: &str) {
    let mut seen = Vec::new();
    let found = wait_for(WAIT, || {
        let by = answered_by(client, 1, &format!("{tag}-{}", seen.len())).remove(0);
        seen.push(by);
        seen.last().is_some_and(|by| by == label)
    });
    assert!(found.is_some(), "{label} never answered: {seen:?}");
}

fn all(label: &str, n: usize) -> Vec<String> {
    vec![label.to_string(); n]
}

/// A line "backend address changed" after line `from`, within `timeout`.
fn moved_line(s: &Splitter, from: usize, timeout: Duration) -> Option<String> {
    s.wait_log(from, timeout, |l| l.contains("backend address changed"))
}

#[test]
#[ignore = "needs root: a mount namespace with its own /etc/hosts"]
fn a_refresh_keeps_a_backend_on_an_address_still_answered_and_moves_it_once_it_left() {
    require_root(WHY_ROOT);
    let (two, three) = two_and_three();
    let port = two.peer.addr.port();
    let dir = TempDir::new("dns-refresh");
    let hosts = dir.write("hosts", &hosts_text(&["127.0.0.3", "127.0.0.2"]));
    let top = format!("dns_refresh_s = {REFRESH_S}");
    let s = run(&splitter_config(&top, &format!("bk1:{port}")), &hosts);
    let mut client = s.client();
    assert_eq!(answered_by(&mut client, 3, "first"), all(".3", 3));
    assert_eq!(
        (three.accepted(), two.accepted()),
        (1, 0),
        "one pooled connection"
    );

    // The same two addresses, the other way round: .3 is still answered, nothing moves.
    let from = s.log_count();
    set_hosts(&hosts, &["127.0.0.2", "127.0.0.3"]);
    assert_eq!(
        moved_line(&s, from, TWO_REFRESHES),
        None,
        "a reordered answer moved the backend:\n{}",
        s.log_snapshot()[from..].join("\n")
    );
    assert_eq!(answered_by(&mut client, 3, "reordered"), all(".3", 3));
    assert_eq!(three.closed(), 0, "the pooled connection to .3 was closed");
    assert_eq!(
        (three.accepted(), two.accepted()),
        (1, 0),
        "still the one connection"
    );

    // .3 left the answer: the backend moves to .2, and its connection to .3 is closed.
    let from = s.log_count();
    set_hosts(&hosts, &["127.0.0.2"]);
    let line = moved_line(&s, from, WAIT).expect("no \"backend address changed\" once .3 left");
    assert!(
        line.contains(&format!("from=127.0.0.3:{port}"))
            && line.contains(&format!("to=127.0.0.2:{port}")),
        "{line}"
    );
    until_answered_by(&mut client, ".2", "moving");
    assert_eq!(answered_by(&mut client, 3, "moved"), all(".2", 3));
    assert!(
        wait_for(WAIT, || three.closed() == 1).is_some(),
        "the idle connection to .3 was not closed once .3 left the answer"
    );
}

#[test]
#[ignore = "needs root: a mount namespace with its own /etc/hosts"]
fn a_reload_keeps_a_backend_on_an_address_still_answered_and_moves_it_once_it_left() {
    require_root(WHY_ROOT);
    let (two, three) = two_and_three();
    let port = two.peer.addr.port();
    let dir = TempDir::new("dns-reload");
    let hosts = dir.write("hosts", &hosts_text(&["127.0.0.3", "127.0.0.2"]));
    // No refresh during the test: only the reloads resolve the name again.
    let config = splitter_config("dns_refresh_s = 3600", &format!("bk1:{port}"));
    let s = run(&config, &hosts);
    let mut client = s.client();
    assert_eq!(answered_by(&mut client, 3, "first"), all(".3", 3));

    let reload = || {
        let from = s.log_count();
        s.signal(libc::SIGHUP);
        s.wait_log(from, WAIT, |l| l.contains("configuration reloaded"))
            .unwrap_or_else(|| panic!("no reload:\n{}", s.log_snapshot()[from..].join("\n")));
        s.log_snapshot()[from..].to_vec()
    };

    set_hosts(&hosts, &["127.0.0.2", "127.0.0.3"]);
    let lines = reload();
    assert!(
        !lines.iter().any(|l| l.contains("backend address changed")),
        "a reordered answer moved the backend at a reload:\n{}",
        lines.join("\n")
    );
    assert_eq!(answered_by(&mut client, 3, "reordered"), all(".3", 3));
    assert_eq!(
        three.closed(),
        0,
        "the reload closed the pooled connection to .3"
    );
    assert_eq!(
        (three.accepted(), two.accepted()),
        (1, 0),
        "still the one connection"
    );

    set_hosts(&hosts, &["127.0.0.2"]);
    let lines = reload();
    assert!(
        lines.iter().any(|l| l.contains("backend address changed")),
        "no \"backend address changed\" at the reload once .3 left:\n{}",
        lines.join("\n")
    );
    until_answered_by(&mut client, ".2", "moving");
    assert_eq!(answered_by(&mut client, 3, "moved"), all(".2", 3));
    assert!(
        wait_for(WAIT, || three.closed() == 1).is_some(),
        "the idle connection to .3 was not closed once .3 left the answer"
    );
}

/// Debian's /etc/hosts names `localhost` `::1` and `127.0.0.1`, and the resolver answers `::1`
/// first: the backend takes 127.0.0.1, the first IPv4 address, where an IPv4-only server
/// listens.
#[test]
#[ignore = "needs root: a mount namespace with its own /etc/hosts"]
fn a_host_name_takes_the_first_ipv4_address_of_its_answer() {
    require_root(WHY_ROOT);
    let v4 = Peer::start("127.0.0.1:0".parse().unwrap(), "v4");
    let port = v4.peer.addr.port();
    let dir = TempDir::new("dns-v4");
    let hosts = dir.write("hosts", "::1 localhost\n127.0.0.1 localhost\n");
    let s = run(&splitter_config("", &format!("localhost:{port}")), &hosts);
    let started = s
        .log_snapshot()
        .into_iter()
        .find(|l| l.contains("splitter started"))
        .unwrap();
    assert!(
        started.contains(&format!("x=127.0.0.1:{port}")),
        "{started}"
    );
    let mut client = s.client();
    assert_eq!(answered_by(&mut client, 2, "v4"), all("v4", 2));
}
