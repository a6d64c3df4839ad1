/*
 * test_faults.c — fault injection, as SQLite does it.
 *
 * Allocation faults: expert_set_allocator() installs a counting allocator;
 * every scenario (open + read + verify, from memory, from a file with mmap
 * and with read(), with several threads; a write with every codec and a
 * signature; signing in place; a v1 tar.gz open; key loading; safetensors
 * parsing) is run once to count its allocations, then once for every N with
 * the Nth allocation failing ("one-shot") and once for every N with every
 * allocation from the Nth on failing ("persistent"). Each run must end in
 * EXPERT_OK (the failure was absorbed) or EXPERT_E_NOMEM, free everything
 * it allocated (the allocator counts live blocks; LSan checks the rest
 * under ASan), and leave no file behind when a write fails. jansson, zstd,
 * OpenSSL and libarchive keep their own malloc (see alloc.c): only the
 * library's own allocations are failed.
 *
 * I/O faults: the test binary defines write, pwrite, pread, fsync, rename
 * and mmap itself. The library is a shared object (or linked into this
 * executable), so the dynamic linker resolves its calls to these
 * definitions first (symbol interposition, the same mechanism as an
 * LD_PRELOAD shim but without a second file or environment set-up, and
 * unlike `ld --wrap`, which only rewrites references inside the objects
 * being linked, not inside libexpert.so). When not armed they forward to
 * the next definition (dlsym RTLD_NEXT: libc, or the sanitizer's
 * interceptor). Armed, they fail the Nth call with EIO or ENOSPC, shorten
 * every write, fail fsync or rename, or refuse file mappings.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "craft.h"
#include "expert.h"
#include "expert_v1.h"

/* ------------------------------------------------------------ I/O shim */

enum { IO_OFF, IO_FAIL_NTH, IO_SHORT };

static struct {
    atomic_int armed;
    int mode;
    atomic_long calls;      /* write + pwrite (+ pread when count_reads) */
    long fail_at;
    int err;
    int count_reads;
    int fail_fsync, fail_rename, refuse_mmap, fail_pread;
    atomic_long short_writes, mmaps_refused;
    size_t failed_len; /* size asked for by the call that was failed */
} io;

#define REAL(name, ret, ...)                                                                       \
    static ret (*real_##name)(__VA_ARGS__);                                                        \
    if (real_##name == NULL)                                                                       \
        real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name);

static int io_fault_now(int fd)
{
    if (!atomic_load(&io.armed) || fd <= 2 || io.mode != IO_FAIL_NTH)
        return 0;
    return atomic_fetch_add(&io.calls, 1) + 1 == io.fail_at;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(write, ssize_t, int, const void *, size_t);
    if (atomic_load(&io.armed) && fd > 2) {
        if (io.mode == IO_SHORT && n > 7) {
            n = n / 3 + 1;
            atomic_fetch_add(&io.short_writes, 1);
        }
        if (io_fault_now(fd)) {
            errno = io.err;
            return -1;
        }
    }
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    if (atomic_load(&io.armed) && fd > 2) {
        if (io.mode == IO_SHORT && n > 7) {
            n = n / 3 + 1;
            atomic_fetch_add(&io.short_writes, 1);
        }
        if (io_fault_now(fd)) {
            errno = io.err;
            return -1;
        }
    }
    return real_pwrite(fd, buf, n, off);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    REAL(pread, ssize_t, int, void *, size_t, off_t);
    if (atomic_load(&io.armed) && fd > 2) {
        if (io.fail_pread) {
            errno = EIO;
            return -1;
        }
        if (io.mode == IO_SHORT && n > 7)
            n = n / 3 + 1;
        if (io.count_reads && io_fault_now(fd)) {
            io.failed_len = n;
            errno = io.err;
            return -1;
        }
    }
    return real_pread(fd, buf, n, off);
}

int fsync(int fd)
{
    REAL(fsync, int, int);
    if (atomic_load(&io.armed) && io.fail_fsync && fd > 2) {
        errno = EIO;
        return -1;
    }
    return real_fsync(fd);
}

int rename(const char *a, const char *b)
{
    REAL(rename, int, const char *, const char *);
    if (atomic_load(&io.armed) && io.fail_rename) {
        errno = EIO;
        return -1;
    }
    return real_rename(a, b);
}

/* The publish step of outfile.c: renameat over the destination, or linkat
 * of the unnamed O_TMPFILE inode; both fail like rename. */
int renameat(int da, const char *a, int db, const char *b)
{
    REAL(renameat, int, int, const char *, int, const char *);
    if (atomic_load(&io.armed) && io.fail_rename) {
        errno = EIO;
        return -1;
    }
    return real_renameat(da, a, db, b);
}

int linkat(int da, const char *a, int db, const char *b, int flags)
{
    REAL(linkat, int, int, const char *, int, const char *, int);
    if (atomic_load(&io.armed) && io.fail_rename) {
        errno = EIO;
        return -1;
    }
    return real_linkat(da, a, db, b, flags);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(mmap, void *, void *, size_t, int, int, int, off_t);
    if (atomic_load(&io.armed) && io.refuse_mmap && fd >= 0 && !(flags & MAP_ANONYMOUS)) {
        atomic_fetch_add(&io.mmaps_refused, 1);
        errno = ENODEV;
        return MAP_FAILED;
    }
    return real_mmap(addr, len, prot, flags, fd, off);
}

static void io_reset(void)
{
    atomic_store(&io.armed, 0);
    io.mode = IO_OFF;
    atomic_store(&io.calls, 0);
    io.fail_at = 0;
    io.err = EIO;
    io.count_reads = io.fail_fsync = io.fail_rename = io.refuse_mmap = io.fail_pread = 0;
    io.failed_len = 0;
}

/* ------------------------------------------------------------ alloc hook */

static struct {
    atomic_long count, live, failed;
    long fail_at;
    int persistent;
} fa;

static int fa_should_fail(void)
{
    long n = atomic_fetch_add(&fa.count, 1) + 1;
    if (fa.fail_at > 0 && (n == fa.fail_at || (fa.persistent && n > fa.fail_at))) {
        atomic_fetch_add(&fa.failed, 1);
        return 1;
    }
    return 0;
}

static void *fa_malloc(size_t n, void *u)
{
    (void)u;
    if (fa_should_fail())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&fa.live, 1);
    return p;
}

