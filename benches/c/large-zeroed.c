/*
 * large-zeroed: large zeroed buffers, reused. One thread keeps 8 slots; each
 * step frees a random slot's buffer and puts a new calloc'ed one of
 * 5-25 MiB there, checks that 16 of its pages read zero and writes one
 * byte in every 4 KiB page. What costs here is the kernel: an allocator
 * that unmaps every freed buffer and maps a fresh one pays a page fault
 * and a zeroed page per 4 KiB, where one that keeps a few freed buffers
 * only has to zero them again.
 *
 *   large-zeroed [SIZE]     (SIZE = buffers)
 */
#include "bench.h"

#define SLOTS 8
#define MIB (1u << 20)
#define PAGE 4096

int main(int argc, char **argv) {
    uint64_t size = arg_u64(argc, argv, 1, 500);
    rng_t r = rng_seed(11);
    unsigned char *slot[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint64_t sum = 0;
    for (uint64_t i = 0; i < size; i++) {
        unsigned s = (unsigned)rng_below(&r, SLOTS);
        if (slot[s]) sum += slot[s][len[s] - 1];
        free(slot[s]);
        size_t n = (size_t)rng_range(&r, 5 * MIB, 25 * MIB);
        unsigned char *p = xcalloc(1, n);
        for (int k = 0; k < 16; k++)
            if (p[rng_below(&r, n)] != 0) die("calloc returned memory that is not zero");
        for (size_t off = 0; off < n; off += PAGE) p[off] = (unsigned char)(off >> 12);
        p[n - 1] = (unsigned char)i;
        slot[s] = p;
        len[s] = n;
        sum += n;
    }
    for (unsigned s = 0; s < SLOTS; s++) {
        if (slot[s]) sum += slot[s][len[s] - 1];
        free(slot[s]);
    }
    result("large-zeroed", size, 1, sum);
    return 0;
}
