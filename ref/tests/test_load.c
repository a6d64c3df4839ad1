/*
 * test_load.c — loading many sections at once (expert_read_sections,
 * expert_stream_sections) and verified marks (expert_mark_make,
 * expert_open_options.mark).
 *
 * The many-section read must give the bytes expert_read gives, through every
 * open path and thread count, and report the lowest-numbered failing request
 * whatever the timing, with every destination zeroed. A mark must be
 * refused for a file that is not fully verified or changed too recently, and
 * must stop standing for the hashes as soon as the file differs from the one
 * it names: modified in place (same size), modified with its mtime put
 * back, modified while a trusted reader is open, another file with the same
 * bytes, or a mark whose bytes were altered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "craft.h"

#define NS 6
#define FRAME 65536u

static char *g_dir;
static char *g_path; /* the fixture file, written once, old enough to be marked */
static char *g_copy; /* a copy of it (another inode, same bytes) */
static uint8_t *g_data[NS];
static size_t g_len[NS];

static void fixture_sections(tsec *s)
{
    static const char *const names[NS] = {"t/empty", "t/raw-300k", "t/zstd-200k", "t/shuf-3-frames",
                                          "t/raw-4", "t/shuf-tiny"};
    static const uint8_t codec[NS] = {EXPERT_CODEC_RAW, EXPERT_CODEC_RAW, EXPERT_CODEC_ZSTD,
                                      EXPERT_CODEC_SHUFFLE_ZSTD, EXPERT_CODEC_RAW,
                                      EXPERT_CODEC_SHUFFLE_ZSTD};
    static const uint64_t elems[NS] = {0, 75000, 50000, 3 * FRAME / 4 - 5, 1, 3};
    prng r = {2026};
    for (int i = 0; i < NS; i++) {
        g_len[i] = (size_t)elems[i] * 4;
        g_data[i] = malloc(g_len[i] + 1);
        prng_fill(&r, g_data[i], g_len[i]);
        for (size_t k = 3; k < g_len[i]; k += 4)
            g_data[i][k] = (uint8_t)(k / 4000); /* something for zstd to find */
        memset(&s[i], 0, sizeof s[i]);
        s[i].d = (expert_section_desc){.name = names[i], .type = EXPERT_SECTION_TENSOR,
                                       .codec = codec[i], .dtype = EXPERT_DTYPE_F32, .rank = 1,
                                       .layer = EXPERT_LAYER_NONE, .module = EXPERT_MODULE_NONE,
                                       .dims = {elems[i], 0, 0, 0}};
        s[i].data = g_data[i];
        s[i].len = g_len[i];
    }
}

static expert_reader *open_path(const char *path, uint32_t flags, unsigned threads,
                                const expert_mark *mark)
{
    expert_open_options o = {.flags = flags, .threads = threads, .mark = mark};
    expert_reader *r = NULL;
    expert_error e;
    expert_status s = expert_open(path, &o, &r, &e);
    if (s != EXPERT_OK)
        fail_msg("expert_open %s: %s: %s", path, expert_status_name(s), e.message);
    return r;
}

/* The fixture through open path `mode`: 0 mapped, 1 read(), 2 memory
 * (a copy in *mem, freed by the caller after expert_close). */
static expert_reader *open_mode(int mode, unsigned threads, const uint8_t *file, size_t size,
                                void **mem)
{
    expert_reader *r = NULL;
    expert_error e;
    *mem = NULL;
    if (mode == 2)
        assert_int_equal(open_mem(file, size, threads, mem, &r, &e), EXPERT_OK);
    else
        r = open_path(g_path, mode == 1 ? EXPERT_OPEN_NO_MMAP : 0, threads, NULL);
    return r;
}

/* A copy of the fixture with the stored bytes of sections 1 and 3 damaged,
 * in the test directory under `name` (the path, malloc'd). */
static char *write_damaged(const char *name)
{
    uint8_t *file = NULL;
    size_t size = 0;
    assert_int_equal(read_file_bytes(g_path, &file, &size), 0);
    expert_reader *probe = open_path(g_path, 0, 1, NULL);
    for (uint32_t sec = 1; sec <= 3; sec += 2) {
        expert_section_info si;
        assert_int_equal(expert_section(probe, sec, &si), EXPERT_OK);
        file[si.offset + si.stored_length / 2] ^= 0x40;
    }
    expert_close(probe);
    char *bad = path_join(g_dir, name);
    assert_int_equal(write_file_bytes(bad, file, size), 0);
    free(file);
    return bad;
}

