/*
 * models.h — the two models of the A/B: a small decoder-only transformer
 * language model (byte vocabulary; pre-norm RMSNorm, rotary positions,
 * causal multi-head attention, SwiGLU MLP, tied embeddings) and an MLP
 * classifier. Both expose their tensors by name (the checkpoint) and their
 * linear layers by PEFT module path (the adapter targets), which is all the
 * expert code in arms.c needs.
 *
 * Training modes say which gradients exist: everything (pre-training the
 * base), only the weights of the adapter targets (the dense fine-tune whose
 * change the compressors see), or only LoRA factors.
 */
#ifndef AB_MODELS_H
#define AB_MODELS_H

#include "nn.h"

typedef enum ab_mode {
    AB_MODE_EVAL = 0,    /* no gradients */
    AB_MODE_ALL = 1,     /* every parameter */
    AB_MODE_LINEAR = 2,  /* the weights W of the adapter targets */
    AB_MODE_LORA = 3     /* LoRA A and B of the adapter targets */
} ab_mode;

typedef struct ab_named {
    char name[96];       /* checkpoint name, e.g. model.layers.0.self_attn.q_proj.weight */
    float *w;
    int rows, cols;      /* cols = 1 for vectors */
    float **gslot;       /* where the model looks for this tensor's gradient */
    int target;          /* the W of an adapter target (trained in AB_MODE_LINEAR) */
} ab_named;

#define AB_MAX_TENSORS 128
#define AB_MAX_LINEAR 64

/* What both models share: the named tensors and the adapter targets. */
typedef struct ab_model {
    ab_named tensors[AB_MAX_TENSORS];
    int ntensors;
    ab_linear *lin[AB_MAX_LINEAR];
    int nlin;
    ab_mode mode;
    ab_param params[AB_MAX_TENSORS + AB_MAX_LINEAR];
    int nparams;
} ab_model;

/* Allocates the gradients of a mode (frees the previous ones) and lists the
 * trainable parameters in m->params. LoRA mode needs the branches attached
 * (arms.c: ab_lora_attach). Returns 0, or -1 when out of memory. */
int ab_model_set_mode(ab_model *m, ab_mode mode);
void ab_model_free_grads(ab_model *m);
/* Registers a tensor (the model owns w from now on); 0 or -1 when full. */
int ab_model_add_tensor(ab_model *m, const char *name, float *w, int rows, int cols, float **gslot,
                        int target);
/* Frees every tensor, gradient and LoRA branch. */
void ab_model_free_tensors(ab_model *m);
/* The adapter target whose module path is `path` (with or without the
 * "base_model.model." prefix PEFT adds), or NULL. */
ab_linear *ab_model_find(ab_model *m, const char *path);

/* ------------------------------------------------------------------ LM */

typedef struct ab_lm_config {
    int vocab, d, layers, heads, ffn, ctx;
    double rope_theta;
    float norm_eps;
} ab_lm_config;

typedef struct ab_lm_block {
    float *g_attn, *g_mlp, *dg_attn, *dg_mlp;
    ab_linear q, k, v, o, gate, up, down;
} ab_lm_block;

typedef struct ab_lm_acts ab_lm_acts;

typedef struct ab_lm {
    ab_model m;          /* first member: an ab_lm is an ab_model */
    ab_lm_config c;
    float *emb, *demb;   /* [vocab, d], tied with the output head */
    float *g_final, *dg_final;
    ab_linear head;      /* W = emb */
    ab_lm_block *blk;
    float *rope_cos, *rope_sin;
    ab_lm_acts *a;
    int batch;
} ab_lm;

/* Random initialisation (GPT-2 style: N(0, 0.02), residual projections
 * scaled by 1/√(2·layers)); returns 0 or -1 (out of memory, bad config). */
int ab_lm_init(ab_lm *lm, const ab_lm_config *c, uint64_t seed);
void ab_lm_free(ab_lm *lm);
/* Allocates activations for `batch` sequences of c.ctx tokens and LoRA rank
 * up to rmax; 0 or -1. */
int ab_lm_reserve(ab_lm *lm, int batch, int rmax);
/* Forward pass over tokens [batch·ctx]; the loss is the mean cross-entropy
 * over the positions whose target is >= 0 (targets [batch·ctx], the next
 * token). correct/logp (may be NULL) per position as ab_xent. */
double ab_lm_forward(ab_lm *lm, int batch, const int *tokens, const int *targets, uint8_t *correct,
                     float *logp);
/* The logits [batch·ctx, vocab] of the last forward pass. */
const float *ab_lm_logits(const ab_lm *lm);
/* Backward pass of the last forward (same arguments): adds the gradients of
 * the current mode. */
void ab_lm_backward(ab_lm *lm, int batch, const int *tokens, const int *targets);
/* FLOPs of one forward pass over `batch` sequences (linear layers, head,
 * attention). A training step costs about 3x (2x for frozen weights). */
double ab_lm_forward_flops(const ab_lm *lm, int batch);

/* ----------------------------------------------------------------- MLP */

typedef struct ab_mlp_config {
    int in, hidden, classes; /* in → hidden → hidden → classes, ReLU */
} ab_mlp_config;

typedef struct ab_mlp_acts ab_mlp_acts;

typedef struct ab_mlp {
    ab_model m;
    ab_mlp_config c;
    ab_linear fc[3];
    ab_mlp_acts *a;
    int batch;
} ab_mlp;

int ab_mlp_init(ab_mlp *mlp, const ab_mlp_config *c, uint64_t seed);
void ab_mlp_free(ab_mlp *mlp);
int ab_mlp_reserve(ab_mlp *mlp, int batch, int rmax);
/* x [batch, in]; labels [batch] (< 0: ignored). */
double ab_mlp_forward(ab_mlp *mlp, int batch, const float *x, const int *labels, uint8_t *correct,
                      float *logp);
void ab_mlp_backward(ab_mlp *mlp, int batch, const float *x, const int *labels);
double ab_mlp_forward_flops(const ab_mlp *mlp, int batch);

#endif
