/* test_grad.c — every backward pass of nn.c and of both models against
 * central finite differences of the forward pass.
 *
 * Method: for a layer y = f(θ), the scalar L = Σ c·y with fixed random c
 * (binary64 sum) has ∂L/∂θ = backward(dy = c). Each checked entry θ_i is
 * perturbed by ±h and (L(θ+h) − L(θ−h)) / 2h compared with the analytic
 * value. Bound: with binary32 forward passes the difference quotient carries
 * a rounding error of about 2^-24·|L|/h plus the O(h²) truncation term; at
 * h = 1e-2 both stay below 1e-3 of the largest gradient entry for the sizes
 * used here, so the assertion is max|fd − an| <= 2e-3·max(|an|, 1e-3).
 * Whole models use a smaller h where the truncation term grows (the deeper
 * LM in linear mode: 3e-3) or where a step could cross a ReLU kink (the
 * MLP: 1e-3); the rounding term stays below the bound there too. */
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
#include "nn.h"

#define H_STEP 1e-2f
#define TOL 2e-3

static void fill(float *x, size_t n, double scale, ab_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * ab_rng_normal(r));
}

static double dot(const float *c, const float *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)c[i] * y[i];
    return s;
}

/* L(θ) for the layer under test, with θ in place. */
typedef double (*loss_fn)(void *ctx);

/* Compares an analytic gradient g [n] of θ [n] with finite differences on
 * (at most) `samples` entries spread over the tensor. */
static void check_h(const char *what, loss_fn f, void *ctx, float *theta, const float *g, size_t n,
                    size_t samples, float h)
{
    double maxan = 1e-3, maxdiff = 0.0;
    for (size_t i = 0; i < n; i++)
        maxan = fabs(g[i]) > maxan ? fabs(g[i]) : maxan;
    size_t step = n > samples ? n / samples : 1;
    for (size_t i = 0; i < n; i += step) {
        float keep = theta[i];
        theta[i] = keep + h;
        double lp = f(ctx);
        theta[i] = keep - h;
        double lm = f(ctx);
        theta[i] = keep;
        double fd = (lp - lm) / (2.0 * (double)h), d = fabs(fd - g[i]);
        maxdiff = d > maxdiff ? d : maxdiff;
    }
    if (maxdiff > TOL * maxan)
        fail_msg("%s: max |fd - analytic| = %.3g, max |analytic| = %.3g", what, maxdiff, maxan);
}

static void check(const char *what, loss_fn f, void *ctx, float *theta, const float *g, size_t n,
                  size_t samples)
{
    check_h(what, f, ctx, theta, g, n, samples, H_STEP);
}

/* ------------------------------------------------------------ linear */

typedef struct lin_ctx {
    ab_linear l;
    int N;
    float *x, *y, *xa, *c;
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *t = p;
    ab_linear_fwd(&t->l, t->N, t->x, t->y, t->xa);
    return dot(t->c, t->y, (size_t)t->N * (size_t)t->l.out);
}

static void test_linear(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(1, 1);
    lin_ctx t = {.N = 5};
    ab_linear *l = &t.l;
    l->out = 7;
    l->in = 6;
    l->r = 3;
    l->s = 1.5f;
    size_t N = 5, O = 7, I = 6, R = 3;
    l->W = malloc(O * I * 4), l->dW = calloc(O * I, 4), l->b = malloc(O * 4), l->db = calloc(O, 4);
    l->A = malloc(R * I * 4), l->dA = calloc(R * I, 4), l->B = malloc(O * R * 4), l->dB = calloc(O * R, 4);
    t.x = malloc(N * I * 4), t.y = malloc(N * O * 4), t.xa = malloc(N * R * 4), t.c = malloc(N * O * 4);
    float *dx = calloc(N * I, 4), *tmp = malloc(N * R * 4);
    fill(l->W, O * I, 0.5, &r), fill(l->b, O, 0.5, &r), fill(l->A, R * I, 0.5, &r), fill(l->B, O * R, 0.5, &r);
    fill(t.x, N * I, 1.0, &r), fill(t.c, N * O, 1.0, &r);
    lin_loss(&t);
    ab_linear_bwd(l, 5, t.x, t.xa, t.c, dx, tmp);
    check("linear dx", lin_loss, &t, t.x, dx, N * I, 1000);
    check("linear dW", lin_loss, &t, l->W, l->dW, O * I, 1000);
    check("linear db", lin_loss, &t, l->b, l->db, O, 1000);
    check("linear dA", lin_loss, &t, l->A, l->dA, R * I, 1000);
    check("linear dB", lin_loss, &t, l->B, l->dB, O * R, 1000);
    free(l->W), free(l->dW), free(l->b), free(l->db), free(l->A), free(l->dA), free(l->B), free(l->dB);
    free(t.x), free(t.y), free(t.xa), free(t.c), free(dx), free(tmp);
}