/* Requests for every section in reverse order, plus section 3 twice. */
#define NREQ (NS + 1)
static void make_requests(expert_read_request *q, uint8_t **buf)
{
    for (int k = 0; k < NREQ; k++) {
        uint32_t sec = k < NS ? (uint32_t)(NS - 1 - k) : 3;
        buf[k] = malloc(g_len[sec] + 1);
        memset(buf[k], 0xA5, g_len[sec] + 1);
        q[k] = (expert_read_request){sec, buf[k], g_len[sec]};
    }
}

static void free_requests(uint8_t **buf)
{
    for (int k = 0; k < NREQ; k++)
        free(buf[k]);
}

static void check_requests(const expert_read_request *q, const char *what)
{
    for (int k = 0; k < NREQ; k++)
        if (g_len[q[k].section] != 0 && memcmp(q[k].dst, g_data[q[k].section], g_len[q[k].section]) != 0)
            fail_msg("%s: request %d (section %u) differs", what, k, q[k].section);
}

static void test_read_sections(void **state)
{
    (void)state;
    uint8_t *file = NULL;
    size_t size = 0;
    assert_int_equal(read_file_bytes(g_path, &file, &size), 0);
    for (int mode = 0; mode < 3; mode++)
        for (unsigned threads = 1; threads <= 3; threads += 2) {
            void *mem = NULL;
            expert_error e;
            expert_reader *r = open_mode(mode, threads, file, size, &mem);
            expert_read_request q[NREQ];
            uint8_t *buf[NREQ];
            make_requests(q, buf);
            assert_int_equal(expert_read_sections(r, q, NREQ, 0, &e), EXPERT_OK);
            check_requests(q, mode == 0 ? "mapped" : mode == 1 ? "read()" : "memory");
            /* a second pass reads verified sections (no hash) the same */
            memset(buf[1], 0, g_len[q[1].section]);
            assert_int_equal(expert_read_sections(r, q, NREQ, 0, &e), EXPERT_OK);
            check_requests(q, "second pass");
            assert_int_equal(expert_read_sections(r, q, 0, 0, &e), EXPERT_OK);
            /* arguments are checked before any work, naming the request */
            q[2].capacity = g_len[q[2].section] - 1;
            assert_int_equal(expert_read_sections(r, q, NREQ, 0, &e), EXPERT_E_INVALID_ARGUMENT);
            assert_non_null(strstr(e.message, "request 2"));
            q[2].capacity = g_len[q[2].section];
            q[4].section = NS;
            assert_int_equal(expert_read_sections(r, q, NREQ, 0, &e), EXPERT_E_INVALID_ARGUMENT);
            assert_int_equal(expert_read_sections(NULL, q, NREQ, 0, &e), EXPERT_E_INVALID_ARGUMENT);
            assert_int_equal(expert_read_sections(r, NULL, 1, 0, &e), EXPERT_E_INVALID_ARGUMENT);
            free_requests(buf);
            expert_close(r);
            free(mem);
        }
    free(file);
}

/* Corrupts the stored bytes of sections 1 and 3: requests name them in the
 * order 5,4,3,2,1,0,3, so the lowest failing request is 2 (section 3),
 * whichever thread gets there first. */
static void test_read_sections_failure(void **state)
{
    (void)state;
    char *bad = write_damaged("bad.expert");
    for (int rep = 0; rep < 20; rep++) {
        unsigned threads = rep % 2 ? 3 : 1;
        expert_reader *r = open_path(bad, rep % 4 >= 2 ? EXPERT_OPEN_NO_MMAP : 0, threads, NULL);
        expert_read_request q[NREQ];
        uint8_t *buf[NREQ];
        make_requests(q, buf);
        expert_error e;
        expert_status s = expert_read_sections(r, q, NREQ, 0, &e);
        assert_true(s == EXPERT_E_SECTION_HASH_MISMATCH || s == EXPERT_E_DECODE_FAILED);
        assert_int_equal(e.section, 3);
        for (int k = 0; k < NREQ; k++)
            for (size_t b = 0; b < g_len[q[k].section]; b++)
                if (buf[k][b] != 0)
                    fail_msg("request %d byte %zu not zeroed after a failure", k, b);
        /* without verification the same requests succeed, undetected */
        assert_int_equal(expert_read_sections(r, q, NREQ, EXPERT_READ_NO_VERIFY, &e), EXPERT_OK);
        free_requests(buf);
        expert_close(r);
    }
    remove(bad);
    free(bad);
}

/* A sink that places each section's bytes at its own cursor, as extract
 * does with pwrite, and checks that no section reaches it from two threads
 * at once. */
