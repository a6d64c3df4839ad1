/* linalg.c — SVDs and norms for the compressor (LAPACKE + CBLAS).
 *
 * Row-major matrices are handed to column-major LAPACK as their transposes,
 * which avoids LAPACKE's row-major copies: a row-major A [m, n] is the
 * column-major Aᵀ [n, m]; the column-major SVD Aᵀ = V·S·Uᵀ then returns, in
 * memory, exactly the row-major Vt [k, n] and U [m, k]. */
#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qinternal.h"

#define FAIL(code, ...) xq_fail(err, (code), __VA_ARGS__)

static int li_ok(size_t v)
{
    return v <= (size_t)INT_MAX;
}

void xq_sign_fix(size_t m, size_t n, size_t k, float *U, float *Vt)
{
    for (size_t j = 0; j < k; j++) {
        size_t best = 0;
        float bv = -1.0f;
        for (size_t i = 0; i < m; i++) {
            float a = fabsf(U[i * k + j]);
            if (a > bv) {
                bv = a;
                best = i;
            }
        }
        if (m > 0 && U[best * k + j] < 0.0f) {
            for (size_t i = 0; i < m; i++)
                U[i * k + j] = -U[i * k + j];
            for (size_t i = 0; i < n; i++)
                Vt[j * n + i] = -Vt[j * n + i];
        }
    }
}

/* Full thin SVD of row-major A [m, n] (destroyed), mn = min(m, n):
 * U [m, mn], S [mn], Vt [mn, n]. */
static expert_status svd_full(size_t m, size_t n, float *A, float *U, float *S, float *Vt,
                              expert_error *err)
{
    size_t mn = m < n ? m : n;
    if (!li_ok(m) || !li_ok(n) || !li_ok(m * n))
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "matrix too large for LAPACK");
    float *copy = xq_malloc(m * n * sizeof *copy);
    if (copy == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    memcpy(copy, A, m * n * sizeof *copy);
    /* column-major Aᵀ [n, m]: "U" = Vt (row-major [mn, n]), "VT" = U (row-major [m, mn]) */
    lapack_int info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, A,
                                     (lapack_int)n, S, Vt, (lapack_int)n, U, (lapack_int)mn);
    if (info > 0) { /* no convergence: the robust (slower) QR iteration */
        memcpy(A, copy, m * n * sizeof *copy);
        float *superb = xq_malloc((mn ? mn : 1) * sizeof *superb);
        info = superb == NULL ? -1000
                              : LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)n,
                                               (lapack_int)m, A, (lapack_int)n, S, Vt,
                                               (lapack_int)n, U, (lapack_int)mn, superb);
        xq_free(superb);
    }
    xq_free(copy);
    if (info != 0)
        return FAIL(info == -1000 ? EXPERT_E_NOMEM : EXPERT_E_DECODE_FAILED,
                    "SVD failed (LAPACK info %d)", (int)info);
    return EXPERT_OK;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void gaussian(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed ^ 0x5851f42d4c957f2dULL;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(splitmix(&s) >> 11) + 1.0) * 0x1p-53; /* (0, 1] */
        double u2 = (double)(splitmix(&s) >> 11) * 0x1p-53;
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        x[i] = (float)(rad * cos(th));
        if (i + 1 < n)
            x[i + 1] = (float)(rad * sin(th));
    }
}

/* Orthonormalises the columns of row-major Y [m, l] in place (thin QR). */
static expert_status orth(size_t m, size_t l, float *Y, float *tau, expert_error *err)
{
    lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, Y,
                                     (lapack_int)l, tau);
    if (info == 0)
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, (lapack_int)l, Y,
                              (lapack_int)l, tau);
    return info == 0 ? EXPERT_OK : FAIL(EXPERT_E_DECODE_FAILED, "QR failed (LAPACK info %d)", (int)info);
}

