//! Everything a run needs before the first measurement: `libmapalloc.so`
//! and `libmimalloc_secure.so` (cargo), the C and C++ workloads and the
//! probe (gcc/g++), the Debian peers (apt-get); or all of it from a folder
//! made by `mapalloc-bench prepare DIR` for a machine without a toolchain.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::catalog::{Kind, Lang, SOURCES, WORKLOADS};
use crate::peers::{self, Libraries};

/// The repository root (the workspace), as built.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// cargo's target folder: `$CARGO_TARGET_DIR` or `target/` at the root.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo build --release -p PACKAGE` at the root; `true` on success.
fn cargo_build(package: &str) -> bool {
    eprintln!("harness: cargo build --release -p {package}");
    Command::new(cargo())
        .args(["build", "--release", "--quiet", "-p", package])
        .current_dir(workspace_root())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the run uses, and what could not be had.
pub struct Built {
    /// The libraries of the columns.
    pub libs: Libraries,
    /// Where the compiled workloads (and `probe`) are; `None` without a
    /// C compiler.
    pub programs: Option<PathBuf>,
    /// Which programs could not be built (their workloads are skipped).
    pub missing: Vec<&'static str>,
    /// Lines for the report.
    pub notes: Vec<String>,
}

impl Built {
    /// The executable of a program workload, if it was built.
    pub fn program(&self, source: &str) -> Option<PathBuf> {
        let stem = source.rsplit_once('.').map_or(source, |(s, _)| s);
        let p = self.programs.as_ref()?.join(stem);
        p.is_file().then_some(p)
    }
}

/// Builds everything (or finds it in `prebuilt`).
pub fn build(prebuilt: Option<&Path>) -> Result<Built, String> {
    let mut notes = Vec::new();
    if let Some(dir) = prebuilt {
        let lib = |f: &str| Some(dir.join(f)).filter(|p| p.is_file());
        let mapalloc = lib("libmapalloc.so")
            .ok_or_else(|| format!("no libmapalloc.so in {}", dir.display()))?;
        let built = Built {
            libs: Libraries {
                mapalloc,
                mimalloc_secure: lib("libmimalloc_secure.so"),
                peers_dir: Some(dir.to_path_buf()),
            },
            programs: Some(dir.join("c")),
            missing: Vec::new(),
            notes,
        };
        return Ok(built);
    }
    if !cargo_build("mapalloc-capi") {
        return Err("cargo build --release -p mapalloc-capi failed".into());
    }
    let release = target_dir().join("release");
    let secure = cargo_build("mimalloc-secure").then(|| release.join("libmimalloc_secure.so"));
    if secure.is_none() {
        notes.push("mimalloc-secure: cargo build -p mimalloc-secure failed".into());
    }
    notes.extend(peers::install_missing(None));
    let dir = target_dir().join("mapalloc-bench");
    let (programs, missing) = compile(&dir, &mut notes);
    Ok(Built {
        libs: Libraries {
            mapalloc: release.join("libmapalloc.so"),
            mimalloc_secure: secure,
            peers_dir: None,
        },
        programs,
        missing,
        notes,
    })
}

/// The compiler for `lang`: `$CC`/`$CXX`, else gcc/g++, else cc/c++.
fn compiler(lang: Lang) -> Option<String> {
    let (var, names) = match lang {
        Lang::C => ("CC", ["gcc", "cc"]),
        Lang::Cxx => ("CXX", ["g++", "c++"]),
    };
    if let Ok(c) = std::env::var(var) {
        return Some(c);
    }
    names
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

/// Compiles into `dir` each program whose source, header or command
/// changed since the last build (a stamp file holds the hash), all at
/// once. Several harnesses may do this at the same time (the smoke tests
/// do): each writes the sources into a folder of its own and renames
/// finished programs into place. Returns the folder and the programs it
/// could not build.
fn compile(dir: &Path, notes: &mut Vec<String>) -> (Option<PathBuf>, Vec<&'static str>) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        notes.push(format!(
            "cannot create {}: {e}; no C workloads",
            dir.display()
        ));
        return (None, Vec::new());
    }
    let header = SOURCES
        .iter()
        .find(|(f, _)| *f == "bench.h")
        .map_or("", |(_, t)| t);
    let mut programs: Vec<(&'static str, Lang, Vec<&'static str>)> =
        vec![("probe.c", Lang::C, vec!["-ldl"])];
    for w in WORKLOADS {
        if let Kind::Program {
            source, lang, libs, ..
        } = w.kind
            && !programs.iter().any(|(s, _, _)| *s == source)
        {
            programs.push((source, lang, libs.to_vec()));
        }
    }
    let mut missing = Vec::new();
    let mut jobs = Vec::new();
    let src = dir.join(format!("src.{}", std::process::id()));
    for (source, lang, libs) in programs {
        let text = SOURCES
            .iter()
            .find(|(f, _)| *f == source)
            .map_or("", |(_, t)| t);
        let Some(cc) = compiler(lang) else {
            notes.push(format!(
                "no {} compiler: {source} not built",
                if lang == Lang::C { "C" } else { "C++" }
            ));
            missing.push(source);
            continue;
        };
        let stem = source.rsplit_once('.').map_or(source, |(s, _)| s);
        let exe = dir.join(stem);
        let mut flags: Vec<&str> = vec!["-O2", "-pthread", "-Wall", "-Wextra"];
        if lang == Lang::Cxx {
            flags.push("-std=c++17");
        }
        let mut h = DefaultHasher::new();
        (text, header, &cc, &flags, &libs).hash(&mut h);
        let stamp = format!("{:016x}\n", h.finish());
        let stamp_path = dir.join(format!("{stem}.stamp"));
        if exe.is_file() && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
            continue;
        }
        // The header is written once, before the first compiler starts:
        // rewriting it under a running compiler would truncate it there.
        let header_path = src.join("bench.h");
        let written = std::fs::create_dir_all(&src)
            .and_then(|()| {
                if header_path.exists() {
                    Ok(())
                } else {
                    std::fs::write(&header_path, header)
                }
            })
            .and_then(|()| std::fs::write(src.join(source), text));
        if let Err(e) = written {
            notes.push(format!("cannot write {source}: {e}"));
            missing.push(source);
            continue;
        }
        let tmp = dir.join(format!("{stem}.{}.tmp", std::process::id()));
        let spawned = Command::new(&cc)
            .args(&flags)
            .arg("-o")
            .arg(&tmp)
            .arg(src.join(source))
            .args(&libs)
            .spawn();
        match spawned {
            Ok(child) => jobs.push((source, child, tmp, exe, stamp_path, stamp)),
            Err(e) => {
                notes.push(format!("{cc}: {e}; {source} not built"));
                missing.push(source);
            }
        }
    }
    if !jobs.is_empty() {
        eprintln!(
            "harness: compiling {} C/C++ programs into {}",
            jobs.len(),
            dir.display()
        );
    }
    for (source, mut child, tmp, exe, stamp_path, stamp) in jobs {
        let stamp_tmp = tmp.with_extension("stamp");
        let installed = child.wait().is_ok_and(|s| s.success())
            && std::fs::rename(&tmp, &exe).is_ok()
            && std::fs::write(&stamp_tmp, stamp).is_ok()
            && std::fs::rename(&stamp_tmp, stamp_path).is_ok();
        if !installed {
            let _ = std::fs::remove_file(&tmp);
            notes.push(format!(
                "{source} did not compile (see above); its workloads are skipped"
            ));
            missing.push(source);
        }
    }
    let _ = std::fs::remove_dir_all(&src);
    (Some(dir.to_path_buf()), missing)
}

