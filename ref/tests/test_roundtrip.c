/*
 * test_roundtrip.c — writer -> reader round trips over every codec x dtype x
 * alignment, through all three open paths (mmap, read(), caller memory) and
 * 1 / 4 decode threads; plus an independent decode of the stored bytes
 * (frame table, zstd frames with content size, byte shuffle) and a canonical
 * re-layout of the file from the design notes that must be byte-identical.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "craft.h"

static char ctx[256];
/* one temp dir for the whole program, removed by the group teardown even
 * when a test fails half way */
static char *g_dir;
#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond))                                                                              \
            fail_msg("[%s] check failed: %s (%s:%d)", ctx, #cond, __FILE__, __LINE__);            \
    } while (0)
#define CHECK_OK(expr)                                                                            \
    do {                                                                                          \
        expert_status st_ = (expr);                                                               \
        if (st_ != EXPERT_OK)                                                                     \
            fail_msg("[%s] %s -> %s (%s:%d)", ctx, #expr, expert_status_name(st_), __FILE__,     \
                     __LINE__);                                                                   \
    } while (0)

static const uint8_t dtypes[] = {EXPERT_DTYPE_F32, EXPERT_DTYPE_F16, EXPERT_DTYPE_BF16,
                                 EXPERT_DTYPE_I8,  EXPERT_DTYPE_U8,  EXPERT_DTYPE_I32,
                                 EXPERT_DTYPE_F64, EXPERT_DTYPE_I64, EXPERT_DTYPE_BYTES};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])
#define FRAME 65536u
#define NSEC 10

#define META_RT                                                                                   \
    "{\"format\":\"expert-v2\",\"name\":\"roundtrip\",\"version\":\"1.2.3\",\"modules\":["        \
    "{\"path\":\"base_model.model.model.layers.3.self_attn.q_proj\",\"type\":\"lora\","          \
    "\"layer\":3,\"in_features\":16,\"out_features\":16,\"r\":7,\"alpha\":14,\"rslora\":false}]}"

typedef struct fixture {
    tsec s[NSEC];
    uint8_t *data[NSEC];
    char names[NSEC][1100];
} fixture;

/* Element-structured pseudo-random data: the top byte of each element varies
 * slowly so zstd (and the shuffle) have something to work with. */
static uint8_t *make_data(prng *r, size_t bytes, size_t esize)
{
    uint8_t *d = malloc(bytes ? bytes : 1);
    prng_fill(r, d, bytes);
    if (esize > 1)
        for (size_t i = 0; i + esize <= bytes; i += esize)
            d[i + esize - 1] = (uint8_t)((i / esize) / 997);
    return d;
}

static void build_fixture(fixture *f, uint8_t codec, uint8_t dt, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    prng r = {seed};
    size_t esize = expert_dtype_size(dt);
    assert_true(esize > 0);
    int bytes_dt = dt == EXPERT_DTYPE_BYTES;
    /* element counts and shapes */
    struct {
        const char *name;
        uint8_t rank;
        uint64_t dims[4];
        uint32_t layer, module;
    } shp[NSEC] = {
        {"sec/empty", 1, {0, 0, 0, 0}, 0, EXPERT_MODULE_NONE},
        {"sec/one", 0, {0, 0, 0, 0}, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE},
        {"sec/odd-70007", 2, {7, 10001, 0, 0}, 3, EXPERT_MODULE_NONE},
        {"sec/big-300k", 3, {3, 100, 1000 / esize, 0}, 65535, EXPERT_MODULE_NONE},
        {"sec/exact-2-frames", 1, {2 * FRAME / esize, 0, 0, 0}, 1, EXPERT_MODULE_NONE},
        {"sec/rank4", 4, {2, 3, 4, 5}, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE},
        {NULL, 1, {3, 0, 0, 0}, 2, EXPERT_MODULE_NONE}, /* 1024-byte name */
        {"\xe6\xa8\xa1\xe5\x9d\x97/stra\xc3\x9f" "e", 1, {5, 0, 0, 0}, 0, EXPERT_MODULE_NONE},
        /* the module's LoRA pair (F32 whatever the tested dtype): spec §6.5 */
        {"base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", 2, {7, 16, 0, 0}, 3, 0},
        {"base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight", 2, {16, 7, 0, 0}, 3, 0},
    };
    for (int i = 0; i < NSEC; i++) {
        tsec *s = &f->s[i];
        int lora = i >= 8;
        size_t e = lora ? 4 : esize;
        uint64_t numel = 1;
        for (int k = 0; k < shp[i].rank; k++)
            numel *= shp[i].dims[k];
        size_t bytes = (size_t)(numel * e);
        if (shp[i].name) {
            snprintf(f->names[i], sizeof f->names[i], "%s", shp[i].name);
        } else {
            /* 1024 bytes: 'n' then 511 two-byte UTF-8 chars then 'x' */
            size_t p = 0;
            f->names[i][p++] = 'n';
            for (int k = 0; k < 511; k++) {
                f->names[i][p++] = (char)0xc3;
                f->names[i][p++] = (char)0xa9;
            }
            f->names[i][p++] = 'x';
            f->names[i][p] = 0;
            assert_int_equal(strlen(f->names[i]), 1024);
        }
        s->d.name = f->names[i];
        s->d.name_length = 0;
        s->d.codec = codec;
        s->d.dtype = lora ? EXPERT_DTYPE_F32 : dt;
        s->d.flags = 0;
        s->d.layer = shp[i].layer;
        s->d.module = shp[i].module;
        if (lora) {
            s->d.type = i == 8 ? EXPERT_SECTION_LORA_A : EXPERT_SECTION_LORA_B;
            s->d.rank = 2;
            memcpy(s->d.dims, shp[i].dims, sizeof s->d.dims);
        } else if (bytes_dt) {
            s->d.type = EXPERT_SECTION_FILE;
            s->d.rank = 1;
            s->d.dims[0] = bytes;
        } else {
            s->d.type = EXPERT_SECTION_TENSOR;
            s->d.rank = shp[i].rank;
            memcpy(s->d.dims, shp[i].dims, sizeof s->d.dims);
        }
        f->data[i] = make_data(&r, bytes, e);
        s->data = f->data[i];
        s->len = bytes;
    }
}

