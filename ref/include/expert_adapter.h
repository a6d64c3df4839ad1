/*
 * expert_adapter.h — adapter semantics (spec §10): CPU reference fusion.
 *
 * What a module of a .expert file means, computed on the CPU:
 *  (a) the dense weight change ΔW = W' − W or the merged weight W' (and the
 *      merged bias b' where IA³ scales it), given the base weight W [out, in];
 *  (b) the unmerged forward pass on activations without materialising ΔW:
 *      x·Aᵀ·Bᵀ·s for LoRA, the row factor of DoRA, x ⊙ l or y ⊙ l for IA³,
 *      ((x·Vtᵀ) ⊙ S)·Uᵀ plus a CSR mat-vec for OSD.
 *
 * Conventions (those of expert.h): W is [out, in], row-major; y = x·Wᵀ + b;
 * x is [n, in] and y is [n, out], row-major. Every function returns an
 * expert_status and fills `err` when not NULL; nothing prints or aborts.
 *
 * Arithmetic. Inputs and outputs are IEEE binary32. Every output element is
 * computed in binary64 from the binary32 inputs (the products, the r-term
 * sums of B·A, DoRA's row sums of squares, the dot products of the forward
 * pass; intermediate results such as x·Aᵀ stay in binary64) and rounded to
 * binary32 once, round-to-nearest-even. Per element, with u = 2^-24 (binary32
 * unit roundoff), γ = (N + 8)·2^-53 where N is the length of the longest sum
 * involved (r or k, plus `in` for DoRA's norm and for the forward pass, plus
 * the row's nnz for OSD), the result R and the exact value E of the spec
 * formula evaluated on the same binary32 inputs satisfy
 *
 *   LoRA, OSD merge/delta:  |R − E| ≤ u·|E| + γ·M
 *        M = |W| + s·Σ_k |B[o,k]|·|A[k,i]|   (OSD: |W| + Σ_j |U[o,j]·S[j]·Vt[j,i]| + |Sp[o,i]|)
 *   DoRA merge/delta:       |R − E| ≤ u·|E| + γ·(|E| + f·M),  f = m[o] / ‖W + ΔW‖_row
 *   IA³ merge:              R = E rounded once (exact binary64 product): ≤ 0.5 ulp
 *   forward (all kinds):    |R − E| ≤ u·|E| + γ·T, T = the sum of the absolute
 *                           values of all products that make the element
 *   delta (W' − W):         the same bounds with E = W' − W
 *
 * i.e. the binary32 rounding of the exact result (0.5 ulp) plus a binary64
 * accumulation term ~2^-29·N relative to the absolute sum. The unit tests
 * (ref/tests/test_fusion.c) assert these bounds element by element against
 * a long double evaluation of the spec formulas.
 *
 * Spec §10.4 edge: when a row of W + ΔW is all zero, PEFT divides by zero
 * (0 · inf = NaN); this library writes a zero row instead and says so here.
 */
#ifndef EXPERT_ADAPTER_H
#define EXPERT_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------- adapters */

typedef enum expert_adapter_kind {
    EXPERT_ADAPTER_LORA = 0, /* ΔW = s·B·A                                  (§10.3) */
    EXPERT_ADAPTER_DORA = 1, /* W' = diag(m / ‖W + s·B·A‖_row)·(W + s·B·A)   (§10.4) */
    EXPERT_ADAPTER_IA3 = 2,  /* rows (and bias) or columns scaled by l       (§10.5) */
    EXPERT_ADAPTER_OSD = 3   /* ΔW = U·diag(S)·Vt + Sp                      (§10.6) */
} expert_adapter_kind;

/* The sparse part Sp [rows, cols] of an OSD module in CSR form. nnz = 0 with
 * NULL arrays means Sp = 0. Validity rules are spec §10.6: indptr[0] = 0,
 * non-decreasing, indptr[rows] = nnz; 0 <= indices[j] < cols; strictly
 * increasing column indices within a row. Violations: EXPERT_E_DECODE_FAILED. */
typedef struct expert_csr {
    uint64_t rows, cols, nnz;
    const int64_t *indptr;   /* rows + 1 */
    const int64_t *indices;  /* nnz */
    const float *values;     /* nnz */
} expert_csr;

/* One module in memory: binary32 tensors, row-major. The pointers are
 * borrowed (for a module from expert_adapter_load they point into the
 * adapter's own storage). */
typedef struct expert_adapter {
    expert_adapter_kind kind;
    uint64_t out, in;       /* W is [out, in] */
    uint64_t r;             /* lora/dora: rank r; osd: k; ia3: 0 */
    double scale;           /* lora/dora: alpha/r or alpha/sqrt(r) (rsLoRA); others 1 */
    const float *A;         /* lora/dora: [r, in] */
    const float *B;         /* lora/dora: [out, r] */
    const float *magnitude; /* dora: [out] */
    const float *l;         /* ia3: [out] (feedforward 0) or [in] (feedforward 1) */
    int feedforward;        /* ia3 */
    const float *U;         /* osd: [out, k] */
    const float *S;         /* osd: [k] */
    const float *Vt;        /* osd: [k, in] */
    expert_csr sparse;      /* osd: Sp (rows = out, cols = in), may be empty */
    /* Set by expert_adapter_load: the module index and path (owned). */
    uint32_t module;
    const char *path;
} expert_adapter;

