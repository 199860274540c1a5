/*
 * handover: THREADS threads allocate, free and hand blocks to each other
 * at random, with a working set that grows and shrinks. Each thread owns
 * a set of blocks (8-512 bytes); every step it allocates one (more often
 * in a growing phase), frees a random one of its own, or hands a random
 * one to the next thread's mailbox (a lock-free stack threaded through
 * the blocks). A thread adopts what its mailbox holds every 64 steps, so
 * blocks are freed by threads that did not allocate them, some after
 * several hops. Phases of PHASE steps alternate growing (60% allocations)
 * and shrinking (25%); the threads wait for each other at each phase
 * change.
 *
 *   handover [SIZE [THREADS]]     (SIZE = steps per thread)
 *
 * Every block carries a tag; the checksum is the sum of the tags read as
 * blocks are freed, which must equal the sum written.
 */
#include <stdatomic.h>

#include "bench.h"

#define PHASE 20000

typedef struct block {
    tagged t;
    struct block *next; /* while in a mailbox */
} block;

typedef struct {
    _Alignas(64) _Atomic(block *) mailbox;
    _Alignas(64) unsigned id;
    block **own;
    size_t n, cap;
    uint64_t made, seen;
} worker;

static worker *workers;
static unsigned nthreads;
static uint64_t steps;
static atomic_uint finished;

static void own(worker *w, block *b) {
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->own = realloc(w->own, w->cap * sizeof *w->own);
        if (!w->own) die("realloc returned NULL");
    }
    w->own[w->n++] = b;
}

/* A random one of w's blocks; `pick` is drawn whether or not there is one,
 * so that the random stream, and so the work, does not depend on timing. */
static block *take_random(worker *w, uint64_t pick) {
    size_t i = (size_t)(((unsigned __int128)pick * w->n) >> 64);
    block *b = w->own[i];
    w->own[i] = w->own[--w->n];
    return b;
}

static void release(worker *w, block *b) { w->seen += tagged_free(&b->t); }

static void adopt(worker *w) {
    block *b = atomic_exchange_explicit(&w->mailbox, NULL, memory_order_acquire);
    while (b) {
        block *next = b->next;
        own(w, b);
        b = next;
    }
}

static void send(worker *to, block *b) {
    block *head = atomic_load_explicit(&to->mailbox, memory_order_relaxed);
    do b->next = head;
    while (!atomic_compare_exchange_weak_explicit(&to->mailbox, &head, b, memory_order_release,
                                                  memory_order_relaxed));
}

static void *run(void *arg) {
    worker *w = arg;
    rng_t r = rng_seed(1000 + w->id);
    worker *next = &workers[(w->id + 1) % nthreads];
    for (uint64_t s = 0; s < steps; s++) {
        /* Threads meet at every phase change, so a thread that runs ahead
         * cannot bury a slower one in hand-overs. */
        if (s % PHASE == 0) pthread_barrier_wait(&bench_start);
        uint64_t grow = (s / PHASE) % 2 == 0 ? 60 : 25;
        uint64_t op = rng_below(&r, 100), pick = rng_next(&r);
        if (op < grow) {
            /* one byte past `next`, which the mailbox overwrites, for the tag */
            size_t size = (size_t)rng_log(&r, sizeof(block) + 1, 512);
            uint64_t tag = rng_next(&r) >> 8;
            w->made += tag;
            own(w, (block *)tagged_new(size, tag));
        } else if (op < grow + (100 - grow) * 3 / 4) {
            if (w->n) release(w, take_random(w, pick));
        } else if (w->n) {
            send(next, take_random(w, pick));
        }
        if (s % 64 == 0) adopt(w);
    }
    /* Free what still arrives until every thread has stopped sending. */
    while (w->n) release(w, w->own[--w->n]);
    atomic_fetch_add(&finished, 1);
    for (int last = 0; !last;) {
        last = atomic_load(&finished) == nthreads;
        adopt(w);
        while (w->n) release(w, w->own[--w->n]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    steps = arg_u64(argc, argv, 1, 12000000);
    nthreads = arg_threads(argc, argv, 2, 2);
    workers = aligned_alloc(64, nthreads * sizeof *workers);
    if (!workers) die("aligned_alloc returned NULL");
    memset(workers, 0, nthreads * sizeof *workers);
    for (unsigned i = 0; i < nthreads; i++) workers[i].id = i;
    run_threads(nthreads, run, workers, sizeof *workers);
    uint64_t made = 0, seen = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        made += workers[i].made;
        seen += workers[i].seen;
        free(workers[i].own);
    }
    free(workers);
    if (made != seen) die("a block's tag changed between malloc and free");
    result("handover", steps, nthreads, seen);
    return 0;
}
