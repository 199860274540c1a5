/*
 * prodcons: producer/consumer. THREADS/2 pairs; in each, the producer
 * allocates SIZE blocks (90% of 16-256 B, 9% up to 8 KiB, 1% up to
 * 256 KiB), writes them and passes them through a 1024-entry ring to its
 * consumer, which reads and frees them: every free is a free of a block
 * that another thread allocated, and the producer's heap never sees a
 * block come back. THREADS = 1 runs one thread that fills its ring and
 * empties it itself (the same work, no cross-thread free).
 *
 *   prodcons [SIZE [THREADS]]     (SIZE = blocks per producer)
 *
 * The checksum is the sum of the tags the consumers read.
 */
#include <sched.h>
#include <stdatomic.h>

#include "bench.h"

#define RING 1024 /* a power of two */

typedef struct {
    _Alignas(64) atomic_size_t put; /* written by the producer */
    _Alignas(64) atomic_size_t got; /* written by the consumer */
    _Alignas(64) tagged *ring[RING];
    unsigned id;
    uint64_t made, seen;
} pair;

/* One thread of a pair: its producer or its consumer. */
typedef struct {
    pair *q;
    int consumer;
} side;

static uint64_t blocks;

static tagged *make(rng_t *r, uint64_t *made) {
    uint64_t k = rng_below(r, 100);
    size_t size = (size_t)(k < 90   ? rng_range(r, 16, 256)
                           : k < 99 ? rng_range(r, 257, 8192)
                                    : rng_range(r, 8193, 262144));
    uint64_t tag = rng_next(r) >> 8;
    *made += tag;
    return tagged_new(size, tag);
}

static void producer(pair *q) {
    rng_t r = rng_seed(300 + q->id);
    size_t put = 0;
    while (put < blocks) {
        size_t room = RING - (put - atomic_load_explicit(&q->got, memory_order_acquire));
        if (room == 0) {
            sched_yield();
            continue;
        }
        for (; room > 0 && put < blocks; room--, put++) q->ring[put % RING] = make(&r, &q->made);
        atomic_store_explicit(&q->put, put, memory_order_release);
    }
}

static void consumer(pair *q) {
    size_t got = 0;
    while (got < blocks) {
        size_t put = atomic_load_explicit(&q->put, memory_order_acquire);
        if (put == got) {
            sched_yield();
            continue;
        }
        for (; got < put; got++) q->seen += tagged_free(q->ring[got % RING]);
        atomic_store_explicit(&q->got, got, memory_order_release);
    }
}

static void alone(pair *q) {
    rng_t r = rng_seed(300 + q->id);
    for (uint64_t done = 0; done < blocks;) {
        uint64_t n = blocks - done < RING ? blocks - done : RING;
        for (uint64_t i = 0; i < n; i++) q->ring[i] = make(&r, &q->made);
        for (uint64_t i = 0; i < n; i++) q->seen += tagged_free(q->ring[i]);
        done += n;
    }
}

static void *run(void *arg) {
    side *s = arg;
    pthread_barrier_wait(&bench_start);
    if (s->consumer < 0)
        alone(s->q);
    else if (s->consumer)
        consumer(s->q);
    else
        producer(s->q);
    return NULL;
}

int main(int argc, char **argv) {
    blocks = arg_u64(argc, argv, 1, 8000000);
    unsigned threads = arg_threads(argc, argv, 2, 2);
    unsigned pairs = threads == 1 ? 1 : threads / 2;
    pair *qs = aligned_alloc(64, pairs * sizeof *qs);
    if (!qs) die("aligned_alloc returned NULL");
    memset(qs, 0, pairs * sizeof *qs);
    unsigned n = threads == 1 ? 1 : 2 * pairs;
    side *sides = xmalloc(n * sizeof *sides);
    for (unsigned i = 0; i < n; i++) {
        qs[i / 2].id = i / 2;
        sides[i].q = &qs[i / 2];
        sides[i].consumer = threads == 1 ? -1 : (int)(i % 2);
    }
    run_threads(n, run, sides, sizeof *sides);
    uint64_t made = 0, seen = 0;
    for (unsigned i = 0; i < pairs; i++) {
        made += qs[i].made;
        seen += qs[i].seen;
    }
    free(qs);
    free(sides);
    if (made != seen) die("a block's tag changed between malloc and free");
    result("prodcons", blocks, n, seen);
    return 0;
}