static void free_fixture(fixture *f)
{
    for (int i = 0; i < NSEC; i++)
        free(f->data[i]);
}

/* Independent decode of the stored bytes of one section (design notes,
 * "Codecs and frames"); checks the frame structure strictly. */
static void check_stored(const uint8_t *file, const uint8_t *entry, const tsec *s, uint32_t align)
{
    uint64_t off = rd64(entry + T_OFFSET), stored = rd64(entry + T_STORED);
    uint64_t dec = rd64(entry + T_DECODED);
    uint8_t codec = entry[T_CODEC];
    uint32_t fs = rd32(entry + T_FRAME);
    CHECK(off % align == 0);
    CHECK(dec == s->len);
    uint8_t h[32];
    sha256(s->data, s->len, h);
    CHECK(memcmp(entry + T_SHA, h, 32) == 0);
    const uint8_t *p = file + off;
    if (codec == EXPERT_CODEC_RAW) {
        CHECK(fs == 0);
        CHECK(stored == dec);
        CHECK(dec == 0 || memcmp(p, s->data, dec) == 0);
        return;
    }
    CHECK(fs == FRAME);
    uint64_t n = (dec + fs - 1) / fs;
    CHECK(stored >= 4 * n);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += rd32(p + 4 * i);
    CHECK(stored == 4 * n + sum);
    size_t esize = expert_dtype_size(entry[T_DTYPE]);
    const uint8_t *fr = p + 4 * n;
    uint8_t *buf = malloc(fs), *plain = malloc(fs);
    for (uint64_t i = 0; i < n; i++) {
        size_t csz = rd32(p + 4 * i);
        size_t want = (size_t)((dec - i * fs) < fs ? (dec - i * fs) : fs);
        CHECK(ZSTD_getFrameContentSize(fr, csz) == want);
        CHECK(ZSTD_findFrameCompressedSize(fr, csz) == csz);
        size_t got = ZSTD_decompress(buf, fs, fr, csz);
        CHECK(!ZSTD_isError(got) && got == want);
        const uint8_t *expect = (const uint8_t *)s->data + i * fs;
        if (codec == EXPERT_CODEC_SHUFFLE_ZSTD) {
            size_t ne = want / esize;
            CHECK(want % esize == 0);
            for (size_t a = 0; a < ne; a++)
                for (size_t j = 0; j < esize; j++)
                    plain[a * esize + j] = buf[j * ne + a];
            CHECK(memcmp(plain, expect, want) == 0);
        } else {
            CHECK(memcmp(buf, expect, want) == 0);
        }
        fr += csz;
    }
    free(buf);
    free(plain);
}

