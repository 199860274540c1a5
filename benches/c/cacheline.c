/*
 * cacheline: threads that each allocate a small object, write it many
 * times and free it, over and over. If the allocator puts objects of
 * different threads in one 64-byte cache line, the line bounces between
 * the cores on every write and the run is many times slower.
 *
 *   cacheline [SIZE [THREADS [active|freed]]]     (SIZE = objects per thread)
 *
 * - active: the threads start with nothing; objects allocated at the same
 *   time by different threads must not share a line.
 * - freed: the main thread first allocates one 8-byte object per thread,
 *   back to back (so they share lines), and hands one to each thread,
 *   which frees it before its loop: an allocator that hands a thread the
 *   block it just freed (into the main thread's page) makes the threads
 *   write into one line.
 *
 * The checksum sums the objects' final contents.
 */
#include "bench.h"

#define OBJECT 8
#define WRITES 500

static uint64_t objects;
static int freed;

typedef struct {
    unsigned id;
    char *given;
    uint64_t sum;
} worker;

static void *run(void *arg) {
    worker *w = arg;
    if (freed) free(w->given);
    pthread_barrier_wait(&bench_start);
    for (uint64_t i = 0; i < objects; i++) {
        volatile char *p = xmalloc(OBJECT);
        for (int k = 0; k < OBJECT; k++) p[k] = 0;
        for (int k = 0; k < WRITES; k++) p[k % OBJECT]++;
        for (int k = 0; k < OBJECT; k++) w->sum += (unsigned char)p[k] * (uint64_t)(k + 1);
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    objects = arg_u64(argc, argv, 1, 2000000);
    unsigned threads = arg_threads(argc, argv, 2, 2);
    const char *mode = argc > 3 ? argv[3] : "active";
    if (strcmp(mode, "active") != 0 && strcmp(mode, "freed") != 0) die("MODE is active or freed");
    freed = strcmp(mode, "freed") == 0;
    worker *w = xcalloc(threads, sizeof *w);
    for (unsigned i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].given = freed ? xmalloc(OBJECT) : NULL;
    }
    run_threads(threads, run, w, sizeof *w);
    uint64_t sum = 0;
    for (unsigned i = 0; i < threads; i++) sum += w[i].sum;
    free(w);
    result(freed ? "false-share" : "line-thrash", objects, threads, sum);
    return 0;
}
