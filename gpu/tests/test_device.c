/* test_device.c — the GPU path on a real device: the streamed image equals
 * the file's verified bytes, cudaMemGetInfo agrees with the plan's
 * accounting, a corrupt section leaves nothing resident, and the GPU forward
 * pass and merge agree with the CPU core (expert_adapter.h) within the FP32
 * bound stated in apply.c. Without a device: SKIPPED, exit 77. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "craft.h"
#include "fixture.h"

static char *g_dir;
static char g_path[1024];

static uint64_t free_bytes(void)
{
    uint64_t f = 0;
    expert_error e;
    assert_int_equal(expert_gpu_mem_info(&f, NULL, &e), EXPERT_OK);
    return f;
}

static void test_load_matches_file(void **state)
{
    (void)state;
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    for (int c = 0; c < 6; c++) {
        expert_gpu_options o = {0};
        o.device_dtype = c % 3 == 0 ? 0 : c % 3 == 1 ? EXPERT_DTYPE_BF16 : EXPERT_DTYPE_F16;
        o.per_tensor = c >= 3;
        o.decode_threads = (unsigned)(1 + c % 2);
        expert_gpu_plan *p = NULL;
        assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_OK);
        expert_gpu_totals tot;
        expert_gpu_plan_totals(p, &tot);
        uint64_t before = free_bytes();
        expert_gpu_expert *x = NULL;
        expert_gpu_load_stats ls;
        assert_int_equal(expert_gpu_load(r, p, &x, &ls, &e), EXPERT_OK);
        uint64_t during = free_bytes();
        /* The drop is at most the page-rounded accounting (plus one page the
         * driver may take for its own bookkeeping). */
        assert_true(before >= during);
        assert_true(before - during <= tot.reserved_bytes + EXPERT_GPU_PAGE);
        assert_true(ls.first_group_s >= 0.0 && ls.first_group_s <= ls.total_s + 1e-3);
        for (uint32_t i = 0; i < expert_gpu_plan_tensor_count(p); i++) {
            const expert_gpu_tensor *t = expert_gpu_plan_tensor(p, i);
            void *want = fixture_expected_bytes(r, t);
            void *got = malloc(t->device_bytes + 1);
            assert_non_null(got);
            assert_int_equal(expert_gpu_to_host(got, expert_gpu_expert_tensor(x, i),
                                                (size_t)t->device_bytes, &e),
                             EXPERT_OK);
            assert_memory_equal(got, want, t->device_bytes);
            free(got);
            free(want);
        }
        expert_gpu_expert_free(x);
        assert_true(free_bytes() + EXPERT_GPU_PAGE >= before);
        expert_gpu_plan_free(p);
    }
    expert_close(r);
}

