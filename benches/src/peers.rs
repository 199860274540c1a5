//! The allocators under comparison (the columns), where their libraries
//! come from, and the probe that checks each one is really in effect.
//!
//! | column | C programs | Rust workloads |
//! |---|---|---|
//! | `mapalloc` | `LD_PRELOAD=libmapalloc.so` | `MapAlloc::new()` through the switch |
//! | `mapalloc-hardened` | the same + `MAPALLOC_HARDENED=1` | `MapAlloc::hardened()` |
//! | `glibc` | nothing preloaded | `System` |
//! | `jemalloc`, `tcmalloc`, `mimalloc` | `LD_PRELOAD` of the Debian library | `System` + the same `LD_PRELOAD` |
//! | `mimalloc-secure` | `LD_PRELOAD=libmimalloc_secure.so` (`benches/mimalloc-secure`) | `System` + the same |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc;
use crate::switch::{self, Choice};

/// One column.
#[derive(Clone, Debug)]
pub struct Alloc {
    /// Column name.
    pub name: &'static str,
    /// The library preloaded for it, if any.
    pub preload: Option<PathBuf>,
    /// Extra environment (`MAPALLOC_HARDENED=1`).
    pub env: Vec<(&'static str, &'static str)>,
    /// What the Rust workloads' switch uses.
    pub choice: Choice,
    /// Version and origin, for the report.
    pub version: String,
}

/// The column names, in table order.
pub const NAMES: [&str; 7] = [
    "mapalloc",
    "mapalloc-hardened",
    "glibc",
    "jemalloc",
    "tcmalloc",
    "mimalloc",
    "mimalloc-secure",
];

/// The peers that mapalloc's default mode is measured against.
pub const DEFAULT_PEERS: [&str; 4] = ["glibc", "jemalloc", "tcmalloc", "mimalloc"];

/// A Debian peer: (column, library file, package).
const DEBIAN: [(&str, &str, &str); 3] = [
    ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
    (
        "tcmalloc",
        "libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
    ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
];

const SYSTEM_LIB_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib",
];

/// Environment variables that would change an allocator's behaviour; they
/// are removed from every child, so that each column runs on its defaults
/// (`--env` sets what a run wants).
pub fn scrubbed(name: &str) -> bool {
    name == "LD_PRELOAD"
        || name == switch::ENV_VAR
        || name == "MALLOC_CONF"
        || name == "_RJEM_MALLOC_CONF"
        || name.starts_with("MAPALLOC_")
        || name.starts_with("MIMALLOC_")
        || name.starts_with("TCMALLOC_")
}

