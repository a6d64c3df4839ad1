/* apply.c — adapters on the GPU: the unmerged forward pass (ΔW never formed)
 * and the merge into a base weight, with the formulas of expert_adapter.h.
 *
 * Row-major matrices are handed to column-major cuBLAS as their transposes:
 * C[n,p] = X[n,q]·M[p,q]ᵀ is Cᵀ = M·Xᵀ, i.e. gemm(T, N, p, n, q) on the raw
 * buffers. cuBLAS runs in plain FP32 (CUBLAS_PEDANTIC_MATH: no TF32 or
 * reduced-precision shortcuts), so the error bound is that of an FP32 dot
 * product of length N: |R − E| ≤ u·|E| + 2·N·u·T (u = 2^-24, T the sum of the
 * absolute products), which the device test asserts against the CPU core. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusparse.h>

#include "cuda_check.h"
#include "kernels.h"



static expert_status blas_error(expert_error *err, cublasStatus_t s, const char *what)
{
    return gpu_error(err, s == CUBLAS_STATUS_ALLOC_FAILED ? EXPERT_E_NOMEM : EXPERT_E_IO,
                     EXPERT_NO_SECTION, "cuBLAS %s: %s", what, cublasGetStatusString(s));
}

static expert_status sparse_error(expert_error *err, cusparseStatus_t s, const char *what)
{
    return gpu_error(err, s == CUSPARSE_STATUS_ALLOC_FAILED ? EXPERT_E_NOMEM : EXPERT_E_IO,
                     EXPERT_NO_SECTION, "cuSPARSE %s: %s", what, cusparseGetErrorString(s));
}

/* One cuBLAS and one cuSPARSE handle for the process, made on first use. */
static pthread_mutex_t g_handles_mu = PTHREAD_MUTEX_INITIALIZER;
static cublasHandle_t g_blas;
static cusparseHandle_t g_sparse;

static expert_status handles(cublasHandle_t *blas, cusparseHandle_t *sparse, expert_error *err)
{
    expert_status st = EXPERT_OK;
    pthread_mutex_lock(&g_handles_mu);
    if (g_blas == NULL) {
        cublasStatus_t s = cublasCreate(&g_blas);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetMathMode(g_blas, CUBLAS_PEDANTIC_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            if (g_blas != NULL)
                cublasDestroy(g_blas);
            g_blas = NULL;
            st = blas_error(err, s, "cublasCreate");
        }
    }
    if (st == EXPERT_OK && g_sparse == NULL) {
        cusparseStatus_t s = cusparseCreate(&g_sparse);
        if (s != CUSPARSE_STATUS_SUCCESS) {
            g_sparse = NULL;
            st = sparse_error(err, s, "cusparseCreate");
        }
    }
    *blas = g_blas;
    *sparse = g_sparse;
    pthread_mutex_unlock(&g_handles_mu);
    return st;
}

static int fits_int(uint64_t v) { return v <= (uint64_t)INT_MAX; }

/* C[n,p] = alpha·X[n,q]·M[p,q]ᵀ + beta·C. */
static expert_status gemm_xmt(cublasHandle_t h, uint64_t n, uint64_t p, uint64_t q, float alpha,
                              const float *X, const float *M, float beta, float *C,
                              expert_error *err)
{
    if (!fits_int(n) || !fits_int(p) || !fits_int(q))
        return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_SECTION,
                         "GEMM dimension above INT_MAX");
    if (n == 0 || p == 0)
        return EXPERT_OK;
    cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)p, (int)n, (int)q, &alpha, M,
                                   (int)q, X, (int)q, &beta, C, (int)p);
    return s == CUBLAS_STATUS_SUCCESS ? EXPERT_OK : blas_error(err, s, "cublasSgemm");
}

/* C[rows,cols] += alpha·X[rows,inner]·Y[inner,cols]. */
static expert_status gemm_add_xy(cublasHandle_t h, uint64_t rows, uint64_t cols, uint64_t inner,
                                 float alpha, const float *X, const float *Y, float *C,
                                 expert_error *err)
{
    if (!fits_int(rows) || !fits_int(cols) || !fits_int(inner))
        return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_SECTION,
                         "GEMM dimension above INT_MAX");
    if (rows == 0 || cols == 0 || inner == 0)
        return EXPERT_OK;
    const float one = 1.0f;
    cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)rows, (int)inner,
                                   &alpha, Y, (int)cols, X, (int)inner, &one, C, (int)cols);
    return s == CUBLAS_STATUS_SUCCESS ? EXPERT_OK : blas_error(err, s, "cublasSgemm");
}

