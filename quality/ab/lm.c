/* lm.c — the transformer language model of the SQL task (see models.h).
 *
 * One block, pre-norm, as Llama/Qwen:
 *   h = RMSNorm(x)·g_attn;  q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ;  RoPE(q), RoPE(k)
 *   x = x + softmax(q·kᵀ/√hd, causal)·v·Woᵀ
 *   h = RMSNorm(x)·g_mlp;   x = x + (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ
 * then logits = RMSNorm(x)·g_final·Eᵀ with E the token embedding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_PER_BLOCK };

struct ab_lm_acts {
    size_t N, rmax;
    /* per layer, [layers][...] */
    float *x_in, *h1, *r1, *q, *k, *v, *P, *att, *x_mid, *h2, *r2, *gt, *up, *mm, *xa;
    float *x_out, *hf, *rf, *logits;
    /* backward scratch */
    float *dx, *dh, *dq, *dk, *dv, *datt, *dgt, *dup, *dmm, *dlogits, *tmp, *dS, *y;
};

static ab_linear *block_linear(ab_lm_block *b, int j)
{
    ab_linear *t[LIN_PER_BLOCK] = {&b->q, &b->k, &b->v, &b->o, &b->gate, &b->up, &b->down};
    return t[j];
}

static float *new_tensor(ab_model *m, const char *name, int rows, int cols, float **gslot, int target)
{
    float *w = calloc((size_t)rows * (size_t)cols, sizeof *w);
    if (w != NULL && ab_model_add_tensor(m, name, w, rows, cols, gslot, target) != 0) {
        free(w);
        w = NULL;
    }
    return w;
}

static void fill_normal(float *w, size_t n, double std, ab_rng *r)
{
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(std * ab_rng_normal(r));
}

int ab_lm_init(ab_lm *lm, const ab_lm_config *c, uint64_t seed)
{
    memset(lm, 0, sizeof *lm);
    if (c->vocab < 2 || c->d < 2 || c->layers < 1 || c->heads < 1 || c->d % c->heads != 0 ||
        (c->d / c->heads) % 2 != 0 || c->ffn < 1 || c->ctx < 2 ||
        c->layers * LIN_PER_BLOCK > AB_MAX_LINEAR || 3 + 2 * c->layers * 5 > AB_MAX_TENSORS)
        return -1;
    lm->c = *c;
    ab_model *m = &lm->m;
    ab_rng rng = ab_rng_make(seed, 0x4C4D /* "LM" */);
    char name[160];
    lm->emb = new_tensor(m, "model.embed_tokens.weight", c->vocab, c->d, &lm->demb, 0);
    if (lm->emb == NULL)
        return -1;
    fill_normal(lm->emb, (size_t)c->vocab * (size_t)c->d, 0.02, &rng);
    lm->blk = calloc((size_t)c->layers, sizeof *lm->blk);
    if (lm->blk == NULL)
        return -1;
    static const char *const lin_names[LIN_PER_BLOCK] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    double resid_std = 0.02 / sqrt(2.0 * c->layers);
    for (int l = 0; l < c->layers; l++) {
        ab_lm_block *b = &lm->blk[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if ((b->g_attn = new_tensor(m, name, c->d, 1, &b->dg_attn, 0)) == NULL)
            return -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if ((b->g_mlp = new_tensor(m, name, c->d, 1, &b->dg_mlp, 0)) == NULL)
            return -1;
        for (int i = 0; i < c->d; i++)
            b->g_attn[i] = b->g_mlp[i] = 1.0f;
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            ab_linear *L = block_linear(b, j);
            int mlp_in = j == LIN_DOWN, mlp_out = j == LIN_GATE || j == LIN_UP;
            L->out = mlp_out ? c->ffn : c->d;
            L->in = mlp_in ? c->ffn : c->d;
            snprintf(L->name, sizeof L->name, "model.layers.%d.%s", l, lin_names[j]);
            snprintf(name, sizeof name, "%s.weight", L->name);
            if ((L->W = new_tensor(m, name, L->out, L->in, &L->dW, 1)) == NULL)
                return -1;
            fill_normal(L->W, (size_t)L->out * (size_t)L->in, j == LIN_O || j == LIN_DOWN ? resid_std : 0.02,
                        &rng);
            m->lin[m->nlin++] = L;
        }
    }
    if ((lm->g_final = new_tensor(m, "model.norm.weight", c->d, 1, &lm->dg_final, 0)) == NULL)
        return -1;
    for (int i = 0; i < c->d; i++)
        lm->g_final[i] = 1.0f;
    snprintf(lm->head.name, sizeof lm->head.name, "lm_head");
    lm->head.out = c->vocab;
    lm->head.in = c->d;
    lm->head.W = lm->emb;
    int hd = c->d / c->heads;
    lm->rope_cos = malloc((size_t)c->ctx * (size_t)(hd / 2) * sizeof(float));
    lm->rope_sin = malloc((size_t)c->ctx * (size_t)(hd / 2) * sizeof(float));
    if (lm->rope_cos == NULL || lm->rope_sin == NULL)
        return -1;
    ab_rope_tables(c->ctx, hd, c->rope_theta, lm->rope_cos, lm->rope_sin);
    return 0;
}

