#!/usr/bin/env bash
# Hardened mode against the default on the small alloc/free pair workloads,
# under several code layouts.
#
#   benches/layouts.sh              # 7 layouts x 2 loops x 2 allocators x 3 processes
#   PROCS=5 benches/layouts.sh      # more processes per cell
#   MODES=box benches/layouts.sh    # only the Box loop (box-lone: alone in its page)
#   PAIRS=40000000                  # pairs per process (default)
#
# Why: on the 2-core VM where these were measured, where the compiler
# happens to place the code moves these loops by more than most changes
# to the allocator (the default's 32-byte Box loop ran 138-176 ms across
# six alignments; docs/benchmarks.md#hardened-mode), so one build's ratio
# is partly a draw. This builds the harness binary (mapalloc-bench) once
# per layout (the same source; only function and block alignment differ,
# through LLVM flags in RUSTFLAGS) and runs its 32-byte pair loop
# (`mapalloc-bench pairs N MODE`, the small-fixed workload, through the
# switch) in fresh processes, alternating the allocators. Per cell it
# reports the median over processes of the loop's time; per loop, the
# ratio in each layout and the median of those ratios.
#
# Each layout builds into target/layouts/<n> (about 250 MB each; delete
# it after). On 2 cores: about 9 minutes of builds the first time, then
# 2-3 minutes of runs per workload (PROCS=3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
procs="${PROCS:-3}"
pairs="${PAIRS:-40000000}"
read -r -a workloads <<<"${MODES:-box box-lone}"
layouts=(
    ""
    "-C llvm-args=-align-all-functions=4"
    "-C llvm-args=-align-all-functions=5"
    "-C llvm-args=-align-all-functions=6"
    "-C llvm-args=-align-all-nofallthru-blocks=4"
    "-C llvm-args=-align-all-nofallthru-blocks=5"
    "-C llvm-args=-align-all-functions=6 -C llvm-args=-align-all-nofallthru-blocks=5"
)

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# One process of loop $2 on allocator $3 with binary $1: the loop's ms.
one() {
    MAPALLOC_BENCH_ALLOC="$3" "$1" pairs "$pairs" "$2" | sed -n 's/.* ms=\([0-9]*\).*/\1/p'
}

bins=()
for i in "${!layouts[@]}"; do
    RUSTFLAGS="${layouts[$i]}" CARGO_TARGET_DIR="$root/target/layouts/$i" \
        cargo build --release --quiet -p mapalloc-bench --bin mapalloc-bench
    bin="$root/target/layouts/$i/release/mapalloc-bench"
    [ -x "$bin" ] || { echo "layouts.sh: no harness binary for layout $i" >&2; exit 1; }
    bins+=("$bin")
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '%-7s %-13s %10s %10s %7s   %s\n' layout loop "default" hardened ratio RUSTFLAGS
for w in "${workloads[@]}"; do
    : >"$tmp/ratios"
    for i in "${!layouts[@]}"; do
        : >"$tmp/d"
        : >"$tmp/h"
        for _ in $(seq "$procs"); do
            one "${bins[$i]}" "$w" mapalloc >>"$tmp/d"
            one "${bins[$i]}" "$w" hardened >>"$tmp/h"
        done
        d="$(median <"$tmp/d")"
        h="$(median <"$tmp/h")"
        r="$(awk -v d="$d" -v h="$h" 'BEGIN { printf "%.2f", h / d }')"
        echo "$r" >>"$tmp/ratios"
        printf '%-7s %-13s %8s ms %8s ms %6sx   %s\n' "$i" "$w" "$d" "$h" "$r" "${layouts[$i]:-(none)}"
    done
    printf '%-21s ratio over %d layouts: median %sx, range %s-%sx\n' "$w" "${#layouts[@]}" \
        "$(median <"$tmp/ratios")" "$(sort -n "$tmp/ratios" | head -1)" "$(sort -n "$tmp/ratios" | tail -1)"
done
