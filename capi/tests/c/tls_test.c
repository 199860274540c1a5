/*
 * Thread-local storage after dlopen, under LD_PRELOAD. mapalloc keeps its
 * heap pointer in a thread-local of libmapalloc.so, reached through
 * __tls_get_addr. Loading many libraries with TLS of their own makes
 * glibc grow every thread's DTV, lazily, from inside __tls_get_addr and
 * with malloc, which is mapalloc's: a thread that set up its heap before
 * the loads must still allocate (no recursion, no crash) afterwards.
 *
 *   tls_test DIR N    loads DIR/libtls1.so .. DIR/libtlsN.so, each with a
 *                     4 KiB __thread array and an accessor get<i>()
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_barrier_t loaded, started;
static char *(*volatile last_get)(void);

static void *thread(void *arg) {
    (void)arg;
    free(malloc(10)); /* heap set up with the DTV of before the loads */
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&loaded);
    void *keep[1000];
    for (int i = 0; i < 1000; i++) keep[i] = malloc(16 + i * 5);
    for (int i = 0; i < 1000; i++) free(keep[i]);
    char *mine = last_get(); /* the newest library's TLS, on this thread */
    strcpy(mine, "thread tls ok");
    puts(mine);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tls_test DIR N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    pthread_barrier_init(&started, NULL, 2);
    pthread_barrier_init(&loaded, NULL, 2);
    pthread_t t;
    if (pthread_create(&t, NULL, thread, NULL)) return 2;
    pthread_barrier_wait(&started);
    char buf[4096];
    for (int i = 1; i <= n; i++) {
        snprintf(buf, sizeof buf, "%s/libtls%d.so", argv[1], i);
        void *h = dlopen(buf, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "tls_test: %s\n", dlerror());
            return 1;
        }
        snprintf(buf, sizeof buf, "get%d", i);
        last_get = (char *(*)(void))dlsym(h, buf);
        if (!last_get) return 1;
        free(strdup(buf));
    }
    pthread_barrier_wait(&loaded);
    pthread_join(t, NULL);
    /* A thread born after the loads, too. */
    if (pthread_create(&t, NULL, thread, NULL)) return 2;
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&loaded);
    pthread_join(t, NULL);
    puts("tls_test: ok");
    return 0;
}