static void *fa_realloc(void *p, size_t n, void *u)
{
    (void)u;
    if (fa_should_fail())
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&fa.live, 1);
    return q;
}

static void fa_free(void *p, void *u)
{
    (void)u;
    if (p)
        atomic_fetch_sub(&fa.live, 1);
    free(p);
}

static const expert_allocator k_fa = {fa_malloc, fa_realloc, fa_free, NULL};

/* ------------------------------------------------------------ fixtures */

static char *g_dir;
static char *g_file, *g_priv, *g_pub, *g_targz_path;
static uint8_t *g_img, *g_targz;
static size_t g_img_n, g_targz_n;
static uint8_t *g_st;
static size_t g_st_n;

typedef struct stats {
    const char *name;
    long allocations, runs, nomem, absorbed, io_runs, io_errors;
} stats;
static stats g_stats[32];
static int g_nstats;

static stats *stat_new(const char *name)
{
    stats *s = &g_stats[g_nstats++];
    memset(s, 0, sizeof *s);
    s->name = name;
    return s;
}

static const char k_meta[] =
    "{\"format\":\"expert-v2\",\"name\":\"faults\",\"version\":\"1\",\"adapter_config\":\"adapter_config.json\","
    "\"modules\":[{\"path\":\"m.layers.0.q\",\"type\":\"lora\",\"layer\":0,\"r\":4,\"alpha\":8,\"rslora\":false}]}";

static float g_a[4 * 64], g_b[64 * 4];
static char g_big[200000];

static expert_status write_sample(const char *path, const expert_private_key *key, unsigned threads)
{
    expert_writer_options o = {.alignment = 64, .frame_size = 65536, .zstd_level = 3, .threads = threads};
    expert_writer *w = NULL;
    expert_error e;
    expert_status s = expert_writer_open(path, &o, &w, &e);
    if (s != EXPERT_OK)
        return s;
    expert_section_desc d[4];
    memset(d, 0, sizeof d);
    d[0] = (expert_section_desc){"m.layers.0.q.lora_A.weight", 0, EXPERT_SECTION_LORA_A, EXPERT_CODEC_SHUFFLE_ZSTD,
                                 EXPERT_DTYPE_F32, 2, 0, 0, 0, {4, 64, 0, 0}};
    d[1] = (expert_section_desc){"m.layers.0.q.lora_B.weight", 0, EXPERT_SECTION_LORA_B, EXPERT_CODEC_RAW,
                                 EXPERT_DTYPE_F32, 2, 0, 0, 0, {64, 4, 0, 0}};
    d[2] = (expert_section_desc){"big.txt", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_ZSTD, EXPERT_DTYPE_BYTES, 1, 0,
                                 EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {sizeof g_big, 0, 0, 0}};
    d[3] = (expert_section_desc){"adapter_config.json", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_RAW,
                                 EXPERT_DTYPE_BYTES, 1, 0, EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {2, 0, 0, 0}};
    const void *data[4] = {g_a, g_b, g_big, "{}"};
    size_t len[4] = {sizeof g_a, sizeof g_b, sizeof g_big, 2};
    for (int i = 0; i < 4 && s == EXPERT_OK; i++)
        s = expert_writer_add(w, &d[i], data[i], len[i], &e);
    if (s == EXPERT_OK)
        s = expert_writer_set_metadata(w, k_meta, strlen(k_meta), &e);
    if (s != EXPERT_OK) {
        expert_writer_abort(w);
        return s;
    }
    return expert_writer_finish(w, key, &e);
}

