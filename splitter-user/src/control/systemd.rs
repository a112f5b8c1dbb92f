//! systemd's file descriptor store (`FileDescriptorStoreMax=` in the unit): the listening
//! sockets are stored with systemd once the splitter serves, and given back to the next start
//! (`LISTEN_FDS`), so `systemctl restart` keeps them listening, with the connections queued on
//! them, while one process replaces the other. Outside systemd both ends do nothing.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd as _, FromRawFd as _};

use sd_notify::NotifyState;

use super::handover::Inherited;

/// Names of the stored descriptors.
const WORKER: &str = "worker";
const ADMIN: &str = "admin";

/// The sockets systemd kept from the previous start, when they listen on `listen`.
pub fn stored_listeners(listen: SocketAddr) -> Option<Inherited> {
    let fds = sd_notify::listen_fds_with_names(true).ok()?;
    let mut listeners = Vec::new();
    let mut admin = None;
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID), to own.
        let socket = unsafe { TcpListener::from_raw_fd(fd) };
        match name.as_str() {
            WORKER => listeners.push(socket),
            ADMIN => admin = Some(socket),
            _ => {}
        }
    }
    let admin = admin?;
    let same = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .is_some_and(|addr| addr == listen);
    if !same {
        // `listen` changed: these go, and new ones are stored once bound.
        let _ = sd_notify::notify(
            false,
            &[NotifyState::FdStoreRemove, NotifyState::FdName(WORKER)],
        );
        let _ = sd_notify::notify(
            false,
            &[NotifyState::FdStoreRemove, NotifyState::FdName(ADMIN)],
        );
        return None;
    }
    for socket in listeners.iter().chain([&admin]) {
        socket.set_nonblocking(true).ok()?;
    }
    Some(Inherited {
        listeners,
        admin,
        old: None,
    })
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
