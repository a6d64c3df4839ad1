/* metadata.c — the metadata JSON (spec §9): strict parse (duplicate keys
 * rejected at every level, bounded depth and size) and schema check. Unknown keys are
 * ignored so later minor versions can add fields. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

struct xp_metadata {
    expert_allocator alloc; /* the context's that parsed it */
    char *name;
    char *version;
    char *source_manifest; /* NULL when absent */
    char *adapter_config;  /* NULL when absent */
    uint32_t module_count;
    expert_module_info *modules;
};

/* Spec §9.3: integers are exact in an IEEE double, so every implementation
 * reads the same value. */
#define XP_JSON_INT_MAX ((json_int_t)9007199254740991LL)

#define META_FAIL(...) xp_set_error(err, EXPERT_E_BAD_METADATA, file_offset, EXPERT_NO_SECTION, __VA_ARGS__)

/* Before jansson builds a tree, bound what the tree can cost: 16 MiB of
 * "{}," is a 2 KB zstd frame but 5.6 million objects (1.3 GB). One pass over
 * the bytes outside strings counts containers, members and elements (every
 * '{', '[', ',' and ':' plus the root: an upper bound on values plus keys)
 * and the container depth. Malformed JSON is left to the parser. */
int xp_json_prescan(const char *json, size_t length, uint32_t max_items, int max_depth)
{
    uint64_t items = 1;
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < length; i++) {
        char c = json[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            break;
        case '{':
        case '[':
            if (++depth > max_depth)
                return XP_JSON_TOO_DEEP;
            items++;
            break;
        case '}':
        case ']':
            depth -= depth > 0;
            break;
        case ',':
        case ':':
            items++;
            break;
        default:
            break;
        }
        if (items > max_items)
            return XP_JSON_TOO_MANY;
    }
    return 0;
}

static const char *k_module_types[] = {"lora", "dora", "ia3", "osd"};

/* Optional typed members: absent is fine, present with the wrong type is not. */
static int opt_string(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return v == NULL || json_is_string(v);
}