static expert_status svd_randomized(size_t m, size_t n, const float *A, size_t k,
                                    const xq_svd_opts *o, float *U, float *S, float *Vt,
                                    expert_error *err)
{
    size_t mn = m < n ? m : n;
    size_t p = o->oversample ? o->oversample : 10;
    unsigned q = o->power_iters == UINT32_MAX ? 0u : o->power_iters ? o->power_iters : 2u;
    size_t l = k + p < mn ? k + p : mn;
    float *Om = xq_malloc(n * l * sizeof *Om), *Y = xq_malloc(m * l * sizeof *Y);
    float *Z = xq_malloc(n * l * sizeof *Z), *Bm = xq_malloc(l * n * sizeof *Bm);
    float *tau = xq_malloc(l * sizeof *tau), *Ub = xq_malloc(l * l * sizeof *Ub);
    float *Sb = xq_malloc(l * sizeof *Sb), *Vb = xq_malloc(l * n * sizeof *Vb);
    float *Uf = xq_malloc(m * l * sizeof *Uf);
    expert_status st = EXPERT_OK;
    if (!Om || !Y || !Z || !Bm || !tau || !Ub || !Sb || !Vb || !Uf) {
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    int M = (int)m, N = (int)n, L = (int)l;
    gaussian(Om, n * l, o->seed);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, A, N, Om, L, 0.0f, Y, L);
    if ((st = orth(m, l, Y, tau, err)) != EXPERT_OK)
        goto done;
    for (unsigned it = 0; it < q; it++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, L, M, 1.0f, A, N, Y, L, 0.0f, Z, L);
        if ((st = orth(n, l, Z, tau, err)) != EXPERT_OK)
            goto done;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, A, N, Z, L, 0.0f, Y, L);
        if ((st = orth(m, l, Y, tau, err)) != EXPERT_OK)
            goto done;
    }
    /* B = Qᵀ·A [l, n]; SVD(B) = Ub·Sb·Vb; U = Q·Ub */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, N, M, 1.0f, Y, L, A, N, 0.0f, Bm, N);
    if ((st = svd_full(l, n, Bm, Ub, Sb, Vb, err)) != EXPERT_OK)
        goto done;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, L, 1.0f, Y, L, Ub, L, 0.0f, Uf, L);
    for (size_t i = 0; i < m; i++)
        memcpy(U + i * k, Uf + i * l, k * sizeof *U);
    memcpy(S, Sb, k * sizeof *S);
    memcpy(Vt, Vb, k * n * sizeof *Vt);
done:
    xq_free(Om);
    xq_free(Y);
    xq_free(Z);
    xq_free(Bm);
    xq_free(tau);
    xq_free(Ub);
    xq_free(Sb);
    xq_free(Vb);
    xq_free(Uf);
    return st;
}

expert_status xq_svd_dense(size_t m, size_t n, const float *A, size_t k, const xq_svd_opts *opt,
                           float *U, float *S, float *Vt, expert_error *err)
{
    size_t mn = m < n ? m : n;
    xq_svd_opts o = {0};
    if (opt != NULL)
        o = *opt;
    if (A == NULL || U == NULL || S == NULL || Vt == NULL || m == 0 || n == 0 || k == 0 || k > mn)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "svd: bad arguments (m %zu, n %zu, k %zu)", m, n, k);
    if (!li_ok(m * n) || !li_ok(m) || !li_ok(n))
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "matrix too large for LAPACK");
    expert_status st;
    int randomized = o.method == XQ_SVD_RANDOMIZED ||
                     (o.method == XQ_SVD_AUTO && m * n >= ((size_t)1 << 20) && 4 * k <= mn);
    if (randomized && k + 1 < mn) {
        st = svd_randomized(m, n, A, k, &o, U, S, Vt, err);
    } else {
        float *a = xq_malloc(m * n * sizeof *a), *Uf = xq_malloc(m * mn * sizeof *Uf);
        float *Sf = xq_malloc(mn * sizeof *Sf), *Vf = xq_malloc(mn * n * sizeof *Vf);
        if (!a || !Uf || !Sf || !Vf) {
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        } else {
            memcpy(a, A, m * n * sizeof *a);
            st = svd_full(m, n, a, Uf, Sf, Vf, err);
            if (st == EXPERT_OK) {
                for (size_t i = 0; i < m; i++)
                    memcpy(U + i * k, Uf + i * mn, k * sizeof *U);
                memcpy(S, Sf, k * sizeof *S);
                memcpy(Vt, Vf, k * n * sizeof *Vt);
            }
        }
        xq_free(a);
        xq_free(Uf);
        xq_free(Sf);
        xq_free(Vf);
    }
    if (st == EXPERT_OK)
        xq_sign_fix(m, n, k, U, Vt);
    return st;
}

