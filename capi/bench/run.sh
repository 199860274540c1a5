#!/bin/sh
# Runs the C benchmarks of capi/bench/ on glibc's malloc and on mapalloc
# (LD_PRELOAD=libmapalloc.so, release build) and prints a table.
#
#   capi/bench/run.sh              build, then run everything
#   SECONDS_PER_RUN=2 RUNS=5 capi/bench/run.sh
#   MAPALLOC_SO=/path/to/libmapalloc.so capi/bench/run.sh   (skip the build)
#   THREADS="1 2" capi/bench/run.sh
#   BIN_DIR=devbench capi/bench/run.sh      (prebuilt larson and xthread: no compiler)
#   PEERS="mimalloc=/path/libmimalloc-preload.so jemalloc=/path/..." capi/bench/run.sh
#       (more LD_PRELOAD columns, each with its ratio to glibc; bench/device/build.sh
#       makes such libraries; paths without spaces)
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

if [ -n "${BIN_DIR:-}" ]; then
    bin=$(cd "$BIN_DIR" && pwd)
else
    bin=$(mktemp -d "${TMPDIR:-/tmp}/mapalloc-bench.XXXXXX")
    trap 'rm -rf "$bin"' EXIT
    for b in larson xthread; do
        "$cc" -O2 -pthread -o "$bin/$b" "$here/$b.c"
    done
fi

# The columns after glibc, as NAME=LIBRARY words.
allocs="mapalloc=$MAPALLOC_SO"
for p in ${PEERS:-}; do
    lib=${p#*=}
    case $lib in /*) ;; *) lib=$PWD/$lib ;; esac
    allocs="$allocs ${p%%=*}=$lib"
done
# ld.so only warns about a library it cannot preload and runs the program
# on glibc anyway: that column would silently be glibc's.
for a in $allocs; do
    err=$(LD_PRELOAD=${a#*=} "$bin/larson" 1 0.01 2>&1 >/dev/null) || true
    [ -z "$err" ] || { echo "${a%%=*}: $err" >&2; exit 1; }
done

# median BENCH THREADS [LIBRARY]: the median ops/s of $runs runs (0 if none
# printed a result).
median() {
    i=0
    while [ "$i" -lt "$runs" ]; do
        if [ $# -eq 3 ]; then
            LD_PRELOAD=$3 "$bin/$1" "$2" "$seconds"
        else
            env -u LD_PRELOAD "$bin/$1" "$2" "$seconds"
        fi | sed -n 's/.*ops_per_sec=\([0-9]*\).*/\1/p'
        i=$((i + 1))
    done | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'
}

echo "mapalloc: $MAPALLOC_SO"
for p in ${PEERS:-}; do echo "${p%%=*}: ${p#*=}"; done
echo "$(nproc) CPUs, median of $runs runs of ${seconds}s, ops/s (higher is better)"
echo
# Without PEERS the table is the historical one: glibc, mapalloc, ratio.
one=$([ -z "${PEERS:-}" ] && echo 1 || echo 0)
printf '%-8s %7s %14s' bench threads glibc
for a in $allocs; do printf ' %14s' "${a%%=*}"; done
if [ "$one" = 1 ]; then
    printf ' %9s\n' ratio
else
    for a in $allocs; do printf ' %11s' "${a%%=*}/g"; done
    echo
fi
for b in larson xthread; do
    for t in $THREADS; do
        row=$(median "$b" "$t")
        for a in $allocs; do row="$row $(median "$b" "$t" "${a#*=}")"; done
        echo "$row" | awk -v b="$b" -v t="$t" -v one="$one" '{
            printf "%-8s %7d", b, t
            for (i = 1; i <= NF; i++) printf " %14.0f", $i
            for (i = 2; i <= NF; i++) printf (one ? " %8.2fx" : " %10.2fx"), ($1 > 0 ? $i / $1 : 0)
            printf "\n"
        }'
    done
done
echo
echo "larson: threads replace random slots of a shared array (20% in other"
echo "        threads' lanes), 16-1024 bytes, a fresh thread every 50000 ops."
echo "xthread: THREADS/2 producer/consumer pairs, every free a remote free"
echo "        (1 thread: one thread fills and empties its own ring)."