/* ------------------------------------------------------------ upload */

struct expert_gpu_adapter {
    expert_adapter_kind kind;
    uint64_t out, in, r;
    double scale;
    int feedforward;
    float *A, *B, *magnitude, *l, *U, *S, *Vt, *values;
    int64_t *indptr, *indices;
    uint64_t nnz;
    double *dora_f;
};

void expert_gpu_adapter_free(expert_gpu_adapter *g)
{
    if (g == NULL)
        return;
    void *ptrs[] = {g->A, g->B, g->magnitude, g->l, g->U, g->S, g->Vt, g->values,
                    g->indptr, g->indices, g->dora_f};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        if (ptrs[i] != NULL)
            cudaFree(ptrs[i]);
    free(g);
}

static expert_status put(void **dst, const void *src, uint64_t count, size_t width,
                         expert_error *err)
{
    *dst = NULL;
    if (src == NULL || count == 0)
        return EXPERT_OK;
    if (count > SIZE_MAX / width)
        return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_SECTION, "tensor too large");
    CU(cudaMalloc(dst, (size_t)count * width), "cudaMalloc (adapter)");
    CU(cudaMemcpy(*dst, src, (size_t)count * width, cudaMemcpyHostToDevice), "cudaMemcpy (adapter)");
    return EXPERT_OK;
}

static expert_status upload_tensors(const expert_adapter *a, expert_gpu_adapter *g,
                                    expert_error *err)
{
    expert_status st = EXPERT_OK;
    uint64_t r = a->r, out = a->out, in = a->in;
    switch (a->kind) {
    case EXPERT_ADAPTER_DORA:
    case EXPERT_ADAPTER_LORA:
        if (a->kind == EXPERT_ADAPTER_DORA)
            st = put((void **)&g->magnitude, a->magnitude, out, sizeof(float), err);
        if (st == EXPERT_OK)
            st = put((void **)&g->A, a->A, r * in, sizeof(float), err);
        if (st == EXPERT_OK)
            st = put((void **)&g->B, a->B, out * r, sizeof(float), err);
        break;
    case EXPERT_ADAPTER_IA3:
        st = put((void **)&g->l, a->l, a->feedforward ? in : out, sizeof(float), err);
        break;
    case EXPERT_ADAPTER_OSD:
        st = put((void **)&g->U, a->U, out * r, sizeof(float), err);
        if (st == EXPERT_OK)
            st = put((void **)&g->S, a->S, r, sizeof(float), err);
        if (st == EXPERT_OK)
            st = put((void **)&g->Vt, a->Vt, r * in, sizeof(float), err);
        if (st == EXPERT_OK && a->sparse.nnz > 0) {
            g->nnz = a->sparse.nnz;
            st = put((void **)&g->indptr, a->sparse.indptr, out + 1, sizeof(int64_t), err);
            if (st == EXPERT_OK)
                st = put((void **)&g->indices, a->sparse.indices, g->nnz, sizeof(int64_t), err);
            if (st == EXPERT_OK)
                st = put((void **)&g->values, a->sparse.values, g->nnz, sizeof(float), err);
        }
        break;
    }
    return st;
}

expert_status expert_gpu_adapter_upload(const expert_adapter *a, const float *W_dev,
                                        expert_gpu_adapter **out, expert_error *err)
{
    if (out == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "output required");
    *out = NULL;
    expert_status st = expert_adapter_check(a, err);
    if (st != EXPERT_OK)
        return st;
    if (a->kind == EXPERT_ADAPTER_DORA && W_dev == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "DoRA needs the base weight on the device for its row factor");
    expert_gpu_adapter *g = calloc(1, sizeof *g);
    if (g == NULL)
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    g->kind = a->kind;
    g->out = a->out;
    g->in = a->in;
    g->r = a->r;
    g->scale = a->scale;
    g->feedforward = a->feedforward;
    st = upload_tensors(a, g, err);
    if (st == EXPERT_OK && a->kind == EXPERT_ADAPTER_DORA) {
        cudaError_t e = cudaMalloc((void **)&g->dora_f, (size_t)a->out * sizeof(double));
        if (e == cudaSuccess)
            e = (cudaError_t)xg_dora_factor(W_dev, g->A, g->B, g->magnitude, g->scale, g->out,
                                            g->in, g->r, g->dora_f, NULL);
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
        if (e != cudaSuccess)
            st = gpu_cuda_error(err, (int)e, "DoRA row factor");
    }
    if (st != EXPERT_OK) {
        expert_gpu_adapter_free(g);
        return st;
    }
    *out = g;
    return EXPERT_OK;
}

