#!/bin/bash
# Builds, on this machine, everything bench/device/run.sh needs on a machine
# that has no Rust toolchain and maybe no C compiler, and copies it into one
# folder that travels with the repository:
#
#   bench/device/build.sh [DIR]        (default: devbench/ at the repository root)
#   STATIC=0 bench/device/build.sh     (skip the static fallback, ~1 min less)
#
# DIR gets: peers (cargo bench -p mapalloc-bench --bench peers), peers-static
# (the same with glibc linked in, for a machine whose glibc is older than
# ours), libmapalloc.so, larson and xthread (capi/bench), LD_PRELOAD shims
# for mimalloc and jemalloc, and MANIFEST.txt (commit, dirty files, glibc
# versions needed, checksums). DIR is added to .git/info/exclude.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
dir=${1:-devbench}
case $dir in /*) ;; *) dir=$root/$dir ;; esac
cc=${CC:-cc}
target=${CARGO_TARGET_DIR:-$root/target}

# Ignored rather than .gitignore'd: nothing about it belongs in the history.
exclude=$(git rev-parse --git-path info/exclude)
rel=${dir#"$root"/}
if [ "$rel" != "$dir" ] && ! grep -qxF "/$rel/" "$exclude" 2>/dev/null; then
    mkdir -p "$(dirname "$exclude")"
    echo "/$rel/" >>"$exclude"
fi

rm -rf "$dir"
mkdir -p "$dir"

# The artifact paths come from cargo's JSON messages, not from globbing
# target/: stale hash directories of other feature sets lie next to them.
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo build --release -p mapalloc-capi
cargo bench -p mapalloc-bench --bench peers --no-run --message-format=json >"$json"
pick() { # pick WHAT: the peers executable, or a -sys crate's OUT_DIR
    python3 -c '
import json, sys
what = sys.argv[1]
for line in open(sys.argv[2]):
    m = json.loads(line)
    if what == "peers" and m.get("executable") and m["target"]["name"] == "peers":
        print(m["executable"])
    elif m.get("reason") == "build-script-executed" and "#" + what + "@" in m["package_id"]:
        print(m["out_dir"])
' "$1" "$json" | head -1
}
peers=$(pick peers)
mi_out=$(pick libmimalloc-sys)
je_out=$(pick tikv-jemalloc-sys)
[ -x "$peers" ] || { echo "build.sh: no peers executable in cargo's output" >&2; exit 1; }
mi_lib=$mi_out/libmimalloc.a
je_lib=$je_out/lib/libjemalloc_pic.a # the _pic archive: it goes into a .so
for f in "$mi_lib" "$je_lib"; do [ -f "$f" ] || { echo "build.sh: no $f" >&2; exit 1; }; done

# Debug info is dropped (14 MB of the peers binary; the carry budget is
# small); symbols stay, so perf can still name functions there.
strip --strip-debug -o "$dir/peers" "$peers"
strip --strip-debug -o "$dir/libmapalloc.so" "$target/release/libmapalloc.so"

if [ "${STATIC:-1}" = 1 ]; then
    # A separate target dir: other RUSTFLAGS would invalidate target/release.
    # --target keeps build scripts and proc macros dynamic (they run here).
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$target/devbench-static \
        cargo bench -p mapalloc-bench --bench peers --no-run \
        --target x86_64-unknown-linux-gnu --message-format=json >"$json"
    strip --strip-debug -o "$dir/peers-static" "$(pick peers)"
fi

# Dynamic on purpose: a static binary would ignore LD_PRELOAD.
for b in larson xthread; do
    "$cc" -O2 -pthread -o "$dir/$b" "capi/bench/$b.c"
done

# --exclude-libs hides the archive's own symbols: only the malloc family is
# exported, and the allocator's internal calls need no PLT.
"$cc" -shared -fPIC -O2 -Wall -Wextra -DPREFIX=mi_ -o "$dir/libmimalloc-preload.so" \
    "$here/preload_shim.c" "$mi_lib" -Wl,--exclude-libs,ALL -pthread
"$cc" -shared -fPIC -O2 -Wall -Wextra -DPREFIX=_rjem_ -o "$dir/libjemalloc-preload.so" \
    "$here/preload_shim.c" "$je_lib" -Wl,--exclude-libs,ALL -pthread

# Each library must really replace malloc: its stats must appear. (Output
# captured first: grep -q closing the pipe early would fail under pipefail.)
in_effect() { # in_effect LIB ENV=VALUE SIGNATURE
    local out
    out=$(env LD_PRELOAD="$dir/$1" "$2" "$dir/larson" 2 0.05 2>&1)
    grep -q "$3" <<<"$out" || { echo "build.sh: $1 not in effect" >&2; exit 1; }
}
in_effect libmimalloc-preload.so MIMALLOC_SHOW_STATS=1 committed
in_effect libjemalloc-preload.so _RJEM_MALLOC_CONF=stats_print:true 'Begin jemalloc statistics'
in_effect libmapalloc.so MAPALLOC_SHOW_STATS=1 'mapalloc stats'

{
    echo "built $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(ldd --version | head -1)"
    echo "commit $(git rev-parse HEAD)"
    echo "uncommitted changes (the binaries include them):"
    git status --short | sed 's/^/  /'
    echo "newest glibc symbol version each file needs (the target's glibc must be at least that):"
    for f in "$dir"/*; do
        [ "${f##*/}" = MANIFEST.txt ] && continue
        v=$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1) || true
        printf '  %-24s %s\n' "$(basename "$f")" "${v:-none (static)}"
    done
    echo "sha256:"
    (cd "$dir" && ls | grep -vx MANIFEST.txt | xargs sha256sum -- | sed 's/^/  /')
} >"$dir/MANIFEST.txt"
cat "$dir/MANIFEST.txt"
du -sh "$dir"
