/*
 * Exercises every function libmapalloc.so exports, with alignment and
 * error cases.
 *
 *   abi_test mapalloc   run under LD_PRELOAD=libmapalloc.so: checks that
 *                       malloc really is mapalloc's, then everything below
 *                       plus mapalloc's own semantics (foreign pointers,
 *                       aligned_alloc's EINVAL, errno kept by
 *                       posix_memalign, mallopt, malloc_trim, free_sized)
 *   abi_test glibc      the same program on glibc, for the checks whose
 *                       answer glibc shares (keeps the test itself honest)
 *   abi_test dlopen SO  loads SO with dlopen (not preloaded): the program
 *                       keeps glibc's malloc, and SO's functions meet
 *                       glibc's blocks (foreign pointers)
 *
 * Prints one line per group and "abi_test: ok" at the end; exits 1 on the
 * first failed check. Build with -fno-builtin, so that the compiler does
 * not reason about malloc's results itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc's own entry points: blocks that are not mapalloc's. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

static long checks;
static int mapalloc_mode;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            fprintf(stderr, "abi_test: %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                        \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static int aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}

static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void print_usable(void) {
    size_t sizes[] = {1, 100, 1000, 200000};
    printf("malloc_usable_size:");
    for (unsigned i = 0; i < 4; i++) {
        void *p = malloc(sizes[i]);
        printf(" %zu->%zu", sizes[i], malloc_usable_size(p));
        free(p);
    }
    printf("\n");
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_malloc_free(void) {
    /* malloc(0): unique, freeable, 16-aligned. */
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    CHECK(aligned(a, 16) && aligned(b, 16));
    free(a);
    free(b);
    free(NULL);

    size_t sizes[] = {1, 8, 15, 16, 17, 24, 100, 128, 129, 1000, 4096, 10000,
                      65536, 131072, 131073, 500000, 1 << 20, (1 << 20) + 1,
                      5 << 20, 40 << 20};
    enum { N = sizeof sizes / sizeof *sizes };
    void *ps[N];
    for (unsigned i = 0; i < N; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL);
        CHECK(aligned(p, 16));
        CHECK(malloc_usable_size(p) >= sizes[i]);
        fill(p, sizes[i], i);
        ps[i] = p;
    }
    for (unsigned i = 0; i < N; i++) {
        CHECK(same(ps[i], sizes[i], i));
        free(ps[i]);
    }
    printf("malloc/free: ok\n");
}

