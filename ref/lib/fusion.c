/* fusion.c — adapter semantics of spec §10 on the CPU (expert_adapter.h).
 *
 * Every output element is computed in binary64 from binary32 inputs and
 * rounded to binary32 once (round-to-nearest-even, the default mode): the
 * rows of W + ΔW are built in a binary64 row buffer, the low-rank
 * intermediate x·Aᵀ (x·Vtᵀ) stays in binary64. Memory beyond the caller's
 * arrays is O(in + r) per call; ΔW is never formed by the apply/forward
 * functions. No LAPACK, no threads, no printing. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "errors_internal.h"
#include "expert_adapter.h"

#define FAIL(code, ...) xp_set_error(err, (code), EXPERT_NO_OFFSET, EXPERT_NO_SECTION, __VA_ARGS__)

/* ------------------------------------------------------------- float bits */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in binary32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) /* inf / NaN (payload kept) */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static uint16_t f32_to_f16(float f) /* round to nearest even */
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet, top payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to inf (65504 is the largest finite) */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* normal half: rebias 127 -> 15, round 13 bits away */
        uint32_t v = ax - 0x38000000u;
        v = (v + 0x0fffu + ((v >> 13) & 1u)) >> 13;
        return (uint16_t)(sign | v);
    }
    /* subnormal half (or zero): units of 2^-24, scaling is exact */
    float t = f32_from_bits(ax) * 0x1p24f; /* < 1024 */
    uint32_t n = (uint32_t)t;
    float frac = t - (float)n;
    if (frac > 0.5f || (frac == 0.5f && (n & 1u)))
        n++;
    return (uint16_t)(sign | n);
}

static float bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

static uint16_t f32_to_bf16(float f) /* round to nearest even */
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((x >> 16) | 0x0040u);
    x += 0x7fffu + ((x >> 16) & 1u); /* overflow of the largest finite values carries into inf */
    return (uint16_t)(x >> 16);
}

static uint64_t rd_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void wr_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

expert_status expert_floats_decode(uint32_t dtype, const void *src, size_t count, float *dst,
                                   expert_error *err)
{
    const uint8_t *p = src;
    if ((src == NULL || dst == NULL) && count != 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "NULL buffer");
    switch (dtype) {
    case EXPERT_DTYPE_F32:
        for (size_t i = 0; i < count; i++)
            dst[i] = f32_from_bits((uint32_t)rd_le(p + 4 * i, 4));
        return EXPERT_OK;
    case EXPERT_DTYPE_F16:
        for (size_t i = 0; i < count; i++)
            dst[i] = f16_to_f32((uint16_t)rd_le(p + 2 * i, 2));
        return EXPERT_OK;
    case EXPERT_DTYPE_BF16:
        for (size_t i = 0; i < count; i++)
            dst[i] = bf16_to_f32((uint16_t)rd_le(p + 2 * i, 2));
        return EXPERT_OK;
    case EXPERT_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            uint64_t u = rd_le(p + 8 * i, 8);
            double d;
            memcpy(&d, &u, sizeof d);
            dst[i] = (float)d;
        }
        return EXPERT_OK;
    default:
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "dtype %u is not a float dtype", dtype);
    }
}

expert_status expert_floats_encode(uint32_t dtype, const float *src, size_t count, void *dst,
                                   expert_error *err)
{
    uint8_t *p = dst;
    if ((src == NULL || dst == NULL) && count != 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "NULL buffer");
    switch (dtype) {
    case EXPERT_DTYPE_F32:
        for (size_t i = 0; i < count; i++)
            wr_le(p + 4 * i, f32_bits(src[i]), 4);
        return EXPERT_OK;
    case EXPERT_DTYPE_F16:
        for (size_t i = 0; i < count; i++)
            wr_le(p + 2 * i, f32_to_f16(src[i]), 2);
        return EXPERT_OK;
    case EXPERT_DTYPE_BF16:
        for (size_t i = 0; i < count; i++)
            wr_le(p + 2 * i, f32_to_bf16(src[i]), 2);
        return EXPERT_OK;
    case EXPERT_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            double d = (double)src[i];
            uint64_t u;
            memcpy(&u, &d, sizeof u);
            wr_le(p + 8 * i, u, 8);
        }
        return EXPERT_OK;
    default:
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "dtype %u is not a float dtype", dtype);
    }
}

