/* safetensors.c — strict parser for safetensors files (PEFT adapter_model.safetensors).
 *
 * Layout (huggingface/safetensors, README "Format"):
 *   u64 LE N | N bytes of UTF-8 JSON | data buffer
 * Header: {"__metadata__": {str: str}?, "<name>": {"dtype", "shape", "data_offsets": [begin, end)}, ...}
 * with offsets relative to the start of the data buffer (file offset 8+N).
 *
 * Rules enforced (tensor.rs read_metadata / Metadata::validate, plus the
 * stricter choices below), every violation EXPERT_E_BAD_SAFETENSORS:
 *  - file >= 8 bytes; N <= 100,000,000; 8+N <= size (no overflow);
 *  - the N bytes are one JSON object (jansson: UTF-8 checked, no NUL in
 *    strings or keys, only whitespace after the object), no duplicate keys at
 *    any level (the reference's serde keeps the last value: #401, TOB-SFTN-7);
 *  - "__metadata__", when present, is an object whose values are all strings;
 *  - every other key is a tensor entry with exactly the fields dtype, shape,
 *    data_offsets (docs/safetensors.schema.json: additionalProperties false);
 *  - dtype one of F32 F16 BF16 F64 I8 U8 I16 U16 I32 U32 I64 U64 BOOL (F8_*,
 *    C64, F4/F6 and anything else: "unsupported dtype");
 *  - shape: at most EXPERT_MAX_RANK non-negative integers; element count and
 *    byte size computed with checked multiplication (left fold, as the
 *    reference does, so [huge, huge, 0] overflows);
 *  - data_offsets: two non-negative integers, begin <= end, end-begin == bytes;
 *  - sorted by (begin, end), tensors tile [0, last_end) exactly: no gap, no overlap;
 *  - full parse only: 8+N+last_end == size (no trailing bytes, not truncated).
 * Integers above INT64_MAX are rejected by jansson ("too big integer"); the
 * reference accepts up to u64 max, which can only matter for absurd files.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "alloc.h"
#include "errors_internal.h"
#include "expert.h"
#include "format.h"

#define ST_MAX_HEADER XP_SAFETENSORS_MAX_HEADER
/* JSON values and keys: ~12 per tensor, so 20,000 tensors; the depth of a
 * header is 3. Bounds the tree jansson builds (see xp_json_prescan). */
#define ST_MAX_ITEMS (1u << 18)
#define ST_MAX_DEPTH 8
#define ST_NO_OFF EXPERT_NO_OFFSET
#define ST_NO_SEC EXPERT_NO_SECTION
/* Tensor names quoted in messages are cut to keep the message readable. */
#define ST_NAME_FMT "%.160s"

struct expert_safetensors {
    uint64_t header_length; /* 8 + N */
    uint64_t data_length;   /* last tensor's end (relative) */
    uint32_t count;
    expert_tensor_info *tensors; /* sorted by data offset */
    char *names;                 /* all names, NUL-separated, owned */
};

typedef struct st_entry {
    const char *name; /* points into the jansson object during the parse */
    expert_dtype dtype;
    uint32_t rank;
    uint64_t dims[EXPERT_MAX_RANK];
    uint64_t begin, end; /* relative to the data buffer */
} st_entry;

static const struct {
    const char *name;
    expert_dtype dtype;
    uint64_t size;
} k_dtypes[] = {
    {"F32", EXPERT_DTYPE_F32, 4},   {"F16", EXPERT_DTYPE_F16, 2}, {"BF16", EXPERT_DTYPE_BF16, 2},
    {"F64", EXPERT_DTYPE_F64, 8},   {"I8", EXPERT_DTYPE_I8, 1},   {"U8", EXPERT_DTYPE_U8, 1},
    {"I16", EXPERT_DTYPE_I16, 2},   {"U16", EXPERT_DTYPE_U16, 2}, {"I32", EXPERT_DTYPE_I32, 4},
    {"U32", EXPERT_DTYPE_U32, 4},   {"I64", EXPERT_DTYPE_I64, 8}, {"U64", EXPERT_DTYPE_U64, 8},
    {"BOOL", EXPERT_DTYPE_BOOL, 1},
};

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Checked a*b; returns 0 on overflow. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* A JSON integer that is >= 0, as u64. */
static int get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t i = json_integer_value(v);
    if (i < 0)
        return 0;
    *out = (uint64_t)i;
    return 1;
}

