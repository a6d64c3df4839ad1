/* pack.c — a PEFT package (its files as byte ranges) -> v2 sections and
 * metadata, the single place where PEFT's adapter_config.json semantics are
 * decided (spec §9.5, §10.2, §10.7). `expert-cli pack DIR` hands it mapped
 * files; the v1 import hands it tar entries held in memory.
 *
 * The packer reads each file where it lies and writes each section as soon
 * as it is encoded, so peak memory is one section plus the writer's frames;
 * on_section tells the caller which bytes it may release. */
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "errors_internal.h"
#include "pack.h"

#define FAIL(code, ...) xp_set_error(err, (code), EXPERT_NO_OFFSET, EXPERT_NO_SECTION, __VA_ARGS__)
#define BAD_INPUT EXPERT_E_INVALID_ARGUMENT

#define ST_NAME "adapter_model.safetensors"
#define MANIFEST_NAME "manifest.json"
#define ADAPTER_CONFIG_NAME "adapter_config.json"
#define JSON_FILE_MAX (16u << 20)
#define NONE_INDEX SIZE_MAX

typedef struct tensor_entry {
    expert_tensor_info info; /* name owned by the safetensors parse */
    char *module_path;
    expert_peft_role role;
    unsigned role_rank; /* A 0, B 1, magnitude 2, anything else 3 */
    uint32_t module;    /* index into the module list, or EXPERT_MODULE_NONE */
} tensor_entry;

typedef struct module_entry {
    const char *path; /* borrowed from a tensor_entry */
    uint32_t layer;
    size_t a, b, mag, ia3; /* tensor indexes, NONE_INDEX when absent */
    int feedforward;       /* ia3 */
} module_entry;

typedef struct pack {
    const expert_pack_file *files;
    size_t count;
    expert_pack_options o;
    json_t *manifest, *adapter_cfg; /* NULL when absent */
    const json_t *base_model;       /* inside manifest, or NULL */
    const json_t *manifest_adapter; /* inside manifest, or NULL */
    size_t st_file;                 /* index of adapter_model.safetensors, or NONE_INDEX */
    expert_safetensors *st;
    tensor_entry *tensors;
    size_t tensor_count;
    module_entry *modules;
    size_t module_count;
    const expert_pack_file **sorted; /* by name */
    expert_pack_progress progress;
    expert_pack_result result;
} pack;

static void pack_free(pack *p)
{
    for (size_t i = 0; i < p->tensor_count; i++)
        xp_free(p->tensors[i].module_path);
    xp_free(p->tensors);
    xp_free(p->modules);
    xp_free(p->sorted);
    expert_safetensors_free(p->st);
    json_decref(p->manifest);
    json_decref(p->adapter_cfg);
}

/* ------------------------------------------------------------ JSON files */

expert_status xp_json_object_load(const char *name, const void *data, uint64_t size,
                                  json_t **out, expert_error *err)
{
    json_error_t je;
    *out = NULL;
    if (size > JSON_FILE_MAX)
        return FAIL(BAD_INPUT, "'%s' is larger than 16 MiB", name);
    json_t *root = json_loadb((const char *)data, (size_t)size, 0, &je);
    if (root == NULL)
        return FAIL(BAD_INPUT, "'%s' is not valid JSON: line %d: %s", name, je.line, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return FAIL(BAD_INPUT, "'%s' is not a JSON object", name);
    }
    *out = root;
    return EXPERT_OK;
}

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The base model object: schema 1.0 `base_model`, schema 2.0
 * `base_models[i]`. With several base models the caller must name one; *bad
 * is set when that choice is missing or names none of them. */