/* ------------------------------------------------------------- checks */

expert_status expert_lora_scale(double alpha, uint64_t r, int rslora, double *out,
                                expert_error *err)
{
    if (out == NULL || r == 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "rank must be >= 1");
    *out = rslora ? alpha / sqrt((double)r) : alpha / (double)r;
    if (!isfinite(*out))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "scale is not finite");
    return EXPERT_OK;
}

/* 1 if a*b*c (element count) fits comfortably in size_t and in 2^60. */
static int size_ok(uint64_t a, uint64_t b)
{
    uint64_t n;
    return !__builtin_mul_overflow(a, b, &n) && n <= (UINT64_C(1) << 60) && n <= SIZE_MAX / 8;
}

static expert_status csr_check(const expert_csr *sp, uint64_t rows, uint64_t cols,
                               expert_error *err)
{
    if (sp->indptr == NULL) {
        if (sp->nnz != 0)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "sparse part: nnz %llu without indptr",
                        (unsigned long long)sp->nnz);
        return EXPERT_OK;
    }
    if (sp->rows != rows || sp->cols != cols)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "sparse part is [%llu, %llu], module is [%llu, %llu]",
                    (unsigned long long)sp->rows, (unsigned long long)sp->cols,
                    (unsigned long long)rows, (unsigned long long)cols);
    if (sp->nnz != 0 && (sp->indices == NULL || sp->values == NULL))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "sparse part: NULL indices or values");
    if (sp->nnz > (UINT64_C(1) << 60))
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "sparse part: nnz too large");
    const int64_t *ip = sp->indptr, *ix = sp->indices;
    if (ip[0] != 0 || ip[rows] < 0 || (uint64_t)ip[rows] != sp->nnz)
        return FAIL(EXPERT_E_DECODE_FAILED, "invalid CSR: indptr must start at 0 and end at nnz");
    for (uint64_t o = 0; o < rows; o++) {
        if (ip[o + 1] < ip[o] || (uint64_t)ip[o + 1] > sp->nnz)
            return FAIL(EXPERT_E_DECODE_FAILED, "invalid CSR: indptr decreases at row %llu",
                        (unsigned long long)o);
        for (int64_t j = ip[o]; j < ip[o + 1]; j++) {
            if (ix[j] < 0 || (uint64_t)ix[j] >= cols)
                return FAIL(EXPERT_E_DECODE_FAILED, "invalid CSR: column index out of range");
            if (j > ip[o] && ix[j] <= ix[j - 1])
                return FAIL(EXPERT_E_DECODE_FAILED,
                            "invalid CSR: column indices not strictly increasing in row %llu",
                            (unsigned long long)o);
        }
    }
    return EXPERT_OK;
}

expert_status expert_adapter_check(const expert_adapter *a, expert_error *err)
{
    if (a == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "adapter is NULL");
    if (a->out == 0 || a->in == 0 || !size_ok(a->out, a->in) || !size_ok(a->out + 1, 1) ||
        a->r > (UINT64_C(1) << 32))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "bad shape: out %llu, in %llu, r %llu",
                    (unsigned long long)a->out, (unsigned long long)a->in,
                    (unsigned long long)a->r);
    switch (a->kind) {
    case EXPERT_ADAPTER_LORA:
    case EXPERT_ADAPTER_DORA:
        if (a->r == 0 || a->A == NULL || a->B == NULL || !size_ok(a->r, a->in) ||
            !size_ok(a->out, a->r))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "lora/dora: rank >= 1 and A, B required");
        if (!isfinite(a->scale))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "lora/dora: scale is not finite");
        if (a->kind == EXPERT_ADAPTER_DORA && a->magnitude == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "dora: magnitude required");
        return EXPERT_OK;
    case EXPERT_ADAPTER_IA3:
        if (a->l == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "ia3: vector required");
        return EXPERT_OK;
    case EXPERT_ADAPTER_OSD:
        if (a->r > 0 && (a->U == NULL || a->S == NULL || a->Vt == NULL || !size_ok(a->r, a->in) ||
                         !size_ok(a->out, a->r)))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "osd: U, S, Vt required for k > 0");
        return csr_check(&a->sparse, a->out, a->in, err);
    default:
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "unknown adapter kind %d", (int)a->kind);
    }
}

