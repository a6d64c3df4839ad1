/* test_arms.c — the arms as .expert files and their application:
 *  - a LoRA expert and a dense (rank-0 osd, CSR) expert written by arms.c
 *    open and validate at full level with libexpert;
 *  - applying them merged (expert_adapter_merge) and unmerged
 *    (expert_adapter_forward) gives the same predictions, and logits within
 *    the fusion's stated error bound (binary32 rounding of each merged weight
 *    plus binary64 accumulation: far below 1e-4 here);
 *  - merging the dense expert onto the base gives the fine-tuned weights
 *    back (ΔW stored exactly, W' = W + ΔW rounded once);
 *  - an expert for another base, or with a module the model lacks, is
 *    refused with a message;
 *  - a checkpoint round-trips bit for bit. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arms.h"
#include "models.h"

static char g_dir[512];

static const char *path_of(const char *leaf)
{
    static char buf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, leaf);
    return buf[k];
}

static void perturb(ab_model *m, double scale, uint64_t seed)
{
    ab_rng r = ab_rng_make(seed, 9);
    for (int i = 0; i < m->nlin; i++)
        for (size_t j = 0; j < (size_t)m->lin[i]->out * (size_t)m->lin[i]->in; j++)
            m->lin[i]->W[j] += (float)(scale * ab_rng_normal(&r));
}

static void lm_config(ab_lm_config *c)
{
    *c = (ab_lm_config){.vocab = 40, .d = 16, .layers = 2, .heads = 2, .ffn = 24, .ctx = 12,
                        .rope_theta = 10000.0, .norm_eps = 1e-5f};
}

/* logits of one batch and arg-max per row */
static void lm_logits(ab_lm *lm, const int *tok, float *logits, int *am)
{
    int tgt[3 * 12];
    for (int i = 0; i < 36; i++)
        tgt[i] = tok[i];
    ab_lm_forward(lm, 3, tok, tgt, NULL, NULL);
    memcpy(logits, ab_lm_logits(lm), 36 * 40 * sizeof(float));
    for (int n = 0; n < 36; n++) {
        int best = 0;
        for (int j = 1; j < 40; j++)
            if (logits[n * 40 + j] > logits[n * 40 + best])
                best = j;
        am[n] = best;
    }
}