static const json_t *manifest_base_model(const json_t *m, const char *want, int *bad)
{
    *bad = 0;
    const json_t *bm = json_object_get(m, "base_model");
    if (json_is_object(bm))
        return bm;
    bm = json_object_get(m, "base_models");
    if (!json_is_array(bm) || json_array_size(bm) == 0)
        return NULL;
    if (json_array_size(bm) == 1 && want == NULL)
        return json_is_object(json_array_get(bm, 0)) ? json_array_get(bm, 0) : NULL;
    for (size_t i = 0; want != NULL && i < json_array_size(bm); i++) {
        const json_t *e = json_array_get(bm, i);
        const json_t *nm = json_object_get(e, "name");
        if (json_is_string(nm) && strcmp(json_string_value(nm), want) == 0)
            return e;
    }
    *bad = 1;
    return NULL;
}

/* First adapter object of the manifest (1.0 `adapters`, 2.0
 * `base_models[i].adapters`): alpha's source when there is no config. */
static const json_t *manifest_adapter(const json_t *m, const json_t *bm)
{
    const json_t *list = json_object_get(m, "adapters");
    if (!json_is_array(list))
        list = json_object_get(bm, "adapters");
    if (json_is_array(list) && json_array_size(list) > 0 && json_is_object(json_array_get(list, 0)))
        return json_array_get(list, 0);
    return NULL;
}

/* ------------------------------------------------------- PEFT's matching */

/* Python-regex subset -> POSIX ERE: "\d" becomes [0-9]; the rest is shared
 * by the patterns PEFT configs use (literals, '.', '|', groups, classes). */
static char *posix_pattern(const char *prefix, const char *pat, const char *suffix)
{
    size_t n = strlen(prefix) + 5 * strlen(pat) + strlen(suffix) + 1, k = 0;
    char *out = xp_malloc(n);
    if (out == NULL)
        return NULL;
    k += (size_t)snprintf(out, n, "%s", prefix);
    for (const char *p = pat; *p; p++) {
        if (p[0] == '\\' && p[1] == 'd') {
            memcpy(out + k, "[0-9]", 5);
            k += 5;
            p++;
        } else {
            out[k++] = *p;
        }
    }
    snprintf(out + k, n - k, "%s", suffix);
    return out;
}

/* 1 if the whole of s matches prefix + pat + suffix as an ERE, 0 if not,
 * -1 if the pattern does not compile. */
static int regex_full(const char *prefix, const char *pat, const char *suffix, const char *s)
{
    char *re_text = posix_pattern(prefix, pat, suffix);
    regex_t re;
    if (re_text == NULL)
        return -1;
    int rc = regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB);
    xp_free(re_text);
    if (rc != 0)
        return -1;
    rc = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return rc;
}

/* PEFT's module name: the path without the "base_model.model." wrapper. */
static const char *peft_name(const char *path)
{
    return strncmp(path, "base_model.model.", 17) == 0 ? path + 17 : path;
}

/* PEFT's get_pattern_key: the first key k (dict order) of a rank/alpha
 * pattern whose regex ".*\.k$" matches the module name; NULL if none. */
static const json_t *pattern_value(const json_t *patterns, const char *path)
{
    const char *key;
    json_t *val;
    if (!json_is_object(patterns))
        return NULL;
    json_object_foreach((json_t *)patterns, key, val) {
        if (regex_full("^.*\\.(", key, ")$", peft_name(path)) == 1)
            return val;
    }
    return NULL;
}

/* alpha: alpha_pattern, else lora_alpha, else PEFT's default 8; without an
 * adapter_config.json: the manifest adapter's alpha, else r. *defaulted when
 * neither file stated it. */
static double module_alpha(const pack *p, const char *path, uint64_t r, int *defaulted)
{
    *defaulted = 0;
    const json_t *v = pattern_value(json_object_get(p->adapter_cfg, "alpha_pattern"), path);
    if (json_is_number(v))
        return json_number_value(v);
    v = json_object_get(p->adapter_cfg, "lora_alpha");
    if (json_is_number(v))
        return json_number_value(v);
    if (p->adapter_cfg != NULL) {
        *defaulted = 1;
        return 8.0;
    }
    v = json_object_get(p->manifest_adapter, "alpha");
    if (json_is_number(v))
        return json_number_value(v);
    *defaulted = 1;
    return (double)r;
}

