/*
 * test_fusion.c — adapter semantics (spec §10, expert_adapter.h) against a
 * long double evaluation of the spec formulas, with the error bounds that
 * expert_adapter.h states asserted element by element; CSR validation;
 * F16/BF16 round-to-nearest-even; loading modules from a written file;
 * allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "expert.h"
#include "expert_adapter.h"

/* ------------------------------------------------------------ helpers */

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double urand(void) { return (double)(rnd64() >> 11) * 0x1p-53; }
/* Signed values spread over a few binades, so cancellation happens. */
static float frand(double scale)
{
    double v = (2.0 * urand() - 1.0) * scale * pow(2.0, (double)(rnd64() % 5) - 2.0);
    return (float)v;
}
static float *fvec(size_t n, double scale)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand(scale);
    return v;
}

#define U32 0x1p-24L
static long double gamma_of(size_t nterms) { return (long double)(nterms + 8) * 0x1p-53L; }

/* Asserts |R - E| <= u|E| + 2·γ·M (+ a subnormal floor). */
static void check_bound(const char *what, size_t idx, float got, long double exact, long double mag,
                        size_t nterms)
{
    long double diff = fabsl((long double)got - exact);
    long double bound = U32 * fabsl(exact) + 2.0L * gamma_of(nterms) * mag + 0x1p-148L;
    if (!(diff <= bound))
        fail_msg("%s[%zu]: got %.9g, exact %.12Lg, |diff| %.3Lg > bound %.3Lg", what, idx,
                 (double)got, exact, diff, bound);
}

/* ----------------------------------------------- reference (long double) */

typedef struct ref_out {
    long double *Wp, *mag; /* W' and the magnitude term M per element */
    long double *bp;       /* b' */
} ref_out;

static void ref_free(ref_out *r)
{
    free(r->Wp);
    free(r->mag);
    free(r->bp);
}

/* Spec §10.3–10.6 evaluated directly. */
static ref_out reference(const expert_adapter *a, const float *W, const float *b)
{
    size_t out = (size_t)a->out, in = (size_t)a->in, r = (size_t)a->r;
    ref_out R;
    R.Wp = calloc(out * in, sizeof *R.Wp);
    R.mag = calloc(out * in, sizeof *R.mag);
    R.bp = calloc(out, sizeof *R.bp);
    long double s = a->kind == EXPERT_ADAPTER_LORA || a->kind == EXPERT_ADAPTER_DORA
                        ? (long double)a->scale : 1.0L;
    for (size_t o = 0; o < out; o++) {
        R.bp[o] = b ? (long double)b[o] : 0.0L;
        for (size_t i = 0; i < in; i++) {
            long double w = W[o * in + i], d = 0, m = 0;
            switch (a->kind) {
            case EXPERT_ADAPTER_LORA:
            case EXPERT_ADAPTER_DORA:
                for (size_t k = 0; k < r; k++) {
                    long double p = (long double)a->B[o * r + k] * (long double)a->A[k * in + i];
                    d += p;
                    m += fabsl(p);
                }
                d *= s;
                m *= fabsl(s);
                break;
            case EXPERT_ADAPTER_OSD:
                for (size_t k = 0; k < r; k++) {
                    long double p = (long double)a->U[o * r + k] * (long double)a->S[k] *
                                    (long double)a->Vt[k * in + i];
                    d += p;
                    m += fabsl(p);
                }
                if (a->sparse.indptr)
                    for (int64_t j = a->sparse.indptr[o]; j < a->sparse.indptr[o + 1]; j++)
                        if ((size_t)a->sparse.indices[j] == i) {
                            d += a->sparse.values[j];
                            m += fabsl((long double)a->sparse.values[j]);
                        }
                break;
            case EXPERT_ADAPTER_IA3: {
                long double l = a->feedforward ? a->l[i] : a->l[o];
                d = (l - 1.0L) * w;
                break;
            }
            }
            R.Wp[o * in + i] = w + d;
            R.mag[o * in + i] = fabsl(w) + m;
        }
        if (a->kind == EXPERT_ADAPTER_IA3 && !a->feedforward && b)
            R.bp[o] = (long double)a->l[o] * (long double)b[o];
        if (a->kind == EXPERT_ADAPTER_DORA) {
            long double ss = 0;
            for (size_t i = 0; i < in; i++)
                ss += R.Wp[o * in + i] * R.Wp[o * in + i];
            long double f = (long double)a->magnitude[o] / sqrtl(ss);
            for (size_t i = 0; i < in; i++) {
                R.Wp[o * in + i] *= f;
                R.mag[o * in + i] = fabsl(R.Wp[o * in + i]) + fabsl(f) * R.mag[o * in + i];
            }
        }
    }
    return R;
}

