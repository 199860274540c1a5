//! Running part of a test in a forked child process.
//!
//! Tests fork when the thing they check would end or damage the test
//! process: a crash or an abort that is the expected outcome, a resource
//! limit, a deadlock after `fork`. The child leaves with `_exit`, so it
//! never returns into libtest, and the parent fails the test instead of
//! hanging if the child does not finish in time.

use std::fmt;
use std::time::{Duration, Instant};

/// The exit status of a child whose body panicked (libtest's own).
pub const PANICKED: i32 = 101;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `_exit` with this status.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl Ended {
    /// Without `WUNTRACED`, `waitpid` reports only children that are gone,
    /// so anything else is a bug of the caller.
    fn from_wait_status(status: libc::c_int) -> Ended {
        if libc::WIFEXITED(status) {
            Ended::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else {
            panic!("odd wait status {status:#x}")
        }
    }

    /// Fails the test unless the child exited with 0.
    #[track_caller]
    pub fn assert_success(self, what: &str) {
        assert!(self == Ended::Exited(0), "{what}: child failed ({self})");
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ended::Exited(PANICKED) => write!(f, "exit status {PANICKED}: a check panicked"),
            Ended::Exited(code) => write!(f, "exit status {code}"),
            Ended::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// How a child ended and what it wrote to stderr.
#[derive(Debug)]
pub struct Output {
    pub ended: Ended,
    pub stderr: String,
}

impl Output {
    /// Fails the test unless the child exited with 0; the message carries
    /// the child's stderr, where its panic message went.
    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.ended == Ended::Exited(0),
            "{what}: child failed ({}); its stderr:\n{}",
            self.ended,
            self.stderr
        );
    }
}

/// Runs `body` in a forked child, which exits with the status `body`
/// returns ([`PANICKED`] if it panics), and says how the child ended. A
/// child still running after `timeout` is killed and fails the test.
///
/// The child makes no core file (several tests crash it on purpose), and
/// its panic messages go to the real fd 2, tagged with `what`.
pub fn in_child(what: &str, timeout: Duration, body: impl FnOnce() -> i32) -> Ended {
    let pid = fork_child(what, body);
    wait_child(pid, what, timeout)
}

/// [`in_child`], with what the child writes to stderr captured.
pub fn in_child_with_stderr(what: &str, timeout: Duration, body: impl FnOnce() -> i32) -> Output {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "{what}: pipe2: {}", std::io::Error::last_os_error());
    let [rd, wr] = fds;
    let pid = fork_child(what, || {
        // SAFETY: plain fd operations on fds this process owns.
        unsafe {
            libc::dup2(wr, 2);
            libc::close(rd);
        }
        body()
    });
    // SAFETY: the parent's copy of the write end is not needed.
    unsafe { libc::close(wr) };

    // Wait first, then read: another test's fork may have inherited the
    // write end, so EOF is no sign that our child is done. A child writes
    // far less than a pipe buffer, so it never blocks on the pipe.
    let ended = wait_child(pid, what, timeout);
    let mut stderr = Vec::new();
    // SAFETY: `rd` is our open read end; O_NONBLOCK so a pipe whose write
    // end lives on in another process does not block us.
    unsafe { libc::fcntl(rd, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        stderr.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(rd) };
    Output {
        ended,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Forks; in the child, runs `body` and `_exit`s with its status.
fn fork_child(what: &str, body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions; the child only runs
    // `body` (on this thread's stack) and leaves with `_exit`, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(
        pid >= 0,
        "{what}: fork failed: {}",
        std::io::Error::last_os_error()
    );
    if pid != 0 {
        return pid;
    }
    // Lowering a limit needs no privilege; should it fail anyway, the only
    // harm is a core file.
    let _ = set_rlimit(libc::RLIMIT_CORE, 0);
    // No panic hook of our own: `set_hook` takes std's hook lock for
    // writing, and a parent thread that was printing a panic at the fork
    // left it held for reading in the child, which would then wait
    // forever. libtest keeps the default hook's message (it never comes
    // back from a child), so the payload is reported here on fd 2.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        // SAFETY: `_exit` ends the child without running the parent's
        // atexit handlers or unwinding into the harness.
        Ok(code) => unsafe { libc::_exit(code) },
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a non-string panic payload)");
            let line = format!("[child: {what}] panicked: {msg}\n");
            // SAFETY: writes `line.len()` bytes from a live buffer to fd 2,
            // then ends the child as above.
            unsafe {
                libc::write(2, line.as_ptr().cast(), line.len());
                libc::_exit(PANICKED)
            }
        }
    }
}

/// Polls rather than blocks, so that a hung child fails the test (with
/// what it was doing) instead of hanging the whole test binary.
fn wait_child(pid: libc::pid_t, what: &str, timeout: Duration) -> Ended {
    let start = Instant::now();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ended::from_wait_status(status);
        }
        assert!(
            r == 0,
            "{what}: waitpid failed: {}",
            std::io::Error::last_os_error()
        );
        if start.elapsed() > timeout {
            let state = describe_hung(pid);
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("{what}: child {pid} hung for {timeout:?} (a deadlock?); killed. {state}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a hung child is doing: its scheduler state and wait channel (R
/// with wchan 0 is a spinning lock, S in futex_wait a blocking one), and,
/// with `MAPALLOC_FORK_GDB=1`, every thread's backtrace from gdb.
fn describe_hung(pid: libc::pid_t) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let state = read("stat")
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .to_string();
    let mut out = format!("state {state}, wchan {:?}", read("wchan"));
    if std::env::var_os("MAPALLOC_FORK_GDB").is_some() {
        let bt = std::process::Command::new("gdb")
            .args([
                "-batch",
                "-p",
                &pid.to_string(),
                "-ex",
                "thread apply all bt",
            ])
            .output();
        if let Ok(bt) = bt {
            out.push('\n');
            out.push_str(&String::from_utf8_lossy(&bt.stdout));
        }
    }
    out
}

/// Sets both the soft and the hard limit of `resource`. Meant for a child:
/// lowering a limit is for good (raising it again needs privilege).
pub fn set_rlimit(resource: libc::__rlimit_resource_t, limit: libc::rlim_t) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `lim` is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The process's address-space size (`VmSize`), in bytes.
pub fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("VmSize line");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * super::KIB
}

/// Headroom above the current address space that [`limit_address_space`]
/// leaves: room for a few large blocks, far too little for a gigabyte.
pub const AS_HEADROOM: usize = 64 * super::MIB;

/// Lowers `RLIMIT_AS` to the current address space plus [`AS_HEADROOM`],
/// so that `mmap` really fails; returns the limit. Only for a child.
pub fn limit_address_space() -> usize {
    let limit = vm_size() + AS_HEADROOM;
    set_rlimit(libc::RLIMIT_AS, limit as libc::rlim_t).expect("setrlimit(RLIMIT_AS)");
    limit
}
