/*
 * test_lookup.c — name lookup through the hash index, streaming (layer)
 * order, and the index region compared byte-for-byte with an independent
 * construction from the design notes (FNV-1a 64, slot_count =
 * max(8, next pow2 >= 2n), linear probing, slot = TOC index + 1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "craft.h"

#define NSEC 600
#define NAME_MAX_LEN 128

typedef struct fixture {
    char *dir;
    char *path;
    char *meta;
    char names[NSEC][NAME_MAX_LEN];
    tsec s[NSEC];
    xb img;
} fixture;

static const char *projs[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                               "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                               "mlp.down_proj"};
static const float lora_a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t filebytes[16] = "0123456789abcdef";

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    uint32_t k = 0;
    for (int L = 0; L < 40; L++)
        for (int p = 0; p < 7; p++)
            for (int ab = 0; ab < 2; ab++) {
                snprintf(f->names[k], NAME_MAX_LEN, "base_model.model.model.layers.%d.%s.lora_%c.weight",
                         L, projs[p], ab ? 'B' : 'A');
                tsec *s = &f->s[k];
                s->d.type = ab ? EXPERT_SECTION_LORA_B : EXPERT_SECTION_LORA_A;
                s->d.codec = EXPERT_CODEC_RAW;
                s->d.dtype = EXPERT_DTYPE_F32;
                s->d.rank = 2;
                s->d.dims[0] = ab ? 4 : 2;
                s->d.dims[1] = ab ? 2 : 4;
                s->d.layer = (uint32_t)L;
                s->d.module = (uint32_t)(L * 7 + p);
                s->data = lora_a;
                s->len = sizeof lora_a;
                k++;
            }
    for (int ab = 0; ab < 2; ab++) {
        snprintf(f->names[k], NAME_MAX_LEN, "base_model.model.lm_head.lora_%c.weight", ab ? 'B' : 'A');
        tsec *s = &f->s[k];
        s->d.type = ab ? EXPERT_SECTION_LORA_B : EXPERT_SECTION_LORA_A;
        s->d.codec = EXPERT_CODEC_RAW;
        s->d.dtype = EXPERT_DTYPE_F32;
        s->d.rank = 2;
        s->d.dims[0] = ab ? 4 : 2;
        s->d.dims[1] = ab ? 2 : 4;
        s->d.layer = EXPERT_LAYER_NONE;
        s->d.module = 280;
        s->data = lora_a;
        s->len = sizeof lora_a;
        k++;
    }
    while (k < NSEC) {
        if (k == 562)
            snprintf(f->names[k], NAME_MAX_LEN, "adapter_config.json");
        else if (k == 563)
            snprintf(f->names[k], NAME_MAX_LEN, "README.md");
        else
            snprintf(f->names[k], NAME_MAX_LEN, "extra/file_%u.bin", k);
        tsec *s = &f->s[k];
        s->d.type = EXPERT_SECTION_FILE;
        s->d.codec = (k % 3 == 0) ? EXPERT_CODEC_ZSTD : EXPERT_CODEC_RAW;
        s->d.dtype = EXPERT_DTYPE_BYTES;
        s->d.rank = 1;
        s->d.dims[0] = sizeof filebytes;
        s->d.layer = EXPERT_LAYER_NONE;
        s->d.module = EXPERT_MODULE_NONE;
        s->data = filebytes;
        s->len = sizeof filebytes;
        k++;
    }
    /* deterministic shuffle of the TOC order (names travel with their desc) */
    prng r = {2024};
    for (uint32_t i = NSEC - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(prng_next(&r) % (i + 1));
        tsec t = f->s[i];
        f->s[i] = f->s[j];
        f->s[j] = t;
        char tmp[NAME_MAX_LEN];
        memcpy(tmp, f->names[i], NAME_MAX_LEN);
        memcpy(f->names[i], f->names[j], NAME_MAX_LEN);
        memcpy(f->names[j], tmp, NAME_MAX_LEN);
    }
    for (uint32_t i = 0; i < NSEC; i++) {
        f->s[i].d.name = f->names[i];
        f->s[i].d.name_length = 0;
    }
    /* metadata: one lora module per (layer, projection) pair, plus lm_head */
    size_t cap = 300 * 200, pos = 0;
    f->meta = malloc(cap);
    pos += (size_t)snprintf(f->meta + pos, cap - pos,
                            "{\"format\":\"expert-v2\",\"name\":\"lookup\",\"version\":\"1\",\"modules\":[");
    for (int L = 0; L <= 40; L++)
        for (int p = 0; p < (L == 40 ? 1 : 7); p++) {
            char mpath[96];
            if (L == 40)
                snprintf(mpath, sizeof mpath, "base_model.model.lm_head");
            else
                snprintf(mpath, sizeof mpath, "base_model.model.model.layers.%d.%s", L, projs[p]);
            char layer[16];
            if (L == 40)
                snprintf(layer, sizeof layer, "null");
            else
                snprintf(layer, sizeof layer, "%d", L);
            pos += (size_t)snprintf(f->meta + pos, cap - pos,
                                    "%s{\"path\":\"%s\",\"type\":\"lora\",\"layer\":%s,\"r\":2,"
                                    "\"alpha\":4,\"rslora\":false}",
                                    (L == 0 && p == 0) ? "" : ",", mpath, layer);
        }
    snprintf(f->meta + pos, cap - pos, "]}");
    f->dir = tmpdir_make("lookup");
    f->path = path_join(f->dir, "lookup.expert");
    expert_writer_options wo = {.alignment = 64, .frame_size = 0, .zstd_level = 1, .threads = 1};
    if (write_expert(f->path, &wo, f->meta, f->s, NSEC, NULL) != EXPERT_OK)
        return -1;
    if (file_load(f->path, &f->img) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f)
        return 0;
    xb_free(&f->img);
    free(f->meta);
    free(f->path);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void check_find_all(expert_reader *r, fixture *f)
{
    assert_int_equal(expert_section_count(r), NSEC);
    for (uint32_t i = 0; i < NSEC; i++) {
        uint32_t idx = UINT32_MAX;
        assert_int_equal(expert_find(r, f->names[i], strlen(f->names[i]), &idx), EXPERT_OK);
        assert_int_equal(idx, i);
        expert_section_info si;
        assert_int_equal(expert_section(r, i, &si), EXPERT_OK);
        assert_int_equal(si.name_length, strlen(f->names[i]));
        assert_memory_equal(si.name, f->names[i], si.name_length);
    }
}

