/*
 * test_v1.c — v1 tar.gz compatibility: auto-detected open (memory and
 * path), the same API as v2 (metadata, modules, lookup, FILE sections),
 * tensors bit-exact, files byte-exact, v1 -> v2 -> rebuilt files identical,
 * v2 -> v1 -> `tar -xzf` identical, sidecar, v1 signatures (including the
 * old tool's defect), limits, and the deprecation notice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_v1_common.h"

#define CHECK_OK(expr, e)                                                                         \
    do {                                                                                          \
        expert_status st_ = (expr);                                                               \
        if (st_ != EXPERT_OK)                                                                     \
            fail_msg("%s -> %s: %s (%s:%d)", #expr, expert_status_name(st_), (e).message,        \
                     __FILE__, __LINE__);                                                         \
    } while (0)

/* Every tensor of the package's safetensors file equals its section, and
 * sections carry the PEFT role, layer and module. */
static void check_tensors(expert_reader *r, pkg *p)
{
    pkg_file *sf = pkg_get(p, "adapter_model.safetensors");
    expert_safetensors *st = NULL;
    expert_error e;
    CHECK_OK(expert_safetensors_parse(sf->data, sf->size, &st, &e), e);
    assert_int_equal(expert_safetensors_count(st), (uint32_t)p->tensors);
    for (uint32_t i = 0; i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        uint32_t idx;
        expert_section_info si;
        expert_safetensors_tensor(st, i, &t);
        CHECK_OK(expert_find(r, t.name, strlen(t.name), &idx), e);
        CHECK_OK(expert_section(r, idx, &si), e);
        assert_int_equal(si.dtype, t.dtype);
        assert_int_equal(si.rank, t.rank);
        assert_memory_equal(si.dims, t.dims, sizeof si.dims);
        assert_int_not_equal(si.layer, EXPERT_LAYER_NONE);
        assert_true(si.module < expert_module_count(r));
        expert_module_info mi;
        CHECK_OK(expert_module(r, si.module, &mi), e);
        assert_int_equal(strncmp(mi.path, t.name, strlen(mi.path)), 0);
        uint8_t *buf = malloc(t.data_length + 1);
        CHECK_OK(expert_read(r, idx, buf, t.data_length, 0, &e), e);
        assert_memory_equal(buf, sf->data + t.data_offset, t.data_length);
        free(buf);
        if (si.codec == EXPERT_CODEC_RAW) {
            const void *v = NULL;
            size_t vl = 0;
            CHECK_OK(expert_view(r, idx, &v, &vl, 0, &e), e);
            assert_int_equal(vl, t.data_length);
            assert_int_equal((uintptr_t)v % 64, 0); /* spec §4.7, also for v1 images */
            assert_memory_equal(v, sf->data + t.data_offset, vl);
        }
    }
    expert_safetensors_free(st);
}

/* Every package file is recoverable byte-exact, and no other file exists. */
static void check_files(expert_reader *r, pkg *p)
{
    expert_error e;
    int seen = 0;
    for (uint32_t i = 0; i < expert_section_count(r); i++) {
        expert_section_info si;
        expert_section(r, i, &si);
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)si.name_length, si.name);
        pkg_file *f = pkg_get(p, name);
        if (f == NULL)
            fail_msg("unexpected file '%s'", name);
        void *d = NULL;
        size_t n = 0;
        CHECK_OK(expert_file_rebuild(r, i, &d, &n, &e), e);
        if (n != f->size || memcmp(d, f->data, n) != 0)
            fail_msg("file '%s' differs (%zu vs %zu bytes)", name, n, f->size);
        expert_v1_free(d);
        seen++;
    }
    assert_int_equal(seen, p->n);
}