/* feedforward: PEFT's feedforward_modules; a list matches when the module
 * name equals an entry or ends with "." + entry, a string is a regex that
 * must match the whole name. -1 when the config does not say. */
static int module_listed_feedforward(const pack *p, const char *path)
{
    const json_t *ff = json_object_get(p->adapter_cfg, "feedforward_modules");
    const char *name = peft_name(path);
    if (json_is_string(ff))
        return regex_full("^(", json_string_value(ff), ")$", name) == 1;
    if (json_is_array(ff)) {
        size_t nl = strlen(name);
        for (size_t i = 0; i < json_array_size(ff); i++) {
            const json_t *it = json_array_get(ff, i);
            if (!json_is_string(it))
                continue;
            const char *e = json_string_value(it);
            size_t el = strlen(e);
            if (strcmp(name, e) == 0 ||
                (nl > el && name[nl - el - 1] == '.' && strcmp(name + nl - el, e) == 0))
                return 1;
        }
        return 0;
    }
    return -1;
}

/* ---------------------------------------------------- tensors and modules */

static unsigned role_rank(uint16_t type)
{
    switch (type) {
    case EXPERT_SECTION_LORA_A: return 0;
    case EXPERT_SECTION_LORA_B: return 1;
    case EXPERT_SECTION_DORA_MAGNITUDE: return 2;
    default: return 3;
    }
}

static int has_role(uint16_t type)
{
    return type == EXPERT_SECTION_LORA_A || type == EXPERT_SECTION_LORA_B ||
           type == EXPERT_SECTION_DORA_MAGNITUDE || type == EXPERT_SECTION_IA3_VECTOR;
}

static int tensor_cmp(const void *pa, const void *pb)
{
    const tensor_entry *a = pa, *b = pb;
    if (a->role.layer != b->role.layer)
        return a->role.layer < b->role.layer ? -1 : 1;
    int c = strcmp(a->module_path, b->module_path);
    if (c != 0)
        return c;
    if (a->role_rank != b->role_rank)
        return a->role_rank < b->role_rank ? -1 : 1;
    return strcmp(a->info.name, b->info.name);
}

static int is_float_dtype(expert_dtype d)
{
    return d == EXPERT_DTYPE_F32 || d == EXPERT_DTYPE_F16 || d == EXPERT_DTYPE_BF16 ||
           d == EXPERT_DTYPE_F64;
}

/* Parses the safetensors file strictly (§10.7), classifies every key and
 * sorts the tensors into streaming order. */