static size_t nterms_of(const expert_adapter *a)
{
    size_t n = (size_t)a->r + 2;
    if (a->kind == EXPERT_ADAPTER_DORA)
        n += (size_t)a->in;
    if (a->kind == EXPERT_ADAPTER_OSD)
        n += (size_t)a->in; /* row nnz <= in */
    return n;
}

/* merge, delta and forward of `a` against the reference. */
static void check_module(const expert_adapter *a, const float *W, const float *b, const char *what)
{
    size_t out = (size_t)a->out, in = (size_t)a->in, n = 3;
    expert_error e;
    ref_out R = reference(a, W, b);
    size_t nt = nterms_of(a);

    /* merge */
    float *Wm = malloc(out * in * sizeof *Wm), *bm = NULL;
    memcpy(Wm, W, out * in * sizeof *Wm);
    if (b) {
        bm = malloc(out * sizeof *bm);
        memcpy(bm, b, out * sizeof *bm);
    }
    assert_int_equal(expert_adapter_merge(a, Wm, bm, &e), EXPERT_OK);
    char tag[96];
    snprintf(tag, sizeof tag, "%s merge", what);
    long double num = 0, den = 0;
    for (size_t k = 0; k < out * in; k++) {
        check_bound(tag, k, Wm[k], R.Wp[k], R.mag[k], nt);
        num += ((long double)Wm[k] - R.Wp[k]) * ((long double)Wm[k] - R.Wp[k]);
        den += R.Wp[k] * R.Wp[k];
    }
    /* Frobenius summary: within binary32 rounding. */
    assert_true(sqrtl(num / den) <= 0x1p-23L);
    if (b)
        for (size_t o = 0; o < out; o++)
            check_bound("bias", o, bm[o], R.bp[o], fabsl(R.bp[o]), 2);

    /* delta = W' - W */
    float *D = malloc(out * in * sizeof *D);
    assert_int_equal(expert_adapter_delta(a, W, D, &e), EXPERT_OK);
    snprintf(tag, sizeof tag, "%s delta", what);
    for (size_t k = 0; k < out * in; k++)
        check_bound(tag, k, D[k], R.Wp[k] - (long double)W[k], R.mag[k] + fabsl(R.Wp[k]), nt + 1);

    /* forward on n rows vs x·W'ᵀ + b' (exact, from the reference W') */
    float *x = fvec(n * in, 1.0), *y = malloc(n * out * sizeof *y);
    assert_int_equal(expert_adapter_forward(a, W, b, NULL, n, x, y, &e), EXPERT_OK);
    snprintf(tag, sizeof tag, "%s forward", what);
    for (size_t bi = 0; bi < n; bi++)
        for (size_t o = 0; o < out; o++) {
            long double ex = R.bp[o], T = fabsl(R.bp[o]);
            for (size_t i = 0; i < in; i++) {
                ex += R.Wp[o * in + i] * x[bi * in + i];
                T += R.mag[o * in + i] * fabsl((long double)x[bi * in + i]);
            }
            check_bound(tag, bi * out + o, y[bi * out + o], ex, T, nt + in);
        }

    /* low-rank apply without W: y += ΔW·x */
    if (a->kind == EXPERT_ADAPTER_LORA || a->kind == EXPERT_ADAPTER_OSD) {
        float *y0 = fvec(n * out, 1.0), *y1 = malloc(n * out * sizeof *y1);
        memcpy(y1, y0, n * out * sizeof *y1);
        expert_status s = a->kind == EXPERT_ADAPTER_LORA ? expert_lora_apply(a, n, x, y1, &e)
                                                         : expert_osd_apply(a, n, x, y1, &e);
        assert_int_equal(s, EXPERT_OK);
        snprintf(tag, sizeof tag, "%s apply", what);
        for (size_t bi = 0; bi < n; bi++)
            for (size_t o = 0; o < out; o++) {
                long double ex = y0[bi * out + o], T = fabsl(ex);
                for (size_t i = 0; i < in; i++) {
                    ex += (R.Wp[o * in + i] - W[o * in + i]) * x[bi * in + i];
                    T += R.mag[o * in + i] * fabsl((long double)x[bi * in + i]);
                }
                check_bound(tag, bi * out + o, y1[bi * out + o], ex, T, nt + in);
            }
        free(y0);
        free(y1);
    }
    free(x);
    free(y);
    free(D);
    free(Wm);
    free(bm);
    ref_free(&R);
}

