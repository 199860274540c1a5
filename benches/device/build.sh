#!/bin/bash
# Builds, on this machine, everything benches/device/run.sh needs on a
# machine that has no Rust toolchain, no compiler and no network (the
# 16-core device machine), into one folder that travels with the
# repository as an ignored, carried path:
#
#   benches/device/build.sh [DIR]        (default: devbench/ at the repository root)
#
# DIR gets what `mapalloc-bench prepare DIR` copies there (the harness
# binary, libmapalloc.so, libmimalloc_secure.so, the Debian peers'
# libraries, c/ with the compiled workloads and the probe), with debug
# information stripped (the carry is at most 64 MiB), and MANIFEST.txt
# (commit, dirty files, the newest glibc symbol each file needs,
# checksums). DIR is added to .git/info/exclude.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
dir=${1:-devbench}
case $dir in /*) ;; *) dir=$root/$dir ;; esac

# Ignored rather than .gitignore'd: nothing about it belongs in the history.
exclude=$(git rev-parse --git-path info/exclude)
rel=${dir#"$root"/}
if [ "$rel" != "$dir" ] && ! grep -qxF "/$rel/" "$exclude" 2>/dev/null; then
    mkdir -p "$(dirname "$exclude")"
    echo "/$rel/" >>"$exclude"
fi

rm -rf "$dir"
mkdir -p "$dir"
cargo run --release --quiet -p mapalloc-bench -- prepare "$dir"
for f in "$dir"/mapalloc-bench "$dir"/*.so* "$dir"/c/*; do
    strip --strip-debug "$f"
done

{
    echo "built $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(ldd --version | head -1)"
    echo "commit $(git rev-parse HEAD)"
    echo "uncommitted changes (the binaries include them):"
    git status --short | sed 's/^/  /'
    echo "newest glibc symbol version each file needs (the target's glibc must be at least that):"
    for f in "$dir"/* "$dir"/c/*; do
        [ -f "$f" ] || continue
        [ "${f##*/}" = MANIFEST.txt ] && continue
        v=$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1) || true
        printf '  %-28s %s\n' "${f#"$dir"/}" "${v:-none}"
    done
    echo "sha256:"
    (cd "$dir" && find . -type f ! -name MANIFEST.txt | sort | xargs sha256sum -- | sed 's/^/  /')
} >"$dir/MANIFEST.txt"
cat "$dir/MANIFEST.txt"
du -sh "$dir"
