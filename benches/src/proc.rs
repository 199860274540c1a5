//! Runs one program in a fresh process and measures it from the outside:
//! wall time from spawn to exit, and the kernel's account of it from
//! `wait4` (user and system CPU time, peak RSS, page faults). The same for
//! a C workload, a Rust workload child and any command line, so every
//! column is measured alike. Allocator-free and self-contained, so
//! `examples/compare.rs` includes this file with `#[path]` as well.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by us after the time limit.
    TimedOut,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::TimedOut => write!(f, "timed out"),
        }
    }
}

/// One finished process.
#[derive(Clone, Debug)]
pub struct Run {
    /// How it ended.
    pub exit: Exit,
    /// Spawn to exit, in nanoseconds.
    pub wall_ns: u64,
    /// User CPU time, all threads.
    pub user_ns: u64,
    /// System CPU time, all threads.
    pub sys_ns: u64,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub max_rss_kib: u64,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// `true` if it exited with status 0.
    pub fn ok(&self) -> bool {
        self.exit == Exit::Code(0)
    }
}

fn tv_ns(tv: libc::timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Spawns `cmd` (stdin closed, stdout and stderr captured), waits for it
/// with `wait4` and returns what it cost. A process still running after
/// `limit` is killed (`Exit::TimedOut`).
pub fn run(cmd: &mut Command, limit: Duration) -> std::io::Result<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, killed) = (Arc::clone(&done), Arc::clone(&killed));
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let left = limit.saturating_sub(start.elapsed());
                if left.is_zero() {
                    killed.store(true, Ordering::Release);
                    // SAFETY: `pid` is our child, not yet reaped (the main
                    // thread sets `done` before it could be reused), so the
                    // signal reaches that process only.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::park_timeout(left.min(Duration::from_millis(200)));
            }
        })
    };
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(move || read_all(e)));
    let stdout = child.stdout.take().map_or_else(String::new, read_all);
    let mut status = 0;
    // SAFETY: `rusage` is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = loop {
        // SAFETY: `pid` is our child; `status` and `ru` are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break rc;
        }
    };
    let wall_ns = start.elapsed().as_nanos() as u64;
    done.store(true, Ordering::Release);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let stderr = err.map_or_else(String::new, |h| h.join().unwrap_or_default());
    let exit = if killed.load(Ordering::Acquire) {
        Exit::TimedOut
    } else if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    };
    Ok(Run {
        exit,
        wall_ns,
        user_ns: tv_ns(ru.ru_utime),
        sys_ns: tv_ns(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        minflt: ru.ru_minflt as u64,
        majflt: ru.ru_majflt as u64,
        stdout,
        stderr,
    })
}

/// This process's resident set size in KiB, from `/proc/self/statm`, read
/// into a stack buffer (allocating would change what is measured).
pub fn rss_kib() -> u64 {
    use std::io::Read as _;
    let mut buf = [0u8; 128];
    let Ok(mut f) = std::fs::File::open("/proc/self/statm") else {
        return 0;
    };
    let n = f.read(&mut buf).unwrap_or(0);
    let pages: u64 = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page / 1024
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_process() {
        let r = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(20),
        )
        .expect("sh runs");
        assert_eq!(r.exit, Exit::Code(3));
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        assert!(r.max_rss_kib > 0);
    }

    #[test]
    fn kills_at_the_limit() {
        let r =
            run(Command::new("sleep").arg("30"), Duration::from_millis(300)).expect("sleep runs");
        assert_eq!(r.exit, Exit::TimedOut);
        assert!(r.wall_ns < 20_000_000_000);
    }
}
