/*
 * corrupt.c — the systematic corruption suite.
 *
 * For every valid base file (bases.c) it enumerates mutations:
 *   - truncation at every byte of header, metadata, TOC, index and strings
 *     and at every section boundary (every byte of small files);
 *   - single-bit flips at every byte of header (all 8 bits), metadata, TOC,
 *     index and strings, and at sampled positions of every section and of
 *     the padding (every byte of small files);
 *   - targeted edits (edits.c) with the digests recomputed.
 * Each mutation has an expected outcome (class set and validation level,
 * spec §12/§15). Every mutated file is taken through structural (open),
 * access (every section read), full (expert_verify_full) and, for signed
 * files or signature mutations, full with the public key; the first level
 * that reports an error is the detection level.
 *
 * Mutations run in a forked child; a crash or a mutation running past the
 * watchdog is counted (crashed / hung) and the child is restarted after it.
 *
 * Output: a Markdown report fragment and a JSON summary (for
 * reports/reliability.md), anomalies on stderr. Exit status 0 when there
 * are no crashes, hangs, misses, wrong classes/levels or false rejections,
 * other than those listed in the known-issues file (which must all still
 * reproduce).
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "corrupt.h"

ctx g;

enum { K_TRUNC, K_FLIP, K_EDIT };
enum { Z_HDR, Z_DIGEST, Z_SIG, Z_EXT, Z_META, Z_TOC, Z_INDEX, Z_STRINGS, Z_FTABLE, Z_BODY_RAW,
       Z_BODY_FRAMED, Z_PAD, Z_BOUNDARY, Z_N };
static const char *k_zone[Z_N] = {"header fields", "header digests", "header signature",
                                  "header extension", "metadata", "TOC", "index", "strings",
                                  "frame tables", "section bodies (raw)", "section bodies (zstd)",
                                  "padding", "section boundaries"};
static const int k_structure_zone[Z_N] = {1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};

typedef struct mut {
    uint16_t base;
    uint8_t kind, zone;
    uint32_t sec;
    uint64_t pos;
    uint32_t arg;
} mut;

enum { ST_PENDING, ST_DONE, ST_CRASH, ST_HANG, ST_NA };
enum { V_OK, V_ALT, V_WRONG, V_MISSED, V_FALSE_REJECT, V_N };

typedef struct result {
    uint8_t state, verdict, exp_level, got_level, got_class, known, over_rss;
    uint16_t rss_mb; /* the worker's peak RSS growth, in MiB, once this mutation ran */
    float ms;
} result;

typedef struct shm_hdr {
    volatile int64_t current;
    volatile int64_t t0_ms;
} shm_hdr;

static mut *g_muts;
static size_t g_nmuts, g_capmuts;
static result *g_res;
static shm_hdr *g_shm;
static const edit *g_edit_tab;
static size_t g_nedit;
static FILE *g_anom;
static long g_worker_base_kb; /* ru_maxrss of a worker when it starts */

/* What the spec lets a valid file need: full validation holds up to three
 * frames of at most 64 MiB (frame, scratch, and the access-level read of a
 * one-frame section), plus 64 MiB for the section a caller reads whole and
 * allocator/sanitizer slack. Over it, a mutation is a resource finding. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZER_RSS_MB 512 /* ASan: a 256 MiB quarantine of freed blocks, shadow, caches */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZER_RSS_MB 512
#endif
#endif
#ifndef SANITIZER_RSS_MB
#define SANITIZER_RSS_MB 0
#endif
#define CASE_RSS_MB (3 * 64 + 64 + 128 + SANITIZER_RSS_MB)

static struct {
    const char *gen, *cli, *vectors, *json_out, *md_out, *known, *only;
    double timeout;
    double case_seconds; /* per-mutation budgets: resources are findings */
    long case_rss_mb;
    int exhaustive, quick, verbose;
} cfg = {.timeout = 30.0, .case_seconds = 5.0, .case_rss_mb = CASE_RSS_MB};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void push(uint16_t b, uint8_t kind, uint8_t zone, uint32_t sec, uint64_t pos, uint32_t arg)
{
    if (g_nmuts == g_capmuts) {
        g_capmuts = g_capmuts ? g_capmuts * 2 : 4096;
        g_muts = realloc(g_muts, g_capmuts * sizeof *g_muts);
        if (!g_muts)
            abort();
    }
    g_muts[g_nmuts++] = (mut){b, kind, zone, sec, pos, arg};
}

/* ------------------------------------------------------ zones */

typedef struct ival {
    uint64_t a, b;
    int zone;
    uint32_t sec;
} ival;

static int ival_cmp(const void *x, const void *y)
{
    const ival *p = x, *q = y;
    return p->a < q->a ? -1 : p->a > q->a;
}