static expert_status check_metadata_map(const json_t *meta, uint64_t hdr_off, expert_error *err)
{
    if (!json_is_object(meta))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, hdr_off, ST_NO_SEC,
                            "safetensors: \"__metadata__\" is not an object of strings");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val))
            return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, hdr_off, ST_NO_SEC,
                                "safetensors: \"__metadata__\" value of \"" ST_NAME_FMT
                                "\" is not a string",
                                key);
    }
    return EXPERT_OK;
}

/* Validates one tensor entry on its own (no tiling yet). */
static expert_status parse_entry(const char *name, const json_t *obj, uint64_t header_length,
                                 st_entry *e, expert_error *err)
{
    e->name = name;
    if (!json_is_object(obj))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': entry is not an object", name);

    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0)
            return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                                "safetensors: tensor '" ST_NAME_FMT "': unexpected field '%.40s'",
                                name, key);
    }

    /* dtype */
    const json_t *jd = json_object_get(obj, "dtype");
    if (jd == NULL)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': missing dtype", name);
    if (!json_is_string(jd))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': dtype is not a string", name);
    const char *ds = json_string_value(jd);
    uint64_t esize = 0;
    size_t k;
    for (k = 0; k < sizeof k_dtypes / sizeof k_dtypes[0]; k++) {
        if (strcmp(ds, k_dtypes[k].name) == 0) {
            e->dtype = k_dtypes[k].dtype;
            esize = k_dtypes[k].size;
            break;
        }
    }
    if (k == sizeof k_dtypes / sizeof k_dtypes[0])
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': unsupported dtype '%.32s'",
                            name, ds);

    /* shape */
    const json_t *js = json_object_get(obj, "shape");
    if (js == NULL)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': missing shape", name);
    if (!json_is_array(js))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': shape is not an array", name);
    size_t rank = json_array_size(js);
    if (rank > EXPERT_MAX_RANK)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': rank %zu exceeds %d", name,
                            rank, EXPERT_MAX_RANK);
    e->rank = (uint32_t)rank;
    memset(e->dims, 0, sizeof e->dims);
    for (size_t i = 0; i < rank; i++) {
        if (!get_uint(json_array_get(js, i), &e->dims[i]))
            return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                                "safetensors: tensor '" ST_NAME_FMT
                                "': shape[%zu] is not a non-negative integer",
                                name, i);
    }

    /* data_offsets */
    const json_t *jo = json_object_get(obj, "data_offsets");
    if (jo == NULL)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': missing data_offsets", name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !get_uint(json_array_get(jo, 0), &e->begin) || !get_uint(json_array_get(jo, 1), &e->end))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT
                            "': data_offsets is not two non-negative integers",
                            name);
    /* begin, end <= INT64_MAX and header_length <= 8 + 1e8: no overflow below. */
    if (e->end < e->begin)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, header_length + e->begin, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT
                            "': data_offsets end %llu < begin %llu",
                            name, (unsigned long long)e->end, (unsigned long long)e->begin);

    /* checked element count and byte size, left fold as the reference */
    uint64_t numel = 1;
    for (uint32_t i = 0; i < e->rank; i++) {
        if (!mul_u64(numel, e->dims[i], &numel))
            return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                                "safetensors: tensor '" ST_NAME_FMT "': element count overflows",
                                name);
    }
    uint64_t nbytes;
    if (!mul_u64(numel, esize, &nbytes))
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT "': byte size overflows", name);
    if (e->end - e->begin != nbytes)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, header_length + e->begin, ST_NO_SEC,
                            "safetensors: tensor '" ST_NAME_FMT
                            "': data length %llu does not match shape and dtype (%llu bytes)",
                            name, (unsigned long long)(e->end - e->begin),
                            (unsigned long long)nbytes);
    return EXPERT_OK;
}

static int cmp_entry(const void *pa, const void *pb)
{
    const st_entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return strcmp(a->name, b->name); /* names are unique: total order */
}