static void test_find_every_section(void **state)
{
    fixture *f = *state;
    expert_reader *r = NULL;
    expert_error err;
    assert_int_equal(expert_open(f->path, NULL, &r, &err), EXPERT_OK);
    check_find_all(r, f);
    expert_close(r);
    void *mem = NULL;
    assert_int_equal(open_mem(f->img.p, f->img.n, 1, &mem, &r, &err), EXPERT_OK);
    check_find_all(r, f);
    expert_close(r);
    free(mem);
}

static void test_find_absent(void **state)
{
    fixture *f = *state;
    expert_reader *r = NULL;
    expert_error err;
    assert_int_equal(expert_open(f->path, NULL, &r, &err), EXPERT_OK);
    uint32_t idx;
    static const char *absent[] = {
        "base_model.model.model.layers.40.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight ",
        "Base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight",
        "adapter_config.jso",
        "adapter_config.jsonx",
        "x",
        "extra/file_600.bin",
    };
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        assert_int_equal(expert_find(r, absent[i], strlen(absent[i]), &idx), EXPERT_E_NOT_FOUND);
    /* a name given by length, not NUL: prefix of a longer buffer */
    const char *longer = "adapter_config.jsonXYZ";
    assert_int_equal(expert_find(r, longer, 19, &idx), EXPERT_OK);
    assert_int_equal(expert_find(r, longer, 18, &idx), EXPERT_E_NOT_FOUND);
    /* many random absent names probing through occupied slots */
    prng g = {99};
    for (int i = 0; i < 3000; i++) {
        char name[40];
        snprintf(name, sizeof name, "absent.%016llx", (unsigned long long)prng_next(&g));
        assert_int_equal(expert_find(r, name, strlen(name), &idx), EXPERT_E_NOT_FOUND);
    }
    /* names whose hash lands in the same home slot as a present name */
    uint32_t slots = rd32(f->img.p + rd64(f->img.p + H_INDEX_OFF));
    uint64_t home = fnv1a64(f->names[0], strlen(f->names[0])) & (slots - 1);
    int found = 0;
    for (int i = 0; i < 200000 && found < 20; i++) {
        char name[40];
        snprintf(name, sizeof name, "c%d", i);
        if ((fnv1a64(name, strlen(name)) & (slots - 1)) == home) {
            assert_int_equal(expert_find(r, name, strlen(name), &idx), EXPERT_E_NOT_FOUND);
            found++;
        }
    }
    assert_true(found > 0);
    expert_close(r);
}

static uint32_t key_layer(const tsec *s) { return s->d.layer; }

static void test_layer_order(void **state)
{
    fixture *f = *state;
    expert_reader *r = NULL;
    expert_error err;
    assert_int_equal(expert_open(f->path, NULL, &r, &err), EXPERT_OK);
    /* expected: stable sort of TOC indices by layer, NONE (0xFFFFFFFF) last */
    uint32_t order[NSEC];
    uint32_t k = 0;
    for (uint32_t L = 0; L <= 40; L++) {
        uint32_t want = L == 40 ? EXPERT_LAYER_NONE : L;
        for (uint32_t i = 0; i < NSEC; i++)
            if (key_layer(&f->s[i]) == want)
                order[k++] = i;
    }
    assert_int_equal(k, NSEC);
    uint32_t prev_layer = 0;
    for (uint32_t i = 0; i < NSEC; i++) {
        uint32_t got = expert_section_in_layer_order(r, i);
        assert_int_equal(got, order[i]);
        expert_section_info si;
        assert_int_equal(expert_section(r, got, &si), EXPERT_OK);
        assert_true(si.layer >= prev_layer);
        prev_layer = si.layer;
    }
    assert_int_equal(prev_layer, EXPERT_LAYER_NONE);
    expert_close(r);
}

