/*
 * test_outputs.c — what a rewrite leaves behind: a replaced file keeps its
 * mode, a new file gets 0666 & ~umask, an interrupted write leaves no name,
 * `sign` follows a symbolic link to its target and refuses files that do
 * not pass full validation (and leaves them as they were).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "craft.h"
#include "expert.h"

static char *g_dir;
static expert_private_key *g_key;
static expert_public_key *g_pub;

static const uint8_t k_data[4096] = {1, 2, 3};

static expert_status write_small(const char *path)
{
    tsec s[1];
    memset(s, 0, sizeof s);
    s[0].d = (expert_section_desc){"data.bin", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_ZSTD, EXPERT_DTYPE_BYTES, 1,
                                   0, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {sizeof k_data, 0, 0, 0}};
    s[0].data = k_data;
    s[0].len = sizeof k_data;
    return write_expert(path, NULL, META_MIN, s, 1, NULL);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("outputs");
    char *priv = path_join(g_dir, "k.pem"), *pub = path_join(g_dir, "k.pub");
    expert_error e;
    if (expert_keygen(priv, pub, &e) != EXPERT_OK || expert_private_key_load(priv, &g_key, &e) != EXPERT_OK ||
        expert_public_key_load(pub, &g_pub, &e) != EXPERT_OK)
        return -1;
    unlink(priv);
    unlink(pub);
    free(priv);
    free(pub);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    expert_private_key_free(g_key);
    expert_public_key_free(g_pub);
    tmpdir_remove(g_dir);
    return 0;
}

static void test_modes(void **state)
{
    (void)state;
    char *p = path_join(g_dir, "m.expert");
    mode_t old = umask(022);
    assert_int_equal(write_small(p), EXPERT_OK);
    assert_int_equal(mode_of(p), 0644); /* new: 0666 & ~umask */
    unlink(p);
    umask(077);
    assert_int_equal(write_small(p), EXPERT_OK);
    assert_int_equal(mode_of(p), 0600);
    umask(022);
    /* a replaced 0600 file stays 0600 (the umask would say 0644) */
    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(write_small(p), EXPERT_OK);
    assert_int_equal(mode_of(p), 0600);
    expert_error e;
    assert_int_equal(expert_sign_file(p, g_key, &e), EXPERT_OK);
    assert_int_equal(mode_of(p), 0600);
    assert_int_equal(chmod(p, 0640), 0);
    assert_int_equal(expert_sign_file(p, g_key, &e), EXPERT_OK);
    assert_int_equal(mode_of(p), 0640);
    umask(old);
    assert_int_equal(dir_count(g_dir), 1);
    unlink(p);
    free(p);
}

static void test_sign_through_symlink(void **state)
{
    (void)state;
    char *target = path_join(g_dir, "t.expert"), *link = path_join(g_dir, "l.expert");
    assert_int_equal(write_small(target), EXPERT_OK);
    assert_int_equal(symlink("t.expert", link), 0);
    expert_error e;
    assert_int_equal(expert_sign_file(link, g_key, &e), EXPERT_OK);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* the link is still a link ... */
    expert_reader *r = NULL;
    assert_int_equal(expert_open(target, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, g_pub, &e), EXPERT_OK); /* ... and its target is signed */
    expert_close(r);
    assert_int_equal(dir_count(g_dir), 2);
    unlink(link);
    unlink(target);
    free(link);
    free(target);
}

static void test_sign_validates_fully(void **state)
{
    (void)state;
    char *p = path_join(g_dir, "bad.expert");
    assert_int_equal(write_small(p), EXPERT_OK);
    cbuf b;
    assert_int_equal(file_load(p, &b), 0);
    /* a section byte changed, structure untouched: opens, but cannot verify */
    uint64_t off = rd64(toc_entry(b.p, 0) + T_OFFSET);
    b.p[off + rd64(toc_entry(b.p, 0) + T_STORED) / 2] ^= 0x40;
    craft_rehash(b.p, b.n); /* the file hash too: only the section digest is wrong */
    assert_int_equal(file_save(p, b.p, b.n), 0);
    expert_error e;
    expert_status s = expert_sign_file(p, g_key, &e);
    assert_true(s == EXPERT_E_SECTION_HASH_MISMATCH || s == EXPERT_E_DECODE_FAILED);
    cbuf after;
    assert_int_equal(file_load(p, &after), 0);
    assert_true(after.n == b.n && memcmp(after.p, b.p, b.n) == 0); /* not signed, not touched */
    assert_int_equal(dir_count(g_dir), 1);
    cbuf_free(&after);
    cbuf_free(&b);
    unlink(p);
    free(p);
}

/* kill -9 in the middle of a write: neither the destination nor any
 * temporary name exists afterwards (O_TMPFILE), or the destination is
 * untouched when it existed. */
static void test_kill_leaves_nothing(void **state)
{
    (void)state;
    for (int replace = 0; replace < 2; replace++) {
        char *p = path_join(g_dir, "k.expert");
        static const char old[] = "the old file";
        if (replace)
            assert_int_equal(file_save(p, old, sizeof old), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            expert_writer *w = NULL;
            expert_error e;
            if (expert_writer_open(p, NULL, &w, &e) != EXPERT_OK)
                _exit(2);
            expert_section_desc d = {"a.bin", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_RAW, EXPERT_DTYPE_BYTES, 1,
                                     0, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {sizeof k_data, 0, 0, 0}};
            expert_writer_add(w, &d, k_data, sizeof k_data, &e);
            raise(SIGKILL);
            _exit(3);
        }
        int st;
        waitpid(pid, &st, 0);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        assert_int_equal(dir_count(g_dir), replace ? 1 : 0);
        if (replace) {
            cbuf b;
            assert_int_equal(file_load(p, &b), 0);
            assert_true(b.n == sizeof old && memcmp(b.p, old, sizeof old) == 0);
            cbuf_free(&b);
            unlink(p);
        }
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_sign_through_symlink),
        cmocka_unit_test(test_sign_validates_fully),
        cmocka_unit_test(test_kill_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