const double *expert_gpu_adapter_dora_factor(const expert_gpu_adapter *g)
{
    return g != NULL ? g->dora_f : NULL;
}

/* ----------------------------------------------------------- forward */

/* y[n,out] += x[n,in]·Spᵀ with cuSPARSE SpMM: in column-major terms
 * Yᵀ (out x n) += Sp (out x in) · Xᵀ (in x n). */
static expert_status spmm_add(cusparseHandle_t h, const expert_gpu_adapter *g, uint64_t n,
                              const float *x, float *y, expert_error *err)
{
    cusparseSpMatDescr_t sp = NULL;
    cusparseDnMatDescr_t X = NULL, Y = NULL;
    void *buf = NULL;
    size_t bufsz = 0;
    const float one = 1.0f;
    expert_status st = EXPERT_OK;
    cusparseStatus_t s = cusparseCreateCsr(&sp, (int64_t)g->out, (int64_t)g->in, (int64_t)g->nnz,
                                           g->indptr, g->indices, g->values, CUSPARSE_INDEX_64I,
                                           CUSPARSE_INDEX_64I, CUSPARSE_INDEX_BASE_ZERO,
                                           CUDA_R_32F);
    if (s == CUSPARSE_STATUS_SUCCESS)
        s = cusparseCreateDnMat(&X, (int64_t)g->in, (int64_t)n, (int64_t)g->in, (void *)x,
                                CUDA_R_32F, CUSPARSE_ORDER_COL);
    if (s == CUSPARSE_STATUS_SUCCESS)
        s = cusparseCreateDnMat(&Y, (int64_t)g->out, (int64_t)n, (int64_t)g->out, y, CUDA_R_32F,
                                CUSPARSE_ORDER_COL);
    if (s == CUSPARSE_STATUS_SUCCESS)
        s = cusparseSpMM_bufferSize(h, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                    CUSPARSE_OPERATION_NON_TRANSPOSE, &one, sp, X, &one, Y,
                                    CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, &bufsz);
    if (s != CUSPARSE_STATUS_SUCCESS) {
        st = sparse_error(err, s, "SpMM setup");
    } else {
        cudaError_t e = bufsz ? cudaMalloc(&buf, bufsz) : cudaSuccess;
        if (e != cudaSuccess) {
            st = gpu_cuda_error(err, (int)e, "cudaMalloc (SpMM workspace)");
        } else {
            s = cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE,
                             &one, sp, X, &one, Y, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, buf);
            if (s != CUSPARSE_STATUS_SUCCESS)
                st = sparse_error(err, s, "cusparseSpMM");
        }
    }
    if (buf != NULL) {
        cudaDeviceSynchronize();
        cudaFree(buf);
    }
    if (Y != NULL)
        cusparseDestroyDnMat(Y);
    if (X != NULL)
        cusparseDestroyDnMat(X);
    if (sp != NULL)
        cusparseDestroySpMat(sp);
    return st;
}