static int setup(void **state)
{
    (void)state;
    io_reset();
    g_dir = tmpdir_make("faults");
    assert_non_null(g_dir);
    prng r = {42};
    for (size_t i = 0; i < 256; i++) {
        g_a[i] = (float)(prng_next(&r) % 1000) / 1000.0f;
        g_b[i] = (float)(prng_next(&r) % 1000) / 1000.0f - 0.5f;
    }
    for (size_t i = 0; i < sizeof g_big; i++)
        g_big[i] = "abcdefgh \n"[(i * 7 + i / 1000) % 10];
    g_priv = path_join(g_dir, "k.pem");
    g_pub = path_join(g_dir, "k.pub.pem");
    expert_error e;
    assert_int_equal(expert_keygen(g_priv, g_pub, &e), EXPERT_OK);
    expert_private_key *k = NULL;
    assert_int_equal(expert_private_key_load(g_priv, &k, &e), EXPERT_OK);
    g_file = path_join(g_dir, "sample.expert");
    assert_int_equal(write_sample(g_file, k, 1), EXPERT_OK);
    expert_private_key_free(k);
    xb b;
    assert_int_equal(file_load(g_file, &b), 0);
    g_img = aligned_copy(b.p, b.n);
    g_img_n = b.n;
    xb_free(&b);

    /* a v1 package: a tar.gz with manifest, adapter config and safetensors */
    static const char hdr[] = "{\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":"
                              "{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
                              "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":"
                              "{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[32,64]}}";
    g_st_n = 8 + strlen(hdr) + 64;
    g_st = calloc(1, g_st_n);
    wr64(g_st, strlen(hdr));
    memcpy(g_st + 8, hdr, strlen(hdr));
    static const char manifest[] = "{\"name\":\"v1\",\"version\":\"1.0.0\",\"schema_version\":\"2.0\","
                                   "\"base_models\":[{\"name\":\"F:/m\",\"sha256\":\"\",\"adapters\":[]}]}";
    static const char cfg[] = "{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":4,\"target_modules\":[\"q_proj\"]}";
    const char *names[3] = {"manifest.json", "adapter_config.json", "adapter_model.safetensors"};
    const void *datas[3] = {manifest, cfg, g_st};
    size_t lens[3] = {strlen(manifest), strlen(cfg), g_st_n};
    xb tar = {0};
    size_t cap = 0;
    for (int i = 0; i < 3; i++) {
        size_t need = tar.n + 512 + ((lens[i] + 511) / 512) * 512 + 1024;
        if (need > cap) {
            cap = need * 2;
            tar.p = realloc(tar.p, cap);
        }
        uint8_t *h = tar.p + tar.n;
        memset(h, 0, 512);
        snprintf((char *)h, 100, "%s", names[i]);
        snprintf((char *)h + 100, 8, "%07o", 0644);
        snprintf((char *)h + 108, 8, "%07o", 0);
        snprintf((char *)h + 116, 8, "%07o", 0);
        snprintf((char *)h + 124, 12, "%011o", (unsigned)lens[i]);
        snprintf((char *)h + 136, 12, "%011o", 0);
        h[156] = '0';
        memcpy(h + 257, "ustar\00000", 8);
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (int k2 = 0; k2 < 512; k2++)
            sum += h[k2];
        snprintf((char *)h + 148, 8, "%06o", sum);
        tar.n += 512;
        memset(tar.p + tar.n, 0, ((lens[i] + 511) / 512) * 512);
        memcpy(tar.p + tar.n, datas[i], lens[i]);
        tar.n += ((lens[i] + 511) / 512) * 512;
    }
    memset(tar.p + tar.n, 0, 1024);
    tar.n += 1024;
    uLongf zl = compressBound((uLong)tar.n) + 64;
    g_targz = malloc(zl);
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = tar.p;
    z.avail_in = (uInt)tar.n;
    z.next_out = g_targz;
    z.avail_out = (uInt)zl;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    g_targz_n = z.total_out;
    deflateEnd(&z);
    free(tar.p);
    g_targz_path = path_join(g_dir, "pkg.expert");
    assert_int_equal(file_save(g_targz_path, g_targz, g_targz_n), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    expert_set_allocator(NULL);
    io_reset();
    tmpdir_remove(g_dir);
    free(g_file);
    free(g_priv);
    free(g_pub);
    free(g_targz_path);
    free(g_img);
    free(g_targz);
    free(g_st);
    return 0;
}

/* ------------------------------------------------------------ scenarios */

typedef expert_status (*scenario_fn)(void);

static expert_status read_everything(expert_reader *r, const expert_public_key *key)
{
    expert_error e;
    expert_status s = EXPERT_OK;
    for (uint32_t i = 0; i < expert_section_count(r) && s == EXPERT_OK; i++) {
        expert_section_info si;
        s = expert_section(r, i, &si);
        if (s != EXPERT_OK)
            break;
        uint32_t found;
        s = expert_find(r, si.name, si.name_length, &found);
        if (s != EXPERT_OK)
            break;
        uint8_t *buf = malloc(si.decoded_length ? (size_t)si.decoded_length : 1);
        s = expert_read(r, i, buf, (size_t)si.decoded_length, 0, &e);
        free(buf);
        if (s == EXPERT_OK && si.codec == EXPERT_CODEC_RAW) {
            const void *v;
            size_t vl;
            s = expert_view(r, i, &v, &vl, 0, &e);
        }
    }
    if (s == EXPERT_OK)
        s = expert_verify_full(r, key, &e);
    return s;
}

static expert_public_key *g_pubkey; /* loaded outside the fault window */

static expert_status sc_open_memory(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status s = expert_open_memory(g_img, g_img_n, NULL, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, g_pubkey);
    expert_close(r);
    return s;
}

static expert_status sc_open_threads(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.flags = 0, .threads = 4};
    expert_status s = expert_open_memory(g_img, g_img_n, &o, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, g_pubkey);
    expert_close(r);
    return s;
}