/* every byte of the base, classified; padding fills the gaps */
static ival *zones_of(const base *b, size_t *count)
{
    size_t cap = 16 + 2 * (size_t)b->m.n, n = 0;
    ival *v = xm_alloc(2 * cap * sizeof *v);
    uint32_t hs = b->m.header_size;
    v[n++] = (ival){0x00, 0x14, Z_HDR, 0};
    v[n++] = (ival){0x14, 0x34, Z_DIGEST, 0};
    v[n++] = (ival){0x34, 0x74, Z_SIG, 0};
    v[n++] = (ival){0x74, 0x80, Z_HDR, 0};
    v[n++] = (ival){0x80, 0xA0, Z_DIGEST, 0};
    v[n++] = (ival){0xA0, 0x100, Z_HDR, 0};
    if (hs > 256)
        v[n++] = (ival){0x100, hs, Z_EXT, 0};
    uint64_t r[4][2] = {{b->meta_off, b->m.meta_len}, {b->toc_off, (uint64_t)b->m.n * TOC_ENTRY},
                        {b->index_off, b->index_len}, {b->str_off, b->m.strings_len}};
    int rz[4] = {Z_META, Z_TOC, Z_INDEX, Z_STRINGS};
    for (int k = 0; k < 4; k++)
        if (r[k][1])
            v[n++] = (ival){r[k][0], r[k][0] + r[k][1], rz[k], 0};
    for (uint32_t i = 0; i < b->m.n; i++) {
        const xm_section *s = &b->m.sec[i];
        if (s->len == 0)
            continue;
        uint64_t o = rd64(s->entry + T_OFFSET);
        if (s->entry[T_CODEC] == 0) {
            v[n++] = (ival){o, o + s->len, Z_BODY_RAW, i};
        } else {
            uint64_t dec = rd64(s->entry + T_DECODED), fs = rd32(s->entry + T_FRAME);
            uint64_t t = 4 * ((dec - 1) / fs + 1);
            v[n++] = (ival){o, o + t, Z_FTABLE, i};
            v[n++] = (ival){o + t, o + s->len, Z_BODY_FRAMED, i};
        }
    }
    qsort(v, n, sizeof *v, ival_cmp);
    size_t m = n;
    uint64_t end = 0;
    for (size_t k = 0; k < n; k++) {
        if (v[k].a > end)
            v[m++] = (ival){end, v[k].a, Z_PAD, 0};
        if (v[k].b > end)
            end = v[k].b;
    }
    if (end < b->n)
        v[m++] = (ival){end, b->n, Z_PAD, 0};
    qsort(v, m, sizeof *v, ival_cmp);
    *count = m;
    return v;
}

static uint64_t rnd_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 0x2545F4914F6CDD1Dull;
}

#define SMALL_FILE 16384u
#define STRUCT_SAMPLES 384u

static void enumerate(uint16_t bi)
{
    const base *b = &g.bases[bi];
    int all = cfg.exhaustive || b->n <= SMALL_FILE;
    size_t nz;
    ival *z = zones_of(b, &nz);
    /* Golden vectors are many: outside --exhaustive their structure bytes
     * (past the 256 fixed header bytes) are sampled with a stride so that
     * about STRUCT_SAMPLES positions per vector are flipped and truncated. */
    uint64_t stride = 1, sbytes = 0;
    if (!cfg.exhaustive && b->is_vector) {
        all = 0;
        for (size_t k = 0; k < nz; k++)
            if (k_structure_zone[z[k].zone] && z[k].a >= 256)
                sbytes += z[k].b - z[k].a;
        stride = sbytes / STRUCT_SAMPLES + 1;
    }

    /* truncations */
    uint8_t *len_seen = xm_alloc(b->n + 1);
    for (size_t k = 0; k < nz; k++) {
        int zone = z[k].zone;
        int structure = k_structure_zone[zone] || zone == Z_SIG;
        if (structure || all) {
            for (uint64_t p = z[k].a; p < z[k].b; p++)
                if (!len_seen[p] && (p < 256 || (p - z[k].a) % stride == 0)) {
                    len_seen[p] = 1;
                    push(bi, K_TRUNC, (uint8_t)(zone == Z_DIGEST || zone == Z_SIG ? Z_HDR : zone), 0, p, 0);
                }
        }
    }
    for (uint32_t i = 0; i < b->m.n; i++) { /* section boundaries */
        uint64_t o = rd64(b->m.sec[i].entry + T_OFFSET), e = o + b->m.sec[i].len;
        uint64_t c[4] = {o, o + 1, e - (e > o), e};
        for (int k = 0; k < 4; k++)
            if (b->m.sec[i].len && c[k] < b->n && !len_seen[c[k]]) {
                len_seen[c[k]] = 1;
                push(bi, K_TRUNC, Z_BOUNDARY, i, c[k], 0);
            }
    }
    free(len_seen);

    /* bit flips */
    size_t pad_budget = all ? SIZE_MAX : 64, pad_total = 0;
    for (size_t k = 0; k < nz; k++)
        if (z[k].zone == Z_PAD)
            pad_total += (size_t)(z[k].b - z[k].a);
    for (size_t k = 0; k < nz; k++) {
        int zone = z[k].zone;
        uint64_t a = z[k].a, e = z[k].b, len = e - a;
        int header = zone == Z_HDR || zone == Z_DIGEST || zone == Z_SIG || zone == Z_EXT;
        if (k_structure_zone[zone] || (zone == Z_SIG && !b->is_vector) || all || len < 64) {
            for (uint64_t p = a; p < e; p++) {
                if (zone == Z_PAD && !all && pad_total > pad_budget && rnd() % pad_total >= pad_budget)
                    continue;
                if (p >= 256 && k_structure_zone[zone] && (p - a) % stride != 0)
                    continue;
                if ((header && p < 256 && !b->is_vector) || cfg.exhaustive) {
                    for (uint32_t bit = 0; bit < 8; bit++)
                        push(bi, K_FLIP, (uint8_t)zone, z[k].sec, p, bit);
                } else {
                    push(bi, K_FLIP, (uint8_t)zone, z[k].sec, p, (uint32_t)((p * 3 + bi) & 7));
                }
            }
        } else if (zone == Z_PAD) {
            for (uint64_t p = a; p < e; p++)
                if (pad_total <= pad_budget || rnd() % pad_total < pad_budget)
                    push(bi, K_FLIP, (uint8_t)zone, 0, p, (uint32_t)(p & 7));
        } else { /* sampled section bytes: ends plus evenly spread and random positions */
            uint64_t picks[40];
            int np = 0;
            picks[np++] = a;
            picks[np++] = a + 1;
            picks[np++] = e - 1;
            for (int s = 1; s <= 16; s++)
                picks[np++] = a + len * (uint64_t)s / 17;
            for (int s = 0; s < 16; s++)
                picks[np++] = a + rnd() % len;
            for (int s = 0; s < np; s++)
                push(bi, K_FLIP, (uint8_t)zone, z[k].sec, picks[s], (uint32_t)(rnd() & 7));
        }
    }
    free(z);

    /* targeted edits */
    for (size_t k = 0; k < g_nedit; k++)
        push(bi, K_EDIT, 0, 0, 0, (uint32_t)k);
}

