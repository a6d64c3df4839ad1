/*
 * test_safetensors.c — the strict safetensors parser (expert.h, spec §10.7)
 * on files built here, and PEFT key classification (spec §10.2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "craft.h"

/* 8-byte LE length + header + data_len bytes of data (+ extra trailing bytes). */
static xb build(const char *header, size_t header_len, size_t data_len, size_t extra)
{
    xb b;
    b.n = 8 + header_len + data_len + extra;
    b.p = malloc(b.n ? b.n : 1);
    wr64(b.p, header_len);
    memcpy(b.p + 8, header, header_len);
    for (size_t i = 0; i < data_len + extra; i++)
        b.p[8 + header_len + i] = (uint8_t)(i * 31 + 7);
    return b;
}
#define BUILD(h, dl) build(h, strlen(h), dl, 0)

static void expect_bad_impl(const xb *b, const char *what, int line)
{
    expert_safetensors *st = (expert_safetensors *)0x1;
    expert_error e;
    memset(&e, 0, sizeof e);
    expert_status s = expert_safetensors_parse(b->p, b->n, &st, &e);
    if (s != EXPERT_E_BAD_SAFETENSORS) {
        if (s == EXPERT_OK)
            expert_safetensors_free(st);
        fail_msg("line %d [%s]: parse gave %s, expected BAD_SAFETENSORS", line, what,
                 expert_status_name(s));
    }
    if (e.code != EXPERT_E_BAD_SAFETENSORS || e.message[0] == 0)
        fail_msg("line %d [%s]: error not filled", line, what);
}
#define EXPECT_BAD(b, what) expect_bad_impl(&(b), what, __LINE__)

static void bad_header(const char *h, size_t data_len, const char *what, int line)
{
    xb b = build(h, strlen(h), data_len, 0);
    expect_bad_impl(&b, what, line);
    xb_free(&b);
}
#define BAD(h, dl) bad_header(h, dl, h, __LINE__)

