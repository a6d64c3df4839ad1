/*
 * test_concurrency.c — many threads reading and verifying one open expert at
 * once. expert.h promises: "A reader is safe to use from several
 * threads at once after open." Each worker thread mixes lookups, section
 * info, decoded reads with first-access verification (the `verified` flag is
 * shared), zero-copy views, module and metadata accessors, full validation
 * with and without the key, and signature checks; every result is compared
 * with the single-threaded answer. A corrupted copy must report the same
 * error from every thread, every time (never "verified" by a race).
 *
 * Also built with -Db_sanitize=thread in CI (see reports/reliability.md).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "craft.h"
#include "expert.h"

#define NSEC 24
#define NTHREADS 8
#ifndef ITERATIONS
#define ITERATIONS 300
#endif

static char *g_dir, *g_path, *g_pub_path;
static expert_public_key *g_pub;
static uint8_t *g_img;
static size_t g_img_n;
static atomic_long g_ops;

typedef struct secdata {
    char name[64];
    void *data;
    size_t len;
} secdata;
static secdata g_sec[NSEC];

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("concurrency");
    char *priv = path_join(g_dir, "k.pem");
    g_pub_path = path_join(g_dir, "k.pub.pem");
    expert_error e;
    assert_int_equal(expert_keygen(priv, g_pub_path, &e), EXPERT_OK);
    assert_int_equal(expert_public_key_load(g_pub_path, &g_pub, &e), EXPERT_OK);
    expert_private_key *k = NULL;
    assert_int_equal(expert_private_key_load(priv, &k, &e), EXPERT_OK);
    free(priv);

    /* 24 sections: raw, zstd and shuffle+zstd, some of several frames */
    tsec s[NSEC];
    memset(s, 0, sizeof s);
    prng r = {7};
    for (int i = 0; i < NSEC; i++) {
        size_t n = i % 6 == 0 ? 200000 : 1024 + 512 * (size_t)i; /* floats */
        n -= n % 4;
        uint8_t *d = malloc(n);
        for (size_t j = 0; j < n; j += 4) {
            float v = (float)(prng_next(&r) % 2000) / 1000.0f - 1.0f;
            memcpy(d + j, &v, 4);
        }
        snprintf(g_sec[i].name, sizeof g_sec[i].name, "tensor.%02d", i);
        g_sec[i].data = d;
        g_sec[i].len = n;
        s[i].d.name = g_sec[i].name;
        s[i].d.type = EXPERT_SECTION_TENSOR;
        s[i].d.codec = (uint8_t)(i % 3);
        s[i].d.dtype = EXPERT_DTYPE_F32;
        s[i].d.rank = 1;
        s[i].d.layer = (uint32_t)(i % 5 == 4 ? EXPERT_LAYER_NONE : (uint32_t)(i % 4));
        s[i].d.module = EXPERT_MODULE_NONE;
        s[i].d.dims[0] = n / 4;
        s[i].data = d;
        s[i].len = n;
    }
    g_path = path_join(g_dir, "c.expert");
    expert_writer_options o = {.alignment = 64, .frame_size = 65536, .zstd_level = 3, .threads = 0};
    assert_int_equal(write_expert(g_path, &o, META_MIN, s, NSEC, k), EXPERT_OK);
    expert_private_key_free(k);
    xb b;
    assert_int_equal(file_load(g_path, &b), 0);
    g_img = aligned_copy(b.p, b.n);
    g_img_n = b.n;
    xb_free(&b);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NSEC; i++)
        free(g_sec[i].data);
    expert_public_key_free(g_pub);
    free(g_img);
    tmpdir_remove(g_dir);
    free(g_path);
    free(g_pub_path);
    return 0;
}

typedef struct worker {
    expert_reader *r;
    int id;
    int corrupt_index;          /* -1: none */
    expert_status corrupt_class;
    expert_status full_expected;
    int failures;
    char msg[256];
} worker;

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c) && w->failures++ == 0)                                                            \
            snprintf(w->msg, sizeof w->msg, __VA_ARGS__);                                          \
    } while (0)

typedef struct stream_count {
    uint64_t bytes[NSEC]; /* each section's by the one thread streaming it */
} stream_count;

