/*
 * A Larson-style server simulation. A shared array of blocks is split
 * into one lane per thread; each thread replaces random slots (free the
 * old block, malloc a new one of a random size and touch it), mostly in
 * its own lane but REMOTE_PCT% of the time anywhere, so those frees hit
 * blocks another thread allocated. As in Larson's benchmark, the threads
 * are short-lived: after ROUND replacements a thread exits and a fresh
 * one carries on with its lane (heap set-up and hand-over count too).
 *
 *   larson THREADS [SECONDS [SLOTS_PER_THREAD [MIN_SIZE [MAX_SIZE]]]]
 *
 * Prints "larson threads=T ops_per_sec=N" (a replacement is one op).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REMOTE_PCT 20
#define ROUND 50000

static _Atomic(unsigned char *) *slots;
static size_t lane_len, nslots, min_size, max_size;
static atomic_int stop;
static atomic_ulong total_ops;
static atomic_ulong sink; /* keeps the reads of old blocks */

struct lane {
    unsigned id;
    uint64_t rng;
};

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static unsigned char *make(uint64_t *s) {
    size_t size = min_size + next(s) % (max_size - min_size + 1);
    unsigned char *p = malloc(size);
    if (!p) {
        fprintf(stderr, "larson: out of memory\n");
        exit(1);
    }
    p[0] = (unsigned char)size;
    p[size - 1] = (unsigned char)size;
    return p;
}

static void *worker(void *arg) {
    struct lane *l = arg;
    unsigned long ops = 0, sum = 0;
    size_t base = (size_t)l->id * lane_len;
    while (ops < ROUND && !atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 64; k++) {
            size_t i = next(&l->rng) % 100 < REMOTE_PCT ? next(&l->rng) % nslots
                                                         : base + next(&l->rng) % lane_len;
            unsigned char *old = atomic_exchange_explicit(&slots[i], make(&l->rng),
                                                          memory_order_acq_rel);
            sum += old[0]; /* read it: it is live */
            free(old);
        }
        ops += 64;
    }
    atomic_fetch_add(&total_ops, ops);
    atomic_fetch_add(&sink, sum);
    return NULL;
}

/* One lane: a succession of short-lived worker threads. */
static void *lane_main(void *arg) {
    while (!atomic_load(&stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, arg) != 0) {
            perror("pthread_create");
            exit(1);
        }
        pthread_join(t, NULL);
    }
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: larson THREADS [SECONDS [SLOTS_PER_THREAD [MIN [MAX]]]]\n");
        return 2;
    }
    unsigned threads = atoi(argv[1]);
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    lane_len = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
    min_size = argc > 4 ? strtoul(argv[4], NULL, 10) : 16;
    max_size = argc > 5 ? strtoul(argv[5], NULL, 10) : 1024;
    if (threads < 1 || lane_len < 1 || min_size < 2 || max_size < min_size) return 2;
    nslots = lane_len * threads;
    slots = calloc(nslots, sizeof *slots);
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < nslots; i++) slots[i] = make(&seed);

    struct lane *lanes = calloc(threads, sizeof *lanes);
    pthread_t *tids = calloc(threads, sizeof *tids);
    double start = now();
    for (unsigned i = 0; i < threads; i++) {
        lanes[i].id = i;
        lanes[i].rng = 0x2545f4914f6cdd1dULL * (i + 1);
        pthread_create(&tids[i], NULL, lane_main, &lanes[i]);
    }
    struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    for (unsigned i = 0; i < threads; i++) pthread_join(tids[i], NULL);
    double elapsed = now() - start;
    for (size_t i = 0; i < nslots; i++) free(slots[i]);
    free(slots);
    free(lanes);
    free(tids);
    printf("larson threads=%u ops_per_sec=%.0f (check %lu)\n", threads,
           atomic_load(&total_ops) / elapsed, atomic_load(&sink) % 1000);
    return 0;
}
