/*
 * nn.h — the layers the A/B models are made of, forward and backward, in
 * plain C over OpenBLAS sgemm (llm.c style: one function per direction, the
 * activations a backward pass needs are kept by the caller).
 *
 * Conventions: row-major binary32; a linear layer has W [out, in] and computes
 * y = x·Wᵀ + b (PyTorch's convention, the one of expert_adapter.h); x is
 * [N, in] with N = batch·time rows. Every backward function ADDS into the
 * gradient buffers it is given (activation and parameter gradients alike), so
 * residual branches sum without copies; callers zero them first.
 */
#ifndef AB_NN_H
#define AB_NN_H

#include <stddef.h>
#include <stdint.h>

/* ----------------------------------------------------------------- rng */

/* splitmix64: a small seeded generator; every stream is derived from a seed
 * and a purpose tag so runs are reproducible and independent of order. */
typedef struct ab_rng {
    uint64_t s;
} ab_rng;
ab_rng ab_rng_make(uint64_t seed, uint64_t tag);
uint64_t ab_rng_u64(ab_rng *r);
double ab_rng_uniform(ab_rng *r);            /* [0, 1) */
double ab_rng_normal(ab_rng *r);             /* N(0, 1), Box-Muller */
uint64_t ab_rng_below(ab_rng *r, uint64_t n); /* [0, n), n > 0 */

/* -------------------------------------------------------------- linear */

/* A linear layer, optionally with a LoRA branch (PEFT's formula):
 *   y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ,  A [r, in], B [out, r], s = alpha / r.
 * Gradient pointers are NULL for frozen parameters. */
typedef struct ab_linear {
    char name[96];       /* PEFT module path, e.g. model.layers.0.self_attn.q_proj */
    int out, in;
    float *W, *dW;       /* [out, in] */
    float *b, *db;       /* [out], NULL when the layer has no bias */
    int r;               /* LoRA rank, 0 = no LoRA branch */
    float s;
    float *A, *dA;       /* [r, in] */
    float *B, *dB;       /* [out, r] */
    /* When set, the forward pass is expert_adapter_forward of this module
     * over W and b (an .expert applied unmerged; evaluation only). */
    const struct expert_adapter *adapter;
} ab_linear;

/* y [N, out] = layer(x); xa [N, r] receives x·Aᵀ (kept for backward; NULL
 * when r = 0). */
void ab_linear_fwd(const ab_linear *l, int N, const float *x, float *y, float *xa);
/* Adds dL/dx into dx (NULL: not needed) and the parameter gradients that are
 * not NULL. tmp [N, r] scratch (NULL when r = 0). */
void ab_linear_bwd(const ab_linear *l, int N, const float *x, const float *xa, const float *dy,
                   float *dx, float *tmp);
/* FLOPs of one forward pass (multiply-add = 2). */
double ab_linear_flops(const ab_linear *l, int N);

/* ------------------------------------------------------------ RMSNorm */

/* y = x / rms(x) ⊙ g, rms(x) = sqrt(mean(x²) + eps), per row of [N, d];
 * rstd [N] receives 1 / rms for backward. */
void ab_rmsnorm_fwd(int N, int d, const float *x, const float *g, float eps, float *y, float *rstd);
void ab_rmsnorm_bwd(int N, int d, const float *x, const float *g, const float *rstd, const float *dy,
                    float *dx, float *dg /* may be NULL */);

/* --------------------------------------------------------------- RoPE */

/* Rotary position embedding (the rotate-half form of Llama/Qwen) applied in
 * place to x [B·T, H·hd] at positions 0..T-1 of each sequence; cos/sin tables
 * [T, hd/2]. Backward is the inverse rotation (the map is orthogonal), so
 * inverse = 1 applies it to a gradient. */
void ab_rope_tables(int T, int hd, double theta, float *cosv, float *sinv);
void ab_rope(int B, int T, int H, int hd, const float *cosv, const float *sinv, float *x, int inverse);

/* ------------------------------------------- causal multi-head attention */

/* q, k, v [B·T, H·hd] (rows are positions); out [B·T, H·hd]; probs [B, H, T, T]
 * receives the softmax of q·kᵀ/√hd with the causal mask (zeros above the
 * diagonal). */
void ab_attention_fwd(int B, int T, int H, int hd, const float *q, const float *k, const float *v,
                      float *probs, float *out);
/* Adds into dq, dk, dv. scratch [T, T]. */
void ab_attention_bwd(int B, int T, int H, int hd, const float *q, const float *k, const float *v,
                      const float *probs, const float *dout, float *dq, float *dk, float *dv,
                      float *scratch);
double ab_attention_flops(int B, int T, int H, int hd);

/* --------------------------------------------------- activations */

/* m = silu(g) ⊙ u elementwise over n values (SwiGLU). */
void ab_swiglu_fwd(size_t n, const float *g, const float *u, float *m);
void ab_swiglu_bwd(size_t n, const float *g, const float *u, const float *dm, float *dg, float *du);
/* y = max(x, 0); backward masks by y > 0 (works in place: dx may be dy). */
void ab_relu_fwd(size_t n, const float *x, float *y);
void ab_relu_bwd(size_t n, const float *y, const float *dy, float *dx);

/* ------------------------------------------------ softmax cross-entropy */

/* Mean cross-entropy over the rows with target >= 0 (rows with target < 0
 * are ignored); returns the mean loss in binary64. When dlogits is not NULL,
 * adds scale·(softmax − onehot) / count into it. correct (may be NULL) gets
 * 1 where argmax == target (the first maximum on ties), logp (may be NULL)
 * the log-probability of the target. */
double ab_xent(int N, int V, const float *logits, const int *target, float scale, float *dlogits,
               uint8_t *correct, float *logp);

/* ------------------------------------------------------------ AdamW */

typedef struct ab_param {
    const char *name;
    float *w, *g;
    size_t n;
    int decay;        /* weight decay applies (matrices; not norms, not LoRA B) */
} ab_param;

typedef struct ab_adamw {
    size_t n_params, total;
    ab_param *p;      /* borrowed */
    float *m, *v;     /* moments, concatenated in parameter order */
    double beta1, beta2, eps, wd;
    long step;
} ab_adamw;

int ab_adamw_init(ab_adamw *o, ab_param *p, size_t n, double wd);
void ab_adamw_free(ab_adamw *o);
/* Global-norm clipping to clip (<= 0: none), then one AdamW step at lr.
 * Returns the gradient norm before clipping. */
double ab_adamw_step(ab_adamw *o, double lr, double clip);
void ab_zero_grads(ab_param *p, size_t n);
/* Learning rate at step t of n: linear warmup over `warmup` steps, then
 * cosine decay to 10% of peak. */
double ab_lr_at(double peak, long t, long n, long warmup);

/* Monotonic seconds. */
double ab_now(void);

#endif