/* ------------------------------------------------------------ RMSNorm */

typedef struct norm_ctx {
    int N, d;
    float *x, *g, *y, *rstd, *c;
} norm_ctx;

static double norm_loss(void *p)
{
    norm_ctx *t = p;
    ab_rmsnorm_fwd(t->N, t->d, t->x, t->g, 1e-5f, t->y, t->rstd);
    return dot(t->c, t->y, (size_t)t->N * (size_t)t->d);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(2, 1);
    norm_ctx t = {.N = 4, .d = 9};
    size_t n = 36;
    t.x = malloc(n * 4), t.g = malloc(9 * 4), t.y = malloc(n * 4), t.rstd = malloc(4 * 4), t.c = malloc(n * 4);
    float *dx = calloc(n, 4), *dg = calloc(9, 4);
    fill(t.x, n, 1.0, &r), fill(t.g, 9, 1.0, &r), fill(t.c, n, 1.0, &r);
    norm_loss(&t);
    ab_rmsnorm_bwd(4, 9, t.x, t.g, t.rstd, t.c, dx, dg);
    check("rmsnorm dx", norm_loss, &t, t.x, dx, n, 1000);
    check("rmsnorm dg", norm_loss, &t, t.g, dg, 9, 1000);
    free(t.x), free(t.g), free(t.y), free(t.rstd), free(t.c), free(dx), free(dg);
}

/* --------------------------------------------------------------- RoPE */

/* RoPE is linear and orthogonal: its backward is the inverse rotation, so
 * the check is <rope(x), c> = <x, rope⁻¹(c)> and rope⁻¹(rope(x)) = x, plus
 * a norm-preservation check per head vector. */
static void test_rope(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(3, 1);
    int B = 2, T = 5, H = 2, hd = 6;
    size_t n = (size_t)(B * T * H * hd);
    float *cs = malloc((size_t)(T * hd / 2) * 4), *sn = malloc((size_t)(T * hd / 2) * 4);
    ab_rope_tables(T, hd, 10000.0, cs, sn);
    float *x = malloc(n * 4), *x0 = malloc(n * 4), *c = malloc(n * 4);
    fill(x, n, 1.0, &r), fill(c, n, 1.0, &r);
    memcpy(x0, x, n * 4);
    double before = dot(x, x, n);
    ab_rope(B, T, H, hd, cs, sn, x, 0);
    double lhs = dot(x, c, n), after = dot(x, x, n);
    ab_rope(B, T, H, hd, cs, sn, c, 1);
    double rhs = dot(x0, c, n);
    assert_true(fabs(lhs - rhs) <= 1e-5 * fabs(lhs) + 1e-5);
    assert_true(fabs(before - after) <= 1e-5 * before);
    ab_rope(B, T, H, hd, cs, sn, x, 1);
    for (size_t i = 0; i < n; i++)
        assert_true(fabsf(x[i] - x0[i]) <= 1e-5f);
    /* position 0 is the identity; position 1 of pair 0 rotates by 1 radian */
    assert_true(fabsf(cs[0] - 1.0f) < 1e-7f && fabsf(sn[0]) < 1e-7f);
    assert_true(fabsf(cs[hd / 2] - cosf(1.0f)) < 1e-6f && fabsf(sn[hd / 2] - sinf(1.0f)) < 1e-6f);
    free(cs), free(sn), free(x), free(x0), free(c);
}

/* ---------------------------------------------------------- attention */

typedef struct att_ctx {
    int B, T, H, hd;
    float *q, *k, *v, *P, *out, *c;
} att_ctx;