/// `mapalloc-bench prepare DIR`: builds everything and copies it into DIR
/// (the harness itself, the libraries of every column, `c/` with the
/// programs), so that `DIR/mapalloc-bench --prebuilt DIR` runs on a machine
/// with no toolchain and no network.
pub fn prepare(dir: &Path) -> Result<(), String> {
    let built = build(None)?;
    for n in &built.notes {
        eprintln!("harness: {n}");
    }
    let programs = built
        .programs
        .as_ref()
        .ok_or("no C compiler: nothing to prepare")?;
    let c = dir.join("c");
    std::fs::create_dir_all(&c).map_err(|e| format!("{}: {e}", c.display()))?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    copy(&exe, &dir.join("mapalloc-bench"))?;
    copy(&built.libs.mapalloc, &dir.join("libmapalloc.so"))?;
    if let Some(s) = &built.libs.mimalloc_secure {
        copy(s, &dir.join("libmimalloc_secure.so"))?;
    }
    let mut notes = Vec::new();
    for a in peers::columns(&built.libs, &mut notes) {
        if let Some(lib) = a
            .preload
            .filter(|_| matches!(a.name, "jemalloc" | "tcmalloc" | "mimalloc"))
        {
            let name = lib.file_name().ok_or("library without a name")?;
            copy(&lib, &dir.join(name))?;
        }
    }
    let entries = std::fs::read_dir(programs).map_err(|e| e.to_string())?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none() && p.is_file() {
            copy(&p, &c.join(e.file_name()))?;
        }
    }
    for n in notes {
        eprintln!("harness: {n}");
    }
    Ok(())
}
