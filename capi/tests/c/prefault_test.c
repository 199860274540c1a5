/*
 * MAPALLOC_PREFAULT through the C ABI (tests/prefault.rs): a fresh large
 * block, and the first small block of a new thread (a fresh segment), are
 * resident before the program writes to them exactly when the option is
 * on. mincore(2) tells which pages are.
 *
 *   prefault_test on    expects every page resident
 *   prefault_test off   expects the untouched pages absent
 *
 * Prints "prefault_test: ok"; exits 1 on a failed check.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "prefault_test: %s:%d: check failed: %s\n",       \
                    __FILE__, __LINE__, #cond);                               \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define PAGE 4096u
static unsigned char vec[(64u << 20) / PAGE + 2];

/* Resident pages among the whole pages of [p, p+len). */
static size_t resident(void *p, size_t len) {
    uintptr_t start = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)(PAGE - 1);
    size_t pages = (end - start) / PAGE, n = 0;
    CHECK(pages <= sizeof vec);
    CHECK(mincore((void *)start, end - start, vec) == 0);
    for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
    return n;
}

static int on;

/* A new thread's first allocation comes from a segment it maps now (the
 * main thread keeps its own): a 256 KiB page-run block in it. */
static void *thread_main(void *arg) {
    (void)arg;
    size_t len = 256u << 10;
    void *p = malloc(len);
    CHECK(p != NULL);
    size_t r = resident(p, len), pages = len / PAGE - 1;
    if (on) CHECK(r >= pages);
    else CHECK(r < pages / 2);
    free(p);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    on = strcmp(argv[1], "on") == 0;
    size_t len = 64u << 20;
    void *p = malloc(len);
    CHECK(p != NULL);
    size_t r = resident(p, len), pages = len / PAGE - 1;
    printf("large block: %zu of %zu pages resident before the first write\n", r, pages);
    if (on) CHECK(r >= pages);
    else CHECK(r < pages / 2); /* the header page may bring a huge page */
    memset(p, 1, len);
    CHECK(resident(p, len) >= pages);
    free(p);

    pthread_t t;
    CHECK(pthread_create(&t, NULL, thread_main, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    puts("prefault_test: ok");
    return 0;
}
