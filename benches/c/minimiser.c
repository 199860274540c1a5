/*
 * minimiser: single-thread two-level logic minimisation (Quine-McCluskey
 * prime implicants), a stand-in for a logic-synthesis tool: cubes of
 * 8-14 bytes, list nodes, hash-table chains, bucket arrays and growing
 * group arrays, all short-lived, of mixed sizes.
 *
 * Each of SIZE rounds draws a random boolean function (8-14 inputs, a
 * few hundred minterms) and merges cubes that differ in one input, level
 * by level, until only prime implicants are left. The checksum is the
 * (order-independent) sum of the primes' hashes.
 *
 *   minimiser [SIZE]
 */
#include "bench.h"

#define DASH 2

typedef struct node {
    struct node *next;
    uint8_t *cube;
    uint64_t hash;
    int used;
} node;

typedef struct {
    node **v;
    size_t n, cap;
} group;

static unsigned nvars;

static uint64_t cube_hash(const uint8_t *c) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned i = 0; i < nvars; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static void push(group *g, node *x) {
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->v = realloc(g->v, g->cap * sizeof *g->v);
        if (!g->v) die("realloc returned NULL");
    }
    g->v[g->n++] = x;
}

/* The set of cubes of one level: chained hash table, deduplicating. */
typedef struct {
    node **bucket;
    size_t mask, n;
} set;

static set set_new(size_t expect) {
    size_t b = 16;
    while (b < expect) b *= 2;
    set s = {xcalloc(b, sizeof(node *)), b - 1, 0};
    return s;
}

/* Adds the cube (taking it) unless an equal one is there (then frees it). */
static void set_add(set *s, uint8_t *cube) {
    uint64_t h = cube_hash(cube);
    for (node *x = s->bucket[h & s->mask]; x; x = x->next)
        if (x->hash == h && memcmp(x->cube, cube, nvars) == 0) {
            free(cube);
            return;
        }
    node *x = xmalloc(sizeof *x);
    x->cube = cube;
    x->hash = h;
    x->used = 0;
    x->next = s->bucket[h & s->mask];
    s->bucket[h & s->mask] = x;
    s->n++;
}

static unsigned ones(const uint8_t *c) {
    unsigned k = 0;
    for (unsigned i = 0; i < nvars; i++) k += c[i] == 1;
    return k;
}

/* The one input where a and b differ (both 0/1 there, equal elsewhere), or -1. */
static int merge_at(const uint8_t *a, const uint8_t *b) {
    int at = -1;
    for (unsigned i = 0; i < nvars; i++) {
        if (a[i] == b[i]) continue;
        if (a[i] == DASH || b[i] == DASH || at >= 0) return -1;
        at = (int)i;
    }
    return at;
}

/* One level: merges, sums the primes into *sum, returns the next level. */
static set level(set *cur, uint64_t *sum, uint64_t *primes) {
    group *g = xcalloc(nvars + 1, sizeof(group));
    for (size_t b = 0; b <= cur->mask; b++)
        for (node *x = cur->bucket[b]; x; x = x->next) push(&g[ones(x->cube)], x);
    set next = set_new(cur->n);
    for (unsigned k = 0; k < nvars; k++)
        for (size_t i = 0; i < g[k].n; i++)
            for (size_t j = 0; j < g[k + 1].n; j++) {
                node *a = g[k].v[i], *b = g[k + 1].v[j];
                int at = merge_at(a->cube, b->cube);
                if (at < 0) continue;
                a->used = b->used = 1;
                uint8_t *c = xmalloc(nvars);
                memcpy(c, a->cube, nvars);
                c[at] = DASH;
                set_add(&next, c);
            }
    for (unsigned k = 0; k <= nvars; k++) free(g[k].v);
    free(g);
    for (size_t b = 0; b <= cur->mask; b++) {
        node *x = cur->bucket[b];
        while (x) {
            node *n = x->next;
            if (!x->used) {
                *sum += mix64(x->hash);
                ++*primes;
            }
            free(x->cube);
            free(x);
            x = n;
        }
    }
    free(cur->bucket);
    return next;
}

int main(int argc, char **argv) {
    uint64_t size = arg_u64(argc, argv, 1, 600);
    rng_t r = rng_seed(7);
    uint64_t sum = 0, primes = 0;
    for (uint64_t round = 0; round < size; round++) {
        nvars = (unsigned)rng_range(&r, 8, 14);
        size_t minterms = (size_t)rng_range(&r, 20 * nvars, 40 * nvars);
        set s = set_new(minterms);
        for (size_t m = 0; m < minterms; m++) {
            uint8_t *c = xmalloc(nvars);
            uint64_t bits = rng_next(&r);
            for (unsigned i = 0; i < nvars; i++) c[i] = (bits >> i) & 1;
            set_add(&s, c);
        }
        while (s.n > 0) s = level(&s, &sum, &primes);
        free(s.bucket);
    }
    result("minimiser", size, 1, sum ^ primes);
    return 0;
}
