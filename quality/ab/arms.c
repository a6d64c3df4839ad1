/* arms.c — checkpoints, LoRA branches, the arms as .expert files, and
 * applying an .expert file to a model (see arms.h). */
#include "arms.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qinternal.h" /* xq_layout, xq_stored_size: the quality/ byte accounting */
#include "util.h"      /* atomic_write_path, read_small_file, fmt_hex */

#define FAIL(code, ...) err_set(err, (code), __VA_ARGS__)
#define CHECKPOINT_MAX (UINT64_C(1) << 32)

/* ------------------------------------------------------ safetensors */

expert_status ab_safetensors_write(const char *path, const ab_out_tensor *t, size_t n,
                                   const char *metadata_json, expert_error *err)
{
    json_t *hdr = json_object();
    if (metadata_json != NULL) {
        json_error_t je;
        json_t *meta = json_loads(metadata_json, 0, &je);
        if (!json_is_object(meta)) {
            json_decref(meta);
            json_decref(hdr);
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "safetensors metadata is not a JSON object");
        }
        json_object_set_new(hdr, "__metadata__", meta);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = (uint64_t)t[i].rows * (uint64_t)t[i].cols * 4u;
        json_t *e = json_pack("{s:s,s:[I,I],s:[I,I]}", "dtype", "F32", "shape", (json_int_t)t[i].rows,
                              (json_int_t)t[i].cols, "data_offsets", (json_int_t)off,
                              (json_int_t)(off + bytes));
        json_object_set_new(hdr, t[i].name, e);
        off += bytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(hdr);
    if (text == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    size_t hl = strlen(text), padded = (hl + 7) / 8 * 8, total = 8 + padded + (size_t)off;
    uint8_t *buf = malloc(total);
    if (buf == NULL) {
        free(text);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl); /* the format pads the header with spaces */
    free(text);
    size_t at = 8 + padded;
    for (size_t i = 0; i < n; i++) {
        size_t bytes = (size_t)t[i].rows * (size_t)t[i].cols * 4u;
        memcpy(buf + at, t[i].data, bytes); /* little-endian hosts only, as the whole tree */
        at += bytes;
    }
    expert_status st = atomic_write_path(path, buf, total, 1, err);
    free(buf);
    return st;
}

/* Reads a checkpoint file, parses it, and returns its __metadata__ object. */
static expert_status read_checkpoint(const char *path, char **data, size_t *size, expert_safetensors **st,
                                     json_t **meta, char sha_hex[65], expert_error *err)
{
    XQ_TRY(read_small_file(path, CHECKPOINT_MAX, data, size, err));
    expert_status s = expert_safetensors_parse(*data, *size, st, err);
    if (s != EXPERT_OK) {
        free(*data);
        return s;
    }
    json_error_t je;
    json_t *hdr = json_loadb(*data + 8, (size_t)expert_safetensors_header_length(*st) - 8, 0, &je);
    json_t *m = json_object_get(hdr, "__metadata__");
    const char *fmt = json_string_value(json_object_get(m, "format"));
    if (fmt == NULL || strcmp(fmt, "expert-ab") != 0) {
        json_decref(hdr);
        expert_safetensors_free(*st);
        free(*data);
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' is not an expert-ab checkpoint (no __metadata__.format)",
                    path);
    }
    *meta = json_incref(m);
    json_decref(hdr);
    if (sha_hex != NULL) {
        uint8_t sha[32];
        expert_sha256(*data, *size, sha);
        fmt_hex(sha, 32, sha_hex);
    }
    return EXPERT_OK;
}

