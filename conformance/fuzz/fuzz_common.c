/* fuzz_common.c — see fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

void fz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", what, file, line);
    abort();
}

static const char k_pub_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
                                "-----END PUBLIC KEY-----\n";

const expert_public_key *fz_public_key(void)
{
    static expert_public_key *k;
    static int tried;
    if (!tried) {
        tried = 1;
        const char *tmp = getenv("TMPDIR");
        char path[1024];
        snprintf(path, sizeof path, "%s/fuzz-pub-%d.pem", tmp && *tmp ? tmp : "/tmp", (int)getpid());
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(k_pub_pem, f);
            fclose(f);
            expert_error e;
            if (expert_public_key_load(path, &k, &e) != EXPERT_OK)
                k = NULL;
            unlink(path);
        }
    }
    return k;
}

uint8_t *fz_copy(const uint8_t *data, size_t size)
{
    uint8_t *p = NULL;
    if (posix_memalign((void **)&p, 64, size ? size : 1) != 0)
        abort();
    if (size)
        memcpy(p, data, size);
    return p;
}

#define MAX_SECTION ((uint64_t)64 << 20)

void fz_exercise(expert_reader *r, int full)
{
    expert_header_info h;
    expert_header(r, &h);
    uint32_t n = expert_section_count(r);
    FZ_ASSERT(n == h.section_count);
    uint8_t *seen = calloc(n ? n : 1, 1);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t li = expert_section_in_layer_order(r, i);
        FZ_ASSERT(li < n && !seen[li]);
        seen[li] = 1;
    }
    free(seen);
    size_t jl = 0;
    const char *json = expert_metadata_json(r, &jl);
    FZ_ASSERT(json != NULL && strlen(json) == jl);
    FZ_ASSERT(expert_name(r) != NULL && expert_package_version(r) != NULL);
    for (uint32_t m = 0; m < expert_module_count(r); m++) {
        expert_module_info mi;
        FZ_ASSERT(expert_module(r, m, &mi) == EXPERT_OK && mi.path && mi.type);
    }
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info s;
        FZ_ASSERT(expert_section(r, i, &s) == EXPERT_OK);
        uint32_t found = UINT32_MAX;
        FZ_ASSERT(expert_find(r, s.name, s.name_length, &found) == EXPERT_OK && found == i);
        FZ_ASSERT(s.offset <= h.file_length && s.stored_length <= h.file_length - s.offset);
        if (!full || s.decoded_length > MAX_SECTION)
            continue;
        uint8_t *buf = malloc(s.decoded_length ? (size_t)s.decoded_length : 1);
        expert_error e;
        expert_status st = expert_read(r, i, buf, (size_t)s.decoded_length, 0, &e);
        if (st == EXPERT_OK) {
            uint8_t d[32];
            sha256(buf, (size_t)s.decoded_length, d);
            FZ_ASSERT(memcmp(d, s.sha256, 32) == 0);
            if (s.codec == EXPERT_CODEC_RAW) {
                const void *v;
                size_t vl;
                FZ_ASSERT(expert_view(r, i, &v, &vl, 0, &e) == EXPERT_OK && vl == s.decoded_length &&
                          memcmp(v, buf, vl) == 0);
            }
        }
        if (s.decoded_length > 0) /* a too small buffer is refused, never overrun */
            FZ_ASSERT(expert_read(r, i, buf, (size_t)s.decoded_length - 1, 0, &e) ==
                      EXPERT_E_INVALID_ARGUMENT);
        free(buf);
    }
    uint32_t dummy;
    FZ_ASSERT(expert_find(r, "\xff no such name", 14, &dummy) == EXPERT_E_NOT_FOUND);
    if (!full)
        return;
    expert_error e;
    expert_status st = expert_verify_full(r, NULL, &e);
    if (st == EXPERT_OK && fz_public_key()) {
        expert_status k = expert_verify_full(r, fz_public_key(), &e);
        FZ_ASSERT(k == EXPERT_OK || k == EXPERT_E_BAD_SIGNATURE || k == EXPERT_E_UNSIGNED);
        FZ_ASSERT((k == EXPERT_E_UNSIGNED) == !h.is_signed);
    }
}

static void base_header(xm_model *m)
{
    memset(m, 0, sizeof *m);
    memcpy(m->header, "HLLMEXP\0", 8);
    wr16(m->header + H_MAJOR, 2);
    wr32(m->header + H_HEADER_SIZE, 256);
    wr32(m->header + H_ALIGN, 64);
    wr32(m->header + H_TOC_ENTRY_SIZE, 128);
    m->header_size = 256;
}

