//! Shared helpers of the C ABI tests: the library under test, a C
//! compiler, scratch directories, and running programs with and without
//! `LD_PRELOAD` under a timeout.

#![allow(dead_code)] // each test file uses a different part

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `target/<profile>` directory this test binary lives in
/// (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

/// `libmapalloc.so`, built once per test binary: `MAPALLOC_CAPI_SO` if set
/// (to test a given build, e.g. `target/release/libmapalloc.so`; a
/// relative path is taken from the workspace root), otherwise a
/// `cargo build -p mapalloc-capi` of the test's own profile into the same
/// target directory (`cargo test` does not build a cdylib for integration
/// tests, and it has released its lock by the time tests run).
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_lib(None))
}

/// As `lib`, but a release build whatever the test's profile (or
/// `MAPALLOC_CAPI_SO`): what users run, without the debug assertions that
/// a misuse in the default mode trips in a debug build.
pub fn release_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_lib(Some("release")))
}

fn build_lib(profile: Option<&str>) -> PathBuf {
    if let Some(p) = std::env::var_os("MAPALLOC_CAPI_SO") {
        // Relative to the workspace root (tests run in `capi/`).
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
        assert!(
            p.is_file(),
            "MAPALLOC_CAPI_SO={} is not a file",
            p.display()
        );
        return std::fs::canonicalize(p).unwrap();
    }
    let own = profile_dir();
    let target = own.parent().expect("target directory");
    let name = own.file_name().unwrap().to_str().unwrap();
    let (profile, dir) = match profile {
        Some(p) => (p, target.join(p)),
        None => (if name == "debug" { "dev" } else { name }, own.clone()),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "mapalloc-capi",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .env_remove("LD_PRELOAD")
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p mapalloc-capi failed");
    let so = dir.join("libmapalloc.so");
    assert!(so.is_file(), "{} missing after the build", so.display());
    so
}

/// A fresh scratch directory, removed when dropped unless the test failed.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mapalloc-capi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A C source of the tests (`tests/c/`).
pub fn c_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(name)
}

/// Compiles `src` into the executable `out` with `cc`.
pub fn cc(src: &Path, out: &Path) {
    let output = Command::new("cc")
        .args(["-O1", "-g", "-fno-builtin", "-pthread", "-w", "-o"])
        .arg(out)
        .arg(src)
        .arg("-ldl")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run cc");
    assert!(
        output.status.success(),
        "cc {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The full path of `program` on `PATH`, or `None` (the caller skips).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Says why a test is skipped.
pub fn skip(program: &str) {
    eprintln!("SKIPPED: `{program}` is not installed (not on PATH)");
}

/// Which malloc a program runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    /// glibc's malloc (no `LD_PRELOAD`).
    Glibc,
    /// `LD_PRELOAD=libmapalloc.so`.
    Mapalloc,
    /// `LD_PRELOAD` of the release build (`release_lib`).
    MapallocRelease,
    /// `LD_PRELOAD=libmapalloc.so MAPALLOC_HARDENED=1`.
    MapallocHardened,
}

/// Sets up `cmd` to run on `alloc`.
pub fn with(cmd: &mut Command, alloc: Alloc) -> &mut Command {
    match alloc {
        Alloc::Glibc => cmd.env_remove("LD_PRELOAD"),
        Alloc::Mapalloc => cmd.env("LD_PRELOAD", lib()),
        Alloc::MapallocRelease => cmd.env("LD_PRELOAD", release_lib()),
        Alloc::MapallocHardened => cmd.env("LD_PRELOAD", lib()).env("MAPALLOC_HARDENED", "1"),
    }
}

/// Runs `cmd` (in its own process group, killed whole after `timeout`)
/// and returns its output; panics on a timeout.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            // SAFETY: signals the process group created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            panic!("timed out after {timeout:?} (deadlock?): {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Panics with the program's output unless it exited 0.
pub fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The statistics reports (`mapalloc stats (pid N):` and its lines) in
/// `stderr`, each as (name, value) pairs.
pub fn stats_reports(stderr: &[u8]) -> Vec<Vec<(String, u64)>> {
    let text = String::from_utf8_lossy(stderr);
    let mut reports = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with("mapalloc stats (pid ") {
            continue;
        }
        let mut fields = Vec::new();
        while let Some(next) = lines.peek() {
            let Some(row) = next.strip_prefix("  ") else {
                break;
            };
            let mut parts = row.split_whitespace();
            let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                break;
            };
            let Ok(value) = value.parse() else { break };
            fields.push((name.to_string(), value));
            lines.next();
        }
        reports.push(fields);
    }
    reports
}

/// A report's value for `name`.
pub fn field(report: &[(String, u64)], name: &str) -> u64 {
    report
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {report:?}"))
        .1
}

/// `stderr` without the statistics reports.
pub fn strip_reports(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut kept = String::new();
    let mut in_report = false;
    for line in text.lines() {
        if line.starts_with("mapalloc stats (pid ") {
            in_report = true;
            continue;
        }
        if in_report && line.starts_with("  ") {
            continue;
        }
        in_report = false;
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