/* Thin QR of column-major X [rows, r] (rows >= r) in place: X becomes Q, R
 * (r×r, column-major, upper) is written to Rout. */
static expert_status dqr(size_t rows, size_t r, double *X, double *Rout, expert_error *err)
{
    double *tau = xq_malloc(r * sizeof *tau);
    if (tau == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)r, X,
                                     (lapack_int)rows, tau);
    if (info == 0) {
        for (size_t j = 0; j < r; j++)
            for (size_t i = 0; i < r; i++)
                Rout[i + j * r] = i <= j ? X[i + j * rows] : 0.0;
        info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)r, (lapack_int)r, X,
                              (lapack_int)rows, tau);
    }
    xq_free(tau);
    return info == 0 ? EXPERT_OK : FAIL(EXPERT_E_DECODE_FAILED, "QR failed (LAPACK info %d)", (int)info);
}

/* Core of the low-rank routes: Lc [m, K] and Rc [n, K] column-major binary64
 * (Rc holds Rᵀ), destroyed (they become Q_L, Q_R). Computes the SVD of the
 * K×K core M = R_L·R_Rᵀ: singular values sv (K), and when Uo/Vo are given,
 * Uo = Q_L·Um (column-major [m, K]) and Vo = Q_R·Vm (column-major [n, K]). */
static expert_status lowrank_core(size_t m, size_t n, size_t K, double *Lc, double *Rc, double *sv,
                                  double *Uo, double *Vo, expert_error *err)
{
    double *RL = xq_malloc(K * K * sizeof *RL), *RR = xq_malloc(K * K * sizeof *RR);
    double *M = xq_malloc(K * K * sizeof *M), *Um = xq_malloc(K * K * sizeof *Um);
    double *VmT = xq_malloc(K * K * sizeof *VmT);
    expert_status st = EXPERT_OK;
    if (!RL || !RR || !M || !Um || !VmT) {
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = dqr(m, K, Lc, RL, err)) != EXPERT_OK || (st = dqr(n, K, Rc, RR, err)) != EXPERT_OK)
        goto done;
    int k = (int)K;
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, k, k, k, 1.0, RL, k, RR, k, 0.0, M, k);
    lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, Uo ? 'A' : 'N', k, k, M, k, sv, Um, k, VmT, k);
    if (info != 0) {
        st = FAIL(EXPERT_E_DECODE_FAILED, "SVD of the core failed (LAPACK info %d)", (int)info);
        goto done;
    }
    if (Uo != NULL) {
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)m, k, k, 1.0, Lc, (int)m, Um, k,
                    0.0, Uo, (int)m);
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)n, k, k, 1.0, Rc, (int)n, VmT, k,
                    0.0, Vo, (int)n);
    }
done:
    xq_free(RL);
    xq_free(RR);
    xq_free(M);
    xq_free(Um);
    xq_free(VmT);
    return st;
}

expert_status xq_svd_lowrank(size_t m, size_t n, size_t r, const float *L, const float *R,
                             double s, float *U, float *S, float *Vt, expert_error *err)
{
    if (L == NULL || R == NULL || U == NULL || S == NULL || Vt == NULL || r == 0 || r > m || r > n)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "lowrank svd: need 1 <= r <= min(m, n)");
    if (!li_ok(m * r) || !li_ok(n * r))
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "matrix too large for LAPACK");
    double *Lc = xq_malloc(m * r * sizeof *Lc), *Rc = xq_malloc(n * r * sizeof *Rc);
    double *sv = xq_malloc(r * sizeof *sv), *Uo = xq_malloc(m * r * sizeof *Uo);
    double *Vo = xq_malloc(n * r * sizeof *Vo);
    expert_status st = EXPERT_OK;
    if (!Lc || !Rc || !sv || !Uo || !Vo) {
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < r; j++)
            Lc[i + j * m] = s * (double)L[i * r + j];
    for (size_t j = 0; j < r * n; j++) /* row-major R [r, n] is column-major Rᵀ [n, r] */
        Rc[j] = (double)R[j];
    if ((st = lowrank_core(m, n, r, Lc, Rc, sv, Uo, Vo, err)) != EXPERT_OK)
        goto done;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < r; j++)
            U[i * r + j] = (float)Uo[i + j * m];
    for (size_t j = 0; j < r; j++) {
        S[j] = (float)sv[j];
        for (size_t i = 0; i < n; i++)
            Vt[j * n + i] = (float)Vo[i + j * n];
    }
    xq_sign_fix(m, n, r, U, Vt);