static void test_corrupt_leaves_nothing(void **state)
{
    (void)state;
    xb file;
    assert_int_equal(file_load(g_path, &file), 0);
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    uint32_t idx;
    assert_int_equal(expert_find(r, "m.layers.4.q.lora_A.weight", 26, &idx), EXPERT_OK);
    expert_section_info s;
    assert_int_equal(expert_section(r, idx, &s), EXPERT_OK);
    expert_close(r);
    file.p[s.offset] ^= 1;
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/corrupt.expert", g_dir);
    assert_int_equal(file_save(bad, file.p, file.n), 0);
    xb_free(&file);
    assert_int_equal(expert_open(bad, NULL, &r, &e), EXPERT_OK);
    expert_gpu_plan *p = NULL;
    assert_int_equal(expert_gpu_plan_build(r, NULL, &p, &e), EXPERT_OK);
    uint64_t before = free_bytes();
    expert_gpu_expert *x = NULL;
    assert_int_equal(expert_gpu_load(r, p, &x, NULL, &e), EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(e.section, idx);
    assert_null(x);
    assert_true(free_bytes() + EXPERT_GPU_PAGE >= before);
    expert_gpu_plan_free(p);
    expert_close(r);
}

/* ------------------------------------------------ fusion against the CPU */

#define FO 96
#define FI 160
#define FR 8
#define FN 33
#define FK 6

static float *dev_copy(const float *h, size_t n)
{
    void *d = NULL;
    expert_error e;
    assert_int_equal(expert_gpu_alloc(n * sizeof(float), &d, &e), EXPERT_OK);
    assert_int_equal(expert_gpu_to_device(d, h, n * sizeof(float), &e), EXPERT_OK);
    return d;
}

static float *host_copy(const float *d, size_t n)
{
    float *h = malloc(n * sizeof *h);
    expert_error e;
    assert_non_null(h);
    assert_int_equal(expert_gpu_to_host(h, d, n * sizeof(float), &e), EXPERT_OK);
    return h;
}

static float *fabs_copy(const float *v, size_t n)
{
    if (v == NULL)
        return NULL;
    float *a = malloc(n * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = fabsf(v[i]);
    return a;
}

/* The same module with every tensor replaced by its absolute value. */
static expert_adapter abs_adapter(const expert_adapter *a, float **owned)
{
    expert_adapter b = *a;
    size_t in = (size_t)a->in, out = (size_t)a->out, r = (size_t)a->r;
    owned[0] = fabs_copy(a->A, r * in);
    owned[1] = fabs_copy(a->B, out * r);
    owned[2] = fabs_copy(a->l, a->feedforward ? in : out);
    owned[3] = fabs_copy(a->U, out * r);
    owned[4] = fabs_copy(a->S, r);
    owned[5] = fabs_copy(a->Vt, r * in);
    owned[6] = fabs_copy(a->sparse.values, (size_t)a->sparse.nnz);
    b.A = owned[0];
    b.B = owned[1];
    b.l = owned[2];
    b.U = owned[3];
    b.S = owned[4];
    b.Vt = owned[5];
    b.sparse.values = owned[6];
    if (a->kind == EXPERT_ADAPTER_DORA)
        b.kind = EXPERT_ADAPTER_LORA; /* the factor is applied separately */
    return b;
}

static void check_close(const float *got, const float *want, const double *T, size_t n, double N,
                        const char *what)
{
    const double u = ldexp(1.0, -24);
    for (size_t i = 0; i < n; i++) {
        double bound = 2.0 * u * fabs((double)want[i]) + 2.0 * (N + 2.0) * u * T[i] + 1e-30;
        if (!(fabs((double)got[i] - (double)want[i]) <= bound))
            fail_msg("%s[%zu]: GPU %.9g, CPU %.9g, bound %.3g", what, i, (double)got[i],
                     (double)want[i], bound);
    }
}

static void fusion_case(const expert_adapter *a, const char *what)
{
    prng g = {777};
    size_t out = (size_t)a->out, in = (size_t)a->in;
    float *W = fixture_frand(&g, out * in), *x = fixture_frand(&g, FN * in),
          *b = fixture_frand(&g, out);
    expert_error e;
    /* Forward: CPU reference and the absolute-value sum T per element. */
    float *y_cpu = calloc(FN * out, sizeof(float)), *t32 = calloc(FN * out, sizeof(float));
    double *f = malloc(out * sizeof *f), *T = malloc(FN * out * sizeof *T);
    assert_int_equal(expert_adapter_forward(a, W, b, NULL, FN, x, y_cpu, &e), EXPERT_OK);
    float *owned[7];
    expert_adapter ab = abs_adapter(a, owned);
    float *aW = fabs_copy(W, out * in), *ax = fabs_copy(x, FN * in), *abias = fabs_copy(b, out);
    assert_int_equal(expert_adapter_forward(&ab, aW, NULL, NULL, FN, ax, t32, &e), EXPERT_OK);
    if (a->kind == EXPERT_ADAPTER_DORA)
        assert_int_equal(expert_dora_row_scale(a, W, f, &e), EXPERT_OK);
    for (size_t i = 0; i < FN * out; i++) {
        double scale = a->kind == EXPERT_ADAPTER_DORA ? fabs(f[i % out]) : 1.0;
        double lb = a->kind == EXPERT_ADAPTER_IA3 && !a->feedforward ? fabs((double)a->l[i % out]) : 1.0;
        T[i] = scale * (double)t32[i] + lb * (double)abias[i % out];
    }
    float *dW = dev_copy(W, out * in), *dx = dev_copy(x, FN * in), *db = dev_copy(b, out);
    float *dy = NULL;
    assert_int_equal(expert_gpu_alloc(FN * out * sizeof(float), (void **)&dy, &e), EXPERT_OK);
    expert_gpu_adapter *ga = NULL;
    assert_int_equal(expert_gpu_adapter_upload(a, dW, &ga, &e), EXPERT_OK);
    if (a->kind == EXPERT_ADAPTER_DORA) {
        double *gf = malloc(out * sizeof *gf);
        assert_non_null(gf);
        assert_int_equal(expert_gpu_to_host(gf, expert_gpu_adapter_dora_factor(ga),
                                            out * sizeof *gf, &e),
                         EXPERT_OK);
        for (size_t o = 0; o < out; o++)
            assert_true(fabs(gf[o] - f[o]) <= 1e-12 * fabs(f[o]) + 1e-300);
        free(gf);
    }
    assert_int_equal(expert_gpu_forward(ga, dW, db, FN, dx, dy, &e), EXPERT_OK);
    float *y_gpu = host_copy(dy, FN * out);
    double N = (double)(2 * in) + (double)a->r;
    check_close(y_gpu, y_cpu, T, FN * out, N, what);
    /* Merge: W' on the GPU against expert_adapter_merge, bound from M. */
    float *W_cpu = malloc(out * in * sizeof(float)), *b_cpu = malloc(out * sizeof(float));
    memcpy(W_cpu, W, out * in * sizeof(float));
    memcpy(b_cpu, b, out * sizeof(float));
    assert_int_equal(expert_adapter_merge(a, W_cpu, b_cpu, &e), EXPERT_OK);
    float *M32 = malloc(out * in * sizeof(float)), *mb = malloc(out * sizeof(float));
    memcpy(M32, aW, out * in * sizeof(float));
    memcpy(mb, abias, out * sizeof(float));
    assert_int_equal(expert_adapter_merge(&ab, M32, mb, &e), EXPERT_OK);
    double *M = malloc(out * in * sizeof *M);
    for (size_t i = 0; i < out * in; i++)
        M[i] = a->kind == EXPERT_ADAPTER_DORA
                   ? fabs((double)W_cpu[i]) + fabs(f[i / in]) * (double)M32[i]
                   : (double)M32[i];
    assert_int_equal(expert_gpu_merge(ga, dW, db, &e), EXPERT_OK);
    float *W_gpu = host_copy(dW, out * in), *b_gpu = host_copy(db, out);
    if (a->kind == EXPERT_ADAPTER_IA3) {
        /* One binary32 product per element: bit-exact. */
        assert_memory_equal(W_gpu, W_cpu, out * in * sizeof(float));
        assert_memory_equal(b_gpu, b_cpu, out * sizeof(float));
    } else {
        check_close(W_gpu, W_cpu, M, out * in, (double)a->r + 2.0, what);
    }
    expert_gpu_adapter_free(ga);
    expert_gpu_free(dW);
    expert_gpu_free(dx);
    expert_gpu_free(db);
    expert_gpu_free(dy);
    for (int i = 0; i < 7; i++)
        free(owned[i]);
    free(W), free(x), free(b), free(y_cpu), free(t32), free(f), free(T), free(aW), free(ax);
    free(abias), free(y_gpu), free(W_cpu), free(b_cpu), free(M32), free(mb), free(M);
    free(W_gpu), free(b_gpu);
}

static void test_fusion_against_cpu(void **state)
{
    (void)state;
    prng g = {99};
    float *A = fixture_frand(&g, FR * FI), *B = fixture_frand(&g, FO * FR),
          *m = fixture_frand(&g, FO), *lo = fixture_frand(&g, FO), *li = fixture_frand(&g, FI),
          *U = fixture_frand(&g, FO * FK), *S = fixture_frand(&g, FK),
          *Vt = fixture_frand(&g, FK * FI);
    expert_adapter a;
    memset(&a, 0, sizeof a);
    a.out = FO;
    a.in = FI;
    a.kind = EXPERT_ADAPTER_LORA;
    a.r = FR;
    a.scale = 2.0;
    a.A = A;
    a.B = B;
    fusion_case(&a, "lora");
    a.kind = EXPERT_ADAPTER_DORA;
    a.magnitude = m;
    fusion_case(&a, "dora");
    memset(&a, 0, sizeof a);
    a.out = FO;
    a.in = FI;
    a.kind = EXPERT_ADAPTER_IA3;
    a.scale = 1.0;
    a.l = lo;
    fusion_case(&a, "ia3-out");
    a.l = li;
    a.feedforward = 1;
    fusion_case(&a, "ia3-ff");
    memset(&a, 0, sizeof a);
    a.out = FO;
    a.in = FI;
    a.kind = EXPERT_ADAPTER_OSD;
    a.scale = 1.0;
    a.r = FK;
    a.U = U;
    a.S = S;
    a.Vt = Vt;
    fusion_case(&a, "osd-lowrank");
    int64_t *indptr = malloc((FO + 1) * sizeof *indptr), *indices = malloc(FO * 4 * sizeof *indices);
    float *values = fixture_frand(&g, FO * 4);
    uint64_t nnz = 0;
    for (uint64_t o = 0; o < FO; o++) {
        indptr[o] = (int64_t)nnz;
        for (uint64_t j = 0; j < o % 4; j++)
            indices[nnz++] = (int64_t)((o * 13 + j * 41) % FI / 4 * 4 + j);
    }
    indptr[FO] = (int64_t)nnz;
    a.sparse.rows = FO;
    a.sparse.cols = FI;
    a.sparse.nnz = nnz;
    a.sparse.indptr = indptr;
    a.sparse.indices = indices;
    a.sparse.values = values;
    fusion_case(&a, "osd-lowrank+sparse");
    free(A), free(B), free(m), free(lo), free(li), free(U), free(S), free(Vt);
    free(indptr), free(indices), free(values);
}

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("gpu-device");
    assert_non_null(g_dir);
    snprintf(g_path, sizeof g_path, "%s/sample.expert", g_dir);
    fixture_write_sample(g_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(g_dir);
    return 0;
}

int main(void)
{
    expert_gpu_device_info info;
    expert_error e;
    memset(&e, 0, sizeof e);
    if (!expert_gpu_built_with_cuda()) {
        printf("SKIPPED: built without CUDA\n");
        return 77;
    }
    if (expert_gpu_device(0, &info, &e) != EXPERT_OK) {
        printf("SKIPPED: no CUDA device (%s)\n", e.message);
        return 77;
    }
    printf("device: %s (sm_%d%d)\n", info.name, info.cc_major, info.cc_minor);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_matches_file),
        cmocka_unit_test(test_corrupt_leaves_nothing),
        cmocka_unit_test(test_fusion_against_cpu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
