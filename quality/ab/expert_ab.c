/* expert_ab.c — expert-ab: trains the A/B models, writes every arm as an
 * .expert file, and evaluates an .expert file on items (the evaluator
 * protocol of quality/ab/PROTOCOL.md). `quality/ab/run` drives it.
 *
 *   expert-ab pretrain    --config C -o BASE.safetensors           the base model
 *   expert-ab full        --config C --base B -o FULL.expert        dense fine-tune (rank-0 osd, CSR ΔW)
 *   expert-ab lora        --config C --base B --rank R --seed S -o X.expert
 *   expert-ab base-expert --base B -o X.expert                      no modules: the "base" arm
 *   expert-ab grads       --config C --base B --expert X -o G.safetensors   ∂L/∂ΔW on calibration data
 *   expert-ab items       --config C -o ITEMS.jsonl                 the test items
 *   expert-ab eval        --base B --expert X --items I --out O [--apply merged|unmerged]
 *   expert-ab floor       [--json]                                  OpenBLAS sgemm GFLOP/s, the speed floor
 *
 * Exit status: 0, 64 for usage errors, else the numeric error class
 * (NOT_FOUND 40 for a missing data package, INVALID_ARGUMENT 3 for a bad
 * config, items file or a base mismatch). Everything is deterministic: one
 * BLAS thread per process, seeded generators.
 * One file (~1,450 lines): the A/B runner's commands share the task,
 * scoring and JSON code, and a reviewer checks the method against
 * adapters-and-osd.md in one read. */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "arms.h"
#include "data.h"
#include "models.h"
#include "util.h"

#define FAIL(code, ...) err_set(err, (code), __VA_ARGS__)
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        expert_status try_st_ = (expr);                                                            \
        if (try_st_ != EXPERT_OK)                                                                  \
            return try_st_;                                                                        \
    } while (0)

enum { TASK_SQL = 0, TASK_FMNIST = 1 };

/* ------------------------------------------------------------- config */

/* "a.b.c" inside a JSON object; NULL if absent. */
static json_t *cfg_at(json_t *cfg, const char *path)
{
    char key[128];
    json_t *v = cfg;
    while (v != NULL && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (dot != NULL);
    }
    return v;
}

static expert_status cfg_int(json_t *cfg, const char *path, long lo, long hi, long *out, expert_error *err)
{
    json_t *v = cfg_at(cfg, path);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: '%s' must be an integer in [%ld, %ld]", path, lo, hi);
    *out = (long)json_integer_value(v);
    return EXPERT_OK;
}

static expert_status cfg_num(json_t *cfg, const char *path, double lo, double hi, double *out,
                             expert_error *err)
{
    json_t *v = cfg_at(cfg, path);
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: '%s' must be a number in [%g, %g]", path, lo, hi);
    *out = json_number_value(v);
    return EXPERT_OK;
}

static expert_status cfg_source(json_t *cfg, const char *path, ab_source *out, expert_error *err)
{
    json_t *v = cfg_at(cfg, path);
    out->path = json_string_value(json_object_get(v, "path"));
    out->package = json_string_value(json_object_get(v, "package"));
    if (out->path == NULL || out->package == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: '%s' must be {\"path\": ..., \"package\": ...}", path);
    return EXPERT_OK;
}

/* A stage of training: steps, batch, peak lr, warmup, weight decay. */
typedef struct stage {
    const char *name;
    long steps, batch, warmup, log_every;
    double lr, wd;
} stage;

static expert_status cfg_stage(json_t *cfg, const char *name, stage *s, expert_error *err)
{
    char p[96];
    s->name = name;
    snprintf(p, sizeof p, "%s.steps", name);
    TRY(cfg_int(cfg, p, 1, 10000000, &s->steps, err));
    snprintf(p, sizeof p, "%s.batch", name);
    TRY(cfg_int(cfg, p, 1, 65536, &s->batch, err));
    snprintf(p, sizeof p, "%s.warmup", name);
    TRY(cfg_int(cfg, p, 0, 10000000, &s->warmup, err));
    snprintf(p, sizeof p, "%s.lr", name);
    TRY(cfg_num(cfg, p, 1e-7, 1.0, &s->lr, err));
    snprintf(p, sizeof p, "%s.wd", name);
    TRY(cfg_num(cfg, p, 0.0, 1.0, &s->wd, err));
    s->log_every = s->steps >= 50 ? s->steps / 50 : 1;
    return EXPERT_OK;
}

/* --------------------------------------------------------------- task */

typedef struct task {
    int kind;
    const char *name;     /* "sql", "fmnist" */
    json_t *cfg;
    char *cfg_text;       /* the model part, stored in the checkpoint */
    ab_lm lm;
    ab_mlp mlp;
    ab_model *m;
    int have_model, quiet;
    /* data */
    ab_docs docs;
    ab_images train, test;
    uint8_t *calib;       /* fmnist: 1 for the train images held out for calibration */
} task;

static void task_free(task *t)
{
    if (t->have_model) {
        if (t->kind == TASK_SQL)
            ab_lm_free(&t->lm);
        else
            ab_mlp_free(&t->mlp);
    }
    ab_docs_free(&t->docs);
    ab_images_free(&t->train);
    ab_images_free(&t->test);
    free(t->calib);
    free(t->cfg_text);
    json_decref(t->cfg);
}

static expert_status task_kind(task *t, const char *name, expert_error *err)
{
    if (name != NULL && strcmp(name, "sql") == 0)
        t->kind = TASK_SQL;
    else if (name != NULL && strcmp(name, "fmnist") == 0)
        t->kind = TASK_FMNIST;
    else
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "unknown task '%s' (sql or fmnist)", name ? name : "(none)");
    t->name = t->kind == TASK_SQL ? "sql" : "fmnist";
    return EXPERT_OK;
}

/* Builds the (randomly initialised) model from the "model" object. */
static expert_status task_model(task *t, json_t *model, uint64_t seed, expert_error *err)
{
    json_t *wrap = json_pack("{s:O}", "model", model);
    expert_status st = EXPERT_OK;
    if (t->kind == TASK_SQL) {
        long v[6] = {0};
        double theta = 0.0;
        static const char *const keys[6] = {"model.vocab", "model.d", "model.layers", "model.heads",
                                            "model.ffn", "model.ctx"};
        static const long hi[6] = {256, 4096, 64, 64, 16384, 4096};
        for (int i = 0; i < 6 && st == EXPERT_OK; i++)
            st = cfg_int(wrap, keys[i], 2, hi[i], &v[i], err);
        if (st == EXPERT_OK)
            st = cfg_num(wrap, "model.rope_theta", 1.0, 1e9, &theta, err);
        ab_lm_config c = {(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5], theta, 1e-5f};
        if (st == EXPERT_OK && ab_lm_init(&t->lm, &c, seed) != 0) {
            ab_lm_free(&t->lm);
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "model: invalid shape (d divisible by heads, even head size)");
        }
        t->m = &t->lm.m;
    } else {
        long in = 0, hidden = 0, classes = 0;
        st = cfg_int(wrap, "model.in", 1, 1 << 20, &in, err);
        if (st == EXPERT_OK)
            st = cfg_int(wrap, "model.hidden", 1, 1 << 16, &hidden, err);
        if (st == EXPERT_OK)
            st = cfg_int(wrap, "model.classes", 2, 10, &classes, err);
        ab_mlp_config c = {(int)in, (int)hidden, (int)classes};
        if (st == EXPERT_OK && ab_mlp_init(&t->mlp, &c, seed) != 0) {
            ab_mlp_free(&t->mlp);
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        }
        t->m = &t->mlp.m;
    }
    if (st == EXPERT_OK) {
        t->have_model = 1;
        t->cfg_text = json_dumps(model, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_decref(wrap);
    return st;
}

/* Loads a config file: {"task": ..., "model": {...}, ...}. */
static expert_status task_config(task *t, const char *path, expert_error *err)
{
    json_error_t je;
    t->cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (t->cfg == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config '%s': line %d: %s", path, je.line, je.text);
    TRY(task_kind(t, json_string_value(json_object_get(t->cfg, "task")), err));
    json_t *model = json_object_get(t->cfg, "model");
    if (!json_is_object(model))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config '%s': no \"model\" object", path);
    long seed;
    TRY(cfg_int(t->cfg, "pretrain.seed", 0, INT32_MAX, &seed, err));
    return task_model(t, model, (uint64_t)seed, err);
}

/* The model of a checkpoint, with its weights, and the checkpoint's SHA-256. */
static expert_status task_from_base(task *t, const char *base, char sha[65], expert_error *err)
{
    char *tk, *model_json;
    TRY(ab_checkpoint_info(base, &tk, &model_json, sha, err));
    expert_status st = task_kind(t, tk, err);
    json_error_t je;
    json_t *model = st == EXPERT_OK ? json_loads(model_json, 0, &je) : NULL;
    if (st == EXPERT_OK && model == NULL)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': the model configuration is not JSON", base);
    if (st == EXPERT_OK && t->have_model) {
        /* the config's model and the checkpoint's must agree */
        char *mine = t->cfg_text, *theirs = json_dumps(model, JSON_COMPACT | JSON_SORT_KEYS);
        if (theirs == NULL || strcmp(mine, theirs) != 0)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' is a %s model of another shape than the config's", base,
                      tk);
        free(theirs);
    } else if (st == EXPERT_OK) {
        st = task_model(t, model, 0, err);
    }
    if (st == EXPERT_OK)
        st = ab_checkpoint_load(t->m, base, err);
    json_decref(model);
    free(tk);
    free(model_json);
    return st;
}