static void test_errors(void) {
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(PTRDIFF_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(memalign(64, SIZE_MAX - 100) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 8) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(valloc(SIZE_MAX - 100) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 100) == NULL && errno == ENOMEM);

    /* realloc failure leaves the block alone. */
    unsigned char *p = malloc(100);
    fill(p, 100, 7);
    errno = 0;
    CHECK(realloc(p, SIZE_MAX) == NULL && errno == ENOMEM);
    CHECK(same(p, 100, 7));
    errno = 0;
    CHECK(reallocarray(p, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    CHECK(same(p, 100, 7));
    free(p);

    /* posix_memalign: returns the code, leaves *memptr alone. */
    void *q = (void *)&q;
    errno = 4321;
    CHECK(posix_memalign(&q, 0, 8) == EINVAL);
    CHECK(posix_memalign(&q, 4, 8) == EINVAL);
    CHECK(posix_memalign(&q, 24, 8) == EINVAL);
    CHECK(posix_memalign(&q, 64, SIZE_MAX - 100) == ENOMEM);
    /* POSIX lets errno alone; glibc sets it to ENOMEM; we leave it. */
    CHECK(!mapalloc_mode || errno == 4321);
    CHECK(q == (void *)&q);
    printf("errors: ok\n");
}

static void test_calloc(void) {
    for (int round = 0; round < 3; round++) {
        size_t sizes[] = {1, 40, 1000, 70000, 300000, 3 << 20};
        for (unsigned i = 0; i < 6; i++) {
            /* Dirty a block first so calloc has to clear reused memory. */
            unsigned char *d = malloc(sizes[i]);
            memset(d, 0xee, sizes[i]);
            free(d);
            unsigned char *p = calloc(sizes[i], 1);
            CHECK(p != NULL && aligned(p, 16));
            CHECK(all_zero(p, sizes[i]));
            free(p);
            p = calloc(4, sizes[i] / 4 + 1);
            CHECK(p != NULL && all_zero(p, 4 * (sizes[i] / 4 + 1)));
            free(p);
        }
    }
    void *z = calloc(0, 0);
    CHECK(z != NULL);
    free(z);
    printf("calloc: ok\n");
}

static void test_realloc(void) {
    unsigned char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 1);
    size_t steps[] = {20, 100, 1000, 100000, 2 << 20, 9 << 20, 50, 3000, 5};
    size_t have = 10;
    for (unsigned i = 0; i < sizeof steps / sizeof *steps; i++) {
        p = realloc(p, steps[i]);
        CHECK(p != NULL && aligned(p, 16));
        size_t keep = have < steps[i] ? have : steps[i];
        CHECK(same(p, keep, 1));
        fill(p, steps[i], 1);
        have = steps[i];
    }
    /* realloc(p, 0): glibc frees p and returns NULL. */
    CHECK(realloc(p, 0) == NULL);
    /* realloc(NULL, 0) is malloc(0). */
    p = realloc(NULL, 0);
    CHECK(p != NULL);
    free(p);

    p = reallocarray(NULL, 10, 10);
    CHECK(p != NULL);
    fill(p, 100, 3);
    p = reallocarray(p, 1000, 10);
    CHECK(p != NULL && same(p, 100, 3));
    free(p);

    /* Over-aligned blocks may be reallocated too. */
    void *a;
    CHECK(posix_memalign(&a, 4096, 100) == 0);
    fill(a, 100, 9);
    a = realloc(a, 50000);
    CHECK(a != NULL && same(a, 100, 9));
    free(a);
    CHECK(posix_memalign(&a, (size_t)8 << 20, 3 << 20) == 0);
    fill(a, 3 << 20, 4);
    a = realloc(a, 7 << 20);
    CHECK(a != NULL && same(a, 3 << 20, 4));
    a = realloc(a, 1000);
    CHECK(a != NULL && same(a, 1000, 4));
    free(a);
    printf("realloc: ok\n");
}

static void test_alignment(void) {
    for (size_t align = 1; align <= ((size_t)32 << 20); align <<= 1) {
        size_t sizes[] = {0, 1, align, 3 * align + 5};
        for (unsigned i = 0; i < 4; i++) {
            size_t size = sizes[i];
            size_t want = align < 16 ? 16 : align;
            unsigned char *p = aligned_alloc(align, size);
            CHECK(p != NULL && aligned(p, want));
            CHECK(malloc_usable_size(p) >= size);
            memset(p, 1, size);
            free(p);

            p = memalign(align, size);
            CHECK(p != NULL && aligned(p, want));
            memset(p, 2, size);
            free(p);

            if (align >= sizeof(void *)) {
                void *q = NULL;
                CHECK(posix_memalign(&q, align, size) == 0);
                CHECK(q != NULL && aligned(q, want));
                memset(q, 3, size);
                free(q);
            }
        }
    }
    /* Many live over-aligned blocks at once, of every small size. */
    void *live[64];
    for (size_t align = 32; align <= 65536; align <<= 1) {
        for (unsigned i = 0; i < 64; i++) {
            live[i] = memalign(align, i * 7);
            CHECK(live[i] != NULL && aligned(live[i], align));
        }
        for (unsigned i = 0; i < 64; i++) free(live[i]);
    }
    /* memalign rounds a non-power-of-two alignment up. */
    void *m = memalign(24, 100);
    CHECK(m != NULL && aligned(m, 32));
    free(m);
    m = memalign(3000, 10);
    CHECK(m != NULL && aligned(m, 4096));
    free(m);

    long page = sysconf(_SC_PAGESIZE);
    size_t vs[] = {0, 1, 4095, 4096, 4097, 1 << 20};
    for (unsigned i = 0; i < 6; i++) {
        unsigned char *v = valloc(vs[i]);
        CHECK(v != NULL && aligned(v, page));
        memset(v, 4, vs[i]);
        free(v);
        v = pvalloc(vs[i]);
        CHECK(v != NULL && aligned(v, page));
        size_t whole = (vs[i] + page - 1) / page * page;
        CHECK(malloc_usable_size(v) >= whole);
        memset(v, 5, whole);
        free(v);
    }
    printf("alignment: ok\n");
}

/* Blocks allocated on one thread and freed on another. */
#define XN 2000
static void *xblocks[XN];
static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < XN; i++) {
        xblocks[i] = malloc(16 + (i * 37) % 3000);
        fill(xblocks[i], 16, i);
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, producer, NULL) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    for (int i = 0; i < XN; i++) {
        CHECK(same(xblocks[i], 16, i));
        free(xblocks[i]);
    }
    printf("threads: ok\n");
}

/* mapalloc-only: semantics where we differ from glibc 2.36 or that glibc
 * cannot have (foreign pointers). */
