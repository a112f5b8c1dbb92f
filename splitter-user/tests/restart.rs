//! Restarts under load (SPEC 10): a new `splitter run` takes the listening sockets of the
//! running one over (`handover_socket`), the old one drains and exits 0, and a client hammering
//! the port with `wrk` sees not one refused connection, socket error or non-2xx response across
//! five restarts in a row.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;

/// A configuration on fixed ports (a new process can only take over the address it is given)
/// with the handover socket in `dir`.
fn restart_config(
    dir: &TempDir,
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[&Mock],
) -> String {
    let mut c = format!(
        "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = 2\n\
         handover_socket = \"{}\"\n",
        dir.path.join("handover.sock").display()
    );
    for b in backends {
        c.push_str(&format!(
            "[[backend]]\nname = \"{}\"\naddress = \"{}\"\n",
            b.name, b.addr
        ));
    }
    c.push_str("[[route]]\npath_prefix = \"/\"\ntimeout_ms = 200\n");
    c
}

/// `new` started on the sockets of the process it replaces.
#[track_caller]
fn assert_took_over(new: &Splitter) {
    let log = new.log_snapshot();
    assert!(
        log.iter()
            .any(|l| l.contains("took the listening sockets over")),
        "{log:?}"
    );
}

#[test]
fn a_new_process_takes_the_sockets_and_the_old_one_drains() {
    let a = SPLITTER.mock_backend("a", &["--price-range", "1..2"]);
    let dir = TempDir::new("handover");
    let (listen, admin) = (free_addr(), free_addr());
    let config = restart_config(&dir, listen, admin, &[&a]);
    let mut old = SPLITTER.run(&config);
    assert_eq!(old.addr, listen);
    // A client connected before the restart, idle across it: its next request is answered by
    // the old process, with `Connection: close`.
    let mut before = old.client();
    before.send(&post("/bid", "r1", "{}"));
    assert_eq!(before.read_response().status, 200);

    let new = SPLITTER.run(&config);
    assert_took_over(&new);
    // New connections reach the new process; the old one stopped accepting.
    let r = new.request(&post("/bid", "r2", "{}"));
    assert_eq!(r.status, 200);
    // The old process drains once it has read the new one's `ready`, which the new one sends
    // as it starts: wait for that, not for the new one's start.
    old.wait_log(0, Duration::from_secs(15), |l| l.contains("handed over"))
        .expect("the old process hands over");
    before.send(&post("/bid", "r3", "{}"));
    let last = before.read_response();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    let status = old
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the old process exits");
    assert!(status.success(), "{status:?}");
    // The admin socket came along too.
    assert_eq!(new.admin, admin);
    assert_eq!(new.admin_get("/healthz").status, 200);
}

/// The handover socket's directory is made when missing (the default, /run/splitter, exists
/// only under systemd), so a hand-started upgrade takes the sockets over there too.
#[test]
fn the_handover_socket_directory_is_made_when_missing() {
    let a = SPLITTER.mock_backend("a", &[]);
    let dir = TempDir::new("handover-dir");
    let (listen, admin) = (free_addr(), free_addr());
    let socket = dir.path.join("run").join("splitter").join("handover.sock");
    let config = restart_config(&dir, listen, admin, &[&a]).replacen(
        &dir.path.join("handover.sock").display().to_string(),
        &socket.display().to_string(),
        1,
    );
    let mut old = SPLITTER.run(&config);
    assert!(
        socket.exists(),
        "no handover socket at {}",
        socket.display()
    );
    let new = SPLITTER.run(&config);
    assert_took_over(&new);
    let status = old
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the old one exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(new.request(&post("/bid", "after", "{}")).status, 200);
}

#[test]
fn another_address_is_not_taken_over() {
    let a = SPLITTER.mock_backend("a", &[]);
    let dir = TempDir::new("handover-other");
    let first = SPLITTER.run(&restart_config(&dir, free_addr(), free_addr(), &[&a]));
    let mut first_proc_alive = first;
    let second = SPLITTER.run(&restart_config(&dir, free_addr(), free_addr(), &[&a]));
    assert!(!second
        .log_snapshot()
        .iter()
        .any(|l| l.contains("took the listening sockets over")));
    thread::sleep(Duration::from_millis(200));
    assert!(first_proc_alive.proc.alive(), "the first one keeps serving");
    assert_eq!(
        first_proc_alive.request(&post("/bid", "x", "{}")).status,
        200
    );
}

#[test]
#[ignore = "needs wrk"]
fn five_restarts_under_wrk_load_fail_no_request() {
    let wrk = require_tool("wrk");
    let script = repo_path("bench/post-2k.lua");
    let a = SPLITTER.mock_backend("a", &["--price-range", "1..2"]);
    let b = SPLITTER.mock_backend("b", &["--price-range", "1..2"]);
    let dir = TempDir::new("handover-load");
    let (listen, admin) = (free_addr(), free_addr());
    let config = restart_config(&dir, listen, admin, &[&a, &b]);
    let mut current = SPLITTER.run(&config);

    let load = Wrk::start(
        &wrk,
        &["-t1", "-c16", "-d25s"],
        &script,
        &format!("http://{listen}/bid"),
    );

    thread::sleep(Duration::from_secs(2));
    for restart in 1..=5 {
        let next = SPLITTER.run(&config);
        let status = current
            .proc
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("restart {restart}: the old process did not exit"));
        assert!(status.success(), "restart {restart}: {status:?}");
        current = next;
        thread::sleep(Duration::from_secs(1));
    }

    let (text, requests) = load.finish_clean(Duration::from_secs(60));
    eprintln!("wrk across 5 restarts:\n{text}");
    assert!(requests > 1000, "{text}");
}
