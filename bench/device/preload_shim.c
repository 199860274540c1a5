/*
 * LD_PRELOAD front for an allocator whose static library exports only
 * prefixed names: mimalloc as libmimalloc-sys builds it (mi_malloc, ...)
 * and jemalloc as tikv-jemalloc-sys builds it (_rjem_malloc, ...). The
 * Rust benchmark wants them prefixed (glibc malloc stays in the same
 * binary); the C benchmarks (capi/bench) need them as malloc itself, like
 * libmapalloc.so. Built by bench/device/build.sh:
 *
 *   cc -shared -fPIC -O2 -DPREFIX=mi_ preload_shim.c libmimalloc.a ...
 *
 * Every entry point a C program can reach for heap memory is defined, so
 * that no block from this allocator is ever handed to glibc's free (or the
 * reverse).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifndef PREFIX
#error "define PREFIX (mi_ or _rjem_)"
#endif
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define P(f) CAT(PREFIX, f)
#define EXPORT __attribute__((visibility("default")))

void *P(malloc)(size_t);
void *P(calloc)(size_t, size_t);
void *P(realloc)(void *, size_t);
void P(free)(void *);
int P(posix_memalign)(void **, size_t, size_t);
void *P(aligned_alloc)(size_t, size_t);
void *P(memalign)(size_t, size_t);
void *P(valloc)(size_t);
void *P(pvalloc)(size_t);
size_t P(malloc_usable_size)(void *);

EXPORT void *malloc(size_t n) { return P(malloc)(n); }
EXPORT void *calloc(size_t n, size_t m) { return P(calloc)(n, m); }
EXPORT void *realloc(void *p, size_t n) { return P(realloc)(p, n); }
EXPORT void free(void *p) { P(free)(p); }
EXPORT int posix_memalign(void **out, size_t align, size_t n) { return P(posix_memalign)(out, align, n); }
EXPORT void *aligned_alloc(size_t align, size_t n) { return P(aligned_alloc)(align, n); }
EXPORT void *memalign(size_t align, size_t n) { return P(memalign)(align, n); }
EXPORT void *valloc(size_t n) { return P(valloc)(n); }
EXPORT void *pvalloc(size_t n) { return P(pvalloc)(n); }
EXPORT size_t malloc_usable_size(void *p) { return P(malloc_usable_size)(p); }

/* jemalloc has no reallocarray; glibc's would call its own realloc. */
EXPORT void *reallocarray(void *p, size_t n, size_t m) {
    if (m != 0 && n > SIZE_MAX / m) {
        errno = ENOMEM;
        return NULL;
    }
    return P(realloc)(p, n * m);
}