/* ------------------------------------------------------ evaluation */

static uint8_t *g_buf;
static size_t g_buf_cap;

static void evaluate(const uint8_t *p, size_t n, int hint, const expert_public_key *key, int run_k,
                     int *level, int *cls, expert_error *err)
{
    expert_reader *r = NULL;
    memset(err, 0, sizeof *err);
    expert_status st = expert_open_memory(p, n, NULL, &r, err);
    if (st != EXPERT_OK) {
        *level = LV_S;
        *cls = st;
        return;
    }
    uint32_t count = expert_section_count(r);
    for (int64_t k = hint >= 0 ? -1 : 0; k < (int64_t)count && st == EXPERT_OK; k++) {
        uint32_t i = k < 0 ? (uint32_t)hint : (uint32_t)k;
        if (k >= 0 && (int64_t)i == hint)
            continue;
        expert_section_info si;
        if (expert_section(r, i, &si) != EXPERT_OK)
            continue;
        if (si.decoded_length > ((uint64_t)1 << 31))
            continue; /* full validation covers it frame by frame */
        if (si.decoded_length > g_buf_cap) {
            free(g_buf);
            g_buf_cap = (size_t)si.decoded_length;
            g_buf = xm_alloc(g_buf_cap);
        }
        st = expert_read(r, i, g_buf, g_buf_cap, 0, err);
    }
    if (st != EXPERT_OK) {
        *level = LV_A;
        *cls = st;
        expert_close(r);
        return;
    }
    st = expert_verify_full(r, NULL, err);
    if (st != EXPERT_OK) {
        *level = LV_F;
        *cls = st;
        expert_close(r);
        return;
    }
    if (run_k) {
        st = expert_verify_full(r, key, err);
        if (st != EXPERT_OK) {
            *level = LV_K;
            *cls = st;
            expert_close(r);
            return;
        }
    }
    expert_close(r);
    *level = LV_NONE;
    *cls = 0;
}

static const char *lvname(int l)
{
    static const char *n[] = {"accepted", "structural", "access", "full", "full+key"};
    return l >= 0 && l <= 4 ? n[l] : "?";
}

static void mut_key(const mut *m, char *buf, size_t cap)
{
    const base *b = &g.bases[m->base];
    if (m->kind == K_EDIT)
        snprintf(buf, cap, "%s@%s", g_edit_tab[m->arg].name, b->name);
    else if (m->kind == K_TRUNC)
        snprintf(buf, cap, "truncate/%s@%s#%llu", k_zone[m->zone], b->name, (unsigned long long)m->pos);
    else
        snprintf(buf, cap, "flip/%s@%s#%llu.%u", k_zone[m->zone], b->name, (unsigned long long)m->pos,
                 m->arg);
}