static expert_status sc_open_file(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status s = expert_open(g_file, NULL, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, g_pubkey);
    expert_close(r);
    return s;
}

static expert_status sc_open_file_nommap(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.flags = EXPERT_OPEN_NO_MMAP, .threads = 1};
    expert_status s = expert_open(g_file, &o, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, NULL);
    expert_close(r);
    return s;
}

static expert_status drop_sink(void *user, uint32_t section, const void *data, size_t length,
                               expert_error *err)
{
    (void)user;
    (void)section;
    (void)data;
    (void)length;
    (void)err;
    return EXPERT_OK;
}

/* Every section at once: streamed by the threads (decoded, not hashed), then
 * with expert_read_sections (buffers outside the library's allocator), then
 * everything else. */
static expert_status read_all_at_once(expert_reader *r)
{
    uint32_t n = expert_section_count(r);
    expert_read_request *q = calloc(n, sizeof *q);
    uint32_t *all = calloc(n, sizeof *all);
    expert_status s = q != NULL && all != NULL ? EXPERT_OK : EXPERT_E_NOMEM;
    for (uint32_t i = 0; i < n && s == EXPERT_OK; i++)
        all[i] = i;
    expert_error se;
    if (s == EXPERT_OK)
        s = expert_stream_sections(r, all, n, drop_sink, NULL, EXPERT_READ_NO_VERIFY, &se);
    free(all);
    for (uint32_t i = 0; i < n && s == EXPERT_OK; i++) {
        expert_section_info si;
        s = expert_section(r, i, &si);
        q[i] = (expert_read_request){i, malloc(si.decoded_length + 1), (size_t)si.decoded_length};
    }
    expert_error e;
    if (s == EXPERT_OK)
        s = expert_read_sections(r, q, n, 0, &e);
    for (uint32_t i = 0; q != NULL && i < n; i++)
        free(q[i].dst);
    free(q);
    if (s == EXPERT_OK)
        s = read_everything(r, NULL);
    return s;
}

static expert_status sc_read_sections(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.threads = 2};
    expert_status s = expert_open(g_file, &o, &r, &e);
    if (s == EXPERT_OK)
        s = read_all_at_once(r);
    expert_close(r);
    return s;
}

/* A marked open: with a mark of another file (the sparse image is
 * completed at open) and with g_file's own (trusted: sections by pread,
 * the image completed by the first view). */
static expert_mark g_other_mark, g_mark;

static expert_status open_marked(const expert_mark *mark)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.threads = 2, .mark = mark};
    expert_status s = expert_open(g_file, &o, &r, &e);
    if (s == EXPERT_OK)
        s = read_all_at_once(r);
    expert_close(r);
    return s;
}

static expert_status sc_open_marked_other(void) { return open_marked(&g_other_mark); }
static expert_status sc_open_marked(void) { return open_marked(&g_mark); }

static char *g_out;

static expert_status sc_write(void)
{
    expert_private_key *k = NULL;
    expert_error e;
    expert_status s = expert_private_key_load(g_priv, &k, &e);
    if (s == EXPERT_OK)
        s = write_sample(g_out, k, 1);
    expert_private_key_free(k);
    return s;
}

static expert_status sc_write_threads(void)
{
    return write_sample(g_out, NULL, 3);
}

static expert_status sc_sign(void)
{
    expert_private_key *k = NULL;
    expert_error e;
    expert_status s = expert_private_key_load(g_priv, &k, &e);
    if (s == EXPERT_OK)
        s = expert_sign_file(g_out, k, &e);
    expert_private_key_free(k);
    return s;
}

static expert_status sc_v1(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status s = expert_open_v1_memory(g_targz, g_targz_n, NULL, NULL, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, NULL);
    for (uint32_t i = 0; s == EXPERT_OK && r && i < expert_section_count(r); i++) {
        expert_section_info si;
        expert_section(r, i, &si);
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        void *d = NULL;
        size_t dl;
        s = expert_file_rebuild(r, i, &d, &dl, &e);
        expert_v1_free(d);
    }
    expert_close(r);
    return s;
}

