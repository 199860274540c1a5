#!/bin/sh
# Runs the C benchmarks of capi/bench/ on glibc's malloc and on mapalloc
# (LD_PRELOAD=libmapalloc.so, release build) and prints a table.
#
#   capi/bench/run.sh              build, then run everything
#   SECONDS_PER_RUN=2 RUNS=5 capi/bench/run.sh
#   MAPALLOC_SO=/path/to/libmapalloc.so capi/bench/run.sh   (skip the build)
#   THREADS="1 2" capi/bench/run.sh
#
# Each cell is the median of RUNS runs (default 3) of SECONDS_PER_RUN
# seconds (default 1). Threads: 1, 2, 4, then 8, 16, ... up to nproc.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${SECONDS_PER_RUN:-1}
runs=${RUNS:-3}
cc=${CC:-cc}

if [ -z "${MAPALLOC_SO:-}" ]; then
    (cd "$root" && cargo build --release --quiet -p mapalloc-capi)
    MAPALLOC_SO=${CARGO_TARGET_DIR:-$root/target}/release/libmapalloc.so
fi
case $MAPALLOC_SO in /*) ;; *) MAPALLOC_SO=$PWD/$MAPALLOC_SO ;; esac
[ -f "$MAPALLOC_SO" ] || { echo "no $MAPALLOC_SO" >&2; exit 1; }

if [ -z "${THREADS:-}" ]; then
    THREADS="1 2 4"
    n=$(nproc)
    t=8
    while [ "$t" -le "$n" ]; do THREADS="$THREADS $t"; t=$((t * 2)); done
fi

bin=$(mktemp -d "${TMPDIR:-/tmp}/mapalloc-bench.XXXXXX")
trap 'rm -rf "$bin"' EXIT
for b in larson xthread; do
    "$cc" -O2 -pthread -o "$bin/$b" "$here/$b.c"
done

# median BENCH THREADS [preload]: the median ops/s of $runs runs.
median() {
    i=0
    while [ "$i" -lt "$runs" ]; do
        if [ $# -eq 3 ]; then
            LD_PRELOAD=$MAPALLOC_SO "$bin/$1" "$2" "$seconds"
        else
            env -u LD_PRELOAD "$bin/$1" "$2" "$seconds"
        fi | sed -n 's/.*ops_per_sec=\([0-9]*\).*/\1/p'
        i=$((i + 1))
    done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "mapalloc: $MAPALLOC_SO"
echo "$(nproc) CPUs, median of $runs runs of ${seconds}s, ops/s (higher is better)"
echo
printf '%-8s %7s %14s %14s %9s\n' bench threads glibc mapalloc ratio
for b in larson xthread; do
    for t in $THREADS; do
        g=$(median "$b" "$t")
        m=$(median "$b" "$t" preload)
        awk -v b="$b" -v t="$t" -v g="$g" -v m="$m" \
            'BEGIN { printf "%-8s %7d %14.0f %14.0f %8.2fx\n", b, t, g, m, (g > 0 ? m / g : 0) }'
    done
done
echo
echo "larson: threads replace random slots of a shared array (20% in other"
echo "        threads' lanes), 16-1024 bytes, a fresh thread every 50000 ops."
echo "xthread: THREADS/2 producer/consumer pairs, every free a remote free"
echo "        (1 thread: one thread fills and empties its own ring)."
