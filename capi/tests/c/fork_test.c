/*
 * fork() from a multi-threaded program: worker threads allocate, free and
 * hand blocks to each other (small, large, and over-aligned) without
 * pause while the main thread (and now and then a worker) forks. Each
 * child frees blocks it inherited, allocates on its own thread and on a
 * new one, and exits 0. A child that hangs (an allocator lock held across
 * the fork) is killed by alarm() and reported.
 *
 *   fork_test [forks]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define SLOTS 512
#define SHARED 64

static atomic_int stop;
static atomic_int failures;
static _Atomic(void *) shared[SHARED]; /* blocks passed between threads */
static void *inherited[SLOTS];          /* live in the parent at each fork */

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = next(s) % 1000;
    if (r < 900) return 1 + next(s) % 512;
    if (r < 990) return 512 + next(s) % 65536;
    return 200000 + next(s) % (3 << 20);
}

static void *alloc_any(uint64_t *s) {
    size_t size = pick_size(s);
    void *p;
    switch (next(s) % 8) {
    case 0: p = calloc(1, size); break;
    case 1: if (posix_memalign(&p, 64 << (next(s) % 8), size)) p = NULL; break;
    default: p = malloc(size); break;
    }
    if (p) memset(p, 0x5a, size < 64 ? size : 64);
    return p;
}

static int child(uint64_t seed);

static void *worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 0x9e3779b97f4a7c15ULL + 1;
    void *slots[SLOTS] = {0};
    long forks = 0;
    while (!atomic_load(&stop)) {
        for (int k = 0; k < 256; k++) {
            unsigned i = next(&s) % SLOTS;
            free(slots[i]);
            slots[i] = alloc_any(&s);
            if (next(&s) % 4 == 0) {
                /* Hand a block to whichever thread takes it next. */
                void *old = atomic_exchange(&shared[next(&s) % SHARED], slots[i]);
                slots[i] = NULL;
                free(old);
            }
            if (next(&s) % 16 == 0) slots[i] = realloc(slots[i], pick_size(&s));
        }
        /* Worker 0 forks too, now and then. */
        if ((uintptr_t)arg == 0 && next(&s) % 64 == 0 && forks < 10) {
            pid_t pid = fork();
            if (pid == 0) _exit(child(s));
            int st = -1;
            if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
                fprintf(stderr, "fork_test: worker's child failed (status %d)\n", st);
                atomic_fetch_add(&failures, 1);
            }
            forks++;
        }
    }
    for (int i = 0; i < SLOTS; i++) free(slots[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    uint64_t s = (uintptr_t)arg | 1;
    void *keep[100];
    for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 100; i++) keep[i] = alloc_any(&s);
        for (int i = 0; i < 100; i++) free(keep[i]);
    }
    return NULL;
}

/* What a child does after fork: returns its exit status. */
static int child(uint64_t seed) {
    alarm(30); /* a deadlocked child dies of SIGALRM */
    uint64_t s = seed | 1;
    /* Free what the parent had live (owned by the forking thread's heap,
     * or by heaps whose threads do not exist in the child). */
    for (int i = 0; i < SLOTS; i += 2) {
        free(inherited[i]);
        inherited[i] = NULL;
    }
    for (int i = 0; i < SHARED; i++) free(atomic_exchange(&shared[i], NULL));
    void *keep[256];
    for (int r = 0; r < 10; r++) {
        for (int i = 0; i < 256; i++) keep[i] = alloc_any(&s);
        for (int i = 0; i < 256; i++) keep[i] = realloc(keep[i], pick_size(&s));
        for (int i = 0; i < 256; i++) free(keep[i]);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)seed)) return 3;
    if (pthread_join(t, NULL)) return 4;
    char *msg = strdup("child ok");
    int ok = msg && strcmp(msg, "child ok") == 0;
    free(msg);
    return ok ? 0 : 5;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 100;
    uint64_t s = 42;
    for (int i = 0; i < SLOTS; i++) inherited[i] = alloc_any(&s);

    pthread_t t[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i)) return 2;

    for (int f = 0; f < forks; f++) {
        /* Keep the parent's own heap busy between forks. */
        for (int k = 0; k < 50; k++) {
            unsigned i = next(&s) % SLOTS;
            free(inherited[i]);
            inherited[i] = alloc_any(&s);
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) exit(child(s + f));
        int st;
        if (waitpid(pid, &st, 0) != pid) {
            perror("waitpid");
            return 2;
        }
        if (WIFSIGNALED(st)) {
            fprintf(stderr, "fork_test: child %d killed by signal %d%s\n", f, WTERMSIG(st),
                    WTERMSIG(st) == SIGALRM ? " (deadlocked)" : "");
            atomic_fetch_add(&failures, 1);
        } else if (WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fork_test: child %d exited with %d\n", f, WEXITSTATUS(st));
            atomic_fetch_add(&failures, 1);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < SLOTS; i++) free(inherited[i]);
    for (int i = 0; i < SHARED; i++) free(atomic_exchange(&shared[i], NULL));
    int bad = atomic_load(&failures);
    printf("fork_test: %d forks, %d failures\n", forks, bad);
    return bad ? 1 : 0;
}