static void test_valid_basic(void **state)
{
    (void)state;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                    "\"c\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[32,33]}}";
    size_t N = strlen(h);
    xb b = BUILD(h, 33);
    expert_safetensors *st = NULL;
    expert_error e;
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 3);
    assert_int_equal(expert_safetensors_header_length(st), 8 + N);
    assert_int_equal(expert_safetensors_data_length(st), 33);
    expert_tensor_info ti;
    assert_int_equal(expert_safetensors_tensor(st, 0, &ti), EXPERT_OK);
    assert_string_equal(ti.name, "a");
    assert_int_equal(ti.dtype, EXPERT_DTYPE_F32);
    assert_int_equal(ti.rank, 2);
    assert_int_equal(ti.dims[0], 2);
    assert_int_equal(ti.dims[1], 3);
    assert_int_equal(ti.data_offset, 8 + N);
    assert_int_equal(ti.data_length, 24);
    assert_int_equal(expert_safetensors_tensor(st, 1, &ti), EXPERT_OK);
    assert_string_equal(ti.name, "b");
    assert_int_equal(ti.dtype, EXPERT_DTYPE_BF16);
    assert_int_equal(ti.rank, 1);
    assert_int_equal(ti.dims[0], 4);
    assert_int_equal(ti.data_offset, 8 + N + 24);
    assert_int_equal(ti.data_length, 8);
    assert_int_equal(expert_safetensors_tensor(st, 2, &ti), EXPERT_OK);
    assert_string_equal(ti.name, "c");
    assert_int_equal(ti.dtype, EXPERT_DTYPE_I8);
    assert_int_equal(ti.rank, 0);
    assert_int_equal(ti.data_length, 1);
    assert_int_not_equal(expert_safetensors_tensor(st, 3, &ti), EXPERT_OK);
    expert_safetensors_free(st);

    /* header-only parse of exactly 8 + N bytes: same tensors */
    assert_int_equal(expert_safetensors_parse_header(b.p, 8 + N, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 3);
    assert_int_equal(expert_safetensors_data_length(st), 33);
    assert_int_equal(expert_safetensors_header_length(st), 8 + N);
    expert_safetensors_free(st);
    /* ... and it needs all 8 + N bytes */
    assert_int_equal(expert_safetensors_parse_header(b.p, 8 + N - 1, &st, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    xb_free(&b);
    expert_safetensors_free(NULL);
}

static void test_valid_variants(void **state)
{
    (void)state;
    expert_safetensors *st = NULL;
    expert_error e;
    expert_tensor_info ti;
    /* JSON order differs from data order: tensors come back in data order */
    const char *h1 = "{\"z\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[8,16]},"
                     "\"y\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";
    xb b = BUILD(h1, 16);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 2);
    assert_int_equal(expert_safetensors_tensor(st, 0, &ti), EXPERT_OK);
    assert_string_equal(ti.name, "y");
    assert_int_equal(expert_safetensors_tensor(st, 1, &ti), EXPERT_OK);
    assert_string_equal(ti.name, "z");
    expert_safetensors_free(st);
    xb_free(&b);

    /* header padded with spaces (as the safetensors writer does) */
    const char *h2 = "{\"t\":{\"dtype\":\"I32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}        ";
    b = BUILD(h2, 8);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_header_length(st), 8 + strlen(h2));
    expert_safetensors_free(st);
    xb_free(&b);

    /* every dtype name maps to the .expert enum */
    static const struct {
        const char *name;
        expert_dtype dt;
        size_t size;
    } dts[] = {
        {"F64", EXPERT_DTYPE_F64, 8}, {"F32", EXPERT_DTYPE_F32, 4}, {"F16", EXPERT_DTYPE_F16, 2},
        {"BF16", EXPERT_DTYPE_BF16, 2}, {"I64", EXPERT_DTYPE_I64, 8}, {"I32", EXPERT_DTYPE_I32, 4},
        {"I16", EXPERT_DTYPE_I16, 2}, {"I8", EXPERT_DTYPE_I8, 1},   {"U64", EXPERT_DTYPE_U64, 8},
        {"U32", EXPERT_DTYPE_U32, 4}, {"U16", EXPERT_DTYPE_U16, 2}, {"U8", EXPERT_DTYPE_U8, 1},
        {"BOOL", EXPERT_DTYPE_BOOL, 1},
    };
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        char h[160];
        snprintf(h, sizeof h, "{\"x\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%zu]}}",
                 dts[i].name, 3 * dts[i].size);
        b = BUILD(h, 3 * dts[i].size);
        assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
        assert_int_equal(expert_safetensors_tensor(st, 0, &ti), EXPERT_OK);
        assert_int_equal(ti.dtype, dts[i].dt);
        assert_int_equal(ti.data_length, 3 * dts[i].size);
        expert_safetensors_free(st);
        xb_free(&b);
    }

    /* rank 4 is the maximum */
    const char *h3 = "{\"r4\":{\"dtype\":\"U8\",\"shape\":[1,2,3,4],\"data_offsets\":[0,24]}}";
    b = BUILD(h3, 24);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_tensor(st, 0, &ti), EXPERT_OK);
    assert_int_equal(ti.rank, 4);
    assert_int_equal(ti.dims[3], 4);
    expert_safetensors_free(st);
    xb_free(&b);

    /* an empty tensor between two others, and no tensors at all */
    const char *h4 = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[4,4]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}";
    b = BUILD(h4, 8);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 3);
    expert_safetensors_free(st);
    xb_free(&b);
    b = BUILD("{}", 0);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 0);
    assert_int_equal(expert_safetensors_data_length(st), 0);
    expert_safetensors_free(st);
    xb_free(&b);
    b = BUILD("{\"__metadata__\":{}}", 0);
    assert_int_equal(expert_safetensors_parse(b.p, b.n, &st, &e), EXPERT_OK);
    assert_int_equal(expert_safetensors_count(st), 0);
    expert_safetensors_free(st);
    xb_free(&b);
}