/* ------------------------------------------------------- row builders */

/* v[0..in) += ΔW[o, :] in binary64 (LoRA: s·B[o,:]·A; OSD: U[o,:]·diag(S)·Vt + Sp[o,:]). */
static void add_delta_row(const expert_adapter *a, size_t o, double *v)
{
    size_t in = (size_t)a->in, r = (size_t)a->r;
    if (a->kind == EXPERT_ADAPTER_LORA || a->kind == EXPERT_ADAPTER_DORA) {
        for (size_t k = 0; k < r; k++) {
            double c = a->scale * (double)a->B[o * r + k];
            const float *ak = a->A + k * in;
            if (c == 0.0)
                continue;
            for (size_t i = 0; i < in; i++)
                v[i] += c * (double)ak[i];
        }
    } else if (a->kind == EXPERT_ADAPTER_OSD) {
        for (size_t j = 0; j < r; j++) {
            double c = (double)a->U[o * r + j] * (double)a->S[j]; /* exact */
            const float *vj = a->Vt + j * in;
            if (c == 0.0)
                continue;
            for (size_t i = 0; i < in; i++)
                v[i] += c * (double)vj[i];
        }
        if (a->sparse.indptr != NULL)
            for (int64_t j = a->sparse.indptr[o]; j < a->sparse.indptr[o + 1]; j++)
                v[a->sparse.indices[j]] += (double)a->sparse.values[j];
    }
}

/* f = m[o] / ||v||, binary64; 0 for an all-zero row (PEFT would give NaN). */
static double dora_factor(const expert_adapter *a, size_t o, const double *v)
{
    double ss = 0.0;
    for (size_t i = 0; i < (size_t)a->in; i++)
        ss += v[i] * v[i];
    double norm = sqrt(ss);
    return norm > 0.0 ? (double)a->magnitude[o] / norm : 0.0;
}

static double *row_buffer(size_t n, expert_error *err, expert_status *st)
{
    double *v = xp_malloc((n ? n : 1) * sizeof *v);
    *st = v == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : EXPERT_OK;
    return v;
}

/* ---------------------------------------------------- (a) dense fusion */

static expert_status all_finite(const float *p, uint64_t n, const char *what, expert_error *err)
{
    for (uint64_t i = 0; p != NULL && i < n; i++)
        if (!isfinite(p[i]))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "%s holds a non-finite value (%g) at element %llu",
                        what, (double)p[i], (unsigned long long)i);
    return EXPERT_OK;
}

/* A merged weight with an Inf or NaN is never what the caller wants (one
 * Inf in a row makes DoRA's norm infinite and the whole row NaN), so every
 * input is checked before anything is written. */
static expert_status inputs_finite(const expert_adapter *a, const float *w_in, const float *bias,
                                   expert_error *err)
{
    uint64_t out = a->out, in = a->in;
    XP_TRY(all_finite(w_in, out * in, "the base weight", err));
    XP_TRY(all_finite(bias, out, "the base bias", err));
    switch (a->kind) {
    case EXPERT_ADAPTER_LORA:
    case EXPERT_ADAPTER_DORA:
        XP_TRY(all_finite(a->A, a->r * in, "lora_A", err));
        XP_TRY(all_finite(a->B, out * a->r, "lora_B", err));
        return all_finite(a->magnitude, a->kind == EXPERT_ADAPTER_DORA ? out : 0, "the DoRA magnitude", err);
    case EXPERT_ADAPTER_IA3:
        return all_finite(a->l, a->feedforward ? in : out, "the IA3 vector", err);
    default: /* OSD */
        XP_TRY(all_finite(a->U, out * a->r, "OSD U", err));
        XP_TRY(all_finite(a->S, a->r, "OSD S", err));
        XP_TRY(all_finite(a->Vt, a->r * in, "OSD Vt", err));
        return all_finite(a->sparse.values, a->sparse.nnz, "the OSD sparse values", err);
    }
}