static expert_status parse_module(const expert_allocator *a, const json_t *m, uint32_t i, expert_module_info *out,
                                  uint64_t file_offset, expert_error *err)
{
    if (!json_is_object(m))
        return META_FAIL("modules[%u] is not an object", i);
    const json_t *path = json_object_get(m, "path");
    const json_t *type = json_object_get(m, "type");
    if (!json_is_string(path) || json_string_length(path) == 0)
        return META_FAIL("modules[%u].path missing or not a non-empty string", i);
    if (!json_is_string(type))
        return META_FAIL("modules[%u].type missing or not a string", i);
    const char *t = json_string_value(type);
    out->type = NULL;
    for (size_t k = 0; k < sizeof k_module_types / sizeof k_module_types[0]; k++)
        if (strcmp(t, k_module_types[k]) == 0)
            out->type = k_module_types[k];
    if (out->type == NULL)
        return META_FAIL("modules[%u].type '%s' is not lora, dora, ia3 or osd", i, t);

    const json_t *layer = json_object_get(m, "layer");
    out->layer = -1;
    if (layer == NULL)
        return META_FAIL("modules[%u].layer is required (an integer or null)", i);
    if (!json_is_null(layer)) {
        if (!json_is_integer(layer) || json_integer_value(layer) < 0 ||
            json_integer_value(layer) > (json_int_t)XP_MAX_LAYER)
            return META_FAIL("modules[%u].layer must be an integer in 0..%u or null", i, XP_MAX_LAYER);
        out->layer = json_integer_value(layer);
    }
    const char *dims[2] = {"in_features", "out_features"};
    uint64_t *dst[2] = {&out->in_features, &out->out_features};
    for (int d = 0; d < 2; d++) {
        const json_t *v = json_object_get(m, dims[d]);
        *dst[d] = 0;
        if (v == NULL)
            continue;
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > XP_JSON_INT_MAX)
            return META_FAIL("modules[%u].%s must be a positive integer", i, dims[d]);
        *dst[d] = (uint64_t)json_integer_value(v);
    }
    out->r = 0;
    out->alpha = 0;
    out->rslora = 0;
    out->feedforward = 0;
    out->scale = 1.0;
    if (strcmp(out->type, "lora") == 0 || strcmp(out->type, "dora") == 0) {
        const json_t *r = json_object_get(m, "r");
        const json_t *alpha = json_object_get(m, "alpha");
        const json_t *rs = json_object_get(m, "rslora");
        if (!json_is_integer(r) || json_integer_value(r) <= 0 || json_integer_value(r) > XP_JSON_INT_MAX)
            return META_FAIL("modules[%u].r must be a positive integer", i);
        if (!json_is_number(alpha) || !isfinite(json_number_value(alpha)))
            return META_FAIL("modules[%u].alpha must be a finite number", i);
        if (!json_is_boolean(rs))
            return META_FAIL("modules[%u].rslora must be a boolean", i);
        out->r = (uint64_t)json_integer_value(r);
        out->alpha = json_number_value(alpha);
        out->rslora = json_is_true(rs);
        out->scale = out->rslora ? out->alpha / sqrt((double)out->r) : out->alpha / (double)out->r;
    } else if (strcmp(out->type, "ia3") == 0) {
        const json_t *ff = json_object_get(m, "feedforward");
        if (!json_is_boolean(ff))
            return META_FAIL("modules[%u].feedforward must be a boolean", i);
        out->feedforward = json_is_true(ff);
    } else { /* osd */
        const json_t *k = json_object_get(m, "rank");
        const json_t *fmt = json_object_get(m, "sparse_format");
        if (!json_is_integer(k) || json_integer_value(k) < 0 || json_integer_value(k) > XP_JSON_INT_MAX)
            return META_FAIL("modules[%u].rank must be an integer >= 0", i);
        if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "csr") != 0)
            return META_FAIL("modules[%u].sparse_format must be \"csr\"", i);
        out->r = (uint64_t)json_integer_value(k);
    }
    out->path = xa_strndup(a, json_string_value(path), json_string_length(path));
    if (out->path == NULL)
        return xp_set_error(err, EXPERT_E_NOMEM, file_offset, EXPERT_NO_SECTION, "out of memory");
    return EXPERT_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static expert_status check_schema(const json_t *root, xp_metadata *m, uint64_t file_offset,
                                  expert_error *err)
{
    if (!json_is_object(root))
        return META_FAIL("metadata is not a JSON object");
    const json_t *format = json_object_get(root, "format");
    if (!json_is_string(format) || strcmp(json_string_value(format), "expert-v2") != 0)
        return META_FAIL("\"format\" must be \"expert-v2\"");
    const json_t *name = json_object_get(root, "name");
    const json_t *version = json_object_get(root, "version");
    if (!json_is_string(name) || !json_is_string(version) || json_string_length(name) == 0 ||
        json_string_length(version) == 0)
        return META_FAIL("\"name\" and \"version\" must be non-empty strings");
    static const char *opt_strings[] = {"description", "adapter_config", "source_manifest",
                                        "created_by"};
    for (size_t k = 0; k < sizeof opt_strings / sizeof opt_strings[0]; k++)
        if (!opt_string(root, opt_strings[k]))
            return META_FAIL("\"%s\" must be a string", opt_strings[k]);
    const json_t *base = json_object_get(root, "base_model");
    if (base != NULL && (!json_is_object(base) || !json_is_string(json_object_get(base, "name")) ||
                         !opt_string(base, "sha256")))
        return META_FAIL("\"base_model\" must be an object with a string \"name\"");
    const json_t *extra = json_object_get(root, "extra");
    if (extra != NULL && !json_is_object(extra))
        return META_FAIL("\"extra\" must be an object");
    const json_t *modules = json_object_get(root, "modules");
    if (!json_is_array(modules))
        return META_FAIL("\"modules\" must be an array");
    /* No count limit of its own: the 16 MiB metadata limit already bounds it,
     * and a module without its sections is BAD_TOC at S15. */
    size_t count = json_array_size(modules);

    m->name = xa_strndup(&m->alloc, json_string_value(name), json_string_length(name));
    m->version = xa_strndup(&m->alloc, json_string_value(version), json_string_length(version));
    const json_t *sm = json_object_get(root, "source_manifest");
    if (sm != NULL)
        m->source_manifest = xa_strndup(&m->alloc, json_string_value(sm), json_string_length(sm));
    const json_t *ac = json_object_get(root, "adapter_config");
    if (ac != NULL)
        m->adapter_config = xa_strndup(&m->alloc, json_string_value(ac), json_string_length(ac));
    m->modules = xa_calloc(&m->alloc, count ? count : 1, sizeof *m->modules);
    if (m->name == NULL || m->version == NULL || m->modules == NULL ||
        (sm != NULL && m->source_manifest == NULL) || (ac != NULL && m->adapter_config == NULL))
        return xp_set_error(err, EXPERT_E_NOMEM, file_offset, EXPERT_NO_SECTION, "out of memory");
    for (size_t i = 0; i < count; i++) {
        XP_TRY(parse_module(&m->alloc, json_array_get(modules, i), (uint32_t)i, &m->modules[i], file_offset, err));
        m->module_count = (uint32_t)i + 1;
    }
    /* Module paths are unique: sort a copy of the pointers and compare neighbours. */
    if (count > 1) {
        const char **paths = xa_malloc(&m->alloc, count * sizeof *paths);
        if (paths == NULL)
            return xp_set_error(err, EXPERT_E_NOMEM, file_offset, EXPERT_NO_SECTION, "out of memory");
        for (size_t i = 0; i < count; i++)
            paths[i] = m->modules[i].path;
        qsort(paths, count, sizeof *paths, cmp_str);
        const char *dup = NULL;
        for (size_t i = 1; i < count && dup == NULL; i++)
            if (strcmp(paths[i - 1], paths[i]) == 0)
                dup = paths[i];
        expert_status st = dup ? META_FAIL("module path '%s' appears twice", dup) : EXPERT_OK;
        xa_free(&m->alloc, paths);
        return st;
    }
    return EXPERT_OK;
}

