/*
 * test_determinism.c — byte-reproducible output (same inputs, and 1 vs 4
 * compression threads, give identical files) and the atomic write contract:
 * nothing appears at the target path until finish succeeds, abort and failed
 * finishes leave no file and no temporary file, and finish replaces an
 * existing file atomically (rename: readers of the old file keep the old
 * bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "craft.h"

#define NS 5
static uint8_t *g_data[NS];
static size_t g_len[NS] = {300000, 70000, 4096, 0, 1};
static tsec g_s[NS];

static int setup(void **state)
{
    (void)state;
    prng r = {31337};
    for (int i = 0; i < NS; i++) {
        g_data[i] = malloc(g_len[i] + 1);
        prng_fill(&r, g_data[i], g_len[i]);
        /* make it compressible: clear the high nibble of every other byte */
        for (size_t k = 0; k < g_len[i]; k += 2)
            g_data[i][k] &= 0x0F;
    }
    static const char *names[NS] = {"big", "mid", "small", "empty", "one"};
    static const uint8_t codecs[NS] = {EXPERT_CODEC_SHUFFLE_ZSTD, EXPERT_CODEC_ZSTD,
                                       EXPERT_CODEC_RAW, EXPERT_CODEC_ZSTD, EXPERT_CODEC_RAW};
    for (int i = 0; i < NS; i++) {
        g_s[i].d.name = names[i];
        g_s[i].d.type = EXPERT_SECTION_TENSOR;
        g_s[i].d.codec = codecs[i];
        g_s[i].d.dtype = EXPERT_DTYPE_F32;
        g_s[i].d.rank = 1;
        g_s[i].d.dims[0] = g_len[i] / 4;
        g_s[i].d.layer = (uint32_t)i;
        g_s[i].d.module = EXPERT_MODULE_NONE;
        g_s[i].data = g_data[i];
        g_s[i].len = g_len[i] / 4 * 4;
    }
    g_s[4].d.dtype = EXPERT_DTYPE_U8; /* 1 element */
    g_s[4].d.dims[0] = 1;
    g_s[4].len = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NS; i++)
        free(g_data[i]);
    return 0;
}

static void write_with(const char *path, unsigned threads, uint32_t align)
{
    expert_writer_options wo = {.alignment = align, .frame_size = 65536, .zstd_level = 3, .threads = threads};
    assert_int_equal(write_expert(path, &wo, NULL, g_s, NS, NULL), EXPERT_OK);
}

static void test_reproducible(void **state)
{
    (void)state;
    char *dir = tmpdir_make("det");
    char *a = path_join(dir, "a.expert"), *b = path_join(dir, "b.expert"),
         *c = path_join(dir, "c.expert");
    static const uint32_t aligns[] = {64, 4096};
    for (size_t k = 0; k < 2; k++) {
        write_with(a, 1, aligns[k]);
        write_with(b, 1, aligns[k]);
        write_with(c, 4, aligns[k]);
        xb ba, bb, bc;
        assert_int_equal(file_load(a, &ba), 0);
        assert_int_equal(file_load(b, &bb), 0);
        assert_int_equal(file_load(c, &bc), 0);
        assert_int_equal(ba.n, bb.n);
        assert_memory_equal(ba.p, bb.p, ba.n);
        assert_int_equal(ba.n, bc.n);
        assert_memory_equal(ba.p, bc.p, ba.n);
        /* and the file is valid */
        expert_reader *r;
        expert_error e;
        assert_int_equal(expert_open(c, NULL, &r, &e), EXPERT_OK);
        assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
        expert_close(r);
        xb_free(&ba);
        xb_free(&bb);
        xb_free(&bc);
    }
    assert_int_equal(dir_count(dir), 3);
    free(a);
    free(b);
    free(c);
    tmpdir_remove(dir);
}

static void test_abort_leaves_nothing(void **state)
{
    (void)state;
    char *dir = tmpdir_make("abort");
    char *path = path_join(dir, "x.expert");
    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    for (int i = 0; i < NS; i++)
        assert_int_equal(expert_writer_add(w, &g_s[i].d, g_s[i].data, g_s[i].len, &e), EXPERT_OK);
    assert_false(file_exists(path)); /* nothing at the target before finish */
    expert_writer_abort(w);
    assert_false(file_exists(path));
    assert_int_equal(dir_count(dir), 0);
    /* abort right after open, and abort(NULL) */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    expert_writer_abort(w);
    expert_writer_abort(NULL);
    assert_int_equal(dir_count(dir), 0);
    free(path);
    tmpdir_remove(dir);
}