static expert_status load_tensors(pack *p, expert_error *err)
{
    const expert_pack_file *f = &p->files[p->st_file];
    XP_TRY(expert_safetensors_parse(f->data, (size_t)f->size, &p->st, err));
    uint32_t n = expert_safetensors_count(p->st);
    p->tensors = xp_calloc(n ? n : 1, sizeof *p->tensors);
    if (p->tensors == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        tensor_entry *t = &p->tensors[i];
        if (expert_safetensors_tensor(p->st, i, &t->info) != EXPERT_OK)
            return FAIL(EXPERT_E_BAD_SAFETENSORS, "cannot read tensor %u", i);
        p->tensor_count++;
        size_t cap = strlen(t->info.name) + 1;
        t->module_path = xp_malloc(cap);
        if (t->module_path == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        if (expert_peft_classify(t->info.name, t->module_path, cap, &t->role) != EXPERT_OK)
            return FAIL(EXPERT_E_BAD_SAFETENSORS, "cannot classify tensor '%s'", t->info.name);
        t->role_rank = role_rank(t->role.type);
        t->module = EXPERT_MODULE_NONE;
    }
    if (p->tensor_count > 1)
        qsort(p->tensors, p->tensor_count, sizeof *p->tensors, tensor_cmp);
    return EXPERT_OK;
}

static expert_status check_ia3(pack *p, module_entry *m, const char *peft_type, expert_error *err)
{
    const expert_tensor_info *v = &p->tensors[m->ia3].info;
    if (m->a != NONE_INDEX || m->b != NONE_INDEX || m->mag != NONE_INDEX)
        return FAIL(EXPERT_E_BAD_SAFETENSORS, "module '%s' mixes IA3 and LoRA tensors", m->path);
    if (peft_type != NULL && strcmp(peft_type, "IA3") != 0)
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "'%s' is an IA3 tensor but adapter_config.json says peft_type %s", v->name,
                    peft_type);
    if (!is_float_dtype(v->dtype) || v->rank != 2 || (v->dims[0] != 1 && v->dims[1] != 1))
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "'%s': an IA3 vector must be a float [out,1] or [1,in] tensor", v->name);
    int ff = module_listed_feedforward(p, m->path);
    if (ff < 0) /* no config: the shape says it */
        ff = v->dims[0] == 1 && v->dims[1] != 1;
    if (ff ? v->dims[0] != 1 : v->dims[1] != 1)
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "'%s' is [%llu,%llu] but the module is%s a feed-forward module (IA3 vectors "
                    "are [1,in] for feed-forward modules, [out,1] otherwise)",
                    v->name, (unsigned long long)v->dims[0], (unsigned long long)v->dims[1],
                    ff ? "" : " not");
    m->feedforward = ff;
    return EXPERT_OK;
}

/* What adapter_config.json says must agree with the tensors (§9.5) and the
 * shapes must satisfy §6.4-§6.5: such an input is rejected, never re-typed. */
static expert_status check_lora(pack *p, const module_entry *m, const char *peft_type,
                                expert_error *err)
{
    const json_t *use_dora = json_object_get(p->adapter_cfg, "use_dora");
    if (m->a == NONE_INDEX || m->b == NONE_INDEX)
        return FAIL(EXPERT_E_BAD_SAFETENSORS, "module '%s' lacks its %s tensor", m->path,
                    m->a == NONE_INDEX ? "lora_A" : "lora_B");
    const expert_tensor_info *a = &p->tensors[m->a].info;
    const expert_tensor_info *bt = &p->tensors[m->b].info;
    if (!is_float_dtype(a->dtype) || !is_float_dtype(bt->dtype) || a->rank != 2 || bt->rank != 2 ||
        a->dims[0] == 0 || a->dims[0] != bt->dims[1] || a->dims[1] == 0 || bt->dims[0] == 0)
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "module '%s': lora_A must be [r,in] and lora_B [out,r] float tensors with the "
                    "same r > 0",
                    m->path);
    if (peft_type != NULL && strcmp(peft_type, "IA3") == 0)
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "module '%s' has LoRA tensors but adapter_config.json says peft_type IA3",
                    m->path);
    if (json_is_boolean(use_dora) && json_is_true(use_dora) != (m->mag != NONE_INDEX))
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "module '%s' %s a DoRA magnitude but adapter_config.json has use_dora %s",
                    m->path, m->mag != NONE_INDEX ? "has" : "lacks",
                    json_is_true(use_dora) ? "true" : "false");
    const json_t *rv = pattern_value(json_object_get(p->adapter_cfg, "rank_pattern"), m->path);
    if (!json_is_integer(rv))
        rv = json_object_get(p->adapter_cfg, "r");
    if (json_is_integer(rv) && (json_int_t)a->dims[0] != json_integer_value(rv))
        return FAIL(EXPERT_E_BAD_SAFETENSORS,
                    "module '%s': lora_A has r = %llu but adapter_config.json gives r = %lld",
                    m->path, (unsigned long long)a->dims[0], (long long)json_integer_value(rv));
    if (m->mag != NONE_INDEX) {
        const expert_tensor_info *g = &p->tensors[m->mag].info;
        int ok = is_float_dtype(g->dtype) &&
                 ((g->rank == 1 && g->dims[0] == bt->dims[0]) ||
                  (g->rank == 2 && g->dims[0] == 1 && g->dims[1] == bt->dims[0]));
        if (!ok)
            return FAIL(EXPERT_E_BAD_SAFETENSORS,
                        "'%s': a DoRA magnitude must be a float [out] or [1,out] tensor with out = "
                        "%llu",
                        g->name, (unsigned long long)bt->dims[0]);
    }
    return EXPERT_OK;
}