static void check_reader(expert_reader *r, const fixture *f, uint32_t align, uint64_t file_size,
                         int expect_mmap, int full, const char *mode)
{
    char saved[256];
    snprintf(saved, sizeof saved, "%s", ctx);
    snprintf(ctx + strlen(ctx), sizeof ctx - strlen(ctx), " %s", mode);
    expert_header_info hi;
    expert_header(r, &hi);
    CHECK(hi.major == 2);
    CHECK(hi.alignment == align);
    CHECK(hi.section_count == NSEC);
    CHECK(hi.file_length == file_size);
    CHECK(hi.is_signed == 0);
    CHECK(hi.header_size == 256);
    if (expect_mmap >= 0)
        CHECK(hi.used_mmap == expect_mmap);
    CHECK(expert_section_count(r) == NSEC);
    CHECK(strcmp(expert_name(r), "roundtrip") == 0);
    CHECK(strcmp(expert_package_version(r), "1.2.3") == 0);
    size_t jl = 0;
    const char *json = expert_metadata_json(r, &jl);
    CHECK(json && jl == strlen(META_RT) && memcmp(json, META_RT, jl) == 0 && json[jl] == 0);
    CHECK(expert_module_count(r) == 1);
    expert_module_info mi;
    CHECK_OK(expert_module(r, 0, &mi));
    CHECK(strcmp(mi.path, "base_model.model.model.layers.3.self_attn.q_proj") == 0);
    CHECK(strcmp(mi.type, "lora") == 0);
    CHECK(mi.layer == 3 && mi.r == 7 && mi.alpha == 14.0 && mi.rslora == 0 && mi.scale == 2.0);
    CHECK(mi.in_features == 16 && mi.out_features == 16);

    for (uint32_t i = 0; i < NSEC; i++) {
        const tsec *s = &f->s[i];
        expert_section_info si;
        CHECK_OK(expert_section(r, i, &si));
        size_t nl = strlen(s->d.name);
        CHECK(si.index == i);
        CHECK(si.name_length == nl && memcmp(si.name, s->d.name, nl) == 0);
        CHECK(si.type == s->d.type && si.known_type == 1);
        CHECK(si.codec == s->d.codec && si.dtype == s->d.dtype && si.rank == s->d.rank);
        CHECK(si.flags == 0 && si.layer == s->d.layer && si.module == s->d.module);
        CHECK(memcmp(si.dims, s->d.dims, sizeof si.dims) == 0);
        CHECK(si.decoded_length == s->len);
        CHECK(si.offset % align == 0);
        CHECK(si.frame_size == (s->d.codec == EXPERT_CODEC_RAW ? 0 : FRAME));
        if (s->d.codec == EXPERT_CODEC_RAW)
            CHECK(si.stored_length == s->len);
        uint8_t h[32];
        sha256(s->data, s->len, h);
        CHECK(memcmp(si.sha256, h, 32) == 0);
        uint32_t idx = 999;
        CHECK_OK(expert_find(r, s->d.name, nl, &idx));
        CHECK(idx == i);

        uint8_t *dst = malloc(s->len + 1);
        memset(dst, 0xAB, s->len + 1);
        expert_error err;
        CHECK_OK(expert_read(r, i, dst, s->len, 0, &err));
        CHECK(s->len == 0 || memcmp(dst, s->data, s->len) == 0);
        CHECK(dst[s->len] == 0xAB); /* no write past the decoded length */
        /* second read (hash already verified) and an unverified read */
        memset(dst, 0, s->len + 1);
        CHECK_OK(expert_read(r, i, dst, s->len, 0, &err));
        CHECK(s->len == 0 || memcmp(dst, s->data, s->len) == 0);
        memset(dst, 0, s->len + 1);
        CHECK_OK(expert_read(r, i, dst, s->len + 1, EXPERT_READ_NO_VERIFY, &err));
        CHECK(s->len == 0 || memcmp(dst, s->data, s->len) == 0);
        free(dst);

        const void *view = NULL;
        size_t vlen = 12345;
        expert_status vs = expert_view(r, i, &view, &vlen, 0, &err);
        if (s->d.codec == EXPERT_CODEC_RAW) {
            CHECK(vs == EXPERT_OK);
            CHECK(vlen == s->len);
            if (s->len) {
                CHECK(view != NULL);
                CHECK(((uintptr_t)view % align) == 0);
                CHECK(memcmp(view, s->data, s->len) == 0);
            }
        } else {
            CHECK(vs == EXPERT_E_INVALID_ARGUMENT);
        }
    }
    if (full) {
        expert_error err;
        CHECK_OK(expert_verify_full(r, NULL, &err));
    }
    snprintf(ctx, sizeof ctx, "%s", saved);
}