static void test_open_memory_same_api(void **state)
{
    (void)state;
    pkg p;
    pkg_make(&p, PK_DORA, 2, 4, 11);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    expert_reader *r = NULL;
    expert_error e;
    CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
    free(tgz); /* the v1 reader keeps its own image */
    assert_int_equal(expert_reader_source_format(r), 1);
    assert_non_null(expert_reader_notice(r));
    assert_non_null(strstr(expert_reader_notice(r), "deprecated"));
    assert_string_equal(expert_name(r), "expert-test-dora");
    assert_string_equal(expert_package_version(r), "0.3.11");
    assert_int_equal(expert_module_count(r), (uint32_t)p.modules);
    /* 1 header + tensors + every other file */
    assert_int_equal(expert_section_count(r), (uint32_t)(1 + p.tensors + p.n - 1));
    for (uint32_t i = 0; i < expert_module_count(r); i++) {
        expert_module_info mi;
        CHECK_OK(expert_module(r, i, &mi), e);
        assert_string_equal(mi.type, "dora");
        assert_int_equal(mi.r, 4);
        assert_true(mi.alpha == 8.0 && mi.scale == 2.0);
        assert_true(mi.layer == 0 || mi.layer == 1);
    }
    /* FILE sections by their path, including a subdirectory */
    uint32_t idx;
    expert_section_info si;
    CHECK_OK(expert_find(r, "tests/cases.json", 16, &idx), e);
    CHECK_OK(expert_section(r, idx, &si), e);
    assert_int_equal(si.type, EXPERT_SECTION_FILE);
    CHECK_OK(expert_find(r, "adapter_model.safetensors", 25, &idx), e);
    CHECK_OK(expert_section(r, idx, &si), e);
    assert_int_equal(si.type, EXPERT_SECTION_SAFETENSORS_HEADER);
    assert_int_equal(expert_find(r, "nope", 4, &idx), EXPERT_E_NOT_FOUND);
    /* metadata: base model path kept, empty sha256 dropped, source manifest */
    size_t ml;
    const char *meta = expert_metadata_json(r, &ml);
    /* spec §9.5: base model name and sha256 verbatim, "" included */
    assert_non_null(strstr(meta, "\"base_model\":{\"name\":\"F:/Node/hivellm/expert/models/Qwen3-0.6B\","
                                 "\"sha256\":\"\"}"));
    assert_non_null(strstr(meta, "\"source_manifest\":\"manifest.json\""));
    assert_non_null(strstr(meta, "\"v1_source\""));
    /* info and entry order */
    expert_v1_info vi;
    CHECK_OK(expert_v1_info_get(r, &vi), e);
    assert_int_equal(vi.entry_count, (uint32_t)p.n);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_NOT_CHECKED);
    assert_int_equal(vi.is_signed, 0);
    for (int i = 0; i < p.n; i++)
        assert_string_equal(expert_v1_entry_name(r, (uint32_t)i), p.f[i].name);
    assert_null(expert_v1_entry_name(r, (uint32_t)p.n));
    check_tensors(r, &p);
    check_files(r, &p);
    CHECK_OK(expert_verify_full(r, NULL, &e), e);
    expert_close(r);
    pkg_free(&p);
}

static void test_lib_writer_and_kinds(void **state)
{
    (void)state;
    for (int kind = PK_DORA; kind <= PK_IA3; kind++) {
        pkg p;
        pkg_make(&p, (pkg_kind)kind, 3, 8, 100 + (uint64_t)kind);
        size_t n = 0;
        uint8_t *tgz = pkg_targz_lib(&p, &n); /* the library's own v1 writer */
        expert_reader *r = NULL;
        expert_error e;
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        free(tgz);
        assert_int_equal(expert_module_count(r), (uint32_t)p.modules);
        for (uint32_t i = 0; i < expert_module_count(r); i++) {
            expert_module_info mi;
            expert_module(r, i, &mi);
            if (kind == PK_IA3) {
                assert_string_equal(mi.type, "ia3");
                int down = strstr(mi.path, "down_proj") != NULL;
                assert_int_equal(mi.feedforward, down);
                assert_int_equal(down ? mi.in_features : mi.out_features, down ? 192 : mi.out_features);
            } else {
                assert_string_equal(mi.type, kind == PK_DORA ? "dora" : "lora");
                assert_int_equal(mi.r, 8);
            }
        }
        check_tensors(r, &p);
        check_files(r, &p);
        expert_close(r);
        pkg_free(&p);
    }
}

