/*
 * bignum: single-thread arbitrary-precision arithmetic, the way a
 * calculator or a factoring program does it: every operation returns a
 * freshly allocated number and its operands are freed, so the heap sees
 * a stream of small (16-80 byte), short-lived blocks.
 *
 * A stack machine runs SIZE random operations: push a random number,
 * add, subtract, multiply (kept to MAX_LIMBS limbs), print in decimal
 * (repeated division by 10^9, one new number per step, and a string),
 * pop. The checksum hashes every decimal string.
 *
 *   bignum [SIZE]
 */
#include "bench.h"

#define MAX_LIMBS 16
#define STACK 48

typedef struct {
    uint32_t n; /* limbs in use, >= 1; d[n - 1] != 0 unless the number is 0 */
    uint32_t d[];
} big;

static big *big_alloc(uint32_t n) {
    big *b = xmalloc(sizeof(big) + n * sizeof(uint32_t));
    b->n = n;
    return b;
}

static big *trim(big *b) {
    while (b->n > 1 && b->d[b->n - 1] == 0) b->n--;
    return b;
}

static big *big_random(rng_t *r) {
    uint32_t n = (uint32_t)rng_range(r, 1, 4);
    big *b = big_alloc(n);
    for (uint32_t i = 0; i < n; i++) b->d[i] = (uint32_t)rng_next(r);
    b->d[n - 1] |= 1;
    return b;
}

static int cmp(const big *a, const big *b) {
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    for (uint32_t i = a->n; i-- > 0;)
        if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
    return 0;
}

static big *add(const big *a, const big *b) {
    if (a->n < b->n) {
        const big *t = a;
        a = b;
        b = t;
    }
    uint32_t n = a->n + 1 > MAX_LIMBS ? MAX_LIMBS : a->n + 1;
    big *s = big_alloc(n);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < n; i++) {
        carry += (i < a->n ? a->d[i] : 0) + (uint64_t)(i < b->n ? b->d[i] : 0);
        s->d[i] = (uint32_t)carry;
        carry >>= 32;
    }
    return trim(s);
}

/* |a - b| */
static big *sub(const big *a, const big *b) {
    if (cmp(a, b) < 0) {
        const big *t = a;
        a = b;
        b = t;
    }
    big *s = big_alloc(a->n);
    int64_t borrow = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        int64_t v = (int64_t)a->d[i] - (i < b->n ? b->d[i] : 0) - borrow;
        borrow = v < 0;
        s->d[i] = (uint32_t)(v + (borrow << 32));
    }
    return trim(s);
}

/* a * b mod 2^(32 * MAX_LIMBS) */
static big *mul(const big *a, const big *b) {
    uint32_t n = a->n + b->n > MAX_LIMBS ? MAX_LIMBS : a->n + b->n;
    big *p = big_alloc(n);
    memset(p->d, 0, n * sizeof(uint32_t));
    for (uint32_t i = 0; i < a->n && i < n; i++) {
        uint64_t carry = 0;
        for (uint32_t j = 0; j < b->n && i + j < n; j++) {
            carry += (uint64_t)a->d[i] * b->d[j] + p->d[i + j];
            p->d[i + j] = (uint32_t)carry;
            carry >>= 32;
        }
        if (i + b->n < n) p->d[i + b->n] = (uint32_t)carry;
    }
    return trim(p);
}

/* a / d into a new number; the remainder in *rem. */
static big *divsmall(const big *a, uint32_t d, uint32_t *rem) {
    big *q = big_alloc(a->n);
    uint64_t r = 0;
    for (uint32_t i = a->n; i-- > 0;) {
        uint64_t cur = (r << 32) | a->d[i];
        q->d[i] = (uint32_t)(cur / d);
        r = cur % d;
    }
    *rem = (uint32_t)r;
    return trim(q);
}

static int is_zero(const big *a) { return a->n == 1 && a->d[0] == 0; }

/* The decimal digits of a, as a new string; hashed and freed by the caller. */
static char *decimal(const big *a) {
    uint32_t chunks[MAX_LIMBS * 2], k = 0;
    big *cur = big_alloc(a->n);
    memcpy(cur->d, a->d, a->n * sizeof(uint32_t));
    do {
        big *next = divsmall(cur, 1000000000u, &chunks[k++]);
        free(cur);
        cur = next;
    } while (!is_zero(cur));
    free(cur);
    char *s = xmalloc(k * 9 + 1);
    int len = sprintf(s, "%u", chunks[k - 1]);
    for (uint32_t i = k - 1; i-- > 0;) len += sprintf(s + len, "%09u", chunks[i]);
    return s;
}

int main(int argc, char **argv) {
    uint64_t size = arg_u64(argc, argv, 1, 8000000);
    rng_t r = rng_seed(42);
    big *stack[STACK];
    int depth = 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < size; i++) {
        uint64_t op = rng_below(&r, 100);
        if (depth < 2 || (op < 30 && depth < STACK)) {
            stack[depth++] = big_random(&r);
            continue;
        }
        big *b = stack[depth - 1], *a = stack[depth - 2], *c;
        if (op < 55) {
            c = add(a, b);
        } else if (op < 75) {
            c = mul(a, b);
        } else if (op < 85) {
            c = sub(a, b);
        } else if (op < 95) {
            char *s = decimal(b);
            for (char *p = s; *p; p++) sum = sum * 31 + (uint64_t)*p;
            free(s);
            continue;
        } else {
            free(stack[--depth]);
            continue;
        }
        free(a);
        free(b);
        depth -= 2;
        stack[depth++] = c;
    }
    while (depth > 0) free(stack[--depth]);
    result("bignum", size, 1, sum);
    return 0;
}