static void describe_mask(uint64_t mask, char *buf, size_t cap)
{
    if (mask == ANY_CLASS) {
        snprintf(buf, cap, "any class");
        return;
    }
    buf[0] = 0;
    for (int c = 0; c < 64; c++)
        if (mask & CLS(c)) {
            size_t l = strlen(buf);
            snprintf(buf + l, cap - l, "%s%s", l ? "|" : "", expert_status_name((expert_status)c));
        }
}

static int matches(int level, uint64_t mask, int got_level, int got_class)
{
    if (level != got_level)
        return 0;
    if (level == LV_NONE)
        return 1;
    return (mask & CLS(got_class)) != 0;
}

static void run_one(size_t idx)
{
    const mut *m = &g_muts[idx];
    base *b = &g.bases[m->base];
    result *res = &g_res[idx];
    expect e;
    memset(&e, 0, sizeof e);
    const uint8_t *p = b->img;
    size_t n = b->n;
    int hint = -1;
    xb out = {0};
    int64_t t0 = now_ms();

    if (m->kind == K_TRUNC) {
        n = (size_t)m->pos;
        int o = xm_oracle_header(p, n);
        e.level = LV_S;
        e.mask = CLS(o ? o : EXPERT_E_TRUNCATED);
    } else if (m->kind == K_FLIP) {
        b->img[m->pos] ^= (uint8_t)(1u << m->arg);
        switch (m->zone) {
        case Z_HDR: case Z_DIGEST: case Z_EXT: {
            int o = xm_oracle_header(p, n);
            e.level = LV_S;
            e.mask = CLS(o ? o : EXPERT_E_STRUCTURE_HASH_MISMATCH);
            break;
        }
        case Z_SIG: e.level = LV_K; e.mask = CLS(EXPERT_E_BAD_SIGNATURE); break;
        case Z_META: case Z_TOC: case Z_INDEX: case Z_STRINGS:
            e.level = LV_S;
            e.mask = CLS(EXPERT_E_STRUCTURE_HASH_MISMATCH);
            break;
        case Z_FTABLE: e.level = LV_A; e.mask = CLS(EXPERT_E_SIZE_MISMATCH); hint = (int)m->sec; break;
        case Z_BODY_RAW: e.level = LV_A; e.mask = CLS(EXPERT_E_SECTION_HASH_MISMATCH); hint = (int)m->sec; break;
        case Z_BODY_FRAMED:
            e.level = LV_A;
            e.mask = CLS(EXPERT_E_DECODE_FAILED) | CLS(EXPERT_E_SECTION_HASH_MISMATCH);
            /* a flip that leaves the decoded bytes unchanged (e.g. in a window
             * descriptor) is only visible to the file hash */
            e.alt_level = LV_F;
            e.alt_mask = CLS(EXPERT_E_FILE_HASH_MISMATCH);
            hint = (int)m->sec;
            break;
        case Z_PAD: e.level = LV_F; e.mask = CLS(EXPERT_E_BAD_PADDING); break;
        }
    } else {
        if (g_edit_tab[m->arg].fn(b, g_edit_tab[m->arg].arg, &out, &e) != 0) {
            xb_free(&out);
            res->state = ST_NA;
            return;
        }
        p = out.p;
        n = out.n;
        /* S1–S8 come before everything: an edit that (also) breaks them,
         * e.g. metadata grown past 2^24, must be reported by them */
        int o = xm_oracle_header(p, n);
        if (o != 0) {
            memset(&e, 0, sizeof e);
            e.level = LV_S;
            e.mask = CLS(o);
        }
        /* a valid edit of a signed file changes what the signature covers */
        if (e.level == LV_NONE && b->key >= 0 && n >= 256 &&
            memcmp(p + H_STRUCT_SHA, b->img + H_STRUCT_SHA, 32) != 0) {
            e.level = LV_K;
            e.mask = CLS(EXPERT_E_BAD_SIGNATURE);
        }
    }

    int sig_nonzero = 0;
    for (int k = 0; n >= 0x74 && k < 64 && !sig_nonzero; k++)
        sig_nonzero = p[H_SIG + k] != 0;
    /* key -2: signed with a key we do not have (a vector without "key"):
     * only signature mutations are checked with a key (any key must fail) */
    int run_k = b->key >= 0 || (sig_nonzero && b->key == -1) || e.level == LV_K;
    const expert_public_key *key = g.pub[b->key >= 0 ? b->key : 0];
    int level, cls;
    expert_error err;
    evaluate(p, n, hint, key, run_k, &level, &cls, &err);

    if (m->kind == K_FLIP)
        b->img[m->pos] ^= (uint8_t)(1u << m->arg);
    xb_free(&out);

    res->exp_level = (uint8_t)e.level;
    res->got_level = (uint8_t)level;
    res->got_class = (uint8_t)cls;
    if (matches(e.level, e.mask, level, cls))
        res->verdict = V_OK;
    else if (e.alt_level && matches(e.alt_level, e.alt_mask, level, cls))
        res->verdict = V_ALT;
    else if (level == LV_NONE)
        res->verdict = V_MISSED;
    else if (e.level == LV_NONE)
        res->verdict = V_FALSE_REJECT;
    else
        res->verdict = V_WRONG;
    res->ms = (float)(now_ms() - t0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long growth = (ru.ru_maxrss - g_worker_base_kb) / 1024;
    res->rss_mb = (uint16_t)(growth < 0 ? 0 : growth > 65535 ? 65535 : growth);
    if (g_anom && (res->ms > cfg.case_seconds * 1000.0 || res->rss_mb > cfg.case_rss_mb)) {
        char key_s[512];
        mut_key(m, key_s, sizeof key_s);
        fprintf(g_anom, "%s\tOVER_BUDGET\t%.0f ms, peak RSS growth %u MiB\n", key_s, res->ms, res->rss_mb);
        fflush(g_anom);
    }
    if (res->verdict >= V_WRONG && g_anom) {
        char key_s[512], exp_s[256];
        mut_key(m, key_s, sizeof key_s);
        describe_mask(e.mask, exp_s, sizeof exp_s);
        fprintf(g_anom, "%s\t%s\texpected %s at %s\tgot %s at %s\t%s\n", key_s,
                res->verdict == V_MISSED ? "MISSED" : res->verdict == V_FALSE_REJECT ? "FALSE_REJECT" : "WRONG",
                e.level == LV_NONE ? "acceptance" : exp_s, lvname(e.level),
                level == LV_NONE ? "acceptance" : expert_status_name((expert_status)cls), lvname(level),
                level == LV_NONE ? "" : err.message);
        fflush(g_anom);
    }
}

#define WORKER_RESTART 3 /* a worker's exit status: "start a fresh one after the current mutation" */

static void child_main(size_t start)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    g_worker_base_kb = ru.ru_maxrss;
    /* self-test of the crash and hang accounting: CORRUPT_SELFTEST_CRASH=i
     * and CORRUPT_SELFTEST_HANG=j make mutation i crash and j hang */
    const char *sc = getenv("CORRUPT_SELFTEST_CRASH"), *sh = getenv("CORRUPT_SELFTEST_HANG");
    long crash_at = sc ? atol(sc) : -1, hang_at = sh ? atol(sh) : -1;
    for (size_t i = start; i < g_nmuts; i++) {
        if (g_res[i].state != ST_PENDING)
            continue;
        g_shm->t0_ms = now_ms();
        g_shm->current = (int64_t)i;
        if ((long)i == crash_at)
            raise(SIGSEGV);
        if ((long)i == hang_at)
            for (;;)
                pause();
        run_one(i);
        if (g_res[i].state == ST_PENDING)
            g_res[i].state = ST_DONE;
        if (g_res[i].rss_mb > cfg.case_rss_mb) {
            g_res[i].over_rss = 1;
            g_shm->current = (int64_t)i + 1;
            free(g_buf);
            exit(WORKER_RESTART);
        }
    }
    g_shm->current = (int64_t)g_nmuts;
    free(g_buf);
    exit(0);
}