/* v1 -> v2 (zstd, shuffle+zstd) -> rebuilt files identical, tensors
 * bit-exact through the library for both formats. */
static void test_v1_to_v2_roundtrip(void **state)
{
    (void)state;
    char *dir = tmpdir_make("rt");
    pkg p;
    pkg_make(&p, PK_DORA, 2, 6, 21);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    char *in = path_join(dir, "in.expert"), *out = path_join(dir, "out.expert");
    assert_int_equal(file_save(in, tgz, n), 0);
    expert_reader *r1 = NULL, *r2 = NULL;
    expert_error e;
    memset(&e, 0, sizeof e);
    CHECK_OK(expert_open_any(in, NULL, NULL, &r1, &e), e);
    CHECK_OK(transcode_v2(r1, out, &e), e);
    CHECK_OK(expert_open_any(out, NULL, NULL, &r2, &e), e);
    assert_int_equal(expert_reader_source_format(r2), 2);
    assert_null(expert_reader_notice(r2));
    assert_int_equal(expert_v1_info_get(r2, &(expert_v1_info){0}), EXPERT_E_INVALID_ARGUMENT);
    CHECK_OK(expert_verify_full(r2, NULL, &e), e);
    check_tensors(r1, &p);
    check_tensors(r2, &p);
    check_files(r2, &p);
    /* same sections, same hashes */
    assert_int_equal(expert_section_count(r1), expert_section_count(r2));
    for (uint32_t i = 0; i < expert_section_count(r1); i++) {
        expert_section_info a, b;
        expert_section(r1, i, &a);
        expert_section(r2, i, &b);
        assert_int_equal(a.name_length, b.name_length);
        assert_memory_equal(a.name, b.name, a.name_length);
        assert_memory_equal(a.sha256, b.sha256, 32);
    }
    expert_close(r1);
    expert_close(r2);
    free(tgz);
    free(in);
    free(out);
    pkg_free(&p);
    tmpdir_remove(dir);
}

/* v2 -> v1 (rollback): the v1 output holds every original file byte-exact,
 * in the original entry order, opens again, and `tar -xzf` accepts it. */
static void test_v2_to_v1_rollback(void **state)
{
    (void)state;
    char *dir = tmpdir_make("rb");
    pkg p;
    pkg_make(&p, PK_LORA, 2, 5, 31);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    char *in = path_join(dir, "in.expert"), *v2 = path_join(dir, "v2.expert"), *v1 = path_join(dir, "back.expert");
    assert_int_equal(file_save(in, tgz, n), 0);
    expert_reader *r = NULL, *r2 = NULL, *r3 = NULL;
    expert_error e;
    memset(&e, 0, sizeof e);
    CHECK_OK(expert_open_any(in, NULL, NULL, &r, &e), e);
    CHECK_OK(transcode_v2(r, v2, &e), e);
    CHECK_OK(expert_open_any(v2, NULL, NULL, &r2, &e), e);
    CHECK_OK(expert_export_v1(r2, v1, NULL, &e), e);
    CHECK_OK(expert_open_any(v1, NULL, NULL, &r3, &e), e);
    assert_int_equal(expert_reader_source_format(r3), 1);
    for (int i = 0; i < p.n; i++) /* original archive order restored */
        assert_string_equal(expert_v1_entry_name(r3, (uint32_t)i), p.f[i].name);
    check_files(r3, &p);
    check_tensors(r3, &p);
    /* memory variant gives the same bytes */
    void *mem = NULL;
    size_t mem_n = 0;
    CHECK_OK(expert_export_v1_memory(r2, NULL, &mem, &mem_n, &e), e);
    size_t disk_n = 0;
    uint8_t *disk = read_all(v1, &disk_n);
    assert_int_equal(disk_n, mem_n);
    assert_memory_equal(disk, mem, mem_n);
    free(disk);
    expert_v1_free(mem);

    /* plain tar -xzf */
    if (system("tar --version >/dev/null 2>&1") != 0) {
        print_message("SKIPPED: tar not found\n");
    } else {
        char *xdir = path_join(dir, "x");
        char cmd[1024];
        mkdir(xdir, 0755);
        snprintf(cmd, sizeof cmd, "tar -xzf '%s' -C '%s'", v1, xdir);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(dir_count(xdir), p.n - 1 + 1); /* files + tests/ dir */
        for (int i = 0; i < p.n; i++) {
            char *fp = path_join(xdir, p.f[i].name);
            size_t fn = 0;
            uint8_t *fd = read_all(fp, &fn);
            if (fd == NULL || fn != p.f[i].size || memcmp(fd, p.f[i].data, fn) != 0)
                fail_msg("tar -xzf: '%s' differs", p.f[i].name);
            struct stat stt;
            assert_int_equal(stat(fp, &stt), 0);
            assert_int_equal(stt.st_mode & 0777, 0644);
            free(fd);
            free(fp);
        }
        free(xdir);
    }
    expert_close(r);
    expert_close(r2);
    expert_close(r3);
    free(tgz);
    free(in);
    free(v2);
    free(v1);
    pkg_free(&p);
    tmpdir_remove(dir);
}