/* Shared body: mode 0 = merge (W := W'), 1 = delta (out := W' − W). Finite
 * inputs can still overflow binary32 (|W'| > FLT_MAX): that row is refused
 * before it is written, so W is then merged up to that row only. */
static expert_status fuse(const expert_adapter *a, float *W, const float *Wc, float *bias,
                          float *delta, expert_error *err)
{
    XP_TRY(expert_adapter_check(a, err));
    size_t out = (size_t)a->out, in = (size_t)a->in;
    const float *w_in = W != NULL ? W : Wc;
    XP_TRY(inputs_finite(a, w_in, bias, err));

    if (a->kind == EXPERT_ADAPTER_IA3) {
        if (w_in == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "ia3: the base weight is required");
        for (size_t o = 0; o < out; o++) {
            for (size_t i = 0; i < in; i++) {
                double l = (double)(a->feedforward ? a->l[i] : a->l[o]);
                double w = (double)w_in[o * in + i];
                double p = l * w; /* exact */
                if (delta != NULL)
                    delta[o * in + i] = (float)(p - w);
                else
                    W[o * in + i] = (float)p;
            }
            if (bias != NULL && !a->feedforward)
                bias[o] = (float)((double)a->l[o] * (double)bias[o]);
        }
        return EXPERT_OK;
    }
    if (a->kind == EXPERT_ADAPTER_DORA && w_in == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "dora: the base weight is required");

    expert_status st;
    double *v = row_buffer(in, err, &st);
    if (v == NULL)
        return st;
    int need_w = a->kind == EXPERT_ADAPTER_DORA || delta == NULL;
    for (size_t o = 0; o < out; o++) {
        if (need_w)
            for (size_t i = 0; i < in; i++)
                v[i] = (double)w_in[o * in + i];
        else
            memset(v, 0, in * sizeof *v);
        add_delta_row(a, o, v);
        double f = a->kind == EXPERT_ADAPTER_DORA ? dora_factor(a, o, v) : 1.0;
        for (size_t i = 0; i < in; i++)
            if (!isfinite((float)(f * v[i]))) {
                xp_free(v);
                return FAIL(EXPERT_E_INVALID_ARGUMENT,
                            "the merged weight overflows binary32 at row %zu, column %zu", o, i);
            }
        if (a->kind == EXPERT_ADAPTER_DORA) {
            for (size_t i = 0; i < in; i++) {
                double m = f * v[i];
                if (delta != NULL)
                    delta[o * in + i] = (float)(m - (double)w_in[o * in + i]);
                else
                    W[o * in + i] = (float)m;
            }
        } else {
            float *dst = delta != NULL ? delta : W;
            for (size_t i = 0; i < in; i++)
                dst[o * in + i] = (float)v[i];
        }
    }
    xp_free(v);
    return EXPERT_OK;
}

expert_status expert_adapter_merge(const expert_adapter *a, float *W, float *bias,
                                   expert_error *err)
{
    if (W == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "merge needs the base weight");
    return fuse(a, W, NULL, bias, NULL, err);
}

expert_status expert_adapter_delta(const expert_adapter *a, const float *W, float *delta,
                                   expert_error *err)
{
    if (delta == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "delta buffer is NULL");
    return fuse(a, NULL, W, NULL, delta, err);
}

expert_status expert_dora_row_scale(const expert_adapter *a, const float *W, double *f,
                                    expert_error *err)
{
    XP_TRY(expert_adapter_check(a, err));
    if (a->kind != EXPERT_ADAPTER_DORA || W == NULL || f == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "dora module, base weight and output required");
    size_t out = (size_t)a->out, in = (size_t)a->in;
    expert_status st;
    double *v = row_buffer(in, err, &st);
    if (v == NULL)
        return st;
    for (size_t o = 0; o < out; o++) {
        for (size_t i = 0; i < in; i++)
            v[i] = (double)W[o * in + i];
        add_delta_row(a, o, v);
        f[o] = dora_factor(a, o, v);
    }
    xp_free(v);
    return EXPERT_OK;
}

