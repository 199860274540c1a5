/*
 * thread-churn: short-lived threads. SIZE threads are started, THREADS at
 * a time; each one callocs a block (16-256 B), checks that it reads zero,
 * tags it, swaps it into a shared slot and frees the block it took out,
 * which an earlier thread allocated, then exits. Per thread the allocator
 * pays its set-up and tear-down (heap, caches) for one allocation and one
 * free of a block from a heap whose thread is gone.
 *
 *   thread-churn [SIZE [THREADS]]     (SIZE = threads started in all)
 *
 * The checksum is the sum of the tags read back, which is fixed.
 */
#include <stdatomic.h>

#include "bench.h"

typedef struct {
    uint64_t tag;
    uint32_t size;
} head;

static _Atomic(head *) baton;
static atomic_uint_fast64_t seen;

static void *run(void *arg) {
    uint64_t i = (uint64_t)(uintptr_t)arg;
    rng_t r = rng_seed(i);
    uint32_t size = (uint32_t)rng_range(&r, sizeof(head), 256);
    head *h = xcalloc(1, size);
    for (uint32_t k = 0; k < size; k++)
        if (((unsigned char *)h)[k] != 0) die("calloc returned memory that is not zero");
    h->tag = mix64(i);
    h->size = size;
    head *old = atomic_exchange(&baton, h);
    if (old) {
        atomic_fetch_add(&seen, old->tag);
        free(old);
    }
    return NULL;
}

int main(int argc, char **argv) {
    uint64_t total = arg_u64(argc, argv, 1, 20000);
    unsigned threads = arg_threads(argc, argv, 2, 1);
    pthread_t *t = xmalloc(threads * sizeof *t);
    for (uint64_t i = 0; i < total; i += threads) {
        unsigned n = total - i < threads ? (unsigned)(total - i) : threads;
        for (unsigned k = 0; k < n; k++) spawn(&t[k], run, (void *)(uintptr_t)(i + k));
        for (unsigned k = 0; k < n; k++) join(t[k]);
    }
    head *last = atomic_exchange(&baton, NULL);
    if (last) {
        atomic_fetch_add(&seen, last->tag);
        free(last);
    }
    free(t);
    uint64_t want = 0;
    for (uint64_t i = 0; i < total; i++) want += mix64(i);
    if (want != atomic_load(&seen)) die("a block's tag changed between calloc and free");
    result("thread-churn", total, threads, want);
    return 0;
}