static void test_sidecar(void **state)
{
    (void)state;
    char *dir = tmpdir_make("sc");
    pkg p;
    pkg_make(&p, PK_DORA, 1, 2, 41);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    char *in = path_join(dir, "pkg.expert"), *sc = path_join(dir, "pkg.expert.sha256");
    assert_int_equal(file_save(in, tgz, n), 0);
    uint8_t d[32];
    char line[128];
    expert_sha256(tgz, n, d);
    for (int i = 0; i < 32; i++)
        sprintf(line + 2 * i, "%02x", d[i]);
    strcat(line, "  pkg.expert\n");
    expert_reader *r = NULL;
    expert_error e;
    expert_v1_info vi;

    CHECK_OK(expert_open_any(in, NULL, NULL, &r, &e), e); /* absent */
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_ABSENT);
    assert_int_equal(vi.archive_bytes, n);
    assert_memory_equal(vi.archive_sha256, d, 32);
    expert_close(r);

    assert_int_equal(file_save(sc, line, strlen(line)), 0); /* match */
    CHECK_OK(expert_open_any(in, NULL, NULL, &r, &e), e);
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_MATCH);
    expert_close(r);

    line[0] = line[0] == '0' ? '1' : '0'; /* mismatch, unsigned: refused */
    assert_int_equal(file_save(sc, line, strlen(line)), 0);
    assert_int_equal(expert_open_any(in, NULL, NULL, &r, &e), EXPERT_E_FILE_HASH_MISMATCH);
    assert_null(r);
    assert_non_null(strstr(e.message, "sha256"));
    expert_v1_options o = {0, 0, 0, EXPERT_V1_IGNORE_SIDECAR, NULL};
    CHECK_OK(expert_open_v1(in, NULL, &o, &r, &e), e);
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_NOT_CHECKED);
    expert_close(r);

    assert_int_equal(file_save(sc, "not a digest\n", 13), 0); /* malformed */
    CHECK_OK(expert_open_any(in, NULL, NULL, &r, &e), e);
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_MALFORMED);
    expert_close(r);
    o.flags = EXPERT_V1_STRICT_SIDECAR;
    assert_int_equal(expert_open_v1(in, NULL, &o, &r, &e), EXPERT_E_FILE_HASH_MISMATCH);

    /* signed package whose sidecar predates signing (old tool defect 1) */
    uint8_t seed[32];
    char pub[73];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(file_save(sc, line, strlen(line)), 0);
    pkg_sign_v1(&p, seed, pub);
    free(tgz);
    tgz = pkg_targz(&p, &n);
    assert_int_equal(file_save(in, tgz, n), 0);
    CHECK_OK(expert_open_any(in, NULL, NULL, &r, &e), e);
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_STALE_SIGNED);
    assert_int_equal(vi.is_signed, 1);
    expert_close(r);
    assert_int_equal(expert_open_v1(in, NULL, &o, &r, &e), EXPERT_E_FILE_HASH_MISMATCH);

    /* expert_sign_file must never rewrite a v1 package */
    expert_private_key *k = NULL;
    char *priv = path_join(dir, "k.pem"), *pubp = path_join(dir, "k.pub");
    CHECK_OK(expert_keygen(priv, pubp, &e), e);
    CHECK_OK(expert_private_key_load(priv, &k, &e), e);
    assert_int_equal(expert_sign_file(in, k, &e), EXPERT_E_BAD_MAGIC);
    size_t after_n = 0;
    uint8_t *after = read_all(in, &after_n);
    assert_int_equal(after_n, n);
    assert_memory_equal(after, tgz, n);
    free(after);
    expert_private_key_free(k);
    free(priv);
    free(pubp);
    free(tgz);
    free(in);
    free(sc);
    pkg_free(&p);
    tmpdir_remove(dir);
}