/* Groups role tensors (adjacent after sorting) into modules and checks them. */
static expert_status build_modules(pack *p, expert_error *err)
{
    p->modules = xp_calloc(p->tensor_count ? p->tensor_count : 1, sizeof *p->modules);
    if (p->modules == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < p->tensor_count; i++) {
        tensor_entry *t = &p->tensors[i];
        module_entry *m = NULL;
        size_t *slot;
        if (!has_role(t->role.type))
            continue;
        if (p->module_count > 0 && strcmp(p->modules[p->module_count - 1].path, t->module_path) == 0)
            m = &p->modules[p->module_count - 1];
        if (m == NULL) {
            m = &p->modules[p->module_count++];
            m->path = t->module_path;
            m->layer = t->role.layer;
            m->a = m->b = m->mag = m->ia3 = NONE_INDEX;
        }
        t->module = (uint32_t)(m - p->modules);
        switch (t->role.type) {
        case EXPERT_SECTION_LORA_A: slot = &m->a; break;
        case EXPERT_SECTION_LORA_B: slot = &m->b; break;
        case EXPERT_SECTION_DORA_MAGNITUDE: slot = &m->mag; break;
        default: slot = &m->ia3; break;
        }
        if (*slot != NONE_INDEX)
            return FAIL(EXPERT_E_BAD_SAFETENSORS, "module '%s' has two %s tensors ('%s' and '%s')",
                        m->path, expert_section_type_name(t->role.type),
                        p->tensors[*slot].info.name, t->info.name);
        *slot = i;
    }
    const char *peft_type = jstr(p->adapter_cfg, "peft_type");
    for (size_t k = 0; k < p->module_count; k++) {
        module_entry *m = &p->modules[k];
        XP_TRY(m->ia3 != NONE_INDEX ? check_ia3(p, m, peft_type, err)
                                    : check_lora(p, m, peft_type, err));
    }
    return EXPERT_OK;
}

/* -------------------------------------------------------------- metadata */

