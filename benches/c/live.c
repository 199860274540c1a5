/*
 * live: many live blocks of random sizes. Each of THREADS threads keeps
 * 100,000 blocks of 8 B-4 KiB (log-uniform) alive and replaces a random
 * one per step: free it, allocate a block of a new random size and write
 * it (the first 64 bytes and the last). The threads share nothing; the
 * heap holds ~60 MB per thread throughout, so this is about finding room
 * in a big, fragmented heap and about locality, not about fast paths.
 *
 *   live [SIZE [THREADS]]     (SIZE = replacements per thread)
 *
 * The checksum is the sum of the tags read back at each free.
 */
#include "bench.h"

#define LIVE 100000

typedef struct {
    uint64_t tag;
    uint32_t size;
} head;

static uint64_t steps;
static pthread_barrier_t start;

typedef struct {
    unsigned id;
    uint64_t sum;
} worker;

static head *make(rng_t *r) {
    uint32_t size = (uint32_t)rng_log(r, 16, 4096);
    head *h = xmalloc(size);
    memset(h, 0x5a, size < 64 ? size : 64);
    h->size = size;
    h->tag = rng_next(r) >> 8;
    ((unsigned char *)h)[size - 1] = (unsigned char)h->tag;
    return h;
}

static uint64_t release(head *h) {
    if (((unsigned char *)h)[h->size - 1] != (unsigned char)h->tag) die("a block changed");
    uint64_t t = h->tag;
    free(h);
    return t;
}

static void *run(void *arg) {
    worker *w = arg;
    rng_t r = rng_seed(77 + w->id);
    head **blocks = xmalloc(LIVE * sizeof *blocks);
    for (size_t i = 0; i < LIVE; i++) blocks[i] = make(&r);
    pthread_barrier_wait(&start);
    for (uint64_t s = 0; s < steps; s++) {
        size_t i = rng_below(&r, LIVE);
        w->sum += release(blocks[i]);
        blocks[i] = make(&r);
    }
    for (size_t i = 0; i < LIVE; i++) w->sum += release(blocks[i]);
    free(blocks);
    return NULL;
}

int main(int argc, char **argv) {
    steps = arg_u64(argc, argv, 1, 2000000);
    unsigned threads = (unsigned)arg_u64(argc, argv, 2, 1);
    if (threads < 1) die("THREADS must be at least 1");
    worker *w = xcalloc(threads, sizeof *w);
    pthread_t *t = xmalloc(threads * sizeof *t);
    pthread_barrier_init(&start, NULL, threads);
    for (unsigned i = 0; i < threads; i++) {
        w[i].id = i;
        spawn(&t[i], run, &w[i]);
    }
    uint64_t sum = 0;
    for (unsigned i = 0; i < threads; i++) {
        join(t[i]);
        sum += w[i].sum;
    }
    free(w);
    free(t);
    result("live", steps, threads, sum);
    return 0;
}