typedef struct place_sink {
    uint8_t *buf[NS];
    size_t done[NS];
    atomic_int busy[NS];
    atomic_int overlap;
    uint32_t fail_on; /* a section whose bytes the sink refuses, NS for none */
} place_sink;

static expert_status place_write(void *user, uint32_t section, const void *data, size_t length,
                                 expert_error *err)
{
    place_sink *k = user;
    (void)err;
    if (section >= NS)
        return EXPERT_E_INVALID_ARGUMENT;
    if (atomic_fetch_add(&k->busy[section], 1) != 0)
        atomic_store(&k->overlap, 1);
    memcpy(k->buf[section] + k->done[section], data, length);
    k->done[section] += length;
    atomic_fetch_sub(&k->busy[section], 1);
    return section == k->fail_on ? EXPERT_E_IO : EXPERT_OK;
}

static void sink_init(place_sink *k)
{
    memset(k, 0, sizeof *k);
    k->fail_on = NS;
    for (int i = 0; i < NS; i++)
        k->buf[i] = calloc(g_len[i] + 1, 1);
}

static void sink_free(place_sink *k)
{
    for (int i = 0; i < NS; i++)
        free(k->buf[i]);
}

/* Every section, streamed by the reader's threads, arrives whole and in
 * order; argument errors name the entry; the lowest failing entry is
 * reported whatever the timing; a sink's own failure comes back. */