static json_t *module_json(pack *p, const module_entry *m)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = json_object_set_new(o, "path", json_string(m->path)) != 0;
    json_t *layer = m->layer == EXPERT_LAYER_NONE ? json_null() : json_integer((json_int_t)m->layer);
    if (m->ia3 != NONE_INDEX) {
        const expert_tensor_info *v = &p->tensors[m->ia3].info;
        int ff = m->feedforward;
        bad |= json_object_set_new(o, "type", json_string("ia3")) != 0;
        bad |= json_object_set_new(o, "layer", layer) != 0;
        if (ff)
            bad |= json_object_set_new(o, "in_features", json_integer((json_int_t)v->dims[1])) != 0;
        else
            bad |= json_object_set_new(o, "out_features", json_integer((json_int_t)v->dims[0])) != 0;
        bad |= json_object_set_new(o, "feedforward", json_boolean(ff)) != 0;
    } else {
        const expert_tensor_info *a = &p->tensors[m->a].info;
        const expert_tensor_info *bt = &p->tensors[m->b].info;
        const json_t *rs = json_object_get(p->adapter_cfg, "use_rslora");
        int defaulted;
        double alpha = module_alpha(p, m->path, a->dims[0], &defaulted);
        p->result.alpha_defaulted += (size_t)defaulted;
        bad |= json_object_set_new(o, "type", json_string(m->mag != NONE_INDEX ? "dora" : "lora")) != 0;
        bad |= json_object_set_new(o, "layer", layer) != 0;
        bad |= json_object_set_new(o, "in_features", json_integer((json_int_t)a->dims[1])) != 0;
        bad |= json_object_set_new(o, "out_features", json_integer((json_int_t)bt->dims[0])) != 0;
        bad |= json_object_set_new(o, "r", json_integer((json_int_t)a->dims[0])) != 0;
        bad |= json_object_set_new(o, "alpha", json_real(alpha)) != 0;
        bad |= json_object_set_new(o, "rslora", json_boolean(json_is_true(rs))) != 0;
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int set_str(json_t *o, const char *key, const char *value)
{
    return json_object_set_new(o, key, json_string(value)) != 0;
}

/* The §9.3 metadata: names and base model verbatim from the manifest, one
 * module object per module found in the tensors. */
static expert_status build_metadata(pack *p, json_t *extra, char **out, size_t *out_len,
                                    expert_error *err)
{
    json_t *root = json_object(), *mods = json_array();
    int bad = root == NULL || mods == NULL;
    const char *name = jstr(p->manifest, "name");
    const char *version = jstr(p->manifest, "version");
    const char *description = jstr(p->manifest, "description");
    const json_t *bm = p->base_model;
    if (name == NULL || name[0] == '\0')
        name = p->o.fallback_name != NULL && p->o.fallback_name[0] != '\0' ? p->o.fallback_name
                                                                          : "package";
    if (version == NULL || version[0] == '\0')
        version = "0.0.0";
    if (!bad) {
        bad |= set_str(root, "format", "expert-v2");
        bad |= set_str(root, "name", name);
        bad |= set_str(root, "version", version);
        if (description != NULL)
            bad |= set_str(root, "description", description);
        if (bm != NULL && jstr(bm, "name") != NULL) { /* verbatim, sha256 "" included */
            json_t *o = json_object();
            const char *sha = jstr(bm, "sha256");
            bad |= o == NULL || set_str(o, "name", jstr(bm, "name"));
            if (o != NULL && sha != NULL)
                bad |= set_str(o, "sha256", sha);
            bad |= json_object_set_new(root, "base_model", o) != 0;
        }
        if (p->manifest != NULL)
            bad |= set_str(root, "source_manifest", MANIFEST_NAME);
        if (p->adapter_cfg != NULL)
            bad |= set_str(root, "adapter_config", ADAPTER_CONFIG_NAME);
        bad |= set_str(root, "created_by",
                       p->o.created_by != NULL ? p->o.created_by : "libexpert " EXPERT_VERSION_STRING);
        for (size_t k = 0; k < p->module_count && !bad; k++) {
            json_t *mj = module_json(p, &p->modules[k]);
            bad |= mj == NULL || json_array_append_new(mods, mj) != 0;
        }
        bad |= json_object_set(root, "modules", mods) != 0;
        if (extra != NULL)
            bad |= json_object_set(root, "extra", extra) != 0;
    }
    char *buf = NULL;
    size_t n = bad ? 0 : json_dumpb(root, NULL, 0, JSON_COMPACT);
    if (n > 0 && (buf = xp_malloc(n + 1)) != NULL && json_dumpb(root, buf, n, JSON_COMPACT) == n) {
        buf[n] = '\0';
        *out = buf;
        *out_len = n;
    } else {
        xp_free(buf);
        bad = 1;
    }
    json_decref(root);
    json_decref(mods);
    return bad ? FAIL(EXPERT_E_NOMEM, "out of memory building metadata") : EXPERT_OK;
}

/* --------------------------------------------------------------- writing */

static void desc_init(expert_section_desc *d, const char *name, uint16_t type, uint8_t codec)
{
    memset(d, 0, sizeof *d);
    d->name = name;
    d->type = type;
    d->codec = codec;
    d->layer = EXPERT_LAYER_NONE;
    d->module = EXPERT_MODULE_NONE;
}

static void report(pack *p, size_t file, uint64_t offset, uint64_t length, int file_done)
{
    p->progress.file = file;
    p->progress.offset = offset;
    p->progress.length = length;
    p->progress.file_done = file_done;
    p->progress.sections_done++;
    p->result.decoded_bytes += length;
    if (p->o.on_section != NULL)
        p->o.on_section(p->o.user, &p->progress);
}

static expert_status add_bytes(pack *p, expert_writer *w, size_t file, uint16_t type,
                               uint64_t length, int file_done, expert_error *err)
{
    const expert_pack_file *f = &p->files[file];
    expert_section_desc d;
    desc_init(&d, f->name, type, p->o.file_codec);
    d.dtype = EXPERT_DTYPE_BYTES;
    d.rank = 1;
    d.dims[0] = length;
    XP_TRY(expert_writer_add(w, &d, f->data, (size_t)length, err));
    report(p, file, 0, length, file_done);
    return EXPERT_OK;
}

static expert_status add_tensors(pack *p, expert_writer *w, expert_error *err)
{
    const uint8_t *base = p->files[p->st_file].data;
    XP_TRY(add_bytes(p, w, p->st_file, EXPERT_SECTION_SAFETENSORS_HEADER,
                     expert_safetensors_header_length(p->st), p->tensor_count == 0, err));
    for (size_t i = 0; i < p->tensor_count; i++) {
        const tensor_entry *t = &p->tensors[i];
        expert_section_desc d;
        desc_init(&d, t->info.name, t->role.type, p->o.tensor_codec);
        d.dtype = (uint8_t)t->info.dtype;
        d.rank = (uint8_t)t->info.rank;
        d.layer = t->role.layer;
        d.module = t->module;
        memcpy(d.dims, t->info.dims, sizeof d.dims);
        XP_TRY(expert_writer_add(w, &d, base + t->info.data_offset, (size_t)t->info.data_length,
                                 err));
        report(p, p->st_file, t->info.data_offset, t->info.data_length, i + 1 == p->tensor_count);
    }
    p->result.tensors = p->tensor_count;
    return EXPERT_OK;
}

static int file_ptr_cmp(const void *a, const void *b)
{
    return strcmp((*(const expert_pack_file *const *)a)->name,
                  (*(const expert_pack_file *const *)b)->name);
}

/* The files sorted by name; two files with one name are refused. */
static expert_status sort_files(pack *p, expert_error *err)
{
    for (size_t i = 0; i < p->count; i++) {
        const expert_pack_file *f = &p->files[i];
        if (f->name == NULL || (f->data == NULL && f->size != 0))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "package file %zu has no name or no data", i);
        if (f->size > SIZE_MAX)
            return FAIL(EXPERT_E_LIMIT_EXCEEDED, "'%s' is too large for this machine", f->name);
    }
    p->sorted = xp_calloc(p->count ? p->count : 1, sizeof *p->sorted);
    if (p->sorted == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < p->count; i++)
        p->sorted[i] = &p->files[i];
    qsort(p->sorted, p->count, sizeof *p->sorted, file_ptr_cmp);
    for (size_t i = 1; i < p->count; i++)
        if (strcmp(p->sorted[i - 1]->name, p->sorted[i]->name) == 0)
            return FAIL(EXPERT_E_DUPLICATE_NAME, "the package lists '%s' twice", p->sorted[i]->name);
    return EXPERT_OK;
}