static expert_status sc_v1_file(void)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status s = expert_open_v1(g_targz_path, NULL, NULL, &r, &e);
    if (s == EXPERT_OK)
        s = read_everything(r, NULL);
    expert_close(r);
    return s;
}

static expert_status sc_safetensors(void)
{
    expert_safetensors *st = NULL;
    expert_error e;
    expert_status s = expert_safetensors_parse(g_st, g_st_n, &st, &e);
    for (uint32_t i = 0; s == EXPERT_OK && i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        s = expert_safetensors_tensor(st, i, &t);
    }
    expert_safetensors_free(st);
    return s;
}

static expert_status sc_keys(void)
{
    expert_public_key *pk = NULL;
    expert_private_key *sk = NULL;
    expert_error e;
    expert_status s = expert_public_key_load(g_pub, &pk, &e);
    if (s == EXPERT_OK)
        s = expert_private_key_load(g_priv, &sk, &e);
    expert_public_key_free(pk);
    expert_private_key_free(sk);
    return s;
}

/* files in the test directory other than the fixtures */
static int stray_files(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && strcmp(de->d_name, "k.pem") && strcmp(de->d_name, "k.pub.pem") &&
            strcmp(de->d_name, "sample.expert") && strcmp(de->d_name, "pkg.expert") &&
            strcmp(de->d_name, "out.expert"))
            n++;
    closedir(d);
    return n;
}

static void run_alloc_faults(const char *name, scenario_fn fn, int writes, const uint8_t *existing,
                             size_t existing_n)
{
    stats *st = stat_new(name);
    if (writes) {
        g_out = path_join(g_dir, "out.expert");
        unlink(g_out);
        if (existing)
            assert_int_equal(file_save(g_out, existing, existing_n), 0);
    }
    memset(&fa, 0, sizeof fa);
    expert_set_allocator(&k_fa);
    expert_status base = fn();
    expert_set_allocator(NULL);
    assert_int_equal(base, EXPERT_OK);
    assert_int_equal(atomic_load(&fa.live), 0);
    long total = atomic_load(&fa.count);
    st->allocations = total;
    assert_true(total > 0);
    for (int persistent = 0; persistent < 2; persistent++) {
        for (long n = 1; n <= total; n++) {
            if (writes) {
                unlink(g_out);
                if (existing)
                    assert_int_equal(file_save(g_out, existing, existing_n), 0);
            }
            memset(&fa, 0, sizeof fa);
            fa.fail_at = n;
            fa.persistent = persistent;
            expert_set_allocator(&k_fa);
            expert_status s = fn();
            expert_set_allocator(NULL);
            st->runs++;
            if (s != EXPERT_OK && s != EXPERT_E_NOMEM)
                fail_msg("%s: allocation %ld failing (%s) gave %s, not NOMEM", name, n,
                         persistent ? "persistent" : "one-shot", expert_status_name(s));
            if (s == EXPERT_E_NOMEM)
                st->nomem++;
            else
                st->absorbed++;
            if (atomic_load(&fa.live) != 0)
                fail_msg("%s: allocation %ld failing (%s): %ld blocks leaked", name, n,
                         persistent ? "persistent" : "one-shot", atomic_load(&fa.live));
            if (writes) {
                assert_int_equal(stray_files(), 0);
                xb now = {0};
                int exists = file_load(g_out, &now) == 0;
                if (s != EXPERT_OK) {
                    if (existing) /* the file being replaced is intact */
                        assert_true(exists && now.n == existing_n && memcmp(now.p, existing, existing_n) == 0);
                    else
                        assert_false(exists);
                }
                xb_free(&now);
            }
        }
    }
    if (writes) {
        unlink(g_out);
        free(g_out);
        g_out = NULL;
    }
}

static void test_alloc_open(void **state)
{
    (void)state;
    expert_error e;
    assert_int_equal(expert_public_key_load(g_pub, &g_pubkey, &e), EXPERT_OK);
    run_alloc_faults("alloc: open_memory + read + view + verify_full(key)", sc_open_memory, 0, NULL, 0);
    run_alloc_faults("alloc: open_memory, 4 threads", sc_open_threads, 0, NULL, 0);
    run_alloc_faults("alloc: open (mmap) + read + verify_full(key)", sc_open_file, 0, NULL, 0);
    run_alloc_faults("alloc: open (read) + read + verify_full", sc_open_file_nommap, 0, NULL, 0);
    run_alloc_faults("alloc: open, 2 threads + read_sections + read + verify_full", sc_read_sections,
                     0, NULL, 0);
    expert_public_key_free(g_pubkey);
    g_pubkey = NULL;
}