impl Alloc {
    /// Applies this column to a command: the preload and the environment.
    /// `rust` is set for a Rust workload child of the harness binary.
    pub fn apply(&self, cmd: &mut Command, rust: bool, extra_env: &[(String, String)]) {
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(scrubbed) {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        if rust {
            cmd.env(switch::ENV_VAR, self.choice.env_value());
        }
        // The Rust workloads run mapalloc in process: no preload there.
        let preload = self
            .preload
            .as_ref()
            .filter(|_| !rust || self.choice == Choice::System);
        if let Some(lib) = preload {
            cmd.env("LD_PRELOAD", lib);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }
}

/// Where a Debian peer's library is: `dir` first (a prebuilt folder for
/// another machine), then the system's library folders.
fn find_debian(file: &str, dir: Option<&Path>) -> Option<PathBuf> {
    dir.into_iter()
        .map(Path::to_path_buf)
        .chain(SYSTEM_LIB_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(file))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the Debian packages of the peers whose library is missing,
/// when we are root and have apt-get (`apt-get update` only if the first
/// try fails). Returns notes for the report.
pub fn install_missing(dir: Option<&Path>) -> Vec<String> {
    let missing: Vec<&str> = DEBIAN
        .iter()
        .filter(|(_, file, _)| find_debian(file, dir).is_none())
        .map(|(_, _, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        return vec![format!(
            "not installed: {} (not root, or no apt-get): those columns are skipped",
            missing.join(" ")
        )];
    }
    eprintln!("harness: installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return vec![format!("installed {}", missing.join(" "))];
    }
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    if install() {
        vec![format!(
            "installed {} (after apt-get update)",
            missing.join(" ")
        )]
    } else {
        vec![format!(
            "apt-get could not install {}: those columns are skipped",
            missing.join(" ")
        )]
    }
}

/// Where the harness finds what it runs.
pub struct Libraries {
    /// `libmapalloc.so`.
    pub mapalloc: PathBuf,
    /// `libmimalloc_secure.so`, if it was built.
    pub mimalloc_secure: Option<PathBuf>,
    /// A folder searched first for the Debian peers' libraries.
    pub peers_dir: Option<PathBuf>,
}

/// Every column whose library exists, before the probe.
pub fn columns(libs: &Libraries, notes: &mut Vec<String>) -> Vec<Alloc> {
    let mut out = Vec::new();
    let mapalloc = |name, env: Vec<_>, choice| Alloc {
        name,
        preload: Some(libs.mapalloc.clone()),
        env,
        choice,
        version: "this repository".into(),
    };
    out.push(mapalloc("mapalloc", vec![], Choice::MapAlloc));
    out.push(mapalloc(
        "mapalloc-hardened",
        vec![("MAPALLOC_HARDENED", "1")],
        Choice::Hardened,
    ));
    out.push(Alloc {
        name: "glibc",
        preload: None,
        env: vec![],
        choice: Choice::System,
        version: String::new(),
    });
    for (name, file, pkg) in DEBIAN {
        match find_debian(file, libs.peers_dir.as_deref()) {
            Some(lib) => out.push(Alloc {
                name,
                preload: Some(lib),
                env: vec![],
                choice: Choice::System,
                version: format!("Debian {pkg}"),
            }),
            None => notes.push(format!("{name}: no {file}; column skipped")),
        }
    }
    match &libs.mimalloc_secure {
        Some(lib) => out.push(Alloc {
            name: "mimalloc-secure",
            preload: Some(lib.clone()),
            env: vec![],
            choice: Choice::System,
            version: "libmimalloc-sys, feature secure (MI_SECURE=4)".into(),
        }),
        None => notes.push("mimalloc-secure: not built; column skipped".into()),
    }
    out
}

/// Runs `probe` under each column and keeps the columns whose library
/// really defines `malloc` (and, for mimalloc-secure, that reports secure
/// level 4), filling in the versions.
pub fn probe(allocs: Vec<Alloc>, probe: &Path, notes: &mut Vec<String>) -> Vec<Alloc> {
    let mut kept = Vec::new();
    for mut a in allocs {
        let mut cmd = Command::new(probe);
        a.apply(&mut cmd, false, &[]);
        if a.name == "mimalloc-secure" {
            cmd.env("MIMALLOC_VERBOSE", "1");
        }
        let run = match proc::run(&mut cmd, Duration::from_secs(30)) {
            Ok(r) if r.ok() => r,
            Ok(r) => {
                notes.push(format!(
                    "{}: the probe failed ({}): column skipped; {}",
                    a.name,
                    r.exit,
                    proc::tail(&r.stderr, 3)
                ));
                continue;
            }
            Err(e) => {
                notes.push(format!(
                    "{}: cannot run the probe: {e}; column skipped",
                    a.name
                ));
                continue;
            }
        };
        let field = |k: &str| {
            run.stdout
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        let provider = field("malloc");
        let expected = a.preload.as_ref().map_or_else(
            || "libc.so".to_string(),
            |p| {
                p.file_name()
                    .map_or(String::new(), |f| f.to_string_lossy().into_owned())
            },
        );
        if !provider.contains(&expected) {
            notes.push(format!(
                "{}: malloc comes from {provider:?}, not {expected}: column skipped; {}",
                a.name,
                proc::tail(&run.stderr, 2)
            ));
            continue;
        }
        if a.name == "mimalloc-secure" && !run.stderr.contains("secure level: 4") {
            notes.push(
                "mimalloc-secure: MIMALLOC_VERBOSE shows no `secure level: 4`: column skipped"
                    .into(),
            );
            continue;
        }
        let v = match a.name {
            "glibc" => format!("glibc {}", field("glibc")),
            "jemalloc" => format!("jemalloc {}", field("jemalloc")),
            "tcmalloc" => field("tcmalloc"),
            "mimalloc" | "mimalloc-secure" => format!("mimalloc {}", field("mimalloc")),
            _ => String::new(),
        };
        if !v.is_empty() {
            a.version = if a.version.is_empty() {
                v
            } else {
                format!("{v} ({})", a.version)
            };
        }
        if let Some(p) = &a.preload {
            a.version = format!("{}; {}", a.version, p.display());
        }
        kept.push(a);
    }
    kept
}