expert_status xp_metadata_parse(const expert_allocator *alloc, const char *json, size_t length,
                                uint32_t max_items, xp_metadata **out, uint64_t file_offset,
                                expert_error *err)
{
    *out = NULL;
    /* Depth counts containers only: the top-level object is 1 (spec §9.2). */
    int scan = xp_json_prescan(json, length, max_items, XP_MAX_JSON_DEPTH);
    if (scan == XP_JSON_TOO_DEEP)
        return META_FAIL("JSON nesting deeper than %d", XP_MAX_JSON_DEPTH);
    if (scan == XP_JSON_TOO_MANY)
        return xp_set_error(err, EXPERT_E_LIMIT_EXCEEDED, file_offset, EXPERT_NO_SECTION,
                            "metadata JSON holds more than %u values and keys (the reader's "
                            "max_metadata_items)", max_items);
    /* jansson accepts an embedded NUL only with JSON_ALLOW_NUL; we don't. */
    json_error_t jerr;
    json_t *root = json_loadb(json, length, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && json_error_code(&jerr) == json_error_out_of_memory)
        return xp_set_error(err, EXPERT_E_NOMEM, file_offset, EXPERT_NO_SECTION, "out of memory parsing metadata");
    if (root == NULL)
        return META_FAIL("invalid JSON at byte %d: %s", jerr.position, jerr.text);
    expert_status s = EXPERT_OK;
    xp_metadata *m = NULL;
    m = xa_calloc(alloc, 1, sizeof *m);
    if (m != NULL)
        m->alloc = xa_resolve(alloc);
    if (m == NULL) {
        s = xp_set_error(err, EXPERT_E_NOMEM, file_offset, EXPERT_NO_SECTION, "out of memory");
        goto done;
    }
    s = check_schema(root, m, file_offset, err);
done:
    json_decref(root);
    if (s != EXPERT_OK) {
        xp_metadata_free(m);
        return s;
    }
    *out = m;
    return EXPERT_OK;
}

void xp_metadata_free(xp_metadata *m)
{
    if (m == NULL)
        return;
    expert_allocator a = m->alloc;
    for (uint32_t i = 0; i < m->module_count; i++)
        xa_free(&a, (void *)m->modules[i].path);
    xa_free(&a, m->modules);
    xa_free(&a, m->name);
    xa_free(&a, m->version);
    xa_free(&a, m->source_manifest);
    xa_free(&a, m->adapter_config);
    xa_free(&a, m);
}

const char *xp_metadata_name(const xp_metadata *m) { return m->name; }
const char *xp_metadata_version(const xp_metadata *m) { return m->version; }
const char *xp_metadata_source_manifest(const xp_metadata *m) { return m->source_manifest; }
const char *xp_metadata_adapter_config(const xp_metadata *m) { return m->adapter_config; }
uint32_t xp_metadata_module_count(const xp_metadata *m) { return m->module_count; }
const expert_module_info *xp_metadata_module(const xp_metadata *m, uint32_t i)
{
    return i < m->module_count ? &m->modules[i] : NULL;
}
