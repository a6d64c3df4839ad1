/* model.c — what both models share: named tensors, training modes, module
 * lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

int ab_model_add_tensor(ab_model *m, const char *name, float *w, int rows, int cols, float **gslot,
                        int target)
{
    if (w == NULL || m->ntensors >= AB_MAX_TENSORS)
        return -1;
    ab_named *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->w = w;
    t->rows = rows;
    t->cols = cols;
    t->gslot = gslot;
    t->target = target;
    return 0;
}

void ab_model_free_grads(ab_model *m)
{
    for (int i = 0; i < m->ntensors; i++) {
        free(*m->tensors[i].gslot);
        *m->tensors[i].gslot = NULL;
    }
    for (int i = 0; i < m->nlin; i++) {
        ab_linear *L = m->lin[i];
        free(L->dA);
        free(L->dB);
        L->dA = L->dB = NULL;
    }
    m->nparams = 0;
    m->mode = AB_MODE_EVAL;
}

static int add_param(ab_model *m, const char *name, float *w, float **g, size_t n, int decay)
{
    *g = calloc(n, sizeof **g);
    if (*g == NULL)
        return -1;
    m->params[m->nparams++] = (ab_param){name, w, *g, n, decay};
    return 0;
}

int ab_model_set_mode(ab_model *m, ab_mode mode)
{
    ab_model_free_grads(m);
    m->mode = mode;
    for (int i = 0; i < m->ntensors && (mode == AB_MODE_ALL || mode == AB_MODE_LINEAR); i++) {
        ab_named *t = &m->tensors[i];
        if (mode == AB_MODE_LINEAR && !t->target)
            continue;
        size_t n = (size_t)t->rows * (size_t)t->cols;
        if (add_param(m, t->name, t->w, t->gslot, n, t->cols > 1) != 0)
            return -1;
    }
    for (int i = 0; i < m->nlin && mode == AB_MODE_LORA; i++) {
        ab_linear *L = m->lin[i];
        if (L->r == 0)
            continue;
        /* PEFT applies weight decay to both factors; none is used here (wd = 0
         * for fine-tuning), so the flag only documents the choice */
        if (add_param(m, L->name, L->A, &L->dA, (size_t)L->r * (size_t)L->in, 1) != 0 ||
            add_param(m, L->name, L->B, &L->dB, (size_t)L->out * (size_t)L->r, 1) != 0)
            return -1;
    }
    return 0;
}

ab_linear *ab_model_find(ab_model *m, const char *path)
{
    if (strncmp(path, "base_model.model.", 17) == 0)
        path += 17;
    for (int i = 0; i < m->nlin; i++)
        if (strcmp(m->lin[i]->name, path) == 0)
            return m->lin[i];
    return NULL;
}

void ab_model_free_tensors(ab_model *m)
{
    ab_model_free_grads(m);
    for (int i = 0; i < m->ntensors; i++)
        free(m->tensors[i].w);
    for (int i = 0; i < m->nlin; i++) {
        free(m->lin[i]->A);
        free(m->lin[i]->B);
        m->lin[i]->A = m->lin[i]->B = NULL;
        m->lin[i]->r = 0;
    }
    m->ntensors = 0;
}
