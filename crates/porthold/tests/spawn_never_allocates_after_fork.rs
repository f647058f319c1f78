//! Between fork and exec the spawner must not allocate: in a multi-threaded
//! parent another thread may hold the allocator's lock at the moment of the
//! fork, and the child would wait for it forever. This test binary's global
//! allocator aborts when it is called in a forked child (a process whose pid is
//! not the recorded parent's), so one allocation on that path kills the child
//! with SIGABRT and fails the test. 1,000 children with 1-3 listeners each are
//! spawned from 8 threads, with no deadlock and no leaked fd.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use porthold::activation::SpawnRequest;

static PARENT: AtomicI32 = AtomicI32::new(0);

struct AbortInForkedChild;

fn check() {
    let parent = PARENT.load(Ordering::Relaxed);
    if parent != 0 {
        // SAFETY: a raw getpid system call (not glibc's cache).
        let me = unsafe { libc::syscall(libc::SYS_getpid) } as i32;
        if me != parent {
            let msg = b"allocation between fork and exec\n";
            // SAFETY: write(2) and abort(3) are async-signal-safe.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
        }
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for AbortInForkedChild {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        check();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: AbortInForkedChild = AbortInForkedChild;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_thousand_spawns_from_eight_threads_never_allocate_after_fork_or_leak_an_fd() {
    // SAFETY: getpid has no preconditions.
    PARENT.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    let before = open_fds();
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..125 {
                        let count = 1 + (t + i) % 3;
                        let listeners: Vec<TcpListener> = (0..count)
                            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
                            .collect();
                        let mut request = SpawnRequest::new(vec!["/bin/true".into()]);
                        for (k, l) in listeners.iter().enumerate() {
                            request =
                                request.listener(l.as_fd(), if k == 0 { "web" } else { "more" });
                        }
                        // Every other spawn also passes a handoff channel end.
                        let pair = std::os::unix::net::UnixStream::pair().unwrap();
                        if i % 2 == 0 {
                            request = request.extra_fd(pair.0.as_fd(), "PORTHOLD_HANDOFF_FD");
                        }
                        let child = request.spawn().expect("spawn");
                        let status = child.wait().expect("wait");
                        assert!(status.success(), "thread {t} child {i}: {status:?}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        done_tx.send(()).unwrap();
    });
    // Only catches a deadlock; no timing is asserted.
    done_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("spawning deadlocked");
    worker.join().unwrap();
    PARENT.store(0, Ordering::SeqCst);
    assert_eq!(open_fds(), before, "the parent leaked fds");
}
