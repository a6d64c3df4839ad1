/*
 * test_v1_slow.c (suite "slow") — the realistic fixtures at full size:
 * expert-gen-sample directories (DoRA r=12/14/16 F32 on Qwen3-0.6B shapes,
 * 28 layers, 504 tensors, full tokenizer; plus IA3 and LoRA), packed by
 * expert-gen-v1 the way the old packer does, then:
 *   expert-cli convert v1 -> v2, extract -> every file identical (compared in
 *   code, byte for byte, against the generator's directory);
 *   every tensor bit-exact through the library, v1 and v2;
 *   expert-cli convert --to v1 -> tar -xzf -> every file identical.
 * By default one package (DoRA r=16); EXPERT_V1_SLOW_ALL=1 runs all five.
 * Needs $EXPERT_CLI, $EXPERT_GEN_SAMPLE and $EXPERT_GEN_V1; else SKIPPED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test_v1_common.h"

static const char *g_cli, *g_gen, *g_gen_v1;
static char *g_dir;

/* Every regular file of `ref` equals the same name under `dir`, and `dir`
 * holds nothing else. */
static void compare_dirs(const char *ref, const char *dir)
{
    DIR *d = opendir(ref);
    struct dirent *de;
    int n = 0;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *a = path_join(ref, de->d_name), *b = path_join(dir, de->d_name);
        size_t na = 0, nb = 0;
        uint8_t *da = read_all(a, &na), *db = read_all(b, &nb);
        if (da == NULL || db == NULL || na != nb || memcmp(da, db, na) != 0)
            fail_msg("%s differs from %s", b, a);
        free(da);
        free(db);
        free(a);
        free(b);
        n++;
    }
    closedir(d);
    assert_int_equal(dir_count(dir), n);
}

static void compare_tensors(expert_reader *r, const char *st_path)
{
    size_t n = 0;
    uint8_t *data = read_all(st_path, &n);
    expert_safetensors *st = NULL;
    expert_error e;
    assert_non_null(data);
    assert_int_equal(expert_safetensors_parse(data, n, &st, &e), EXPERT_OK);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (uint32_t i = 0; i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        uint32_t idx;
        expert_safetensors_tensor(st, i, &t);
        assert_int_equal(expert_find(r, t.name, strlen(t.name), &idx), EXPERT_OK);
        if (cap < t.data_length) {
            free(buf);
            cap = t.data_length;
            buf = malloc(cap);
        }
        assert_int_equal(expert_read(r, idx, buf, cap, 0, &e), EXPERT_OK);
        if (memcmp(buf, data + t.data_offset, t.data_length) != 0)
            fail_msg("tensor %s differs", t.name);
    }
    free(buf);
    expert_safetensors_free(st);
    free(data);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void one_fixture(const char *tag, const char *gen_args, int expect_tensors)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s-dir", tag);
    char *src = path_join(g_dir, buf);
    snprintf(buf, sizeof buf, "%s.v1.expert", tag);
    char *v1 = path_join(g_dir, buf);
    snprintf(buf, sizeof buf, "%s.v2.expert", tag);
    char *v2 = path_join(g_dir, buf);
    snprintf(buf, sizeof buf, "%s-x", tag);
    char *x = path_join(g_dir, buf);
    snprintf(buf, sizeof buf, "%s.back.expert", tag);
    char *back = path_join(g_dir, buf);
    snprintf(buf, sizeof buf, "%s-tar", tag);
    char *tx = path_join(g_dir, buf);

    assert_int_equal(run_cmd(NULL, "'%s' '%s' %s --quiet", g_gen, src, gen_args), 0);
    assert_int_equal(run_cmd(NULL, "'%s' '%s' -o '%s' -q", g_gen_v1, src, v1), 0);
    double t0 = now();
    assert_int_equal(run_cmd(NULL, "'%s' convert -q '%s' '%s'", g_cli, v1, v2), 0);
    double t1 = now();
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s'", g_cli, v2, x), 0);
    compare_dirs(src, x);

    char *stp = path_join(src, "adapter_model.safetensors");
    expert_reader *r1 = NULL, *r2 = NULL;
    expert_error e;
    assert_int_equal(expert_open_any(v1, NULL, NULL, &r1, &e), EXPERT_OK);
    assert_int_equal(expert_open_any(v2, NULL, NULL, &r2, &e), EXPERT_OK);
    assert_int_equal(expert_reader_source_format(r1), 1);
    assert_int_equal(expert_reader_source_format(r2), 2);
    assert_int_equal(expert_section_count(r1), expert_section_count(r2));
    assert_int_equal(expert_section_count(r2), (uint32_t)(expect_tensors + 10));
    compare_tensors(r1, stp);
    compare_tensors(r2, stp);
    assert_int_equal(expert_verify_full(r2, NULL, &e), EXPERT_OK);
    expert_close(r1);
    expert_close(r2);

    assert_int_equal(run_cmd(NULL, "'%s' convert -q --to v1 '%s' '%s'", g_cli, v2, back), 0);
    if (run_cmd(NULL, "tar --version >/dev/null 2>&1") != 0) {
        print_message("SKIPPED: tar not found\n");
    } else {
        assert_int_equal(run_cmd(NULL, "mkdir -p '%s' && tar -xzf '%s' -C '%s'", tx, back, tx), 0);
        compare_dirs(src, tx);
    }
    struct stat s1, s2;
    stat(v1, &s1);
    stat(v2, &s2);
    print_message("  %-10s v1 %lld bytes -> v2 %lld bytes (%.3fx), convert %.2f s\n", tag,
                  (long long)s1.st_size, (long long)s2.st_size,
                  (double)s1.st_size / (double)s2.st_size, t1 - t0);
    run_cmd(NULL, "rm -rf '%s' '%s' '%s' '%s' '%s' '%s'", src, v1, v2, x, back, tx);
    free(stp);
    free(src);
    free(v1);
    free(v2);
    free(x);
    free(back);
    free(tx);
}

static void test_full_size_fixtures(void **state)
{
    (void)state;
    if (g_cli == NULL || g_gen == NULL || g_gen_v1 == NULL) {
        print_message("SKIPPED: EXPERT_CLI, EXPERT_GEN_SAMPLE or EXPERT_GEN_V1 not set\n");
        skip();
    }
    /* One realistic full-size package by default; EXPERT_V1_SLOW_ALL=1 runs
     * every generated fixture (the three shipped DoRA ranks, IA3, LoRA). */
    one_fixture("dora-r16", "--type dora --rank 16 --dtype f32", 504);
    if (getenv("EXPERT_V1_SLOW_ALL") != NULL && strcmp(getenv("EXPERT_V1_SLOW_ALL"), "1") == 0) {
        one_fixture("dora-r12", "--type dora --rank 12 --dtype f32", 504);
        one_fixture("dora-r14", "--type dora --rank 14 --dtype f32", 504);
        one_fixture("ia3", "--type ia3", 168);
        one_fixture("lora-r8", "--type lora --rank 8", 336);
    }
}

static const char *env_exe(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && access(v, X_OK) == 0 ? v : NULL;
}

static int setup(void **state)
{
    (void)state;
    g_cli = env_exe("EXPERT_CLI");
    g_gen = env_exe("EXPERT_GEN_SAMPLE");
    g_gen_v1 = env_exe("EXPERT_GEN_V1");
    g_dir = tmpdir_make("slow");
    return g_dir == NULL;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_size_fixtures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
