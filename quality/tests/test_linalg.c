/* test_linalg.c — the SVD routes of the quality library: the QR route for a
 * LoRA product against LAPACK's dense SVD, the sign convention, randomized
 * SVD against exact on a matrix with a known spectrum, and the norms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expert_quality.h"

static uint64_t g_s = 12345;
static double urand(void)
{
    uint64_t z = (g_s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static double nrand(void)
{
    double u = urand() + 1e-300, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static float *rmat(size_t n, double sc)
{
    float *m = malloc(n * sizeof *m);
    for (size_t i = 0; i < n; i++)
        m[i] = (float)(sc * nrand());
    return m;
}

/* dense P = s·L·R in double, rounded */
static float *product(size_t m, size_t n, size_t r, const float *L, const float *R, double s)
{
    float *P = malloc(m * n * sizeof *P);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double a = 0;
            for (size_t k = 0; k < r; k++)
                a += (double)L[i * r + k] * (double)R[k * n + j];
            P[i * n + j] = (float)(s * a);
        }
    return P;
}

static double rel_recon(size_t m, size_t n, size_t k, const float *U, const float *S, const float *Vt,
                        const float *D)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double a = 0;
            for (size_t q = 0; q < k; q++)
                a += (double)U[i * k + q] * (double)S[q] * (double)Vt[q * n + j];
            double d = (double)D[i * n + j];
            num += (a - d) * (a - d);
            den += d * d;
        }
    return sqrt(num / den);
}

static void check_convention(size_t m, size_t k, const float *U)
{
    for (size_t j = 0; j < k; j++) {
        size_t best = 0;
        for (size_t i = 1; i < m; i++)
            if (fabsf(U[i * k + j]) > fabsf(U[best * k + j]))
                best = i;
        assert_true(U[best * k + j] > 0.0f);
    }
}

static void test_lowrank_vs_dense(void **state)
{
    (void)state;
    const size_t m = 300, n = 200, r = 8;
    float *B = rmat(m * r, 0.01), *A = rmat(r * n, 0.05);
    float *U = malloc(m * r * sizeof *U), *S = malloc(r * sizeof *S), *Vt = malloc(r * n * sizeof *Vt);
    float *Ue = malloc(m * r * sizeof *Ue), *Se = malloc(r * sizeof *Se), *Ve = malloc(r * n * sizeof *Ve);
    expert_error e;
    assert_int_equal(xq_svd_lowrank(m, n, r, B, A, 2.0, U, S, Vt, &e), EXPERT_OK);
    float *D = product(m, n, r, B, A, 2.0);
    xq_svd_opts ex = {XQ_SVD_EXACT, 0, 0, 0};
    assert_int_equal(xq_svd_dense(m, n, D, r, &ex, Ue, Se, Ve, &e), EXPERT_OK);
    for (size_t j = 0; j < r; j++) {
        assert_true(fabsf(S[j] - Se[j]) <= 1e-5f * Se[0]);
        if (j > 0)
            assert_true(S[j] <= S[j - 1]);
    }
    /* same sign convention on both routes: the vectors agree, not just up to sign */
    check_convention(m, r, U);
    check_convention(m, r, Ue);
    for (size_t i = 0; i < m * r; i++)
        assert_true(fabsf(U[i] - Ue[i]) <= 2e-3f);
    assert_true(rel_recon(m, n, r, U, S, Vt, D) < 1e-6);
    /* orthonormal columns of U, rows of Vt */
    for (size_t a = 0; a < r; a++)
        for (size_t b = 0; b < r; b++) {
            double du = 0, dv = 0;
            for (size_t i = 0; i < m; i++)
                du += (double)U[i * r + a] * U[i * r + b];
            for (size_t i = 0; i < n; i++)
                dv += (double)Vt[a * n + i] * Vt[b * n + i];
            assert_true(fabs(du - (a == b)) < 1e-5 && fabs(dv - (a == b)) < 1e-5);
        }
    /* the convention pins the signs: for -D, U stays and Vt flips */
    for (size_t i = 0; i < m * r; i++)
        B[i] = -B[i];
    float *U2 = malloc(m * r * sizeof *U2), *V2 = malloc(r * n * sizeof *V2), *S2 = malloc(r * sizeof *S2);
    assert_int_equal(xq_svd_lowrank(m, n, r, B, A, 2.0, U2, S2, V2, &e), EXPERT_OK);
    for (size_t i = 0; i < m * r; i++)
        assert_true(fabsf(U[i] - U2[i]) <= 1e-5f);
    for (size_t i = 0; i < r * n; i++)
        assert_true(fabsf(Vt[i] + V2[i]) <= 1e-5f);
    assert_int_equal(xq_svd_lowrank(m, n, 0, B, A, 1.0, U2, S2, V2, &e), EXPERT_E_INVALID_ARGUMENT);
    free(U2);
    free(V2);
    free(S2);
    free(B);
    free(A);
    free(U);
    free(S);
    free(Vt);
    free(Ue);
    free(Se);
    free(Ve);
    free(D);
}