static void test_reject_framing(void **state)
{
    (void)state;
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t N = strlen(h);
    xb b = BUILD(h, 8);
    /* truncated at many points */
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + N - 1, 8 + N, 8 + N + 7};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        xb c = {b.p, cuts[i], 0}; /* a view: never appended to */
        EXPECT_BAD(c, "truncated");
    }
    /* trailing bytes */
    xb t = build(h, N, 8, 1);
    EXPECT_BAD(t, "one trailing byte");
    xb_free(&t);
    /* header length > 100,000,000 (and 8+N > size) */
    xb big = BUILD(h, 8);
    wr64(big.p, 100000001ull);
    EXPECT_BAD(big, "N = 100,000,001");
    wr64(big.p, UINT64_MAX);
    EXPECT_BAD(big, "N = 2^64-1");
    wr64(big.p, UINT64_MAX - 7);
    EXPECT_BAD(big, "N = 2^64-8 (8+N wraps to 0)");
    /* 8 + N > size */
    wr64(big.p, N + 9);
    EXPECT_BAD(big, "8+N > size");
    xb_free(&big);
    /* N = 0 */
    xb z = build("", 0, 0, 0);
    EXPECT_BAD(z, "N = 0");
    xb_free(&z);
    xb_free(&b);
}

static void test_reject_layout(void **state)
{
    (void)state;
    /* overlap */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[8,24]}}",
        24);
    /* same range twice */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
        8);
    /* gap */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[12,20]}}",
        20);
    /* data not starting at 0 */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12);
    /* offsets beyond the data */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 4);
    /* begin > end */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8);
    /* offsets not matching the shape */
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12);
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,20]}}", 20);
    /* huge offsets */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[18446744073709551608,0]}}", 8);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,18446744073709551616]}}", 8);
}

