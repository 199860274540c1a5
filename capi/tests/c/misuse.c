/* Heap misuse, one case per run: `misuse <case>` commits the misuse, then
 * goes on a little (frees, allocations) and returns 0. Under hardened
 * mode (LD_PRELOAD=libmapalloc.so MAPALLOC_HARDENED=1) every case must be
 * stopped before it returns (one `mapalloc: ...` line and SIGABRT, or
 * SIGSEGV on a guard page); in the default mode it must run to the end.
 * `misuse --list` prints the case names. Written for mapalloc's tests. */
#define _GNU_SOURCE
#include <alloca.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Keeps the compiler from seeing through the misuse. */
static void *volatile sink;
static void keep(void *p) { sink = p; }
static char *opaque(char *p) { sink = p; return (char *)sink; }

static char src[(1 << 20) + 64];

/* ---- frees of pointers the allocator never handed out ---- */
static void free_wild_1(void) { free(opaque((char *)1)); }
static void free_wild_page(void) { free(opaque((char *)0x10000)); }
static void free_stack(void) {
    char buf[64];
    keep(buf);
    free(opaque(buf + 16));
}
static void free_alloca(void) {
    char *p = alloca(128);
    keep(p);
    free(opaque(p));
}
static void free_far(void) {
    char *p = malloc(64);
    free(opaque(p + (1L << 30)));
    free(p);
}
static void free_foreign_mmap(void) {
    char *m = mmap(0, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    free(opaque(m + 3 * 4096 + 64));
    munmap(m, 1 << 16);
}
static void free_interior(void) {
    char *p = malloc(64);
    free(opaque(p + 16));
}
static void free_misaligned(void) {
    char *p = malloc(64);
    free(opaque(p + 1));
}
static void free_interior_large(void) {
    char *p = malloc(2 << 20);
    free(opaque(p + 4096));
}
static void realloc_wild(void) { keep(realloc(opaque((char *)0x10000), 100)); }

/* ---- double frees ---- */
static void double_free(size_t n) {
    char *a = malloc(n);
    free(a);
    free(opaque(a));
}
static void double_free_24(void) { double_free(24); }
static void double_free_4k(void) { double_free(4096); }
static void double_free_256k(void) { double_free(256 << 10); }
static void double_free_2m(void) { double_free(2 << 20); }
static void double_free_between(void) {
    char *a = malloc(32), *b = malloc(32);
    free(a);
    free(b);
    free(opaque(a));
}
static void double_free_after_malloc(void) {
    char *a = malloc(32);
    free(a);
    char *b = malloc(32);
    free(opaque(a));
    keep(b);
}
static void realloc_after_free(void) {
    char *a = malloc(32);
    free(a);
    keep(realloc(opaque(a), 40));
}
static void free_after_realloc(void) {
    char *a = malloc(32);
    char *b = realloc(a, 100000);
    free(opaque(a));
    keep(b);
}

/* ---- overflows past the end: n bytes asked for, k written past ---- */
static void overflow(size_t n, size_t k, int by_memcpy) {
    char *p = malloc(n);
    memset(src, 'A', sizeof src);
    if (by_memcpy)
        memcpy(opaque(p), src, n + k);
    else
        for (size_t i = 0; i < k; i++)
            opaque(p)[n + i] = 'A';
    free(p);
    free(malloc(n));
}
#define OVERFLOW(name, n, k, m) static void name(void) { overflow(n, k, m); }
OVERFLOW(overflow_8_1, 8, 1, 0)
OVERFLOW(overflow_8_8, 8, 8, 0)
OVERFLOW(overflow_8_32, 8, 32, 1)
OVERFLOW(overflow_13_1, 13, 1, 0)
OVERFLOW(overflow_100_1, 100, 1, 1)
OVERFLOW(overflow_4k_1, 4096, 1, 0)
OVERFLOW(overflow_4k_8, 4096, 8, 1)
OVERFLOW(overflow_4k_32, 4096, 32, 1)
OVERFLOW(overflow_256k_1, 256 << 10, 1, 0)
OVERFLOW(overflow_256k_32, 256 << 10, 32, 1)
OVERFLOW(overflow_1m_1, 1 << 20, 1, 0)
OVERFLOW(overflow_1m_32, 1 << 20, 32, 1)
OVERFLOW(overflow_1000000_1, 1000000, 1, 0)
static void overflow_at_realloc(void) {
    char *p = malloc(40);
    opaque(p)[40] = 'A';
    p = realloc(p, 4000);
    free(p);
}

/* ---- underflows before the start ---- */
static void underflow(size_t n, size_t k) {
    /* Neighbours on both sides, live and freed. */
    char *before = malloc(n), *p = malloc(n), *after = malloc(n);
    free(before);
    memset(opaque(p) - k, 'A', k);
    free(p);
    free(after);
    free(malloc(n));
}
static void underflow_8_1(void) { underflow(8, 1); }
static void underflow_8_32(void) { underflow(8, 32); }
static void underflow_4k_1(void) { underflow(4096, 1); }
static void underflow_4k_32(void) { underflow(4096, 32); }
static void underflow_live_neighbour(void) {
    char *a[64];
    for (int i = 0; i < 64; i++)
        a[i] = malloc(48);
    for (int i = 0; i < 64; i++)
        opaque(a[i])[-1] = 'A';
    for (int i = 0; i < 64; i++)
        free(a[i]);
}

/* ---- writes after free, at any offset ---- */
static void uaf_write(size_t n, size_t off, int more) {
    char *p = malloc(n);
    free(p);
    opaque(p)[off] = 'A';
    for (int i = 0; i < more; i++)
        keep(malloc(n));
}
static void uaf_write_0(void) { uaf_write(64, 0, 1); }
static void uaf_write_8(void) { uaf_write(64, 8, 1); }
static void uaf_write_63(void) { uaf_write(64, 63, 1); }
static void uaf_write_4k_2000(void) { uaf_write(4096, 2000, 1); }
static void uaf_write_loop(void) { uaf_write(200, 100, 5000); }
static void uaf_write_no_malloc(void) { uaf_write(32, 20, 0); }
static void uaf_memset(void) {
    char *p = malloc(500);
    free(p);
    memset(opaque(p), 0, 8);
    memset(opaque(p) + 100, 'x', 300);
    free(malloc(500));
}
static void same_block_again(void) {
    /* Not a misuse by itself: the returned blocks must differ (a dangling
     * pointer must not alias the next block). Returns 3 if they do not. */
    char *p = malloc(48);
    free(p);
    char *q = malloc(48);
    if (p == q)
        exit(3);
    free(q);
}

/* ---- reads after free of large blocks ---- */
static void uaf_read_large(size_t n) {
    char *p = malloc(n);
    memset(p, 'x', n);
    free(p);
    keep((void *)(uintptr_t)opaque(p)[n / 2]);
}
static void uaf_read_256k(void) { uaf_read_large(256 << 10); }
static void uaf_read_1m(void) { uaf_read_large(1 << 20); }
static void uaf_read_8m(void) { uaf_read_large(8 << 20); }
/* The same with a block of the same size allocated after the free: the
   freed pages must not come back as the new block. */
static void uaf_read_after_malloc(void) {
    char *p = malloc(1 << 20);
    memset(p, 'x', 1 << 20);
    free(p);
    char *q = malloc(1 << 20);
    memset(q, 'y', 1 << 20);
    keep(q);
    keep((void *)(uintptr_t)opaque(p)[1 << 19]);
}

/* ---- malloc(0) ---- */
static void malloc0_write(void) {
    char *p = malloc(0);
    opaque(p)[0] = 'A';
    free(p);
}
static void malloc0_read(void) {
    char *p = malloc(0);
    keep((void *)(uintptr_t)opaque(p)[8]);
    free(p);
}
static void malloc0_double_free(void) {
    char *p = malloc(0);
    free(p);
    free(opaque(p));
}

/* ---- sized frees (C23) ---- */
static void free_sized_wrong(void) {
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    char *p = malloc(100);
    if (fs)
        fs(opaque(p), 50);
    else
        free(p); /* glibc before 2.43 has no free_sized: no misuse */
}
static void free_aligned_sized_wrong(void) {
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    char *p = aligned_alloc(64, 128);
    if (fas)
        fas(opaque(p), 64, 100);
    else
        free(p);
}

/* ---- valid uses that must pass in hardened mode too ---- */
static void valid(void) {
    char *p = malloc(0);
    free(p);
    p = calloc(10, 10);
    p = realloc(p, 10000);
    p = realloc(p, 3 << 20);
    p = realloc(p, 40);
    free(p);
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    p = malloc(77);
    if (fs)
        fs(p, 77);
    else
        free(p);
    void *q;
    if (posix_memalign(&q, 4096, 5000) == 0)
        free(q);
    free(aligned_alloc(1 << 16, 100));
    free(valloc(10));
    p = malloc(1 << 20);
    p[(1 << 20) - 1] = 1;
    free(p);
    for (int i = 1; i < 3000; i += 7)
        free(malloc(i));
}

struct kase {
    const char *name;
    void (*run)(void);
};
#define K(f) {#f, f}
static const struct kase cases[] = {
    K(free_wild_1), K(free_wild_page), K(free_stack), K(free_alloca), K(free_far),
    K(free_foreign_mmap), K(free_interior), K(free_misaligned), K(free_interior_large),
    K(realloc_wild),
    K(double_free_24), K(double_free_4k), K(double_free_256k), K(double_free_2m),
    K(double_free_between), K(double_free_after_malloc), K(realloc_after_free),
    K(free_after_realloc),
    K(overflow_8_1), K(overflow_8_8), K(overflow_8_32), K(overflow_13_1), K(overflow_100_1),
    K(overflow_4k_1), K(overflow_4k_8), K(overflow_4k_32), K(overflow_256k_1),
    K(overflow_256k_32), K(overflow_1m_1), K(overflow_1m_32), K(overflow_1000000_1),
    K(overflow_at_realloc),
    K(underflow_8_1), K(underflow_8_32), K(underflow_4k_1), K(underflow_4k_32),
    K(underflow_live_neighbour),
    K(uaf_write_0), K(uaf_write_8), K(uaf_write_63), K(uaf_write_4k_2000), K(uaf_write_loop),
    K(uaf_write_no_malloc), K(uaf_memset), K(same_block_again),
    K(uaf_read_256k), K(uaf_read_1m), K(uaf_read_8m), K(uaf_read_after_malloc),
    K(malloc0_write), K(malloc0_read), K(malloc0_double_free),
    K(free_sized_wrong), K(free_aligned_sized_wrong),
    K(valid),
};

int main(int argc, char **argv) {
    size_t n = sizeof cases / sizeof cases[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++)
            puts(cases[i].name);
        return 0;
    }
    for (size_t i = 0; argc == 2 && i < n; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            cases[i].run();
            puts("reached the end");
            return 0;
        }
    }
    fprintf(stderr, "usage: misuse <case> | --list\n");
    return 2;
}