/* ------------------------------------------------------------ data */

static expert_status sql_docs(task *t, expert_error *err)
{
    ab_source src;
    long seed;
    double train, calib;
    TRY(cfg_source(t->cfg, "data.sql", &src, err));
    TRY(cfg_int(t->cfg, "data.split_seed", 0, INT32_MAX, &seed, err));
    TRY(cfg_num(t->cfg, "data.train", 0.01, 0.98, &train, err));
    TRY(cfg_num(t->cfg, "data.calib", 0.01, 0.98 - train, &calib, err));
    return ab_sql_load(&src, (uint64_t)seed, train, calib, &t->docs, err);
}

static expert_status english(task *t, ab_text *out, expert_error *err)
{
    json_t *a = cfg_at(t->cfg, "data.english");
    size_t n = json_array_size(a);
    if (n == 0 || n > 16)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: 'data.english' must list 1 to 16 sources");
    ab_source src[16];
    for (size_t i = 0; i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "data.english.%zu", i);
        src[i].path = json_string_value(json_object_get(json_array_get(a, i), "path"));
        src[i].package = json_string_value(json_object_get(json_array_get(a, i), "package"));
        if (src[i].path == NULL || src[i].package == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: 'data.english[%zu]' needs path and package", i);
    }
    return ab_read_text(src, n, out, err);
}

/* Fashion-MNIST: both sets and the seeded calibration hold-out of the train set. */
static expert_status fmnist_data(task *t, int need_test, expert_error *err)
{
    ab_source src;
    long seed, ncal;
    TRY(cfg_source(t->cfg, "data.fmnist", &src, err));
    TRY(cfg_int(t->cfg, "data.split_seed", 0, INT32_MAX, &seed, err));
    TRY(cfg_int(t->cfg, "data.calib", 1, 30000, &ncal, err));
    TRY(ab_fmnist_load(&src, "train", &t->train, err));
    if (need_test)
        TRY(ab_fmnist_load(&src, "t10k", &t->test, err));
    if (t->train.rows * t->train.cols != t->mlp.c.in)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "model.in is %d, the images have %d pixels", t->mlp.c.in,
                    t->train.rows * t->train.cols);
    t->calib = calloc((size_t)t->train.n, 1);
    int *perm = malloc((size_t)t->train.n * sizeof *perm);
    if (t->calib == NULL || perm == NULL) {
        free(perm);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    ab_rng r = ab_rng_make((uint64_t)seed, 0xCA1B);
    for (int i = 0; i < t->train.n; i++)
        perm[i] = i;
    for (int i = t->train.n - 1; i > 0; i--) {
        int j = (int)ab_rng_below(&r, (uint64_t)i + 1), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    for (long i = 0; i < ncal && i < t->train.n; i++)
        t->calib[perm[i]] = 1;
    free(perm);
    return EXPERT_OK;
}

static void pixels(const ab_images *im, int i, float *x)
{
    const uint8_t *p = im->pixels + (size_t)i * (size_t)(im->rows * im->cols);
    for (int j = 0; j < im->rows * im->cols; j++)
        x[j] = (float)p[j] * (1.0f / 255.0f);
}

/* ---------------------------------------------------------- training */

/* Where a training batch comes from. */
typedef struct sampler {
    const ab_text *text;  /* sql: random windows of ctx + 1 bytes */
    int *pool;            /* fmnist: image indices, reshuffled every pass */
    int npool, at;
    ab_rng rng;
} sampler;

typedef struct batch {
    int *tok, *tgt;       /* sql [B·T] */
    float *x;             /* fmnist [B, in] */
    int *y;               /* fmnist [B] */
} batch;

static void shuffle(int *a, int n, ab_rng *r)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ab_rng_below(r, (uint64_t)i + 1), x = a[i];
        a[i] = a[j], a[j] = x;
    }
}

static void next_batch(task *t, sampler *s, int B, batch *b)
{
    if (t->kind == TASK_SQL) {
        int T = t->lm.c.ctx;
        for (int i = 0; i < B; i++) {
            size_t off = (size_t)ab_rng_below(&s->rng, (uint64_t)(s->text->len - (size_t)T - 1));
            const uint8_t *p = s->text->data + off;
            for (int j = 0; j < T; j++) {
                b->tok[i * T + j] = p[j];
                b->tgt[i * T + j] = p[j + 1];
            }
        }
    } else {
        for (int i = 0; i < B; i++) {
            if (s->at == s->npool) {
                shuffle(s->pool, s->npool, &s->rng);
                s->at = 0;
            }
            int k = s->pool[s->at++];
            pixels(&t->train, k, b->x + (size_t)i * (size_t)t->mlp.c.in);
            b->y[i] = t->train.labels[k];
        }
    }
}

static int batch_alloc(const task *t, int B, batch *b)
{
    memset(b, 0, sizeof *b);
    if (t->kind == TASK_SQL) {
        size_t n = (size_t)B * (size_t)t->lm.c.ctx;
        b->tok = malloc(n * sizeof *b->tok);
        b->tgt = malloc(n * sizeof *b->tgt);
        return b->tok != NULL && b->tgt != NULL ? 0 : -1;
    }
    b->x = malloc((size_t)B * (size_t)t->mlp.c.in * sizeof *b->x);
    b->y = malloc((size_t)B * sizeof *b->y);
    return b->x != NULL && b->y != NULL ? 0 : -1;
}

static void batch_free(batch *b)
{
    free(b->tok), free(b->tgt), free(b->x), free(b->y);
}

static int reserve(task *t, int B, int rmax)
{
    return t->kind == TASK_SQL ? ab_lm_reserve(&t->lm, B, rmax) : ab_mlp_reserve(&t->mlp, B, rmax);
}

static double forward(task *t, int B, const batch *b, uint8_t *correct, float *logp)
{
    return t->kind == TASK_SQL ? ab_lm_forward(&t->lm, B, b->tok, b->tgt, correct, logp)
                               : ab_mlp_forward(&t->mlp, B, b->x, b->y, correct, logp);
}

static void backward(task *t, int B, const batch *b)
{
    if (t->kind == TASK_SQL)
        ab_lm_backward(&t->lm, B, b->tok, b->tgt);
    else
        ab_mlp_backward(&t->mlp, B, b->x, b->y);
}

