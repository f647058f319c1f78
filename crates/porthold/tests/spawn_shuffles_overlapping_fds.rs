//! Sockets that already sit at fds 3, 4, 5 — the numbers they must end up
//! at, in another order — reach the child at the right numbers with the right
//! names, in every permutation. A naive `dup2(source, 3 + i)` loop would
//! overwrite a source before it is copied.
//!
//! The scenario runs in a fresh process (this test binary re-run in a role),
//! where the test may take fds 3, 4 and 5 for itself.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Command;

use porthold::activation::SpawnRequest;

const ROLE: &str = "PORTHOLD_TEST_SHUFFLE_ROLE";

fn inode(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .display()
        .to_string()
}

fn permutations() -> Vec<[i32; 3]> {
    vec![
        [3, 4, 5],
        [3, 5, 4],
        [4, 3, 5],
        [4, 5, 3],
        [5, 3, 4],
        [5, 4, 3],
    ]
}

/// The role: put three sockets at 3, 4, 5, pass them in each permuted order,
/// and check what the child sees. Exits 0 on success, 1 with a message otherwise.
#[test]
fn role_entry() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, l) in listeners.iter().enumerate() {
        // SAFETY: dup2 onto 3..5 in a process that owns nothing else there (the role).
        assert!(unsafe { libc::dup2(l.as_raw_fd(), 3 + i as i32) } >= 0);
    }
    let names = ["a", "b", "c"];
    for order in permutations() {
        let expected: Vec<String> = order.iter().map(|&fd| inode(fd)).collect();
        let mut request = SpawnRequest::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "for f in 3 4 5; do readlink /proc/$$/fd/$f; done; echo \"$LISTEN_FDS $LISTEN_FDNAMES\"; \
             test \"$LISTEN_PID\" = \"$$\" && echo pid-ok; [ -e /proc/$$/fd/6 ] && echo extra-fd-6; exit 0"
                .into(),
        ]);
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        for (k, &fd) in order.iter().enumerate() {
            // SAFETY: fds 3..5 stay open for the whole role (they are dup2 copies).
            request = request.listener(unsafe { BorrowedFd::borrow_raw(fd) }, names[k]);
        }
        let child = request.stdout(write).spawn().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).unwrap();
        assert!(child.wait().unwrap().success());
        let lines: Vec<&str> = out.lines().collect();
        let want = format!(
            "{}\n{}\n{}\n3 a:b:c\npid-ok\n",
            expected[0], expected[1], expected[2]
        );
        if out != want {
            println!("order {order:?}: child saw {lines:?}, want {want:?}");
            std::process::exit(1);
        }
    }
    // Two sockets and the extra fd (the handoff channel), the three sources
    // again at 3, 4, 5 in every order: the sockets land at 3 and 4, the extra
    // fd right after them at 5, named in its variable, and not in LISTEN_FDS.
    for order in permutations() {
        let expected: Vec<String> = order.iter().map(|&fd| inode(fd)).collect();
        let mut request = SpawnRequest::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "for f in 3 4 5; do readlink /proc/$$/fd/$f; done; echo \"$LISTEN_FDS $LISTEN_FDNAMES $PORTHOLD_HANDOFF_FD\"; \
             [ -e /proc/$$/fd/6 ] && echo extra-fd-6; exit 0"
                .into(),
        ])
        .env("PORTHOLD_HANDOFF_FD", "99");
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        for (k, &fd) in order[..2].iter().enumerate() {
            // SAFETY: fds 3..5 stay open for the whole role (they are dup2 copies).
            request = request.listener(unsafe { BorrowedFd::borrow_raw(fd) }, names[k]);
        }
        // SAFETY: as above.
        request = request.extra_fd(
            unsafe { BorrowedFd::borrow_raw(order[2]) },
            "PORTHOLD_HANDOFF_FD",
        );
        let child = request.stdout(write).spawn().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).unwrap();
        assert!(child.wait().unwrap().success());
        let want = format!(
            "{}\n{}\n{}\n2 a:b 5\n",
            expected[0], expected[1], expected[2]
        );
        if out != want {
            println!("order {order:?} with the extra fd: child saw {out:?}, want {want:?}");
            std::process::exit(1);
        }
    }
    std::process::exit(0);
}

#[test]
fn sources_at_the_target_numbers_arrive_in_every_permutation() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "role_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