static expert_status forward_body(cublasHandle_t blas, cusparseHandle_t sparse,
                                  const expert_gpu_adapter *g, const float *W, const float *bias,
                                  uint64_t n, const float *x, float *y, float *work,
                                  expert_error *err)
{
    expert_status st;
    switch (g->kind) {
    case EXPERT_ADAPTER_LORA:
    case EXPERT_ADAPTER_DORA:
        st = gemm_xmt(blas, n, g->out, g->in, 1.0f, x, W, 0.0f, y, err);
        if (st == EXPERT_OK)
            st = gemm_xmt(blas, n, g->r, g->in, 1.0f, x, g->A, 0.0f, work, err);
        if (st == EXPERT_OK)
            st = gemm_xmt(blas, n, g->out, g->r, (float)g->scale, work, g->B, 1.0f, y, err);
        if (st == EXPERT_OK && (bias != NULL || g->dora_f != NULL))
            CU((cudaError_t)xg_rows_scale_add(y, n, g->out, g->dora_f, bias, NULL),
               "row scale kernel");
        return st;
    case EXPERT_ADAPTER_IA3:
        if (g->feedforward) {
            CU((cudaError_t)xg_cols_scale(work, x, n, g->in, g->l, NULL), "IA3 input scale");
            st = gemm_xmt(blas, n, g->out, g->in, 1.0f, work, W, 0.0f, y, err);
            if (st == EXPERT_OK && bias != NULL)
                CU((cudaError_t)xg_rows_scale_add(y, n, g->out, NULL, bias, NULL), "bias kernel");
            return st;
        }
        st = gemm_xmt(blas, n, g->out, g->in, 1.0f, x, W, 0.0f, y, err);
        if (st == EXPERT_OK)
            CU((cudaError_t)xg_rows_add_scale(y, n, g->out, bias, g->l, NULL), "IA3 output scale");
        return st;
    case EXPERT_ADAPTER_OSD:
        st = gemm_xmt(blas, n, g->out, g->in, 1.0f, x, W, 0.0f, y, err);
        if (st == EXPERT_OK)
            st = gemm_xmt(blas, n, g->r, g->in, 1.0f, x, g->Vt, 0.0f, work, err);
        if (st == EXPERT_OK)
            CU((cudaError_t)xg_cols_scale(work, work, n, g->r, g->S, NULL), "OSD singular values");
        if (st == EXPERT_OK)
            st = gemm_xmt(blas, n, g->out, g->r, 1.0f, work, g->U, 1.0f, y, err);
        if (st == EXPERT_OK && g->nnz > 0)
            st = spmm_add(sparse, g, n, x, y, err);
        if (st == EXPERT_OK && bias != NULL)
            CU((cudaError_t)xg_rows_scale_add(y, n, g->out, NULL, bias, NULL), "bias kernel");
        return st;
    }
    return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "unknown adapter kind");
}

expert_status expert_gpu_forward(const expert_gpu_adapter *g, const float *W_dev,
                                 const float *bias_dev, uint64_t n, const float *x_dev,
                                 float *y_dev, expert_error *err)
{
    if (g == NULL || W_dev == NULL || x_dev == NULL || y_dev == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "adapter, W, x and y are required");
    cublasHandle_t blas;
    cusparseHandle_t sparse;
    expert_status st = handles(&blas, &sparse, err);
    if (st != EXPERT_OK)
        return st;
    /* Workspace: x·Aᵀ or x·Vtᵀ [n, r], or IA³'s scaled input [n, in]. */
    uint64_t cols = g->kind == EXPERT_ADAPTER_IA3 ? (g->feedforward ? g->in : 0) : g->r;
    if (cols != 0 && n > SIZE_MAX / sizeof(float) / cols)
        return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_SECTION, "workspace too large");
    float *work = NULL;
    if (n * cols > 0)
        CU(cudaMalloc((void **)&work, (size_t)(n * cols) * sizeof(float)), "cudaMalloc (workspace)");
    st = forward_body(blas, sparse, g, W_dev, bias_dev, n, x_dev, y_dev, work, err);
    if (work != NULL) {
        cudaDeviceSynchronize();
        cudaFree(work);
    }
    return st;
}

/* ------------------------------------------------------------- merge */