static double forward_flops(const task *t, int B)
{
    return t->kind == TASK_SQL ? ab_lm_forward_flops(&t->lm, B) : ab_mlp_forward_flops(&t->mlp, B);
}

/* The record of a training run (the --log file). */
typedef struct trainlog {
    json_t *curve;        /* [[step, mean loss since the last point], ...] */
    double seconds, items_per_s, gflops, final_loss;
    long steps, batch, items_per_step;
} trainlog;

/* Trains the parameters of the current mode for one stage. */
static expert_status train(task *t, const stage *sg, sampler *s, trainlog *log, expert_error *err)
{
    int B = (int)sg->batch;
    batch b;
    ab_adamw opt;
    if (reserve(t, B, t->m->lin[0]->r) != 0 || batch_alloc(t, B, &b) != 0)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    if (ab_adamw_init(&opt, t->m->params, (size_t)t->m->nparams, sg->wd) != 0) {
        batch_free(&b);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    log->curve = json_array();
    log->steps = sg->steps;
    log->batch = sg->batch;
    log->items_per_step = t->kind == TASK_SQL ? sg->batch * t->lm.c.ctx : sg->batch;
    double t0 = ab_now(), acc = 0.0, last = 0.0;
    long nacc = 0;
    int tty = isatty(2);
    expert_status st = EXPERT_OK;
    for (long step = 0; step < sg->steps; step++) {
        next_batch(t, s, B, &b);
        ab_zero_grads(t->m->params, (size_t)t->m->nparams);
        double loss = forward(t, B, &b, NULL, NULL);
        if (!isfinite(loss)) {
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "%s: the loss diverged at step %ld (lr too high?)", sg->name,
                      step);
            break;
        }
        backward(t, B, &b);
        ab_adamw_step(&opt, ab_lr_at(sg->lr, step, sg->steps, sg->warmup), 1.0);
        acc += loss;
        nacc++;
        if ((step + 1) % sg->log_every == 0 || step + 1 == sg->steps) {
            last = acc / (double)nacc;
            json_array_append_new(log->curve, json_pack("[I,f]", (json_int_t)(step + 1), last));
            /* a live line on a terminal, one line per tenth of the run otherwise */
            long tenth = sg->steps >= 10 ? sg->steps / 10 : 1;
            if (!t->quiet && (tty || (step + 1) % tenth == 0 || step + 1 == sg->steps))
                fprintf(stderr, "%s%s %s: step %ld/%ld loss %.4f (%.0f items/s)%s", tty ? "\r" : "", t->name,
                        sg->name, step + 1, sg->steps, last,
                        (double)(step + 1) * (double)log->items_per_step / (ab_now() - t0), tty ? "   " : "\n");
            acc = 0.0;
            nacc = 0;
        }
    }
    if (!t->quiet && tty)
        fputc('\n', stderr);
    log->seconds = ab_now() - t0;
    log->final_loss = last;
    log->items_per_s = (double)sg->steps * (double)log->items_per_step / log->seconds;
    /* forward + backward: about 3x the forward FLOPs when weight gradients
     * are formed, 2x when only activation (and LoRA) gradients are */
    double per = forward_flops(t, B) * (t->m->mode == AB_MODE_LORA ? 2.0 : 3.0);
    log->gflops = per * (double)sg->steps / log->seconds * 1e-9;
    ab_adamw_free(&opt);
    batch_free(&b);
    return st;
}

/* Mean loss and accuracy on calibration data (held out from training). */
static expert_status calib_eval(task *t, double *loss, double *acc, expert_error *err);

static expert_status write_log(const char *path, task *t, const char *stage_name, const trainlog *lg,
                               json_t *extra, expert_error *err)
{
    json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:O}", "task", t->name, "stage", stage_name,
                          "steps", (json_int_t)lg->steps, "batch", (json_int_t)lg->batch, "items_per_step",
                          (json_int_t)lg->items_per_step, "seconds", lg->seconds, "items_per_s",
                          lg->items_per_s, "model_gflops", lg->gflops, "final_train_loss", lg->final_loss,
                          "loss_curve", lg->curve);
    if (extra != NULL)
        json_object_update(o, extra);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_status st = atomic_write_path(path, s, strlen(s), 1, err);
    free(s);
    return st;
}

/* The training data of a stage. */
static expert_status make_sampler(task *t, int pretrain, uint64_t seed, ab_text *text, sampler *s,
                                  expert_error *err)
{
    memset(s, 0, sizeof *s);
    s->rng = ab_rng_make(seed, pretrain ? 0x5052 : 0x4654);
    if (t->kind == TASK_SQL) {
        if (pretrain)
            TRY(english(t, text, err));
        else {
            TRY(sql_docs(t, err));
            TRY(ab_docs_join(&t->docs, AB_SPLIT_TRAIN, text, err));
        }
        if (text->len < (size_t)t->lm.c.ctx + 2)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "training text shorter than the context");
        s->text = text;
        return EXPERT_OK;
    }
    TRY(fmnist_data(t, 0, err));
    json_t *classes = cfg_at(t->cfg, "data.base_classes");
    int keep[10] = {0};
    for (size_t i = 0; i < json_array_size(classes); i++) {
        json_int_t c = json_integer_value(json_array_get(classes, i));
        if (c < 0 || c > 9)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: 'data.base_classes' must hold classes 0-9");
        keep[c] = 1;
    }
    if (pretrain && json_array_size(classes) == 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "config: 'data.base_classes' must list the base task's classes");
    s->pool = malloc((size_t)t->train.n * sizeof *s->pool);
    if (s->pool == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (int i = 0; i < t->train.n; i++)
        if (!t->calib[i] && (!pretrain || keep[t->train.labels[i]]))
            s->pool[s->npool++] = i;
    s->at = s->npool; /* shuffles before the first batch */
    return EXPERT_OK;
}

/* ---------------------------------------------------------- commands */

enum { O_CONFIG, O_OUT, O_BASE, O_EXPERT, O_RANK, O_SEED, O_ITEMS, O_EVOUT, O_APPLY, O_LOG, O_JSON, O_QUIET,
       O_COUNT };
static const cli_opt_spec k_opts[O_COUNT] = {
    [O_CONFIG] = {"config", 'c', 1}, [O_OUT] = {"output", 'o', 1}, [O_BASE] = {"base", 0, 1},
    [O_EXPERT] = {"expert", 0, 1},   [O_RANK] = {"rank", 0, 1},    [O_SEED] = {"seed", 0, 1},
    [O_ITEMS] = {"items", 0, 1},     [O_EVOUT] = {"out", 0, 1},    [O_APPLY] = {"apply", 0, 1},
    [O_LOG] = {"log", 0, 1},         [O_JSON] = {"json", 0, 0},    [O_QUIET] = {"quiet", 'q', 0},
};

typedef struct args {
    cli_opt_val v[O_COUNT];
    const char *pos[4];
    size_t npos;
} args;

static int parse(const cli_cmd *cmd, int argc, char **argv, args *a, const int *required, size_t nreq)
{
    int rc = cli_parse(cmd, argc, argv, k_opts, a->v, O_COUNT, a->pos, 0, 0, &a->npos);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < nreq; i++)
        if (!a->v[required[i]].seen)
            return cli_usage_error(cmd, "--%s is required", k_opts[required[i]].name);
    return 0;
}

static int fail(expert_status st, const expert_error *e)
{
    return cli_report(0, NULL, st, e);
}

static json_t *calib_json(task *t, expert_error *err, expert_status *st)
{
    double loss, acc;
    *st = calib_eval(t, &loss, &acc, err);
    return *st == EXPERT_OK ? json_pack("{s:f,s:f}", "calib_loss", loss, "calib_accuracy", acc) : NULL;
}