/* ------------------------------------------------------------- tests */

enum { OUT = 37, IN = 53, R = 5 };

static void test_lora(void **state)
{
    (void)state;
    float *W = fvec(OUT * IN, 0.05), *A = fvec(R * IN, 0.2), *B = fvec(OUT * R, 0.02);
    expert_adapter a = {0};
    a.kind = EXPERT_ADAPTER_LORA;
    a.out = OUT;
    a.in = IN;
    a.r = R;
    a.A = A;
    a.B = B;
    expert_error e;
    assert_int_equal(expert_lora_scale(16.0, R, 0, &a.scale, &e), EXPERT_OK);
    assert_true(a.scale == 16.0 / 5.0);
    check_module(&a, W, NULL, "lora");
    /* rsLoRA: alpha / sqrt(r) */
    assert_int_equal(expert_lora_scale(16.0, R, 1, &a.scale, &e), EXPERT_OK);
    assert_true(a.scale == 16.0 / sqrt(5.0));
    check_module(&a, W, NULL, "rslora");
    assert_int_equal(expert_lora_scale(16.0, 0, 0, &a.scale, &e), EXPERT_E_INVALID_ARGUMENT);
    free(W);
    free(A);
    free(B);
}

static void test_dora(void **state)
{
    (void)state;
    float *W = fvec(OUT * IN, 0.05), *A = fvec(R * IN, 0.2), *B = fvec(OUT * R, 0.02);
    float *m = malloc(OUT * sizeof *m), *b = fvec(OUT, 0.1);
    for (size_t o = 0; o < OUT; o++)
        m[o] = (float)(0.2 + urand());
    expert_adapter a = {0};
    a.kind = EXPERT_ADAPTER_DORA;
    a.out = OUT;
    a.in = IN;
    a.r = R;
    a.A = A;
    a.B = B;
    a.magnitude = m;
    a.scale = 2.0;
    check_module(&a, W, b, "dora"); /* the bias is not rescaled */
    a.scale = 32.0 / sqrt(5.0);
    check_module(&a, W, NULL, "dora-rslora");

    /* Merging DoRA as LoRA (ignoring m) gives different weights. */
    expert_error e;
    float *Wd = malloc(OUT * IN * sizeof *Wd), *Wl = malloc(OUT * IN * sizeof *Wl);
    memcpy(Wd, W, OUT * IN * sizeof *Wd);
    memcpy(Wl, W, OUT * IN * sizeof *Wl);
    assert_int_equal(expert_adapter_merge(&a, Wd, NULL, &e), EXPERT_OK);
    a.kind = EXPERT_ADAPTER_LORA;
    assert_int_equal(expert_adapter_merge(&a, Wl, NULL, &e), EXPERT_OK);
    a.kind = EXPERT_ADAPTER_DORA;
    assert_true(memcmp(Wd, Wl, OUT * IN * sizeof *Wd) != 0);

    /* magnitude = the row norm of W + ΔW (PEFT's initialisation): W' = W + ΔW. */
    double *f = malloc(OUT * sizeof *f);
    float *norm = malloc(OUT * sizeof *norm);
    for (size_t o = 0; o < OUT; o++)
        m[o] = 1.0f;
    assert_int_equal(expert_dora_row_scale(&a, W, f, &e), EXPERT_OK);
    for (size_t o = 0; o < OUT; o++)
        norm[o] = (float)(1.0 / f[o]);
    a.magnitude = norm;
    memcpy(Wd, W, OUT * IN * sizeof *Wd);
    assert_int_equal(expert_adapter_merge(&a, Wd, NULL, &e), EXPERT_OK);
    for (size_t k = 0; k < OUT * IN; k++)
        assert_true(fabsf(Wd[k] - Wl[k]) <= 4e-7f * (fabsf(Wl[k]) + 1e-3f));

    /* all-zero row: written as zeros (PEFT: NaN), documented */
    float *Wz = calloc(OUT * IN, sizeof *Wz), *Bz = calloc(OUT * R, sizeof *Bz);
    a.B = Bz;
    assert_int_equal(expert_adapter_merge(&a, Wz, NULL, &e), EXPERT_OK);
    for (size_t k = 0; k < OUT * IN; k++)
        assert_true(Wz[k] == 0.0f);
    /* DoRA needs the base weight for its delta */
    assert_int_equal(expert_adapter_delta(&a, NULL, Wz, &e), EXPERT_E_INVALID_ARGUMENT);

    /* An Inf in the base would make the row's norm infinite and the merged
     * row NaN: refused before anything is written. So are non-finite
     * adapter values, and a result that overflows binary32. */
    a.B = B;
    memcpy(Wd, W, OUT * IN * sizeof *Wd);
    Wd[3 * IN + 1] = INFINITY;
    memcpy(Wl, Wd, OUT * IN * sizeof *Wl);
    assert_int_equal(expert_adapter_merge(&a, Wd, NULL, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "base weight"));
    assert_memory_equal(Wd, Wl, OUT * IN * sizeof *Wd);
    Wd[3 * IN + 1] = NAN;
    assert_int_equal(expert_adapter_delta(&a, Wd, Wl, &e), EXPERT_E_INVALID_ARGUMENT);
    memcpy(Wd, W, OUT * IN * sizeof *Wd);
    A[5] = -INFINITY;
    assert_int_equal(expert_adapter_merge(&a, Wd, NULL, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "lora_A"));
    A[5] = 0.1f;
    a.kind = EXPERT_ADAPTER_LORA;
    a.scale = 1e300; /* finite inputs, W' beyond FLT_MAX */
    assert_int_equal(expert_adapter_merge(&a, Wd, NULL, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "overflows"));
    a.kind = EXPERT_ADAPTER_DORA;
    a.scale = 2.0;
    free(Wz);
    free(Bz);
    free(f);
    free(norm);
    free(Wd);
    free(Wl);
    free(W);
    free(A);
    free(B);
    free(m);
    free(b);
}