/* Common body. full: also require 8+N+last_end == size. */
static expert_status parse_common(const void *data, size_t size, int full,
                                  expert_safetensors **out, expert_error *err)
{
    if (out == NULL)
        return xp_set_error(err, EXPERT_E_INVALID_ARGUMENT, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: NULL output handle");
    *out = NULL;
    if (data == NULL && size != 0)
        return xp_set_error(err, EXPERT_E_INVALID_ARGUMENT, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: NULL data");

    const unsigned char *p = data;
    if (size < 8)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 0, ST_NO_SEC,
                            "safetensors: %zu bytes, too small for the 8-byte header length",
                            size);
    uint64_t n = load_le64(p);
    if (n > ST_MAX_HEADER)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 0, ST_NO_SEC,
                            "safetensors: header length %llu exceeds 100000000",
                            (unsigned long long)n);
    if (n > UINT64_MAX - 8) /* cannot happen after the cap; kept as the explicit rule */
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 0, ST_NO_SEC,
                            "safetensors: header length overflows");
    uint64_t header_length = 8 + n;
    if (header_length > (uint64_t)size)
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 0, ST_NO_SEC,
                            "safetensors: header length %llu runs past the %zu bytes given",
                            (unsigned long long)n, size);

    int scan = xp_json_prescan((const char *)p + 8, (size_t)n, ST_MAX_ITEMS, ST_MAX_DEPTH);
    if (scan != 0)
        return xp_set_error(err, scan == XP_JSON_TOO_MANY ? EXPERT_E_LIMIT_EXCEEDED : EXPERT_E_BAD_SAFETENSORS,
                            8, ST_NO_SEC, "safetensors: header JSON %s",
                            scan == XP_JSON_TOO_MANY ? "holds more than 262144 values and keys"
                                                     : "nests deeper than 8");
    json_error_t jerr;
#ifdef XP_HAVE_ALLOC_FAILURES
    unsigned long alloc_failures = xp_alloc_failures();
#endif
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
#ifdef XP_HAVE_ALLOC_FAILURES
    /* jansson reports most allocation failures as syntax errors, and a failed
     * buffer growth in its lexer (lex_save) is ignored outright, which can
     * yield a silently truncated string: any failed allocation during the
     * parse is out-of-memory, whatever jansson returned. */
    if (xp_alloc_failures() != alloc_failures) {
        json_decref(root);
        return xp_set_error(err, EXPERT_E_NOMEM, ST_NO_OFF, ST_NO_SEC,
                            "safetensors: out of memory parsing the header");
    }
