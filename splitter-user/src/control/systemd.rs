//! systemd's file descriptor store (`FileDescriptorStoreMax=` in the unit): the listening
//! sockets are stored with systemd once the splitter serves, and given back to the next start
//! (`LISTEN_FDS`), so `systemctl restart` keeps them listening, with the connections queued on
//! them, while one process replaces the other. Outside systemd both ends do nothing.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd as _, FromRawFd as _};

use sd_notify::NotifyState;

use super::handover::{Inherited, Replaced};

/// Names of the stored descriptors.
const WORKER: &str = "worker";
const ADMIN: &str = "admin";

/// The sockets systemd kept from the previous start that listen where `listen` and
/// `admin_listen` ask. The others (the configuration moved them) are closed and taken out of
/// the store, so that the caller binds the configured addresses afresh; the store holds the new
/// ones once they serve. Also says which were replaced.
pub fn stored_listeners(
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> (Option<Inherited>, Replaced) {
    let Ok(fds) = sd_notify::listen_fds_with_names(true) else {
        return (None, Replaced::default());
    };
    let mut inherited = Inherited {
        listeners: Vec::new(),
        admin: None,
        old: None,
    };
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID), to own.
        let socket = unsafe { TcpListener::from_raw_fd(fd) };
        match name.as_str() {
            WORKER => inherited.listeners.push(socket),
            // One admin socket: a second one closes.
            ADMIN if inherited.admin.is_none() => inherited.admin = Some(socket),
            _ => {}
        }
    }
    let replaced = inherited.keep_matching(listen, admin_listen);
    // Only the moved ones go: systemd closes its copy, which frees the address (the same port
    // on another interface) for the new bind.
    for (name, gone) in [(WORKER, replaced.listeners), (ADMIN, replaced.admin)] {
        if gone {
            let _ = sd_notify::notify(
                false,
                &[NotifyState::FdStoreRemove, NotifyState::FdName(name)],
            );
        }
    }
    for socket in inherited.listeners.iter().chain(&inherited.admin) {
        if let Err(e) = socket.set_nonblocking(true) {
            tracing::warn!(error = %e, "cannot use the stored sockets");
            return (None, replaced);
        }
    }
    ((!inherited.is_empty()).then_some(inherited), replaced)
}

/// Most descriptors in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
const MAX_FDS_PER_MESSAGE: usize = 253;

/// Stores the listening sockets with systemd, replacing what the previous start stored. True
/// when systemd took them (the unit must allow it with `FileDescriptorStoreMax=`).
pub fn store_listeners(listeners: &[TcpListener], admin: &TcpListener) -> bool {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return false;
    }
    let _ = sd_notify::notify(
        false,
        &[NotifyState::FdStoreRemove, NotifyState::FdName(WORKER)],
    );
    let _ = sd_notify::notify(
        false,
        &[NotifyState::FdStoreRemove, NotifyState::FdName(ADMIN)],
    );
    let workers: Vec<_> = listeners.iter().map(|l| l.as_fd()).collect();
    // SCM_RIGHTS carries at most 253 descriptors per message (the kernel's SCM_MAX_FD); the
    // store keeps them in the order they came.
    let stored = workers
        .chunks(MAX_FDS_PER_MESSAGE)
        .try_for_each(|chunk| {
            sd_notify::notify_with_fds(
                false,
                &[NotifyState::FdStore, NotifyState::FdName(WORKER)],
                chunk,
            )
        })
        .and_then(|()| {
            sd_notify::notify_with_fds(
                false,
                &[NotifyState::FdStore, NotifyState::FdName(ADMIN)],
                &[admin.as_fd()],
            )
        });
    match stored {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot store the listening sockets with systemd");
            false
        }
    }
}
