/* Structural validation must not read a single byte of any section body
 * (spec §12.1). Proof by construction: the file is loaded into memory whose
 * pages inside section bodies are made PROT_NONE; expert_open_memory must
 * succeed, so it cannot have touched them (it would have crashed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "expert.h"

static const char *k_meta =
    "{\"format\":\"expert-v2\",\"name\":\"no-touch\",\"version\":\"1.0.0\",\"modules\":[]}";

static void build_file(const char *path, uint8_t codec)
{
    expert_error err = {0};
    expert_writer *w = NULL;
    expert_writer_options o = {.alignment = 4096, .frame_size = 65536};
    assert_int_equal(expert_writer_open(path, &o, &w, &err), EXPERT_OK);
    size_t n = 64 * 1024; /* 16 pages of F32 each */
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        v[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
    }
    for (int s = 0; s < 8; s++) {
        char name[64];
        snprintf(name, sizeof name, "base_model.model.model.layers.%d.mlp.up_proj.lora_A.weight", s);
        expert_section_desc d = {.name = name, .type = EXPERT_SECTION_TENSOR, .codec = codec,
                                 .dtype = EXPERT_DTYPE_F32, .rank = 2, .layer = (uint32_t)s,
                                 .module = EXPERT_MODULE_NONE, .dims = {64, 1024}};
        assert_int_equal(expert_writer_add(w, &d, v, n * sizeof *v, &err), EXPERT_OK);
    }
    free(v);
    assert_int_equal(expert_writer_set_metadata(w, k_meta, strlen(k_meta), &err), EXPERT_OK);
    assert_int_equal(expert_writer_finish(w, NULL, &err), EXPERT_OK);
}

static void check_codec(uint8_t codec)
{
    char path[] = "/tmp/expert-notouch-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    build_file(path, codec);

    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t mapped = (size + page - 1) / page * page;
    uint8_t *mem = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(fread(mem, 1, size, f), size);
    fclose(f);

    /* Find the section extents with a normal open, then fence them off. */
    expert_reader *r = NULL;
    expert_error err = {0};
    assert_int_equal(expert_open_memory(mem, size, NULL, &r, &err), EXPERT_OK);
    size_t fenced = 0;
    for (uint32_t i = 0; i < expert_section_count(r); i++) {
        expert_section_info s;
        assert_int_equal(expert_section(r, i, &s), EXPERT_OK);
        uint64_t first = (s.offset + page - 1) / page * page;
        uint64_t last = (s.offset + s.stored_length) / page * page;
        if (last > first) {
            assert_int_equal(mprotect(mem + first, (size_t)(last - first), PROT_NONE), 0);
            fenced += (size_t)(last - first);
        }
    }
    expert_close(r);
    /* Raw sections are whole pages; compressed ones still span several. */
    assert_true(fenced >= 8 * page);

    r = NULL;
    assert_int_equal(expert_open_memory(mem, size, NULL, &r, &err), EXPERT_OK);
    assert_int_equal(expert_section_count(r), 8);
    uint32_t idx = 0;
    const char *name = "base_model.model.model.layers.3.mlp.up_proj.lora_A.weight";
    assert_int_equal(expert_find(r, name, strlen(name), &idx), EXPERT_OK);
    expert_close(r);
    printf("structural open of a %s file touched none of %zu fenced section bytes\n",
           expert_codec_name(codec), fenced);
    munmap(mem, mapped);
    unlink(path);
}

static void test_raw(void **state) { (void)state; check_codec(EXPERT_CODEC_RAW); }
static void test_shuffle_zstd(void **state) { (void)state; check_codec(EXPERT_CODEC_SHUFFLE_ZSTD); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_shuffle_zstd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