static void test_ia3(void **state)
{
    (void)state;
    float *W = fvec(OUT * IN, 0.05), *b = fvec(OUT, 0.1);
    float *lo = malloc(OUT * sizeof *lo), *li = malloc(IN * sizeof *li);
    for (size_t o = 0; o < OUT; o++)
        lo[o] = (float)(1.0 + 0.1 * (2 * urand() - 1));
    for (size_t i = 0; i < IN; i++)
        li[i] = (float)(1.0 + 0.1 * (2 * urand() - 1));
    expert_adapter a = {0};
    a.kind = EXPERT_ADAPTER_IA3;
    a.out = OUT;
    a.in = IN;
    a.l = lo;
    a.feedforward = 0;
    check_module(&a, W, b, "ia3-out"); /* rows and bias scaled */
    a.l = li;
    a.feedforward = 1;
    check_module(&a, W, b, "ia3-ff"); /* columns scaled, bias untouched */

    /* IA³ merge is one exact product rounded once. */
    expert_error e;
    float *Wm = malloc(OUT * IN * sizeof *Wm), *bm = malloc(OUT * sizeof *bm);
    memcpy(Wm, W, OUT * IN * sizeof *Wm);
    memcpy(bm, b, OUT * sizeof *bm);
    assert_int_equal(expert_adapter_merge(&a, Wm, bm, &e), EXPERT_OK);
    for (size_t o = 0; o < OUT; o++) {
        assert_true(bm[o] == b[o]);
        for (size_t i = 0; i < IN; i++)
            assert_true(Wm[o * IN + i] == (float)((double)W[o * IN + i] * (double)li[i]));
    }
    free(Wm);
    free(bm);
    free(W);
    free(b);
    free(lo);
    free(li);
}

/* Random CSR with about `density` of the entries. */
typedef struct csr_buf {
    int64_t *ip, *ix;
    float *v;
    uint64_t nnz;
} csr_buf;

static csr_buf random_csr(size_t rows, size_t cols, double density)
{
    csr_buf c;
    c.ip = calloc(rows + 1, sizeof *c.ip);
    c.ix = malloc(rows * cols * sizeof *c.ix + 8);
    c.v = malloc(rows * cols * sizeof *c.v + 4);
    c.nnz = 0;
    for (size_t o = 0; o < rows; o++) {
        for (size_t i = 0; i < cols; i++)
            if (urand() < density) {
                c.ix[c.nnz] = (int64_t)i;
                c.v[c.nnz++] = frand(0.01);
            }
        c.ip[o + 1] = (int64_t)c.nnz;
    }
    return c;
}

