/*
 * test_outputs.c — what a rewrite leaves behind: a replaced file keeps its
 * mode, a new file gets 0666 & ~umask, an interrupted write leaves no name,
 * `sign` follows a symbolic link to its target and refuses files that do
 * not pass full validation (and leaves them as they were); and, through
 * expert-cli, what a person or a pipeline sees: an extract that fails leaves
 * nothing, stored names cannot drive the terminal, and --require-signature
 * accepts only a signature checked against a key.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <fcntl.h>

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

/* What each case checks, for the reliability report; a case marks itself
 * passed on its last line, so a failed assertion leaves it unmarked. */
static struct {
    const char *test, *checks;
    bool passed;
} g_cases[] = {
    {"test_modes", "a rewrite keeps the file's mode (0600 stays 0600); a new file gets 0666 & ~umask", false},
    {"test_sign_through_symlink", "`sign` through a symbolic link signs the target and keeps the link", false},
    {"test_sign_validates_fully", "`sign` refuses a file whose section hash is wrong, with its class, and leaves "
                                  "it as it was", false},
    {"test_kill_leaves_nothing", "kill -9 during a write leaves no temporary name; an existing destination is "
                                 "untouched", false},
    {"test_extract_all_or_nothing", "an extract failing at its second file leaves no file, no hidden temporary "
                                    "and none of the directories it created (-o a/b/c too)", false},
    {"test_extract_many_files", "an extract of 40 files (more than one pass of the threads) writes each file's "
                                "bytes; one bad section in the last file leaves none of the 40", false},
    {"test_terminal_escaping", "names with ESC, CR, BEL, DEL, C1 CSI, U+202E and a path with an invalid byte "
                               "print escaped in `inspect` and error lines; `--json` stays exact", false},
    {"test_require_signature", "`validate --require-signature`: unsigned -> UNSIGNED, no key -> BAD_KEY, "
                               "another key -> BAD_SIGNATURE, only the signer's key passes", false},
};

static void passed(const char *test)
{
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        if (strcmp(g_cases[i].test, test) == 0)
            g_cases[i].passed = true;
}

/* Writes outputs.md for reports/reliability.md when the suite names a folder. */
static void write_report(void)
{
    const char *dir = getenv("EXPERT_RELIABILITY_DIR");
    if (!dir || !*dir)
        return;
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/outputs.md", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "### Outputs a person or a pipeline relies on (ref/tests/test_outputs.c)\n\n"
               "Rewrites, interrupted writes, extraction and terminal output, through the library and "
               "expert-cli.\n\n| case | checks | result |\n|---|---|---|\n");
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++)
        fprintf(f, "| %s | %s | %s |\n", g_cases[i].test + 5, g_cases[i].checks,
                g_cases[i].passed ? "passed" : "**FAILED**");
    fprintf(f, "\n");
    fclose(f);
}

static int teardown(void **state)
{
    (void)state;
    write_report();
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
    passed(__func__);
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
    passed(__func__);
}

static void test_sign_validates_fully(void **state)
{
    (void)state;
    char *p = path_join(g_dir, "bad.expert");
    assert_int_equal(write_small(p), EXPERT_OK);
    xb b;
    assert_int_equal(file_load(p, &b), 0);
    /* a section byte changed, structure untouched: opens, but cannot verify */
    uint64_t off = rd64(toc_entry(b.p, 0) + T_OFFSET);
    b.p[off + rd64(toc_entry(b.p, 0) + T_STORED) / 2] ^= 0x40;
    xm_rehash(b.p, b.n); /* the file hash too: only the section digest is wrong */
    assert_int_equal(file_save(p, b.p, b.n), 0);
    expert_error e;
    expert_status s = expert_sign_file(p, g_key, &e);
    assert_true(s == EXPERT_E_SECTION_HASH_MISMATCH || s == EXPERT_E_DECODE_FAILED);
    xb after;
    assert_int_equal(file_load(p, &after), 0);
    assert_true(after.n == b.n && memcmp(after.p, b.p, b.n) == 0); /* not signed, not touched */
    assert_int_equal(dir_count(g_dir), 1);
    xb_free(&after);
    xb_free(&b);
    unlink(p);
    free(p);
    passed(__func__);
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
            xb b;
            assert_int_equal(file_load(p, &b), 0);
            assert_true(b.n == sizeof old && memcmp(b.p, old, sizeof old) == 0);
            xb_free(&b);
            unlink(p);
        }
        free(p);
    }
    passed(__func__);
}