static double att_loss(void *p)
{
    att_ctx *t = p;
    ab_attention_fwd(t->B, t->T, t->H, t->hd, t->q, t->k, t->v, t->P, t->out);
    return dot(t->c, t->out, (size_t)(t->B * t->T * t->H * t->hd));
}

static void test_attention(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(4, 1);
    att_ctx t = {.B = 2, .T = 6, .H = 2, .hd = 4};
    size_t n = 2 * 6 * 2 * 4, np = 2 * 2 * 6 * 6;
    t.q = malloc(n * 4), t.k = malloc(n * 4), t.v = malloc(n * 4), t.out = malloc(n * 4), t.c = malloc(n * 4);
    t.P = malloc(np * 4);
    float *dq = calloc(n, 4), *dk = calloc(n, 4), *dv = calloc(n, 4), *sc = malloc(36 * 4);
    fill(t.q, n, 1.0, &r), fill(t.k, n, 1.0, &r), fill(t.v, n, 1.0, &r), fill(t.c, n, 1.0, &r);
    att_loss(&t);
    /* causality: row t of P has no weight beyond t, and sums to one */
    for (size_t bh = 0; bh < 4; bh++)
        for (int i = 0; i < 6; i++) {
            double s = 0.0;
            for (int j = 0; j < 6; j++) {
                float p = t.P[bh * 36 + (size_t)(i * 6 + j)];
                if (j > i)
                    assert_true(p == 0.0f);
                s += p;
            }
            assert_true(fabs(s - 1.0) < 1e-5);
        }
    ab_attention_bwd(2, 6, 2, 4, t.q, t.k, t.v, t.P, t.c, dq, dk, dv, sc);
    check("attention dq", att_loss, &t, t.q, dq, n, 1000);
    check("attention dk", att_loss, &t, t.k, dk, n, 1000);
    check("attention dv", att_loss, &t, t.v, dv, n, 1000);
    free(t.q), free(t.k), free(t.v), free(t.out), free(t.c), free(t.P), free(dq), free(dk), free(dv), free(sc);
}

/* ----------------------------------------------- SwiGLU, ReLU, xent */

typedef struct act_ctx {
    size_t n;
    float *g, *u, *m, *c;
} act_ctx;

static double swiglu_loss(void *p)
{
    act_ctx *t = p;
    ab_swiglu_fwd(t->n, t->g, t->u, t->m);
    return dot(t->c, t->m, t->n);
}

static double relu_loss(void *p)
{
    act_ctx *t = p;
    ab_relu_fwd(t->n, t->g, t->m);
    return dot(t->c, t->m, t->n);
}

static void test_activations(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(5, 1);
    act_ctx t = {.n = 40};
    t.g = malloc(160), t.u = malloc(160), t.m = malloc(160), t.c = malloc(160);
    float *dg = calloc(40, 4), *du = calloc(40, 4);
    fill(t.g, 40, 2.0, &r), fill(t.u, 40, 1.0, &r), fill(t.c, 40, 1.0, &r);
    swiglu_loss(&t);
    ab_swiglu_bwd(40, t.g, t.u, t.c, dg, du);
    check("swiglu dg", swiglu_loss, &t, t.g, dg, 40, 1000);
    check("swiglu du", swiglu_loss, &t, t.u, du, 40, 1000);
    /* ReLU away from its kink (|x| > h) */
    for (size_t i = 0; i < 40; i++)
        if (fabsf(t.g[i]) < 0.05f)
            t.g[i] = 0.5f;
    relu_loss(&t);
    ab_relu_bwd(40, t.m, t.c, dg);
    check("relu dx", relu_loss, &t, t.g, dg, 40, 1000);
    free(t.g), free(t.u), free(t.m), free(t.c), free(dg), free(du);
}

typedef struct xent_ctx {
    int N, V;
    float *z;
    int *target;
} xent_ctx;

static double xent_loss(void *p)
{
    xent_ctx *t = p;
    return ab_xent(t->N, t->V, t->z, t->target, 1.0f, NULL, NULL, NULL);
}