static void test_alloc_write(void **state)
{
    (void)state;
    run_alloc_faults("alloc: write new file, signed", sc_write, 1, NULL, 0);
    run_alloc_faults("alloc: write, 3 compression threads", sc_write_threads, 1, NULL, 0);
    static const uint8_t old[] = "the old file, which must survive";
    run_alloc_faults("alloc: write replacing an existing file", sc_write, 1, old, sizeof old);
    run_alloc_faults("alloc: sign in place", sc_sign, 1, g_img, g_img_n);
}

static void test_alloc_other(void **state)
{
    (void)state;
    run_alloc_faults("alloc: v1 tar.gz from memory + read + rebuild", sc_v1, 0, NULL, 0);
    run_alloc_faults("alloc: v1 tar.gz from a file", sc_v1_file, 0, NULL, 0);
    run_alloc_faults("alloc: safetensors parse", sc_safetensors, 0, NULL, 0);
    run_alloc_faults("alloc: key loading", sc_keys, 0, NULL, 0);
}

/* ------------------------------------------------------------ I/O faults */

static void io_write_faults(const char *name, scenario_fn fn, const uint8_t *existing, size_t existing_n,
                            int err, int count_reads)
{
    stats *st = stat_new(name);
    g_out = path_join(g_dir, "out.expert");
    unlink(g_out);
    if (existing)
        assert_int_equal(file_save(g_out, existing, existing_n), 0);
    /* count the calls */
    io_reset();
    io.mode = IO_FAIL_NTH;
    io.count_reads = count_reads;
    atomic_store(&io.armed, 1);
    assert_int_equal(fn(), EXPERT_OK);
    atomic_store(&io.armed, 0);
    long total = atomic_load(&io.calls);
    assert_true(total > 0);
    for (long n = 1; n <= total; n++) {
        unlink(g_out);
        if (existing)
            assert_int_equal(file_save(g_out, existing, existing_n), 0);
        io_reset();
        io.mode = IO_FAIL_NTH;
        io.fail_at = n;
        io.err = err;
        io.count_reads = count_reads;
        atomic_store(&io.armed, 1);
        expert_status s = fn();
        atomic_store(&io.armed, 0);
        st->io_runs++;
        /* expert_open sniffs 2 bytes for the gzip magic with pread and maps
         * the file when that fails: a failed sniff is absorbed (the mapping
         * still reads the real bytes), not an error to report */
        if (s == EXPERT_OK && io.failed_len == 2) {
            st->absorbed++;
        } else {
            if (s != EXPERT_E_IO)
                fail_msg("%s: call %ld failing with %s gave %s, not IO", name, n, strerror(err),
                         expert_status_name(s));
            st->io_errors++;
        }
        assert_int_equal(stray_files(), 0);
        xb now = {0};
        int exists = file_load(g_out, &now) == 0;
        if (s != EXPERT_OK && existing)
            assert_true(exists && now.n == existing_n && memcmp(now.p, existing, existing_n) == 0);
        else if (s != EXPERT_OK)
            assert_false(exists);
        xb_free(&now);
    }
    io_reset();
    unlink(g_out);
    free(g_out);
    g_out = NULL;
}

static expert_status sc_write_plain(void) { return write_sample(g_out, NULL, 1); }

static void test_io_write_errors(void **state)
{
    (void)state;
    static const uint8_t old[] = "previous content of the target";
    io_write_faults("io: EIO on the Nth write/pwrite, new file", sc_write_plain, NULL, 0, EIO, 0);
    io_write_faults("io: ENOSPC on the Nth write/pwrite, new file", sc_write_plain, NULL, 0, ENOSPC, 0);
    io_write_faults("io: EIO on the Nth write/pwrite/pread, replacing a file", sc_write_plain, old,
                    sizeof old, EIO, 1);
    io_write_faults("io: ENOSPC on the Nth write/pwrite, replacing a file", sc_write_plain, old,
                    sizeof old, ENOSPC, 0);
    io_write_faults("io: EIO on the Nth write/pwrite/pread, signing in place", sc_sign, g_img, g_img_n,
                    EIO, 1);
}