/* ------------------------------------------ (b) activations, no ΔW */

/* t[0..k) = diag(scale_j) · M · x for M [k, in] (binary64, not rounded). */
static void small_proj(const float *M, const float *S, double scale, size_t k, size_t in,
                       const float *x, double *t)
{
    for (size_t j = 0; j < k; j++) {
        const float *mj = M + j * in;
        double acc = 0.0;
        for (size_t i = 0; i < in; i++)
            acc += (double)mj[i] * (double)x[i];
        t[j] = acc * (S != NULL ? (double)S[j] : 1.0) * scale;
    }
}

/* Σ_j L[o, j] · t[j] for L [out, k]. */
static double small_back(const float *L, size_t o, size_t k, const double *t)
{
    double acc = 0.0;
    for (size_t j = 0; j < k; j++)
        acc += (double)L[o * k + j] * t[j];
    return acc;
}

static double csr_row_dot(const expert_csr *sp, size_t o, const float *x)
{
    double acc = 0.0;
    if (sp->indptr == NULL)
        return 0.0;
    for (int64_t j = sp->indptr[o]; j < sp->indptr[o + 1]; j++)
        acc += (double)sp->values[j] * (double)x[sp->indices[j]];
    return acc;
}

static expert_status check_xy(uint64_t n, uint64_t cols, uint64_t rows, const float *x,
                              const float *y, expert_error *err)
{
    if (n == 0)
        return EXPERT_OK;
    if (x == NULL || y == NULL || !size_ok(n, cols) || !size_ok(n, rows))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "x and y required (n %llu)", (unsigned long long)n);
    return EXPERT_OK;
}

expert_status expert_lora_apply(const expert_adapter *a, uint64_t n, const float *x, float *y,
                                expert_error *err)
{
    XP_TRY(expert_adapter_check(a, err));
    if (a->kind != EXPERT_ADAPTER_LORA && a->kind != EXPERT_ADAPTER_DORA)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "lora_apply needs a lora or dora module");
    XP_TRY(check_xy(n, a->in, a->out, x, y, err));
    size_t in = (size_t)a->in, out = (size_t)a->out, r = (size_t)a->r;
    expert_status st;
    double *t = row_buffer(r, err, &st);
    if (t == NULL)
        return st;
    for (size_t b = 0; b < (size_t)n; b++) {
        small_proj(a->A, NULL, a->scale, r, in, x + b * in, t);
        for (size_t o = 0; o < out; o++)
            y[b * out + o] = (float)((double)y[b * out + o] + small_back(a->B, o, r, t));
    }
    xp_free(t);
    return EXPERT_OK;
}

expert_status expert_osd_apply(const expert_adapter *a, uint64_t n, const float *x, float *y,
                               expert_error *err)
{
    XP_TRY(expert_adapter_check(a, err));
    if (a->kind != EXPERT_ADAPTER_OSD)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "osd_apply needs an osd module");
    XP_TRY(check_xy(n, a->in, a->out, x, y, err));
    size_t in = (size_t)a->in, out = (size_t)a->out, k = (size_t)a->r;
    expert_status st;
    double *t = row_buffer(k, err, &st);
    if (t == NULL)
        return st;
    for (size_t b = 0; b < (size_t)n; b++) {
        const float *xb = x + b * in;
        small_proj(a->Vt, a->S, 1.0, k, in, xb, t);
        for (size_t o = 0; o < out; o++)
            y[b * out + o] = (float)((double)y[b * out + o] + small_back(a->U, o, k, t) +
                                     csr_row_dot(&a->sparse, o, xb));
    }
    xp_free(t);
    return EXPERT_OK;
}

expert_status expert_csr_apply(const expert_csr *sp, uint64_t n, const float *x, float *y,
                               expert_error *err)
{
    if (sp == NULL || sp->rows == 0 || sp->cols == 0 || !size_ok(sp->rows + 1, 1))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "sparse matrix required");
    XP_TRY(csr_check(sp, sp->rows, sp->cols, err));
    XP_TRY(check_xy(n, sp->cols, sp->rows, x, y, err));
    size_t rows = (size_t)sp->rows, cols = (size_t)sp->cols;
    for (size_t b = 0; b < (size_t)n; b++)
        for (size_t o = 0; o < rows; o++)
            y[b * rows + o] = (float)((double)y[b * rows + o] + csr_row_dot(sp, o, x + b * cols));
    return EXPERT_OK;
}