static void test_xent(void **state)
{
    (void)state;
    ab_rng r = ab_rng_make(6, 1);
    int target[6] = {0, 3, -1, 4, 2, 1};
    xent_ctx t = {.N = 6, .V = 5, .target = target};
    t.z = malloc(30 * 4);
    float *dz = calloc(30, 4);
    uint8_t ok[6];
    float lp[6];
    fill(t.z, 30, 2.0, &r);
    double loss = ab_xent(6, 5, t.z, target, 1.0f, dz, ok, lp);
    check("xent dlogits", xent_loss, &t, t.z, dz, 30, 1000);
    /* the ignored row has no gradient; the loss is the mean of -logp over 5 rows */
    for (int j = 0; j < 5; j++)
        assert_true(dz[10 + j] == 0.0f);
    double s = 0.0;
    for (int n = 0; n < 6; n++)
        if (target[n] >= 0) {
            double mx = -1e30, lse = 0.0;
            int am = 0;
            for (int j = 0; j < 5; j++)
                if (t.z[n * 5 + j] > mx)
                    mx = t.z[n * 5 + j], am = j;
            for (int j = 0; j < 5; j++)
                lse += exp(t.z[n * 5 + j] - mx);
            lse = mx + log(lse);
            assert_true(fabs(lp[n] - (t.z[n * 5 + target[n]] - lse)) < 1e-5);
            assert_int_equal(ok[n], am == target[n]);
            s -= t.z[n * 5 + target[n]] - lse;
        }
    assert_true(fabs(loss - s / 5) < 1e-9);
    free(t.z), free(dz);
}

/* ----------------------------------------------------- whole models */

typedef struct lm_ctx {
    ab_lm lm;
    int batch;
    int *tok, *tgt;
} lm_ctx;

static double lm_loss(void *p)
{
    lm_ctx *t = p;
    return ab_lm_forward(&t->lm, t->batch, t->tok, t->tgt, NULL, NULL);
}

static void lm_setup(lm_ctx *t, uint64_t seed)
{
    ab_lm_config c = {.vocab = 11, .d = 8, .layers = 2, .heads = 2, .ffn = 12, .ctx = 5,
                      .rope_theta = 10000.0, .norm_eps = 1e-5f};
    assert_int_equal(ab_lm_init(&t->lm, &c, seed), 0);
    /* larger weights than the init, so that every path carries gradient */
    ab_rng r = ab_rng_make(seed, 2);
    for (int i = 0; i < t->lm.m.ntensors; i++) {
        ab_named *n = &t->lm.m.tensors[i];
        if (n->cols > 1)
            fill(n->w, (size_t)n->rows * (size_t)n->cols, 0.4, &r);
        else
            for (int j = 0; j < n->rows; j++)
                n->w[j] = 1.0f + 0.3f * (float)ab_rng_normal(&r);
    }
    t->batch = 2;
    t->tok = malloc(10 * sizeof(int)), t->tgt = malloc(10 * sizeof(int));
    for (int i = 0; i < 10; i++) {
        t->tok[i] = (int)ab_rng_below(&r, 11);
        t->tgt[i] = i == 3 ? -1 : (int)ab_rng_below(&r, 11);
    }
}

static void test_lm_all(void **state)
{
    (void)state;
    lm_ctx t;
    lm_setup(&t, 7);
    assert_int_equal(ab_lm_reserve(&t.lm, 2, 0), 0);
    assert_int_equal(ab_model_set_mode(&t.lm.m, AB_MODE_ALL), 0);
    assert_int_equal(t.lm.m.nparams, t.lm.m.ntensors);
    lm_loss(&t);
    ab_lm_backward(&t.lm, 2, t.tok, t.tgt);
    for (int i = 0; i < t.lm.m.nparams; i++) {
        ab_param *p = &t.lm.m.params[i];
        check(p->name, lm_loss, &t, p->w, p->g, p->n, 60);
    }
    ab_lm_free(&t.lm);
    free(t.tok), free(t.tgt);
}