static void test_mapalloc_only(void) {
    /* aligned_alloc rejects a non-power-of-two alignment (glibc 2.38). */
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 48) == NULL && errno == EINVAL);
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    free(malloc(50 << 20)); /* a large block for the cache */
    CHECK(malloc_trim(0) == 1); /* unmaps it */
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1);

    /* free_sized / free_aligned_sized (C23), if the library exports them. */
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    CHECK(fs != NULL && fas != NULL);
    fs(malloc(10), 10);
    fs(NULL, 0);
    fas(aligned_alloc(256, 256), 256, 256);

    /* Foreign pointers: blocks from glibc's malloc. */
    void *libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    CHECK(libc != NULL);
    size_t (*gus)(void *) = (size_t (*)(void *))dlsym(libc, "malloc_usable_size");
    CHECK(gus != NULL && gus != malloc_usable_size);
    size_t fsizes[] = {100, 5000, 1 << 20};
    for (unsigned i = 0; i < 3; i++) {
        unsigned char *g = __libc_malloc(fsizes[i]);
        CHECK(g != NULL);
        fill(g, fsizes[i], 5);
        CHECK(malloc_usable_size(g) == gus(g));
        free(g); /* ignored: g stays glibc's and intact */
        CHECK(same(g, fsizes[i], 5));
        unsigned char *n = realloc(g, fsizes[i] * 2);
        CHECK(n != NULL && n != g && same(n, fsizes[i], 5));
        CHECK(malloc_usable_size(n) >= fsizes[i] * 2);
        free(n);
        n = realloc(g, 10);
        CHECK(n != NULL && same(n, 10, 5));
        free(n);
        CHECK(realloc(g, 0) == NULL); /* "frees" (ignores) g */
        CHECK(same(g, fsizes[i], 5));
        __libc_free(g);
    }
    /* A pointer into static data is not ours either. */
    static char stat[64];
    free(stat + 16);

    /* malloc_stats prints mapalloc's report on stderr. */
    malloc_stats();
    printf("mapalloc-only: ok\n");
}

/* Checks where malloc comes from. */
static void check_provider(int want_mapalloc) {
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    CHECK(m != NULL && dladdr(m, &info) != 0 && info.dli_fname != NULL);
    int is_mapalloc = strstr(info.dli_fname, "libmapalloc") != NULL;
    printf("malloc comes from %s\n", info.dli_fname);
    CHECK(is_mapalloc == want_mapalloc);
}

/* dlopen mode: SO's functions alongside glibc's malloc. */
static int dlopen_mode(const char *so) {
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "abi_test: dlopen %s: %s\n", so, dlerror());
        return 1;
    }
    void *(*m)(size_t) = (void *(*)(size_t))dlsym(h, "malloc");
    void (*f)(void *) = (void (*)(void *))dlsym(h, "free");
    void *(*r)(void *, size_t) = (void *(*)(void *, size_t))dlsym(h, "realloc");
    size_t (*u)(void *) = (size_t (*)(void *))dlsym(h, "malloc_usable_size");
    CHECK(m && f && r && u && m != (void *(*)(size_t))malloc);
    unsigned char *ours = m(1000);
    CHECK(ours != NULL);
    fill(ours, 1000, 2);
    CHECK(u(ours) >= 1000);
    for (int i = 0; i < 100; i++) {
        /* glibc's blocks (this program's malloc) handed to the library. */
        unsigned char *g = malloc(200 + i * 100);
        fill(g, 200 + i * 100, 8);
        CHECK(u(g) == malloc_usable_size(g));
        f(g); /* ignored */
        CHECK(same(g, 200 + i * 100, 8));
        unsigned char *n = r(g, 100000);
        CHECK(n != NULL && same(n, 200 + i * 100, 8));
        f(n);
        free(g);
    }
    CHECK(same(ours, 1000, 2));
    f(ours);
    printf("dlopen: ok\n");
    printf("abi_test: ok (%ld checks)\n", checks);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "dlopen") == 0) return dlopen_mode(argv[2]);
    if (argc != 2 || (strcmp(argv[1], "mapalloc") && strcmp(argv[1], "glibc"))) {
        fprintf(stderr, "usage: abi_test mapalloc|glibc|dlopen SO\n");
        return 2;
    }
    mapalloc_mode = strcmp(argv[1], "mapalloc") == 0;
    check_provider(mapalloc_mode);
    print_usable();
    test_malloc_free();
    test_errors();
    test_calloc();
    test_realloc();
    test_alignment();
    test_threads();
    if (mapalloc_mode) test_mapalloc_only();
    printf("abi_test: ok (%ld checks)\n", checks);
    return 0;
}