static void test_lm_merged_unmerged(void **state)
{
    (void)state;
    ab_lm_config c;
    lm_config(&c);
    ab_lm base, tuned, lora, a, b;
    assert_int_equal(ab_lm_init(&base, &c, 1), 0);
    char sha[65];
    expert_error err;
    assert_int_equal(ab_checkpoint_save(&base.m, path_of("base.safetensors"), "sql", "{}", sha, &err), EXPERT_OK);
    /* dense expert: a perturbed copy of the base */
    assert_int_equal(ab_lm_init(&tuned, &c, 1), 0);
    perturb(&tuned.m, 0.05, 2);
    ab_expert_meta meta = {"t", "b", sha, "{\"arm\":\"test\"}"};
    assert_int_equal(ab_write_full_expert(&tuned.m, &base.m, path_of("full.expert"), &meta, &err), EXPERT_OK);
    /* LoRA expert with non-zero B */
    assert_int_equal(ab_lm_init(&lora, &c, 1), 0);
    assert_int_equal(ab_lora_attach(&lora.m, 3, 6.0, 4), 0);
    ab_rng r = ab_rng_make(5, 5);
    for (int i = 0; i < lora.m.nlin; i++)
        for (size_t j = 0; j < (size_t)lora.m.lin[i]->out * 3; j++)
            lora.m.lin[i]->B[j] = (float)(0.2 * ab_rng_normal(&r));
    assert_int_equal(ab_write_lora_expert(&lora.m, path_of("lora.expert"), &meta, &err), EXPERT_OK);
    int tok[36];
    for (int i = 0; i < 36; i++)
        tok[i] = (int)ab_rng_below(&r, 40);
    const char *files[2] = {path_of("full.expert"), path_of("lora.expert")};
    for (int f = 0; f < 2; f++) {
        expert_reader *rd;
        assert_int_equal(expert_open(files[f], NULL, &rd, &err), EXPERT_OK);
        assert_int_equal(expert_verify_full(rd, NULL, &err), EXPERT_OK);
        assert_int_equal(expert_module_count(rd), (uint32_t)base.m.nlin);
        expert_close(rd);
        ab_applied *pa, *pb;
        assert_int_equal(ab_lm_init(&a, &c, 1), 0);
        assert_int_equal(ab_lm_init(&b, &c, 1), 0);
        assert_int_equal(ab_apply_expert(&a.m, files[f], sha, AB_APPLY_MERGED, &pa, &err), EXPERT_OK);
        assert_int_equal(ab_apply_expert(&b.m, files[f], sha, AB_APPLY_UNMERGED, &pb, &err), EXPERT_OK);
        assert_int_equal(ab_applied_count(pa), (size_t)base.m.nlin);
        assert_int_equal(ab_applied_count(pb), (size_t)base.m.nlin);
        assert_int_equal(ab_lm_reserve(&a, 3, 0), 0);
        assert_int_equal(ab_lm_reserve(&b, 3, 0), 0);
        float za[36 * 40], zb[36 * 40];
        int aa[36], ab_[36];
        lm_logits(&a, tok, za, aa);
        lm_logits(&b, tok, zb, ab_);
        double md = 0.0;
        for (int i = 0; i < 36 * 40; i++)
            md = fmax(md, fabs((double)za[i] - zb[i]));
        assert_true(md < 1e-4);
        for (int i = 0; i < 36; i++)
            assert_int_equal(aa[i], ab_[i]);
        if (f == 0) /* W + (W_tuned − W) is W_tuned up to one rounding */
            for (int i = 0; i < a.m.nlin; i++)
                for (size_t j = 0; j < (size_t)a.m.lin[i]->out * (size_t)a.m.lin[i]->in; j++)
                    assert_true(fabsf(a.m.lin[i]->W[j] - tuned.m.lin[i]->W[j]) <=
                                2e-7f * fmaxf(1.0f, fabsf(tuned.m.lin[i]->W[j])));
        ab_applied_free(pa);
        ab_applied_free(pb);
        ab_lm_free(&a);
        ab_lm_free(&b);
    }
    /* another base */
    assert_int_equal(ab_lm_init(&a, &c, 1), 0);
    ab_applied *p = NULL;
    char other[65];
    memset(other, 'a', 64);
    other[64] = '\0';
    assert_int_equal(ab_apply_expert(&a.m, files[1], other, AB_APPLY_MERGED, &p, &err), EXPERT_E_INVALID_ARGUMENT);
    assert_null(p);
    assert_non_null(strstr(err.message, "wrong base model"));
    ab_lm_free(&a);
    /* a model without those layers (fewer of them) */
    ab_lm_config c1 = c;
    c1.layers = 1;
    assert_int_equal(ab_lm_init(&a, &c1, 1), 0);
    assert_int_equal(ab_apply_expert(&a.m, files[1], sha, AB_APPLY_MERGED, &p, &err), EXPERT_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "is not a layer of this model"));
    ab_lm_free(&a);
    ab_lm_free(&base);
    ab_lm_free(&tuned);
    ab_lm_free(&lora);
}