static void test_lm_lora(void **state)
{
    (void)state;
    lm_ctx t;
    lm_setup(&t, 8);
    assert_int_equal(ab_lora_attach(&t.lm.m, 3, 6.0, 9), 0);
    /* B starts at zero (PEFT); give it values so that dA is not trivially 0 */
    ab_rng r = ab_rng_make(8, 3);
    for (int i = 0; i < t.lm.m.nlin; i++)
        fill(t.lm.m.lin[i]->B, (size_t)t.lm.m.lin[i]->out * 3, 0.3, &r);
    assert_int_equal(ab_lm_reserve(&t.lm, 2, 3), 0);
    assert_int_equal(ab_model_set_mode(&t.lm.m, AB_MODE_LORA), 0);
    assert_int_equal(t.lm.m.nparams, 2 * t.lm.m.nlin);
    lm_loss(&t);
    ab_lm_backward(&t.lm, 2, t.tok, t.tgt);
    for (int i = 0; i < t.lm.m.nparams; i++) {
        ab_param *p = &t.lm.m.params[i];
        check(p->name, lm_loss, &t, p->w, p->g, p->n, 40);
    }
    ab_lm_free(&t.lm);
    free(t.tok), free(t.tgt);
}

static void test_lm_linear_mode(void **state)
{
    (void)state;
    lm_ctx t;
    lm_setup(&t, 9);
    assert_int_equal(ab_lm_reserve(&t.lm, 2, 0), 0);
    assert_int_equal(ab_model_set_mode(&t.lm.m, AB_MODE_LINEAR), 0);
    assert_int_equal(t.lm.m.nparams, t.lm.m.nlin);
    assert_null(t.lm.demb);
    lm_loss(&t);
    ab_lm_backward(&t.lm, 2, t.tok, t.tgt);
    for (int i = 0; i < t.lm.m.nparams; i++) {
        ab_param *p = &t.lm.m.params[i];
        check_h(p->name, lm_loss, &t, p->w, p->g, p->n, 40, 3e-3f);
    }
    ab_lm_free(&t.lm);
    free(t.tok), free(t.tgt);
}

typedef struct mlp_ctx {
    ab_mlp mlp;
    float *x;
    int *y;
} mlp_ctx;

static double mlp_loss(void *p)
{
    mlp_ctx *t = p;
    return ab_mlp_forward(&t->mlp, 4, t->x, t->y, NULL, NULL);
}

static void test_mlp(void **state)
{
    (void)state;
    mlp_ctx t;
    ab_mlp_config c = {.in = 9, .hidden = 7, .classes = 4};
    assert_int_equal(ab_mlp_init(&t.mlp, &c, 10), 0);
    ab_rng r = ab_rng_make(10, 2);
    for (int i = 0; i < 3; i++)
        fill(t.mlp.fc[i].b, (size_t)t.mlp.fc[i].out, 0.3, &r);
    t.x = malloc(36 * 4);
    fill(t.x, 36, 1.0, &r);
    int y[4] = {0, 3, 1, 2};
    t.y = y;
    assert_int_equal(ab_mlp_reserve(&t.mlp, 4, 2), 0);
    assert_int_equal(ab_model_set_mode(&t.mlp.m, AB_MODE_ALL), 0);
    mlp_loss(&t);
    ab_mlp_backward(&t.mlp, 4, t.x, y);
    for (int i = 0; i < t.mlp.m.nparams; i++)
        check_h(t.mlp.m.params[i].name, mlp_loss, &t, t.mlp.m.params[i].w, t.mlp.m.params[i].g,
                t.mlp.m.params[i].n, 200, 1e-3f);
    assert_int_equal(ab_lora_attach(&t.mlp.m, 2, 4.0, 11), 0);
    for (int i = 0; i < 3; i++)
        fill(t.mlp.fc[i].B, (size_t)t.mlp.fc[i].out * 2, 0.3, &r);
    assert_int_equal(ab_model_set_mode(&t.mlp.m, AB_MODE_LORA), 0);
    mlp_loss(&t);
    ab_mlp_backward(&t.mlp, 4, t.x, y);
    for (int i = 0; i < t.mlp.m.nparams; i++)
        check_h(t.mlp.m.params[i].name, mlp_loss, &t, t.mlp.m.params[i].w, t.mlp.m.params[i].g,
                t.mlp.m.params[i].n, 200, 1e-3f);
    ab_mlp_free(&t.mlp);
    free(t.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),     cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),       cmocka_unit_test(test_attention),
        cmocka_unit_test(test_activations), cmocka_unit_test(test_xent),
        cmocka_unit_test(test_lm_all),     cmocka_unit_test(test_lm_lora),
        cmocka_unit_test(test_lm_linear_mode), cmocka_unit_test(test_mlp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
