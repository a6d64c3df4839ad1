/* mlp.c — the Fashion-MNIST classifier: in → hidden → hidden → classes, ReLU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

/* ----------------------------------------------------------------- MLP */

struct ab_mlp_acts {
    size_t rmax;
    float *h[2], *logits, *xa[3], *dlogits, *dh[2], *tmp;
};

static void acts_free(ab_mlp_acts *a)
{
    if (a == NULL)
        return;
    float *all[] = {a->h[0], a->h[1], a->logits, a->xa[0], a->xa[1], a->xa[2], a->dlogits, a->dh[0],
                    a->dh[1], a->tmp};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free(a);
}

int ab_mlp_init(ab_mlp *mlp, const ab_mlp_config *c, uint64_t seed)
{
    memset(mlp, 0, sizeof *mlp);
    if (c->in < 1 || c->hidden < 1 || c->classes < 2)
        return -1;
    mlp->c = *c;
    ab_rng rng = ab_rng_make(seed, 0x4D4C50 /* "MLP" */);
    int dims[4] = {c->in, c->hidden, c->hidden, c->classes};
    char name[96];
    for (int i = 0; i < 3; i++) {
        ab_linear *L = &mlp->fc[i];
        L->in = dims[i];
        L->out = dims[i + 1];
        snprintf(L->name, sizeof L->name, "model.fc%d", i + 1);
        L->W = calloc((size_t)L->out * (size_t)L->in, sizeof(float));
        snprintf(name, sizeof name, "%s.weight", L->name);
        if (ab_model_add_tensor(&mlp->m, name, L->W, L->out, L->in, &L->dW, 1) != 0) {
            free(L->W);
            return -1;
        }
        L->b = calloc((size_t)L->out, sizeof(float));
        snprintf(name, sizeof name, "%s.bias", L->name);
        if (ab_model_add_tensor(&mlp->m, name, L->b, L->out, 1, &L->db, 0) != 0) {
            free(L->b);
            return -1;
        }
        /* He-uniform (ReLU), as PyTorch's kaiming_uniform_ with a = 0 */
        double bound = sqrt(6.0 / L->in);
        for (size_t j = 0; j < (size_t)L->out * (size_t)L->in; j++)
            L->W[j] = (float)((2.0 * ab_rng_uniform(&rng) - 1.0) * bound);
        mlp->m.lin[mlp->m.nlin++] = L;
    }
    return 0;
}

void ab_mlp_free(ab_mlp *mlp)
{
    ab_model_free_tensors(&mlp->m);
    acts_free(mlp->a);
    memset(mlp, 0, sizeof *mlp);
}

int ab_mlp_reserve(ab_mlp *mlp, int batch, int rmax)
{
    if (mlp->a != NULL && mlp->batch >= batch && mlp->a->rmax >= (size_t)rmax)
        return 0;
    acts_free(mlp->a);
    mlp->a = NULL;
    ab_mlp_acts *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -1;
    size_t B = (size_t)batch, Hn = (size_t)mlp->c.hidden, C = (size_t)mlp->c.classes;
    a->rmax = (size_t)(rmax > 0 ? rmax : 0);
    size_t r = a->rmax ? a->rmax : 1;
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        ok &= (a->h[i] = malloc(B * Hn * sizeof(float))) != NULL;
        ok &= (a->dh[i] = malloc(B * Hn * sizeof(float))) != NULL;
    }
    for (int i = 0; i < 3; i++)
        ok &= (a->xa[i] = malloc(B * r * sizeof(float))) != NULL;
    ok &= (a->logits = malloc(B * C * sizeof(float))) != NULL;
    ok &= (a->dlogits = malloc(B * C * sizeof(float))) != NULL;
    ok &= (a->tmp = malloc(B * r * sizeof(float))) != NULL;
    if (!ok) {
        acts_free(a);
        return -1;
    }
    mlp->a = a;
    mlp->batch = batch;
    return 0;
}

double ab_mlp_forward(ab_mlp *mlp, int batch, const float *x, const int *labels, uint8_t *correct,
                      float *logp)
{
    ab_mlp_acts *a = mlp->a;
    size_t n = (size_t)batch * (size_t)mlp->c.hidden;
    ab_linear_fwd(&mlp->fc[0], batch, x, a->h[0], a->xa[0]);
    ab_relu_fwd(n, a->h[0], a->h[0]);
    ab_linear_fwd(&mlp->fc[1], batch, a->h[0], a->h[1], a->xa[1]);
    ab_relu_fwd(n, a->h[1], a->h[1]);
    ab_linear_fwd(&mlp->fc[2], batch, a->h[1], a->logits, a->xa[2]);
    return ab_xent(batch, mlp->c.classes, a->logits, labels, 1.0f, NULL, correct, logp);
}

void ab_mlp_backward(ab_mlp *mlp, int batch, const float *x, const int *labels)
{
    ab_mlp_acts *a = mlp->a;
    size_t n = (size_t)batch * (size_t)mlp->c.hidden;
    memset(a->dlogits, 0, (size_t)batch * (size_t)mlp->c.classes * sizeof(float));
    ab_xent(batch, mlp->c.classes, a->logits, labels, 1.0f, a->dlogits, NULL, NULL);
    memset(a->dh[1], 0, n * sizeof(float));
    ab_linear_bwd(&mlp->fc[2], batch, a->h[1], a->xa[2], a->dlogits, a->dh[1], a->tmp);
    ab_relu_bwd(n, a->h[1], a->dh[1], a->dh[1]);
    memset(a->dh[0], 0, n * sizeof(float));
    ab_linear_bwd(&mlp->fc[1], batch, a->h[0], a->xa[1], a->dh[1], a->dh[0], a->tmp);
    ab_relu_bwd(n, a->h[0], a->dh[0], a->dh[0]);
    ab_linear_bwd(&mlp->fc[0], batch, x, a->xa[0], a->dh[0], NULL, a->tmp);
}

double ab_mlp_forward_flops(const ab_mlp *mlp, int batch)
{
    double f = 0.0;
    for (int i = 0; i < 3; i++)
        f += ab_linear_flops(&mlp->fc[i], batch);
    return f;
}