static void test_index_bytes(void **state)
{
    fixture *f = *state;
    const uint8_t *p = f->img.p;
    uint64_t ix_off = rd64(p + H_INDEX_OFF), ix_len = rd64(p + H_INDEX_LEN);
    assert_int_equal(rd32(p + H_TOC_COUNT), NSEC);
    assert_int_equal(ix_len, 8 + 4 * 2048); /* 2*600 = 1200 -> 2048 slots */
    assert_int_equal(rd32(p + ix_off), 2048);
    assert_int_equal(rd32(p + ix_off + 4), 0);
    assert_true(ix_off % 8 == 0);
    /* names in the file are the names written, in TOC order */
    for (uint32_t i = 0; i < NSEC; i++) {
        const uint8_t *e = toc_entry(f->img.p, i);
        size_t nl = rd16(e + T_NAME_LEN);
        assert_int_equal(nl, strlen(f->names[i]));
        assert_memory_equal(p + rd64(p + H_STR_OFF) + rd32(e + T_NAME_OFF), f->names[i], nl);
    }
    /* independent construction from the names we wrote */
    const uint8_t *names[NSEC];
    size_t lens[NSEC];
    for (uint32_t i = 0; i < NSEC; i++) {
        names[i] = (const uint8_t *)f->names[i];
        lens[i] = strlen(f->names[i]);
    }
    size_t len = 0;
    uint8_t *ix = xm_index_build(names, lens, NSEC, &len);
    assert_int_equal(len, ix_len);
    assert_memory_equal(ix, p + ix_off, len);
    free(ix);
    /* and from the file's own TOC */
    ix = xm_index_of_file(p, f->img.n, &len);
    assert_memory_equal(ix, p + ix_off, len);
    free(ix);
    /* FNV-1a 64 known answers */
    assert_true(fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
    assert_true(fnv1a64("model.layers.0.q_proj.lora_A.weight", 35) == 0x6ECD1DBB26C69259ull);
}

/* Slot count boundaries: n = 0..9 and 64/65 sections. */
static void test_slot_counts(void **state)
{
    (void)state;
    char *dir = tmpdir_make("slots");
    char *path = path_join(dir, "s.expert");
    static const uint32_t ns[] = {0, 1, 3, 4, 5, 8, 9, 64, 65};
    static char names[65][16];
    tsec s[65];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 65; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i);
        s[i].d.name = names[i];
        s[i].d.type = EXPERT_SECTION_FILE;
        s[i].d.dtype = EXPERT_DTYPE_BYTES;
        s[i].d.rank = 1;
        s[i].d.dims[0] = 1;
        s[i].d.layer = EXPERT_LAYER_NONE;
        s[i].d.module = EXPERT_MODULE_NONE;
        s[i].data = "z";
        s[i].len = 1;
    }
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        uint32_t n = ns[t];
        assert_int_equal(write_expert(path, NULL, NULL, s, n, NULL), EXPERT_OK);
        xb img;
        assert_int_equal(file_load(path, &img), 0);
        uint32_t want = 8;
        while (want < 2 * n)
            want <<= 1;
        uint64_t ix_off = rd64(img.p + H_INDEX_OFF);
        assert_int_equal(rd32(img.p + ix_off), want);
        assert_int_equal(rd64(img.p + H_INDEX_LEN), 8 + 4 * (uint64_t)want);
        size_t len = 0;
        uint8_t *ix = xm_index_of_file(img.p, img.n, &len);
        assert_int_equal(len, rd64(img.p + H_INDEX_LEN));
        assert_memory_equal(ix, img.p + ix_off, len);
        free(ix);
        expert_reader *r = NULL;
        expert_error err;
        assert_int_equal(expert_open(path, NULL, &r, &err), EXPERT_OK);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t idx;
            assert_int_equal(expert_find(r, names[i], strlen(names[i]), &idx), EXPERT_OK);
            assert_int_equal(idx, i);
        }
        uint32_t idx;
        assert_int_equal(expert_find(r, "n65", 3, &idx), EXPERT_E_NOT_FOUND);
        expert_close(r);
        xb_free(&img);
    }
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_every_section),
        cmocka_unit_test(test_find_absent),
        cmocka_unit_test(test_layer_order),
        cmocka_unit_test(test_index_bytes),
        cmocka_unit_test(test_slot_counts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