static int cmd_pretrain(const cli_cmd *cmd, int argc, char **argv)
{
    static const int req[] = {O_CONFIG, O_OUT};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 2);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    task t = {.quiet = a.v[O_QUIET].seen};
    expert_error err;
    err_clear(&err);
    stage sg;
    long seed = 0;
    ab_text text = {0};
    sampler s = {0};
    trainlog lg = {0};
    expert_status st = task_config(&t, a.v[O_CONFIG].value, &err);
    if (st == EXPERT_OK)
        st = cfg_stage(t.cfg, "pretrain", &sg, &err);
    if (st == EXPERT_OK)
        st = cfg_int(t.cfg, "pretrain.seed", 0, INT32_MAX, &seed, &err);
    if (st == EXPERT_OK)
        st = make_sampler(&t, 1, (uint64_t)seed, &text, &s, &err);
    if (st == EXPERT_OK && ab_model_set_mode(t.m, AB_MODE_ALL) != 0)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK)
        st = train(&t, &sg, &s, &lg, &err);
    char sha[65];
    if (st == EXPERT_OK)
        st = ab_checkpoint_save(t.m, a.v[O_OUT].value, t.name, t.cfg_text, sha, &err);
    json_t *extra = NULL;
    if (st == EXPERT_OK && a.v[O_LOG].seen) {
        ab_model_set_mode(t.m, AB_MODE_EVAL);
        extra = calib_json(&t, &err, &st);
        if (st == EXPERT_OK) {
            json_object_set_new(extra, "base_sha256", json_string(sha));
            st = write_log(a.v[O_LOG].value, &t, "pretrain", &lg, extra, &err);
        }
    }
    json_decref(extra);
    json_decref(lg.curve);
    ab_text_free(&text);
    free(s.pool);
    task_free(&t);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

/* full and lora: fine-tuning from a base checkpoint. */
static int finetune(const cli_cmd *cmd, int argc, char **argv, int lora)
{
    static const int req[] = {O_CONFIG, O_OUT, O_BASE};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 3);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    uint64_t rank = 0, seed = 0;
    if (lora && (!a.v[O_RANK].seen || !a.v[O_SEED].seen))
        return cli_usage_error(cmd, "--rank and --seed are required");
    if (lora && ((rc = cli_parse_u64(cmd, "rank", a.v[O_RANK].value, 1, 1024, 0, &rank)) != 0 ||
                 (rc = cli_parse_u64(cmd, "seed", a.v[O_SEED].value, 0, INT32_MAX, 0, &seed)) != 0))
        return rc;
    task t = {.quiet = a.v[O_QUIET].seen};
    ab_model *base = NULL;
    task tb = {0};
    expert_error err;
    err_clear(&err);
    stage sg;
    ab_text text = {0};
    sampler s = {0};
    trainlog lg = {0};
    char sha[65];
    double alpha_per_rank = 0.0;
    long fseed = 0;
    expert_status st = task_config(&t, a.v[O_CONFIG].value, &err);
    if (st == EXPERT_OK)
        st = task_from_base(&t, a.v[O_BASE].value, sha, &err);
    if (st == EXPERT_OK)
        st = cfg_stage(t.cfg, lora ? "lora" : "full", &sg, &err);
    if (st == EXPERT_OK && lora)
        st = cfg_num(t.cfg, "lora.alpha_per_rank", 1e-3, 1e3, &alpha_per_rank, &err);
    if (st == EXPERT_OK && !lora)
        st = cfg_int(t.cfg, "full.seed", 0, INT32_MAX, &fseed, &err);
    if (!lora)
        seed = (uint64_t)fseed;
    if (st == EXPERT_OK)
        st = make_sampler(&t, 0, seed, &text, &s, &err);
    if (st == EXPERT_OK && lora && ab_lora_attach(t.m, (int)rank, alpha_per_rank * (double)rank, seed) != 0)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK && ab_model_set_mode(t.m, lora ? AB_MODE_LORA : AB_MODE_LINEAR) != 0)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK)
        st = train(&t, &sg, &s, &lg, &err);
    char name[96], extra_json[160];
    snprintf(name, sizeof name, lora ? "ab-%s-lora-r%" PRIu64 "-s%" PRIu64 : "ab-%s-full", t.name, rank, seed);
    snprintf(extra_json, sizeof extra_json,
             lora ? "{\"arm\":\"lora\",\"rank\":%" PRIu64 ",\"seed\":%" PRIu64 "}" : "{\"arm\":\"full\"}", rank,
             seed);
    char base_name[64];
    snprintf(base_name, sizeof base_name, "expert-ab %s base", t.name);
    ab_expert_meta meta = {name, base_name, sha, extra_json};
    if (st == EXPERT_OK && lora)
        st = ab_write_lora_expert(t.m, a.v[O_OUT].value, &meta, &err);
    if (st == EXPERT_OK && !lora) {
        char sha2[65];
        tb.cfg = json_incref(t.cfg);
        tb.kind = t.kind;
        st = task_from_base(&tb, a.v[O_BASE].value, sha2, &err);
        base = tb.m;
        if (st == EXPERT_OK)
            st = ab_write_full_expert(t.m, base, a.v[O_OUT].value, &meta, &err);
    }
    json_t *extra = NULL;
    if (st == EXPERT_OK && a.v[O_LOG].seen) {
        ab_model_set_mode(t.m, AB_MODE_EVAL);
        extra = calib_json(&t, &err, &st);
        if (st == EXPERT_OK) {
            json_object_set_new(extra, "rank", json_integer((json_int_t)rank));
            json_object_set_new(extra, "seed", json_integer((json_int_t)seed));
            st = write_log(a.v[O_LOG].value, &t, lora ? "lora" : "full", &lg, extra, &err);
        }
    }
    json_decref(extra);
    json_decref(lg.curve);
    ab_text_free(&text);
    free(s.pool);
    task_free(&tb);
    task_free(&t);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

static int cmd_full(const cli_cmd *cmd, int argc, char **argv)
{
    return finetune(cmd, argc, argv, 0);
}

static int cmd_lora(const cli_cmd *cmd, int argc, char **argv)
{
    return finetune(cmd, argc, argv, 1);
}

static int cmd_base_expert(const cli_cmd *cmd, int argc, char **argv)
{
    static const int req[] = {O_OUT, O_BASE};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 2);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    expert_error err;
    err_clear(&err);
    char sha[65], *tk = NULL, name[64], base_name[64];
    expert_status st = ab_checkpoint_info(a.v[O_BASE].value, &tk, NULL, sha, &err);
    if (st == EXPERT_OK) {
        snprintf(name, sizeof name, "ab-%s-base", tk);
        snprintf(base_name, sizeof base_name, "expert-ab %s base", tk);
        ab_expert_meta meta = {name, base_name, sha, "{\"arm\":\"base\"}"};
        st = ab_write_empty_expert(a.v[O_OUT].value, &meta, &err);
    }
    free(tk);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

/* ----------------------------------------------------- calibration */

/* Calibration batches: sql windows of ctx + 1 bytes from the calibration
 * files (every position scored), fmnist the held-out train images. */
typedef struct calset {
    int n, B;              /* batches, batch size */
    batch b;
    ab_text text;
    int *idx;
    int nidx;
    ab_rng rng;
} calset;