static void csr_free(csr_buf *c)
{
    free(c->ip);
    free(c->ix);
    free(c->v);
}

static void test_osd(void **state)
{
    (void)state;
    const size_t K = 7;
    float *W = fvec(OUT * IN, 0.05), *U = fvec(OUT * K, 0.3), *S = fvec(K, 1.0), *Vt = fvec(K * IN, 0.3);
    /* sparsified factors: zeros in U and Vt are stored as zeros */
    for (size_t k = 0; k < OUT * K; k += 3)
        U[k] = 0.0f;
    for (size_t k = 1; k < K * IN; k += 4)
        Vt[k] = 0.0f;
    csr_buf c = random_csr(OUT, IN, 0.1);
    expert_adapter a = {0};
    a.kind = EXPERT_ADAPTER_OSD;
    a.out = OUT;
    a.in = IN;
    a.r = K;
    a.scale = 1.0;
    a.U = U;
    a.S = S;
    a.Vt = Vt;
    check_module(&a, W, NULL, "osd-lowrank");
    a.sparse = (expert_csr){OUT, IN, c.nnz, c.ip, c.ix, c.v};
    check_module(&a, W, NULL, "osd-lowrank+sparse");
    a.r = 0; /* pure sparse delta */
    a.U = a.S = a.Vt = NULL;
    check_module(&a, W, NULL, "osd-sparse");

    /* expert_csr_apply alone */
    expert_error e;
    float *x = fvec(2 * IN, 1.0), *y = calloc(2 * OUT, sizeof *y);
    assert_int_equal(expert_csr_apply(&a.sparse, 2, x, y, &e), EXPERT_OK);
    for (size_t b = 0; b < 2; b++)
        for (size_t o = 0; o < OUT; o++) {
            long double ex = 0;
            for (int64_t j = c.ip[o]; j < c.ip[o + 1]; j++)
                ex += (long double)c.v[j] * x[b * IN + (size_t)c.ix[j]];
            check_bound("csr", o, y[b * OUT + o], ex, fabsl(ex) + 1e-30L, IN);
        }
    free(x);
    free(y);
    csr_free(&c);
    free(W);
    free(U);
    free(S);
    free(Vt);
}

