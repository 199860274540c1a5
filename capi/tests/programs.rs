//! Real, unmodified programs under `LD_PRELOAD=libmapalloc.so`, each run
//! three times (on glibc's malloc, on mapalloc, and on mapalloc in
//! hardened mode) with the same input: exit status, stdout, stderr and
//! files written must be the same, and the mapalloc runs must print
//! mapalloc's statistics report (`MAPALLOC_SHOW_STATS=1`), which proves the
//! library was loaded and served allocations. Hardened mode must find no
//! misuse in them (no false positive). A program that is not installed is
//! skipped with a message.

mod common;

use common::{Alloc, Rng, Scratch, field, run, stats_reports, strip_reports, which, with};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `make()` once per allocator and checks the two runs agree; returns
/// the mapalloc run's reports.
fn compare(what: &str, make: impl Fn(Alloc) -> Command) -> Vec<Vec<(String, u64)>> {
    let glibc = run(with(&mut make(Alloc::Glibc), Alloc::Glibc), TIMEOUT);
    let hardened = run(
        with(&mut make(Alloc::MapallocHardened), Alloc::MapallocHardened),
        TIMEOUT,
    );
    same_output(&format!("{what}, hardened"), &glibc, &hardened);
    let ours = run(
        with(&mut make(Alloc::Mapalloc), Alloc::Mapalloc)
            .env("MAPALLOC_SHOW_STATS", "1")
            .env_remove("MAPALLOC_HARDENED"),
        TIMEOUT,
    );
    same_output(what, &glibc, &ours);
    let reports = stats_reports(&ours.stderr);
    assert!(
        !reports.is_empty(),
        "{what}: no mapalloc report: was the library loaded?"
    );
    assert!(
        reports.iter().any(|r| field(r, "mmap_calls") > 0),
        "{what}: mapalloc never mapped memory: {reports:?}"
    );
    reports
}

fn same_output(what: &str, glibc: &Output, ours: &Output) {
    common::expect_success(&format!("{what} (glibc)"), glibc);
    common::expect_success(&format!("{what} (mapalloc)"), ours);
    assert!(
        glibc.stdout == ours.stdout,
        "{what}: stdout differs\n--- glibc\n{}\n--- mapalloc\n{}",
        String::from_utf8_lossy(&glibc.stdout),
        String::from_utf8_lossy(&ours.stdout)
    );
    assert_eq!(
        strip_reports(&glibc.stderr),
        strip_reports(&ours.stderr),
        "{what}: stderr differs"
    );
}

/// Python with every object allocated by malloc (`PYTHONMALLOC=malloc`):
/// `tests/workload.py` builds many objects on several threads and hands
/// them between threads.
#[test]
fn python3() {
    if which("python3").is_none() {
        return common::skip("python3");
    }
    // The interpreter itself, not a wrapper script (pyenv, for one).
    let probe = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .env_remove("LD_PRELOAD")
        .output()
        .expect("python3");
    let python = String::from_utf8(probe.stdout).unwrap().trim().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workload.py");
    let reports = compare("python3 workload.py", |_| {
        let mut c = Command::new(&python);
        c.arg(&script)
            .env("PYTHONMALLOC", "malloc")
            .env("PYTHONHASHSEED", "0");
        c
    });
    assert_eq!(reports.len(), 1);
}

