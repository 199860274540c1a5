/*
 * mallinfo, mallinfo2, malloc_info and malloc_usable_size after a known
 * workload, run under LD_PRELOAD=libmapalloc.so (tests/info.rs).
 *
 * The workload: LARGE blocks of LARGE_SIZE bytes and SMALL blocks of
 * 1..1000 bytes, all held. The program checks what C alone can check
 * (growth of hblks and hblkhd, usable sizes within the figures, mallinfo
 * equal to mallinfo2 where it fits an int, malloc_info's EINVAL) and
 * prints, for tests/info.rs to compare with mapalloc's own report:
 *
 *   mallinfo2 held arena=.. ordblks=.. ... keepcost=..   (then, at once,
 *                                  malloc_stats() writes the report on
 *                                  stderr, with no allocation between)
 *   mallinfo2 xml arena=.. ...     (read just before malloc_info)
 *   <malloc version="1"> ... </malloc>
 *   mallinfo2 freed arena=.. ...   (after freeing the large blocks, then
 *                                  a second report on stderr)
 *   info_test: ok
 *
 * Exits 1 on the first failed check. Build with -fno-builtin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LARGE 8
#define LARGE_SIZE (3u << 20)
#define SMALL 2000

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "info_test: %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                         \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

/* Formatted into a static buffer and written with one fputs: stdout is
 * set up (and its buffer allocated) before the first figure is read. */
static char line[512];

static void print(const char *tag, struct mallinfo2 m) {
    snprintf(line, sizeof line,
             "mallinfo2 %s arena=%zu ordblks=%zu smblks=%zu hblks=%zu "
             "hblkhd=%zu usmblks=%zu fsmblks=%zu uordblks=%zu fordblks=%zu "
             "keepcost=%zu\n",
             tag, m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd, m.usmblks,
             m.fsmblks, m.uordblks, m.fordblks, m.keepcost);
    fputs(line, stdout);
    fflush(stdout);
}

static size_t clamp(size_t v) { return v > INT_MAX ? INT_MAX : v; }

/* mallinfo's int fields are mallinfo2's, clamped. Read back to back with
 * nothing allocated between, so the figures are the same. */
static void check_int_fields(void) {
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m = mallinfo();
    CHECK((size_t)m.arena == clamp(m2.arena));
    CHECK((size_t)m.hblks == clamp(m2.hblks));
    CHECK((size_t)m.hblkhd == clamp(m2.hblkhd));
    CHECK((size_t)m.uordblks == clamp(m2.uordblks));
    CHECK((size_t)m.fordblks == clamp(m2.fordblks));
    CHECK((size_t)m.keepcost == clamp(m2.keepcost));
    CHECK(m.ordblks == 0 && m.smblks == 0 && m.usmblks == 0 && m.fsmblks == 0);
}

static char xml[4096];
static char filebuf[BUFSIZ];

int main(void) {
    static void *large[LARGE], *small[SMALL];
    fputs("info_test: start\n", stdout);
    fflush(stdout);

    struct mallinfo2 before = mallinfo2();
    CHECK(before.arena == before.uordblks + before.fordblks);

    size_t held = 0, large_usable = 0;
    for (int i = 0; i < LARGE; i++) {
        large[i] = malloc(LARGE_SIZE);
        CHECK(large[i] != NULL);
        memset(large[i], i + 1, LARGE_SIZE);
        size_t u = malloc_usable_size(large[i]);
        CHECK(u >= LARGE_SIZE);
        large_usable += u;
    }
    for (int i = 0; i < SMALL; i++) {
        small[i] = malloc(1 + (i * 37) % 1000);
        CHECK(small[i] != NULL);
        held += malloc_usable_size(small[i]);
    }
    held += large_usable;

    struct mallinfo2 m = mallinfo2();
    malloc_stats(); /* the report the test compares with, on stderr */
    print("held", m);

    /* Fresh process, nothing large freed yet: each block is a new mapping. */
    CHECK(m.hblks == before.hblks + LARGE);
    CHECK(m.hblkhd >= before.hblkhd + (size_t)LARGE * LARGE_SIZE);
    /* Every usable byte of a large block is inside its mapping. */
    CHECK(m.hblkhd - before.hblkhd >= large_usable);
    /* In use is an upper bound on what the program holds. */
    CHECK(m.uordblks >= held);
    CHECK(m.uordblks >= m.hblkhd);
    CHECK(m.arena == m.uordblks + m.fordblks);
    check_int_fields();

    /* malloc_info: options must be 0. */
    errno = 0;
    CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL);

    /* Into a file with a static buffer, so that writing allocates nothing
     * and the figures read just before still hold. */
    FILE *f = tmpfile();
    CHECK(f != NULL);
    CHECK(setvbuf(f, filebuf, _IOFBF, sizeof filebuf) == 0);
    struct mallinfo2 at_xml = mallinfo2();
    CHECK(malloc_info(0, f) == 0);
    CHECK(fflush(f) == 0);
    rewind(f);
    size_t n = fread(xml, 1, sizeof xml - 1, f);
    fclose(f);
    CHECK(n > 0 && n < sizeof xml - 1);
    xml[n] = 0;
    print("xml", at_xml);
    fputs(xml, stdout);
    fflush(stdout);

    for (int i = 0; i < LARGE; i++) free(large[i]);
    struct mallinfo2 freed = mallinfo2();
    malloc_stats();
    print("freed", freed);
    CHECK(freed.hblks == before.hblks);
    CHECK(freed.hblkhd == before.hblkhd);
    /* 24 MiB of large blocks left; tmpfile's FILE may have taken a page. */
    CHECK(freed.uordblks < m.uordblks);
    /* Freed large mappings are cached (up to the cache's bound) or
     * unmapped: either way they left the in-use figure. */
    CHECK(freed.keepcost <= freed.fordblks);
    check_int_fields();

    for (int i = 0; i < SMALL; i++) free(small[i]);
    puts("info_test: ok");
    return 0;
}
