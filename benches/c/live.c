/*
 * live: many live blocks of random sizes. Each of THREADS threads keeps
 * 100,000 blocks of 16 B-4 KiB (log-uniform) alive and replaces a random
 * one per step: free it, allocate a block of a new random size and write
 * it (the first 64 bytes and the last). The threads share nothing; the
 * heap holds ~75 MB of blocks per thread throughout, so this is about
 * finding room in a big, fragmented heap and about locality, not about
 * fast paths.
 *
 *   live [SIZE [THREADS]]     (SIZE = replacements per thread)
 *
 * The checksum is the sum of the tags read back at each free.
 */
#include "bench.h"

#define LIVE 100000

static uint64_t steps;

static tagged *make(rng_t *r) {
    size_t size = (size_t)rng_log(r, 16, 4096);
    return tagged_new(size, rng_next(r) >> 8);
}

static void *run(void *arg) {
    sum_worker *w = arg;
    rng_t r = rng_seed(77 + w->id);
    tagged **blocks = xmalloc(LIVE * sizeof *blocks);
    for (size_t i = 0; i < LIVE; i++) blocks[i] = make(&r);
    pthread_barrier_wait(&bench_start);
    for (uint64_t s = 0; s < steps; s++) {
        size_t i = rng_below(&r, LIVE);
        w->sum += tagged_free(blocks[i]);
        blocks[i] = make(&r);
    }
    for (size_t i = 0; i < LIVE; i++) w->sum += tagged_free(blocks[i]);
    free(blocks);
    return NULL;
}

int main(int argc, char **argv) {
    steps = arg_u64(argc, argv, 1, 1000000);
    unsigned threads = arg_threads(argc, argv, 2, 1);
    result("live", steps, threads, sum_threads(threads, run));
    return 0;
}