static void run_combo(const char *dir, uint8_t codec, uint8_t dt, uint32_t align, unsigned wthreads)
{
    snprintf(ctx, sizeof ctx, "codec=%s dtype=%s align=%u", expert_codec_name(codec),
             expert_dtype_name(dt), align);
    fixture f;
    build_fixture(&f, codec, dt, 0x1234567ull + codec * 100 + dt * 7 + align);
    char *path = path_join(dir, "rt.expert");
    expert_writer_options wo = {.alignment = align, .frame_size = FRAME, .zstd_level = 3, .threads = wthreads};
    CHECK_OK(write_expert(path, &wo, META_RT, f.s, NSEC, NULL));
    struct stat stt;
    CHECK(stat(path, &stt) == 0);
    uint64_t fsize = (uint64_t)stt.st_size;

    /* independent view of the bytes */
    xb img;
    CHECK(file_load(path, &img) == 0);
    CHECK(img.n == fsize);
    CHECK(memcmp(img.p, "HLLMEXP\0", 8) == 0);
    CHECK(rd16(img.p + H_MAJOR) == 2 && rd16(img.p + H_MINOR) == 0);
    CHECK(rd32(img.p + H_HEADER_SIZE) == 256);
    CHECK(rd32(img.p + H_ALIGN) == align);
    CHECK(rd32(img.p + H_FLAGS) == 0);
    CHECK(rd32(img.p + H_TOC_ENTRY_SIZE) == 128);
    CHECK(rd64(img.p + H_FILE_LEN) == fsize);
    for (int i = H_RESERVED; i < 256; i++)
        CHECK(img.p[i] == 0);
    static const uint8_t zero64[64];
    CHECK(memcmp(img.p + H_SIG, zero64, 64) == 0);
    uint8_t h[32];
    xm_file_sha(img.p, img.n, h);
    CHECK(memcmp(img.p + H_FILE_SHA, h, 32) == 0);
    xm_structure_sha(img.p, img.n, h);
    CHECK(memcmp(img.p + H_STRUCT_SHA, h, 32) == 0);
    for (uint32_t i = 0; i < NSEC; i++)
        check_stored(img.p, toc_entry(img.p, i), &f.s[i], align);
    /* one encoder, two sinks: the memory writer's image is the same file */
    expert_image mem;
    CHECK_OK(write_expert_image(&wo, META_RT, f.s, NSEC, NULL, &mem));
    CHECK(mem.size == img.n && memcmp(mem.data, img.p, img.n) == 0);
    CHECK((uintptr_t)mem.data % align == 0);
    expert_image_free(&mem);
    CHECK(mem.data == NULL && mem.allocation == NULL);
    /* canonical layout: re-serialising the parsed parts gives the same bytes */
    xm_model m;
    CHECK(xm_parse(img.p, img.n, &m) == 0);
    xb again = {0};
    xm_serialize(&m, NULL, &again);
    CHECK(again.n == img.n);
    if (again.n == img.n)
        for (size_t k = 0; k < img.n; k++)
            if (again.p[k] != img.p[k])
                fail_msg("[%s] canonical layout differs at byte %zu", ctx, k);
    xb_free(&again);
    xm_free(&m);

    for (unsigned t = 1; t <= 4; t += 3) {
        expert_error err;
        expert_reader *r = NULL;
        expert_open_options o = {.flags = 0, .threads = t};
        CHECK_OK(expert_open(path, &o, &r, &err));
        check_reader(r, &f, align, fsize, 1, t == 1, t == 1 ? "mmap t1" : "mmap t4");
        expert_close(r);

        o.flags = EXPERT_OPEN_NO_MMAP;
        CHECK_OK(expert_open(path, &o, &r, &err));
        check_reader(r, &f, align, fsize, 0, 0, t == 1 ? "no-mmap t1" : "no-mmap t4");
        expert_close(r);

        void *mem = NULL;
        CHECK_OK(open_mem(img.p, img.n, t, &mem, &r, &err));
        check_reader(r, &f, align, fsize, -1, t == 4, t == 1 ? "memory t1" : "memory t4");
        expert_close(r);
        free(mem);
    }
    xb_free(&img);
    remove(path);
    free(path);
    free_fixture(&f);
}

static void run_codec_align(uint8_t codec, uint32_t align)
{
    for (size_t d = 0; d < N_DTYPES; d++)
        run_combo(g_dir, codec, dtypes[d], align, (d % 2) ? 4 : 1);
    assert_int_equal(dir_count(g_dir), 0);
}

#define COMBO(cname, codec, align)                                                                \
    static void test_##cname##_##align(void **state)                                              \
    {                                                                                             \
        (void)state;                                                                              \
        run_codec_align(codec, align);                                                            \
    }
COMBO(raw, EXPERT_CODEC_RAW, 64)
COMBO(raw, EXPERT_CODEC_RAW, 256)
COMBO(raw, EXPERT_CODEC_RAW, 4096)
COMBO(zstd, EXPERT_CODEC_ZSTD, 64)
COMBO(zstd, EXPERT_CODEC_ZSTD, 256)
COMBO(zstd, EXPERT_CODEC_ZSTD, 4096)
COMBO(shuffle, EXPERT_CODEC_SHUFFLE_ZSTD, 64)
COMBO(shuffle, EXPERT_CODEC_SHUFFLE_ZSTD, 256)
COMBO(shuffle, EXPERT_CODEC_SHUFFLE_ZSTD, 4096)

