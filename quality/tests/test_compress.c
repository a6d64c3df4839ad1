/* test_compress.c — both compression arms at budgets of 1/2, 1/4 and 1/8 of
 * a generated expert: the files are within 1% of (and never over) the
 * budget, the predicted size equals the written one, the reference reader
 * accepts them at full validation and the fusion loads every module; the
 * reported error equals an independent diff; DoRA handling; the gradient
 * score (both gradient forms); errors.
 *
 * Generated data (random LoRA factors in PEFT's initialisation ranges): it
 * shows the mechanics and the byte accounting, not task quality. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "expert_quality.h"

static uint64_t g_s = 777;
static double urand(void)
{
    uint64_t z = (g_s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static double nrand(void)
{
    return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand());
}

static char g_dir[512];
static const char *path_of(const char *leaf)
{
    static char buf[64][640]; /* ring: a test keeps fewer than 64 paths alive */
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, leaf);
    return buf[k];
}

typedef struct shape {
    const char *name;
    unsigned out, in;
} shape;
/* Small shapes, many modules: the svd arm moves in whole rank steps, and the
 * 1% budget fit needs the budget to be >= ~100 of the smallest steps (true
 * for real experts: 168 modules of Qwen3-0.6B shapes). */
static const shape k_shapes[] = {
    {"self_attn.q_proj", 192, 128},
    {"self_attn.v_proj", 64, 128},
    {"mlp.up_proj", 256, 128},
    {"mlp.down_proj", 128, 256},
};
#define NSH 4
#define LAYERS 14
#define RANK 16

/* The factors of module (layer, shape), regenerated identically on demand. */
static void factors(unsigned l, unsigned s, float *A, float *B, float *mag)
{
    const shape *sh = &k_shapes[s];
    g_s = 1000 + 17 * l + s;
    double bound = 1.0 / sqrt((double)sh->in);
    for (unsigned i = 0; i < RANK * sh->in; i++)
        A[i] = (float)((2 * urand() - 1) * bound);
    for (unsigned i = 0; i < sh->out * RANK; i++)
        B[i] = (float)(0.01 * nrand() * (0.5 + (double)(i / RANK % 64) / 64.0));
    if (mag != NULL)
        for (unsigned o = 0; o < sh->out; o++)
            mag[o] = (float)(0.6 * (1 + 0.02 * nrand()));
}

static void base_weight(unsigned l, unsigned s, float *W)
{
    const shape *sh = &k_shapes[s];
    g_s = 5000 + 31 * l + s;
    double h = 0.6 * sqrt(3.0 / sh->in);
    for (unsigned i = 0; i < sh->out * sh->in; i++)
        W[i] = (float)((2 * urand() - 1) * h);
}

static void add(expert_writer *w, const char *name, uint16_t type, uint32_t layer, uint32_t module,
                const float *data, uint8_t rank, uint64_t d0, uint64_t d1)
{
    expert_section_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.type = type;
    d.codec = EXPERT_CODEC_RAW;
    d.dtype = EXPERT_DTYPE_F32;
    d.rank = rank;
    d.layer = layer;
    d.module = module;
    d.dims[0] = d0;
    d.dims[1] = rank > 1 ? d1 : 0;
    expert_error e;
    assert_int_equal(expert_writer_add(w, &d, data, (size_t)(rank > 1 ? d0 * d1 : d0) * 4, &e), EXPERT_OK);
}

