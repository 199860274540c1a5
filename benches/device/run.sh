#!/bin/bash
# Runs the allocator benchmarks from a folder made by bench/device/build.sh,
# on a machine with no Rust toolchain and maybe no C compiler:
#
#   bash bench/device/run.sh DIR OUTDIR      (from the repository root)
#   QUICK=1 bash bench/device/run.sh ...     (smoke run: scaled down, seconds)
#   TOTAL_S=330                              (the deadline; every part is cut to fit)
#   C_RUNS=3 C_SECONDS=1                     (C benchmarks: 40 x runs x seconds, ~125 s)
#
# Parts, most wanted first (the machine is lent for a few minutes, so the
# multi-threaded results come before the single-threaded ones we can
# measure anywhere):
#   1. peers, threaded workloads, all five allocators  -> peers-threads.{txt,csv}
#   2. C larson and xthread at 1-16 threads on glibc, mapalloc, mimalloc,
#      jemalloc (LD_PRELOAD)                           -> capi.txt
#   3. peers, single-threaded workloads                -> peers-single.{txt,csv}
# plus machine.txt, and run.log with everything printed. Seven files in
# OUTDIR, no folders.
set -u

command -v timeout >/dev/null || { echo "run.sh: needs timeout (coreutils)" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: $0 DIR OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && out=$(cd "$2" && pwd) || exit 2
quick=${QUICK:-0}
start=$(date +%s)
deadline=$((start + ${TOTAL_S:-330}))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/devbench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
cut=""

threaded="larson producer-consumer scaling-1t scaling-2t scaling-4t scaling-8t scaling-16t"
single="small-fixed small-random small-batch realloc-growth large-churn fragmentation btree-strings"
allocs="--allocs=mapalloc,hardened,glibc,mimalloc,jemalloc"

# part NAME MAX_S FILE CMD...: CMD under timeout (MAX_S, or less if the
# deadline is nearer), output to the terminal and FILE. The timeout kills
# the whole process group, so the peers' children and the C runs go too.
part() {
    local name=$1 max=$2 file=$3 budget rc t0
    shift 3
    budget=$((deadline - $(date +%s) - 5)) # 5 s for the summary
    [ "$budget" -gt "$max" ] && budget=$max
    if [ "$budget" -lt 15 ]; then
        echo "== $name: SKIPPED, ${budget}s left"
        cut="$cut $name(skipped)"
        return
    fi
    echo "== $name: at most ${budget}s, from $(date -u +%T) UTC"
    t0=$(date +%s)
    timeout -k 5 "$budget" "$@" 2>&1 | tee "$file"
    rc=${PIPESTATUS[0]}
    case $rc in
    0) echo "== $name: done in $(($(date +%s) - t0))s" ;;
    124 | 137)
        echo; echo "== $name: CUT by the timeout after $(($(date +%s) - t0))s (what it printed so far is above)"
        cut="$cut $name(cut)"
        ;;
    *)
        echo "== $name: FAILED, exit $rc, after $(($(date +%s) - t0))s"
        cut="$cut $name(failed:$rc)"
        ;;
    esac
}

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
    echo "load: $(cat /proc/loadavg)"
    grep -E '^(MemTotal|MemAvailable)' /proc/meminfo
    echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    # A CPU quota below nproc would make 16 threads oversubscribed.
    echo "cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo none)"
    echo "governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
    echo "built: $(head -2 "$dir/MANIFEST.txt" 2>/dev/null | tr '\n' ' ')"
}