/* Every file but the safetensors one, as FILE sections sorted by name. */
static expert_status add_files(pack *p, expert_writer *w, expert_error *err)
{
    for (size_t i = 0; i < p->count; i++) {
        size_t file = (size_t)(p->sorted[i] - p->files);
        if (file == p->st_file)
            continue;
        XP_TRY(add_bytes(p, w, file, EXPERT_SECTION_FILE, p->files[file].size, 1, err));
        p->result.files++;
    }
    return EXPERT_OK;
}

static expert_status resolve_options(const expert_pack_options *in, expert_pack_options *o,
                                     expert_error *err)
{
    memset(o, 0, sizeof *o);
    if (in == NULL)
        return EXPERT_OK;
    if (in->struct_size < sizeof in->struct_size || in->struct_size > sizeof *o)
        return FAIL(EXPERT_E_INVALID_ARGUMENT,
                    "expert_pack_options.struct_size is %zu: set it to sizeof(expert_pack_options)",
                    in->struct_size);
    memcpy(o, in, in->struct_size);
    if (o->tensor_codec > EXPERT_CODEC_SHUFFLE_ZSTD || o->file_codec > EXPERT_CODEC_SHUFFLE_ZSTD)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "unknown codec in expert_pack_options");
    return EXPERT_OK;
}