static expert_status count_bytes(void *user, uint32_t section, const void *data, size_t length,
                                 expert_error *err)
{
    (void)data;
    (void)err;
    if (section < NSEC)
        ((stream_count *)user)->bytes[section] += length;
    return EXPERT_OK;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    prng r = {(uint64_t)w->id * 7919 + 1};
    uint8_t *buf = malloc(200000);
    expert_error e;
    for (int it = 0; it < ITERATIONS; it++) {
        int i = (int)(prng_next(&r) % NSEC);
        uint32_t idx = UINT32_MAX;
        CHECK(expert_find(w->r, g_sec[i].name, strlen(g_sec[i].name), &idx) == EXPERT_OK && idx == (uint32_t)i,
              "find %s", g_sec[i].name);
        expert_section_info si;
        CHECK(expert_section(w->r, (uint32_t)i, &si) == EXPERT_OK && si.decoded_length == g_sec[i].len,
              "section %d", i);
        unsigned op = (unsigned)(prng_next(&r) % 18);
        if (op < 10) {
            expert_status s = expert_read(w->r, (uint32_t)i, buf, 200000, 0, &e);
            if (i == w->corrupt_index)
                CHECK(s == w->corrupt_class, "read of corrupt section %d gave %s", i, expert_status_name(s));
            else
                CHECK(s == EXPERT_OK && memcmp(buf, g_sec[i].data, g_sec[i].len) == 0, "read %d: %s", i,
                      expert_status_name(s));
        } else if (op < 13) {
            const void *v = NULL;
            size_t vl = 0;
            expert_status s = expert_view(w->r, (uint32_t)i, &v, &vl, 0, &e);
            if (si.codec != EXPERT_CODEC_RAW)
                CHECK(s == EXPERT_E_INVALID_ARGUMENT, "view of compressed %d", i);
            else if (i == w->corrupt_index)
                CHECK(s == w->corrupt_class, "view of corrupt %d gave %s", i, expert_status_name(s));
            else
                CHECK(s == EXPERT_OK && vl == g_sec[i].len && memcmp(v, g_sec[i].data, vl) == 0, "view %d", i);
        } else if (op == 13) {
            expert_status s = expert_verify_full(w->r, (it & 1) ? g_pub : NULL, &e);
            CHECK(s == w->full_expected, "verify_full gave %s", expert_status_name(s));
        } else if (op == 14) {
            CHECK(expert_verify_signature(w->r, g_pub, &e) == EXPERT_OK, "signature");
        } else if (op == 17) {
            /* every section streamed at once: the sink is called from the
             * reader's threads, each section's bytes counted apart */
            uint32_t all[NSEC];
            stream_count c;
            memset(&c, 0, sizeof c);
            for (int k = 0; k < NSEC; k++)
                all[k] = (uint32_t)k;
            expert_status s = expert_stream_sections(w->r, all, NSEC, count_bytes, &c, 0, &e);
            if (w->corrupt_index >= 0)
                CHECK(s == w->corrupt_class && e.section == (uint32_t)w->corrupt_index,
                      "stream_sections with corrupt %d gave %s on %u", w->corrupt_index,
                      expert_status_name(s), e.section);
            else
                for (int k = 0; k < NSEC; k++)
                    CHECK(s == EXPERT_OK && c.bytes[k] == g_sec[k].len, "stream_sections %d: %s", k,
                          expert_status_name(s));
        } else if (op == 16) {
            /* every section at once, the reader's threads under this one */
            expert_read_request q[NSEC];
            uint8_t *bufs[NSEC];
            for (int k = 0; k < NSEC; k++) {
                bufs[k] = malloc(g_sec[k].len + 1);
                q[k] = (expert_read_request){(uint32_t)k, bufs[k], g_sec[k].len};
            }
            expert_status s = expert_read_sections(w->r, q, NSEC, 0, &e);
            if (w->corrupt_index >= 0)
                CHECK(s == w->corrupt_class && e.section == (uint32_t)w->corrupt_index,
                      "read_sections with corrupt %d gave %s on %u", w->corrupt_index,
                      expert_status_name(s), e.section);
            else
                for (int k = 0; k < NSEC; k++)
                    CHECK(s == EXPERT_OK && memcmp(bufs[k], g_sec[k].data, g_sec[k].len) == 0,
                          "read_sections %d: %s", k, expert_status_name(s));
            for (int k = 0; k < NSEC; k++)
                free(bufs[k]);
        } else {
            size_t jl;
            CHECK(expert_metadata_json(w->r, &jl) != NULL && jl > 0, "metadata");
            CHECK(strcmp(expert_name(w->r), "t") == 0, "name");
            uint32_t seen = 0;
            for (uint32_t k = 0; k < NSEC; k++)
                seen |= 1u << expert_section_in_layer_order(w->r, k);
            CHECK(seen == (1u << NSEC) - 1, "layer order");
        }
        atomic_fetch_add(&g_ops, 1);
    }
    free(buf);
    return NULL;
}

