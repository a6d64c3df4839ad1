// kernels.cu — the few elementwise and per-row kernels the GPU path needs;
// everything dense goes through cuBLAS and the sparse product through
// cuSPARSE. Grid-stride loops with 64-bit indices, so any size is covered.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "expert.h"
#include "kernels.h"

namespace {

constexpr unsigned kThreads = 256;

unsigned blocks_for(uint64_t count)
{
    uint64_t b = (count + kThreads - 1) / kThreads;
    if (b == 0)
        b = 1;
    return b > 65535u * 16u ? 65535u * 16u : static_cast<unsigned>(b);
}

__device__ float load_float(const void *src, uint32_t dtype, uint64_t i)
{
    switch (dtype) {
    case EXPERT_DTYPE_F16: return __half2float(static_cast<const __half *>(src)[i]);
    case EXPERT_DTYPE_BF16: return __bfloat162float(static_cast<const __nv_bfloat16 *>(src)[i]);
    case EXPERT_DTYPE_F64: return __double2float_rn(static_cast<const double *>(src)[i]);
    default: return static_cast<const float *>(src)[i];
    }
}

// F64 -> F16/BF16 goes through one rounding (to the target), not two.
__global__ void convert_kernel(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype,
                               uint64_t count)
{
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < count;
         i += (uint64_t)gridDim.x * blockDim.x) {
        if (src_dtype == EXPERT_DTYPE_F64 && dst_dtype != EXPERT_DTYPE_F32) {
            double v = static_cast<const double *>(src)[i];
            if (dst_dtype == EXPERT_DTYPE_F16)
                static_cast<__half *>(dst)[i] = __double2half(v);
            else
                static_cast<__nv_bfloat16 *>(dst)[i] = __double2bfloat16(v);
            continue;
        }
        float v = load_float(src, src_dtype, i);
        switch (dst_dtype) {
        case EXPERT_DTYPE_F16: static_cast<__half *>(dst)[i] = __float2half_rn(v); break;
        case EXPERT_DTYPE_BF16: static_cast<__nv_bfloat16 *>(dst)[i] = __float2bfloat16_rn(v); break;
        default: static_cast<float *>(dst)[i] = v; break;
        }
    }
}

// One block per row o; B[o,:] sits in shared memory; each thread walks
// columns i, forms W[o,i] + s·Σ_k B[o,k]·A[k,i] in binary64 and sums its
// square; a block reduction in binary64 gives the row norm.
__global__ void dora_factor_kernel(const float *W, const float *A, const float *B, const float *m,
                                   double s, uint64_t out, uint64_t in, uint64_t r, double *f)
{
    extern __shared__ unsigned char shared_raw[];
    double *partial = reinterpret_cast<double *>(shared_raw);
    float *brow = reinterpret_cast<float *>(partial + kThreads);
    for (uint64_t o = blockIdx.x; o < out; o += gridDim.x) {
        for (uint64_t k = threadIdx.x; k < r; k += blockDim.x)
            brow[k] = B[o * r + k];
        __syncthreads();
        double acc = 0.0;
        for (uint64_t i = threadIdx.x; i < in; i += blockDim.x) {
            double d = 0.0;
            for (uint64_t k = 0; k < r; k++)
                d += (double)brow[k] * (double)A[k * in + i];
            double v = (double)W[o * in + i] + s * d;
            acc += v * v;
        }
        partial[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
            if (threadIdx.x < stride)
                partial[threadIdx.x] += partial[threadIdx.x + stride];
            __syncthreads();
        }
        if (threadIdx.x == 0)
            f[o] = partial[0] > 0.0 ? (double)m[o] / sqrt(partial[0]) : 0.0;
        __syncthreads();
    }
}

__global__ void rows_scale_add_kernel(float *y, uint64_t n, uint64_t out, const double *scale,
                                      const float *b)
{
    uint64_t total = n * out;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t o = i % out;
        double v = (double)y[i];
        if (scale != nullptr)
            v *= scale[o];
        if (b != nullptr)
            v += (double)b[o];
        y[i] = (float)v;
    }
}

