/*
 * larson: a server simulation in C++. Each of THREADS lanes owns a run of
 * slots in one shared array and is served by a chain of short-lived
 * threads: a thread replaces ROUND random slots (a new object of 16-1024
 * bytes from operator new, the old one deleted), mostly in its own lane
 * but 1 time in 5 in any lane, so those deletes free blocks that another
 * thread allocated; then it exits and a fresh thread takes the lane over
 * (the allocator's thread set-up and hand-over are part of the work).
 *
 *   larson [SIZE [THREADS [sized|unsized]]]
 *
 * SIZE = replacements per lane. `sized` frees with the C++14 sized
 * operator delete(void *, size_t), `unsized` with operator delete(void *).
 * Every object carries its size and a tag; the checksum is the sum of the
 * tags read back as objects are deleted, which must equal the sum of the
 * tags written (else the program says so and fails).
 */
#include <atomic>
#include <new>

#include "bench.h"

static const uint64_t ROUND = 5000;       /* replacements per thread */
static const uint64_t REMOTE_PERCENT = 20; /* slots picked in any lane */
static const size_t LANE = 1000;           /* slots per lane */

struct header {
    uint32_t size, tag;
};

static std::atomic<header *> *slots;
static size_t nslots;
static bool sized;
static std::atomic<uint64_t> made{0}, seen{0};

static header *make(rng_t *r, uint64_t *sum) {
    size_t size = (size_t)rng_log(r, 16, 1024);
    header *h = static_cast<header *>(::operator new(size));
    h->size = (uint32_t)size;
    h->tag = (uint32_t)(rng_next(r) >> 32);
    reinterpret_cast<unsigned char *>(h)[size - 1] = (unsigned char)size;
    *sum += h->tag;
    return h;
}

static void destroy(header *h, uint64_t *sum) {
    *sum += h->tag;
    if (sized)
        ::operator delete(h, h->size);
    else
        ::operator delete(h);
}

struct lane {
    unsigned id;
    uint64_t generation, rounds;
};

static void *worker(void *arg) {
    lane *l = static_cast<lane *>(arg);
    rng_t r = rng_seed(((uint64_t)l->id << 32) + l->generation);
    uint64_t mine = 0, theirs = 0;
    size_t base = l->id * LANE;
    for (uint64_t k = 0; k < l->rounds; k++) {
        size_t i = rng_below(&r, 100) < REMOTE_PERCENT ? rng_below(&r, nslots)
                                                       : base + rng_below(&r, LANE);
        header *old = slots[i].exchange(make(&r, &mine), std::memory_order_acq_rel);
        destroy(old, &theirs);
    }
    made += mine;
    seen += theirs;
    return nullptr;
}

/* One lane: a succession of short-lived worker threads. */
static void *lane_main(void *arg) {
    lane *l = static_cast<lane *>(arg);
    uint64_t total = l->rounds;
    for (uint64_t done = 0; done < total; l->generation++) {
        lane w = *l;
        w.rounds = total - done < ROUND ? total - done : ROUND;
        pthread_t t;
        spawn(&t, worker, &w);
        join(t);
        done += w.rounds;
    }
    return nullptr;
}

int main(int argc, char **argv) {
    uint64_t size = arg_u64(argc, argv, 1, 8000000);
    unsigned threads = arg_threads(argc, argv, 2, 2);
    const char *mode = argc > 3 ? argv[3] : "unsized";
    if (strcmp(mode, "sized") != 0 && strcmp(mode, "unsized") != 0)
        die("MODE is sized or unsized");
    sized = strcmp(mode, "sized") == 0;
    nslots = LANE * threads;
    slots = new std::atomic<header *>[nslots];
    rng_t r = rng_seed(99);
    uint64_t mine = 0, theirs = 0;
    for (size_t i = 0; i < nslots; i++) slots[i].store(make(&r, &mine));
    lane *lanes = new lane[threads];
    pthread_t *tids = new pthread_t[threads];
    for (unsigned i = 0; i < threads; i++) {
        lanes[i] = lane{i, 0, size};
        spawn(&tids[i], lane_main, &lanes[i]);
    }
    for (unsigned i = 0; i < threads; i++) join(tids[i]);
    for (size_t i = 0; i < nslots; i++) destroy(slots[i].load(), &theirs);
    made += mine;
    seen += theirs;
    delete[] slots;
    delete[] lanes;
    delete[] tids;
    if (made.load() != seen.load()) die("an object's tag changed between new and delete");
    result(sized ? "larson-sized" : "larson", size, threads, seen.load());
    return 0;
}