/* The scale of spec §6.5: alpha/r, or alpha/sqrt(r) when rslora. r = 0 is
 * INVALID_ARGUMENT. */
EXPERT_API expert_status expert_lora_scale(double alpha, uint64_t r, int rslora, double *out,
                                expert_error *err);

/* Checks the shapes and pointers of `a` for its kind, and the CSR rules of
 * spec §10.6 (DECODE_FAILED). Every function below calls it first. */
EXPERT_API expert_status expert_adapter_check(const expert_adapter *a, expert_error *err);

/* Decodes module `module` of an open reader: reads its sections (verifying
 * their SHA-256 on first access), converts every float dtype to binary32
 * (F16/BF16 exactly, F64 rounded to nearest even), CSR indices (I32 or I64)
 * to int64 and checks them (DECODE_FAILED). *out is freed with
 * expert_adapter_free. For an ia3 module the dimension its vector does not
 * give (in for feedforward false, out for true) comes from the metadata's
 * in_features / out_features; when the metadata lacks it, it is left 0 and
 * the caller sets it (from the base weight's shape) before using *out. */
EXPERT_API expert_status expert_adapter_load(expert_reader *r, uint32_t module, expert_adapter **out,
                                  expert_error *err);
EXPERT_API void expert_adapter_free(expert_adapter *a);

/* ------------------------------------------------- (a) dense fusion */

/* W [out, in] is replaced by W' in place. bias [out] (may be NULL) is
 * replaced by b', which differs from b only for IA³ with feedforward 0.
 * W is required for every kind. */
EXPERT_API expert_status expert_adapter_merge(const expert_adapter *a, float *W, float *bias,
                                   expert_error *err);

/* delta [out, in] = W' − W, computed in binary64 and rounded once. W is
 * needed for DoRA and IA³ (the change depends on it) and ignored (may be
 * NULL) for LoRA and OSD. */
EXPERT_API expert_status expert_adapter_delta(const expert_adapter *a, const float *W, float *delta,
                                   expert_error *err);

/* DoRA row factor f[o] = m[o] / ‖W[o,:] + ΔW[o,:]‖ (0 for an all-zero row),
 * in binary64, computed row by row without materialising ΔW (memory O(in)). */
EXPERT_API expert_status expert_dora_row_scale(const expert_adapter *a, const float *W, double *f,
                                    expert_error *err);

/* ----------------------------------- (b) activations, ΔW never formed */

/* y [n, out] += s · (x·Aᵀ)·Bᵀ, for LoRA or the low-rank part of DoRA. */
EXPERT_API expert_status expert_lora_apply(const expert_adapter *a, uint64_t n, const float *x, float *y,
                                expert_error *err);
/* y [n, out] += ((x·Vtᵀ) ⊙ S)·Uᵀ + x·Spᵀ. */
EXPERT_API expert_status expert_osd_apply(const expert_adapter *a, uint64_t n, const float *x, float *y,
                               expert_error *err);
/* y [n, rows] += x [n, cols] · Spᵀ: the CSR mat-vec (validated first). */
EXPERT_API expert_status expert_csr_apply(const expert_csr *sp, uint64_t n, const float *x, float *y,
                               expert_error *err);

/* The whole unmerged forward pass of a linear layer with the adapter:
 * y [n, out] = layer'(x), i.e. what x·W'ᵀ + b' gives, computed as the
 * training framework runs it unmerged (PEFT):
 *   lora  y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ
 *   dora  y = f ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b      f = m / ‖W + s·B·A‖_row (detached)
 *   ia3   y = (x·Wᵀ + b) ⊙ l  (feedforward 0)    y = (x ⊙ l)·Wᵀ + b  (feedforward 1)
 *   osd   y = x·Wᵀ + b + ((x·Vtᵀ) ⊙ S)·Uᵀ + x·Spᵀ
 * bias may be NULL (b = 0). dora_f may be NULL, else the row factor from
 * expert_dora_row_scale (saves recomputing it per call). */
EXPERT_API expert_status expert_adapter_forward(const expert_adapter *a, const float *W, const float *bias,
                                     const double *dora_f, uint64_t n, const float *x, float *y,
                                     expert_error *err);

/* ---------------------------------------------- float conversions */

/* dtype F32, F16, BF16 or F64 -> binary32. F16/BF16 are exact; F64 is
 * rounded to nearest even. Little-endian source bytes, any alignment. */
EXPERT_API expert_status expert_floats_decode(uint32_t dtype, const void *src, size_t count, float *dst,
                                   expert_error *err);
/* binary32 -> dtype F32, F16, BF16 or F64, round-to-nearest-even; NaN stays
 * NaN (quiet), values beyond the target range become ±inf. */
EXPERT_API expert_status expert_floats_encode(uint32_t dtype, const float *src, size_t count, void *dst,
                                   expert_error *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPERT_ADAPTER_H */