static void test_signatures(void **state)
{
    (void)state;
    uint8_t seed[32], other[32];
    char pub[73], other_pub[73];
    for (int i = 0; i < 32; i++) {
        seed[i] = (uint8_t)(200 - i);
        other[i] = (uint8_t)(3 * i);
    }
    expert_error e;
    expert_v1_signature_info si;
    expert_reader *r = NULL;
    size_t n = 0;
    uint8_t *tgz;

    { /* unsigned */
        pkg p;
        pkg_make(&p, PK_DORA, 1, 2, 51);
        tgz = pkg_targz(&p, &n);
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        assert_int_equal(expert_v1_verify(r, NULL, &si, &e), EXPERT_E_UNSIGNED);
        assert_int_equal(si.status, EXPERT_V1_SIG_UNSIGNED);
        expert_close(r);
        free(tgz);
        pkg_free(&p);
    }
    { /* signed by the old tool: verifies once its defect is undone */
        pkg p;
        pkg_make(&p, PK_DORA, 1, 2, 52);
        pkg_sign_v1(&p, seed, pub);
        tgz = pkg_targz(&p, &n);
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        CHECK_OK(expert_v1_verify(r, NULL, &si, &e), e);
        assert_int_equal(si.status, EXPERT_V1_SIG_VALID_LEGACY);
        assert_int_equal(si.key_from_package, 1);
        assert_string_equal(si.pubkey, pub);
        assert_int_equal(si.files_signed, (uint32_t)p.n - 1);
        assert_int_equal(si.files_matched, si.files_signed);
        assert_non_null(strstr(si.detail, "defect"));
        CHECK_OK(expert_v1_verify(r, pub, &si, &e), e); /* trusted key */
        assert_int_equal(si.key_from_package, 0);
        CHECK_OK(expert_v1_verify(r, pub + 8, &si, &e), e); /* bare hex */
        {
            uint8_t s2[64], p2[32];
            CHECK_OK(expert_v1_sign_raw(other, "x", 1, s2, p2, &e), e);
            snprintf(other_pub, sizeof other_pub, "ed25519:");
            for (int i = 0; i < 32; i++)
                sprintf(other_pub + 8 + 2 * i, "%02x", p2[i]);
        }
        assert_int_equal(expert_v1_verify(r, other_pub, &si, &e), EXPERT_E_BAD_SIGNATURE);
        assert_int_equal(si.status, EXPERT_V1_SIG_INVALID);
        assert_int_equal(expert_v1_verify(r, "ed25519:zz", &si, &e), EXPERT_E_BAD_KEY);
        /* the converted v2 keeps the v1 signature verifiable */
        char *dir = tmpdir_make("sig");
        char *out = path_join(dir, "v2.expert");
        expert_reader *r2 = NULL;
        CHECK_OK(transcode_v2(r, out, &e), e);
        CHECK_OK(expert_open_any(out, NULL, NULL, &r2, &e), e);
        CHECK_OK(expert_v1_verify(r2, pub, &si, &e), e);
        assert_int_equal(si.status, EXPERT_V1_SIG_VALID_LEGACY);
        expert_close(r2);
        free(out);
        tmpdir_remove(dir);
        expert_close(r);
        free(tgz);

        /* manifest edited beyond the integrity block: the old tool's defect
         * makes it unverifiable, reported as such */
        pkg_file *m = pkg_get(&p, "manifest.json");
        uint8_t *copy = malloc(m->size);
        memcpy(copy, m->data, m->size);
        char *v = strstr((char *)m->data, "\"0.3.");
        v[3] = '9';
        tgz = pkg_targz(&p, &n);
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        assert_int_equal(expert_v1_verify(r, NULL, &si, &e), EXPERT_E_BAD_SIGNATURE);
        assert_int_equal(si.status, EXPERT_V1_SIG_LEGACY_DEFECT);
        assert_non_null(strstr(e.message, "known defect"));
        assert_int_equal(si.files_matched, si.files_signed - 1);
        expert_close(r);
        free(tgz);
        memcpy(m->data, copy, m->size);
        free(copy);

        /* a signed file changed */
        pkg_file *rd = pkg_get(&p, "README.md");
        rd->data[0] ^= 1;
        tgz = pkg_targz(&p, &n);
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        assert_int_equal(expert_v1_verify(r, NULL, &si, &e), EXPERT_E_BAD_SIGNATURE);
        assert_int_equal(si.status, EXPERT_V1_SIG_INVALID);
        assert_non_null(strstr(si.detail, "README.md"));
        expert_close(r);
        free(tgz);
        rd->data[0] ^= 1;

        /* a file added after signing */
        pkg_set(&p, "extra.txt", "hi", 2);
        tgz = pkg_targz(&p, &n);
        CHECK_OK(open_v1_mem(tgz, n, NULL, &r, &e), e);
        assert_int_equal(expert_v1_verify(r, NULL, &si, &e), EXPERT_E_BAD_SIGNATURE);
        assert_non_null(strstr(si.detail, "not covered"));
        expert_close(r);
        free(tgz);
        pkg_free(&p);
    }
}