static void test_failed_finish_leaves_nothing(void **state)
{
    (void)state;
    char *dir = tmpdir_make("ffin");
    char *path = path_join(dir, "x.expert");
    expert_writer *w = NULL;
    expert_error e;

    /* no metadata */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    assert_int_equal(expert_writer_add(w, &g_s[2].d, g_s[2].data, g_s[2].len, &e), EXPERT_OK);
    assert_int_not_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    assert_false(file_exists(path));
    assert_int_equal(dir_count(dir), 0);

    /* metadata rejected, then finish */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    assert_int_equal(expert_writer_add(w, &g_s[2].d, g_s[2].data, g_s[2].len, &e), EXPERT_OK);
    const char *bad = "{\"format\":\"expert-v1\"}";
    assert_int_equal(expert_writer_set_metadata(w, bad, strlen(bad), &e), EXPERT_E_BAD_METADATA);
    assert_int_not_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    assert_int_equal(dir_count(dir), 0);

    /* a section whose dims do not match its length is refused at add */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    expert_section_desc d = g_s[2].d;
    d.dims[0] += 1;
    assert_int_not_equal(expert_writer_add(w, &d, g_s[2].data, g_s[2].len, &e), EXPERT_OK);
    expert_writer_abort(w);
    assert_int_equal(dir_count(dir), 0);

    /* a duplicate name: refused at add or at finish, never written */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    assert_int_equal(expert_writer_add(w, &g_s[2].d, g_s[2].data, g_s[2].len, &e), EXPERT_OK);
    expert_status st = expert_writer_add(w, &g_s[2].d, g_s[2].data, g_s[2].len, &e);
    if (st == EXPERT_OK) {
        assert_int_equal(expert_writer_set_metadata(w, META_MIN, strlen(META_MIN), &e), EXPERT_OK);
        assert_int_not_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    } else {
        assert_int_equal(st, EXPERT_E_DUPLICATE_NAME);
        expert_writer_abort(w);
    }
    assert_false(file_exists(path));
    assert_int_equal(dir_count(dir), 0);

    /* a module index with no modules: refused at add or finish */
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    d = g_s[2].d;
    d.module = 0;
    st = expert_writer_add(w, &d, g_s[2].data, g_s[2].len, &e);
    if (st == EXPERT_OK) {
        assert_int_equal(expert_writer_set_metadata(w, META_MIN, strlen(META_MIN), &e), EXPERT_OK);
        assert_int_not_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    } else {
        expert_writer_abort(w);
    }
    assert_false(file_exists(path));
    assert_int_equal(dir_count(dir), 0);

    /* a directory that does not exist */
    char *nowhere = path_join(dir, "no/such/dir/x.expert");
    assert_int_not_equal(expert_writer_open(nowhere, NULL, &w, &e), EXPERT_OK);
    free(nowhere);
    /* invalid options */
    expert_writer_options wo = {.alignment = 128, .frame_size = 0, .zstd_level = 0, .threads = 0};
    assert_int_equal(expert_writer_open(path, &wo, &w, &e), EXPERT_E_INVALID_ARGUMENT);
    wo = (expert_writer_options){.alignment = 64, .frame_size = 1000, .zstd_level = 0, .threads = 0};
    assert_int_equal(expert_writer_open(path, &wo, &w, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_int_equal(dir_count(dir), 0);
    free(path);
    tmpdir_remove(dir);
}

static void test_replace_existing_atomically(void **state)
{
    (void)state;
    char *dir = tmpdir_make("repl");
    char *path = path_join(dir, "x.expert");
    static const char old[] = "old content, not an expert file";
    assert_int_equal(file_save(path, old, sizeof old), 0);
    struct stat st0;
    assert_int_equal(stat(path, &st0), 0);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);

    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    for (int i = 0; i < NS; i++)
        assert_int_equal(expert_writer_add(w, &g_s[i].d, g_s[i].data, g_s[i].len, &e), EXPERT_OK);
    assert_int_equal(expert_writer_set_metadata(w, META_MIN, strlen(META_MIN), &e), EXPERT_OK);
    /* before finish the target is untouched */
    xb cur;
    assert_int_equal(file_load(path, &cur), 0);
    assert_int_equal(cur.n, sizeof old);
    assert_memory_equal(cur.p, old, sizeof old);
    xb_free(&cur);
    assert_int_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);

    /* the path now names a new, valid file; the old inode is unchanged */
    struct stat st1;
    assert_int_equal(stat(path, &st1), 0);
    assert_true(st1.st_ino != st0.st_ino);
    char buf[sizeof old];
    assert_int_equal(pread(fd, buf, sizeof buf, 0), (ssize_t)sizeof old);
    assert_memory_equal(buf, old, sizeof old);
    close(fd);
    expert_reader *r;
    assert_int_equal(expert_open(path, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    expert_close(r);
    assert_int_equal(dir_count(dir), 1); /* no temporary file left */
    /* the new file has the default permissions of a created file, not 0600-only
     * surprises: at least readable by the owner */
    assert_true((st1.st_mode & S_IRUSR) != 0);

    /* a failed finish does not touch the existing file */
    xb good;
    assert_int_equal(file_load(path, &good), 0);
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    assert_int_not_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK); /* no metadata */
    xb again;
    assert_int_equal(file_load(path, &again), 0);
    assert_int_equal(again.n, good.n);
    assert_memory_equal(again.p, good.p, good.n);
    assert_int_equal(dir_count(dir), 1);
    xb_free(&again);
    xb_free(&good);
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_failed_finish_leaves_nothing),
        cmocka_unit_test(test_replace_existing_atomically),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