static void test_reject_content(void **state)
{
    (void)state;
    /* duplicate key */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
        "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
        8);
    /* unknown dtypes (F8 types are safetensors dtypes that .expert lacks) */
    BAD("{\"a\":{\"dtype\":\"F7\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    /* rank 5 */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    /* overflowing shapes */
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
        "\"data_offsets\":[0,0]}}",
        0);
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0);
    /* (2^62+1) * 4 wraps to 4 in u64: an unchecked multiply would accept this */
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387905],\"data_offsets\":[0,4]}}", 4);
    /* malformed shapes and offsets */
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":4,\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", 4);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0]}}", 4);
    BAD("{\"a\":{\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,4]}}", 4);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4]}}", 4);
    BAD("{\"a\":[1,2]}", 0);
    /* JSON itself */
    BAD("[]", 0);
    BAD("{\"a\":", 0);
    BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}} x", 4);
    BAD("{\"\xff\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    /* __metadata__ must be a string -> string map */
    BAD("{\"__metadata__\":{\"k\":1}}", 0);
    BAD("{\"__metadata__\":\"x\"}", 0);
    BAD("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0);
}

static int g_classify_failures;

/* Soft check: prints and counts, so one run lists every mis-classified key. */
static void classify(const char *key, uint16_t type, uint32_t layer, const char *path, int line)
{
    char buf[512];
    memset(buf, 0x5A, sizeof buf);
    expert_peft_role role;
    expert_status st = expert_peft_classify(key, buf, sizeof buf, &role);
    if (st != EXPERT_OK) {
        print_message("FAIL line %d: classify(%s) -> %s\n", line, key, expert_status_name(st));
        g_classify_failures++;
        return;
    }
    if (role.type != type || role.layer != layer || strcmp(buf, path) != 0 ||
        role.module_path_length != strlen(path)) {
        g_classify_failures++;
        print_message("FAIL line %d: classify(%s) = type 0x%04x layer %u path \"%s\" (len %zu); "
                      "expected 0x%04x %u \"%s\"\n",
                      line, key, role.type, role.layer, buf, role.module_path_length, type, layer,
                      path);
    }
}
#define CLASSIFY(k, t, l, p) classify(k, t, l, p, __LINE__)

static void test_peft_classify(void **state)
{
    (void)state;
    const uint32_t NONE = EXPERT_LAYER_NONE;
    CLASSIFY("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", EXPERT_SECTION_LORA_A,
             7, "base_model.model.model.layers.7.self_attn.q_proj");
    CLASSIFY("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight", EXPERT_SECTION_LORA_B,
             12, "base_model.model.model.layers.12.mlp.down_proj");
    CLASSIFY("base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector",
             EXPERT_SECTION_DORA_MAGNITUDE, 0, "base_model.model.model.layers.0.self_attn.v_proj");
    CLASSIFY("base_model.model.model.layers.3.self_attn.v_proj.lora_magnitude_vector.weight",
             EXPERT_SECTION_DORA_MAGNITUDE, 3, "base_model.model.model.layers.3.self_attn.v_proj");
    CLASSIFY("model.layers.5.attn.dora_scale", EXPERT_SECTION_DORA_MAGNITUDE, 5, "model.layers.5.attn");
    CLASSIFY("base_model.model.model.layers.31.mlp.down_proj.ia3_l", EXPERT_SECTION_IA3_VECTOR, 31,
             "base_model.model.model.layers.31.mlp.down_proj");
    CLASSIFY("base_model.model.lm_head.lora_A.weight", EXPERT_SECTION_LORA_A, NONE,
             "base_model.model.lm_head");
    CLASSIFY("base_model.model.model.layers.65535.q.lora_A.weight", EXPERT_SECTION_LORA_A, 65535,
             "base_model.model.model.layers.65535.q");
    /* anything else: TENSOR, whole key as module path */
    static const char *other[] = {
        "base_model.model.model.embed_tokens.weight",
        "base_model.model.model.layers.2.self_attn.q_proj.lora_B.bias",
        "base_model.model.model.layers.2.mlp.lokr_w1",
        "base_model.model.model.layers.2.self_attn.q_proj.lora_embedding_A",
        "lora_A.weight",
        "x.lora_A.weights",
        "x.lora_A.weight.extra",
    };
    static const uint32_t other_layer[] = {NONE, 2, 2, 2, NONE, NONE, NONE};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        classify(other[i], EXPERT_SECTION_TENSOR, other_layer[i], other[i], __LINE__);
    /* layer parsing (spec §10.2): digits then '.', no leading zero, < 65536 */
    CLASSIFY("m.layers.07.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE, "m.layers.07.q");
    CLASSIFY("m.layers.65536.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE, "m.layers.65536.q");
    CLASSIFY("m.layers.99999999999999999999.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE,
             "m.layers.99999999999999999999.q");
    CLASSIFY("m.layers.x.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE, "m.layers.x.q");
    CLASSIFY("m.layers.4", EXPERT_SECTION_TENSOR, NONE, "m.layers.4");
    CLASSIFY("layers.4.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE, "layers.4.q");
    CLASSIFY("m.layers.0.q.lora_A.weight", EXPERT_SECTION_LORA_A, 0, "m.layers.0.q");
    CLASSIFY("m.sublayers.4.q.lora_A.weight", EXPERT_SECTION_LORA_A, NONE, "m.sublayers.4.q");
    /* the buffer must hold the path and its NUL */
    char small[8];
    expert_peft_role role;
    assert_int_not_equal(expert_peft_classify("base_model.model.lm_head.lora_A.weight", small,
                                              sizeof small, &role),
                         EXPERT_OK);
    char exact[25]; /* "base_model.model.lm_head" = 24 chars + NUL */
    assert_int_equal(expert_peft_classify("base_model.model.lm_head.lora_A.weight", exact,
                                          sizeof exact, &role),
                     EXPERT_OK);
    assert_string_equal(exact, "base_model.model.lm_head");
    assert_int_not_equal(expert_peft_classify("base_model.model.lm_head.lora_A.weight", exact,
                                              sizeof exact - 1, &role),
                         EXPERT_OK);
    assert_int_equal(g_classify_failures, 0);
}

/* Spec §10.7 rebuild: a v2 file whose SAFETENSORS_HEADER lists tensor "b"
 * as well as "a", but only "a" has a section. Rebuilding is BAD_SAFETENSORS
 * (the header and its sections disagree), not NOT_FOUND; with both
 * sections it rebuilds byte-exact. */
static expert_status write_st_file(const char *path, const xb *st, size_t header_len, int with_b)
{
    static const char meta[] = "{\"format\":\"expert-v2\",\"name\":\"st\",\"version\":\"1\",\"modules\":[]}";
    expert_writer *w = NULL;
    expert_error e;
    expert_status s = expert_writer_open(path, NULL, &w, &e);
    expert_section_desc d;
    memset(&d, 0, sizeof d);
    d.layer = EXPERT_LAYER_NONE;
    d.module = EXPERT_MODULE_NONE;
    d.name = "adapter_model.safetensors";
    d.type = EXPERT_SECTION_SAFETENSORS_HEADER;
    d.dtype = EXPERT_DTYPE_BYTES;
    d.rank = 1;
    d.dims[0] = header_len;
    if (s == EXPERT_OK)
        s = expert_writer_add(w, &d, st->p, header_len, &e);
    d.name = "a";
    d.type = EXPERT_SECTION_TENSOR;
    d.dtype = EXPERT_DTYPE_F32;
    d.dims[0] = 2;
    if (s == EXPERT_OK)
        s = expert_writer_add(w, &d, st->p + header_len, 8, &e);
    d.name = "b";
    if (s == EXPERT_OK && with_b)
        s = expert_writer_add(w, &d, st->p + header_len + 8, 8, &e);
    if (s == EXPERT_OK)
        s = expert_writer_set_metadata(w, meta, strlen(meta), &e);
    if (s == EXPERT_OK)
        return expert_writer_finish(w, NULL, &e);
    expert_writer_abort(w);
    return s;
}

static void test_rebuild_missing_tensor(void **state)
{
    (void)state;
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}";
    xb st = BUILD(h, 16);
    char tmpl[] = "/tmp/st-rebuild-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (dir == NULL) { /* /tmp may be unwritable: use the working directory */
        static char here[] = "st-rebuild-XXXXXX";
        dir = mkdtemp(here);
    }
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/x.expert", dir);
    for (int with_b = 0; with_b <= 1; with_b++) {
        assert_int_equal(write_st_file(path, &st, 8 + strlen(h), with_b), EXPERT_OK);
        expert_reader *r = NULL;
        expert_error e;
        expert_open_options o = {.threads = 2}; /* the rebuild's tensors shared by two threads */
        assert_int_equal(expert_open(path, &o, &r, &e), EXPERT_OK);
        void *data = NULL;
        size_t n = 0;
        expert_status s = expert_file_rebuild(r, 0, &data, &n, &e);
        uint32_t secs[3] = {9, 9, 9}, count = 0;
        uint64_t length = 0;
        expert_status ls = expert_file_layout(r, 0, secs, 3, &count, &length, &e);
        if (with_b) {
            assert_int_equal(s, EXPERT_OK);
            assert_int_equal(n, st.n);
            assert_memory_equal(data, st.p, st.n);
            /* header section, then the tensors in data_offsets order */
            assert_int_equal(ls, EXPERT_OK);
            assert_int_equal(count, 3);
            assert_int_equal(length, st.n);
            assert_int_equal(secs[0], 0);
            assert_int_equal(secs[1], 1);
            assert_int_equal(secs[2], 2);
            secs[1] = 9;
            assert_int_equal(expert_file_layout(r, 0, secs, 1, &count, &length, &e), EXPERT_OK);
            assert_int_equal(count, 3); /* all counted, only `capacity` written */
            assert_int_equal(secs[1], 9);
            assert_int_equal(expert_file_layout(r, 0, NULL, 0, &count, &length, &e), EXPERT_OK);
            assert_int_equal(count, 3);
            assert_int_equal(expert_file_layout(r, 0, NULL, 2, &count, &length, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            /* a tensor section is not a file */
            assert_int_equal(expert_file_layout(r, 1, secs, 3, &count, &length, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            assert_int_equal(count, 0);
            expert_v1_free(data);
            assert_int_equal(expert_file_rebuild(r, 1, &data, &n, &e), EXPERT_E_INVALID_ARGUMENT);
            assert_null(data);
        } else {
            assert_int_equal(s, EXPERT_E_BAD_SAFETENSORS);
            assert_non_null(strstr(e.message, "'b'"));
            assert_int_equal(ls, EXPERT_E_BAD_SAFETENSORS);
            assert_int_equal(count, 0);
        }
        expert_v1_free(data);
        expert_close(r);
        remove(path);
    }
    rmdir(dir);
    xb_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_basic),    cmocka_unit_test(test_valid_variants),
        cmocka_unit_test(test_reject_framing), cmocka_unit_test(test_reject_layout),
        cmocka_unit_test(test_reject_content), cmocka_unit_test(test_peft_classify),
        cmocka_unit_test(test_rebuild_missing_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
