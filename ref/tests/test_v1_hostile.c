/*
 * test_v1_hostile.c — hostile v1 archives, each crafted byte by byte (tar
 * headers by hand, gzip by zlib), must be refused with their class and a
 * message naming the problem, through both expert_open (path) and
 * expert_open_memory, and nothing may appear on disk: the reader never
 * extracts (the directory holding the input is checked after every open).
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

#include "test_v1_common.h"

typedef struct hcase {
    const char *label;
    expert_status want;
    const char *keyword; /* must appear in the message */
    uint8_t *data;
    size_t size;
    expert_v1_options opt;
    int use_opt;
} hcase;

static char *g_dir;

static void run_case(hcase *c)
{
    char *path = path_join(g_dir, "hostile.expert");
    assert_int_equal(file_save(path, c->data, c->size), 0);
    expert_reader *r = NULL;
    expert_error e;
    memset(&e, 0, sizeof e);
    expert_status s = c->use_opt ? expert_open_v1(path, NULL, &c->opt, &r, &e)
                                 : expert_open_any(path, NULL, NULL, &r, &e);
    if (s != c->want || r != NULL)
        fail_msg("[%s] path open: got %s (%s), want %s", c->label, expert_status_name(s), e.message,
                 expert_status_name(c->want));
    if (c->keyword != NULL && strstr(e.message, c->keyword) == NULL)
        fail_msg("[%s] message '%s' lacks '%s'", c->label, e.message, c->keyword);
    memset(&e, 0, sizeof e);
    s = c->use_opt ? expert_open_v1_memory(c->data, c->size, NULL, &c->opt, &r, &e)
                   : expert_open_any_memory(c->data, c->size, NULL, NULL, &r, &e);
    if (s != c->want || r != NULL)
        fail_msg("[%s] memory open: got %s (%s), want %s", c->label, expert_status_name(s),
                 e.message, expert_status_name(c->want));
    /* nothing extracted or left behind next to the input */
    if (dir_count(g_dir) != 1)
        fail_msg("[%s] the reader wrote to disk", c->label);
    print_message("  %-34s -> %s: %s\n", c->label, expert_status_name(c->want), e.message);
    unlink(path);
    free(path);
    free(c->data);
}

/* A valid small package as a tar stream (not yet gzipped), with one
 * extra entry appended by the caller before tar_end. */
static void base_tar(xb *t, pkg *p)
{
    pkg_make(p, PK_DORA, 1, 2, 77);
    for (int i = 0; i < p->n; i++)
        tar_file(t, p->f[i].name, p->f[i].data, p->f[i].size);
}

static void finish(hcase *c, xb *t, pkg *p)
{
    tar_end(t);
    c->data = gz(t->p, t->n, &c->size);
    xb_free(t);
    pkg_free(p);
}

static void extra_entry(const char *label, const char *name, char type, const char *link,
                        const char *keyword)
{
    xb t = {0};
    pkg p;
    hcase c = {label, EXPERT_E_BAD_ARCHIVE, keyword, NULL, 0, {0, 0, 0, 0, NULL}, 0};
    base_tar(&t, &p);
    tar_entry(&t, name, type, "evil", type == '0' ? 4 : 0, type == '0' ? 4 : 0, link);
    finish(&c, &t, &p);
    run_case(&c);
}

static void test_names_and_types(void **state)
{
    (void)state;
    extra_entry("dot-dot path", "../evil.txt", '0', NULL, "'..'");
    extra_entry("nested dot-dot", "tests/../../evil.txt", '0', NULL, "'..'");
    extra_entry("absolute path", "/tmp/evil.txt", '0', NULL, "absolute");
    extra_entry("drive-letter path", "C:/evil.txt", '0', NULL, "absolute");
    extra_entry("backslash path", "..\\evil.txt", '0', NULL, "backslash");
    extra_entry("empty component", "tests//evil.txt", '0', NULL, "empty");
    extra_entry("symlink", "evil-link", '2', "/etc/passwd", "symbolic link");
    extra_entry("symlink over a package file", "README.md.lnk", '2', "../../../etc/passwd",
                "symbolic link");
    extra_entry("hard link", "evil-hard", '1', "README.md", "hard link");
    extra_entry("character device", "evil-chr", '3', NULL, "character device");
    extra_entry("block device", "evil-blk", '4', NULL, "block device");
    extra_entry("fifo", "evil-fifo", '6', NULL, "FIFO");
    extra_entry("duplicate name", "README.md", '0', NULL, "duplicate");
    extra_entry("duplicate after ./", "./README.md", '0', NULL, "duplicate");
    {
        char longname[200];
        memset(longname, 'a', sizeof longname);
        memcpy(longname, "../", 3);
        longname[150] = '\0';
        extra_entry("GNU long name with ..", longname, '0', NULL, "'..'");
    }
    { /* pax header overriding the path */
        xb t = {0};
        pkg p;
        hcase c = {"pax path ../", EXPERT_E_BAD_ARCHIVE, "'..'", NULL, 0, {0, 0, 0, 0, NULL}, 0};
        base_tar(&t, &p);
        tar_pax_path(&t, "../pax-evil.txt");
        tar_file(&t, "innocent.txt", "evil", 4);
        finish(&c, &t, &p);
        run_case(&c);
    }
    { /* old-GNU sparse file */
        xb t = {0};
        pkg p;
        hcase c = {"GNU sparse file", EXPERT_E_BAD_ARCHIVE, NULL, NULL, 0, {0, 0, 0, 0, NULL}, 0};
        base_tar(&t, &p);
        size_t at = t.n;
        tar_entry(&t, "sparse.bin", 'S', "xxxx", 4, 512, NULL);
        /* sp[0] = {offset 0, numbytes 512}, realsize 4096; fix the checksum */
        char *h = (char *)t.p + at;
        snprintf(h + 386, 12, "%011o", 0);
        snprintf(h + 398, 12, "%011o", 512);
        snprintf(h + 483, 12, "%011o", 4096);
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++)
            sum += (unsigned char)h[i];
        snprintf(h + 148, 8, "%06o", sum);
        h[155] = ' ';
        t.n = at + 1024; /* header + one data block */
        finish(&c, &t, &p);
        run_case(&c);
    }
}