static void test_limits_and_errors(void **state)
{
    (void)state;
    pkg p;
    pkg_make(&p, PK_DORA, 2, 4, 61);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    expert_reader *r = NULL;
    expert_error e;
    uint64_t total = 0;
    for (int i = 0; i < p.n; i++)
        total += p.f[i].size;
    expert_v1_options o = {total / 2, 0, 0, 0, NULL}; /* total stream limit below the package */
    assert_int_equal(open_v1_mem(tgz, n, &o, &r, &e), EXPERT_E_BAD_ARCHIVE);
    assert_non_null(strstr(e.message, "limit"));
    o = (expert_v1_options){0, 4096, 0, 0, NULL}; /* per-entry limit */
    assert_int_equal(open_v1_mem(tgz, n, &o, &r, &e), EXPERT_E_BAD_ARCHIVE);
    assert_non_null(strstr(e.message, "limits"));
    o = (expert_v1_options){0, 0, 3, 0, NULL}; /* entry count */
    assert_int_equal(open_v1_mem(tgz, n, &o, &r, &e), EXPERT_E_BAD_ARCHIVE);
    o = (expert_v1_options){0, 0, 0, 0, NULL};
    CHECK_OK(open_v1_mem(tgz, n, &o, &r, &e), e);
    expert_close(r);
    /* expert_open_v1_memory refuses a v2 file */
    assert_int_equal(expert_open_v1_memory("HLLMEXP\0", 8, NULL, NULL, &r, &e), EXPERT_E_BAD_ARCHIVE);
    /* a v2 reader has no v1 entries */
    assert_null(expert_v1_entry_name(NULL, 0));
    assert_int_equal(expert_reader_source_format(NULL), 0);
    free(tgz);
    pkg_free(&p);
}


