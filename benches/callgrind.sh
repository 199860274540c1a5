#!/usr/bin/env bash
# Instructions per small alloc+free pair on the fast path, per allocator,
# counted with valgrind's callgrind.
#
#   bench/callgrind.sh                          # all five, N1=100000 N2=1100000
#   N1=50000 N2=550000 bench/callgrind.sh mapalloc mimalloc
#
# Allocators: mapalloc hardened glibc mimalloc jemalloc.
#
# Each measurement runs a `pairs-*` binary (bench/src/pairs.rs) under
# `valgrind --tool=callgrind` at two N and reports
# (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions of one 32-byte alloc + free
# once everything is warm (start-up, first-allocation set-up and exit cost
# the same at both N and cancel out). Columns:
#   Box         pairs-<alloc> N box: Box::new([i as u8; 32]) + drop with
#               <alloc> as #[global_allocator] (through __rust_alloc /
#               __rust_dealloc, as in any Rust program); one other 32-byte
#               block stays live, so a free never empties its page.
#   Box lone    the same with the pair's block alone in its page (every free
#               empties the page).
#   inlined     pairs-<alloc> N direct: GlobalAlloc::alloc/dealloc called
#               straight from a loop monomorphised for the allocator (Rust
#               allocators get inlined into the loop; C ones stay calls).
#   via Switch  pairs-switch N box with MAPALLOC_BENCH_ALLOC=<alloc>: the Box
#               loop through the dispatching allocator of `cargo bench -p
#               mapalloc-bench` (the dispatch is the same for everyone).
# Box includes Box::new's own work (the 32-byte memset, the loop), the same
# for every allocator: subtract the smallest Box column for a lower bound.
# Prints a table and writes bench/results/callgrind.csv.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
N1="${N1:-100000}"
N2="${N2:-1100000}"
if [ "$#" -gt 0 ]; then
    allocs=("$@")
else
    allocs=(mapalloc hardened glibc mimalloc jemalloc)
fi

command -v valgrind >/dev/null || {
    echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 1
}

cd "$root"
bins=()
for a in "${allocs[@]}"; do
    case "$a" in
        mapalloc | hardened | glibc | mimalloc | jemalloc) bins+=(--bin "pairs-$a") ;;
        *)
            echo "callgrind.sh: unknown allocator $a (mapalloc hardened glibc mimalloc jemalloc)" >&2
            exit 2
            ;;
    esac
done
cargo build --release -p mapalloc-bench "${bins[@]}" --bin pairs-switch >&2
dir="${CARGO_TARGET_DIR:-$root/target}/release"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ir N ENV_VALUE BIN MODE -> total instructions of one run
ir() {
    local n="$1" env="$2" bin="$3" mode="$4"
    local out="$tmp/cg.$bin.$env.$mode.$n"
    MAPALLOC_BENCH_ALLOC="$env" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$dir/$bin" "$n" "$mode" >/dev/null 2>"$out.log" || {
        echo "callgrind.sh: valgrind failed for $bin $n $mode:" >&2
        cat "$out.log" >&2
        exit 1
    }
    awk '/^summary:/ { print $2; found = 1 } END { if (!found) exit 1 }' "$out"
}

# per_pair ALLOC COLUMN ENV BIN MODE -> Ir per pair (and a CSV line)
per_pair() {
    local i1 i2 p
    i1="$(ir "$N1" "$3" "$4" "$5")"
    i2="$(ir "$N2" "$3" "$4" "$5")"
    p="$(awk -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.2f", (b - a) / (n2 - n1) }')"
    echo "$1,$2,$N1,$N2,$i1,$i2,$p" >>"$csv"
    echo "$p"
}

mkdir -p "$here/results"
csv="$here/results/callgrind.csv"
echo "alloc,measure,n1,n2,ir_n1,ir_n2,ir_per_pair" >"$csv"

fmt='%-18s %10s %10s %10s %12s\n'
printf "$fmt" allocator Box "Box lone" inlined "via Switch"
printf '%s\n' "--------------------------------------------------------------"
for a in "${allocs[@]}"; do
    case "$a" in
        glibc) env=system ;;
        *) env="$a" ;;
    esac
    label="$a"
    [ "$a" = hardened ] && label=mapalloc-hardened
    box="$(per_pair "$label" box "$env" "pairs-$a" box)"
    lone="$(per_pair "$label" box-lone "$env" "pairs-$a" box-lone)"
    inl="$(per_pair "$label" inlined "$env" "pairs-$a" direct)"
    sw="$(per_pair "$label" switch "$env" pairs-switch box)"
    printf "$fmt" "$label" "$box" "$lone" "$inl" "$sw"
done
echo
echo "instructions (callgrind Ir) per 32-byte alloc+free pair = (Ir(N2) - Ir(N1)) / (N2 - N1), N1=$N1 N2=$N2"
echo "$(valgrind --version); wrote $csv"