expert_status ab_checkpoint_save(const ab_model *m, const char *path, const char *task,
                                 const char *config_json, char sha_hex[65], expert_error *err)
{
    ab_out_tensor *t = calloc((size_t)m->ntensors, sizeof *t);
    if (t == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (int i = 0; i < m->ntensors; i++) {
        snprintf(t[i].name, sizeof t[i].name, "%s", m->tensors[i].name);
        t[i].data = m->tensors[i].w;
        t[i].rows = m->tensors[i].rows;
        t[i].cols = m->tensors[i].cols;
    }
    json_t *meta = json_pack("{s:s,s:s,s:s}", "format", "expert-ab", "task", task, "config", config_json);
    char *mj = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(meta);
    expert_status st = mj == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory")
                                  : ab_safetensors_write(path, t, (size_t)m->ntensors, mj, err);
    free(mj);
    free(t);
    if (st == EXPERT_OK && sha_hex != NULL)
        st = ab_checkpoint_info(path, NULL, NULL, sha_hex, err);
    return st;
}

expert_status ab_checkpoint_info(const char *path, char **task, char **config_json, char sha_hex[65],
                                 expert_error *err)
{
    char *data;
    size_t size;
    expert_safetensors *st;
    json_t *meta;
    XQ_TRY(read_checkpoint(path, &data, &size, &st, &meta, sha_hex, err));
    const char *tk = json_string_value(json_object_get(meta, "task"));
    const char *cf = json_string_value(json_object_get(meta, "config"));
    expert_status s = EXPERT_OK;
    if (tk == NULL || cf == NULL)
        s = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': __metadata__ lacks task or config", path);
    if (s == EXPERT_OK && task != NULL && (*task = strdup(tk)) == NULL)
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
    if (s == EXPERT_OK && config_json != NULL && (*config_json = strdup(cf)) == NULL)
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
    json_decref(meta);
    expert_safetensors_free(st);
    free(data);
    return s;
}

expert_status ab_checkpoint_load(ab_model *m, const char *path, expert_error *err)
{
    char *data;
    size_t size;
    expert_safetensors *st;
    json_t *meta;
    XQ_TRY(read_checkpoint(path, &data, &size, &st, &meta, NULL, err));
    json_decref(meta);
    expert_status s = EXPERT_OK;
    uint32_t count = expert_safetensors_count(st);
    for (int i = 0; i < m->ntensors && s == EXPERT_OK; i++) {
        ab_named *t = &m->tensors[i];
        expert_tensor_info ti;
        int found = 0;
        for (uint32_t j = 0; j < count && !found; j++)
            found = expert_safetensors_tensor(st, j, &ti) == EXPERT_OK && strcmp(ti.name, t->name) == 0;
        if (!found)
            s = FAIL(EXPERT_E_INVALID_ARGUMENT, "checkpoint '%s' has no tensor '%s'", path, t->name);
        else if (ti.dtype != EXPERT_DTYPE_F32 || ti.rank != 2 || ti.dims[0] != (uint64_t)t->rows ||
                 ti.dims[1] != (uint64_t)t->cols)
            s = FAIL(EXPERT_E_INVALID_ARGUMENT, "checkpoint '%s': tensor '%s' is not F32 [%d, %d]", path,
                     t->name, t->rows, t->cols);
        else
            memcpy(t->w, data + ti.data_offset, (size_t)ti.data_length);
    }
    if (s == EXPERT_OK && count != (uint32_t)m->ntensors)
        s = FAIL(EXPERT_E_INVALID_ARGUMENT, "checkpoint '%s' has %u tensors, the model %d", path, count,
                 m->ntensors);
    expert_safetensors_free(st);
    free(data);
    return s;
}

/* ------------------------------------------------------------- LoRA */

int ab_lora_attach(ab_model *m, int r, double alpha, uint64_t seed)
{
    ab_rng rng = ab_rng_make(seed, 0x4C6F5241 /* "LoRA" */);
    for (int i = 0; i < m->nlin; i++) {
        ab_linear *L = m->lin[i];
        free(L->A);
        free(L->B);
        L->A = malloc((size_t)r * (size_t)L->in * sizeof(float));
        L->B = calloc((size_t)L->out * (size_t)r, sizeof(float));
        if (L->A == NULL || L->B == NULL)
            return -1;
        double bound = 1.0 / sqrt((double)L->in);
        for (size_t j = 0; j < (size_t)r * (size_t)L->in; j++)
            L->A[j] = (float)((2.0 * ab_rng_uniform(&rng) - 1.0) * bound);
        L->r = r;
        L->s = (float)(alpha / r);
    }
    return 0;
}

/* -------------------------------------------------- writing the arms */

typedef struct wsec {
    char name[200];
    uint16_t type;
    uint8_t dtype, rank;
    uint64_t dims[2];
    uint32_t module, layer;
    const void *data;
    size_t length;
} wsec;

static uint32_t layer_of(const char *module_path)
{
    char key[256], buf[256];
    expert_peft_role role;
    snprintf(key, sizeof key, "%s.lora_A.weight", module_path);
    if (expert_peft_classify(key, buf, sizeof buf, &role) != EXPERT_OK)
        return EXPERT_LAYER_NONE;
    return role.layer;
}

static json_t *module_json(const char *path, const char *type, const ab_linear *L)
{
    uint32_t layer = layer_of(path);
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "layer", layer == EXPERT_LAYER_NONE ? json_null() : json_integer(layer));
    json_object_set_new(o, "in_features", json_integer(L->in));
    json_object_set_new(o, "out_features", json_integer(L->out));
    return o;
}