/* Defaults: alignment 0 -> 64, frame_size 0 -> 1 MiB, level 0 -> 19. */
static void test_defaults(void **state)
{
    (void)state;
    snprintf(ctx, sizeof ctx, "defaults");
    const char *dir = g_dir;
    char *path = path_join(dir, "d.expert");
    prng r = {42};
    size_t n = 1500000; /* two 1 MiB frames */
    uint8_t *d = make_data(&r, n, 4);
    tsec s[2] = {
        {{"a", 0, EXPERT_SECTION_TENSOR, EXPERT_CODEC_ZSTD, EXPERT_DTYPE_F32, 1, 0,
          EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {n / 4, 0, 0, 0}}, d, n},
        {{"b", 0, EXPERT_SECTION_TENSOR, EXPERT_CODEC_RAW, EXPERT_DTYPE_U8, 1, 0,
          EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {100, 0, 0, 0}}, d, 100},
    };
    CHECK_OK(write_expert(path, NULL, NULL, s, 2, NULL));
    expert_reader *rd = NULL;
    expert_error err;
    CHECK_OK(expert_open(path, NULL, &rd, &err));
    expert_header_info hi;
    expert_header(rd, &hi);
    CHECK(hi.alignment == 64);
    expert_section_info si;
    CHECK_OK(expert_section(rd, 0, &si));
    CHECK(si.frame_size == 1048576);
    CHECK(si.stored_length < n);
    uint8_t *out = malloc(n);
    CHECK_OK(expert_read(rd, 0, out, n, 0, &err));
    CHECK(memcmp(out, d, n) == 0);
    /* too small a destination is refused, not overrun */
    CHECK(expert_read(rd, 0, out, n - 1, 0, &err) == EXPERT_E_INVALID_ARGUMENT);
    CHECK(expert_read(rd, 2, out, n, 0, &err) == EXPERT_E_INVALID_ARGUMENT);
    CHECK_OK(expert_verify_full(rd, NULL, &err));
    expert_close(rd);
    free(out);
    free(d);
    remove(path);
    free(path);
}

/* Zero sections: valid file, index of 8 empty slots. */
static void test_empty_file(void **state)
{
    (void)state;
    snprintf(ctx, sizeof ctx, "empty");
    const char *dir = g_dir;
    char *path = path_join(dir, "e.expert");
    CHECK_OK(write_expert(path, NULL, NULL, NULL, 0, NULL));
    xb img;
    CHECK(file_load(path, &img) == 0);
    CHECK(rd32(img.p + H_TOC_COUNT) == 0);
    CHECK(rd64(img.p + H_INDEX_LEN) == 8 + 4 * 8);
    CHECK(rd64(img.p + H_STR_LEN) == 0);
    xm_model m;
    CHECK(xm_parse(img.p, img.n, &m) == 0);
    xb again = {0};
    xm_serialize(&m, NULL, &again);
    CHECK(again.n == img.n && memcmp(again.p, img.p, img.n) == 0);
    xb_free(&again);
    xm_free(&m);
    expert_reader *r = NULL;
    expert_error err;
    CHECK_OK(expert_open(path, NULL, &r, &err));
    CHECK(expert_section_count(r) == 0);
    uint32_t idx;
    CHECK(expert_find(r, "x", 1, &idx) == EXPERT_E_NOT_FOUND);
    CHECK_OK(expert_verify_full(r, NULL, &err));
    expert_close(r);
    xb_free(&img);
    remove(path);
    free(path);
}

/* One reader shared by four threads (the header promises thread safety). */
typedef struct thr_arg {
    expert_reader *r;
    const fixture *f;
    int bad;
} thr_arg;

static void *reader_thread(void *p)
{
    thr_arg *a = p;
    for (int rep = 0; rep < 3; rep++)
        for (uint32_t i = 0; i < NSEC; i++) {
            const tsec *s = &a->f->s[(i + (uint32_t)rep) % NSEC];
            uint32_t idx = (i + (uint32_t)rep) % NSEC;
            uint8_t *dst = malloc(s->len + 1);
            expert_error err;
            if (expert_read(a->r, idx, dst, s->len, 0, &err) != EXPERT_OK ||
                (s->len && memcmp(dst, s->data, s->len) != 0))
                a->bad++;
            free(dst);
        }
    return NULL;
}