/* LoRA or DoRA r=16 on 4 modules x LAYERS layers, plus one IA³ module. */
static void write_input(const char *path, int dora)
{
    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    const size_t cap = 65536;
    char *meta = malloc(cap);
    size_t ml = (size_t)snprintf(meta, cap, "{\"format\":\"expert-v2\",\"name\":\"gen\",\"version\":\"1\","
                                            "\"base_model\":{\"name\":\"test\"},\"modules\":[");
    uint32_t mod = 0;
    float *A = malloc(RANK * 512 * 4), *B = malloc(512 * RANK * 4), *M = malloc(512 * 4);
    for (unsigned l = 0; l < LAYERS; l++)
        for (unsigned s = 0; s < NSH; s++, mod++) {
            const shape *sh = &k_shapes[s];
            char p[256], n[300];
            snprintf(p, sizeof p, "base_model.model.model.layers.%u.%s", l, sh->name);
            factors(l, s, A, B, dora ? M : NULL);
            snprintf(n, sizeof n, "%s.lora_A.weight", p);
            add(w, n, EXPERT_SECTION_LORA_A, l, mod, A, 2, RANK, sh->in);
            snprintf(n, sizeof n, "%s.lora_B.weight", p);
            add(w, n, EXPERT_SECTION_LORA_B, l, mod, B, 2, sh->out, RANK);
            if (dora) {
                snprintf(n, sizeof n, "%s.lora_magnitude_vector", p);
                add(w, n, EXPERT_SECTION_DORA_MAGNITUDE, l, mod, M, 1, sh->out, 0);
            }
            ml += (size_t)snprintf(meta + ml, cap - ml,
                                   "%s{\"path\":\"%s\",\"type\":\"%s\",\"layer\":%u,\"r\":%d,\"alpha\":32,"
                                   "\"rslora\":false}",
                                   mod ? "," : "", p, dora ? "dora" : "lora", l, RANK);
        }
    float l3[256];
    for (int i = 0; i < 256; i++)
        l3[i] = (float)(1 + 0.05 * nrand());
    add(w, "base_model.model.model.layers.1.self_attn.k_proj.ia3_l", EXPERT_SECTION_IA3_VECTOR, 1, mod, l3, 2,
        256, 1);
    ml += (size_t)snprintf(meta + ml, cap - ml,
                           ",{\"path\":\"base_model.model.model.layers.1.self_attn.k_proj\",\"type\":\"ia3\","
                           "\"layer\":1,\"feedforward\":false,\"in_features\":256}]}");
    assert_int_equal(expert_writer_set_metadata(w, meta, ml, &e), EXPERT_OK);
    assert_int_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    free(meta);
    free(A);
    free(B);
    free(M);
}

/* sqrt(Σ diff² / Σ norm²) over the rows that are not ia3 (whose norm is of
 * diag(l) - I without a base, or of a copied module with one). */
static double pooled_lowrank(const xq_diff_result *d)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < d->count; i++)
        if (strcmp(d->rows[i].type_a, "ia3") != 0) {
            num += d->rows[i].diff_fro * d->rows[i].diff_fro;
            den += d->rows[i].norm_fro * d->rows[i].norm_fro;
        }
    return sqrt(num / den);
}

/* A minimal safetensors writer: F32 tensors, names given. */
typedef struct st_t {
    char name[300];
    uint64_t d0, d1;
    float *data;
} st_t;

static void write_safetensors(const char *path, st_t *t, size_t n)
{
    char *h = malloc(65536);
    size_t hl = (size_t)snprintf(h, 65536, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t len = t[i].d0 * t[i].d1 * 4;
        hl += (size_t)snprintf(h + hl, 65536 - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%llu,%llu],"
                                                    "\"data_offsets\":[%llu,%llu]}",
                               i ? "," : "", t[i].name, (unsigned long long)t[i].d0,
                               (unsigned long long)t[i].d1, (unsigned long long)off,
                               (unsigned long long)(off + len));
        off += len;
    }
    hl += (size_t)snprintf(h + hl, 65536 - hl, "}");
    while (hl % 8)
        h[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t le = hl;
    fwrite(&le, 8, 1, f);
    fwrite(h, 1, hl, f);
    for (size_t i = 0; i < n; i++)
        fwrite(t[i].data, 4, (size_t)(t[i].d0 * t[i].d1), f);
    fclose(f);
    free(h);
}

static void write_base(const char *path)
{
    st_t t[LAYERS * NSH + 1];
    size_t n = 0;
    snprintf(t[n].name, sizeof t[n].name, "model.layers.1.self_attn.k_proj.weight");
    t[n].d0 = t[n].d1 = 256;
    t[n].data = malloc(256 * 256 * 4);
    for (size_t i = 0; i < 256 * 256; i++)
        t[n].data[i] = (float)(0.05 * nrand());
    n++;
    for (unsigned l = 0; l < LAYERS; l++)
        for (unsigned s = 0; s < NSH; s++, n++) {
            snprintf(t[n].name, sizeof t[n].name, "model.layers.%u.%s.weight", l, k_shapes[s].name);
            t[n].d0 = k_shapes[s].out;
            t[n].d1 = k_shapes[s].in;
            t[n].data = malloc(t[n].d0 * t[n].d1 * 4);
            base_weight(l, s, t[n].data);
        }
    write_safetensors(path, t, n);
    for (size_t i = 0; i < n; i++)
        free(t[i].data);
}