static expert_status calset_open(task *t, calset *c, expert_error *err)
{
    memset(c, 0, sizeof *c);
    long count, seed;
    TRY(cfg_int(t->cfg, "calibration.seed", 0, INT32_MAX, &seed, err));
    c->rng = ab_rng_make((uint64_t)seed, 0xCA11);
    if (t->kind == TASK_SQL) {
        TRY(cfg_int(t->cfg, "calibration.windows", 1, 1 << 20, &count, err));
        if (t->docs.n == 0)
            TRY(sql_docs(t, err));
        TRY(ab_docs_join(&t->docs, AB_SPLIT_CALIB, &c->text, err));
        c->B = 16;
    } else {
        if (t->train.n == 0)
            TRY(fmnist_data(t, 0, err));
        c->idx = malloc((size_t)t->train.n * sizeof *c->idx);
        if (c->idx == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        for (int i = 0; i < t->train.n; i++)
            if (t->calib[i])
                c->idx[c->nidx++] = i;
        count = c->nidx;
        c->B = 500;
    }
    c->n = (int)((count + c->B - 1) / c->B);
    if (reserve(t, c->B, t->m->lin[0]->r) != 0 || batch_alloc(t, c->B, &c->b) != 0)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    return EXPERT_OK;
}

/* Fills batch i; returns its number of rows (the last one may be short: the
 * missing rows are ignored by the loss). */
static int calset_batch(task *t, calset *c, int i)
{
    if (t->kind == TASK_SQL) {
        sampler s = {.text = &c->text, .rng = c->rng};
        next_batch(t, &s, c->B, &c->b);
        c->rng = s.rng;
        return c->B;
    }
    int rows = 0;
    for (int j = 0; j < c->B; j++) {
        int k = i * c->B + j;
        if (k < c->nidx) {
            pixels(&t->train, c->idx[k], c->b.x + (size_t)j * (size_t)t->mlp.c.in);
            c->b.y[j] = t->train.labels[c->idx[k]];
            rows++;
        } else {
            memset(c->b.x + (size_t)j * (size_t)t->mlp.c.in, 0, (size_t)t->mlp.c.in * sizeof(float));
            c->b.y[j] = -1;
        }
    }
    return rows;
}

static void calset_close(calset *c)
{
    batch_free(&c->b);
    ab_text_free(&c->text);
    free(c->idx);
}

static expert_status calib_eval(task *t, double *loss, double *acc, expert_error *err)
{
    calset c;
    expert_status st = calset_open(t, &c, err);
    size_t rows = (size_t)c.B * (size_t)(t->kind == TASK_SQL ? t->lm.c.ctx : 1);
    uint8_t *ok = st == EXPERT_OK ? malloc(rows) : NULL;
    if (st == EXPERT_OK && ok == NULL)
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
    double sl = 0.0, right = 0.0, count = 0.0;
    for (int i = 0; st == EXPERT_OK && i < c.n; i++) {
        int n = calset_batch(t, &c, i);
        size_t scored = (size_t)n * (size_t)(t->kind == TASK_SQL ? t->lm.c.ctx : 1);
        memset(ok, 0, rows);
        sl += forward(t, c.B, &c.b, ok, NULL) * (double)scored;
        for (size_t j = 0; j < rows; j++)
            right += ok[j];
        count += (double)scored;
    }
    free(ok);
    calset_close(&c);
    *loss = sl / count;
    *acc = right / count;
    return st;
}

static int cmd_grads(const cli_cmd *cmd, int argc, char **argv)
{
    static const int req[] = {O_CONFIG, O_OUT, O_BASE, O_EXPERT};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 4);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    task t = {.quiet = a.v[O_QUIET].seen};
    expert_error err;
    err_clear(&err);
    char sha[65];
    ab_applied *ap = NULL;
    calset c = {0};
    expert_status st = task_config(&t, a.v[O_CONFIG].value, &err);
    if (st == EXPERT_OK)
        st = task_from_base(&t, a.v[O_BASE].value, sha, &err);
    if (st == EXPERT_OK)
        st = ab_apply_expert(t.m, a.v[O_EXPERT].value, sha, AB_APPLY_MERGED, &ap, &err);
    if (st == EXPERT_OK && ab_model_set_mode(t.m, AB_MODE_LINEAR) != 0)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK)
        st = calset_open(&t, &c, &err);
    double loss = 0.0;
    for (int i = 0; st == EXPERT_OK && i < c.n; i++) {
        calset_batch(&t, &c, i);
        loss += forward(&t, c.B, &c.b, NULL, NULL);
        backward(&t, c.B, &c.b);
    }
    /* the mean over batches of each batch's mean-loss gradient */
    ab_out_tensor *ot = st == EXPERT_OK ? calloc((size_t)t.m->nlin, sizeof *ot) : NULL;
    if (st == EXPERT_OK && ot == NULL)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    for (int i = 0; st == EXPERT_OK && i < t.m->nlin; i++) {
        ab_linear *L = t.m->lin[i];
        for (size_t j = 0; j < (size_t)L->out * (size_t)L->in; j++)
            L->dW[j] /= (float)c.n;
        snprintf(ot[i].name, sizeof ot[i].name, AB_PEFT_PREFIX "%s.delta.grad", L->name);
        ot[i].data = L->dW;
        ot[i].rows = L->out;
        ot[i].cols = L->in;
    }
    if (st == EXPERT_OK) {
        char meta[256];
        snprintf(meta, sizeof meta, "{\"what\":\"mean dL/dW on the calibration split\",\"batches\":\"%d\","
                                    "\"loss\":\"%.6f\"}", c.n, loss / c.n);
        st = ab_safetensors_write(a.v[O_OUT].value, ot, (size_t)t.m->nlin, meta, &err);
    }
    free(ot);
    calset_close(&c);
    ab_applied_free(ap);
    task_free(&t);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

/* ----------------------------------------------------------- items */

typedef struct sql_items_cfg {
    long seed, score_from, max_files, prefix, span;
} sql_items_cfg;

/* Statements inside a window: a line that is not a mysqltest comment or
 * command ('#', "--"), holding a ';' at least `prefix` bytes after its
 * start; the continuation [start + prefix, min(';' + 1, start + prefix +
 * span)) must lie in the scored part of the window. */
static json_t *statements(const uint8_t *w, size_t len, int at_line_start, const sql_items_cfg *c)
{
    json_t *a = json_array();
    for (size_t i = 0; i < len; i++) {
        if (i == 0 ? !at_line_start : w[i - 1] != '\n')
            continue;
        if (w[i] == '#' || w[i] == '\n' || w[i] == ' ' || w[i] == '\t' ||
            (i + 1 < len && w[i] == '-' && w[i + 1] == '-'))
            continue;
        size_t e = i;
        while (e < len && w[e] != '\n' && w[e] != ';')
            e++;
        if (e >= len || w[e] != ';')
            continue;
        size_t c0 = i + (size_t)c->prefix, c1 = e + 1;
        if (c1 > c0 + (size_t)c->span)
            c1 = c0 + (size_t)c->span;
        if (c0 >= c1 || c0 < (size_t)c->score_from + 1 || c1 > len)
            continue;
        json_array_append_new(a, json_pack("[I,I]", (json_int_t)c0, (json_int_t)c1));
    }
    return a;
}