static int g_child_exit_error;

static void run_all(void)
{
    size_t start = 0;
    while (start < g_nmuts) {
        g_shm->current = (int64_t)start;
        g_shm->t0_ms = now_ms();
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            exit(2);
        }
        if (pid == 0)
            child_main(start);
        int status;
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            int64_t cur = g_shm->current;
            if (cur < (int64_t)g_nmuts && now_ms() - g_shm->t0_ms > (int64_t)(cfg.timeout * 1000)) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                g_res[cur].state = ST_HANG;
                char k[512];
                mut_key(&g_muts[cur], k, sizeof k);
                fprintf(stderr, "corrupt: HANG (> %.0f s): %s\n", cfg.timeout, k);
                if (g_anom)
                    fprintf(g_anom, "%s\tHANG\n", k);
                start = (size_t)cur + 1;
                goto next;
            }
            usleep(5000);
        }
        {
            int64_t cur = g_shm->current;
            if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_RESTART) {
                start = (size_t)cur;
                goto next;
            }
            if (cur >= (int64_t)g_nmuts) {
                if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                    fprintf(stderr, "corrupt: worker finished with status 0x%x (leak report above?)\n", status);
                    g_child_exit_error = 1;
                }
                break;
            }
            g_res[cur].state = ST_CRASH;
            char k[512];
            mut_key(&g_muts[cur], k, sizeof k);
            fprintf(stderr, "corrupt: CRASH (%s %d): %s\n", WIFSIGNALED(status) ? "signal" : "exit",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), k);
            if (g_anom)
                fprintf(g_anom, "%s\tCRASH\n", k);
            start = (size_t)cur + 1;
        }
    next:;
    }
}

/* ------------------------------------------------------ known issues */

typedef struct known {
    char *pattern;
    char *note;
    int hits;
} known;
static known *g_known;
static int g_nknown;

static void load_known(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == '#' || line[0] == 0)
            continue;
        char *tab = strchr(line, '\t');
        if (tab)
            *tab++ = 0;
        g_known = realloc(g_known, (size_t)(g_nknown + 1) * sizeof *g_known);
        g_known[g_nknown++] = (known){strdup(line), strdup(tab ? tab : ""), 0};
    }
    fclose(f);
}