static void test_mlp_merged_unmerged(void **state)
{
    (void)state;
    ab_mlp_config c = {.in = 20, .hidden = 16, .classes = 5};
    ab_mlp base, a, b;
    assert_int_equal(ab_mlp_init(&base, &c, 3), 0);
    char sha[65];
    expert_error err;
    assert_int_equal(ab_checkpoint_save(&base.m, path_of("mbase.safetensors"), "fmnist", "{}", sha, &err), EXPERT_OK);
    assert_int_equal(ab_lora_attach(&base.m, 2, 4.0, 7), 0);
    ab_rng r = ab_rng_make(8, 8);
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < (size_t)base.fc[i].out * 2; j++)
            base.fc[i].B[j] = (float)(0.3 * ab_rng_normal(&r));
    ab_expert_meta meta = {"m", "b", sha, NULL};
    assert_int_equal(ab_write_lora_expert(&base.m, path_of("mlora.expert"), &meta, &err), EXPERT_OK);
    float x[8 * 20];
    for (int i = 0; i < 160; i++)
        x[i] = (float)ab_rng_uniform(&r);
    int y[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    ab_applied *pa, *pb;
    assert_int_equal(ab_mlp_init(&a, &c, 3), 0);
    assert_int_equal(ab_mlp_init(&b, &c, 3), 0);
    assert_int_equal(ab_checkpoint_load(&a.m, path_of("mbase.safetensors"), &err), EXPERT_OK);
    assert_int_equal(ab_checkpoint_load(&b.m, path_of("mbase.safetensors"), &err), EXPERT_OK);
    assert_int_equal(ab_apply_expert(&a.m, path_of("mlora.expert"), sha, AB_APPLY_MERGED, &pa, &err), EXPERT_OK);
    assert_int_equal(ab_apply_expert(&b.m, path_of("mlora.expert"), sha, AB_APPLY_UNMERGED, &pb, &err), EXPERT_OK);
    assert_int_equal(ab_mlp_reserve(&a, 8, 0), 0);
    assert_int_equal(ab_mlp_reserve(&b, 8, 0), 0);
    uint8_t ca[8], cb[8];
    float la[8], lb[8];
    double l1 = ab_mlp_forward(&a, 8, x, y, ca, la), l2 = ab_mlp_forward(&b, 8, x, y, cb, lb);
    assert_true(fabs(l1 - l2) < 1e-5);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(ca[i], cb[i]);
        assert_true(fabsf(la[i] - lb[i]) < 1e-5f);
    }
    ab_applied_free(pa);
    ab_applied_free(pb);
    ab_mlp_free(&a);
    ab_mlp_free(&b);
    ab_mlp_free(&base);
}

static void test_checkpoint_roundtrip(void **state)
{
    (void)state;
    ab_lm_config c;
    lm_config(&c);
    ab_lm a, b;
    assert_int_equal(ab_lm_init(&a, &c, 11), 0);
    assert_int_equal(ab_lm_init(&b, &c, 12), 0);
    expert_error err;
    char sha[65], sha2[65], *task = NULL, *cfg = NULL;
    assert_int_equal(ab_checkpoint_save(&a.m, path_of("rt.safetensors"), "sql", "{\"x\":1}", sha, &err), EXPERT_OK);
    assert_int_equal(ab_checkpoint_info(path_of("rt.safetensors"), &task, &cfg, sha2, &err), EXPERT_OK);
    assert_string_equal(task, "sql");
    assert_string_equal(cfg, "{\"x\":1}");
    assert_string_equal(sha, sha2);
    assert_int_equal(ab_checkpoint_load(&b.m, path_of("rt.safetensors"), &err), EXPERT_OK);
    for (int i = 0; i < a.m.ntensors; i++)
        assert_memory_equal(a.m.tensors[i].w, b.m.tensors[i].w,
                            (size_t)a.m.tensors[i].rows * (size_t)a.m.tensors[i].cols * sizeof(float));
    free(task);
    free(cfg);
    /* a checkpoint of another shape is refused, naming the tensor */
    ab_lm_config c2 = c;
    c2.ffn = 20;
    ab_lm d;
    assert_int_equal(ab_lm_init(&d, &c2, 1), 0);
    assert_int_equal(ab_checkpoint_load(&d.m, path_of("rt.safetensors"), &err), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "gate_proj"));
    ab_lm_free(&a);
    ab_lm_free(&b);
    ab_lm_free(&d);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_ab_arms.XXXXXX", t != NULL ? t : "/tmp");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lm_merged_unmerged),
        cmocka_unit_test(test_mlp_merged_unmerged),
        cmocka_unit_test(test_checkpoint_roundtrip),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (rc == 0 && system(cmd) != 0)
        return 1;
    return rc;
}