main() {
    machine | tee "$out/machine.txt"
    command -v lscpu >/dev/null && lscpu >>"$out/machine.txt"

    # The carry may drop the executable bit; work on copies if so.
    if [ ! -x "$dir/peers" ] || [ ! -x "$dir/larson" ]; then
        cp "$dir"/* "$tmp"/ && chmod +x "$tmp"/* && dir=$tmp
        echo "note: $1 had lost the executable bits; running copies"
    fi

    # The dynamic peers needs glibc >= 2.34; the static one runs anywhere
    # but brings its own glibc 2.36 malloc to the glibc column.
    peers=""
    for p in peers peers-static; do
        if MAPALLOC_BENCH_ALLOC=mimalloc timeout 20 "$dir/$p" scaling-2t --quick 2>&1 | grep -q '^RESULT'; then
            peers=$dir/$p
            break
        fi
        echo "warning: $p does not run here:"
        MAPALLOC_BENCH_ALLOC=mimalloc timeout 20 "$dir/$p" scaling-2t --quick 2>&1 | head -3
    done
    echo "peers binary: ${peers:-none}"
    [ "${peers##*/}" = peers-static ] && cut="$cut peers(static-fallback)"

    # Which preload libraries really replace malloc here (their stats show;
    # ld.so merely warns about one it cannot load). They and larson need
    # glibc >= 2.34 like the dynamic peers.
    libs=""
    check() { # check NAME LIB ENV=VALUE SIGNATURE
        local o
        o=$(env LD_PRELOAD="$2" "$3" timeout 20 "$dir/larson" 2 0.05 2>&1)
        if grep -q "$4" <<<"$o"; then
            echo "preload ok: $1"
            libs="$libs $1=$2"
        else
            echo "warning: $1 not in effect under LD_PRELOAD, column dropped:"
            cut="$cut $1-column(dropped)"
            head -3 <<<"$o"
        fi
    }
    check mapalloc "$dir/libmapalloc.so" MAPALLOC_SHOW_STATS=1 'mapalloc stats'
    check mimalloc "$dir/libmimalloc-preload.so" MIMALLOC_SHOW_STATS=1 committed
    check jemalloc "$dir/libjemalloc-preload.so" _RJEM_MALLOC_CONF=stats_print:true 'Begin jemalloc statistics'
    echo

    local q=(--bench) runs=${C_RUNS:-3} secs=${C_SECONDS:-1} cmax
    [ "$quick" = 1 ] && q=(--quick) runs=1 secs=0.2
    # 2 benches x 5 thread counts x 4 allocators, plus 10% and start-up.
    cmax=$(awk -v r="$runs" -v s="$secs" 'BEGIN { printf "%d", 40 * r * s * 1.1 + 15 }')

    if [ -n "$peers" ]; then
        # shellcheck disable=SC2086 # word lists on purpose
        MAPALLOC_BENCH_RESULTS=$tmp/threads part peers-threaded 100 "$out/peers-threads.txt" \
            "$peers" "${q[@]}" "$allocs" $threaded
        [ -f "$tmp/threads/peers.csv" ] && cp "$tmp/threads/peers.csv" "$out/peers-threads.csv"
    else
        cut="$cut peers-threaded(no-binary)"
    fi
    echo

    case $libs in
    *mapalloc=*)
        mapalloc_so=${libs#*mapalloc=}
        mapalloc_so=${mapalloc_so%% *}
        others=$(tr ' ' '\n' <<<"$libs" | grep -v '^mapalloc=' | tr '\n' ' ')
        BIN_DIR=$dir MAPALLOC_SO=$mapalloc_so PEERS=$others THREADS="1 2 4 8 16" \
            RUNS=$runs SECONDS_PER_RUN=$secs part c-benchmarks "$cmax" "$out/capi.txt" \
            sh "$root/capi/bench/run.sh"
        ;;
    *) cut="$cut c-benchmarks(no-libmapalloc)" ;;
    esac
    echo

    if [ -n "$peers" ]; then
        # shellcheck disable=SC2086
        MAPALLOC_BENCH_RESULTS=$tmp/single part peers-single 200 "$out/peers-single.txt" \
            "$peers" "${q[@]}" "$allocs" $single
        [ -f "$tmp/single/peers.csv" ] && cp "$tmp/single/peers.csv" "$out/peers-single.csv"
    fi

    echo
    echo "total $(($(date +%s) - start))s; load now: $(cat /proc/loadavg)"
    echo "parts cut, skipped or failed, and fallbacks:${cut:- none}"
    ls -l "$out"
}

main "$1" 2>&1 | tee "$out/run.log"