static void acts_free(ab_lm_acts *a)
{
    if (a == NULL)
        return;
    float **all[] = {&a->x_in, &a->h1, &a->r1, &a->q, &a->k, &a->v, &a->P, &a->att, &a->x_mid, &a->h2,
                     &a->r2, &a->gt, &a->up, &a->mm, &a->xa, &a->x_out, &a->hf, &a->rf, &a->logits,
                     &a->dx, &a->dh, &a->dq, &a->dk, &a->dv, &a->datt, &a->dgt, &a->dup, &a->dmm,
                     &a->dlogits, &a->tmp, &a->dS, &a->y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(*all[i]);
    free(a);
}

void ab_lm_free(ab_lm *lm)
{
    ab_model_free_tensors(&lm->m);
    free(lm->blk);
    free(lm->rope_cos);
    free(lm->rope_sin);
    acts_free(lm->a);
    memset(lm, 0, sizeof *lm);
}

static float *fbuf(size_t n)
{
    return malloc((n > 0 ? n : 1) * sizeof(float));
}

int ab_lm_reserve(ab_lm *lm, int batch, int rmax)
{
    const ab_lm_config *c = &lm->c;
    if (lm->a != NULL && lm->batch >= batch && lm->a->rmax >= (size_t)rmax)
        return 0;
    acts_free(lm->a);
    lm->a = NULL;
    ab_lm_acts *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -1;
    size_t N = (size_t)batch * (size_t)c->ctx, L = (size_t)c->layers, d = (size_t)c->d,
           F = (size_t)c->ffn, V = (size_t)c->vocab, TT = (size_t)c->ctx * (size_t)c->ctx;
    a->N = N;
    a->rmax = (size_t)(rmax > 0 ? rmax : 0);
    int ok = 1;
#define ALLOC(p, n) ok &= ((p) = fbuf(n)) != NULL
    ALLOC(a->x_in, L * N * d);
    ALLOC(a->h1, L * N * d);
    ALLOC(a->r1, L * N);
    ALLOC(a->q, L * N * d);
    ALLOC(a->k, L * N * d);
    ALLOC(a->v, L * N * d);
    ALLOC(a->P, L * (size_t)batch * (size_t)c->heads * TT);
    ALLOC(a->att, L * N * d);
    ALLOC(a->x_mid, L * N * d);
    ALLOC(a->h2, L * N * d);
    ALLOC(a->r2, L * N);
    ALLOC(a->gt, L * N * F);
    ALLOC(a->up, L * N * F);
    ALLOC(a->mm, L * N * F);
    ALLOC(a->xa, L * LIN_PER_BLOCK * N * a->rmax);
    ALLOC(a->x_out, N * d);
    ALLOC(a->hf, N * d);
    ALLOC(a->rf, N);
    ALLOC(a->logits, N * V);
    ALLOC(a->dx, N * d);
    ALLOC(a->dh, N * d);
    ALLOC(a->dq, N * d);
    ALLOC(a->dk, N * d);
    ALLOC(a->dv, N * d);
    ALLOC(a->datt, N * d);
    ALLOC(a->dgt, N * F);
    ALLOC(a->dup, N * F);
    ALLOC(a->dmm, N * F);
    ALLOC(a->dlogits, N * V);
    ALLOC(a->tmp, N * a->rmax);
    ALLOC(a->dS, TT);
    ALLOC(a->y, N * d);
#undef ALLOC
    if (!ok) {
        acts_free(a);
        return -1;
    }
    lm->a = a;
    lm->batch = batch;
    return 0;
}

static float *xa_slot(const ab_lm *lm, int l, int j)
{
    return lm->a->xa + ((size_t)l * LIN_PER_BLOCK + (size_t)j) * lm->a->N * lm->a->rmax;
}

double ab_lm_forward(ab_lm *lm, int batch, const int *tokens, const int *targets, uint8_t *correct,
                     float *logp)
{
    const ab_lm_config *c = &lm->c;
    ab_lm_acts *a = lm->a;
    int T = c->ctx, H = c->heads, hd = c->d / c->heads, N = batch * T;
    size_t Nd = (size_t)N * (size_t)c->d, NF = (size_t)N * (size_t)c->ffn;
    size_t PP = (size_t)batch * (size_t)H * (size_t)T * (size_t)T;
    for (int n = 0; n < N; n++)
        memcpy(a->x_in + (size_t)n * (size_t)c->d, lm->emb + (size_t)tokens[n] * (size_t)c->d,
               (size_t)c->d * sizeof(float));
    for (int l = 0; l < c->layers; l++) {
        ab_lm_block *b = &lm->blk[l];
        float *X = a->x_in + (size_t)l * Nd, *h1 = a->h1 + (size_t)l * Nd, *q = a->q + (size_t)l * Nd, *k = a->k + (size_t)l * Nd,
              *v = a->v + (size_t)l * Nd, *att = a->att + (size_t)l * Nd, *xm = a->x_mid + (size_t)l * Nd, *h2 = a->h2 + (size_t)l * Nd;
        ab_rmsnorm_fwd(N, c->d, X, b->g_attn, c->norm_eps, h1, a->r1 + (size_t)l * (size_t)N);
        ab_linear_fwd(&b->q, N, h1, q, xa_slot(lm, l, LIN_Q));
        ab_linear_fwd(&b->k, N, h1, k, xa_slot(lm, l, LIN_K));
        ab_linear_fwd(&b->v, N, h1, v, xa_slot(lm, l, LIN_V));
        ab_rope(batch, T, H, hd, lm->rope_cos, lm->rope_sin, q, 0);
        ab_rope(batch, T, H, hd, lm->rope_cos, lm->rope_sin, k, 0);
        ab_attention_fwd(batch, T, H, hd, q, k, v, a->P + (size_t)l * PP, att);
        ab_linear_fwd(&b->o, N, att, a->y, xa_slot(lm, l, LIN_O));
        for (size_t i = 0; i < Nd; i++)
            xm[i] = X[i] + a->y[i];
        ab_rmsnorm_fwd(N, c->d, xm, b->g_mlp, c->norm_eps, h2, a->r2 + (size_t)l * (size_t)N);
        float *gt = a->gt + (size_t)l * NF, *up = a->up + (size_t)l * NF, *mm = a->mm + (size_t)l * NF;
        ab_linear_fwd(&b->gate, N, h2, gt, xa_slot(lm, l, LIN_GATE));
        ab_linear_fwd(&b->up, N, h2, up, xa_slot(lm, l, LIN_UP));
        ab_swiglu_fwd(NF, gt, up, mm);
        ab_linear_fwd(&b->down, N, mm, a->y, xa_slot(lm, l, LIN_DOWN));
        float *next = l + 1 < c->layers ? a->x_in + (size_t)(l + 1) * Nd : a->x_out;
        for (size_t i = 0; i < Nd; i++)
            next[i] = xm[i] + a->y[i];
    }
    ab_rmsnorm_fwd(N, c->d, a->x_out, lm->g_final, c->norm_eps, a->hf, a->rf);
    ab_linear_fwd(&lm->head, N, a->hf, a->logits, NULL);
    return ab_xent(N, c->vocab, a->logits, targets, 1.0f, NULL, correct, logp);
}

const float *ab_lm_logits(const ab_lm *lm)
{
    return lm->a->logits;
}

void ab_lm_backward(ab_lm *lm, int batch, const int *tokens, const int *targets)
{
    const ab_lm_config *c = &lm->c;
    ab_lm_acts *a = lm->a;
    int T = c->ctx, H = c->heads, hd = c->d / c->heads, N = batch * T;
    size_t Nd = (size_t)N * (size_t)c->d, NF = (size_t)N * (size_t)c->ffn;
    size_t PP = (size_t)batch * (size_t)H * (size_t)T * (size_t)T;
    memset(a->dlogits, 0, (size_t)N * (size_t)c->vocab * sizeof(float));
    ab_xent(N, c->vocab, a->logits, targets, 1.0f, a->dlogits, NULL, NULL);
    lm->head.dW = lm->demb; /* tied: the head's gradient is the embedding's */
    memset(a->dh, 0, Nd * sizeof(float));
    ab_linear_bwd(&lm->head, N, a->hf, NULL, a->dlogits, a->dh, NULL);
    memset(a->dx, 0, Nd * sizeof(float));
    ab_rmsnorm_bwd(N, c->d, a->x_out, lm->g_final, a->rf, a->dh, a->dx, lm->dg_final);
    /* a->dx now holds dL/d(residual stream) after the last block */
    for (int l = c->layers - 1; l >= 0; l--) {
        ab_lm_block *b = &lm->blk[l];
        float *X = a->x_in + (size_t)l * Nd, *h1 = a->h1 + (size_t)l * Nd, *q = a->q + (size_t)l * Nd, *k = a->k + (size_t)l * Nd,
              *v = a->v + (size_t)l * Nd, *att = a->att + (size_t)l * Nd, *xm = a->x_mid + (size_t)l * Nd, *h2 = a->h2 + (size_t)l * Nd;
        float *gt = a->gt + (size_t)l * NF, *up = a->up + (size_t)l * NF, *mm = a->mm + (size_t)l * NF;
        /* MLP branch */
        memset(a->dmm, 0, NF * sizeof(float));
        ab_linear_bwd(&b->down, N, mm, xa_slot(lm, l, LIN_DOWN), a->dx, a->dmm, a->tmp);
        memset(a->dgt, 0, NF * sizeof(float));
        memset(a->dup, 0, NF * sizeof(float));
        ab_swiglu_bwd(NF, gt, up, a->dmm, a->dgt, a->dup);
        memset(a->dh, 0, Nd * sizeof(float));
        ab_linear_bwd(&b->gate, N, h2, xa_slot(lm, l, LIN_GATE), a->dgt, a->dh, a->tmp);
        ab_linear_bwd(&b->up, N, h2, xa_slot(lm, l, LIN_UP), a->dup, a->dh, a->tmp);
        ab_rmsnorm_bwd(N, c->d, xm, b->g_mlp, a->r2 + (size_t)l * (size_t)N, a->dh, a->dx, b->dg_mlp);
        /* attention branch; a->dx is dL/dx_mid */
        memset(a->datt, 0, Nd * sizeof(float));
        ab_linear_bwd(&b->o, N, att, xa_slot(lm, l, LIN_O), a->dx, a->datt, a->tmp);
        memset(a->dq, 0, Nd * sizeof(float));
        memset(a->dk, 0, Nd * sizeof(float));
        memset(a->dv, 0, Nd * sizeof(float));
        ab_attention_bwd(batch, T, H, hd, q, k, v, a->P + (size_t)l * PP, a->datt, a->dq, a->dk, a->dv, a->dS);
        ab_rope(batch, T, H, hd, lm->rope_cos, lm->rope_sin, a->dq, 1);
        ab_rope(batch, T, H, hd, lm->rope_cos, lm->rope_sin, a->dk, 1);
        /* below the first block only the embedding needs dL/dx */
        int need_dx = l > 0 || lm->demb != NULL || b->dg_attn != NULL;
        float *dh = need_dx ? a->dh : NULL;
        if (dh != NULL)
            memset(dh, 0, Nd * sizeof(float));
        ab_linear_bwd(&b->q, N, h1, xa_slot(lm, l, LIN_Q), a->dq, dh, a->tmp);
        ab_linear_bwd(&b->k, N, h1, xa_slot(lm, l, LIN_K), a->dk, dh, a->tmp);
        ab_linear_bwd(&b->v, N, h1, xa_slot(lm, l, LIN_V), a->dv, dh, a->tmp);
        if (dh != NULL)
            ab_rmsnorm_bwd(N, c->d, X, b->g_attn, a->r1 + (size_t)l * (size_t)N, dh, a->dx, b->dg_attn);
    }
    if (lm->demb != NULL)
        for (int n = 0; n < N; n++) {
            float *row = lm->demb + (size_t)tokens[n] * (size_t)c->d;
            const float *g = a->dx + (size_t)n * (size_t)c->d;
            for (int i = 0; i < c->d; i++)
                row[i] += g[i];
        }
}

double ab_lm_forward_flops(const ab_lm *lm, int batch)
{
    int N = batch * lm->c.ctx;
    double f = ab_linear_flops(&lm->head, N);
    for (int i = 0; i < lm->m.nlin; i++)
        f += ab_linear_flops(lm->m.lin[i], N);
    return f + lm->c.layers * ab_attention_flops(batch, lm->c.ctx, lm->c.heads, lm->c.d / lm->c.heads);
}