static int is_known(const mut *m)
{
    char k[512];
    mut_key(m, k, sizeof k);
    for (int i = 0; i < g_nknown; i++)
        if (fnmatch(g_known[i].pattern, k, 0) == 0) {
            g_known[i].hits++;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------ report */

typedef struct row {
    char name[160];
    long tried, v[V_N], crash, hang, known, at[5], structural_need, structural_ok;
    long over_time, over_rss, max_rss_mb;
    double ms, max_ms;
} row;

static row *row_get(row **rows, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*rows)[i].name, name) == 0)
            return &(*rows)[i];
    row *grown = realloc(*rows, (*n + 1) * sizeof **rows);
    if (grown == NULL) {
        fprintf(stderr, "expert-corrupt: out of memory\n");
        exit(2);
    }
    *rows = grown;
    row *r = &(*rows)[(*n)++];
    memset(r, 0, sizeof *r);
    size_t len = strlen(name); /* names longer than the column are cut, deliberately */
    if (len >= sizeof r->name)
        len = sizeof r->name - 1;
    memcpy(r->name, name, len);
    return r;
}

static void row_add(row *r, const mut *m, const result *s)
{
    r->tried++;
    if (s->state == ST_CRASH)
        r->crash++;
    else if (s->state == ST_HANG)
        r->hang++;
    else if (s->known && s->verdict >= V_WRONG)
        r->known++;
    else
        r->v[s->verdict]++;
    if (s->state == ST_DONE)
        r->at[s->got_level]++;
    int structural = m->kind == K_TRUNC || (m->kind == K_FLIP && k_structure_zone[m->zone]);
    if (structural) {
        r->structural_need++;
        if (s->state == ST_DONE && s->got_level == LV_S)
            r->structural_ok++;
    }
    r->ms += s->ms;
    if (s->ms > r->max_ms)
        r->max_ms = s->ms;
    if (s->state == ST_DONE) {
        /* the worker's peak only grows: the mutation that pushes it past the
         * budget is the one counted, and a fresh worker goes on after it */
        r->over_time += s->ms > cfg.case_seconds * 1000.0;
        r->over_rss += s->over_rss;
        if (s->rss_mb > r->max_rss_mb)
            r->max_rss_mb = s->rss_mb;
    }
}

