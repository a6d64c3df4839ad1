/*
 * expert_quality.h — the compressor library (LAPACKE + OpenBLAS), kept out of
 * the core reader: truncated/randomized SVD with a deterministic sign
 * convention, the exact SVD of a LoRA product by thin QR, the two compression
 * arms of the A/B (dense truncated SVD and OSD: sparsified factors of a larger
 * rank) at a byte budget charged with the sizes the v2 writer produces, and
 * per-module error metrics between two experts.
 *
 * Conventions: those of expert.h (expert_status + expert_error, no printing,
 * no exits). Matrices are row-major; W is [out, in].
 *
 * Sign convention (every SVD this library returns): for each singular
 * triplet j, the entry of u_j with the largest |value| (the first such index
 * on ties) is made positive, and v_j flips with it. Singular values are in
 * non-increasing order. Results still differ in the last bits across BLAS
 * builds and thread counts: compare with tolerances.
 */
#ifndef EXPERT_QUALITY_H
#define EXPERT_QUALITY_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "expert_adapter.h"

#ifdef __cplusplus
extern "C" {
#endif

#define XQ_VERSION "2.0.0"

/* ------------------------------------------------------------ linear algebra */

typedef enum xq_svd_method {
    XQ_SVD_AUTO = 0,       /* randomized for large matrices (m·n >= 2^20 and k <= min(m, n)/4), else exact */
    XQ_SVD_EXACT = 1,      /* LAPACK sgesdd (divide and conquer), sgesvd if it fails */
    XQ_SVD_RANDOMIZED = 2  /* Halko, Martinsson, Tropp 2011: range finder + power iterations */
} xq_svd_method;

typedef struct xq_svd_opts {
    xq_svd_method method;
    unsigned oversample;  /* p, default 10 when 0 */
    unsigned power_iters; /* q, default 2 when 0; UINT32_MAX for none */
    uint64_t seed;        /* Gaussian test matrix (splitmix64 + Box-Muller) */
} xq_svd_opts;

/* Top-k SVD of a dense A [m, n]: U [m, k], S [k], Vt [k, n]; k <= min(m, n). */
expert_status xq_svd_dense(size_t m, size_t n, const float *A, size_t k, const xq_svd_opts *opt,
                           float *U, float *S, float *Vt, expert_error *err);

/* Exact SVD of s·L·R without forming it (L [m, r], R [r, n], r <= min(m, n)):
 * thin QR of L and of Rᵀ (binary64), SVD of the r×r core s·R_L·R_Rᵀ.
 * U [m, r], S [r], Vt [r, n]. Cost O((m + n)·r² + r³). */
expert_status xq_svd_lowrank(size_t m, size_t n, size_t r, const float *L, const float *R,
                             double s, float *U, float *S, float *Vt, expert_error *err);

/* Applies the sign convention to k triplets in place. */
void xq_sign_fix(size_t m, size_t n, size_t k, float *U, float *Vt);

/* Frobenius and spectral norm of L·R (L [m, K], R [K, n], binary64), exact
 * through QR + SVD of a K×K core (K <= min(m, n)). */
expert_status xq_lowrank_norms(size_t m, size_t n, size_t K, const double *L, const double *R,
                               double *fro, double *spec, expert_error *err);
/* Frobenius norm (exact, binary64 sum) and spectral norm (block power
 * iteration until the top value changes by < 1e-7 relative, at most 200
 * steps; *iters gets the count) of a dense D [m, n]. */
expert_status xq_dense_norms(size_t m, size_t n, const float *D, double *fro, double *spec,
                             unsigned *iters, expert_error *err);

/* ---------------------------------------------------------------- compress */

typedef enum xq_method { XQ_METHOD_SVD = 0, XQ_METHOD_OSD = 1 } xq_method;
typedef enum xq_score {
    XQ_SCORE_MAGNITUDE = 0, /* data-free |u_ij|·σ_j, |v_ij|·σ_j: reported as "osd-magnitude" */
    XQ_SCORE_GRADIENT = 1   /* first-order Taylor |g·θ| from a gradients file: "osd-gradient" */
} xq_score;

#define XQ_CODEC_AUTO 255u /* per section the smallest of raw, zstd, shuffle+zstd */

typedef struct xq_compress_opts {
    xq_method method;
    xq_score score;
    const char *grads_path;  /* safetensors with per-module gradients (XQ_SCORE_GRADIENT) */
    const char *base_path;   /* base safetensors: DoRA/IA³ modules compress their effective ΔW */
    uint64_t budget_bytes;   /* output file size cap; or 0 and budget_ratio */
    double budget_ratio;     /* budget = ratio × the input's adapter bytes (see xq_reference_size) */
    uint8_t codec;           /* XQ_CODEC_AUTO (default) or an expert_codec for every section */
    int zstd_level;          /* writer's zstd level (default 9) */
    uint32_t alignment;      /* 64 (default), 256, 4096 */
    xq_svd_opts svd;         /* for the dense route (effective ΔW of DoRA with --base, OSD inputs with Sp) */
    unsigned max_candidates; /* OSD: ranks k tried per module (default 6) */
    unsigned threads;        /* worker threads over modules (0: the CPU count, at most 16);
                              * OpenBLAS is set to one thread inside (restored on return),
                              * so the output does not depend on this */
} xq_compress_opts;

typedef struct xq_module_report {
    char *path;
    const char *src_type;  /* "lora", "dora", "ia3", "osd" */
    const char *out_type;  /* "lora", "dora", "osd", "ia3" (copied), "dropped" */
    uint64_t out, in;
    uint64_t src_rank;     /* r of the input (osd: k); 0 for ia3 */
    uint64_t svd_rank;     /* K: rank of the decomposition available */
    uint64_t rank;         /* written rank (r' or k) */
    uint64_t kept, total;  /* osd: kept entries of U and Vt of the written k, of (out + in)·k */
    uint64_t bytes;        /* stored bytes of its sections in the output (with alignment) */
    uint64_t target;       /* byte target the fit used */
    double rel_fro;        /* ‖ΔW − ΔŴ‖_F / ‖ΔW‖_F of the compressed part */
    double energy;         /* retained Σσ² of the written triplets / ‖ΔW‖²_F (svd arm) */
    int dense_route;       /* ΔW was materialised (DoRA/IA³ with base, OSD input with Sp) */
} xq_module_report;

typedef struct xq_report {
    const char *method;       /* "svd", "osd-magnitude", "osd-gradient" */
    uint64_t input_size, reference_size, budget, file_size, predicted_size;
    double seconds, seconds_decompose, seconds_fit, seconds_write;
    double rel_fro_all;       /* sqrt(Σ‖ΔW − ΔŴ‖²_F / Σ‖ΔW‖²_F) over compressed modules */
    size_t module_count;
    xq_module_report *modules;
    unsigned dropped_sections; /* non-adapter sections of the input not carried over */
} xq_report;

/* The reference size for a ratio budget: the input file length minus the
 * stored bytes of its non-adapter sections (FILE, SAFETENSORS_HEADER, TENSOR,
 * SOFT_PROMPT, unknown types), which the output does not carry. For an input
 * holding only adapter modules it is the file size. */
expert_status xq_reference_size(expert_reader *r, uint64_t *out, expert_error *err);

/* Compresses every lora/dora/osd module of `in` into `out` (written
 * atomically with the v2 writer) so that the whole output file is <= the
 * budget; IA³ modules are copied unchanged (charged to the budget). */
expert_status xq_compress(const char *in, const char *out, const xq_compress_opts *opt,
                          xq_report *rep, expert_error *err);
void xq_report_free(xq_report *rep);

/* -------------------------------------------------------------------- diff */

typedef struct xq_diff_row {
    char *path;
    const char *type_a, *type_b;
    uint64_t out, in;
    double norm_fro, norm_spec;      /* of ΔA */
    double diff_fro, diff_spec;      /* of ΔA − ΔB */
    double rel_fro, rel_spec;        /* diff / norm (NaN when ΔA = 0) */
    const char *note;                /* e.g. "dora: low-rank part only (no --base)" */
    unsigned spec_iters;             /* 0 when the spectral norm is exact (low-rank route) */
} xq_diff_row;

typedef struct xq_diff_result {
    size_t count;
    xq_diff_row *rows;
    size_t only_a, only_b;           /* modules present in one file only */
    double rel_fro_all;              /* sqrt(Σ diff_fro² / Σ norm_fro²) */
    double seconds;
} xq_diff_result;

/* Per-module relative Frobenius and spectral error of the effective weight
 * change of b against a (modules matched by path). With base_path, DoRA and
 * IA³ changes are the exact W' − W; without it DoRA is compared on its
 * low-rank part s·B·A and IA³ on l − 1 (as a diagonal), and the note says so. */
expert_status xq_diff(const char *a, const char *b, const char *base_path, xq_diff_result *res,
                      expert_error *err);
void xq_diff_free(xq_diff_result *res);

#ifdef __cplusplus
}
#endif
#endif /* EXPERT_QUALITY_H */
