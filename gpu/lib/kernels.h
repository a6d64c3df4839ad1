/* kernels.h — the CUDA kernels, launched on a stream; each launcher returns
 * the launch's cudaError_t (as int, so C callers need no CUDA headers here).
 * Row-major conventions of expert_adapter.h: W [rows, cols], y [n, out]. */
#ifndef EXPERT_GPU_KERNELS_H
#define EXPERT_GPU_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = src[i] converted: src F32/F16/BF16/F64 -> dst F32/F16/BF16, round to nearest even. */
int xg_convert(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype,
               uint64_t count, void *stream);
/* f[o] = m[o] / ||W[o,:] + s·(B·A)[o,:]|| in binary64 (0 for a zero row); ΔW is
 * never stored: each block forms one row's terms on the fly. */
int xg_dora_factor(const float *W, const float *A, const float *B, const float *m, double s,
                   uint64_t out, uint64_t in, uint64_t r, double *f, void *stream);
/* y[i,o] = scale[o]·y[i,o] + b[o] (scale NULL: 1; b NULL: 0), scale in binary64. */
int xg_rows_scale_add(float *y, uint64_t n, uint64_t out, const double *scale, const float *b,
                      void *stream);
/* y[i,o] = (y[i,o] + b[o])·l[o] (b may be NULL). */
int xg_rows_add_scale(float *y, uint64_t n, uint64_t out, const float *b, const float *l,
                      void *stream);
/* dst[i,j] = src[i,j]·s[j] for a [rows, cols] matrix (dst may equal src). */
int xg_cols_scale(float *dst, const float *src, uint64_t rows, uint64_t cols, const float *s,
                  void *stream);
/* W[o,:] *= f[o] (binary64 product, rounded once); f64 or f32 factors. */
int xg_rows_scale(float *W, uint64_t rows, uint64_t cols, const double *f64, const float *f32,
                  void *stream);
/* W[o, indices[j]] += values[j] for the CSR rows. */
int xg_csr_add(float *W, uint64_t rows, uint64_t cols, const int64_t *indptr,
               const int64_t *indices, const float *values, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* EXPERT_GPU_KERNELS_H */