expert_status expert_adapter_forward(const expert_adapter *a, const float *W, const float *bias,
                                     const double *dora_f, uint64_t n, const float *x, float *y,
                                     expert_error *err)
{
    XP_TRY(expert_adapter_check(a, err));
    if (W == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "forward needs the base weight");
    XP_TRY(check_xy(n, a->in, a->out, x, y, err));
    size_t in = (size_t)a->in, out = (size_t)a->out, r = (size_t)a->r;
    expert_status st = EXPERT_OK;
    double *f = NULL;
    if (a->kind == EXPERT_ADAPTER_DORA && dora_f == NULL) {
        f = row_buffer(out, err, &st);
        if (f == NULL)
            return st;
        if ((st = expert_dora_row_scale(a, W, f, err)) != EXPERT_OK) {
            xp_free(f);
            return st;
        }
        dora_f = f;
    }
    double *t = row_buffer(r, err, &st);
    double *xs = t != NULL ? row_buffer(in, err, &st) : NULL;
    if (xs == NULL) {
        xp_free(t);
        xp_free(f);
        return st;
    }
    int ia3_in = a->kind == EXPERT_ADAPTER_IA3 && a->feedforward;
    for (size_t b = 0; b < (size_t)n; b++) {
        const float *xb = x + b * in;
        for (size_t i = 0; i < in; i++) /* x ⊙ l is exact in binary64 */
            xs[i] = ia3_in ? (double)xb[i] * (double)a->l[i] : (double)xb[i];
        if (a->kind == EXPERT_ADAPTER_LORA || a->kind == EXPERT_ADAPTER_DORA)
            small_proj(a->A, NULL, a->scale, r, in, xb, t);
        else if (a->kind == EXPERT_ADAPTER_OSD)
            small_proj(a->Vt, a->S, 1.0, r, in, xb, t);
        for (size_t o = 0; o < out; o++) {
            const float *wo = W + o * in;
            double base = 0.0, bo = bias != NULL ? (double)bias[o] : 0.0, v;
            for (size_t i = 0; i < in; i++)
                base += (double)wo[i] * xs[i];
            switch (a->kind) {
            case EXPERT_ADAPTER_LORA:
                v = base + bo + small_back(a->B, o, r, t);
                break;
            case EXPERT_ADAPTER_DORA:
                v = dora_f[o] * (base + small_back(a->B, o, r, t)) + bo;
                break;
            case EXPERT_ADAPTER_IA3:
                v = a->feedforward ? base + bo : (base + bo) * (double)a->l[o];
                break;
            default: /* osd */
                v = base + bo + small_back(a->U, o, r, t) + csr_row_dot(&a->sparse, o, xb);
                break;
            }
            y[b * out + o] = (float)v;
        }
    }
    xp_free(xs);
    xp_free(t);
    xp_free(f);
    return EXPERT_OK;
}

/* ------------------------------------------------------------ loading */

enum { L_A, L_B, L_M, L_IA3, L_U, L_S, L_VT, L_IP, L_IX, L_V, L_N };

typedef struct owned_adapter {
    expert_adapter pub; /* first: the public pointer is the allocation */
    void *buf[L_N];
    char *path;
} owned_adapter;

void expert_adapter_free(expert_adapter *a)
{
    owned_adapter *o = (owned_adapter *)a;
    if (o == NULL)
        return;
    for (int i = 0; i < L_N; i++)
        xp_free(o->buf[i]);
    xp_free(o->path);
    xp_free(o);
}