#endif
    if (root == NULL) {
#if JANSSON_VERSION_HEX >= 0x020b00 /* json_error_code() appeared in 2.11 */
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return xp_set_error(err, EXPERT_E_NOMEM, ST_NO_OFF, ST_NO_SEC,
                                "safetensors: out of memory parsing the header");
#endif
        uint64_t pos = 8 + (uint64_t)jerr.position;
        if (pos > header_length)
            pos = header_length;
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, pos, ST_NO_SEC,
                            "safetensors: header is not valid JSON: %s", jerr.text);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 8, ST_NO_SEC,
                            "safetensors: header is not a JSON object");
    }

    expert_status st = EXPERT_OK;
    st_entry *ents = NULL;
    expert_safetensors *res = NULL;
    size_t nkeys = json_object_size(root);
    size_t count = 0;
    size_t names_bytes = 0;
    const char *key;
    json_t *val;

    json_t *meta = json_object_get(root, "__metadata__");
    if (meta != NULL) {
        st = check_metadata_map(meta, 8, err);
        if (st != EXPERT_OK)
            goto done;
    }
    if (nkeys - (meta != NULL ? (size_t)1 : (size_t)0) > UINT32_MAX) {
        st = xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, 8, ST_NO_SEC,
                          "safetensors: too many tensors");
        goto done;
    }
    ents = xp_calloc(nkeys ? nkeys : 1, sizeof *ents);
    if (ents == NULL) {
        st = xp_set_error(err, EXPERT_E_NOMEM, ST_NO_OFF, ST_NO_SEC, "safetensors: out of memory");
        goto done;
    }
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        st = parse_entry(key, val, header_length, &ents[count], err);
        if (st != EXPERT_OK)
            goto done;
        names_bytes += strlen(key) + 1; /* <= N + count: no overflow */
        count++;
    }

    qsort(ents, count, sizeof *ents, cmp_entry);

    uint64_t expect = 0;
    for (size_t i = 0; i < count; i++) {
        const st_entry *e = &ents[i];
        if (e->begin < expect) {
            st = xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, header_length + e->begin, ST_NO_SEC,
                              "safetensors: tensor '" ST_NAME_FMT
                              "' overlaps tensor '" ST_NAME_FMT "'",
                              e->name, ents[i - 1].name);
            goto done;
        }
        if (e->begin > expect) {
            st = xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, header_length + expect, ST_NO_SEC,
                              "safetensors: gap of %llu bytes before tensor '" ST_NAME_FMT "'",
                              (unsigned long long)(e->begin - expect), e->name);
            goto done;
        }
        expect = e->end;
    }

    if (full) {
        uint64_t total = header_length + expect; /* <= 8 + 1e8 + INT64_MAX */
        if (total < (uint64_t)size) {
            st = xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, total, ST_NO_SEC,
                              "safetensors: %llu trailing bytes after the last tensor",
                              (unsigned long long)((uint64_t)size - total));
            goto done;
        }
        if (total > (uint64_t)size) {
            st = xp_set_error(err, EXPERT_E_BAD_SAFETENSORS, (uint64_t)size, ST_NO_SEC,
                              "safetensors: truncated: tensor '" ST_NAME_FMT
                              "' ends at %llu, file has %zu bytes",
                              count ? ents[count - 1].name : "", (unsigned long long)total, size);
            goto done;
        }
    }

    res = xp_calloc(1, sizeof *res);
    if (res == NULL) {
        st = xp_set_error(err, EXPERT_E_NOMEM, ST_NO_OFF, ST_NO_SEC, "safetensors: out of memory");
        goto done;
    }
    res->header_length = header_length;
    res->data_length = expect;
    res->count = (uint32_t)count;
    res->tensors = xp_calloc(count ? count : 1, sizeof *res->tensors);
    res->names = xp_malloc(names_bytes ? names_bytes : 1);
    if (res->tensors == NULL || res->names == NULL) {
        st = xp_set_error(err, EXPERT_E_NOMEM, ST_NO_OFF, ST_NO_SEC, "safetensors: out of memory");
        goto done;
    }
    char *np = res->names;
    for (size_t i = 0; i < count; i++) {
        const st_entry *e = &ents[i];
        expert_tensor_info *t = &res->tensors[i];
        size_t len = strlen(e->name);
        memcpy(np, e->name, len + 1);
        t->name = np;
        np += len + 1;
        t->dtype = e->dtype;
        t->rank = e->rank;
        memcpy(t->dims, e->dims, sizeof t->dims);
        t->data_offset = header_length + e->begin;
        t->data_length = e->end - e->begin;
    }
    *out = res;
    res = NULL;

done:
    expert_safetensors_free(res);
    xp_free(ents);
    json_decref(root);
    return st;
}

expert_status expert_safetensors_parse(const void *data, size_t size, expert_safetensors **out,
                                       expert_error *err)
{
    return parse_common(data, size, 1, out, err);
}

expert_status expert_safetensors_parse_header(const void *data, size_t length,
                                              expert_safetensors **out, expert_error *err)
{
    return parse_common(data, length, 0, out, err);
}

uint64_t expert_safetensors_data_length(const expert_safetensors *st)
{
    return st ? st->data_length : 0;
}

void expert_safetensors_free(expert_safetensors *st)
{
    if (st == NULL)
        return;
    xp_free(st->tensors);
    xp_free(st->names);
    xp_free(st);
}

uint64_t expert_safetensors_header_length(const expert_safetensors *st)
{
    return st ? st->header_length : 0;
}

uint32_t expert_safetensors_count(const expert_safetensors *st)
{
    return st ? st->count : 0;
}

expert_status expert_safetensors_tensor(const expert_safetensors *st, uint32_t i,
                                        expert_tensor_info *out)
{
    if (st == NULL || out == NULL || i >= st->count)
        return EXPERT_E_INVALID_ARGUMENT;
    *out = st->tensors[i];
    return EXPERT_OK;
}