static void test_csr_rules(void **state)
{
    (void)state;
    /* 3 x 4 matrix */
    int64_t ip[4] = {0, 2, 2, 3}, ix[3] = {0, 3, 1};
    float v[3] = {1, 2, 3}, W[12] = {0};
    expert_adapter a = {0};
    a.kind = EXPERT_ADAPTER_OSD;
    a.out = 3;
    a.in = 4;
    a.sparse = (expert_csr){3, 4, 3, ip, ix, v};
    expert_error e;
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_OK);
    assert_int_equal(expert_adapter_merge(&a, W, NULL, &e), EXPERT_OK);
    assert_true(W[0] == 1 && W[3] == 2 && W[9] == 3);

    ip[0] = 1; /* indptr[0] != 0 */
    assert_int_equal(expert_adapter_merge(&a, W, NULL, &e), EXPERT_E_DECODE_FAILED);
    ip[0] = 0;
    ip[3] = 2; /* end != nnz */
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_DECODE_FAILED);
    ip[3] = 3;
    ip[1] = 3; /* decreasing */
    ip[2] = 2;
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_DECODE_FAILED);
    ip[1] = 2;
    ix[1] = 4; /* column out of range */
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_DECODE_FAILED);
    ix[1] = 0; /* duplicate (not strictly increasing) */
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_DECODE_FAILED);
    assert_true(strstr(e.message, "strictly") != NULL);
    ix[1] = -1;
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_DECODE_FAILED);
    ix[1] = 3;
    float x[4] = {1, 1, 1, 1}, y[3] = {0};
    assert_int_equal(expert_csr_apply(&a.sparse, 1, x, y, &e), EXPERT_OK);
    assert_true(y[0] == 3 && y[1] == 0 && y[2] == 3);
    /* shape mismatch, missing arrays */
    a.sparse.cols = 5;
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_INVALID_ARGUMENT);
    a.sparse = (expert_csr){0, 0, 3, NULL, NULL, NULL};
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_INVALID_ARGUMENT);
    a.sparse.nnz = 0;
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_OK); /* Sp = 0 */
    assert_int_equal(expert_adapter_check(NULL, &e), EXPERT_E_INVALID_ARGUMENT);
    a.kind = EXPERT_ADAPTER_LORA; /* no A/B */
    assert_int_equal(expert_adapter_check(&a, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_int_equal(expert_lora_apply(&a, 1, x, y, &e), EXPERT_E_INVALID_ARGUMENT);
}

/* F16 / BF16 round-to-nearest-even at every midpoint, and exact decode. */
static uint16_t enc16(uint32_t dtype, float f)
{
    uint8_t b[2];
    assert_int_equal(expert_floats_encode(dtype, &f, 1, b, NULL), EXPERT_OK);
    return (uint16_t)(b[0] | (b[1] << 8));
}
static float dec16(uint32_t dtype, uint16_t h)
{
    uint8_t b[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
    float f;
    assert_int_equal(expert_floats_decode(dtype, b, 1, &f, NULL), EXPERT_OK);
    return f;
}

static void test_half_rounding(void **state)
{
    (void)state;
    const uint32_t dts[2] = {EXPERT_DTYPE_F16, EXPERT_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        uint32_t dt = dts[d];
        uint16_t inf = dt == EXPERT_DTYPE_F16 ? 0x7c00 : 0x7f80;
        for (uint32_t h = 0; h < 0x10000; h++) {
            uint16_t hh = (uint16_t)h;
            float f = dec16(dt, hh);
            if (isnan(f)) {
                assert_true(isnan(dec16(dt, enc16(dt, f))));
                continue;
            }
            assert_int_equal(enc16(dt, f), hh); /* round trip */
            if ((hh & 0x7fff) >= inf)
                continue;
            uint16_t next = (uint16_t)(hh + 1); /* next magnitude, same sign */
            float g = dec16(dt, next);
            if (isinf(g))
                continue;
            float mid = (float)(((double)f + (double)g) / 2.0); /* exact in binary32 */
            uint16_t even = (hh & 1) ? next : hh;
            assert_int_equal(enc16(dt, mid), even);
            assert_int_equal(enc16(dt, nextafterf(mid, 0.0f)), (fabsf(f) < fabsf(g)) ? hh : next);
            assert_int_equal(enc16(dt, nextafterf(mid, (f < 0 || g < 0) ? -INFINITY : INFINITY)),
                             (fabsf(f) < fabsf(g)) ? next : hh);
        }
    }
    /* overflow to inf, F16 boundaries */
    assert_int_equal(enc16(EXPERT_DTYPE_F16, 65504.0f), 0x7bff);
    assert_int_equal(enc16(EXPERT_DTYPE_F16, 65519.99f), 0x7bff);
    assert_int_equal(enc16(EXPERT_DTYPE_F16, 65520.0f), 0x7c00);
    assert_int_equal(enc16(EXPERT_DTYPE_F16, -1e9f), 0xfc00);
    assert_int_equal(enc16(EXPERT_DTYPE_BF16, 3.4028235e38f), 0x7f80);
    assert_int_equal(enc16(EXPERT_DTYPE_F16, 0x1p-25f), 0x0000); /* tie to even (0) */
    assert_int_equal(enc16(EXPERT_DTYPE_F16, 0x1.000002p-25f), 0x0001);
    /* F64 rounds to nearest even, F32 is the identity */
    double d[2] = {1.0 + 0x1p-24, 1.0 + 0x1.8p-24};
    float out[2];
    assert_int_equal(expert_floats_decode(EXPERT_DTYPE_F64, d, 2, out, NULL), EXPERT_OK);
    assert_true(out[0] == 1.0f && out[1] == 1.0f + 0x1p-23f);
    expert_error e;
    assert_int_equal(expert_floats_decode(EXPERT_DTYPE_I32, d, 1, out, &e), EXPERT_E_INVALID_ARGUMENT);
}

/* ---------------------------------------------------- load from a file */

static char g_path[512];

static void add_f(expert_writer *w, const char *name, uint16_t type, uint8_t dtype, uint32_t layer,
                  uint32_t module, const void *data, uint8_t rank, uint64_t d0, uint64_t d1,
                  uint8_t codec)
{
    expert_section_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.type = type;
    d.codec = codec;
    d.dtype = dtype;
    d.rank = rank;
    d.layer = layer;
    d.module = module;
    d.dims[0] = d0;
    d.dims[1] = rank > 1 ? d1 : 0;
    uint64_t n = rank > 1 ? d0 * d1 : d0;
    expert_error e;
    assert_int_equal(expert_writer_add(w, &d, data, (size_t)(n * expert_dtype_size(dtype)), &e), EXPERT_OK);
}

/* A file with a lora, a dora (F16 magnitude), an ia3, an osd (+CSR in I32)
 * and an osd with a broken CSR. */
static void write_file(int broken_csr)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_path, sizeof g_path, "%s/fusion_%d_%d.expert", tmp ? tmp : "/tmp", (int)getpid(),
             broken_csr);
    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(g_path, NULL, &w, &e), EXPERT_OK);
    g_rng = 42;
    float *A = fvec(3 * 8, 1), *B = fvec(6 * 3, 1), *U = fvec(6 * 2, 1), *S = fvec(2, 1), *Vt = fvec(2 * 8, 1);
    float l[6] = {1, 2, 3, 4, 5, 6};
    uint16_t m16[6] = {0x3c00, 0x4000, 0x3800, 0x3c00, 0x3c00, 0x3555}; /* 1, 2, .5, 1, 1, ~1/3 */
    int32_t ip[7] = {0, 1, 1, 3, 3, 3, 4}, ix[4] = {2, 0, 7, broken_csr ? 9 : 5};
    float v[4] = {1, 2, 3, 4};
    add_f(w, "m.layers.0.q.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, A, 2, 3, 8, 0);
    add_f(w, "m.layers.0.q.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, B, 2, 6, 3, 2);
    add_f(w, "m.layers.0.k.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 1, A, 2, 3, 8, 1);
    add_f(w, "m.layers.0.k.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 1, B, 2, 6, 3, 0);
    add_f(w, "m.layers.0.k.lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, EXPERT_DTYPE_F16, 0, 1,
          m16, 1, 6, 0, 0);
    add_f(w, "m.layers.0.v.ia3_l", EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 2, l, 2, 6, 1, 0);
    add_f(w, "m.layers.0.o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 3, U, 2, 6, 2, 0);
    add_f(w, "m.layers.0.o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 3, S, 1, 2, 0, 0);
    add_f(w, "m.layers.0.o.osd_VT", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 3, Vt, 2, 2, 8, 0);
    add_f(w, "m.layers.0.o.indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 0, 3, ip, 1, 7, 0, 0);
    add_f(w, "m.layers.0.o.indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 0, 3, ix, 1, 4, 0, 0);
    add_f(w, "m.layers.0.o.values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 3, v, 1, 4, 0, 0);
    const char *meta =
        "{\"format\":\"expert-v2\",\"name\":\"t\",\"version\":\"1\",\"modules\":["
        "{\"path\":\"m.layers.0.q\",\"type\":\"lora\",\"layer\":0,\"r\":3,\"alpha\":6,\"rslora\":false},"
        "{\"path\":\"m.layers.0.k\",\"type\":\"dora\",\"layer\":0,\"r\":3,\"alpha\":6,\"rslora\":true},"
        "{\"path\":\"m.layers.0.v\",\"type\":\"ia3\",\"layer\":0,\"feedforward\":false,\"in_features\":8},"
        "{\"path\":\"m.layers.0.o\",\"type\":\"osd\",\"layer\":0,\"rank\":2,\"sparse_format\":\"csr\"}]}";
    assert_int_equal(expert_writer_set_metadata(w, meta, strlen(meta), &e), EXPERT_OK);
    assert_int_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    free(A);
    free(B);
    free(U);
    free(S);
    free(Vt);
}

static void test_load(void **state)
{
    (void)state;
    write_file(0);
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_module_count(r), 4);
    g_rng = 42;
    float *A = fvec(3 * 8, 1), *B = fvec(6 * 3, 1), *U = fvec(6 * 2, 1), *S = fvec(2, 1), *Vt = fvec(2 * 8, 1);
    expert_adapter *a = NULL;

    assert_int_equal(expert_adapter_load(r, 0, &a, &e), EXPERT_OK);
    assert_int_equal(a->kind, EXPERT_ADAPTER_LORA);
    assert_int_equal(a->out, 6);
    assert_int_equal(a->in, 8);
    assert_int_equal(a->r, 3);
    assert_true(a->scale == 2.0);
    assert_string_equal(a->path, "m.layers.0.q");
    assert_memory_equal(a->A, A, sizeof(float) * 24);
    assert_memory_equal(a->B, B, sizeof(float) * 18);
    expert_adapter_free(a);

    assert_int_equal(expert_adapter_load(r, 1, &a, &e), EXPERT_OK);
    assert_int_equal(a->kind, EXPERT_ADAPTER_DORA);
    assert_true(a->scale == 6.0 / sqrt(3.0));
    assert_true(a->magnitude[0] == 1.0f && a->magnitude[1] == 2.0f && a->magnitude[2] == 0.5f);
    assert_true(a->magnitude[5] == 0x1.554p-2f); /* F16 0x3555 exactly */
    expert_adapter_free(a);

    assert_int_equal(expert_adapter_load(r, 2, &a, &e), EXPERT_OK);
    assert_int_equal(a->kind, EXPERT_ADAPTER_IA3);
    assert_int_equal(a->out, 6);
    assert_int_equal(a->in, 8); /* from in_features */
    assert_true(a->l[5] == 6.0f);
    expert_adapter_free(a);

    assert_int_equal(expert_adapter_load(r, 3, &a, &e), EXPERT_OK);
    assert_int_equal(a->kind, EXPERT_ADAPTER_OSD);
    assert_int_equal(a->r, 2);
    assert_int_equal(a->sparse.nnz, 4);
    assert_true(a->sparse.indptr[6] == 4 && a->sparse.indices[3] == 5);
    assert_memory_equal(a->U, U, sizeof(float) * 12);
    assert_memory_equal(a->S, S, sizeof(float) * 2);
    assert_memory_equal(a->Vt, Vt, sizeof(float) * 16);
    float *W = fvec(48, 0.1);
    check_module(a, W, NULL, "loaded-osd");
    expert_adapter_free(a);
    free(W);

    assert_int_equal(expert_adapter_load(r, 4, &a, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_null(a);
    expert_close(r);
    unlink(g_path);

    /* An invalid CSR passes open (structural) but never reaches the math. */
    write_file(1);
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_adapter_load(r, 3, &a, &e), EXPERT_E_DECODE_FAILED);
    assert_null(a);
    assert_true(e.section != EXPERT_NO_SECTION);
    expert_close(r);
    unlink(g_path);
    free(A);
    free(B);
    free(U);
    free(S);
    free(Vt);
}

/* --------------------------------------------------- allocation failures */

static long g_fail_at = -1, g_allocs = 0;
static void *fail_malloc(size_t n, void *u)
{
    (void)u;
    if (g_fail_at >= 0 && g_allocs++ == g_fail_at)
        return NULL;
    return malloc(n);
}
static void *fail_realloc(void *p, size_t n, void *u)
{
    (void)u;
    if (g_fail_at >= 0 && g_allocs++ == g_fail_at)
        return NULL;
    return realloc(p, n);
}
static void plain_free(void *p, void *u)
{
    (void)u;
    free(p);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    write_file(0);
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    expert_allocator al = {fail_malloc, fail_realloc, plain_free, NULL};
    expert_set_allocator(&al);
    for (uint32_t m = 0; m < 4; m++) {
        int ok = 0;
        for (long k = 0; k < 200 && !ok; k++) {
            g_fail_at = k;
            g_allocs = 0;
            expert_adapter *a = NULL;
            expert_status s = expert_adapter_load(r, m, &a, &e);
            if (s == EXPERT_OK) {
                float W[48] = {0}, y[6] = {0}, x[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[6] = {0};
                s = expert_adapter_merge(a, W, b, &e);
                if (s == EXPERT_OK)
                    s = expert_adapter_forward(a, W, b, NULL, 1, x, y, &e);
                expert_adapter_free(a);
                ok = s == EXPERT_OK;
            }
            if (!ok)
                assert_int_equal(s, EXPERT_E_NOMEM);
        }
        assert_true(ok);
    }
    g_fail_at = -1;
    expert_set_allocator(NULL);
    expert_close(r);
    unlink(g_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_dora),
        cmocka_unit_test(test_ia3),
        cmocka_unit_test(test_osd),
        cmocka_unit_test(test_csr_rules),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