done:
    xq_free(Lc);
    xq_free(Rc);
    xq_free(sv);
    xq_free(Uo);
    xq_free(Vo);
    return st;
}

expert_status xq_lowrank_norms(size_t m, size_t n, size_t K, const double *L, const double *R,
                               double *fro, double *spec, expert_error *err)
{
    *fro = *spec = 0.0;
    if (K == 0)
        return EXPERT_OK;
    if (K > m || K > n)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "lowrank norms: K > min(m, n)");
    double *Lc = xq_malloc(m * K * sizeof *Lc), *Rc = xq_malloc(n * K * sizeof *Rc);
    double *sv = xq_malloc(K * sizeof *sv);
    expert_status st = EXPERT_OK;
    if (!Lc || !Rc || !sv) {
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < K; j++)
                Lc[i + j * m] = L[i * K + j];
        memcpy(Rc, R, n * K * sizeof *Rc);
        st = lowrank_core(m, n, K, Lc, Rc, sv, NULL, NULL, err);
        if (st == EXPERT_OK) {
            double ss = 0.0;
            for (size_t j = 0; j < K; j++)
                ss += sv[j] * sv[j];
            *fro = sqrt(ss);
            *spec = sv[0];
        }
    }
    xq_free(Lc);
    xq_free(Rc);
    xq_free(sv);
    return st;
}

expert_status xq_dense_norms(size_t m, size_t n, const float *D, double *fro, double *spec,
                             unsigned *iters, expert_error *err)
{
    double ss = 0.0;
    for (size_t i = 0; i < m * n; i++)
        ss += (double)D[i] * (double)D[i];
    *fro = sqrt(ss);
    *spec = 0.0;
    if (iters)
        *iters = 0;
    if (ss == 0.0)
        return EXPERT_OK;
    /* Block power (subspace) iteration on DᵀD with b = 4 vectors; the top
     * singular value of D·Z (Z orthonormal) converges from below. */
    size_t mn = m < n ? m : n, b = mn < 4 ? mn : 4;
    float *Z = xq_malloc(n * b * sizeof *Z), *Y = xq_malloc(m * b * sizeof *Y);
    float *tau = xq_malloc(b * sizeof *tau), *Yc = xq_malloc(m * b * sizeof *Yc);
    float *sv = xq_malloc(b * sizeof *sv), *u = xq_malloc(m * b * sizeof *u);
    float *vt = xq_malloc(b * b * sizeof *vt);
    expert_status st = EXPERT_OK;
    if (!Z || !Y || !tau || !Yc || !sv || !u || !vt) {
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    gaussian(Z, n * b, 7);
    int M = (int)m, N = (int)n, B = (int)b;
    double prev = 0.0;
    unsigned it;
    if ((st = orth(n, b, Z, tau, err)) != EXPERT_OK)
        goto done;
    for (it = 1; it <= 200; it++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, B, N, 1.0f, D, N, Z, B, 0.0f, Y, B);
        memcpy(Yc, Y, m * b * sizeof *Y);
        if ((st = svd_full(m, b, Yc, u, sv, vt, err)) != EXPERT_OK)
            goto done;
        double cur = (double)sv[0];
        if (cur > *spec)
            *spec = cur;
        if (it > 2 && fabs(cur - prev) <= 1e-7 * cur)
            break;
        prev = cur;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, B, M, 1.0f, D, N, Y, B, 0.0f, Z, B);
        if ((st = orth(n, b, Z, tau, err)) != EXPERT_OK)
            goto done;
    }
    if (iters)
        *iters = it > 200 ? 200 : it;
done:
    xq_free(Z);
    xq_free(Y);
    xq_free(tau);
    xq_free(Yc);
    xq_free(sv);
    xq_free(u);
    xq_free(vt);
    return st;
}