static uint64_t fsize(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Opens `out` at full validation and loads every module through the fusion. */
static void check_output(const char *out, const char *want_type)
{
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(out, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    uint32_t n = expert_module_count(r);
    assert_true(n > 0);
    for (uint32_t m = 0; m < n; m++) {
        expert_module_info mi;
        assert_int_equal(expert_module(r, m, &mi), EXPERT_OK);
        expert_adapter *a = NULL;
        assert_int_equal(expert_adapter_load(r, m, &a, &e), EXPERT_OK);
        if (strcmp(mi.type, "ia3") != 0)
            assert_string_equal(mi.type, want_type);
        expert_adapter_free(a);
    }
    expert_close(r);
}

static void run(const char *in, const char *out, xq_method method, double ratio, xq_report *rep,
                const char *base, const char *grads)
{
    xq_compress_opts o;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.budget_ratio = ratio;
    o.codec = XQ_CODEC_AUTO;
    o.base_path = base;
    if (grads != NULL) {
        o.score = XQ_SCORE_GRADIENT;
        o.grads_path = grads;
    }
    expert_error e;
    unlink(out);
    expert_status s = xq_compress(in, out, &o, rep, &e);
    if (s != EXPERT_OK)
        fail_msg("compress %s ratio %g: %s: %s", method == XQ_METHOD_SVD ? "svd" : "osd", ratio,
                 expert_status_name(s), e.message);
    uint64_t size = fsize(out);
    assert_int_equal(size, rep->file_size);
    assert_int_equal(size, rep->predicted_size);
    assert_true(size <= rep->budget);
    if (!((double)size >= 0.99 * (double)rep->budget))
        fail_msg("%s at %g: %llu bytes is under 99%% of the %llu budget", rep->method, ratio,
                 (unsigned long long)size, (unsigned long long)rep->budget);
}

static void test_budgets(void **state)
{
    (void)state;
    const char *in = path_of("lora.expert");
    write_input(in, 0);
    static const double ratios[3] = {0.5, 0.25, 0.125};
    double err[2][3];
    printf("generated LoRA r=16, %d modules (+1 ia3), input %llu bytes\n", LAYERS * NSH,
           (unsigned long long)fsize(in));
    printf("%-14s %6s %10s %10s %8s %12s %12s\n", "method", "budget", "bytes", "budget_B", "use%",
           "rel_fro", "diff_fro");
    for (int mth = 0; mth < 2; mth++)
        for (int b = 0; b < 3; b++) {
            xq_report rep;
            char leaf[64];
            snprintf(leaf, sizeof leaf, "out-%d-%d.expert", mth, b);
            const char *out = path_of(leaf);
            run(in, out, mth ? XQ_METHOD_OSD : XQ_METHOD_SVD, ratios[b], &rep, NULL, NULL);
            check_output(out, mth ? "osd" : "lora");
            assert_int_equal(rep.reference_size, fsize(in));
            /* the reported error equals an independent diff of the two files */
            xq_diff_result d;
            expert_error e;
            assert_int_equal(xq_diff(in, out, NULL, &d, &e), EXPERT_OK);
            assert_int_equal(d.only_b, 0);
            /* the ia3 module is copied: zero error */
            int seen_ia3 = 0;
            for (size_t i = 0; i < d.count; i++)
                if (strcmp(d.rows[i].type_a, "ia3") == 0) {
                    assert_true(d.rows[i].rel_fro == 0.0);
                    seen_ia3 = 1;
                }
            assert_true(seen_ia3);
            double pooled = pooled_lowrank(&d);
            if (d.only_a == 0)
                assert_true(fabs(pooled - rep.rel_fro_all) <= 1e-3 * rep.rel_fro_all + 1e-6);
            printf("%-14s %6s %10llu %10llu %8.3f %12.6f %12.6f\n", rep.method,
                   b == 0 ? "1/2" : b == 1 ? "1/4" : "1/8", (unsigned long long)rep.file_size,
                   (unsigned long long)rep.budget, 100.0 * (double)rep.file_size / (double)rep.budget,
                   rep.rel_fro_all, pooled);
            err[mth][b] = rep.rel_fro_all;
            assert_true(rep.rel_fro_all > 0 && rep.rel_fro_all < 1);
            xq_diff_free(&d);
            xq_report_free(&rep);
        }
    for (int mth = 0; mth < 2; mth++)
        assert_true(err[mth][0] < err[mth][1] && err[mth][1] < err[mth][2]);
}

static void test_dora(void **state)
{
    (void)state;
    const char *in = path_of("dora.expert"), *out = path_of("dora-out.expert"), *base = path_of("base.st");
    write_input(in, 1);
    write_base(base);
    xq_report rep;
    /* svd without a base: dora modules, magnitudes carried unchanged */
    run(in, out, XQ_METHOD_SVD, 0.25, &rep, NULL, NULL);
    check_output(out, "dora");
    xq_report_free(&rep);
    expert_reader *ri = NULL, *ro = NULL;
    expert_error e;
    assert_int_equal(expert_open(in, NULL, &ri, &e), EXPERT_OK);
    assert_int_equal(expert_open(out, NULL, &ro, &e), EXPERT_OK);
    for (uint32_t m = 0; m < expert_module_count(ro); m++) {
        expert_adapter *a = NULL, *b = NULL;
        assert_int_equal(expert_adapter_load(ri, m, &a, &e), EXPERT_OK);
        assert_int_equal(expert_adapter_load(ro, m, &b, &e), EXPERT_OK);
        if (a->kind == EXPERT_ADAPTER_DORA) {
            assert_memory_equal(a->magnitude, b->magnitude, a->out * sizeof(float));
            assert_true(b->scale == 1.0);
        }
        expert_adapter_free(a);
        expert_adapter_free(b);
    }
    expert_close(ri);
    expert_close(ro);
    /* osd without a base cannot carry the magnitude */
    xq_compress_opts o;
    memset(&o, 0, sizeof o);
    o.method = XQ_METHOD_OSD;
    o.budget_ratio = 0.25;
    o.codec = XQ_CODEC_AUTO;
    assert_int_equal(xq_compress(in, out, &o, &rep, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "--base"));
    /* with the base both arms compress W' − W (dense route) and fit */
    for (int mth = 0; mth < 2; mth++) {
        run(in, out, mth ? XQ_METHOD_OSD : XQ_METHOD_SVD, 0.25, &rep, base, NULL);
        check_output(out, mth ? "osd" : "lora");
        for (size_t i = 0; i < rep.module_count; i++)
            if (strcmp(rep.modules[i].src_type, "dora") == 0)
                assert_true(rep.modules[i].dense_route);
        xq_diff_result d;
        assert_int_equal(xq_diff(in, out, base, &d, &e), EXPERT_OK);
        double pooled = pooled_lowrank(&d);
        printf("dora + base, %s at 1/4: reported %.6f, diff %.6f\n", rep.method, rep.rel_fro_all, pooled);
        assert_true(fabs(pooled - rep.rel_fro_all) <= 2e-3 * rep.rel_fro_all + 1e-6);
        xq_diff_free(&d);
        xq_report_free(&rep);
    }
}

static void test_gradient(void **state)
{
    (void)state;
    const char *in = path_of("lora-g.expert"), *out = path_of("g.expert"), *out2 = path_of("g2.expert");
    write_input(in, 0);
    /* gradients w.r.t. ΔW: a random G per module */
    st_t t[LAYERS * NSH], tf[2 * LAYERS * NSH];
    size_t n = 0;
    g_s = 99;
    for (unsigned l = 0; l < LAYERS; l++)
        for (unsigned s = 0; s < NSH; s++, n++) {
            snprintf(t[n].name, sizeof t[n].name, "base_model.model.model.layers.%u.%s.delta.grad", l,
                     k_shapes[s].name);
            t[n].d0 = k_shapes[s].out;
            t[n].d1 = k_shapes[s].in;
            t[n].data = malloc(t[n].d0 * t[n].d1 * 4);
            for (uint64_t i = 0; i < t[n].d0 * t[n].d1; i++)
                t[n].data[i] = (float)nrand();
        }
    write_safetensors(path_of("grads.st"), t, n);
    xq_report rep;
    run(in, out, XQ_METHOD_OSD, 0.25, &rep, NULL, path_of("grads.st"));
    assert_string_equal(rep.method, "osd-gradient");
    check_output(out, "osd");
    xq_report_free(&rep);
    /* the same gradients given w.r.t. the factors (chain rule done here, in
     * binary64, with the library's own SVD): same file */
    size_t nf = 0;
    for (unsigned l = 0; l < LAYERS; l++)
        for (unsigned s = 0; s < NSH; s++) {
            const shape *sh = &k_shapes[s];
            float *A = malloc(RANK * sh->in * 4), *B = malloc(sh->out * RANK * 4);
            float *U = malloc(sh->out * RANK * 4), *S = malloc(RANK * 4), *Vt = malloc(RANK * sh->in * 4);
            factors(l, s, A, B, NULL);
            expert_error e;
            assert_int_equal(xq_svd_lowrank(sh->out, sh->in, RANK, B, A, 2.0, U, S, Vt, &e), EXPERT_OK);
            const float *G = t[l * NSH + s].data;
            st_t *gu = &tf[nf++], *gv = &tf[nf++];
            snprintf(gu->name, sizeof gu->name, "base_model.model.model.layers.%u.%s.osd_U.grad", l, sh->name);
            snprintf(gv->name, sizeof gv->name, "base_model.model.model.layers.%u.%s.osd_VT.grad", l, sh->name);
            gu->d0 = sh->out, gu->d1 = RANK, gv->d0 = RANK, gv->d1 = sh->in;
            gu->data = malloc(sh->out * RANK * 4);
            gv->data = malloc(RANK * sh->in * 4);
            for (unsigned i = 0; i < sh->out; i++)
                for (unsigned j = 0; j < RANK; j++) {
                    double acc = 0;
                    for (unsigned q = 0; q < sh->in; q++)
                        acc += (double)G[i * sh->in + q] * Vt[j * sh->in + q];
                    gu->data[i * RANK + j] = (float)(acc * S[j]);
                }
            for (unsigned j = 0; j < RANK; j++)
                for (unsigned q = 0; q < sh->in; q++) {
                    double acc = 0;
                    for (unsigned i = 0; i < sh->out; i++)
                        acc += (double)U[i * RANK + j] * G[i * sh->in + q];
                    gv->data[j * sh->in + q] = (float)(acc * S[j]);
                }
            free(A);
            free(B);
            free(U);
            free(S);
            free(Vt);
        }
    write_safetensors(path_of("grads-f.st"), tf, nf);
    run(in, out2, XQ_METHOD_OSD, 0.25, &rep, NULL, path_of("grads-f.st"));
    xq_report_free(&rep);
    /* Near-ties in the scores may order differently (float vs binary64 chain
     * rule), so compare outcomes, not bytes: sizes and errors agree closely. */
    expert_error e;
    xq_diff_result d1, d2;
    assert_int_equal(xq_diff(in, out, NULL, &d1, &e), EXPERT_OK);
    assert_int_equal(xq_diff(in, out2, NULL, &d2, &e), EXPERT_OK);
    printf("osd-gradient at 1/4: rel_fro %.6f (delta.grad) vs %.6f (factor grads)\n", d1.rel_fro_all,
           d2.rel_fro_all);
    assert_true(fabs(d1.rel_fro_all - d2.rel_fro_all) <= 0.01 * d1.rel_fro_all);
    xq_diff_free(&d1);
    xq_diff_free(&d2);
    /* a module without gradients */
    write_safetensors(path_of("grads-short.st"), t, n - 1);
    xq_compress_opts o;
    memset(&o, 0, sizeof o);
    o.method = XQ_METHOD_OSD;
    o.score = XQ_SCORE_GRADIENT;
    o.grads_path = path_of("grads-short.st");
    o.budget_ratio = 0.25;
    o.codec = XQ_CODEC_AUTO;
    expert_status st = xq_compress(in, out, &o, &rep, &e);
    if (st != EXPERT_E_NOT_FOUND)
        fail_msg("short gradients: %s: %s", expert_status_name(st), e.message);
    for (size_t i = 0; i < n; i++)
        free(t[i].data);
    for (size_t i = 0; i < nf; i++)
        free(tf[i].data);
}

static void test_errors(void **state)
{
    (void)state;
    const char *in = path_of("lora-e.expert"), *out = path_of("err.expert");
    write_input(in, 0);
    xq_compress_opts o;
    memset(&o, 0, sizeof o);
    o.method = XQ_METHOD_SVD;
    o.budget_bytes = 3000; /* below header + metadata + TOC */
    o.codec = XQ_CODEC_AUTO;
    xq_report rep;
    expert_error e;
    assert_int_equal(xq_compress(in, out, &o, &rep, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "fixed cost"));
    assert_true(access(out, F_OK) != 0);
    o.budget_bytes = 0;
    o.budget_ratio = 0;
    assert_int_equal(xq_compress(in, out, &o, &rep, &e), EXPERT_E_INVALID_ARGUMENT);
    o.budget_ratio = 0.25;
    assert_int_equal(xq_compress(path_of("missing.expert"), out, &o, &rep, &e), EXPERT_E_IO);
    /* a budget above the lossless size keeps every triplet: error ~ float rounding */
    o.budget_ratio = 1.5;
    assert_int_equal(xq_compress(in, out, &o, &rep, &e), EXPERT_OK);
    assert_true(rep.rel_fro_all < 1e-6);
    xq_report_free(&rep);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/qcompress-%d", tmp ? tmp : "/tmp", (int)getpid());
    mkdir(g_dir, 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_dora),
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc == 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            rc = 0;
    }
    return rc;
}