/* Reads the package's JSON files and the manifest's base model choice. */
static expert_status read_configs(pack *p, json_t **extra, expert_error *err)
{
    for (size_t i = 0; i < p->count; i++) {
        const expert_pack_file *f = &p->files[i];
        if (strcmp(f->name, ST_NAME) == 0)
            p->st_file = i;
        else if (strcmp(f->name, MANIFEST_NAME) == 0)
            XP_TRY(xp_json_object_load(f->name, f->data, f->size, &p->manifest, err));
        else if (strcmp(f->name, ADAPTER_CONFIG_NAME) == 0)
            XP_TRY(xp_json_object_load(f->name, f->data, f->size, &p->adapter_cfg, err));
    }
    int bad = 0;
    p->base_model = manifest_base_model(p->manifest, p->o.base_model, &bad);
    p->manifest_adapter = manifest_adapter(p->manifest, p->base_model);
    if (bad && p->o.base_model == NULL)
        return FAIL(BAD_INPUT, "manifest.json lists %zu base models: choose one (base_model option)",
                    json_array_size(json_object_get(p->manifest, "base_models")));
    if (bad)
        return FAIL(BAD_INPUT, "manifest.json lists no base model named '%s'", p->o.base_model);
    if (p->o.extra_json != NULL) {
        json_error_t je;
        *extra = json_loads(p->o.extra_json, 0, &je);
        if (!json_is_object(*extra))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "extra_json is not a JSON object: %s",
                        *extra == NULL ? je.text : "another value");
    }
    return EXPERT_OK;
}

expert_status expert_pack(expert_writer *w, const expert_pack_file *files, size_t count,
                          const expert_pack_options *opt, expert_pack_result *result,
                          expert_error *err)
{
    if (w == NULL || (files == NULL && count != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "a writer and the package files are required");
    pack p;
    memset(&p, 0, sizeof p);
    p.files = files;
    p.count = count;
    p.st_file = NONE_INDEX;
    json_t *extra = NULL;
    char *meta = NULL;
    size_t meta_len = 0;
    expert_status s = resolve_options(opt, &p.o, err);
    if (s == EXPERT_OK)
        s = sort_files(&p, err);
    if (s == EXPERT_OK)
        s = read_configs(&p, &extra, err);
    if (s == EXPERT_OK && p.st_file != NONE_INDEX) {
        s = load_tensors(&p, err);
        if (s == EXPERT_OK)
            s = build_modules(&p, err);
    }
    if (s == EXPERT_OK)
        s = build_metadata(&p, extra, &meta, &meta_len, err);
    if (s == EXPERT_OK)
        s = expert_writer_set_metadata(w, meta, meta_len, err);
    p.progress.sections_total = count + p.tensor_count;
    if (s == EXPERT_OK && p.st_file != NONE_INDEX)
        s = add_tensors(&p, w, err);
    if (s == EXPERT_OK)
        s = add_files(&p, w, err);
    p.result.sections = (uint32_t)p.progress.sections_done;
    p.result.modules = p.module_count;
    if (result != NULL)
        *result = p.result;
    xp_free(meta);
    json_decref(extra);
    pack_free(&p);
    return s;
}