static void hammer(expert_reader *r, int corrupt_index, expert_status corrupt_class, expert_status full)
{
    pthread_t t[NTHREADS];
    worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker){r, i, corrupt_index, corrupt_class, full, 0, ""};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        if (w[i].failures)
            fail_msg("thread %d: %d failures, first: %s", i, w[i].failures, w[i].msg);
}

static void test_mmap_reader(void **state)
{
    (void)state;
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    hammer(r, -1, EXPERT_OK, EXPERT_OK);
    expert_close(r);
}

static void test_threaded_reader(void **state)
{
    (void)state;
    /* the reader's own decode/verify threads under concurrent callers */
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.flags = EXPERT_OPEN_NO_MMAP, .threads = 4};
    assert_int_equal(expert_open(g_path, &o, &r, &e), EXPERT_OK);
    hammer(r, -1, EXPERT_OK, EXPERT_OK);
    expert_close(r);
}

static void test_marked_reader(void **state)
{
    (void)state;
    /* a trusted reader (no hashing, pread, its image completed by the first
     * view) shared by every thread, with 3 threads of its own */
    sleep(EXPERT_MARK_SETTLE_SECONDS + 1);
    expert_reader *r = NULL;
    expert_error e;
    expert_mark m;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &m, &e), EXPERT_OK);
    expert_close(r);
    expert_open_options o = {.threads = 3, .mark = &m};
    assert_int_equal(expert_open(g_path, &o, &r, &e), EXPERT_OK);
    assert_int_equal(expert_reader_trusted(r), 1);
    hammer(r, -1, EXPERT_OK, EXPERT_OK);
    assert_int_equal(expert_reader_trusted(r), 1);
    expert_close(r);
}

static void test_corrupt_section(void **state)
{
    (void)state;
    /* flip one byte in the body of a raw section: every thread, every time,
     * must get SECTION_HASH_MISMATCH for it, and full validation must name
     * that lowest failing section */
    uint8_t *img = aligned_copy(g_img, g_img_n);
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open_memory(img, g_img_n, NULL, &r, &e), EXPERT_OK);
    int victim = 3; /* codec 3 % 3 = raw */
    expert_section_info si;
    assert_int_equal(expert_section(r, (uint32_t)victim, &si), EXPERT_OK);
    assert_int_equal(si.codec, EXPERT_CODEC_RAW);
    img[si.offset + si.stored_length / 2] ^= 0x20;
    hammer(r, victim, EXPERT_E_SECTION_HASH_MISMATCH, EXPERT_E_SECTION_HASH_MISMATCH);
    expert_close(r);
    /* same with a compressed section and the reader's own threads */
    memcpy(img, g_img, g_img_n);
    expert_open_options o = {.flags = 0, .threads = 3};
    assert_int_equal(expert_open_memory(img, g_img_n, &o, &r, &e), EXPERT_OK);
    victim = 7; /* zstd */
    assert_int_equal(expert_section(r, (uint32_t)victim, &si), EXPERT_OK);
    assert_int_equal(si.codec, EXPERT_CODEC_ZSTD);
    img[si.offset + si.stored_length - 3] ^= 0x55;
    uint8_t *buf = malloc(si.decoded_length);
    expert_status want = expert_read(r, (uint32_t)victim, buf, (size_t)si.decoded_length, 0, &e);
    free(buf);
    assert_true(want == EXPERT_E_DECODE_FAILED || want == EXPERT_E_SECTION_HASH_MISMATCH);
    hammer(r, victim, want, want);
    expert_close(r);
    free(img);
}

static void test_report(void **state)
{
    (void)state;
    const char *dir = getenv("EXPERT_RELIABILITY_DIR");
    if (!dir || !*dir)
        skip();
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/concurrency.md", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "### Concurrency (ref/tests/test_concurrency.c)\n\n");
    fprintf(f, "%d threads on one reader (mmap; read() with 4 decode threads; a corrupted raw and a "
               "corrupted zstd section): %ld operations (lookups, reads with first-access "
               "verification, views, full validation with and without key, signature, metadata and "
               "layer order), all matching the single-threaded result.%s\n\n",
               NTHREADS, atomic_load(&g_ops),
#if defined(__SANITIZE_THREAD__)
               " Built with ThreadSanitizer: no report."
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
               " Built with ThreadSanitizer: no report."
#else
               ""
#endif
#else
               ""
#endif
    );
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mmap_reader),
        cmocka_unit_test(test_threaded_reader),
        cmocka_unit_test(test_marked_reader),
        cmocka_unit_test(test_corrupt_section),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