static expert_status items_sql(task *t, FILE *f, size_t *count, expert_error *err)
{
    sql_items_cfg c;
    TRY(cfg_int(t->cfg, "items.seed", 0, INT32_MAX, &c.seed, err));
    TRY(cfg_int(t->cfg, "items.score_from", 0, t->lm.c.ctx - 1, &c.score_from, err));
    TRY(cfg_int(t->cfg, "items.max_files", 0, 1 << 20, &c.max_files, err));
    TRY(cfg_int(t->cfg, "items.exact_prefix", 1, t->lm.c.ctx, &c.prefix, err));
    TRY(cfg_int(t->cfg, "items.exact_span", 1, t->lm.c.ctx, &c.span, err));
    TRY(sql_docs(t, err));
    size_t W = (size_t)t->lm.c.ctx + 1;
    ab_rng r = ab_rng_make((uint64_t)c.seed, 0x17E5);
    *count = 0;
    for (size_t i = 0; i < t->docs.n; i++) {
        const ab_doc *d = &t->docs.d[i];
        if (d->split != AB_SPLIT_TEST || d->len < W)
            continue;
        if (c.max_files > 0 && *count >= (size_t)c.max_files)
            break;
        size_t off = (size_t)ab_rng_below(&r, (uint64_t)(d->len - W + 1));
        size_t tl;
        char *text = ab_bytes_to_utf8(d->data + off, W, &tl);
        if (text == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        char id[600];
        snprintf(id, sizeof id, "sql/%s@%zu", d->name, off);
        json_t *o = json_pack("{s:s,s:s,s:s%,s:I,s:o}", "id", id, "cluster", d->name, "text", text, tl,
                              "score_from", (json_int_t)c.score_from, "statements",
                              statements(d->data + off, W, off == 0 || d->data[off - 1] == '\n', &c));
        free(text);
        char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        json_decref(o);
        if (line == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        fprintf(f, "%s\n", line);
        free(line);
        ++*count;
    }
    return EXPERT_OK;
}

static expert_status items_fmnist(task *t, FILE *f, size_t *count, expert_error *err)
{
    TRY(fmnist_data(t, 1, err));
    for (int i = 0; i < t->test.n; i++)
        fprintf(f, "{\"id\":\"fmnist/t10k/%05d\",\"index\":%d,\"label\":%d}\n", i, i, t->test.labels[i]);
    *count = (size_t)t->test.n;
    return EXPERT_OK;
}

static int cmd_items(const cli_cmd *cmd, int argc, char **argv)
{
    static const int req[] = {O_CONFIG, O_OUT};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 2);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    task t = {.quiet = a.v[O_QUIET].seen};
    expert_error err;
    err_clear(&err);
    char *buf = NULL;
    size_t len = 0, count = 0;
    FILE *f = open_memstream(&buf, &len);
    expert_status st = f == NULL ? err_set(&err, EXPERT_E_NOMEM, "out of memory")
                                 : task_config(&t, a.v[O_CONFIG].value, &err);
    if (st == EXPERT_OK)
        st = t.kind == TASK_SQL ? items_sql(&t, f, &count, &err) : items_fmnist(&t, f, &count, &err);
    if (f != NULL)
        fclose(f);
    if (st == EXPERT_OK && count == 0)
        st = err_set(&err, EXPERT_E_INVALID_ARGUMENT, "no test items");
    if (st == EXPERT_OK)
        st = atomic_write_path(a.v[O_OUT].value, buf, len, 1, &err);
    if (st == EXPERT_OK && !t.quiet)
        fprintf(stderr, "%s: %zu items -> %s\n", t.name, count, a.v[O_OUT].value);
    free(buf);
    task_free(&t);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

/* ------------------------------------------------------------ eval */

typedef struct sql_item {
    char *id, *cluster;
    uint8_t w[4097];
    size_t len;
    long score_from;
    long (*stmt)[2];
    size_t nstmt;
} sql_item;

/* One line of an items file; errors name the line. */
static expert_status parse_sql_item(json_t *o, size_t line, int ctx, sql_item *it, expert_error *err)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *cl = json_string_value(json_object_get(o, "cluster"));
    json_t *text = json_object_get(o, "text"), *sf = json_object_get(o, "score_from"),
           *st = json_object_get(o, "statements");
    if (id == NULL || !json_is_string(text) || !json_is_integer(sf))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "items line %zu: a sql item needs id, text and score_from", line);
    if (ab_utf8_to_bytes(json_string_value(text), json_string_length(text), it->w, (size_t)ctx + 1, &it->len) !=
            0 || it->len < 2)
        return FAIL(EXPERT_E_INVALID_ARGUMENT,
                    "items line %zu: text must be 2 to %d bytes as code points U+0000-U+00FF", line, ctx + 1);
    it->score_from = (long)json_integer_value(sf);
    if (it->score_from < 0 || (size_t)it->score_from >= it->len - 1)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "items line %zu: score_from %ld outside the text", line,
                    it->score_from);
    it->nstmt = json_array_size(st);
    it->stmt = calloc(it->nstmt ? it->nstmt : 1, sizeof *it->stmt);
    it->id = strdup(id);
    it->cluster = strdup(cl != NULL ? cl : id);
    if (it->stmt == NULL || it->id == NULL || it->cluster == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (size_t k = 0; k < it->nstmt; k++) {
        json_t *p = json_array_get(st, k);
        json_int_t a = json_integer_value(json_array_get(p, 0)), b = json_integer_value(json_array_get(p, 1));
        if (json_array_size(p) != 2 || a <= it->score_from || b <= a || (size_t)b > it->len)
            return FAIL(EXPERT_E_INVALID_ARGUMENT,
                        "items line %zu: statement %zu must be [c0, c1) with score_from < c0 < c1 <= length",
                        line, k);
        it->stmt[k][0] = (long)a;
        it->stmt[k][1] = (long)b;
    }
    return EXPERT_OK;
}

static void out_line(FILE *f, const char *id, int correct, double score, const char *cluster,
                     const char *metric)
{
    json_t *o = json_pack("{s:s,s:i,s:f,s:s,s:s}", "id", id, "correct", correct, "score", score, "cluster",
                          cluster, "metric", metric);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(7));
    fprintf(f, "%s\n", s);
    free(s);
    json_decref(o);
}

static expert_status eval_sql(task *t, json_t **lines, size_t n, FILE *f, expert_error *err)
{
    int T = t->lm.c.ctx, B = 16;
    batch b;
    sql_item *it = calloc((size_t)B, sizeof *it);
    uint8_t *ok = malloc((size_t)B * (size_t)T);
    float *lp = malloc((size_t)B * (size_t)T * sizeof *lp);
    if (it == NULL || ok == NULL || lp == NULL || reserve(t, B, 0) != 0 || batch_alloc(t, B, &b) != 0) {
        free(it), free(ok), free(lp);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    expert_status st = EXPERT_OK;
    for (size_t i0 = 0; i0 < n && st == EXPERT_OK; i0 += (size_t)B) {
        int nb = (int)(n - i0 < (size_t)B ? n - i0 : (size_t)B);
        for (int k = 0; k < B; k++) {
            for (int j = 0; j < T; j++)
                b.tok[k * T + j] = 0, b.tgt[k * T + j] = -1;
            if (k >= nb)
                continue;
            st = parse_sql_item(lines[i0 + (size_t)k], i0 + (size_t)k + 1, T, &it[k], err);
            if (st != EXPERT_OK)
                break;
            for (size_t j = 0; j + 1 < it[k].len; j++) {
                b.tok[k * T + (int)j] = it[k].w[j];
                if ((long)j >= it[k].score_from)
                    b.tgt[k * T + (int)j] = it[k].w[j + 1];
            }
        }
        if (st == EXPERT_OK) {
            double loss = forward(t, B, &b, ok, lp);
            if (!isfinite(loss))
                st = FAIL(EXPERT_E_INVALID_ARGUMENT, "the model's output is not finite (bad expert values?)");
        }
        for (int k = 0; k < nb && st == EXPERT_OK; k++) {
            char id[700];
            /* token j of the text (predicted from position j - 1) */
            for (size_t j = (size_t)it[k].score_from + 1; j < it[k].len; j++) {
                snprintf(id, sizeof id, "%s+%zu", it[k].id, j);
                size_t p = (size_t)k * (size_t)T + j - 1;
                out_line(f, id, ok[p], lp[p], it[k].cluster, "token");
            }
            for (size_t s = 0; s < it[k].nstmt; s++) {
                int all = 1;
                double sc = 0.0;
                for (long j = it[k].stmt[s][0]; j < it[k].stmt[s][1]; j++) {
                    size_t p = (size_t)k * (size_t)T + (size_t)j - 1;
                    all &= ok[p];
                    sc += lp[p];
                }
                snprintf(id, sizeof id, "%s#%ld", it[k].id, it[k].stmt[s][0]);
                out_line(f, id, all, sc, it[k].cluster, "statement");
            }
        }
        for (int k = 0; k < B; k++) {
            free(it[k].id), free(it[k].cluster), free(it[k].stmt);
            memset(&it[k], 0, sizeof it[k]);
        }
    }
    free(it), free(ok), free(lp);
    batch_free(&b);
    return st;
}

static expert_status eval_fmnist(task *t, json_t **lines, size_t n, FILE *f, expert_error *err)
{
    int B = 500;
    batch b;
    uint8_t ok[500];
    float lp[500];
    const char *ids[500];
    if (reserve(t, B, 0) != 0 || batch_alloc(t, B, &b) != 0)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_status st = EXPERT_OK;
    for (size_t i0 = 0; i0 < n && st == EXPERT_OK; i0 += (size_t)B) {
        int nb = (int)(n - i0 < (size_t)B ? n - i0 : (size_t)B);
        for (int k = 0; k < B && st == EXPERT_OK; k++) {
            if (k >= nb) {
                memset(b.x + (size_t)k * (size_t)t->mlp.c.in, 0, (size_t)t->mlp.c.in * sizeof(float));
                b.y[k] = -1;
                continue;
            }
            json_t *o = lines[i0 + (size_t)k];
            ids[k] = json_string_value(json_object_get(o, "id"));
            json_t *ix = json_object_get(o, "index"), *lb = json_object_get(o, "label");
            json_int_t idx = json_integer_value(ix);
            if (ids[k] == NULL || !json_is_integer(ix) || !json_is_integer(lb) || idx < 0 || idx >= t->test.n)
                st = FAIL(EXPERT_E_INVALID_ARGUMENT,
                          "items line %zu: an fmnist item needs id, index (0..%d) and label", i0 + (size_t)k + 1,
                          t->test.n - 1);
            else if (json_integer_value(lb) != t->test.labels[idx])
                st = FAIL(EXPERT_E_INVALID_ARGUMENT, "items line %zu: label %d, but test image %d is a %d",
                          i0 + (size_t)k + 1, (int)json_integer_value(lb), (int)idx, t->test.labels[idx]);
            else {
                pixels(&t->test, (int)idx, b.x + (size_t)k * (size_t)t->mlp.c.in);
                b.y[k] = t->test.labels[idx];
            }
        }
        if (st == EXPERT_OK && !isfinite(forward(t, B, &b, ok, lp)))
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "the model's output is not finite (bad expert values?)");
        for (int k = 0; k < nb && st == EXPERT_OK; k++)
            out_line(f, ids[k], ok[k], lp[k], ids[k], "accuracy");
    }
    batch_free(&b);
    return st;
}