static void md_rows(FILE *f, row *rows, size_t n, const char *first_col)
{
    fprintf(f, "| %s | tried | as expected | accepted alternative | wrong level or class | "
               "missed | false rejection | known issue | crashed | hung | caught at S / A / F / K | seconds |\n",
            first_col);
    fprintf(f, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|\n");
    for (size_t i = 0; i < n; i++) {
        row *r = &rows[i];
        fprintf(f, "| %s | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld / %ld / %ld / %ld | %.1f |\n",
                r->name, r->tried, r->v[V_OK], r->v[V_ALT], r->v[V_WRONG], r->v[V_MISSED],
                r->v[V_FALSE_REJECT], r->known, r->crash, r->hang, r->at[LV_S], r->at[LV_A],
                r->at[LV_F], r->at[LV_K], r->ms / 1000.0);
    }
}

static int report(double seconds)
{
    row *fam = NULL, *edits = NULL, *bases = NULL, total;
    size_t nfam = 0, nedits = 0, nbases = 0;
    memset(&total, 0, sizeof total);
    snprintf(total.name, sizeof total.name, "**total**");
    long na = 0;
    for (size_t i = 0; i < g_nmuts; i++) {
        const mut *m = &g_muts[i];
        result *s = &g_res[i];
        if (s->state == ST_NA || s->state == ST_PENDING) {
            na += s->state == ST_NA;
            continue;
        }
        if (s->state == ST_CRASH || s->state == ST_HANG || s->verdict >= V_WRONG)
            s->known = (uint8_t)is_known(m);
        char fname[200];
        if (m->kind == K_TRUNC)
            snprintf(fname, sizeof fname, "truncate / %s", k_zone[m->zone]);
        else if (m->kind == K_FLIP)
            snprintf(fname, sizeof fname, "bit flip / %s", k_zone[m->zone]);
        else
            snprintf(fname, sizeof fname, "%s", g_edit_tab[m->arg].group);
        row_add(row_get(&fam, &nfam, fname), m, s);
        if (m->kind == K_EDIT)
            row_add(row_get(&edits, &nedits, g_edit_tab[m->arg].name), m, s);
        row_add(row_get(&bases, &nbases, g.bases[m->base].name), m, s);
        row_add(&total, m, s);
    }
    long bad = total.v[V_WRONG] + total.v[V_MISSED] + total.v[V_FALSE_REJECT] + total.crash + total.hang +
               total.over_time + total.over_rss;
    long stale = 0;
    for (int i = 0; i < g_nknown; i++)
        stale += g_known[i].hits == 0;

    if (cfg.md_out) {
        FILE *f = fopen(cfg.md_out, "w");
        if (f) {
            fprintf(f, "### Corruption suite\n\n");
            fprintf(f, "%zu base files, %ld mutations run (%ld targeted edits not applicable to a base "
                       "were skipped), %.1f s. Levels: S = structural (open), A = access (every "
                       "section read), F = full, K = full with the public key.\n\n",
                    (size_t)g.nbases, total.tried, na, seconds);
            fprintf(f, "| requirement | result |\n|---|---|\n");
            fprintf(f, "| crashes | %ld |\n| hangs (watchdog %.0f s) | %ld |\n", total.crash, cfg.timeout, total.hang);
            fprintf(f, "| mutations over the time budget (%.0f s each; slowest %.0f ms) | %ld |\n", cfg.case_seconds,
                    total.max_ms, total.over_time);
            fprintf(f, "| mutations over the memory budget (%ld MiB of a worker's peak RSS growth, an upper bound per mutation; largest %ld MiB) | %ld |\n",
                    cfg.case_rss_mb, total.max_rss_mb, total.over_rss);
            fprintf(f, "| missed at full validation | %ld |\n", total.v[V_MISSED]);
            fprintf(f, "| header/TOC/index/metadata/strings mutations caught structurally | %ld / %ld |\n",
                    total.structural_ok, total.structural_need);
            fprintf(f, "| detected at the wrong level or with the wrong class | %ld |\n", total.v[V_WRONG]);
            fprintf(f, "| valid mutations rejected | %ld |\n", total.v[V_FALSE_REJECT]);
            fprintf(f, "| known library issues (XFAIL, see below) | %ld |\n\n", total.known);
            fprintf(f, "#### By mutation family\n\n");
            md_rows(f, fam, nfam, "family");
            md_rows(f, &total, 1, "");
            fprintf(f, "\n#### By base file\n\n");
            md_rows(f, bases, nbases, "base");
            fprintf(f, "\n#### Targeted edits (summed over the bases they apply to)\n\n");
            md_rows(f, edits, nedits, "edit");
            if (g_nknown) {
                fprintf(f, "\n#### Known library issues (conformance/corruption/known-issues.txt)\n\n");
                fprintf(f, "| pattern | mutations | note |\n|---|--:|---|\n");
                for (int i = 0; i < g_nknown; i++)
                    fprintf(f, "| `%s` | %d%s | %s |\n", g_known[i].pattern, g_known[i].hits,
                            g_known[i].hits ? "" : " (stale!)", g_known[i].note);
            }
            fprintf(f, "\n");
            fclose(f);
        }
    }
    if (cfg.json_out) {
        FILE *f = fopen(cfg.json_out, "w");
        if (f) {
            fprintf(f, "{\"bases\":%d,\"tried\":%ld,\"as_expected\":%ld,\"alternative\":%ld,"
                       "\"wrong\":%ld,\"missed\":%ld,\"false_reject\":%ld,\"known\":%ld,"
                       "\"crashed\":%ld,\"hung\":%ld,\"structural_need\":%ld,\"structural_ok\":%ld,"
                       "\"at_S\":%ld,\"at_A\":%ld,\"at_F\":%ld,\"at_K\":%ld,\"seconds\":%.1f,"
                       "\"case_seconds_budget\":%.1f,\"case_rss_mb_budget\":%ld,\"over_time\":%ld,"
                       "\"over_rss\":%ld,\"max_case_ms\":%.1f,\"max_case_rss_mb\":%ld}\n",
                    g.nbases, total.tried, total.v[V_OK], total.v[V_ALT], total.v[V_WRONG],
                    total.v[V_MISSED], total.v[V_FALSE_REJECT], total.known, total.crash, total.hang,
                    total.structural_need, total.structural_ok, total.at[LV_S], total.at[LV_A],
                    total.at[LV_F], total.at[LV_K], seconds, cfg.case_seconds, cfg.case_rss_mb,
                    total.over_time, total.over_rss, total.max_ms, total.max_rss_mb);
            fclose(f);
        }
    }
    printf("corruption suite: %d bases, %ld mutations, %.1f s\n", g.nbases, total.tried, seconds);
    printf("  as expected %ld (+%ld accepted alternative), wrong %ld, missed %ld, false rejections %ld,"
           " known %ld, crashed %ld, hung %ld\n"
           "  over budget: %ld in time (> %.0f s), %ld in memory (> %ld MiB); slowest %.0f ms, largest %ld MiB\n",
           total.v[V_OK], total.v[V_ALT], total.v[V_WRONG], total.v[V_MISSED], total.v[V_FALSE_REJECT],
           total.known, total.crash, total.hang, total.over_time, cfg.case_seconds, total.over_rss,
           cfg.case_rss_mb, total.max_ms, total.max_rss_mb);
    printf("  caught at S %ld, A %ld, F %ld, K %ld; structure mutations caught structurally %ld/%ld\n",
           total.at[LV_S], total.at[LV_A], total.at[LV_F], total.at[LV_K], total.structural_ok,
           total.structural_need);
    for (int i = 0; i < g_nknown; i++)
        if (g_known[i].hits == 0)
            printf("  STALE known issue (no longer reproduces, remove it): %s\n", g_known[i].pattern);
    free(fam);
    free(edits);
    free(bases);
    return bad || stale || g_child_exit_error || total.structural_ok != total.structural_need ? 1 : 0;
}

/* ------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: corrupt [--gen EXPERT-GEN-SAMPLE --cli EXPERT-CLI] [--vectors DIR]\n"
            "               [--md OUT.md] [--json OUT.json] [--known FILE] [--timeout S]\n"
            "               [--case-seconds S] [--case-rss-mb M]\n"
            "               [--outdir DIR] [--save-bases DIR] [--exhaustive] [--quick] [--only PATTERN] [--anomalies FILE]\n");
    exit(64);
}

static void rm_rf(const char *dir)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "corrupt: cannot remove %s\n", dir);
}

int main(int argc, char **argv)
{
    const char *anom = NULL, *outdir = NULL, *save = NULL;
    static char md_path[1024], json_path[1024], anom_path[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(s) (strcmp(a, s) == 0 && v && (++i, 1))
        if (OPT("--gen")) cfg.gen = v;
        else if (OPT("--cli")) cfg.cli = v;
        else if (OPT("--vectors")) cfg.vectors = v;
        else if (OPT("--md")) cfg.md_out = v;
        else if (OPT("--json")) cfg.json_out = v;
        else if (OPT("--known")) cfg.known = v;
        else if (OPT("--timeout")) cfg.timeout = atof(v);
        else if (OPT("--case-seconds")) cfg.case_seconds = atof(v);
        else if (OPT("--case-rss-mb")) cfg.case_rss_mb = atol(v);
        else if (OPT("--only")) cfg.only = v;
        else if (OPT("--anomalies")) anom = v;
        else if (OPT("--outdir")) outdir = v;
        else if (OPT("--save-bases")) save = v;
        else if (strcmp(a, "--exhaustive") == 0) cfg.exhaustive = 1;
        else if (strcmp(a, "--quick") == 0) cfg.quick = 1;
        else usage();
#undef OPT
    }
    if (outdir) {
        mkdir(outdir, 0755);
        snprintf(md_path, sizeof md_path, "%s/corruption.md", outdir);
        snprintf(json_path, sizeof json_path, "%s/corruption.json", outdir);
        snprintf(anom_path, sizeof anom_path, "%s/corruption-anomalies.tsv", outdir);
        cfg.md_out = md_path;
        cfg.json_out = json_path;
        if (!anom)
            anom = anom_path;
    }
    const char *env_t = getenv("CORRUPT_TIMEOUT");
    if (env_t)
        cfg.timeout = atof(env_t);
    if (getenv("CORRUPT_EXHAUSTIVE"))
        cfg.exhaustive = 1;
    g.exhaustive = cfg.exhaustive;
    const char *tmp = getenv("TMPDIR");
    char tdir[1024];
    snprintf(tdir, sizeof tdir, "%s/corrupt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tdir)) {
        perror("mkdtemp");
        return 2;
    }
    g.tmpdir = tdir;
    int64_t t0 = now_ms();
    if (bases_build(cfg.gen, cfg.cli, cfg.vectors, cfg.quick) != 0) {
        rm_rf(tdir);
        return 2;
    }
    if (save) { /* the generated bases, e.g. as fuzz seeds; then stop */
        mkdir(save, 0755);
        for (int i = 0; i < g.nbases; i++) {
            if (g.bases[i].is_vector)
                continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s.expert", save, g.bases[i].name);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(g.bases[i].img, 1, g.bases[i].n, f);
                fclose(f);
            }
        }
        rm_rf(tdir);
        return 0;
    }
    g_edit_tab = edits_table(&g_nedit);
    for (int i = 0; i < g.nbases; i++)
        enumerate((uint16_t)i);
    if (cfg.only) { /* keep only mutations whose key matches */
        size_t k = 0;
        for (size_t i = 0; i < g_nmuts; i++) {
            char key[512];
            mut_key(&g_muts[i], key, sizeof key);
            if (fnmatch(cfg.only, key, 0) == 0)
                g_muts[k++] = g_muts[i];
        }
        g_nmuts = k;
    }
    fprintf(stderr, "corrupt: %d bases, %zu mutations\n", g.nbases, g_nmuts);
    size_t shm_len = sizeof(shm_hdr) + g_nmuts * sizeof(result) + 64;
    void *shm = mmap(NULL, shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    g_shm = shm;
    g_res = (result *)((uint8_t *)shm + 64);
    g_anom = anom ? fopen(anom, "w") : stderr;
    load_known(cfg.known);
    run_all();
    int rc = report((double)(now_ms() - t0) / 1000.0);
    if (g_anom && g_anom != stderr)
        fclose(g_anom);
    rm_rf(tdir);
    return rc;
}