/* Writes sections (codec per section: the smallest of raw, zstd and
 * shuffle+zstd, as `expert-quality compress` stores its output, so every
 * arm is charged alike) and the metadata. */
static expert_status write_expert(const char *path, const ab_expert_meta *meta, json_t *modules,
                                  const wsec *s, size_t n, expert_error *err)
{
    json_t *root = json_object();
    json_object_set_new(root, "format", json_string("expert-v2"));
    json_object_set_new(root, "name", json_string(meta->name));
    json_object_set_new(root, "version", json_string("1"));
    json_object_set_new(root, "base_model", json_pack("{s:s,s:s}", "name", meta->base_name, "sha256",
                                                      meta->base_sha));
    json_object_set_new(root, "created_by", json_string("expert-ab " XQ_VERSION));
    json_object_set_new(root, "modules", modules);
    if (meta->extra_json != NULL) {
        json_error_t je;
        json_t *x = json_loads(meta->extra_json, 0, &je);
        if (!json_is_object(x)) {
            json_decref(x);
            json_decref(root);
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "extra metadata is not a JSON object");
        }
        json_object_set_new(root, "extra", json_pack("{s:o}", "ab", x));
    }
    char *mj = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(root);
    if (mj == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    xq_layout lay = {.alignment = 64, .frame_size = 1u << 20, .level = 9, .codec = XQ_CODEC_AUTO};
    xq_encoder *enc = xq_encoder_new();
    expert_writer *w = NULL;
    expert_status st = enc == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory")
                                   : expert_writer_open(path, NULL, &w, err);
    for (size_t i = 0; st == EXPERT_OK && i < n; i++) {
        uint64_t stored;
        uint8_t codec = EXPERT_CODEC_RAW;
        if (s[i].length > 0)
            st = xq_stored_size(&lay, enc, s[i].dtype, s[i].data, s[i].length, &stored, &codec, err);
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        d.name = s[i].name;
        d.type = s[i].type;
        d.codec = codec;
        d.dtype = s[i].dtype;
        d.rank = s[i].rank;
        d.dims[0] = s[i].dims[0];
        d.dims[1] = s[i].dims[1];
        d.module = s[i].module;
        d.layer = s[i].layer;
        if (st == EXPERT_OK)
            st = expert_writer_add(w, &d, s[i].data, s[i].length, err);
    }
    if (st == EXPERT_OK)
        st = expert_writer_set_metadata(w, mj, strlen(mj), err);
    if (st == EXPERT_OK) {
        st = expert_writer_finish(w, NULL, err);
        w = NULL;
    }
    if (w != NULL)
        expert_writer_abort(w);
    xq_encoder_free(enc);
    free(mj);
    return st;
}

static void sec2(wsec *s, const char *path, const char *suffix, uint16_t type, uint8_t dtype, uint64_t d0,
                 uint64_t d1, uint32_t module, const void *data, size_t elem)
{
    snprintf(s->name, sizeof s->name, "%s.%s", path, suffix);
    s->type = type;
    s->dtype = dtype;
    s->rank = 2;
    s->dims[0] = d0;
    s->dims[1] = d1;
    s->module = module;
    s->layer = layer_of(path);
    s->data = data;
    s->length = (size_t)(d0 * d1) * elem;
}

/* A rank-1 section [d0]. */
static void sec1(wsec *s, const char *path, const char *suffix, uint16_t type, uint8_t dtype, uint64_t d0,
                 uint32_t module, const void *data, size_t elem)
{
    sec2(s, path, suffix, type, dtype, d0, 1, module, data, elem);
    s->rank = 1;
    s->dims[1] = 0;
}