static void test_bombs_and_truncation(void **state)
{
    (void)state;
    { /* entry declaring 4 GiB + 1 under the default 1 GiB per-entry limit */
        xb t = {0};
        pkg p;
        hcase c = {"entry over the default limit", EXPERT_E_BAD_ARCHIVE, "gzip bomb", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        base_tar(&t, &p);
        tar_entry(&t, "huge.bin", '0', NULL, 0, (UINT64_C(1) << 32) + 1, NULL);
        finish(&c, &t, &p);
        run_case(&c);
    }
    { /* 32 MiB of zeros as one entry: ~32 KiB of gzip, limit 4 MiB */
        xb t = {0};
        pkg p;
        hcase c = {"gzip bomb (one entry)", EXPERT_E_BAD_ARCHIVE, "gzip bomb", NULL, 0,
                   {4u << 20, 0, 0, 0, NULL}, 1};
        base_tar(&t, &p);
        uint8_t *zeros = calloc(1, 32u << 20);
        tar_file(&t, "tokenizer.bin", zeros, 32u << 20);
        free(zeros);
        finish(&c, &t, &p);
        assert_true(c.size < (1u << 20));
        run_case(&c);
    }
    { /* a valid package followed by 32 MiB of zeros inside the gzip stream */
        xb t = {0};
        pkg p;
        hcase c = {"gzip bomb (after the tar end)", EXPERT_E_BAD_ARCHIVE, "gzip bomb", NULL, 0,
                   {4u << 20, 0, 0, 0, NULL}, 1};
        base_tar(&t, &p);
        tar_end(&t);
        xb_zero(&t, 32u << 20);
        c.data = gz(t.p, t.n, &c.size);
        xb_free(&t);
        pkg_free(&p);
        run_case(&c);
    }
    xb t = {0};
    pkg p;
    base_tar(&t, &p);
    tar_end(&t);
    size_t gz_n = 0;
    uint8_t *good = gz(t.p, t.n, &gz_n);
    {
        hcase c = {"truncated gzip", EXPERT_E_BAD_ARCHIVE, "truncated", NULL, 0, {0, 0, 0, 0, NULL}, 0};
        c.size = gz_n / 2;
        c.data = malloc(c.size);
        memcpy(c.data, good, c.size);
        run_case(&c);
    }
    {
        hcase c = {"gzip without its trailer", EXPERT_E_BAD_ARCHIVE, "truncated", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        c.size = gz_n - 8;
        c.data = malloc(c.size);
        memcpy(c.data, good, c.size);
        run_case(&c);
    }
    {
        hcase c = {"tar cut inside an entry", EXPERT_E_BAD_ARCHIVE, "runcated", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        c.data = gz(t.p, t.n / 3, &c.size);
        run_case(&c);
    }
    {
        hcase c = {"tar without end blocks", EXPERT_E_BAD_ARCHIVE, "end-of-archive", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        c.data = gz(t.p, t.n - 1024, &c.size);
        run_case(&c);
    }
    {
        hcase c = {"corrupt CRC-32", EXPERT_E_BAD_ARCHIVE, "CRC", NULL, 0, {0, 0, 0, 0, NULL}, 0};
        c.data = malloc(gz_n);
        memcpy(c.data, good, gz_n);
        c.data[gz_n - 6] ^= 0x5a;
        c.size = gz_n;
        run_case(&c);
    }
    {
        hcase c = {"corrupt deflate data", EXPERT_E_BAD_ARCHIVE, "corrupt", NULL, 0, {0, 0, 0, 0, NULL}, 0};
        c.data = malloc(gz_n);
        memcpy(c.data, good, gz_n);
        for (size_t i = 20; i < 60; i++)
            c.data[i] ^= 0xff;
        c.size = gz_n;
        run_case(&c);
    }
    {
        hcase c = {"trailing data", EXPERT_E_BAD_ARCHIVE, "trailing", NULL, 0, {0, 0, 0, 0, NULL}, 0};
        c.data = malloc(gz_n + 5);
        memcpy(c.data, good, gz_n);
        memcpy(c.data + gz_n, "junk\n", 5);
        c.size = gz_n + 5;
        run_case(&c);
    }
    {
        hcase c = {"damaged tar header checksum", EXPERT_E_BAD_ARCHIVE, "tar", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        xb d = {0};
        xb_put(&d, t.p, t.n);
        d.p[0] ^= 0x20; /* first header's name: checksum no longer matches */
        c.data = gz(d.p, d.n, &c.size);
        xb_free(&d);
        run_case(&c);
    }
    {
        hcase c = {"damaged header mid-archive", EXPERT_E_BAD_ARCHIVE, "tar", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        xb d = {0};
        xb_put(&d, t.p, t.n);
        size_t at = 0;
        for (size_t o = 512; o + 512 <= d.n && at == 0; o += 512)
            if (memcmp(d.p + o, "adapter_config.json", 20) == 0)
                at = o;
        assert_true(at > 0);
        d.p[at + 124 + 5] ^= 0x01; /* size field digit: checksum breaks */
        c.data = gz(d.p, d.n, &c.size);
        xb_free(&d);
        run_case(&c);
    }
    {
        hcase c = {"gzip of a non-tar", EXPERT_E_BAD_ARCHIVE, NULL, NULL, 0, {0, 0, 0, 0, NULL}, 0};
        static const char text[] = "this is not a tar archive at all, just some text....";
        c.data = gz(text, sizeof text, &c.size);
        run_case(&c);
    }
    {
        hcase c = {"empty gzip", EXPERT_E_BAD_ARCHIVE, NULL, NULL, 0, {0, 0, 0, 0, NULL}, 0};
        c.data = gz("", 0, &c.size);
        run_case(&c);
    }
    free(good);
    xb_free(&t);
    pkg_free(&p);
}

/* Package with adapter_model.safetensors replaced (or removed when st is NULL). */
static void st_case(const char *label, expert_status want, const char *keyword, const void *st,
                    size_t st_n)
{
    pkg p;
    pkg_make(&p, PK_DORA, 1, 2, 88);
    pkg_file *f = pkg_get(&p, "adapter_model.safetensors");
    if (st == NULL) {
        free(f->data);
        *f = p.f[--p.n];
    } else {
        pkg_set(&p, "adapter_model.safetensors", st, st_n);
    }
    hcase c = {label, want, keyword, NULL, 0, {0, 0, 0, 0, NULL}, 0};
    c.data = pkg_targz(&p, &c.size);
    pkg_free(&p);
    run_case(&c);
}

static size_t st_raw(uint8_t *out, const char *json, size_t data_len)
{
    size_t n = strlen(json);
    uint64_t hn = n;
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(hn >> (8 * i));
    memcpy(out + 8, json, n);
    memset(out + 8 + n, 0x3f, data_len);
    return 8 + n + data_len;
}

static void test_safetensors_defects(void **state)
{
    (void)state;
    uint8_t buf[4096];
    size_t n;
    st_case("missing adapter_model.safetensors", EXPERT_E_BAD_ARCHIVE, "adapter_model", NULL, 0);
    st_case("empty safetensors", EXPERT_E_BAD_SAFETENSORS, "safetensors", "", 0);
    n = st_raw(buf, "{\"a.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],", 16);
    st_case("header not JSON", EXPERT_E_BAD_SAFETENSORS, "JSON", buf, n);
    n = st_raw(buf, "{}", 0);
    buf[0] = 0xff; /* header length far past the end */
    st_case("header length past the end", EXPERT_E_BAD_SAFETENSORS, "header length", buf, n);
    n = st_raw(buf,
               "{\"m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
               "\"m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}}",
               24);
    st_case("overlapping offsets", EXPERT_E_BAD_SAFETENSORS, "overlaps", buf, n);
    n = st_raw(buf,
               "{\"m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
               "\"m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[16,32]}}",
               20);
    st_case("offsets past the end", EXPERT_E_BAD_SAFETENSORS, "truncated", buf, n);
    n = st_raw(buf,
               "{\"m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}",
               12);
    st_case("length != shape x dtype", EXPERT_E_BAD_SAFETENSORS, NULL, buf, n);
    n = st_raw(buf,
               "{\"m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
               16);
    st_case("lora_A without lora_B", EXPERT_E_BAD_SAFETENSORS, "lora_B", buf, n);
    { /* manifest.json that is not JSON */
        pkg p;
        pkg_make(&p, PK_DORA, 1, 2, 89);
        pkg_set(&p, "manifest.json", "{\"name\": ", 9);
        hcase c = {"manifest.json not JSON", EXPERT_E_BAD_ARCHIVE, "manifest.json", NULL, 0,
                   {0, 0, 0, 0, NULL}, 0};
        c.data = pkg_targz(&p, &c.size);
        pkg_free(&p);
        run_case(&c);
    }
}

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("hostile");
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
        cmocka_unit_test(test_names_and_types),
        cmocka_unit_test(test_bombs_and_truncation),
        cmocka_unit_test(test_safetensors_defects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
