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
    uint64_t tag;
    uint32_t size;
} head;

typedef struct {
    _Alignas(64) atomic_size_t put; /* written by the producer */
    _Alignas(64) atomic_size_t got; /* written by the consumer */
    _Alignas(64) head *ring[RING];
    unsigned id;
    uint64_t made, seen;
} pair;

static uint64_t blocks;
static pthread_barrier_t start;

static head *make(rng_t *r, uint64_t *made) {
    uint64_t k = rng_below(r, 100);
    uint32_t size = (uint32_t)(k < 90   ? rng_range(r, 16, 256)
                               : k < 99 ? rng_range(r, 257, 8192)
                                        : rng_range(r, 8193, 262144));
    head *h = xmalloc(size);
    memset(h, (int)size, size < 64 ? size : 64);
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

static void *producer(void *arg) {
    pair *q = arg;
    rng_t r = rng_seed(300 + q->id);
    pthread_barrier_wait(&start);
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
    return NULL;
}

static void *consumer(void *arg) {
    pair *q = arg;
    pthread_barrier_wait(&start);
    size_t got = 0;
    while (got < blocks) {
        size_t put = atomic_load_explicit(&q->put, memory_order_acquire);
        if (put == got) {
            sched_yield();
            continue;
        }
        for (; got < put; got++) release(q->ring[got % RING], &q->seen);
        atomic_store_explicit(&q->got, got, memory_order_release);
    }
    return NULL;
}

static void *alone(void *arg) {
    pair *q = arg;
    rng_t r = rng_seed(300 + q->id);
    for (uint64_t done = 0; done < blocks;) {
        uint64_t n = blocks - done < RING ? blocks - done : RING;
        for (uint64_t i = 0; i < n; i++) q->ring[i] = make(&r, &q->made);
        for (uint64_t i = 0; i < n; i++) release(q->ring[i], &q->seen);
        done += n;
    }
    return NULL;
}

int main(int argc, char **argv) {
    blocks = arg_u64(argc, argv, 1, 3000000);
    unsigned threads = (unsigned)arg_u64(argc, argv, 2, 2);
    if (threads < 1) die("THREADS must be at least 1");
    unsigned pairs = threads == 1 ? 1 : threads / 2;
    pair *qs = aligned_alloc(64, pairs * sizeof *qs);
    if (!qs) die("aligned_alloc returned NULL");
    memset(qs, 0, pairs * sizeof *qs);
    pthread_t *t = xmalloc(2 * pairs * sizeof *t);
    pthread_barrier_init(&start, NULL, threads == 1 ? 1 : 2 * pairs);
    for (unsigned i = 0; i < pairs; i++) {
        qs[i].id = i;
        if (threads == 1) {
            spawn(&t[0], alone, &qs[0]);
        } else {
            spawn(&t[2 * i], producer, &qs[i]);
            spawn(&t[2 * i + 1], consumer, &qs[i]);
        }
    }
    for (unsigned i = 0; i < (threads == 1 ? 1 : 2 * pairs); i++) join(t[i]);
    uint64_t made = 0, seen = 0;
    for (unsigned i = 0; i < pairs; i++) {
        made += qs[i].made;
        seen += qs[i].seen;
    }
    free(qs);
    free(t);
    if (made != seen) die("a block's tag changed between malloc and free");
    result("prodcons", blocks, threads == 1 ? 1 : 2 * pairs, seen);
    return 0;
}