static int role_of(uint16_t t)
{
    switch (t) {
    case EXPERT_SECTION_LORA_A: return L_A;
    case EXPERT_SECTION_LORA_B: return L_B;
    case EXPERT_SECTION_DORA_MAGNITUDE: return L_M;
    case EXPERT_SECTION_IA3_VECTOR: return L_IA3;
    case EXPERT_SECTION_OSD_U: return L_U;
    case EXPERT_SECTION_OSD_S: return L_S;
    case EXPERT_SECTION_OSD_VT: return L_VT;
    case EXPERT_SECTION_OSD_SPARSE_INDPTR: return L_IP;
    case EXPERT_SECTION_OSD_SPARSE_INDICES: return L_IX;
    case EXPERT_SECTION_OSD_SPARSE_VALUES: return L_V;
    default: return -1;
    }
}

static uint64_t numel_of(const expert_section_info *s)
{
    uint64_t n = 1;
    for (unsigned k = 0; k < s->rank; k++)
        n *= s->dims[k]; /* the reader checked the product at open */
    return n;
}

/* Reads section `idx` and converts it: floats to binary32, indices to int64. */
static expert_status load_section(expert_reader *r, const expert_section_info *s, int role,
                                  void **out, expert_error *err)
{
    uint64_t n = numel_of(s);
    int is_index = role == L_IP || role == L_IX;
    size_t esz = is_index ? sizeof(int64_t) : sizeof(float);
    if (!size_ok(n, 8) || s->decoded_length > SIZE_MAX)
        return xp_set_error(err, EXPERT_E_LIMIT_EXCEEDED, s->offset, s->index, "section too large");
    void *dst = xp_malloc(n ? (size_t)n * esz : 1);
    uint8_t *raw = xp_malloc(s->decoded_length ? (size_t)s->decoded_length : 1);
    expert_status st = EXPERT_OK;
    if (dst == NULL || raw == NULL)
        st = xp_set_error(err, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, s->index, "out of memory");
    if (st == EXPERT_OK && s->decoded_length > 0)
        st = expert_read(r, s->index, raw, (size_t)s->decoded_length, 0, err);
    if (st == EXPERT_OK) {
        if (is_index) {
            int64_t *v = dst;
            unsigned e = s->dtype == EXPERT_DTYPE_I32 ? 4u : 8u;
            if (s->dtype != EXPERT_DTYPE_I32 && s->dtype != EXPERT_DTYPE_I64)
                st = xp_set_error(err, EXPERT_E_BAD_TOC, s->offset, s->index,
                                  "CSR index section is not I32 or I64");
            for (size_t i = 0; st == EXPERT_OK && i < (size_t)n; i++) {
                uint64_t u = rd_le(raw + e * i, e);
                v[i] = e == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
            }
        } else {
            st = expert_floats_decode(s->dtype, raw, (size_t)n, dst, err);
            if (st != EXPERT_OK)
                st = xp_set_error(err, EXPERT_E_BAD_TOC, s->offset, s->index,
                                  "adapter section dtype %u is not a float dtype", s->dtype);
        }
    }
    xp_free(raw);
    if (st != EXPERT_OK) {
        xp_free(dst);
        return st;
    }
    *out = dst;
    return EXPERT_OK;
}