static void test_concurrent_reads(void **state)
{
    (void)state;
    snprintf(ctx, sizeof ctx, "concurrent");
    const char *dir = g_dir;
    char *path = path_join(dir, "c.expert");
    fixture f;
    build_fixture(&f, EXPERT_CODEC_SHUFFLE_ZSTD, EXPERT_DTYPE_BF16, 77);
    expert_writer_options wo = {.alignment = 64, .frame_size = FRAME, .zstd_level = 1, .threads = 4};
    CHECK_OK(write_expert(path, &wo, META_RT, f.s, NSEC, NULL));
    expert_reader *r = NULL;
    expert_error err;
    expert_open_options o = {.flags = 0, .threads = 2};
    CHECK_OK(expert_open(path, &o, &r, &err));
    pthread_t th[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thr_arg){r, &f, 0};
        CHECK(pthread_create(&th[i], NULL, reader_thread, &a[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].bad == 0);
    }
    expert_close(r);
    free_fixture(&f);
    remove(path);
    free(path);
}

static int g_released;
static void count_release(void *owner)
{
    g_released++;
    free(owner);
}
static void other_release(void *owner) { (void)owner; }

/* expert_open_memory_owned: the reader releases its owner exactly once, at
 * close, or before returning when the open fails; expert_reader_owner
 * answers only to the callback the owner was given with. */
static void test_owned_memory(void **state)
{
    (void)state;
    fixture f;
    build_fixture(&f, EXPERT_CODEC_ZSTD, EXPERT_DTYPE_F32, 77);
    expert_writer_options wo = {.alignment = 64, .frame_size = FRAME, .zstd_level = 3};
    expert_image im;
    CHECK_OK(write_expert_image(&wo, META_RT, f.s, NSEC, NULL, &im));
    expert_error err;
    for (int truncate = 0; truncate <= 1; truncate++) {
        void *copy = aligned_copy(im.data, im.size);
        expert_reader *r = NULL;
        g_released = 0;
        size_t n = truncate ? im.size - 1 : im.size;
        expert_status s = expert_open_memory_owned(copy, n, NULL, count_release, copy, &r, &err);
        if (truncate) {
            CHECK(s != EXPERT_OK && r == NULL && g_released == 1);
            continue;
        }
        CHECK_OK(s);
        CHECK(g_released == 0);
        CHECK(expert_reader_owner(r, count_release) == copy);
        CHECK(expert_reader_owner(r, other_release) == NULL);
        CHECK_OK(expert_verify_full(r, NULL, &err));
        expert_close(r);
        CHECK(g_released == 1);
    }
    /* a plain memory reader has no owner; a gzip image is refused and released */
    expert_reader *r = NULL;
    CHECK_OK(expert_open_memory(im.data, im.size, NULL, &r, &err));
    CHECK(expert_reader_owner(r, count_release) == NULL);
    expert_close(r);
    uint8_t *gz = malloc(16);
    memcpy(gz, "\x1f\x8b\x08\0\0\0\0\0\0\3\0\0\0\0\0\0", 16);
    g_released = 0;
    CHECK(expert_open_memory_owned(gz, 16, NULL, count_release, gz, &r, &err) == EXPERT_E_BAD_MAGIC);
    CHECK(g_released == 1 && r == NULL && strstr(err.message, "expert_open_v1") != NULL);
    expert_image_free(&im);
    free_fixture(&f);
}

/* An allocator that counts: calls, and blocks live (atomics: decode and
 * verification allocate on worker threads). */
typedef struct counting {
    atomic_size_t calls, live;
} counting;
static void *count_malloc(size_t n, void *u)
{
    counting *c = u;
    atomic_fetch_add(&c->calls, 1);
    void *p = malloc(n);
    if (p != NULL)
        atomic_fetch_add(&c->live, 1);
    return p;
}
static void *count_realloc(void *p, size_t n, void *u)
{
    counting *c = u;
    atomic_fetch_add(&c->calls, 1);
    void *q = realloc(p, n);
    if (p == NULL && q != NULL)
        atomic_fetch_add(&c->live, 1);
    return q;
}
static void count_free(void *p, void *u)
{
    if (p != NULL)
        atomic_fetch_sub(&((counting *)u)->live, 1);
    free(p);
}

/* A reader's and a writer's allocator (options .allocator) take every
 * allocation of the context, worker threads included, and get all of it
 * back; the library's allocator sees none of it. struct_size other than 0
 * or sizeof is refused. */
