/*
 * xsizes: THREADS threads share one array of 4096 slots per thread; each
 * step a thread allocates a block of 16 B-16 KiB (log-uniform), writes its
 * first and last bytes, swaps it into a random slot and frees the block it
 * took out, which any thread may have allocated: with T threads, about
 * (T-1)/T of the frees are cross-thread, over the whole range of small and
 * medium sizes.
 *
 *   xsizes [SIZE [THREADS]]     (SIZE = steps per thread)
 *
 * The checksum is the sum of the tags read from freed blocks, which must
 * equal the sum of the tags written.
 */
#include <stdatomic.h>

#include "bench.h"

#define SLOTS_PER_THREAD 4096

typedef struct {
    uint64_t tag;
    uint32_t size;
} head;

static _Atomic(head *) *slots;
static size_t nslots;
static uint64_t steps;
static pthread_barrier_t start;

typedef struct {
    unsigned id;
    uint64_t made, seen;
} worker;

static head *make(rng_t *r, uint64_t *made) {
    uint32_t size = (uint32_t)rng_log(r, 16, 16384);
    head *h = xmalloc(size);
    h->size = size;
    h->tag = rng_next(r) >> 8;
    ((unsigned char *)h)[size - 1] = (unsigned char)h->tag;
    *made += h->tag;
    return h;
}

static void release(head *h, uint64_t *seen) {
    if (((unsigned char *)h)[h->size - 1] != (unsigned char)h->tag) die("a block changed");
    *seen += h->tag;
    free(h);
}

static void *run(void *arg) {
    worker *w = arg;
    rng_t r = rng_seed(500 + w->id);
    pthread_barrier_wait(&start);
    for (uint64_t s = 0; s < steps; s++) {
        size_t i = rng_below(&r, nslots);
        head *old = atomic_exchange_explicit(&slots[i], make(&r, &w->made), memory_order_acq_rel);
        release(old, &w->seen);
    }
    return NULL;
}

int main(int argc, char **argv) {
    steps = arg_u64(argc, argv, 1, 1500000);
    unsigned threads = (unsigned)arg_u64(argc, argv, 2, 2);
    if (threads < 1) die("THREADS must be at least 1");
    nslots = (size_t)SLOTS_PER_THREAD * threads;
    slots = xcalloc(nslots, sizeof *slots);
    rng_t r = rng_seed(1);
    uint64_t made = 0, seen = 0;
    for (size_t i = 0; i < nslots; i++) slots[i] = make(&r, &made);
    worker *w = xcalloc(threads, sizeof *w);
    pthread_t *t = xmalloc(threads * sizeof *t);
    pthread_barrier_init(&start, NULL, threads);
    for (unsigned i = 0; i < threads; i++) {
        w[i].id = i;
        spawn(&t[i], run, &w[i]);
    }
    for (unsigned i = 0; i < threads; i++) join(t[i]);
    for (size_t i = 0; i < nslots; i++) release(slots[i], &seen);
    for (unsigned i = 0; i < threads; i++) {
        made += w[i].made;
        seen += w[i].seen;
    }
    free(slots);
    free(w);
    free(t);
    if (made != seen) die("a block's tag changed between malloc and free");
    result("xsizes", steps, threads, seen);
    return 0;
}
