/*
 * What every C workload of mapalloc-bench shares: a seeded generator,
 * checked allocation, argument parsing, thread start-up and the result
 * line. Each workload is one file that includes this header and is built
 * with `gcc -O2 -pthread` (g++ for the C++ ones) by the harness.
 *
 * Conventions (benches/README.md): `prog [SIZE [THREADS [MODE]]]`; fixed
 * work that SIZE scales; prints one line `NAME ... checksum=HEX` that does
 * not depend on the allocator, on timing or on addresses; exits 0, or 1
 * after printing what went wrong.
 */
#ifndef MAPALLOC_BENCH_H
#define MAPALLOC_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
#define BENCH_UNUSED [[maybe_unused]]
#else
#define BENCH_UNUSED __attribute__((unused))
#endif

/* splitmix64: small, fast, and equal seeds give equal streams. */
typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t rng_next(rng_t *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline rng_t rng_seed(uint64_t seed) {
    rng_t r = {seed * 0xD1B54A32D192ED03ull + 1};
    return r;
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t rng_below(rng_t *r, uint64_t n) {
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi) {
    return lo + rng_below(r, hi - lo + 1);
}

/* Log-uniform in [lo, hi] (lo >= 1): every power of two as likely, the
 * way real programs ask for many small blocks and a few big ones. */
static inline uint64_t rng_log(rng_t *r, uint64_t lo, uint64_t hi) {
    int a = 63 - __builtin_clzll(lo), b = 63 - __builtin_clzll(hi);
    int e = a + (int)rng_below(r, (uint64_t)(b - a + 1));
    uint64_t v = (1ull << e) + rng_below(r, 1ull << e);
    return v < lo ? lo : v > hi ? hi : v;
}

/* A 64-bit mix, for checksums that are sums of mixed values (a sum does
 * not depend on the order in which threads add to it). */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}

BENCH_UNUSED static void die(const char *what) {
    fprintf(stderr, "error: %s\n", what);
    exit(1);
}

BENCH_UNUSED static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("malloc returned NULL");
    return p;
}

BENCH_UNUSED static void *xcalloc(size_t n, size_t m) {
    void *p = calloc(n, m);
    if (!p) die("calloc returned NULL");
    return p;
}

/* argv[i] as a number, or `def` when absent; exits on junk. */
BENCH_UNUSED static uint64_t arg_u64(int argc, char **argv, int i, uint64_t def) {
    if (i >= argc) return def;
    char *end;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (*argv[i] == '\0' || *end != '\0') {
        fprintf(stderr, "error: argument %d (%s) is not a whole number\n", i, argv[i]);
        exit(2);
    }
    return v;
}

BENCH_UNUSED static void spawn(pthread_t *t, void *(*fn)(void *), void *arg) {
    if (pthread_create(t, NULL, fn, arg) != 0) die("pthread_create failed");
}

BENCH_UNUSED static void join(pthread_t t) {
    if (pthread_join(t, NULL) != 0) die("pthread_join failed");
}

/* The result line the harness compares between allocators. */
BENCH_UNUSED static void result(const char *name, uint64_t size, uint64_t threads,
                                uint64_t checksum) {
    printf("%s size=%llu threads=%llu checksum=%016llx\n", name, (unsigned long long)size,
           (unsigned long long)threads, (unsigned long long)checksum);
}

#endif
