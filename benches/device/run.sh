#!/bin/bash
# Runs the thread-scaling and multi-thread workloads at 1-16 threads from a
# folder made by benches/device/build.sh, on a machine with no toolchain
# (the 16-core device machine), within the device tool's limits: one
# command under 10 minutes, at most 8 files back, in OUTDIR.
#
#   bash benches/device/run.sh DIR OUTDIR      (from the repository root)
#   QUICK=1 bash benches/device/run.sh ...     (smoke run: quick sizes, seconds)
#   TOTAL_S=480                                (no case starts after this)
#   ROUNDS=2 SCALE=0.3 THREADS=1,2,4,8,16      (what the harness is given)
#
# The device tool, for instance:
#   run(command="bash benches/device/run.sh devbench $OUT", carry=["devbench"], timeout_s=590)
#
# OUTDIR gets report.md, summary.csv, runs.csv (the harness), time.svg,
# rss.svg, scaling.svg (plot.py, if python3 is there), machine.txt and
# run.log: eight files, no folders.
set -u

[ $# -eq 2 ] || { echo "usage: $0 DIR OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && out=$(cd "$2" && pwd) || exit 2
threaded="larson,larson-sized,handover,xsizes,live,prodcons,false-share,line-thrash,tight,thread-churn,window"

machine() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc: $(nproc)   (all CPUs: $(nproc --all))"
    if command -v lscpu >/dev/null; then
        lscpu | grep -E '^(Model name|Socket|Core|Thread|NUMA node|CPU\(s\)|CPU max MHz|L3)'
    else
        grep -m1 'model name' /proc/cpuinfo
    fi
    echo "kernel: $(uname -srm)"
    echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)"
    echo "libstdc++ (tcmalloc, jemalloc and the C++ workloads need it): $(ldconfig -p 2>/dev/null | grep -c 'libstdc++.so.6') found"
    echo "load: $(cat /proc/loadavg)"
    grep -E '^(MemTotal|MemAvailable)' /proc/meminfo
    echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    # A CPU quota below nproc would make 16 threads oversubscribed.
    echo "cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo none)"
    echo "built: $(head -2 "$dir/MANIFEST.txt" 2>/dev/null | tr '\n' ' ')"
}

main() {
    machine | tee "$out/machine.txt"
    # The carry may drop the executable bits.
    chmod +x "$dir/mapalloc-bench" "$dir"/c/* 2>/dev/null
    local args=(--prebuilt "$dir" --out "$out" --only "$threaded"
        --threads "${THREADS:-1,2,4,8,16}" --deadline "${TOTAL_S:-480}" --timeout 120)
    if [ "${QUICK:-0}" = 1 ]; then
        args+=(--quick)
    else
        args+=(--rounds "${ROUNDS:-2}" --scale "${SCALE:-0.3}")
    fi
    "$dir/mapalloc-bench" "${args[@]}"
    echo "harness exit status: $?"
    if command -v python3 >/dev/null; then
        python3 "$here/../plot.py" --results "$out"
    fi
    echo "load now: $(cat /proc/loadavg)"
    ls -l "$out"
}

main 2>&1 | tee "$out/run.log"
