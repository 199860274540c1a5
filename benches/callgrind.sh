#!/usr/bin/env bash
# Instructions per small alloc+free pair on the fast path, per allocator,
# counted with valgrind's callgrind.
#
#   benches/callgrind.sh                          # all, N1=100000 N2=1100000
#   N1=50000 N2=550000 benches/callgrind.sh mapalloc mimalloc
#
# Allocators: mapalloc hardened glibc jemalloc tcmalloc mimalloc mimalloc-secure.
#
# Each measurement runs a loop of benches/src/pairs.rs under
# `valgrind --tool=callgrind` at two N and reports
# (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions of one 32-byte alloc + free
# once everything is warm (start-up, first-allocation set-up and exit cost
# the same at both N and cancel out). Columns:
#   Box         pairs-<bin> N box: Box::new([i as u8; 32]) + drop with the
#               allocator as #[global_allocator] (through __rust_alloc /
#               __rust_dealloc, as in any Rust program); one other 32-byte
#               block stays live, so a free never empties its page. mapalloc
#               and hardened are pairs-mapalloc / pairs-hardened; the others
#               are pairs-system (std's System, i.e. malloc) under the
#               allocator's LD_PRELOAD, as in the harness.
#   Box lone    the same with the pair's block alone in its page (every free
#               empties the page).
#   inlined     pairs-<bin> N direct: GlobalAlloc::alloc/dealloc called
#               straight from a loop monomorphised for the allocator (Rust
#               allocators get inlined into the loop; C ones stay calls).
#   via Switch  `mapalloc-bench pairs N box`: the Box loop through the
#               harness's dispatching allocator, which its Rust workloads
#               use (the dispatch is the same for everyone).
# Box includes Box::new's own work (the 32-byte memset, the loop), the same
# for every allocator: subtract the smallest Box column for a lower bound.
# Prints a table and writes benches/results/callgrind.csv.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
N1="${N1:-100000}"
N2="${N2:-1100000}"
if [ "$#" -gt 0 ]; then
    allocs=("$@")
else
    allocs=(mapalloc hardened glibc jemalloc tcmalloc mimalloc mimalloc-secure)
fi

command -v valgrind >/dev/null || {
    echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2
    exit 1
}

cd "$root"
cargo build --release -p mapalloc-bench -p mimalloc-secure >&2
dir="${CARGO_TARGET_DIR:-$root/target}/release"
lib=/usr/lib/x86_64-linux-gnu

# preload ALLOC: the library LD_PRELOAD gets for the allocator (none for the
# in-process ones); bin ALLOC: its pairs binary; switch ALLOC: the switch's
# choice.
preload() {
    case "$1" in
        mapalloc | hardened | glibc) echo "" ;;
        jemalloc) echo "$lib/libjemalloc.so.2" ;;
        tcmalloc) echo "$lib/libtcmalloc_minimal.so.4" ;;
        mimalloc) echo "$lib/libmimalloc.so.2" ;;
        mimalloc-secure) echo "$dir/libmimalloc_secure.so" ;;
        *)
            echo "callgrind.sh: unknown allocator $1 (mapalloc hardened glibc jemalloc tcmalloc mimalloc mimalloc-secure)" >&2
            exit 2
            ;;
    esac
}
bin() { case "$1" in mapalloc | hardened) echo "pairs-$1" ;; *) echo pairs-system ;; esac; }
switch() { case "$1" in mapalloc | hardened) echo "$1" ;; *) echo system ;; esac; }
for a in "${allocs[@]}"; do
    p="$(preload "$a")"
    [ -z "$p" ] || [ -f "$p" ] || { echo "callgrind.sh: no $p for $a" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ir N ALLOC BIN... -> total instructions of one run of BIN... N MODE
ir() {
    local n="$1" a="$2"
    shift 2
    local mode="${*: -1}" out
    out="$tmp/cg.$a.${1##*/}.$mode.$n"
    set -- "${@:1:$#-1}"
    env MAPALLOC_BENCH_ALLOC="$(switch "$a")" LD_PRELOAD="$(preload "$a")" \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$@" "$n" "$mode" >/dev/null 2>"$out.log" || {
        echo "callgrind.sh: valgrind failed for $a $* $n $mode:" >&2
        cat "$out.log" >&2
        exit 1
    }
    awk '/^summary:/ { print $2; found = 1 } END { if (!found) exit 1 }' "$out"
}

# per_pair ALLOC COLUMN BIN... MODE -> Ir per pair (and a CSV line)
per_pair() {
    local i1 i2 p label="$1" a="$1" col="$2"
    [ "$a" = hardened ] && label=mapalloc-hardened
    shift 2
    i1="$(ir "$N1" "$a" "$@")"
    i2="$(ir "$N2" "$a" "$@")"
    p="$(awk -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.2f", (b - a) / (n2 - n1) }')"
    echo "$label,$col,$N1,$N2,$i1,$i2,$p" >>"$csv"
    echo "$p"
}

mkdir -p "$here/results"
csv="$here/results/callgrind.csv"
echo "alloc,measure,n1,n2,ir_n1,ir_n2,ir_per_pair" >"$csv"

fmt='%-18s %10s %10s %10s %12s\n'
printf "$fmt" allocator Box "Box lone" inlined "via Switch"
printf '%s\n' "--------------------------------------------------------------"
for a in "${allocs[@]}"; do
    label="$a"
    [ "$a" = hardened ] && label=mapalloc-hardened
    b="$dir/$(bin "$a")"
    box="$(per_pair "$a" box "$b" box)"
    lone="$(per_pair "$a" box-lone "$b" box-lone)"
    inl="$(per_pair "$a" inlined "$b" direct)"
    sw="$(per_pair "$a" switch "$dir/mapalloc-bench" pairs box)"
    printf "$fmt" "$label" "$box" "$lone" "$inl" "$sw"
done
echo
echo "instructions (callgrind Ir) per 32-byte alloc+free pair = (Ir(N2) - Ir(N1)) / (N2 - N1), N1=$N1 N2=$N2"
echo "$(valgrind --version); wrote $csv"