/* Reads a JSONL file: one JSON object per non-empty line. */
static expert_status read_jsonl(const char *path, json_t ***out, size_t *n, expert_error *err)
{
    char *text;
    size_t len;
    TRY(read_small_file(path, (size_t)1 << 32, &text, &len, err));
    size_t cap = 1024, count = 0, line = 0;
    json_t **v = malloc(cap * sizeof *v);
    expert_status st = v == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : EXPERT_OK;
    for (size_t i = 0; i < len && st == EXPERT_OK;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        line++;
        if (j > i) {
            json_error_t je;
            json_t *o = json_loadb(text + i, j - i, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
            if (!json_is_object(o)) {
                json_decref(o);
                st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' line %zu: not a JSON object (%s)", path, line,
                          je.text);
                break;
            }
            if (count == cap) {
                json_t **w = realloc(v, 2 * cap * sizeof *v);
                if (w == NULL) {
                    json_decref(o);
                    st = FAIL(EXPERT_E_NOMEM, "out of memory");
                    break;
                }
                v = w;
                cap *= 2;
            }
            v[count++] = o;
        }
        i = j + 1;
    }
    free(text);
    if (st == EXPERT_OK && count == 0)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' holds no items", path);
    if (st != EXPERT_OK) {
        for (size_t i = 0; i < count; i++)
            json_decref(v[i]);
        free(v);
        return st;
    }
    *out = v;
    *n = count;
    return EXPERT_OK;
}

static int cmd_eval(const cli_cmd *cmd, int argc, char **argv)
{
    static const int req[] = {O_BASE, O_EXPERT, O_ITEMS, O_EVOUT};
    args a;
    int rc = parse(cmd, argc, argv, &a, req, 4);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    ab_apply_how how = AB_APPLY_MERGED;
    if (a.v[O_APPLY].seen) {
        if (strcmp(a.v[O_APPLY].value, "unmerged") == 0)
            how = AB_APPLY_UNMERGED;
        else if (strcmp(a.v[O_APPLY].value, "merged") != 0)
            return cli_usage_error(cmd, "--apply must be merged or unmerged");
    }
    task t = {.quiet = a.v[O_QUIET].seen};
    expert_error err;
    err_clear(&err);
    char sha[65];
    ab_applied *ap = NULL;
    json_t **lines = NULL;
    size_t n = 0;
    char *buf = NULL;
    size_t len = 0;
    double t0 = ab_now();
    expert_status st = task_from_base(&t, a.v[O_BASE].value, sha, &err);
    if (st == EXPERT_OK)
        st = ab_apply_expert(t.m, a.v[O_EXPERT].value, sha, how, &ap, &err);
    if (st == EXPERT_OK)
        st = read_jsonl(a.v[O_ITEMS].value, &lines, &n, &err);
    if (st == EXPERT_OK && t.kind == TASK_FMNIST) {
        /* the test images come from the package named in the config, or its default place */
        t.cfg = a.v[O_CONFIG].seen ? json_load_file(a.v[O_CONFIG].value, 0, NULL)
                                   : json_pack("{s:{s:{s:s,s:s},s:i,s:i}}", "data", "fmnist", "path",
                                               "/usr/share/datasets/fashion-mnist", "package",
                                               "dataset-fashion-mnist", "split_seed", 0, "calib", 1);
        if (t.cfg == NULL)
            st = err_set(&err, EXPERT_E_INVALID_ARGUMENT, "config '%s' is not JSON", a.v[O_CONFIG].value);
        else
            st = fmnist_data(&t, 1, &err);
    }
    FILE *f = st == EXPERT_OK ? open_memstream(&buf, &len) : NULL;
    if (st == EXPERT_OK && f == NULL)
        st = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK)
        st = t.kind == TASK_SQL ? eval_sql(&t, lines, n, f, &err) : eval_fmnist(&t, lines, n, f, &err);
    if (f != NULL)
        fclose(f);
    if (st == EXPERT_OK)
        st = atomic_write_path(a.v[O_EVOUT].value, buf, len, 1, &err);
    if (st == EXPERT_OK && !t.quiet)
        fprintf(stderr, "%s: %zu items, %zu modules applied %s, %.1f s -> %s\n", t.name, n, ab_applied_count(ap),
                how == AB_APPLY_MERGED ? "merged" : "unmerged", ab_now() - t0, a.v[O_EVOUT].value);
    if (st == EXPERT_OK && a.v[O_JSON].seen) {
        /* what was evaluated, so a runner can prove each arm came from its file */
        uint8_t h[32];
        char hex[65], *data = NULL;
        size_t dl = 0;
        st = read_small_file(a.v[O_EXPERT].value, (size_t)1 << 34, &data, &dl, &err);
        if (st == EXPERT_OK) {
            expert_sha256(data, dl, h);
            fmt_hex(h, 32, hex);
            json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:f}", "task", t.name, "expert", a.v[O_EXPERT].value,
                                  "expert_sha256", hex, "items", (json_int_t)n, "modules_applied",
                                  (json_int_t)ab_applied_count(ap), "apply",
                                  how == AB_APPLY_MERGED ? "merged" : "unmerged", "seconds", ab_now() - t0);
            char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            printf("%s\n", s);
            free(s);
            json_decref(o);
        }
        free(data);
    }
    for (size_t i = 0; i < n; i++)
        json_decref(lines[i]);
    free(lines);
    free(buf);
    ab_applied_free(ap);
    task_free(&t);
    return st == EXPERT_OK ? 0 : fail(st, &err);
}

/* ----------------------------------------------------------- floor */

/* sgemm GFLOP/s at the shapes the training runs, single-threaded: the
 * machine's floor for the report's throughput ratios. */
