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

/* argv[i] as a thread count (at least 1), or `def` when absent. */
BENCH_UNUSED static unsigned arg_threads(int argc, char **argv, int i, unsigned def) {
    uint64_t n = arg_u64(argc, argv, i, def);
    if (n < 1 || n > 4096) die("THREADS must be 1 to 4096");
    return (unsigned)n;
}

BENCH_UNUSED static void spawn(pthread_t *t, void *(*fn)(void *), void *arg) {
    if (pthread_create(t, NULL, fn, arg) != 0) die("pthread_create failed");
}

BENCH_UNUSED static void join(pthread_t t) {
    if (pthread_join(t, NULL) != 0) die("pthread_join failed");
}

/* Threads of a workload may wait on this to start together. */
static pthread_barrier_t bench_start;

/* Runs `n` threads, thread i on fn(args + i * stride), with bench_start
 * set up for n, and joins them all. */
BENCH_UNUSED static void run_threads(unsigned n, void *(*fn)(void *), void *args, size_t stride) {
    pthread_t *t = (pthread_t *)xmalloc(n * sizeof *t);
    pthread_barrier_init(&bench_start, NULL, n);
    for (unsigned i = 0; i < n; i++) spawn(&t[i], fn, (char *)args + i * stride);
    for (unsigned i = 0; i < n; i++) join(t[i]);
    pthread_barrier_destroy(&bench_start);
    free(t);
}

/* The state of a thread that only adds to a checksum. */
typedef struct {
    unsigned id;
    uint64_t sum;
} sum_worker;

/* Runs `n` threads on fn(&workers[i]) (ids 0..n-1, sums 0) as run_threads
 * does; returns the sum of their sums. */
BENCH_UNUSED static uint64_t sum_threads(unsigned n, void *(*fn)(void *)) {
    sum_worker *w = (sum_worker *)xcalloc(n, sizeof *w);
    for (unsigned i = 0; i < n; i++) w[i].id = i;
    run_threads(n, fn, w, sizeof *w);
    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++) sum += w[i].sum;
    free(w);
    return sum;
}

/* A block that carries a tag and its size at its start and the tag's low
 * byte in its last byte, so that whoever frees it can check it and add
 * the tag to a checksum (a sum of tags does not depend on which thread
 * frees which block). */
typedef struct {
    uint64_t tag;
    uint32_t size;
} tagged;

/* A new tagged block of `size` >= sizeof(tagged) bytes, its first 64
 * bytes written as a program fills a new object. */
BENCH_UNUSED static tagged *tagged_new(size_t size, uint64_t tag) {
    tagged *t = (tagged *)xmalloc(size);
    memset(t, (int)tag, size < 64 ? size : 64);
    t->tag = tag;
    t->size = (uint32_t)size;
    ((unsigned char *)t)[size - 1] = (unsigned char)tag;
    return t;
}

/* Checks and frees a tagged block; returns its tag. */
BENCH_UNUSED static uint64_t tagged_free(tagged *t) {
    if (((unsigned char *)t)[t->size - 1] != (unsigned char)t->tag)
        die("a block changed between malloc and free");
    uint64_t tag = t->tag;
    free(t);
    return tag;
}

/* The result line the harness compares between allocators. */
BENCH_UNUSED static void result(const char *name, uint64_t size, uint64_t threads,
                                uint64_t checksum) {
    printf("%s size=%llu threads=%llu checksum=%016llx\n", name, (unsigned long long)size,
           (unsigned long long)threads, (unsigned long long)checksum);
}

#endif
