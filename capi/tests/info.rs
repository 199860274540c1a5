//! `mallinfo`, `mallinfo2`, `malloc_info` and `malloc_usable_size` after a
//! known workload (`tests/c/info_test.c`, under `LD_PRELOAD`): the figures
//! must be mapalloc's own, as its statistics report (`malloc_stats()`,
//! printed at the same instant) gives them, and the XML must have glibc's
//! shape and the same totals.

mod common;

use common::{Alloc, Scratch, field, run, stats_reports, with};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A `mallinfo2 TAG name=value ...` line of the program's stdout.
fn mallinfo2(stdout: &str, tag: &str) -> HashMap<String, u64> {
    let prefix = format!("mallinfo2 {tag} ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// `size` (and `count`) of the XML element that starts with `open`, in the
/// totals after `</heap>`.
fn totals(xml: &str, open: &str) -> (u64, Option<u64>) {
    let after_heap = &xml[xml.find("</heap>").expect("</heap>")..];
    let elem = after_heap
        .lines()
        .find(|l| l.starts_with(open))
        .unwrap_or_else(|| panic!("no `{open}` in the totals:\n{xml}"));
    let attr = |name: &str| {
        let key = format!(" {name}=\"");
        let start = elem.find(&key)? + key.len();
        let len = elem[start..].find('"')?;
        elem[start..start + len].parse().ok()
    };
    (attr("size").expect("size attribute"), attr("count"))
}

#[test]
fn figures_are_mapallocs_after_a_known_workload() {
    let scratch = Scratch::new("info");
    let exe = scratch.path().join("info_test");
    common::cc(&common::c_source("info_test.c"), &exe);
    let out = run(
        with(&mut Command::new(&exe), Alloc::Mapalloc).env("MAPALLOC_SHOW_STATS", "0"),
        TIMEOUT,
    );
    common::expect_success("info_test", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("info_test: ok"), "{stdout}");

    // The two malloc_stats() reports, taken at the same instants as the
    // "held" and "freed" mallinfo2 lines.
    let reports = stats_reports(&out.stderr);
    assert_eq!(reports.len(), 2, "{}", String::from_utf8_lossy(&out.stderr));
    for (tag, report) in ["held", "freed"].iter().zip(&reports) {
        let m = mallinfo2(&stdout, tag);
        let mapped = field(report, "mapped_bytes");
        let in_use = field(report, "in_use_bytes");
        assert_eq!(m["arena"], mapped, "{tag}: {m:?} {report:?}");
        assert_eq!(m["uordblks"], in_use, "{tag}");
        assert_eq!(m["fordblks"], mapped - in_use, "{tag}");
        assert_eq!(m["hblks"], field(report, "large_mappings"), "{tag}");
        assert_eq!(m["hblkhd"], field(report, "large_bytes"), "{tag}");
        assert_eq!(m["keepcost"], field(report, "large_cached_bytes"), "{tag}");
        for zero in ["ordblks", "smblks", "usmblks", "fsmblks"] {
            assert_eq!(m[zero], 0, "{tag}: {zero}");
        }
    }
    // The workload: 8 large blocks of 3 MiB held, then freed.
    let held = mallinfo2(&stdout, "held");
    let freed = mallinfo2(&stdout, "freed");
    assert!(
        held["hblks"] >= 8 && held["hblkhd"] >= 8 * (3 << 20),
        "{held:?}"
    );
    assert_eq!(held["hblks"] - freed["hblks"], 8);

    // The XML: glibc's elements, in glibc's order, with the totals of the
    // mallinfo2 read just before it.
    let start = stdout.find("<malloc version=\"1\">").expect("XML start");
    let end = stdout.find("</malloc>\n").expect("XML end") + "</malloc>\n".len();
    let xml = &stdout[start..end];
    let tags: Vec<&str> = xml
        .lines()
        .map(|l| l.split([' ', '>']).next().unwrap())
        .collect();
    let heap = [
        "<total", "<total", "<system", "<system", "<aspace", "<aspace",
    ];
    let mut want = vec!["<malloc", "<heap", "<sizes", "</sizes"];
    want.extend(heap);
    want.push("</heap");
    want.extend([
        "<total", "<total", "<total", "<system", "<system", "<aspace", "<aspace",
    ]);
    want.push("</malloc");
    assert_eq!(tags, want, "{xml}");
    let m = mallinfo2(&stdout, "xml");
    assert_eq!(
        totals(xml, "<total type=\"mmap\""),
        (m["hblkhd"], Some(m["hblks"]))
    );
    assert_eq!(
        totals(xml, "<total type=\"rest\""),
        (m["fordblks"], Some(0))
    );
    assert_eq!(totals(xml, "<total type=\"fast\""), (0, Some(0)));
    assert_eq!(totals(xml, "<system type=\"current\"").0, m["arena"]);
    assert_eq!(totals(xml, "<aspace type=\"total\"").0, m["arena"]);
}