expert_status expert_gpu_merge(const expert_gpu_adapter *g, float *W, float *bias,
                               expert_error *err)
{
    if (g == NULL || W == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "adapter and W are required");
    cublasHandle_t blas;
    cusparseHandle_t sparse;
    expert_status st = handles(&blas, &sparse, err);
    if (st != EXPERT_OK)
        return st;
    switch (g->kind) {
    case EXPERT_ADAPTER_LORA:
        return gemm_add_xy(blas, g->out, g->in, g->r, (float)g->scale, g->B, g->A, W, err);
    case EXPERT_ADAPTER_DORA:
        /* The row factor was computed at upload from the same base weight. */
        st = gemm_add_xy(blas, g->out, g->in, g->r, (float)g->scale, g->B, g->A, W, err);
        if (st == EXPERT_OK)
            CU((cudaError_t)xg_rows_scale(W, g->out, g->in, g->dora_f, NULL, NULL), "DoRA rows");
        return st;
    case EXPERT_ADAPTER_IA3:
        if (g->feedforward) {
            CU((cudaError_t)xg_cols_scale(W, W, g->out, g->in, g->l, NULL), "IA3 columns");
            return EXPERT_OK;
        }
        CU((cudaError_t)xg_rows_scale(W, g->out, g->in, NULL, g->l, NULL), "IA3 rows");
        if (bias != NULL)
            CU((cudaError_t)xg_rows_scale(bias, g->out, 1, NULL, g->l, NULL), "IA3 bias");
        return EXPERT_OK;
    case EXPERT_ADAPTER_OSD: {
        float *US = NULL;
        if (g->out * g->r > 0)
            CU(cudaMalloc((void **)&US, (size_t)(g->out * g->r) * sizeof(float)),
               "cudaMalloc (U·S)");
        cudaError_t e = (cudaError_t)xg_cols_scale(US, g->U, g->out, g->r, g->S, NULL);
        if (e != cudaSuccess)
            st = gpu_cuda_error(err, (int)e, "OSD U·S");
        if (st == EXPERT_OK)
            st = gemm_add_xy(blas, g->out, g->in, g->r, 1.0f, US, g->Vt, W, err);
        if (st == EXPERT_OK && g->nnz > 0) {
            e = (cudaError_t)xg_csr_add(W, g->out, g->in, g->indptr, g->indices, g->values, NULL);
            if (e != cudaSuccess)
                st = gpu_cuda_error(err, (int)e, "OSD sparse add");
        }
        if (US != NULL) {
            cudaDeviceSynchronize();
            cudaFree(US);
        }
        return st;
    }
    }
    return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "unknown adapter kind");
}

/* --------------------------------------------------------- SGEMM peak */

expert_status expert_gpu_sgemm_peak(uint64_t n, unsigned repeats, double *gflops,
                                    expert_error *err)
{
    if (gflops == NULL || n == 0 || n > 32768 || repeats == 0)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "SGEMM peak: 1 <= n <= 32768, repeats > 0");
    cublasHandle_t blas;
    cusparseHandle_t sparse;
    expert_status st = handles(&blas, &sparse, err);
    if (st != EXPERT_OK)
        return st;
    size_t bytes = (size_t)(n * n) * sizeof(float);
    float *a = NULL, *b = NULL, *c = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    cudaError_t e = cudaMalloc((void **)&a, bytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&b, bytes);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c, bytes);
    if (e == cudaSuccess)
        e = cudaMemset(a, 0, bytes);
    if (e == cudaSuccess)
        e = cudaMemset(b, 0, bytes);
    if (e == cudaSuccess)
        e = cudaEventCreate(&t0);
    if (e == cudaSuccess)
        e = cudaEventCreate(&t1);
    double best = 0.0;
    const float one = 1.0f, zero = 0.0f;
    for (unsigned i = 0; i <= repeats && e == cudaSuccess && st == EXPERT_OK; i++) {
        e = cudaEventRecord(t0, NULL);
        cublasStatus_t s = cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one,
                                       a, (int)n, b, (int)n, &zero, c, (int)n);
        if (s != CUBLAS_STATUS_SUCCESS)
            st = blas_error(err, s, "cublasSgemm");
        if (e == cudaSuccess)
            e = cudaEventRecord(t1, NULL);
        if (e == cudaSuccess)
            e = cudaEventSynchronize(t1);
        float ms = 0.0f;
        if (e == cudaSuccess)
            e = cudaEventElapsedTime(&ms, t0, t1);
        double g = ms > 0.0f ? 2.0 * (double)n * (double)n * (double)n / ((double)ms * 1e6) : 0.0;
        if (i > 0 && g > best) /* the first call warms cuBLAS up */
            best = g;
    }
    if (e != cudaSuccess && st == EXPERT_OK)
        st = gpu_cuda_error(err, (int)e, "SGEMM peak");
    if (t0 != NULL)
        cudaEventDestroy(t0);
    if (t1 != NULL)
        cudaEventDestroy(t1);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    *gflops = best;
    return st;
}