static void test_stream_sections(void **state)
{
    (void)state;
    static const uint32_t every[NS] = {5, 4, 3, 2, 1, 0};
    uint8_t *file = NULL;
    size_t size = 0;
    assert_int_equal(read_file_bytes(g_path, &file, &size), 0);
    for (int mode = 0; mode < 3; mode++)
        for (unsigned threads = 1; threads <= 3; threads += 2) {
            void *mem = NULL;
            expert_error e;
            expert_reader *r = open_mode(mode, threads, file, size, &mem);
            place_sink k;
            sink_init(&k);
            assert_int_equal(expert_stream_sections(r, every, NS, place_write, &k, 0, &e), EXPERT_OK);
            assert_int_equal(atomic_load(&k.overlap), 0);
            for (int i = 0; i < NS; i++) {
                assert_int_equal(k.done[i], g_len[i]);
                if (g_len[i] != 0 && memcmp(k.buf[i], g_data[i], g_len[i]) != 0)
                    fail_msg("mode %d, %u threads: section %d differs", mode, threads, i);
            }
            sink_free(&k);
            /* NULL sink: decode and verify only */
            assert_int_equal(expert_stream_sections(r, every, NS, NULL, NULL, 0, &e), EXPERT_OK);
            assert_int_equal(expert_stream_sections(r, every, 0, place_write, &k, 0, &e), EXPERT_OK);
            const uint32_t twice[3] = {1, 3, 1}, beyond[2] = {0, NS};
            assert_int_equal(expert_stream_sections(r, twice, 3, NULL, NULL, 0, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            assert_non_null(strstr(e.message, "entries 0 and 2"));
            assert_int_equal(expert_stream_sections(r, beyond, 2, NULL, NULL, 0, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            assert_non_null(strstr(e.message, "entry 1"));
            assert_int_equal(expert_stream_sections(NULL, every, NS, NULL, NULL, 0, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            assert_int_equal(expert_stream_sections(r, NULL, 1, NULL, NULL, 0, &e),
                             EXPERT_E_INVALID_ARGUMENT);
            sink_init(&k);
            k.fail_on = 2;
            assert_int_equal(expert_stream_sections(r, every, NS, place_write, &k, 0, &e), EXPERT_E_IO);
            sink_free(&k);
            expert_close(r);
            free(mem);
        }
    /* sections 1 and 3 damaged, named as entries 4 and 2: entry 2 is reported */
    char *bad = write_damaged("bad-stream.expert");
    for (int rep = 0; rep < 20; rep++) {
        expert_reader *r = open_path(bad, rep % 4 >= 2 ? EXPERT_OPEN_NO_MMAP : 0, rep % 2 ? 3 : 1, NULL);
        expert_error e;
        expert_status st = expert_stream_sections(r, every, NS, NULL, NULL, 0, &e);
        assert_true(st == EXPERT_E_SECTION_HASH_MISMATCH || st == EXPERT_E_DECODE_FAILED);
        assert_int_equal(e.section, 3);
        assert_int_equal(expert_stream_sections(r, every, NS, NULL, NULL, EXPERT_READ_NO_VERIFY, &e),
                         EXPERT_OK);
        expert_close(r);
    }
    remove(bad);
    free(bad);
    free(file);
}

static expert_mark g_mark;

static void flip_byte(const char *path, uint32_t section, int keep_mtime)
{
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    expert_reader *r = open_path(path, 0, 1, NULL);
    expert_section_info si;
    assert_int_equal(expert_section(r, section, &si), EXPERT_OK);
    expert_close(r);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t at = (off_t)(si.offset + si.stored_length / 3);
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    if (keep_mtime) {
        struct timespec t[2] = {before.st_atim, before.st_mtim};
        assert_int_equal(futimens(fd, t), 0);
    }
    close(fd);
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    if (keep_mtime)
        assert_true(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                    after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
}

/* Reads every section of a reader opened with g_mark; returns the status. */
static expert_status load_all(const char *path, int expect_trusted, expert_error *e)
{
    expert_reader *r = open_path(path, 0, 2, &g_mark);
    expert_header_info h;
    expert_header(r, &h);
    assert_int_equal(h.used_mmap, 0);
    assert_int_equal(expert_reader_trusted(r), expect_trusted);
    expert_read_request q[NREQ];
    uint8_t *buf[NREQ];
    make_requests(q, buf);
    expert_status s = expert_read_sections(r, q, NREQ, 0, e);
    if (s == EXPERT_OK)
        check_requests(q, path);
    free_requests(buf);
    expert_close(r);
    return s;
}

static void test_mark_refusals(void **state)
{
    (void)state;
    expert_error e;
    expert_mark m;
    expert_reader *r = open_path(g_path, 0, 1, NULL);
    assert_int_equal(expert_mark_make(r, &m, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "full validation"));
    assert_int_equal(expert_verify_access(r, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &m, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &g_mark, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(NULL, &m, &e), EXPERT_E_INVALID_ARGUMENT);
    expert_close(r);

    /* a memory reader has no file to bind a mark to */
    uint8_t *file = NULL;
    size_t size = 0;
    void *mem = NULL;
    assert_int_equal(read_file_bytes(g_path, &file, &size), 0);
    assert_int_equal(open_mem(file, size, 1, &mem, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &m, &e), EXPERT_E_INVALID_ARGUMENT);
    expert_close(r);
    free(mem);

    /* a file written just now cannot be marked yet */
    char *fresh = path_join(g_dir, "fresh.expert");
    assert_int_equal(write_file_bytes(fresh, file, size), 0);
    r = open_path(fresh, 0, 1, NULL);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &m, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_non_null(strstr(e.message, "less than"));
    expert_close(r);
    remove(fresh);
    free(fresh);
    free(file);
}

static void test_mark_trusted(void **state)
{
    (void)state;
    expert_error e;
    assert_int_equal(load_all(g_path, 1, &e), EXPERT_OK);
    /* every other access of a trusted reader reads the same bytes */
    expert_reader *r = open_path(g_path, 0, 1, &g_mark);
    assert_int_equal(expert_reader_trusted(r), 1);
    const void *v;
    size_t n;
    assert_int_equal(expert_view(r, 1, &v, &n, 0, &e), EXPERT_OK);
    assert_int_equal(n, g_len[1]);
    assert_memory_equal(v, g_data[1], n);
    uint8_t *one = malloc(g_len[3]);
    assert_int_equal(expert_read(r, 3, one, g_len[3], 0, &e), EXPERT_OK);
    assert_memory_equal(one, g_data[3], g_len[3]);
    free(one);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    expert_mark again;
    assert_int_equal(expert_mark_make(r, &again, &e), EXPERT_OK);
    assert_memory_equal(again.bytes, g_mark.bytes, EXPERT_MARK_BYTES);
    expert_close(r);
    /* the same bytes in another file: not the marked file, hashes checked */
    assert_int_equal(load_all(g_copy, 0, &e), EXPERT_OK);
    /* an altered mark is no mark */
    expert_mark keep = g_mark;
    for (size_t b = 0; b < EXPERT_MARK_BYTES; b += 9) {
        g_mark.bytes[b] ^= 1;
        assert_int_equal(load_all(g_path, 0, &e), EXPERT_OK);
        g_mark = keep;
    }
}

/* A marked open reads only the header and regions (a sparse image): on
 * damaged files it must report exactly what an ordinary open reports.
 * Every byte of the header and regions flipped in turn, and truncations. */
static void test_mark_open_damaged(void **state)
{
    (void)state;
    uint8_t *file = NULL;
    size_t size = 0;
    assert_int_equal(read_file_bytes(g_path, &file, &size), 0);
    expert_reader *r = open_path(g_path, 0, 1, NULL);
    expert_header_info h;
    expert_header(r, &h);
    expert_close(r);
    char *bad = path_join(g_dir, "damaged.expert");
    uint64_t spans[5][2] = {{0, h.header_size},
                            {h.metadata_offset, h.metadata_length},
                            {h.toc_offset, (uint64_t)h.section_count * 128},
                            {h.index_offset, h.index_length},
                            {h.strings_offset, h.strings_length}};
    int cases = 0;
    for (int k = 0; k <= 5; k++) {
        uint64_t lo = k < 5 ? spans[k][0] : 0, n = k < 5 ? spans[k][1] : 40;
        for (uint64_t i = 0; i < n; i += k == 0 || k == 2 ? 1 : 7) {
            size_t len = size;
            if (k < 5)
                file[lo + i] ^= 0x21;
            else
                len = (size_t)(size * i / 40); /* truncated */
            assert_int_equal(write_file_bytes(bad, file, len), 0);
            expert_open_options plain = {.threads = 1}, marked = {.threads = 1, .mark = &g_mark};
            expert_reader *a = NULL, *b = NULL;
            expert_error ea, eb;
            expert_status sa = expert_open(bad, &plain, &a, &ea);
            expert_status sb = expert_open(bad, &marked, &b, &eb);
            if (sa != sb || (sa != EXPERT_OK && ea.offset != eb.offset))
                fail_msg("%s at %llu: plain open %s (offset %llu), marked %s (offset %llu)",
                         k < 5 ? "flip" : "truncation", (unsigned long long)(lo + i),
                         expert_status_name(sa), (unsigned long long)ea.offset,
                         expert_status_name(sb), (unsigned long long)eb.offset);
            if (sb == EXPERT_OK)
                assert_int_equal(expert_reader_trusted(b), 0);
            expert_close(a);
            expert_close(b);
            if (k < 5)
                file[lo + i] ^= 0x21;
            cases++;
        }
    }
    assert_true(cases > 1000);
    remove(bad);
    free(bad);
    free(file);
}

/* Runs last: modifies the fixture file. */
static void test_mark_modified(void **state)
{
    (void)state;
    expert_error e;
    /* modified while a trusted reader is open: the next read sees it */
    expert_reader *r = open_path(g_path, 0, 1, &g_mark);
    assert_int_equal(expert_reader_trusted(r), 1);
    flip_byte(g_path, 1, 0);
    uint8_t *buf = malloc(g_len[1]);
    assert_int_equal(expert_read(r, 1, buf, g_len[1], 0, &e), EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(expert_reader_trusted(r), 0);
    free(buf);
    expert_close(r);
    /* modified in place, same size: re-verified */
    assert_int_equal(load_all(g_path, 0, &e), EXPERT_E_SECTION_HASH_MISMATCH);
    assert_int_equal(e.section, 1);
    /* changed back, mtime restored: still not the marked file (ctime moved) */
    flip_byte(g_path, 1, 1);
    assert_int_equal(load_all(g_path, 0, &e), EXPERT_OK);
    /* modified again with its mtime put back: re-verified, caught */
    flip_byte(g_path, 3, 1);
    expert_status st = load_all(g_path, 0, &e);
    assert_true(st == EXPERT_E_SECTION_HASH_MISMATCH || st == EXPERT_E_DECODE_FAILED);
    assert_int_equal(e.section, 3);
}

static int group_setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("load");
    if (g_dir == NULL)
        return -1;
    g_path = path_join(g_dir, "f.expert");
    g_copy = path_join(g_dir, "copy.expert");
    tsec s[NS];
    fixture_sections(s);
    expert_writer_options wo = {.frame_size = FRAME, .zstd_level = 3};
    if (write_expert(g_path, &wo, META_MIN, s, NS, NULL) != EXPERT_OK)
        return -1;
    uint8_t *file = NULL;
    size_t size = 0;
    if (read_file_bytes(g_path, &file, &size) != 0 || write_file_bytes(g_copy, file, size) != 0)
        return -1;
    free(file);
    /* marks refuse files changed within the settle time */
    sleep(EXPERT_MARK_SETTLE_SECONDS + 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NS; i++)
        free(g_data[i]);
    free(g_path);
    free(g_copy);
    tmpdir_remove(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_sections), cmocka_unit_test(test_read_sections_failure),
        cmocka_unit_test(test_stream_sections),
        cmocka_unit_test(test_mark_refusals), cmocka_unit_test(test_mark_trusted),
        cmocka_unit_test(test_mark_open_damaged), cmocka_unit_test(test_mark_modified),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
