/*
 * xsizes: THREADS threads share one array of 4096 slots per thread; each
 * step a thread allocates a block of 16 B-16 KiB (log-uniform), writes it
 * (its first 64 bytes and its last), swaps it into a random slot and frees
 * the block it took out, which any thread may have allocated: with T
 * threads, about (T-1)/T of the frees are cross-thread, over the whole
 * range of small and medium sizes.
 *
 *   xsizes [SIZE [THREADS]]     (SIZE = steps per thread)
 *
 * The checksum is the sum of the tags read from freed blocks, which must
 * equal the sum of the tags written.
 */
#include <stdatomic.h>

#include "bench.h"

#define SLOTS_PER_THREAD 4096

static _Atomic(tagged *) *slots;
static size_t nslots;
static uint64_t steps;

typedef struct {
    unsigned id;
    uint64_t made, seen;
} worker;

static tagged *make(rng_t *r, uint64_t *made) {
    size_t size = (size_t)rng_log(r, 16, 16384);
    uint64_t tag = rng_next(r) >> 8;
    *made += tag;
    return tagged_new(size, tag);
}

static void *run(void *arg) {
    worker *w = arg;
    rng_t r = rng_seed(500 + w->id);
    pthread_barrier_wait(&bench_start);
    for (uint64_t s = 0; s < steps; s++) {
        size_t i = rng_below(&r, nslots);
        tagged *old = atomic_exchange_explicit(&slots[i], make(&r, &w->made), memory_order_acq_rel);
        w->seen += tagged_free(old);
    }
    return NULL;
}

int main(int argc, char **argv) {
    steps = arg_u64(argc, argv, 1, 2500000);
    unsigned threads = arg_threads(argc, argv, 2, 2);
    nslots = (size_t)SLOTS_PER_THREAD * threads;
    slots = xcalloc(nslots, sizeof *slots);
    rng_t r = rng_seed(1);
    uint64_t made = 0, seen = 0;
    for (size_t i = 0; i < nslots; i++) slots[i] = make(&r, &made);
    worker *w = xcalloc(threads, sizeof *w);
    for (unsigned i = 0; i < threads; i++) w[i].id = i;
    run_threads(threads, run, w, sizeof *w);
    for (size_t i = 0; i < nslots; i++) seen += tagged_free(slots[i]);
    for (unsigned i = 0; i < threads; i++) {
        made += w[i].made;
        seen += w[i].seen;
    }
    free(slots);
    free(w);
    if (made != seen) die("a block's tag changed between malloc and free");
    result("xsizes", steps, threads, seen);
    return 0;
}