/* Counts what the library allocates (expert_set_allocator). */
static size_t g_alloc_bytes;
static void *count_malloc(size_t n, void *u) { (void)u; g_alloc_bytes += n; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *u) { (void)u; g_alloc_bytes += n; return realloc(p, n); }
static void count_free(void *p, void *u) { (void)u; free(p); }

/* A plain expert_open is a v2 reader: a gzip input is BAD_MAGIC after its
 * first two bytes, with nothing inflated; v1 is opened on purpose (expert_open_v1, expert_open_any). */
static void test_plain_open_refuses_gzip(void **state)
{
    (void)state;
    pkg p;
    pkg_make(&p, PK_DORA, 4, 8, 77);
    size_t n = 0;
    uint8_t *tgz = pkg_targz(&p, &n);
    char *dir = tmpdir_make("plain"), *f = path_join(dir, "x.expert");
    assert_int_equal(file_save(f, tgz, n), 0);
    expert_reader *r = NULL;
    expert_error e;
    expert_allocator counting = {count_malloc, count_realloc, count_free, NULL};
    expert_set_allocator(&counting);
    g_alloc_bytes = 0;
    expert_status s1 = expert_open_memory(tgz, n, NULL, &r, &e);
    expert_status s2 = expert_open(f, NULL, &r, &e);
    size_t used = g_alloc_bytes;
    expert_set_allocator(NULL);
    assert_int_equal(s1, EXPERT_E_BAD_MAGIC);
    assert_int_equal(s2, EXPERT_E_BAD_MAGIC);
    assert_null(r);
    assert_non_null(strstr(e.message, "expert_open_v1"));
    if (used > 4096)
        fail_msg("refusing a gzip input allocated %zu bytes", used);
    /* opted in, the same bytes open as v1 */
    CHECK_OK(expert_open_any(f, NULL, NULL, &r, &e), e);
    assert_int_equal(expert_reader_source_format(r), 1);
    expert_close(r);
    free(f);
    tmpdir_remove(dir);
    free(tgz);
    pkg_free(&p);
}

/* Spec §9.5 mapping details: base model choice, hyper-parameters from
 * adapter_config.json (patterns as PEFT selects them), and configs that
 * contradict the tensors rejected rather than re-typed. */
static expert_status open_with(pkg *p, const char *file, const char *text,
                               const expert_v1_options *o, expert_reader **r, expert_error *e)
{
    if (file != NULL)
        pkg_set(p, file, text, strlen(text));
    size_t n = 0;
    uint8_t *tgz = pkg_targz(p, &n);
    expert_status s = o ? expert_open_v1_memory(tgz, n, NULL, o, r, e) : open_v1_mem(tgz, n, NULL, r, e);
    free(tgz);
    return s;
}