expert_status expert_adapter_load(expert_reader *r, uint32_t module, expert_adapter **out,
                                  expert_error *err)
{
    if (r == NULL || out == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "reader and out are required");
    *out = NULL;
    expert_module_info mi;
    if (expert_module(r, module, &mi) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "module %u does not exist (the file has %u)", module,
                    expert_module_count(r));
    owned_adapter *o = xp_calloc(1, sizeof *o);
    if (o == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_adapter *a = &o->pub;
    a->module = module;
    a->scale = 1.0;
    o->path = xp_strndup(mi.path, strlen(mi.path));
    a->path = o->path;
    expert_status st = o->path == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : EXPERT_OK;

    expert_section_info sec[L_N];
    int have[L_N] = {0};
    uint32_t count = expert_section_count(r);
    for (uint32_t i = 0; st == EXPERT_OK && i < count; i++) {
        expert_section_info s;
        if ((st = expert_section(r, i, &s)) != EXPERT_OK) {
            st = FAIL(st, "section %u unreadable", i);
            break;
        }
        int role = s.known_type ? role_of(s.type) : -1;
        if (role < 0 || s.module != module)
            continue;
        if (have[role]) /* the reader rejects this at open; be defensive */
            st = xp_set_error(err, EXPERT_E_BAD_TOC, s.offset, i, "module %u: two sections with one role",
                              module);
        have[role] = 1;
        sec[role] = s;
    }
    for (int role = 0; st == EXPERT_OK && role < L_N; role++)
        if (have[role])
            st = load_section(r, &sec[role], role, &o->buf[role], err);
    if (st != EXPERT_OK) {
        expert_adapter_free(a);
        return st;
    }

    const char *t = mi.type;
    if (strcmp(t, "lora") == 0 || strcmp(t, "dora") == 0) {
        a->kind = t[0] == 'd' ? EXPERT_ADAPTER_DORA : EXPERT_ADAPTER_LORA;
        if (!have[L_A] || !have[L_B] || (a->kind == EXPERT_ADAPTER_DORA && !have[L_M]))
            st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): missing LoRA/DoRA sections", module,
                      mi.path);
        else {
            a->r = sec[L_A].dims[0];
            a->in = sec[L_A].dims[1];
            a->out = sec[L_B].dims[0];
            a->A = o->buf[L_A];
            a->B = o->buf[L_B];
            a->magnitude = have[L_M] ? o->buf[L_M] : NULL;
            st = expert_lora_scale(mi.alpha, mi.r, mi.rslora, &a->scale, err);
            if (st == EXPERT_OK && (sec[L_B].dims[1] != a->r || mi.r != a->r ||
                                    (have[L_M] && numel_of(&sec[L_M]) != a->out)))
                st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): inconsistent shapes", module, mi.path);
        }
    } else if (strcmp(t, "ia3") == 0) {
        a->kind = EXPERT_ADAPTER_IA3;
        a->feedforward = mi.feedforward;
        if (!have[L_IA3])
            st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): missing IA3_VECTOR", module, mi.path);
        else {
            uint64_t len = numel_of(&sec[L_IA3]);
            a->l = o->buf[L_IA3];
            /* The vector gives one dimension; the other comes from the
             * metadata when present, else it stays 0 for the caller to set. */
            a->out = mi.feedforward ? mi.out_features : len;
            a->in = mi.feedforward ? len : mi.in_features;
        }
    } else if (strcmp(t, "osd") == 0) {
        a->kind = EXPERT_ADAPTER_OSD;
        if (!have[L_U] || !have[L_S] || !have[L_VT])
            st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): missing OSD_U/OSD_S/OSD_VT", module, mi.path);
        else {
            a->r = sec[L_U].dims[1];
            a->out = sec[L_U].dims[0];
            a->in = sec[L_VT].dims[1];
            a->U = o->buf[L_U];
            a->S = o->buf[L_S];
            a->Vt = o->buf[L_VT];
            if (have[L_IP] && have[L_IX] && have[L_V]) {
                a->sparse.rows = a->out;
                a->sparse.cols = a->in;
                a->sparse.nnz = numel_of(&sec[L_IX]);
                a->sparse.indptr = o->buf[L_IP];
                a->sparse.indices = o->buf[L_IX];
                a->sparse.values = o->buf[L_V];
                if (numel_of(&sec[L_IP]) != a->out + 1 || numel_of(&sec[L_V]) != a->sparse.nnz)
                    st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): CSR shapes", module, mi.path);
            } else if (have[L_IP] || have[L_IX] || have[L_V]) {
                st = FAIL(EXPERT_E_BAD_TOC, "module %u ('%s'): partial CSR", module, mi.path);
            }
        }
    } else {
        st = FAIL(EXPERT_E_BAD_METADATA, "module %u: unknown type '%s'", module, t);
    }
    if (st == EXPERT_OK && (a->kind != EXPERT_ADAPTER_IA3 || (a->in != 0 && a->out != 0)))
        st = expert_adapter_check(a, err);
    if (st != EXPERT_OK) {
        if (st == EXPERT_E_DECODE_FAILED && err != NULL && have[L_IP]) {
            err->section = sec[L_IP].index;
            err->offset = sec[L_IP].offset;
        }
        expert_adapter_free(a);
        return st;
    }
    *out = a;
    return EXPERT_OK;
}