/// A C file with many functions, compiled to assembly and to an
/// executable: gcc, cc1, as, collect2 and ld all run on mapalloc; the
/// assembly and the executables must be byte-identical, and the program
/// must print the same.
#[test]
fn gcc() {
    if which("gcc").is_none() {
        return common::skip("gcc");
    }
    let scratch = Scratch::new("gcc");
    let src = scratch.path().join("gen.c");
    std::fs::write(&src, generated_c(400)).unwrap();
    let dir = |a: Alloc| {
        let d = scratch.path().join(format!("{a:?}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let reports = compare("gcc -O2 -S", |a| {
        let mut c = Command::new("gcc");
        c.args(["-O2", "-S", "-o"])
            .arg(dir(a).join("gen.s"))
            .arg(&src);
        c
    });
    assert!(
        reports.len() >= 2,
        "expected reports from gcc and cc1: {reports:?}"
    );
    let asm = |a: Alloc| std::fs::read(dir(a).join("gen.s")).unwrap();
    assert!(
        asm(Alloc::Glibc) == asm(Alloc::Mapalloc)
            && asm(Alloc::Glibc) == asm(Alloc::MapallocHardened),
        "assembly differs"
    );
    assert!(asm(Alloc::Glibc).len() > 100_000);

    compare("gcc -O2 (compile and link)", |a| {
        let mut c = Command::new("gcc");
        c.args(["-O2", "-o"]).arg(dir(a).join("gen")).arg(&src);
        c
    });
    let exe = |a: Alloc| std::fs::read(dir(a).join("gen")).unwrap();
    assert!(
        exe(Alloc::Glibc) == exe(Alloc::Mapalloc)
            && exe(Alloc::Glibc) == exe(Alloc::MapallocHardened),
        "executables differ"
    );
    let out = run(
        with(
            &mut Command::new(dir(Alloc::Mapalloc).join("gen")),
            Alloc::Glibc,
        ),
        TIMEOUT,
    );
    common::expect_success("generated program", &out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sum "));
}

/// A C program of `n` functions with loops, switches and local arrays.
fn generated_c(n: usize) -> String {
    let mut s = String::from("#include <stdio.h>\n#include <string.h>\n\n");
    for i in 0..n {
        let _ = write!(
            s,
            "struct s{i} {{ int a[{len}]; double d; char name[{nl}]; }};\n\
             static long f{i}(long x) {{\n\
             \x20   struct s{i} v; memset(&v, 0, sizeof v); long acc = {i};\n\
             \x20   for (int k = 0; k < {len}; k++) {{ v.a[k] = (int)(x * k + {i}); acc += v.a[k] % 7; }}\n\
             \x20   switch (x % 5) {{ case 0: acc *= 3; break; case 1: acc ^= {i}; break;\n\
             \x20   case 2: acc += v.a[x % {len}]; break; case 3: acc -= {i} * x; break; default: acc += 1; }}\n\
             \x20   v.d = acc * 0.5; snprintf(v.name, sizeof v.name, \"f{i}-%ld\", acc);\n\
             \x20   return acc + (long)v.d + (long)strlen(v.name);\n}}\n\n",
            len = 4 + i % 29,
            nl = 16 + i % 16,
        );
    }
    s.push_str("int main(void) {\n    long sum = 0;\n");
    for i in 0..n {
        let _ = writeln!(s, "    sum += f{i}(sum % 1000 + {i});");
    }
    s.push_str("    printf(\"sum %ld\\n\", sum);\n    return 0;\n}\n");
    s
}

/// git creating a repository in a temporary directory: init, add, several
/// commits, log with diffs, gc (repack, multi-threaded pack-objects), fsck.
/// Dates and identities are fixed, so the commit ids must match.
#[test]
fn git() {
    if which("git").is_none() {
        return common::skip("git");
    }
    let scratch = Scratch::new("git");
    let repo = |a: Alloc| scratch.path().join(format!("{a:?}"));
    let git = |a: Alloc, args: &[&str]| {
        let mut c = Command::new("git");
        c.current_dir(repo(a))
            .args(["-c", "pack.threads=2", "-c", "gc.auto=0"])
            .args(args)
            .env("HOME", scratch.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "A U Thor")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_NAME", "C O Mitter")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .env("LC_ALL", "C");
        c
    };
    let all = [Alloc::Glibc, Alloc::Mapalloc, Alloc::MapallocHardened];
    for a in all {
        std::fs::create_dir_all(repo(a)).unwrap();
    }
    let step = |what: &str, args: &[&str]| compare(&format!("git {what}"), |a| git(a, args));

    step("init", &["init", "-q", "-b", "main", "."]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..6 {
        // The same edits in both repositories.
        let files = if round == 0 { 300 } else { 60 };
        let edits: Vec<(String, String)> = (0..files)
            .map(|i| {
                let n = if round == 0 {
                    i
                } else {
                    (rng.next() % 300) as usize
                };
                let path = format!("dir{}/sub{}/file{n}.txt", n % 7, n % 3);
                let mut text = String::new();
                for line in 0..(20 + rng.next() % 200) {
                    let _ = writeln!(
                        text,
                        "round {round} line {line} value {}",
                        rng.next() % 100_000
                    );
                }
                (path, text)
            })
            .collect();
        for a in all {
            for (path, text) in &edits {
                let p = repo(a).join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
        }
        step("add", &["add", "-A"]);
        step("commit", &["commit", "-q", "-m", &format!("round {round}")]);
    }
    step("log --stat", &["log", "--stat", "--format=%H %an %s"]);
    step("log -p", &["log", "-p", "-3"]);
    step("diff --stat", &["diff", "--stat", "HEAD~4", "HEAD"]);
    step("gc", &["gc", "-q"]);
    step("fsck", &["fsck", "--full", "--strict"]);
    step("rev-parse", &["rev-parse", "HEAD", "HEAD~5"]);
    step("ls-tree", &["ls-tree", "-r", "HEAD"]);
    let counts = run(
        with(
            &mut git(Alloc::Mapalloc, &["count-objects", "-v"]),
            Alloc::Mapalloc,
        ),
        TIMEOUT,
    );
    common::expect_success("git count-objects", &counts);
    let counts = String::from_utf8_lossy(&counts.stdout).to_string();
    assert!(
        counts.lines().any(|l| l == "count: 0"),
        "gc left loose objects:\n{counts}"
    );
    assert!(counts.lines().any(|l| l == "packs: 1"), "{counts}");
}

/// sort on 8 MiB of generated lines: in memory, numeric on a key, and
/// unique with a small buffer and two threads (temporary files, merges).
#[test]
fn sort() {
    if which("sort").is_none() {
        return common::skip("sort");
    }
    let scratch = Scratch::new("sort");
    let input = scratch.path().join("input.txt");
    let mut rng = Rng(12345);
    let mut text = String::with_capacity(9 << 20);
    while text.len() < 8 << 20 {
        let word: String = (0..1 + rng.next() % 12)
            .map(|_| (b'a' + (rng.next() % 26) as u8) as char)
            .collect();
        let _ = writeln!(
            text,
            "{word} {} {:x}",
            rng.next() % 1_000_000,
            rng.next() % 4096
        );
    }
    std::fs::write(&input, &text).unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let runs: [&[&str]; 3] = [
        &[],
        &["-n", "-k2,2", "-k1,1"],
        &["-u", "-S", "1M", "--parallel=2", "-k3,3", "-k1,1"],
    ];
    for args in runs {
        compare(&format!("sort {}", args.join(" ")), |_| {
            let mut c = Command::new("sort");
            c.args(args)
                .arg("-T")
                .arg(&tmp)
                .arg(&input)
                .env("LC_ALL", "C");
            c
        });
    }
}
