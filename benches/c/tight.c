/*
 * tight: the allocator's fast path. Each of THREADS threads runs its own
 * loop of malloc, one write, free, over small sizes (8-256 B, from a table
 * drawn once, so the loop does no random-number work); nothing is shared
 * and nothing stays live, so this measures a malloc/free pair and, with
 * more threads, whether the threads' pairs slow each other down.
 *
 *   tight [SIZE [THREADS]]     (SIZE = pairs per thread)
 */
#include "bench.h"

#define TABLE 256

static uint64_t pairs;
static size_t sizes[TABLE];

static void *run(void *arg) {
    sum_worker *w = arg;
    pthread_barrier_wait(&bench_start);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < pairs; i++) {
        size_t n = sizes[i % TABLE];
        volatile unsigned char *p = xmalloc(n);
        p[n - 1] = (unsigned char)i;
        sum += p[n - 1] + n;
        free((void *)p);
    }
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    pairs = arg_u64(argc, argv, 1, 60000000);
    unsigned threads = arg_threads(argc, argv, 2, 1);
    rng_t r = rng_seed(5);
    for (int i = 0; i < TABLE; i++) sizes[i] = (size_t)rng_range(&r, 8, 256);
    result("tight", pairs, threads, sum_threads(threads, run));
    return 0;
}