expert_status ab_write_lora_expert(const ab_model *m, const char *path, const ab_expert_meta *meta,
                                   expert_error *err)
{
    wsec *s = calloc(2 * (size_t)m->nlin + 1, sizeof *s);
    json_t *mods = json_array();
    if (s == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    size_t n = 0;
    uint32_t mi = 0;
    for (int i = 0; i < m->nlin; i++) {
        const ab_linear *L = m->lin[i];
        if (L->r == 0)
            continue;
        char mp[160];
        snprintf(mp, sizeof mp, AB_PEFT_PREFIX "%s", L->name);
        json_t *o = module_json(mp, "lora", L);
        json_object_set_new(o, "r", json_integer(L->r));
        json_object_set_new(o, "alpha", json_real((double)L->s * L->r));
        json_object_set_new(o, "rslora", json_false());
        json_array_append_new(mods, o);
        sec2(&s[n++], mp, "lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, (uint64_t)L->r,
             (uint64_t)L->in, mi, L->A, 4);
        sec2(&s[n++], mp, "lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, (uint64_t)L->out,
             (uint64_t)L->r, mi, L->B, 4);
        mi++;
    }
    expert_status st = write_expert(path, meta, mods, s, n, err);
    free(s);
    return st;
}

expert_status ab_write_full_expert(const ab_model *tuned, const ab_model *base, const char *path,
                                   const ab_expert_meta *meta, expert_error *err)
{
    if (tuned->nlin != base->nlin)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "models differ in their layers");
    size_t nl = (size_t)tuned->nlin;
    wsec *s = calloc(6 * nl, sizeof *s);
    void **own = calloc(3 * nl, sizeof *own);
    json_t *mods = json_array();
    expert_status st = s == NULL || own == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : EXPERT_OK;
    size_t n = 0;
    static const float none = 0.0f;
    for (size_t i = 0; st == EXPERT_OK && i < nl; i++) {
        const ab_linear *T = tuned->lin[i], *B = base->lin[i];
        if (T->out != B->out || T->in != B->in || strcmp(T->name, B->name) != 0) {
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "layer %zu differs between the models", i);
            break;
        }
        size_t out = (size_t)T->out, in = (size_t)T->in, nnz = out * in;
        int32_t *indptr = malloc((out + 1) * sizeof *indptr), *indices = malloc(nnz * sizeof *indices);
        float *values = malloc(nnz * sizeof *values);
        own[3 * i] = indptr, own[3 * i + 1] = indices, own[3 * i + 2] = values;
        if (indptr == NULL || indices == NULL || values == NULL || nnz > INT32_MAX) {
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
            break;
        }
        for (size_t o = 0; o <= out; o++)
            indptr[o] = (int32_t)(o * in);
        for (size_t j = 0; j < nnz; j++) {
            indices[j] = (int32_t)(j % in);
            values[j] = T->W[j] - B->W[j];
        }
        char mp[160];
        snprintf(mp, sizeof mp, AB_PEFT_PREFIX "%s", T->name);
        json_t *o = module_json(mp, "osd", T);
        json_object_set_new(o, "rank", json_integer(0));
        json_object_set_new(o, "sparse_format", json_string("csr"));
        json_array_append_new(mods, o);
        uint32_t mi = (uint32_t)i;
        sec2(&s[n++], mp, "osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, out, 0, mi, &none, 4);
        sec1(&s[n++], mp, "osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, mi, &none, 4);
        sec2(&s[n++], mp, "osd_VT", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, in, mi, &none, 4);
        sec1(&s[n++], mp, "osd_sparse_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, out + 1, mi,
             indptr, 4);
        sec1(&s[n++], mp, "osd_sparse_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, nnz, mi,
             indices, 4);
        sec1(&s[n++], mp, "osd_sparse_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, nnz, mi,
             values, 4);
    }
    if (st == EXPERT_OK)
        st = write_expert(path, meta, mods, s, n, err);
    else
        json_decref(mods);
    for (size_t i = 0; own != NULL && i < 3 * nl; i++)
        free(own[i]);
    free(own);
    free(s);
    return st;
}

expert_status ab_write_empty_expert(const char *path, const ab_expert_meta *meta, expert_error *err)
{
    return write_expert(path, meta, json_array(), NULL, 0, err);
}

/* --------------------------------------------------- applying an arm */

struct ab_applied {
    ab_model *model;
    size_t n;              /* modules applied */
    size_t nkept;
    expert_adapter **kept; /* unmerged modules, borrowed by the layers */
};

size_t ab_applied_count(const ab_applied *a)
{
    return a != NULL ? a->n : 0;
}

void ab_applied_free(ab_applied *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->model->nlin; i++)
        a->model->lin[i]->adapter = NULL;
    for (size_t i = 0; i < a->nkept; i++)
        expert_adapter_free(a->kept[i]);
    free(a->kept);
    free(a);
}