/* ------------------------------------------------------- through the CLI */

static const char *g_cli;

static const uint8_t k_other[8192] = {9, 8, 7};

/* Writes sections named names[0..n) (raw FILE sections, distinct bytes). */
static expert_status write_named(const char *path, const char *const *names, size_t n,
                                 const expert_private_key *key)
{
    tsec s[48];
    assert_true(n <= 48);
    memset(s, 0, sizeof s);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *data = i % 2 ? k_other : k_data;
        size_t len = i % 2 ? sizeof k_other : sizeof k_data;
        s[i].d = (expert_section_desc){names[i], 0, EXPERT_SECTION_FILE, EXPERT_CODEC_RAW, EXPERT_DTYPE_BYTES, 1,
                                       0, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {len, 0, 0, 0}};
        s[i].d.name_length = (uint16_t)strlen(names[i]);
        s[i].data = data;
        s[i].len = len;
    }
    return write_expert(path, NULL, META_MIN, s, n, key);
}

/* TOC index of the section called name. */
static uint32_t index_of(const char *path, const char *name)
{
    expert_reader *r = NULL;
    expert_error e;
    uint32_t i = 0;
    assert_int_equal(expert_open(path, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_find(r, name, strlen(name), &i), EXPERT_OK);
    expert_close(r);
    return i;
}

/* Flips one stored byte of section i; the file hash is recomputed, so only
 * the section's own digest is wrong (found when it is decoded). */
static void corrupt_section(const char *path, uint32_t i)
{
    xb b;
    assert_int_equal(file_load(path, &b), 0);
    uint64_t off = rd64(toc_entry(b.p, i) + T_OFFSET);
    b.p[off + rd64(toc_entry(b.p, i) + T_STORED) / 2] ^= 0x40;
    xm_rehash(b.p, b.n);
    assert_int_equal(file_save(path, b.p, b.n), 0);
    xb_free(&b);
}

/* An extract that fails at its second file leaves no file, no hidden
 * temporary and no directory it created; an existing directory keeps just
 * what it had. */
static void test_extract_all_or_nothing(void **state)
{
    (void)state;
    char *d = tmpdir_make("extract");
    char *f = path_join(d, "x.expert"), *fresh = path_join(d, "fresh"), *kept = path_join(d, "kept"),
         *good = path_join(d, "good"), *keep = path_join(kept, "keep");
    static const char *const names[] = {"a.txt", "sub/b.txt"};
    assert_int_equal(write_named(f, names, 2, NULL), EXPERT_OK);
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s'", g_cli, f, good), 0);
    assert_int_equal(dir_count(good), 2); /* a.txt, sub */
    uint32_t a = index_of(f, "a.txt"), b = index_of(f, "sub/b.txt");
    corrupt_section(f, a > b ? a : b); /* the file written second */

    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' 2>/dev/null", g_cli, f, fresh),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_false(file_exists(fresh));
    /* -o fresh/x/y/: none of the three directories it created stays */
    char *deep = path_join(fresh, "x/y/");
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' 2>/dev/null", g_cli, f, deep),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_false(file_exists(fresh));
    free(deep);

    assert_int_equal(mkdir(kept, 0755), 0);
    assert_int_equal(file_save(keep, "mine", 4), 0);
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' 2>/dev/null", g_cli, f, kept),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(dir_count(kept), 1);
    assert_true(file_exists(keep));
    /* under an existing directory, only what the extract created goes */
    char *under = path_join(kept, "new/deeper");
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' 2>/dev/null", g_cli, f, under),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(dir_count(kept), 1);
    assert_true(file_exists(keep));
    free(under);

    free(keep);
    free(good);
    free(kept);
    free(fresh);
    free(f);
    tmpdir_remove(d);
    passed(__func__);
}

/* Extract takes the files in passes of a few dozen, their sections shared
 * by the threads: every file gets its own bytes, and a failure in the last
 * pass removes the files the first pass already wrote. */
static void test_extract_many_files(void **state)
{
    (void)state;
    enum { N = 40 };
    char *d = tmpdir_make("extract-many");
    char *f = path_join(d, "x.expert"), *good = path_join(d, "good"), *bad = path_join(d, "bad");
    char names[N][16];
    const char *ptr[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "d%d/f%02d.bin", i % 3, i);
        ptr[i] = names[i];
    }
    assert_int_equal(write_named(f, ptr, N, NULL), EXPERT_OK);
    for (unsigned threads = 1; threads <= 3; threads += 2) {
        assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' --threads %u --force", g_cli, f,
                                 good, threads), 0);
        for (int i = 0; i < N; i++) {
            char *p = path_join(good, names[i]);
            xb b;
            assert_int_equal(file_load(p, &b), 0);
            const uint8_t *want = i % 2 ? k_other : k_data;
            size_t len = i % 2 ? sizeof k_other : sizeof k_data;
            assert_int_equal(b.n, len);
            assert_memory_equal(b.p, want, len);
            xb_free(&b);
            free(p);
        }
    }
    uint32_t last = 0; /* the file extracted last: in the second pass */
    for (int i = 0; i < N; i++) {
        uint32_t k = index_of(f, names[i]);
        last = k > last ? k : last;
    }
    corrupt_section(f, last);
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s' --threads 2 2>/dev/null", g_cli, f, bad),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_false(file_exists(bad));
    free(bad);
    free(good);
    free(f);
    tmpdir_remove(d);
    passed(__func__);
}