static int cmd_floor(const cli_cmd *cmd, int argc, char **argv)
{
    args a;
    int rc = parse(cmd, argc, argv, &a, NULL, 0);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    static const int shapes[][3] = {{2048, 128, 128}, {2048, 352, 128}, {2048, 128, 352}, {128, 1024, 784},
                                    {128, 1024, 1024}, {1024, 1024, 1024}};
    size_t ns = sizeof shapes / sizeof shapes[0];
    json_t *arr = json_array();
    for (size_t i = 0; i < ns; i++) {
        int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        float *A = malloc((size_t)M * (size_t)K * 4), *B = malloc((size_t)N * (size_t)K * 4),
              *C = malloc((size_t)M * (size_t)N * 4);
        if (A == NULL || B == NULL || C == NULL) {
            free(A), free(B), free(C);
            json_decref(arr);
            return fail(EXPERT_E_NOMEM, NULL);
        }
        ab_rng r = ab_rng_make(1, 2);
        for (size_t j = 0; j < (size_t)M * (size_t)K; j++)
            A[j] = (float)ab_rng_uniform(&r);
        for (size_t j = 0; j < (size_t)N * (size_t)K; j++)
            B[j] = (float)ab_rng_uniform(&r);
        /* median of 7 timed batches of about 0.1 s each */
        double rates[7];
        long reps = 1;
        double t0 = ab_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
        double one = ab_now() - t0;
        reps = one > 0 ? (long)(0.1 / one) + 1 : 1000;
        for (int k = 0; k < 7; k++) {
            t0 = ab_now();
            for (long j = 0; j < reps; j++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
            rates[k] = 2.0 * M * N * K * (double)reps / (ab_now() - t0) * 1e-9;
        }
        for (int x = 1; x < 7; x++)
            for (int y = x; y > 0 && rates[y] < rates[y - 1]; y--) {
                double z = rates[y];
                rates[y] = rates[y - 1], rates[y - 1] = z;
            }
        json_array_append_new(arr, json_pack("{s:i,s:i,s:i,s:f,s:f,s:f}", "m", M, "n", N, "k", K, "gflops_median",
                                             rates[3], "gflops_min", rates[0], "gflops_max", rates[6]));
        if (!a.v[O_JSON].seen)
            printf("sgemm %4dx%4dx%4d  %.1f GFLOP/s (min %.1f, max %.1f)\n", M, N, K, rates[3], rates[0],
                   rates[6]);
        free(A), free(B), free(C);
    }
    if (a.v[O_JSON].seen) {
        json_t *o = json_pack("{s:s,s:i,s:o}", "what", "OpenBLAS sgemm, row-major NT", "threads", 1, "shapes", arr);
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        json_decref(arr);
    }
    return 0;
}

/* ------------------------------------------------------------ main */

static const char k_help_pretrain[] =
    "Usage: expert-ab pretrain --config CONFIG.json -o BASE.safetensors [--log LOG.json] [-q]\n"
    "\n"
    "Trains the base model of the config's task from scratch: sql on English text\n"
    "(fortunes, licence texts), fmnist on the classes data.base_classes only. Writes\n"
    "a safetensors checkpoint holding the model configuration; --log writes the loss\n"
    "curve, throughput and calibration loss/accuracy as JSON.\n";
static const char k_help_full[] =
    "Usage: expert-ab full --config CONFIG.json --base BASE.safetensors -o FULL.expert [--log LOG.json]\n"
    "\n"
    "Fine-tunes the weights of every adapter target (the q,k,v,o,gate,up,down\n"
    "projections; fc1-3 for fmnist) on the task's training split and writes the\n"
    "change W_tuned - W_base as an .expert: per module an osd module of rank 0\n"
    "whose CSR part holds every entry. This is the arm 'full' and the input of\n"
    "truncsvd / osd-magnitude / osd-gradient (expert-quality compress).\n";
static const char k_help_lora[] =
    "Usage: expert-ab lora --config CONFIG.json --base BASE.safetensors --rank R --seed S\n"
    "         -o LORA.expert [--log LOG.json]\n"
    "\n"
    "Trains a LoRA of rank R (alpha = lora.alpha_per_rank x R, A kaiming-uniform,\n"
    "B = 0, as PEFT) on every adapter target with real gradients, seed S for the\n"
    "initialisation and the data order, and writes it as lora modules.\n";
static const char k_help_base_expert[] =
    "Usage: expert-ab base-expert --base BASE.safetensors -o BASE.expert\n"
    "\n"
    "An .expert with no modules for the base, so that the 'base' arm is evaluated\n"
    "through the same path as every other arm.\n";
static const char k_help_grads[] =
    "Usage: expert-ab grads --config CONFIG.json --base BASE.safetensors --expert X.expert\n"
    "         -o GRADS.safetensors\n"
    "\n"
    "The gradient of the mean loss on the calibration split with respect to each\n"
    "adapter target's weight, at the model base + X (merged). Written as\n"
    "'<module path>.delta.grad' [out, in]: the input of\n"
    "expert-quality compress --score gradient --grads.\n";
static const char k_help_items[] =
    "Usage: expert-ab items --config CONFIG.json -o ITEMS.jsonl\n"
    "\n"
    "The test items of the task (quality/ab/PROTOCOL.md): sql, one window of ctx+1\n"
    "bytes per test file at a seeded offset with its statements; fmnist, the\n"
    "10,000 official test images by index and label.\n";
static const char k_help_eval[] =
    "Usage: expert-ab eval --base BASE.safetensors --expert X.expert --items ITEMS.jsonl\n"
    "         --out OUT.jsonl [--apply merged|unmerged] [--config CONFIG.json] [--json]\n"
    "\n"
    "The evaluator of the protocol (quality/ab/PROTOCOL.md): opens X with libexpert,\n"
    "checks it was made for this base (base_model.sha256), applies every module with\n"
    "the core fusion (merged into the weights, the default, or unmerged through\n"
    "expert_adapter_forward) and writes one JSON line per outcome: id, correct,\n"
    "score (log-probability), cluster, metric (sql: token and statement; fmnist:\n"
    "accuracy). --config gives the fmnist data location when not the default.\n"
    "--json prints a summary (expert SHA-256, modules applied, items, seconds).\n";
static const char k_help_floor[] =
    "Usage: expert-ab floor [--json]\n"
    "\n"
    "OpenBLAS sgemm GFLOP/s on one thread at the training shapes (median, min, max\n"
    "of 7 timed batches): the floor the training throughput is compared with.\n";

static const cli_cmd k_cmds[] = {
    {"pretrain", "train the base model", k_help_pretrain, cmd_pretrain},
    {"full", "dense fine-tune -> FULL.expert", k_help_full, cmd_full},
    {"lora", "LoRA fine-tune -> LORA.expert", k_help_lora, cmd_lora},
    {"base-expert", "an expert with no modules", k_help_base_expert, cmd_base_expert},
    {"grads", "calibration gradients for osd-gradient", k_help_grads, cmd_grads},
    {"items", "the task's test items (JSONL)", k_help_items, cmd_items},
    {"eval", "evaluate an expert on items (JSONL)", k_help_eval, cmd_eval},
    {"floor", "sgemm speed floor", k_help_floor, cmd_floor},
};

int main(int argc, char **argv)
{
    openblas_set_num_threads(1);
    size_t nc = sizeof k_cmds / sizeof k_cmds[0];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        printf("Usage: expert-ab COMMAND [options]   (expert-ab COMMAND --help)\n\n"
               "Trains the A/B models, writes each arm as an .expert file and evaluates\n"
               "experts on items. quality/ab/run drives it from a plan; see quality/README.md.\n\n");
        for (size_t i = 0; i < nc; i++)
            printf("  %-12s %s\n", k_cmds[i].name, k_cmds[i].summary);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < nc; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0)
            return k_cmds[i].run(&k_cmds[i], argc - 1, argv + 1);
    fprintf(stderr, "expert-ab: unknown command '%s'\nTry 'expert-ab --help'.\n", argv[1]);
    return CLI_EXIT_USAGE;
}