static void add_section(xm_model *m, const char *name, uint16_t type, uint8_t codec, uint8_t dtype,
                        uint64_t dims0, uint64_t decoded, uint32_t frame, const uint8_t *stored,
                        size_t stored_len, const uint8_t sha[32])
{
    m->sec = realloc(m->sec, (m->n + 1) * sizeof *m->sec);
    xm_section *s = &m->sec[m->n];
    memset(s, 0, sizeof *s);
    m->n++;
    uint8_t *e = s->entry;
    wr16(e + T_TYPE, type);
    e[T_CODEC] = codec;
    e[T_DTYPE] = dtype;
    e[T_RANK] = 1;
    wr32(e + T_LAYER, UINT32_MAX);
    wr32(e + T_MODULE, UINT32_MAX);
    wr32(e + T_FRAME, frame);
    wr64(e + T_DECODED, decoded);
    wr64(e + T_DIMS, dims0);
    memcpy(e + T_SHA, sha, 32);
    s->data = xm_dup(stored, stored_len);
    s->len = stored_len;
    xm_set_name(m, m->n - 1, name, strlen(name));
}

void fz_wrap_metadata(const uint8_t *json, size_t n, xb *out)
{
    xm_model m;
    base_header(&m);
    m.strings = xm_alloc(1);
    static const uint8_t cfg[] = "{}";
    uint8_t sha[32];
    sha256(cfg, 2, sha);
    add_section(&m, "adapter_config.json", EXPERT_SECTION_FILE, 0, EXPERT_DTYPE_BYTES, 2, 2, 0, cfg, 2, sha);
    size_t cl;
    uint8_t *c = xm_zstd(json, n, 1, 1, 0, &cl);
    xm_set_meta_stored(&m, c, cl, n < 2 ? 2 : n);
    free(c);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
}

void fz_wrap_section(const uint8_t *data, size_t size, xb *out, unsigned *threads)
{
    uint8_t p[8] = {0};
    memcpy(p, data, size < 8 ? size : 8);
    const uint8_t *stored = size > 8 ? data + 8 : data;
    size_t slen = size > 8 ? size - 8 : 0;
    uint8_t codec = p[0] % 3, dtype = p[1] % 14;
    uint32_t frame = 1u << (16 + p[2] % 11);
    *threads = 1u + (p[3] & 3);
    size_t e = xm_dtype_size(dtype);
    uint64_t dec = rd32(p + 4) % ((1u << 20) + 1); /* at most 1 MiB decoded */
    if (codec == 0)
        dec = slen;
    dec -= dec % e;
    if (codec == 0)
        slen = (size_t)dec;
    /* the digest of an independent decode when there is one, so that valid
     * inputs reach the success path */
    uint8_t sha[32] = {0};
    if (codec == 0) {
        sha256(stored, slen, sha);
    } else {
        uint64_t nf = dec == 0 ? 0 : (dec - 1) / frame + 1;
        if (4 * nf <= slen) {
            uint8_t *plain = malloc(dec ? (size_t)dec : 1), *tmp = malloc(frame);
            size_t pos = (size_t)(4 * nf);
            int ok = 1;
            for (uint64_t f = 0; f < nf && ok; f++) {
                size_t c = rd32(stored + 4 * f);
                size_t L = (size_t)(dec - f * frame < frame ? dec - f * frame : frame);
                if (c > slen - pos) {
                    ok = 0;
                    break;
                }
                size_t r = ZSTD_decompress(tmp, L, stored + pos, c);
                ok = !ZSTD_isError(r) && r == L;
                if (ok && codec == 2 && e > 1) {
                    size_t cnt = L / e;
                    for (size_t j = 0; j < e; j++)
                        for (size_t k = 0; k < cnt; k++)
                            plain[f * frame + k * e + j] = tmp[j * cnt + k];
                } else if (ok) {
                    memcpy(plain + f * frame, tmp, L);
                }
                pos += c;
            }
            if (ok)
                sha256(plain, (size_t)dec, sha);
            free(plain);
            free(tmp);
        }
    }
    xm_model m;
    base_header(&m);
    m.strings = xm_alloc(1);
    static const char meta[] = "{\"format\":\"expert-v2\",\"name\":\"f\",\"version\":\"1\",\"modules\":[]}";
    xm_set_metadata_json(&m, meta, sizeof meta - 1);
    add_section(&m, dtype == 0 ? "s.bin" : "t", dtype == 0 ? EXPERT_SECTION_FILE : EXPERT_SECTION_TENSOR,
                codec, dtype, dec / e, dec, codec ? frame : 0, stored, slen, sha);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
}