static expert_status check_base(expert_reader *r, const char *path, const char *base_sha, expert_error *err)
{
    size_t len;
    const char *text = expert_metadata_json(r, &len);
    json_error_t je;
    json_t *meta = json_loadb(text, len, 0, &je);
    const char *sha = json_string_value(json_object_get(json_object_get(meta, "base_model"), "sha256"));
    expert_status st = EXPERT_OK;
    if (sha == NULL)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' names no base_model.sha256: cannot tell which base it adapts",
                  path);
    else if (strcmp(sha, base_sha) != 0)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT,
                  "'%s' was made for base sha256 %.16s..., but the base given is %.16s...: wrong base model",
                  path, sha, base_sha);
    json_decref(meta);
    return st;
}

/* Decodes module i and checks it fits layer L. */
static expert_status load_module(expert_reader *r, uint32_t i, ab_model *m, const char *path,
                                 uint8_t *taken, ab_linear **layer, expert_adapter **out, expert_error *err)
{
    expert_module_info mi;
    XQ_TRY(expert_module(r, i, &mi));
    ab_linear *L = ab_model_find(m, mi.path);
    if (L == NULL)
        return FAIL(EXPERT_E_NOT_FOUND, "'%s': module '%s' is not a layer of this model", path, mi.path);
    int li = 0;
    while (m->lin[li] != L)
        li++;
    if (taken[li])
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': layer '%s' has two modules", path, L->name);
    taken[li] = 1;
    expert_adapter *a;
    XQ_TRY(expert_adapter_load(r, i, &a, err));
    if (a->kind == EXPERT_ADAPTER_IA3) { /* the dimension its vector does not give */
        if (a->in == 0)
            a->in = (uint64_t)L->in;
        if (a->out == 0)
            a->out = (uint64_t)L->out;
    }
    expert_status st = EXPERT_OK;
    if (a->out != (uint64_t)L->out || a->in != (uint64_t)L->in)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': module '%s' is [%" PRIu64 ", %" PRIu64 "], the layer [%d, %d]",
                  path, mi.path, a->out, a->in, L->out, L->in);
    if (st == EXPERT_OK)
        st = expert_adapter_check(a, err);
    if (st != EXPERT_OK) {
        expert_adapter_free(a);
        return st;
    }
    *layer = L;
    *out = a;
    return EXPERT_OK;
}

expert_status ab_apply_expert(ab_model *m, const char *path, const char *base_sha, ab_apply_how how,
                              ab_applied **out, expert_error *err)
{
    *out = NULL;
    expert_reader *r;
    XQ_TRY(expert_open(path, NULL, &r, err));
    uint32_t nm = expert_module_count(r);
    ab_applied *ap = calloc(1, sizeof *ap);
    uint8_t *taken = calloc((size_t)m->nlin + 1, 1);
    if (ap != NULL) {
        ap->model = m;
        ap->kept = calloc(nm ? nm : 1, sizeof *ap->kept);
    }
    expert_status st = ap == NULL || ap->kept == NULL || taken == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory")
                                                      : check_base(r, path, base_sha, err);
    for (uint32_t i = 0; st == EXPERT_OK && i < nm; i++) {
        ab_linear *L = NULL;
        expert_adapter *a = NULL;
        st = load_module(r, i, m, path, taken, &L, &a, err);
        if (st == EXPERT_OK && how == AB_APPLY_MERGED) {
            st = expert_adapter_merge(a, L->W, L->b, err);
            expert_adapter_free(a);
        } else if (st == EXPERT_OK) {
            L->adapter = a;
            ap->kept[ap->nkept++] = a;
        }
        if (st == EXPERT_OK)
            ap->n++;
    }
    expert_close(r);
    free(taken);
    if (st != EXPERT_OK) {
        ab_applied_free(ap);
        return st;
    }
    *out = ap;
    return EXPERT_OK;
}
