/*
 * Cross-thread producer/consumer: producers malloc blocks (mostly small,
 * some medium, a few large), write them and pass them through a bounded
 * single-producer single-consumer ring to their consumer, which reads
 * and frees them, so every free is a remote free.
 *
 *   xthread THREADS [SECONDS]
 *
 * THREADS >= 2 runs THREADS/2 producer/consumer pairs. THREADS = 1 runs
 * one thread that fills its ring and then empties it (the same work with
 * no cross-thread free, as a baseline). Prints
 * "xthread threads=T ops_per_sec=N" (a block made and freed is one op).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 1024 /* a power of two */

struct pair {
    _Alignas(64) atomic_size_t head; /* written by the producer */
    _Alignas(64) atomic_size_t tail; /* written by the consumer */
    _Alignas(64) unsigned char *ring[RING];
    uint64_t rng;
    unsigned long consumed;
    unsigned long sum; /* keeps the reads of the blocks */
};

static atomic_int stop;           /* producers stop */
static atomic_int producers_done; /* then consumers empty their rings */

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static unsigned char *make(uint64_t *s) {
    uint64_t r = next(s) % 1000;
    size_t size = r < 900 ? 16 + next(s) % 240 : r < 995 ? 256 + next(s) % 8000 : 8192 + next(s) % 250000;
    unsigned char *p = malloc(size);
    if (!p) {
        fprintf(stderr, "xthread: out of memory\n");
        exit(1);
    }
    memset(p, (int)size, size < 64 ? size : 64);
    p[size - 1] = 1;
    return p;
}

static void *producer(void *arg) {
    struct pair *q = arg;
    size_t head = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
        if (head - tail == RING) {
            sched_yield();
            continue;
        }
        for (size_t n = RING - (head - tail); n > 0; n--) q->ring[head++ % RING] = make(&q->rng);
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
    return NULL;
}

static unsigned long drain(struct pair *q, size_t *tailp) {
    size_t tail = *tailp;
    size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    unsigned long n = head - tail;
    for (; tail != head; tail++) {
        unsigned char *p = q->ring[tail % RING];
        q->sum += p[0]; /* read it */
        free(p);
    }
    atomic_store_explicit(&q->tail, tail, memory_order_release);
    *tailp = tail;
    return n;
}

static void *consumer(void *arg) {
    struct pair *q = arg;
    size_t tail = 0;
    for (;;) {
        int done = atomic_load(&producers_done);
        unsigned long n = drain(q, &tail);
        q->consumed += n;
        if (n == 0) {
            if (done) break; /* nothing can come after this drain */
            sched_yield();
        }
    }
    return NULL;
}

static void *alone(void *arg) {
    struct pair *q = arg;
    size_t tail = 0, head = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        while (head - tail < RING) q->ring[head++ % RING] = make(&q->rng);
        atomic_store_explicit(&q->head, head, memory_order_relaxed);
        q->consumed += drain(q, &tail);
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
        fprintf(stderr, "usage: xthread THREADS [SECONDS]\n");
        return 2;
    }
    unsigned threads = atoi(argv[1]);
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    if (threads < 1) return 2;
    unsigned pairs = threads == 1 ? 1 : threads / 2;
    struct pair *qs = aligned_alloc(64, pairs * sizeof *qs);
    memset(qs, 0, pairs * sizeof *qs);
    pthread_t *tids = calloc(2 * pairs, sizeof *tids);
    double start = now();
    for (unsigned i = 0; i < pairs; i++) {
        qs[i].rng = 0x9e3779b97f4a7c15ULL * (i + 1);
        if (threads == 1) {
            pthread_create(&tids[0], NULL, alone, &qs[0]);
        } else {
            pthread_create(&tids[2 * i], NULL, producer, &qs[i]);
            pthread_create(&tids[2 * i + 1], NULL, consumer, &qs[i]);
        }
    }
    struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    unsigned long total = 0;
    if (threads == 1) {
        pthread_join(tids[0], NULL);
    } else {
        for (unsigned i = 0; i < pairs; i++) pthread_join(tids[2 * i], NULL);
        atomic_store(&producers_done, 1);
        for (unsigned i = 0; i < pairs; i++) pthread_join(tids[2 * i + 1], NULL);
    }
    double elapsed = now() - start;
    unsigned long sum = 0;
    for (unsigned i = 0; i < pairs; i++) {
        total += qs[i].consumed;
        sum += qs[i].sum;
    }
    free(qs);
    free(tids);
    printf("xthread threads=%u ops_per_sec=%.0f (check %lu)\n", threads, total / elapsed,
           sum % 1000);
    return 0;
}