static void test_context_allocator(void **state)
{
    (void)state;
    static counting lib_count, ctx_count;
    expert_allocator lib_a = {count_malloc, count_realloc, count_free, &lib_count};
    expert_allocator ctx_a = {count_malloc, count_realloc, count_free, &ctx_count};
    fixture f;
    build_fixture(&f, EXPERT_CODEC_SHUFFLE_ZSTD, EXPERT_DTYPE_F32, 99);
    char *dir = tmpdir_make("ctxalloc");
    char *path = path_join(dir, "ctx.expert");
    expert_set_allocator(&lib_a);
    expert_writer_options wo = {.alignment = 64, .frame_size = FRAME, .zstd_level = 3, .threads = 2,
                                .allocator = &ctx_a};
    CHECK_OK(write_expert(path, &wo, META_RT, f.s, NSEC, NULL));
    expert_image im;
    CHECK_OK(write_expert_image(&wo, META_RT, f.s, NSEC, NULL, &im));
    expert_open_options ro = {.threads = 2, .allocator = &ctx_a};
    expert_error err;
    for (int from_memory = 0; from_memory <= 1; from_memory++) {
        expert_reader *r = NULL;
        CHECK_OK(from_memory ? expert_open_memory(im.data, im.size, &ro, &r, &err)
                             : expert_open(path, &ro, &r, &err));
        CHECK_OK(expert_verify_full(r, NULL, &err));
        for (uint32_t i = 0; i < expert_section_count(r); i++) {
            expert_section_info si;
            CHECK_OK(expert_section(r, i, &si));
            void *buf = malloc(si.decoded_length ? (size_t)si.decoded_length : 1);
            CHECK_OK(expert_read(r, i, buf, (size_t)si.decoded_length, 0, &err));
            free(buf);
            if (si.type == EXPERT_SECTION_FILE) {
                void *file = NULL;
                size_t n = 0;
                CHECK_OK(expert_file_rebuild(r, i, &file, &n, &err));
                CHECK(n == si.decoded_length);
                ctx_a.free_fn(file, ctx_a.user);
            }
        }
        expert_close(r);
    }
    expert_image_free(&im);
    size_t lib_calls = atomic_load(&lib_count.calls);
    expert_set_allocator(NULL);
    CHECK(lib_calls == 0);
    CHECK(atomic_load(&ctx_count.calls) > 0);
    CHECK(atomic_load(&ctx_count.live) == 0);
    /* options from another header version are refused, not misread */
    expert_reader *r = NULL;
    expert_writer *w = NULL;
    expert_open_options bad_ro = {.struct_size = sizeof bad_ro - 8};
    expert_writer_options bad_wo = {.struct_size = sizeof bad_wo + 8};
    int fd_before = dup(0);
    close(fd_before);
    CHECK(expert_open(path, &bad_ro, &r, &err) == EXPERT_E_INVALID_ARGUMENT && r == NULL);
    int fd_after = dup(0); /* the refusal leaves no descriptor open */
    close(fd_after);
    CHECK(fd_after == fd_before);
    CHECK(strstr(err.message, "struct_size") != NULL);
    CHECK(expert_writer_open_memory(&bad_wo, 0, &w, &err) == EXPERT_E_INVALID_ARGUMENT && w == NULL);
    expert_open_options ok_ro = {.struct_size = sizeof ok_ro};
    CHECK_OK(expert_open(path, &ok_ro, &r, &err));
    expert_close(r);
    remove(path);
    free(path);
    tmpdir_remove(dir);
    free_fixture(&f);
}

/* Section names the format allows (checked by the reader as BAD_TOC, by
 * the writer up front). */
static void test_name_valid(void **state)
{
    (void)state;
    char big[EXPERT_MAX_NAME_BYTES + 1];
    memset(big, 'a', sizeof big);
    CHECK(expert_name_valid("a", 1));
    CHECK(expert_name_valid("caf\xc3\xa9", 5));
    CHECK(expert_name_valid(big, EXPERT_MAX_NAME_BYTES));
    CHECK(!expert_name_valid(big, EXPERT_MAX_NAME_BYTES + 1));
    CHECK(!expert_name_valid("", 0));
    CHECK(!expert_name_valid(NULL, 1));
    CHECK(!expert_name_valid("a\0b", 3));
    CHECK(!expert_name_valid("\xc3", 1));         /* truncated */
    CHECK(!expert_name_valid("\xc0\xaf", 2));     /* overlong */
    CHECK(!expert_name_valid("\xed\xa0\x80", 3)); /* surrogate */
    /* the writer refuses what the reader would */
    expert_writer *w = NULL;
    expert_error err;
    CHECK_OK(expert_writer_open_memory(NULL, 0, &w, &err));
    uint8_t b = 0;
    expert_section_desc d = {.name = "\xff", .name_length = 1, .type = EXPERT_SECTION_FILE,
                             .dtype = EXPERT_DTYPE_BYTES, .rank = 1, .dims = {1},
                             .layer = EXPERT_LAYER_NONE, .module = EXPERT_MODULE_NONE};
    CHECK(expert_writer_add(w, &d, &b, 1, &err) == EXPERT_E_INVALID_ARGUMENT);
    expert_writer_abort(w);
}