static void test_io_sync_rename(void **state)
{
    (void)state;
    static const uint8_t old[] = "previous content of the target";
    for (int which = 0; which < 2; which++) {
        for (int replace = 0; replace < 2; replace++) {
            static const char *names[2][2] = {{"io: fsync fails, new file", "io: fsync fails, replacing a file and signing in place"},
                                              {"io: rename fails, new file", "io: rename fails, replacing a file and signing in place"}};
            stats *st = stat_new(names[which][replace]);
            g_out = path_join(g_dir, "out.expert");
            unlink(g_out);
            if (replace)
                assert_int_equal(file_save(g_out, old, sizeof old), 0);
            io_reset();
            io.fail_fsync = which == 0;
            io.fail_rename = which == 1;
            atomic_store(&io.armed, 1);
            expert_status s = write_sample(g_out, NULL, 1);
            atomic_store(&io.armed, 0);
            st->io_runs++;
            assert_int_equal(s, EXPERT_E_IO);
            st->io_errors++;
            assert_int_equal(stray_files(), 0);
            xb now = {0};
            int exists = file_load(g_out, &now) == 0;
            if (replace)
                assert_true(exists && now.n == sizeof old && memcmp(now.p, old, sizeof old) == 0);
            else
                assert_false(exists);
            xb_free(&now);
            /* signing in place */
            if (replace) {
                assert_int_equal(file_save(g_out, g_img, g_img_n), 0);
                io_reset();
                io.fail_fsync = which == 0;
                io.fail_rename = which == 1;
                atomic_store(&io.armed, 1);
                s = sc_sign();
                atomic_store(&io.armed, 0);
                assert_int_equal(s, EXPERT_E_IO);
                st->io_runs++;
                st->io_errors++;
                assert_int_equal(stray_files(), 0);
                assert_int_equal(file_load(g_out, &now), 0);
                assert_true(now.n == g_img_n && memcmp(now.p, g_img, g_img_n) == 0);
                xb_free(&now);
            }
            io_reset();
            unlink(g_out);
            free(g_out);
            g_out = NULL;
        }
    }
}

static void test_io_short_writes(void **state)
{
    (void)state;
    stats *st = stat_new("io: every write/pwrite/pread short");
    g_out = path_join(g_dir, "out.expert");
    unlink(g_out);
    io_reset();
    io.mode = IO_SHORT;
    atomic_store(&io.armed, 1);
    expert_status s = write_sample(g_out, NULL, 1);
    atomic_store(&io.armed, 0);
    st->io_runs = atomic_load(&io.short_writes);
    assert_int_equal(s, EXPERT_OK);
    assert_true(atomic_load(&io.short_writes) > 0);
    /* the file is complete and identical to one written without faults */
    char *ref = path_join(g_dir, "ref.expert");
    assert_int_equal(write_sample(ref, NULL, 1), EXPERT_OK);
    xb a = {0}, b = {0};
    assert_int_equal(file_load(g_out, &a), 0);
    assert_int_equal(file_load(ref, &b), 0);
    assert_true(a.n == b.n && memcmp(a.p, b.p, a.n) == 0);
    xb_free(&a);
    xb_free(&b);
    unlink(ref);
    free(ref);
    expert_reader *r = NULL;
    expert_error e;
    /* short reads in the read() fallback */
    expert_open_options o = {.flags = EXPERT_OPEN_NO_MMAP, .threads = 1};
    io_reset();
    io.mode = IO_SHORT;
    atomic_store(&io.armed, 1);
    s = expert_open(g_out, &o, &r, &e);
    atomic_store(&io.armed, 0);
    assert_int_equal(s, EXPERT_OK);
    assert_int_equal(read_everything(r, NULL), EXPERT_OK);
    expert_close(r);
    unlink(g_out);
    free(g_out);
    g_out = NULL;
    io_reset();
}

static void test_mmap_refused(void **state)
{
    (void)state;
    stats *st = stat_new("io: mmap refused / EXPERT_OPEN_NO_MMAP / pread EIO");
    for (int how = 0; how < 2; how++) {
        expert_reader *r = NULL;
        expert_error e;
        expert_open_options o = {.flags = how ? EXPERT_OPEN_NO_MMAP : 0, .threads = 1};
        io_reset();
        io.refuse_mmap = 1;
        atomic_store(&io.armed, 1);
        expert_status s = expert_open(g_file, &o, &r, &e);
        atomic_store(&io.armed, 0);
        st->io_runs++;
        assert_int_equal(s, EXPERT_OK);
        if (how == 0)
            assert_true(atomic_load(&io.mmaps_refused) > 0);
        expert_header_info h;
        expert_header(r, &h);
        assert_int_equal(h.used_mmap, 0);
        assert_int_equal(read_everything(r, NULL), EXPERT_OK);
        /* same bytes as through the mapping */
        expert_reader *m = NULL;
        assert_int_equal(expert_open(g_file, NULL, &m, &e), EXPERT_OK);
        expert_header(m, &h);
        assert_int_equal(h.used_mmap, 1);
        for (uint32_t i = 0; i < expert_section_count(r); i++) {
            expert_section_info si;
            expert_section(r, i, &si);
            uint8_t *x = malloc(si.decoded_length + 1), *y = malloc(si.decoded_length + 1);
            assert_int_equal(expert_read(r, i, x, (size_t)si.decoded_length, 0, &e), EXPERT_OK);
            assert_int_equal(expert_read(m, i, y, (size_t)si.decoded_length, 0, &e), EXPERT_OK);
            assert_memory_equal(x, y, (size_t)si.decoded_length);
            free(x);
            free(y);
        }
        expert_close(m);
        expert_close(r);
    }
    /* a failing read() in the fallback is an IO error, not a crash or a leak */
    expert_reader *r = NULL;
    expert_error e;
    io_reset();
    io.refuse_mmap = 1;
    io.fail_pread = 1;
    atomic_store(&io.armed, 1);
    expert_status s = expert_open(g_file, NULL, &r, &e);
    atomic_store(&io.armed, 0);
    st->io_runs++;
    assert_int_equal(s, EXPERT_E_IO);
    st->io_errors++;
    assert_null(r);
    io_reset();
}

