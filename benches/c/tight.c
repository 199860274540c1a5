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
static pthread_barrier_t start;

typedef struct {
    uint64_t sum;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(&start);
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
    unsigned threads = (unsigned)arg_u64(argc, argv, 2, 1);
    if (threads < 1) die("THREADS must be at least 1");
    rng_t r = rng_seed(5);
    for (int i = 0; i < TABLE; i++) sizes[i] = (size_t)rng_range(&r, 8, 256);
    worker *w = xcalloc(threads, sizeof *w);
    pthread_t *t = xmalloc(threads * sizeof *t);
    pthread_barrier_init(&start, NULL, threads);
    for (unsigned i = 0; i < threads; i++) spawn(&t[i], run, &w[i]);
    uint64_t sum = 0;
    for (unsigned i = 0; i < threads; i++) {
        join(t[i]);
        sum += w[i].sum;
    }
    free(w);
    free(t);
    result("tight", pairs, threads, sum);
    return 0;
}