static void hex32(const char *hex, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* The worked example of spec §16 (written by an independent Python
 * implementation): the reader accepts it and the test's own hashing, index
 * and canonical layout reproduce it byte for byte. */
static void test_spec_example(void **state)
{
    (void)state;
    snprintf(ctx, sizeof ctx, "spec example");
    const char *dir = getenv("EXPERT_SPEC_DIR");
    if (!dir) {
        print_message("EXPERT_SPEC_DIR not set; skipping\n");
        skip();
    }
    char *path = path_join(dir, "example.expert");
    xb img;
    if (file_load(path, &img) != 0) {
        free(path);
        print_message("example.expert not found; skipping\n");
        skip();
    }
    CHECK(img.n == 1129);
    uint8_t h[32], want[32];
    sha256(img.p, img.n, h);
    hex32("e08d7adb48d4f03fb1fe0d68caa8e7d4a1ec6b07ffbd87c69a3ea09bc9d4fd34", want);
    CHECK(memcmp(h, want, 32) == 0);
    xm_file_sha(img.p, img.n, h);
    hex32("ce0e0db91076b12c303761d0bc522412890eb60b53bfcc84c13f6c6c9b278e8f", want);
    CHECK(memcmp(h, want, 32) == 0);
    CHECK(memcmp(img.p + H_FILE_SHA, want, 32) == 0);
    xm_structure_sha(img.p, img.n, h);
    hex32("7a3ce9987adeaf9ac9371d46da420c7cac0e0b2e9bd93a872fa1a9428e29c42c", want);
    CHECK(memcmp(h, want, 32) == 0);
    size_t ixl;
    uint8_t *ix = xm_index_of_file(img.p, img.n, &ixl);
    CHECK(ixl == 40 && memcmp(ix, img.p + 0x3E8, 40) == 0);
    free(ix);
    xm_model m;
    CHECK(xm_parse(img.p, img.n, &m) == 0);
    xb again = {0};
    xm_serialize(&m, NULL, &again);
    CHECK(again.n == img.n && memcmp(again.p, img.p, img.n) == 0);
    xb_free(&again);
    xm_free(&m);

    for (int mode = 0; mode < 3; mode++) {
        expert_reader *r = NULL;
        expert_error err;
        void *mem = NULL;
        expert_open_options o = {.flags = mode == 1 ? EXPERT_OPEN_NO_MMAP : 0, .threads = 1};
        if (mode == 2)
            CHECK_OK(open_mem(img.p, img.n, 1, &mem, &r, &err));
        else
            CHECK_OK(expert_open(path, &o, &r, &err));
        CHECK(expert_section_count(r) == 3);
        CHECK(strcmp(expert_name(r), "example") == 0);
        CHECK(strcmp(expert_package_version(r), "1.0.0") == 0);
        expert_module_info mi;
        CHECK(expert_module_count(r) == 1);
        CHECK_OK(expert_module(r, 0, &mi));
        CHECK(strcmp(mi.path, "model.layers.0.q_proj") == 0 && mi.r == 2 && mi.scale == 2.0);
        uint32_t idx;
        CHECK_OK(expert_find(r, "adapter_config.json", 19, &idx));
        CHECK(idx == 2);
        float a[4];
        CHECK_OK(expert_read(r, 0, a, sizeof a, 0, &err));
        CHECK(a[0] == 1.0f && a[1] == 2.0f && a[2] == 3.0f && a[3] == 4.0f);
        char cfg[69];
        CHECK_OK(expert_read(r, 2, cfg, sizeof cfg, 0, &err));
        CHECK(memcmp(cfg, "{\"lora_alpha\":4,", 15) == 0);
        CHECK_OK(expert_verify_full(r, NULL, &err));
        expert_close(r);
        free(mem);
    }
    xb_free(&img);
    free(path);
}

static int group_setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("rt");
    return g_dir ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tmpdir_remove(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_64),     cmocka_unit_test(test_raw_256),
        cmocka_unit_test(test_raw_4096),   cmocka_unit_test(test_zstd_64),
        cmocka_unit_test(test_zstd_256),   cmocka_unit_test(test_zstd_4096),
        cmocka_unit_test(test_shuffle_64), cmocka_unit_test(test_shuffle_256),
        cmocka_unit_test(test_shuffle_4096), cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file), cmocka_unit_test(test_concurrent_reads),
        cmocka_unit_test(test_spec_example), cmocka_unit_test(test_owned_memory),
        cmocka_unit_test(test_name_valid), cmocka_unit_test(test_context_allocator),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