/* Marked opens under allocation and pread faults. A mark can only be made
 * for a file older than EXPERT_MARK_SETTLE_SECONDS: wait that long once. */
static void test_marked(void **state)
{
    (void)state;
    sleep(EXPERT_MARK_SETTLE_SECONDS + 1);
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_file, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    assert_int_equal(expert_mark_make(r, &g_mark, &e), EXPERT_OK);
    expert_close(r);
    g_other_mark = g_mark;
    g_other_mark.bytes[16] ^= 1; /* another inode */
    run_alloc_faults("alloc: open with a mark + read_sections + read + verify_full", sc_open_marked,
                     0, NULL, 0);
    run_alloc_faults("alloc: open with another file's mark + read_sections + ...",
                     sc_open_marked_other, 0, NULL, 0);
    io_write_faults("io: EIO on the Nth pread, open + read_sections (pread) + ...", sc_read_sections,
                    NULL, 0, EIO, 1);
    io_write_faults("io: EIO on the Nth pread, open with a mark + ...", sc_open_marked, NULL, 0, EIO,
                    1);
    io_write_faults("io: EIO on the Nth pread, open with another file's mark + ...",
                    sc_open_marked_other, NULL, 0, EIO, 1);
    stats *st = stat_new("io: every pread short, marked and pread loads");
    scenario_fn fns[] = {sc_read_sections, sc_open_marked, sc_open_marked_other};
    for (int k = 0; k < 3; k++) {
        io_reset();
        io.mode = IO_SHORT;
        atomic_store(&io.armed, 1);
        expert_status s = fns[k]();
        atomic_store(&io.armed, 0);
        st->io_runs++;
        assert_int_equal(s, EXPERT_OK);
    }
    io_reset();
}

/* ------------------------------------------------------------ report */

static void test_write_report(void **state)
{
    (void)state;
    const char *dir = getenv("EXPERT_RELIABILITY_DIR");
    if (!dir || !*dir)
        skip();
    mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/faults.md", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    long runs = 0, allocs = 0, io_runs = 0;
    fprintf(f, "### Fault injection (ref/tests/test_faults.c)\n\n");
    fprintf(f, "Allocation faults: every scenario runs once per allocation N with allocation N failing "
               "(one-shot) and once with every allocation from N on failing (persistent). Required: "
               "EXPERT_OK (failure absorbed) or EXPERT_E_NOMEM, no live block left, no stray or partial "
               "file, a replaced file intact.\n\n");
    fprintf(f, "| scenario | library allocations | runs | NOMEM | absorbed (OK) |\n|---|--:|--:|--:|--:|\n");
    for (int i = 0; i < g_nstats; i++)
        if (g_stats[i].allocations) {
            fprintf(f, "| %s | %ld | %ld | %ld | %ld |\n", g_stats[i].name, g_stats[i].allocations,
                    g_stats[i].runs, g_stats[i].nomem, g_stats[i].absorbed);
            runs += g_stats[i].runs;
            allocs += g_stats[i].allocations;
        }
    fprintf(f, "\nI/O faults (interposed write/pwrite/pread/fsync/rename/mmap): required IO, no partial "
               "output file, no temporary left, an existing file unchanged; short writes must still "
               "produce the identical file; refused mmap must fall back to read().\n\n");
    fprintf(f, "| scenario | runs (short: calls shortened) | IO errors reported | absorbed (2-byte magic sniff) |\n|---|--:|--:|--:|\n");
    for (int i = 0; i < g_nstats; i++)
        if (!g_stats[i].allocations) {
            fprintf(f, "| %s | %ld | %ld | %ld |\n", g_stats[i].name, g_stats[i].io_runs, g_stats[i].io_errors,
                    g_stats[i].absorbed);
            io_runs += g_stats[i].io_runs;
        }
    fprintf(f, "\nTotal: %ld allocation-fault runs over %ld counted allocations, %ld I/O-fault runs, all passed.\n\n",
            runs, allocs, io_runs);
    fclose(f);
    snprintf(path, sizeof path, "%s/faults.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"alloc_runs\": %ld, \"allocations\": %ld, \"io_runs\": %ld}\n", runs, allocs, io_runs);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_open),
        cmocka_unit_test(test_alloc_write),
        cmocka_unit_test(test_alloc_other),
        cmocka_unit_test(test_io_write_errors),
        cmocka_unit_test(test_io_sync_rename),
        cmocka_unit_test(test_io_short_writes),
        cmocka_unit_test(test_mmap_refused), cmocka_unit_test(test_marked),
        cmocka_unit_test(test_write_report),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