static void assert_no_byte(const xb *b, const char *bytes, const char *what)
{
    for (const char *c = bytes; *c; c++)
        if (memchr(b->p, *c, b->n) != NULL)
            fail_msg("%s holds the raw byte 0x%02X", what, (unsigned char)*c);
}

static int holds(const xb *b, const char *text)
{
    size_t n = strlen(text);
    for (size_t i = 0; i + n <= b->n; i++)
        if (memcmp(b->p + i, text, n) == 0)
            return 1;
    return 0;
}

/* Names holding ESC sequences, CR, BEL, DEL, a C1 CSI, an invalid byte and
 * U+202E (right-to-left override) reach the terminal escaped, in listings
 * and in error messages; --json keeps them as exact JSON. */
static void test_terminal_escaping(void **state)
{
    (void)state;
    char *d = tmpdir_make("escape");
    char *f = path_join(d, "e.expert"), *out = path_join(d, "out.txt"), *errf = path_join(d, "err.txt"),
         *json = path_join(d, "out.json");
    static const char *const names[] = {
        "LICENSE\x1b[2K\x1b[1G\x1b[8m", "cr\rOK full", "bel\a\x7f", "csi\302\23331m",
        "rtl\xe2\x80\xaetxt.exe",
    };
    assert_int_equal(write_named(f, names, 5, NULL), EXPERT_OK);
    static const char raw[] = "\x1b\r\a\x7f\xff";
    xb b;

    assert_int_equal(run_cmd(out, "'%s' inspect '%s'", g_cli, f), 0);
    assert_int_equal(file_load(out, &b), 0);
    assert_no_byte(&b, raw, "inspect");
    assert_false(holds(&b, "\xe2\x80\xae"));
    assert_false(holds(&b, "\xc2\x9b"));
    assert_true(holds(&b, "LICENSE\\x1B[2K\\x1B[1G\\x1B[8m"));
    assert_true(holds(&b, "cr\\x0DOK full"));
    assert_true(holds(&b, "bel\\x07\\x7F"));
    assert_true(holds(&b, "csi\\u{009B}31m"));
    assert_true(holds(&b, "rtl\\u{202E}txt.exe"));
    xb_free(&b);

    /* names must be UTF-8 (the reader refuses others), but a path need not be */
    char *odd = path_join(d, "bad\xff.expert");
    assert_int_equal(rename(f, odd), 0);
    assert_int_equal(run_cmd(out, "'%s' inspect '%s'", g_cli, odd), 0);
    assert_int_equal(file_load(out, &b), 0);
    assert_no_byte(&b, raw, "inspect of an odd path");
    assert_true(holds(&b, "bad\\xFF.expert"));
    xb_free(&b);
    assert_int_equal(rename(odd, f), 0);
    free(odd);

    assert_int_equal(run_cmd(json, "'%s' inspect --json '%s'", g_cli, f), 0);
    assert_int_equal(file_load(json, &b), 0);
    assert_no_byte(&b, "\x1b\r\a", "inspect --json");
    /* JSON allows either case of the hex digits */
    assert_true(holds(&b, "\"LICENSE\\u001b[2K\\u001b[1G\\u001b[8m\"") ||
                holds(&b, "\"LICENSE\\u001B[2K\\u001B[1G\\u001B[8m\""));
    assert_true(holds(&b, "rtl\xe2\x80\xaetxt.exe")); /* valid UTF-8 stays as it is in JSON */
    xb_free(&b);

    /* the error line names the section: escaped too */
    corrupt_section(f, index_of(f, names[0]));
    assert_int_equal(run_cmd(NULL, "'%s' validate '%s' 2>'%s'", g_cli, f, errf),
                     EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(file_load(errf, &b), 0);
    assert_no_byte(&b, raw, "validate's error");
    assert_true(holds(&b, "SECTION_HASH_MISMATCH"));
    assert_true(holds(&b, "LICENSE\\x1B[2K"));
    xb_free(&b);

    free(json);
    free(errf);
    free(out);
    free(f);
    tmpdir_remove(d);
    passed(__func__);
}

/* validate --require-signature passes only a signature checked against a
 * key: unsigned -> UNSIGNED, signed without --key -> BAD_KEY, another
 * signer's key -> BAD_SIGNATURE. */
static void test_require_signature(void **state)
{
    (void)state;
    char *d = tmpdir_make("require");
    char *u = path_join(d, "u.expert"), *sgn = path_join(d, "s.expert"), *priv = path_join(d, "k.pem"),
         *pub = path_join(d, "k.pub"), *priv2 = path_join(d, "k2.pem"), *pub2 = path_join(d, "k2.pub");
    expert_error e;
    expert_private_key *key = NULL;
    assert_int_equal(expert_keygen(priv, pub, &e), EXPERT_OK);
    assert_int_equal(expert_keygen(priv2, pub2, &e), EXPERT_OK);
    assert_int_equal(expert_private_key_load(priv, &key, &e), EXPERT_OK);
    static const char *const names[] = {"a.txt"};
    assert_int_equal(write_named(u, names, 1, NULL), EXPERT_OK);
    assert_int_equal(write_named(sgn, names, 1, key), EXPERT_OK);
    expert_private_key_free(key);

    const char *q = ">/dev/null 2>&1";
    assert_int_equal(run_cmd(NULL, "'%s' validate '%s' %s", g_cli, sgn, q), 0); /* intact, not authenticated */
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature '%s' %s", g_cli, sgn, q),
                     EXPERT_E_BAD_KEY);
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature --key '%s' '%s' %s", g_cli, pub, sgn, q),
                     0);
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature --key '%s' '%s' %s", g_cli, pub2, sgn, q),
                     EXPERT_E_BAD_SIGNATURE);
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature '%s' %s", g_cli, u, q), EXPERT_E_UNSIGNED);
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature --key '%s' '%s' %s", g_cli, pub, u, q),
                     EXPERT_E_UNSIGNED);
    assert_int_equal(run_cmd(NULL, "'%s' validate --require-signature --repeat 2 '%s' %s", g_cli, u, q),
                     EXPERT_E_UNSIGNED);
    assert_int_not_equal(run_cmd(NULL, "'%s' validate --require-signature --level access '%s' %s", g_cli, sgn, q),
                         0);

    free(pub2);
    free(priv2);
    free(pub);
    free(priv);
    free(sgn);
    free(u);
    tmpdir_remove(d);
    passed(__func__);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_sign_through_symlink),
        cmocka_unit_test(test_sign_validates_fully),
        cmocka_unit_test(test_kill_leaves_nothing),
        cmocka_unit_test(test_extract_all_or_nothing), cmocka_unit_test(test_extract_many_files),
        cmocka_unit_test(test_terminal_escaping),
        cmocka_unit_test(test_require_signature),
    };
    g_cli = getenv("EXPERT_CLI");
    if (g_cli == NULL) {
        fprintf(stderr, "EXPERT_CLI is not set (run through meson test)\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