static void test_spec_mapping(void **state)
{
    (void)state;
    expert_reader *r = NULL;
    expert_error e;
    pkg p;
    size_t ml;
    pkg_make(&p, PK_DORA, 2, 4, 901);
    /* several base models: the caller must choose */
    pkg_file *m = pkg_get(&p, "manifest.json");
    char *text = calloc(1, m->size + 200);
    memcpy(text, m->data, m->size);
    char *at = strstr(text, "    }\n  ],");
    assert_non_null(at);
    char *tail = strdup(at + 5);
    strcpy(at + 5, ",\n    {\n      \"name\": \"Qwen/Qwen3-1.7B\",\n      \"adapters\": []\n    }");
    strcat(text, tail);
    free(tail);
    assert_int_equal(open_with(&p, "manifest.json", text, NULL, &r, &e), EXPERT_E_BAD_ARCHIVE);
    assert_non_null(strstr(e.message, "2 base models"));
    expert_v1_options o = {0, 0, 0, 0, "Qwen/Qwen3-1.7B"};
    assert_int_equal(open_with(&p, NULL, NULL, &o, &r, &e), EXPERT_OK);
    assert_non_null(strstr(expert_metadata_json(r, &ml), "\"base_model\":{\"name\":\"Qwen/Qwen3-1.7B\"}"));
    expert_close(r);
    o.base_model = "nope";
    assert_int_equal(open_with(&p, NULL, NULL, &o, &r, &e), EXPERT_E_BAD_ARCHIVE);
    free(text);
    pkg_free(&p);

    /* alpha_pattern / rank_pattern, PEFT's ".*\\.key$" rule, first match wins */
    pkg_make(&p, PK_LORA, 2, 4, 902);
    assert_int_equal(open_with(&p, "adapter_config.json",
                               "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,"
                               "\"alpha_pattern\":{\"layers\\\\.1\\\\.self_attn\\\\.q_proj\":32,\"q_proj\":16},"
                               "\"rank_pattern\":{\"v_proj\":4},\"use_rslora\":true}",
                               NULL, &r, &e),
                     EXPERT_OK);
    for (uint32_t i = 0; i < expert_module_count(r); i++) {
        expert_module_info mi;
        expert_module(r, i, &mi);
        double want = strstr(mi.path, "layers.1.self_attn.q_proj") ? 32
                      : strstr(mi.path, "q_proj")                   ? 16
                                                                    : 8;
        if (mi.alpha != want)
            fail_msg("%s: alpha %g, want %g", mi.path, mi.alpha, want);
        assert_int_equal(mi.rslora, 1);
    }
    expert_close(r);
    /* config contradicting the tensors */
    assert_int_equal(open_with(&p, "adapter_config.json", "{\"peft_type\":\"LORA\",\"r\":8}", NULL, &r, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    assert_non_null(strstr(e.message, "r = 8"));
    assert_int_equal(open_with(&p, "adapter_config.json",
                               "{\"peft_type\":\"LORA\",\"rank_pattern\":{\"k_proj\":2}}", NULL, &r, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    assert_int_equal(open_with(&p, "adapter_config.json", "{\"peft_type\":\"LORA\",\"use_dora\":true}",
                               NULL, &r, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    assert_non_null(strstr(e.message, "use_dora"));
    assert_int_equal(open_with(&p, "adapter_config.json", "{\"peft_type\":\"IA3\"}", NULL, &r, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    /* no config at all: alpha from the manifest adapter */
    pkg_file *cfg = pkg_get(&p, "adapter_config.json");
    free(cfg->data);
    *cfg = p.f[--p.n];
    assert_int_equal(open_with(&p, NULL, NULL, NULL, &r, &e), EXPERT_OK);
    expert_module_info mi;
    expert_module(r, 0, &mi);
    assert_true(mi.alpha == 8.0 && mi.rslora == 0);
    assert_null(strstr(expert_metadata_json(r, &ml), "\"adapter_config\""));
    expert_close(r);
    pkg_free(&p);

    /* IA3: feed-forward modules come from the config and must match the shapes */
    pkg_make(&p, PK_IA3, 1, 1, 903);
    assert_int_equal(open_with(&p, NULL, NULL, NULL, &r, &e), EXPERT_OK);
    expert_close(r);
    assert_int_equal(open_with(&p, "adapter_config.json",
                               "{\"peft_type\":\"IA3\",\"feedforward_modules\":\".*(down|up)_proj\"}",
                               NULL, &r, &e),
                     EXPERT_E_BAD_SAFETENSORS);
    assert_non_null(strstr(e.message, "feed-forward"));
    assert_int_equal(open_with(&p, "adapter_config.json",
                               "{\"peft_type\":\"IA3\",\"feedforward_modules\":\".*down_proj\"}", NULL,
                               &r, &e),
                     EXPERT_OK);
    expert_close(r);
    pkg_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_memory_same_api),
        cmocka_unit_test(test_lib_writer_and_kinds),
        cmocka_unit_test(test_v1_to_v2_roundtrip),
        cmocka_unit_test(test_v2_to_v1_rollback),
        cmocka_unit_test(test_sidecar),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_limits_and_errors),
        cmocka_unit_test(test_plain_open_refuses_gzip),
        cmocka_unit_test(test_spec_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