__global__ void rows_add_scale_kernel(float *y, uint64_t n, uint64_t out, const float *b,
                                      const float *l)
{
    uint64_t total = n * out;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t o = i % out;
        double v = (double)y[i] + (b != nullptr ? (double)b[o] : 0.0);
        y[i] = (float)(v * (double)l[o]);
    }
}

__global__ void cols_scale_kernel(float *dst, const float *src, uint64_t rows, uint64_t cols,
                                  const float *s)
{
    uint64_t total = rows * cols;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x)
        dst[i] = __fmul_rn(src[i], s[i % cols]);
}

__global__ void rows_scale_kernel(float *W, uint64_t rows, uint64_t cols, const double *f64,
                                  const float *f32)
{
    uint64_t total = rows * cols;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t o = i / cols;
        double f = f64 != nullptr ? f64[o] : (double)f32[o];
        W[i] = (float)((double)W[i] * f);
    }
}

__global__ void csr_add_kernel(float *W, uint64_t rows, uint64_t cols, const int64_t *indptr,
                               const int64_t *indices, const float *values)
{
    for (uint64_t o = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; o < rows;
         o += (uint64_t)gridDim.x * blockDim.x)
        for (int64_t j = indptr[o]; j < indptr[o + 1]; j++)
            W[o * cols + (uint64_t)indices[j]] += values[j];
}

int launched() { return static_cast<int>(cudaGetLastError()); }

cudaStream_t as_stream(void *s) { return static_cast<cudaStream_t>(s); }

} // namespace

extern "C" int xg_convert(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype,
                          uint64_t count, void *stream)
{
    if (count == 0)
        return 0;
    convert_kernel<<<blocks_for(count), kThreads, 0, as_stream(stream)>>>(dst, dst_dtype, src,
                                                                         src_dtype, count);
    return launched();
}

extern "C" int xg_dora_factor(const float *W, const float *A, const float *B, const float *m,
                              double s, uint64_t out, uint64_t in, uint64_t r, double *f,
                              void *stream)
{
    if (out == 0)
        return 0;
    size_t shared = kThreads * sizeof(double) + r * sizeof(float);
    unsigned blocks = out > 65535u * 16u ? 65535u * 16u : static_cast<unsigned>(out);
    dora_factor_kernel<<<blocks, kThreads, shared, as_stream(stream)>>>(W, A, B, m, s, out, in, r,
                                                                       f);
    return launched();
}

extern "C" int xg_rows_scale_add(float *y, uint64_t n, uint64_t out, const double *scale,
                                 const float *b, void *stream)
{
    if (n * out == 0)
        return 0;
    rows_scale_add_kernel<<<blocks_for(n * out), kThreads, 0, as_stream(stream)>>>(y, n, out,
                                                                                 scale, b);
    return launched();
}

extern "C" int xg_rows_add_scale(float *y, uint64_t n, uint64_t out, const float *b,
                                 const float *l, void *stream)
{
    if (n * out == 0)
        return 0;
    rows_add_scale_kernel<<<blocks_for(n * out), kThreads, 0, as_stream(stream)>>>(y, n, out, b,
                                                                                 l);
    return launched();
}

extern "C" int xg_cols_scale(float *dst, const float *src, uint64_t rows, uint64_t cols,
                             const float *s, void *stream)
{
    if (rows * cols == 0)
        return 0;
    cols_scale_kernel<<<blocks_for(rows * cols), kThreads, 0, as_stream(stream)>>>(dst, src, rows,
                                                                                 cols, s);
    return launched();
}

extern "C" int xg_rows_scale(float *W, uint64_t rows, uint64_t cols, const double *f64,
                             const float *f32, void *stream)
{
    if (rows * cols == 0)
        return 0;
    rows_scale_kernel<<<blocks_for(rows * cols), kThreads, 0, as_stream(stream)>>>(W, rows, cols,
                                                                                 f64, f32);
    return launched();
}

extern "C" int xg_csr_add(float *W, uint64_t rows, uint64_t cols, const int64_t *indptr,
                          const int64_t *indices, const float *values, void *stream)
{
    if (rows == 0)
        return 0;
    csr_add_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(W, rows, cols, indptr,
                                                                       indices, values);
    return launched();
}
