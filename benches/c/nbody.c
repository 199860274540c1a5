/*
 * nbody: single-thread Barnes-Hut gravity simulation. Every step builds
 * an octree over the bodies (one malloc per cell, a few thousand per
 * step), computes each body's force by walking the tree, frees the tree
 * and moves the bodies: few allocations, mostly arithmetic, so the
 * allocator should cost almost nothing here (and place cells well).
 *
 *   nbody [SIZE]     (SIZE = time steps, 2000 bodies)
 *
 * The checksum hashes the final positions (the arithmetic does not depend
 * on where the cells are).
 */
#include <math.h>

#include "bench.h"

#define BODIES 2000
#define THETA2 0.25 /* opening angle 0.5, squared */
#define EPS2 1e-4
#define DT 1e-3

typedef struct {
    double p[3], v[3], a[3], m;
} body;

typedef struct cell {
    struct cell *kid[8];
    double c[3], half; /* the cube: centre and half side */
    double com[3], m;  /* centre of mass and mass */
    body *leaf;        /* the body of a one-body cell */
} cell;

static cell *cell_new(const double c[3], double half) {
    cell *x = xcalloc(1, sizeof *x);
    memcpy(x->c, c, sizeof x->c);
    x->half = half;
    return x;
}

static int octant(const cell *x, const double p[3]) {
    return (p[0] > x->c[0]) | (p[1] > x->c[1]) << 1 | (p[2] > x->c[2]) << 2;
}

static void insert(cell *x, body *b, int depth);

static void insert_kid(cell *x, body *b, int depth) {
    int o = octant(x, b->p);
    if (!x->kid[o]) {
        double h = x->half / 2, c[3];
        for (int k = 0; k < 3; k++) c[k] = x->c[k] + ((o >> k & 1) ? h : -h);
        x->kid[o] = cell_new(c, h);
    }
    insert(x->kid[o], b, depth + 1);
}

static void insert(cell *x, body *b, int depth) {
    if (x->m == 0 && !x->leaf) {
        x->leaf = b;
    } else if (depth > 40) {
        /* two bodies at (nearly) one place: keep them together */
    } else {
        if (x->leaf) {
            body *old = x->leaf;
            x->leaf = NULL;
            insert_kid(x, old, depth);
        }
        insert_kid(x, b, depth);
    }
    x->m += b->m;
    for (int k = 0; k < 3; k++) x->com[k] += b->m * b->p[k];
}

static void finish(cell *x) {
    for (int k = 0; k < 3; k++) x->com[k] /= x->m;
    for (int o = 0; o < 8; o++)
        if (x->kid[o]) finish(x->kid[o]);
}

static void force(const cell *x, body *b) {
    double d[3], r2 = EPS2;
    for (int k = 0; k < 3; k++) {
        d[k] = x->com[k] - b->p[k];
        r2 += d[k] * d[k];
    }
    int far = (4 * x->half * x->half) < THETA2 * r2;
    if (x->leaf || far) {
        if (x->leaf == b) return;
        double f = x->m / (r2 * sqrt(r2));
        for (int k = 0; k < 3; k++) b->a[k] += f * d[k];
        return;
    }
    for (int o = 0; o < 8; o++)
        if (x->kid[o]) force(x->kid[o], b);
}

static void release(cell *x) {
    for (int o = 0; o < 8; o++)
        if (x->kid[o]) release(x->kid[o]);
    free(x);
}

int main(int argc, char **argv) {
    uint64_t size = arg_u64(argc, argv, 1, 60);
    rng_t r = rng_seed(3);
    body *bodies = xmalloc(BODIES * sizeof *bodies);
    for (int i = 0; i < BODIES; i++) {
        body *b = &bodies[i];
        /* a Plummer-ish ball: denser in the middle */
        for (int k = 0; k < 3; k++) {
            double u = (double)(rng_next(&r) >> 11) / 9007199254740992.0 - 0.5;
            b->p[k] = u * u * u * 8;
            b->v[k] = ((double)(rng_next(&r) >> 11) / 9007199254740992.0 - 0.5) * 0.1;
        }
        b->m = 1.0 / BODIES;
    }
    for (uint64_t step = 0; step < size; step++) {
        double lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < BODIES; i++)
            for (int k = 0; k < 3; k++) {
                lo = fmin(lo, bodies[i].p[k]);
                hi = fmax(hi, bodies[i].p[k]);
            }
        double c[3] = {(lo + hi) / 2, (lo + hi) / 2, (lo + hi) / 2};
        cell *root = cell_new(c, (hi - lo) / 2 + 1e-9);
        for (int i = 0; i < BODIES; i++) insert(root, &bodies[i], 0);
        finish(root);
        for (int i = 0; i < BODIES; i++) {
            memset(bodies[i].a, 0, sizeof bodies[i].a);
            force(root, &bodies[i]);
        }
        release(root);
        for (int i = 0; i < BODIES; i++)
            for (int k = 0; k < 3; k++) {
                bodies[i].v[k] += DT * bodies[i].a[k];
                bodies[i].p[k] += DT * bodies[i].v[k];
            }
    }
    uint64_t sum = 0;
    for (int i = 0; i < BODIES; i++)
        for (int k = 0; k < 3; k++) {
            int64_t q = (int64_t)llround(bodies[i].p[k] * 1e9);
            sum += mix64((uint64_t)q + (uint64_t)(i * 3 + k));
        }
    free(bodies);
    result("nbody", size, 1, sum);
    return 0;
}