/* D = Σ_j 0.8^j u_j v_jᵀ (j < 40) + 1e-4 noise: a decaying spectrum */
static float *decaying(size_t m, size_t n)
{
    const size_t R = 40;
    float *Lf = rmat(m * R, 1.0 / sqrt((double)m)), *Rf = rmat(R * n, 1.0 / sqrt((double)n));
    for (size_t j = 0; j < R; j++)
        for (size_t i = 0; i < m; i++)
            Lf[i * R + j] *= (float)pow(0.8, (double)j);
    float *D = product(m, n, R, Lf, Rf, 1.0);
    for (size_t i = 0; i < m * n; i++)
        D[i] += (float)(1e-4 * nrand());
    free(Lf);
    free(Rf);
    return D;
}

static void test_randomized(void **state)
{
    (void)state;
    const size_t m = 500, n = 300, k = 16;
    float *D = decaying(m, n);
    float *Ue = malloc(m * k * sizeof *Ue), *Se = malloc(k * sizeof *Se), *Ve = malloc(k * n * sizeof *Ve);
    float *Ur = malloc(m * k * sizeof *Ur), *Sr = malloc(k * sizeof *Sr), *Vr = malloc(k * n * sizeof *Vr);
    expert_error e;
    xq_svd_opts ex = {XQ_SVD_EXACT, 0, 0, 0}, rd = {XQ_SVD_RANDOMIZED, 10, 2, 1};
    assert_int_equal(xq_svd_dense(m, n, D, k, &ex, Ue, Se, Ve, &e), EXPERT_OK);
    assert_int_equal(xq_svd_dense(m, n, D, k, &rd, Ur, Sr, Vr, &e), EXPERT_OK);
    double sv = 0;
    for (size_t j = 0; j < k; j++)
        sv = fmax(sv, fabs((double)Sr[j] - Se[j]) / Se[0]);
    double fe = rel_recon(m, n, k, Ue, Se, Ve, D), fr = rel_recon(m, n, k, Ur, Sr, Vr, D);
    printf("randomized (p=10, q=2) vs exact, 500x300, k=16: max |sigma_r - sigma_e|/sigma_1 = %.2e, "
           "rel Frobenius error %.6f vs %.6f (exact)\n", sv, fr, fe);
    assert_true(sv < 1e-4);
    assert_true(fr >= fe * (1 - 1e-5)); /* Eckart-Young: exact is optimal */
    assert_true(fr <= fe * (1 + 1e-3));
    check_convention(m, k, Ur);
    /* without power iterations the error is larger but bounded */
    xq_svd_opts r0 = {XQ_SVD_RANDOMIZED, 10, UINT32_MAX, 1};
    assert_int_equal(xq_svd_dense(m, n, D, k, &r0, Ur, Sr, Vr, &e), EXPERT_OK);
    double f0 = rel_recon(m, n, k, Ur, Sr, Vr, D);
    printf("randomized (p=10, q=0): rel Frobenius error %.6f\n", f0);
    assert_true(f0 >= fr * (1 - 1e-5) && f0 < 2 * fe);
    assert_int_equal(xq_svd_dense(m, n, D, 301, &ex, Ue, Se, Ve, &e), EXPERT_E_INVALID_ARGUMENT);
    free(D);
    free(Ue);
    free(Se);
    free(Ve);
    free(Ur);
    free(Sr);
    free(Vr);
}

static void test_norms(void **state)
{
    (void)state;
    const size_t m = 120, n = 90, K = 6;
    float *Lf = rmat(m * K, 1.0), *Rf = rmat(K * n, 1.0);
    double *L = malloc(m * K * sizeof *L), *R = malloc(K * n * sizeof *R);
    for (size_t i = 0; i < m * K; i++)
        L[i] = Lf[i];
    for (size_t i = 0; i < K * n; i++)
        R[i] = Rf[i];
    float *D = product(m, n, K, Lf, Rf, 1.0);
    double f1, s1, f2, s2;
    unsigned it;
    expert_error e;
    assert_int_equal(xq_lowrank_norms(m, n, K, L, R, &f1, &s1, &e), EXPERT_OK);
    assert_int_equal(xq_dense_norms(m, n, D, &f2, &s2, &it, &e), EXPERT_OK);
    printf("norms: fro %.9g / %.9g, spectral %.9g / %.9g (%u power steps)\n", f1, f2, s1, s2, it);
    assert_true(fabs(f1 - f2) <= 1e-6 * f1);
    assert_true(fabs(s1 - s2) <= 1e-5 * s1);
    assert_true(s1 <= f1);
    free(Lf);
    free(Rf);
    free(L);
    free(R);
    free(D);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lowrank_vs_dense),
        cmocka_unit_test(test_randomized),
        cmocka_unit_test(test_norms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
