/* test_v1_common.c — see test_v1_common.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_v1_common.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return q;
}

/* ---------------------------------------------------------------- tar */

static void octal(char *dst, size_t width, uint64_t v)
{
    /* width-1 digits then NUL */
    dst[width - 1] = '\0';
    for (size_t i = width - 1; i > 0; i--) {
        dst[i - 1] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

static void raw_header(xb *t, const char *name, char type, uint64_t size, const char *link)
{
    char h[512];
    memset(h, 0, sizeof h);
    strncpy(h, name, 100);
    octal(h + 100, 8, type == '5' ? 0755 : 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, 1700000000);
    memcpy(h + 257, "ustar  ", 8); /* GNU magic + version */
    h[156] = type;
    if (link != NULL)
        strncpy(h + 157, link, 100);
    if (type == '3' || type == '4') {
        octal(h + 329, 8, 1);
        octal(h + 337, 8, 3);
    }
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    xb_put(t, h, 512);
}

void tar_entry(xb *t, const char *name, char type, const void *data, size_t data_len,
               uint64_t size_field, const char *link)
{
    size_t nl = strlen(name);
    if (nl >= 100) { /* GNU long name */
        raw_header(t, "././@LongLink", 'L', nl + 1, NULL);
        xb_put(t, name, nl + 1);
        xb_zero(t, (512 - (nl + 1) % 512) % 512);
    }
    raw_header(t, name, type, size_field, link);
    xb_put(t, data, data_len);
    xb_zero(t, (512 - data_len % 512) % 512);
}

void tar_file(xb *t, const char *name, const void *data, size_t n)
{
    tar_entry(t, name, '0', data, n, n, NULL);
}

void tar_pax_path(xb *t, const char *path)
{
    char rec[600];
    size_t body = strlen(" path=") + strlen(path) + 1, len = body + 1;
    while (len != (size_t)snprintf(NULL, 0, "%zu", len) + body)
        len = (size_t)snprintf(NULL, 0, "%zu", len) + body;
    snprintf(rec, sizeof rec, "%zu path=%s\n", len, path);
    tar_entry(t, "PaxHeaders/x", 'x', rec, strlen(rec), strlen(rec), NULL);
}

void tar_end(xb *t)
{
    xb_zero(t, 1024);
}

uint8_t *gz(const void *p, size_t n, size_t *out_n)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    uint8_t *out = xrealloc(NULL, cap);
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

/* ----------------------------------------------------------- packages */

uint64_t rng64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int spec_cmp(const void *a, const void *b)
{
    return strcmp(((const st_spec *)a)->name, ((const st_spec *)b)->name);
}

uint8_t *st_build(const st_spec *specs, int n, uint64_t seed, size_t *out_n)
{
    xb h = {0}, d = {0};
    char tmp[512];
    uint64_t off = 0;
    static const char meta[] = "{\"__metadata__\":{\"format\":\"pt\"}";
    xb_put(&h, meta, sizeof meta - 1);
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (unsigned k = 0; k < specs[i].rank; k++)
            numel *= specs[i].dims[k];
        size_t es = strcmp(specs[i].dtype, "F32") == 0 ? 4 : 2;
        int len = snprintf(tmp, sizeof tmp, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", specs[i].name,
                           specs[i].dtype);
        xb_put(&h, tmp, (size_t)len);
        for (unsigned k = 0; k < specs[i].rank; k++) {
            len = snprintf(tmp, sizeof tmp, "%s%llu", k ? "," : "", (unsigned long long)specs[i].dims[k]);
            xb_put(&h, tmp, (size_t)len);
        }
        len = snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                       (unsigned long long)(off + numel * es));
        xb_put(&h, tmp, (size_t)len);
        for (uint64_t e = 0; e < numel; e++) {
            uint64_t x = rng64(&seed);
            if (es == 4) {
                uint32_t bits;
                if (i == 0 && e < 5) { /* bit patterns a float round trip could lose */
                    static const uint32_t special[5] = {0x80000000u, 0x00000001u, 0x7fc00001u,
                                                        0x7f800000u, 0xff7fffffu};
                    bits = special[e];
                } else {
                    float f = (float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 26);
                    memcpy(&bits, &f, 4);
                }
                xb_put(&d, &bits, 4);
            } else {
                uint16_t v = (uint16_t)(x >> 48);
                xb_put(&d, &v, 2);
            }
        }
        off += numel * es;
    }
    xb_put(&h, "}", 1);
    while ((8 + h.n) % 8 != 0)
        xb_put(&h, " ", 1);
    xb out = {0};
    uint64_t hn = h.n;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(hn >> (8 * i));
    xb_put(&out, le, 8);
    xb_put(&out, h.p, h.n);
    xb_put(&out, d.p, d.n);
    xb_free(&h);
    xb_free(&d);
    *out_n = out.n;
    return out.p;
}

static const struct {
    const char *path;
    unsigned in, out;
    int ff;
} k_mods[] = {
    {"self_attn.q_proj", 64, 128, 0}, {"self_attn.k_proj", 64, 32, 0}, {"self_attn.v_proj", 64, 32, 0},
    {"self_attn.o_proj", 128, 64, 0}, {"mlp.up_proj", 64, 192, 0},     {"mlp.down_proj", 192, 64, 1},
};
#define N_MODS 6

pkg_file *pkg_get(pkg *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->f[i].name, name) == 0)
            return &p->f[i];
    return NULL;
}

void pkg_set(pkg *p, const char *name, const void *data, size_t n)
{
    pkg_file *f = pkg_get(p, name);
    if (f == NULL) {
        f = &p->f[p->n++];
        snprintf(f->name, sizeof f->name, "%s", name);
    } else {
        free(f->data);
    }
    f->data = xrealloc(NULL, n);
    memcpy(f->data, data, n);
    f->size = n;
}

static void set_text(pkg *p, const char *name, const char *text)
{
    pkg_set(p, name, text, strlen(text));
}

void pkg_make(pkg *p, pkg_kind kind, unsigned layers, unsigned r, uint64_t seed)
{
    static const char *kname[] = {"dora", "lora", "ia3"};
    memset(p, 0, sizeof *p);
    char buf[8192];
    /* manifest.json: schema 2.0 with the real packages' quirks and the
     * fields the old packer drops (quality_metrics, limitations, _comment). */
    snprintf(buf, sizeof buf,
             "{\n  \"name\": \"expert-test-%s\",\n  \"version\": \"0.3.%llu\",\n"
             "  \"schema_version\": \"2.0\",\n  \"description\": \"Test expert (%s r=%u)\",\n"
             "  \"base_models\": [\n    {\n      \"name\": \"F:/Node/hivellm/expert/models/Qwen3-0.6B\",\n"
             "      \"sha256\": \"\",\n      \"quantization\": \"int4\",\n"
             "      \"prompt_template\": \"qwen3\",\n      \"adapters\": [\n        {\n"
             "          \"type\": \"%s\",\n          \"target_modules\": [\"q_proj\", \"k_proj\", "
             "\"v_proj\", \"o_proj\", \"up_proj\", \"down_proj\"],\n          \"r\": %u,\n"
             "          \"alpha\": %u,\n          \"size_bytes\": 0,\n          \"sha256\": \"\",\n"
             "          \"checkpoint_step\": 2000\n        }\n      ]\n    }\n  ],\n"
             "  \"capabilities\": [\"sql\"],\n  \"constraints\": {\n    \"load_order\": 5\n  },\n"
             "  \"training\": {\n    \"epochs\": 2.0,\n    \"learning_rate\": 0.0002,\n"
             "    \"trained_on\": \"2025-11-01\"\n  },\n"
             "  \"quality_metrics\": {\n    \"sql_valid\": \"16/18\",\n    \"success_rate\": 88.9,\n"
             "    \"_comment\": \"hand-run suite\"\n  },\n"
             "  \"limitations\": [\"recursive CTEs\"],\n  \"license\": \"apache-2.0\"\n}",
             kname[kind], (unsigned long long)(seed % 100), kname[kind], r, kname[kind], r, 2 * r);
    set_text(p, "manifest.json", buf);

    /* adapter_model.safetensors */
    st_spec specs[64 * N_MODS * 3];
    char names[64 * N_MODS * 3][128];
    int n = 0;
    for (unsigned l = 0; l < layers; l++)
        for (int m = 0; m < N_MODS; m++) {
            const char *roles[3];
            int nr = 0;
            if (kind == PK_IA3)
                roles[nr++] = "ia3_l";
            else {
                roles[nr++] = "lora_A.weight";
                roles[nr++] = "lora_B.weight";
                if (kind == PK_DORA)
                    roles[nr++] = "lora_magnitude_vector";
            }
            for (int k = 0; k < nr; k++) {
                st_spec *s = &specs[n];
                snprintf(names[n], sizeof names[n], "base_model.model.model.layers.%u.%s.%s", l,
                         k_mods[m].path, roles[k]);
                s->name = names[n];
                s->dtype = "F32";
                memset(s->dims, 0, sizeof s->dims);
                if (kind == PK_IA3) {
                    s->rank = 2;
                    s->dims[0] = k_mods[m].ff ? 1 : k_mods[m].out;
                    s->dims[1] = k_mods[m].ff ? k_mods[m].in : 1;
                } else if (k == 0) {
                    s->rank = 2;
                    s->dims[0] = r;
                    s->dims[1] = k_mods[m].in;
                } else if (k == 1) {
                    s->rank = 2;
                    s->dims[0] = k_mods[m].out;
                    s->dims[1] = r;
                } else {
                    s->rank = 1;
                    s->dims[0] = k_mods[m].out;
                }
                n++;
            }
        }
    qsort(specs, (size_t)n, sizeof specs[0], spec_cmp); /* safetensors' own key order */
    size_t st_n = 0;
    uint8_t *st = st_build(specs, n, seed, &st_n);
    pkg_set(p, "adapter_model.safetensors", st, st_n);
    free(st);
    p->tensors = n;
    p->modules = (int)layers * N_MODS;

    if (kind == PK_IA3)
        snprintf(buf, sizeof buf,
                 "{\n  \"peft_type\": \"IA3\",\n  \"target_modules\": [\"q_proj\", \"k_proj\", "
                 "\"v_proj\", \"o_proj\", \"up_proj\", \"down_proj\"],\n  \"feedforward_modules\": "
                 "[\"down_proj\"],\n  \"task_type\": \"CAUSAL_LM\"\n}\n");
    else
        snprintf(buf, sizeof buf,
                 "{\n  \"peft_type\": \"LORA\",\n  \"r\": %u,\n  \"lora_alpha\": %u,\n"
                 "  \"lora_dropout\": 0.1,\n  \"use_dora\": %s,\n  \"use_rslora\": false,\n"
                 "  \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"up_proj\", "
                 "\"down_proj\"],\n  \"task_type\": \"CAUSAL_LM\"\n}\n",
                 r, 2 * r, kind == PK_DORA ? "true" : "false");
    set_text(p, "adapter_config.json", buf);
    set_text(p, "special_tokens_map.json", "{\"eos_token\": \"<|im_end|>\"}\n");
    set_text(p, "tokenizer_config.json", "{\"model_max_length\": 40960}\n");
    {
        xb t = {0};
        xb_put(&t, "{\"model\":{\"vocab\":{", 19);
        for (int i = 0; i < 400; i++) {
            int len = snprintf(buf, sizeof buf, "%s\"tok%d\":%d", i ? "," : "", i, i);
            xb_put(&t, buf, (size_t)len);
        }
        xb_put(&t, "}}}\n", 4);
        pkg_set(p, "tokenizer.json", t.p, t.n);
        xb_free(&t);
    }
    {
        uint8_t bin[300];
        uint64_t s = seed ^ 0xABCDEFull;
        for (size_t i = 0; i < sizeof bin; i++)
            bin[i] = (uint8_t)rng64(&s);
        pkg_set(p, "training_args.bin", bin, sizeof bin);
    }
    set_text(p, "README.md", "# Test expert\n\nUnicode: \xc3\xa9\xe2\x82\xac \xf0\x9f\x9a\x80\n");
    set_text(p, "grammar.gbnf", "root ::= \"SELECT\" ws rest\nws ::= [ \\t\\n]*\n");
    set_text(p, "tests/cases.json", "[{\"q\":\"count users\"}]\n");
    set_text(p, "LICENSE", "Apache License 2.0 (test copy)\n");
}

void pkg_free(pkg *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->f[i].data);
    memset(p, 0, sizeof *p);
}

uint8_t *pkg_targz(const pkg *p, size_t *n)
{
    xb t = {0};
    for (int i = 0; i < p->n; i++)
        tar_file(&t, p->f[i].name, p->f[i].data, p->f[i].size);
    tar_end(&t);
    uint8_t *g = gz(t.p, t.n, n);
    xb_free(&t);
    return g;
}

uint8_t *pkg_targz_lib(const pkg *p, size_t *n)
{
    expert_v1_entry e[24];
    for (int i = 0; i < p->n; i++)
        e[i] = (expert_v1_entry){p->f[i].name, p->f[i].data, p->f[i].size, 0644, 1700000000};
    void *out = NULL;
    expert_error err;
    if (expert_v1_write_memory(e, (size_t)p->n, NULL, &out, n, &err) != EXPERT_OK) {
        fprintf(stderr, "expert_v1_write_memory: %s\n", err.message);
        abort();
    }
    return out;
}

static void hexs(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(pkg_file *const *)a)->name, (*(pkg_file *const *)b)->name);
}

void pkg_sign_v1(pkg *p, const uint8_t seed[32], char pubkey_text[73])
{
    pkg_file *sorted[24];
    xb msg = {0}, blk = {0};
    char hx[24][65];
    for (int i = 0; i < p->n; i++)
        sorted[i] = &p->f[i];
    qsort(sorted, (size_t)p->n, sizeof sorted[0], name_cmp);
    for (int i = 0; i < p->n; i++) {
        uint8_t d[32];
        expert_sha256(sorted[i]->data, sorted[i]->size, d);
        hexs(d, 32, hx[i]);
        if (i)
            xb_put(&msg, "\n", 1);
        xb_put(&msg, sorted[i]->name, strlen(sorted[i]->name));
        xb_put(&msg, ":", 1);
        xb_put(&msg, hx[i], 64);
    }
    uint8_t sig[64], pub[32];
    expert_error err;
    if (expert_v1_sign_raw(seed, msg.p, msg.n, sig, pub, &err) != EXPERT_OK)
        abort();
    char sh[129], ph[65], line[512];
    hexs(sig, 64, sh);
    hexs(pub, 32, ph);
    snprintf(pubkey_text, 73, "ed25519:%s", ph);
    int len = snprintf(line, sizeof line,
                       "  \"integrity\": {\n    \"created_at\": \"2025-11-07T00:00:00Z\",\n"
                       "    \"publisher\": \"expert-cli\",\n    \"pubkey\": \"ed25519:%s\",\n"
                       "    \"signature_algorithm\": \"ed25519\",\n    \"signature\": \"%s\",\n"
                       "    \"files\": {\n",
                       ph, sh);
    xb_put(&blk, line, (size_t)len);
    for (int i = 0; i < p->n; i++) {
        len = snprintf(line, sizeof line, "      \"%s\": \"%s\"%s\n", sorted[i]->name, hx[i],
                       i + 1 < p->n ? "," : "");
        xb_put(&blk, line, (size_t)len);
    }
    xb_put(&blk, "    }\n  },\n", 11);
    pkg_file *m = pkg_get(p, "manifest.json");
    char *text = calloc(1, m->size + 1);
    memcpy(text, m->data, m->size);
    char *at = strstr(text, "\n  \"license\":");
    size_t pos = (size_t)(at - text) + 1;
    xb nm = {0};
    xb_put(&nm, text, pos);
    xb_put(&nm, blk.p, blk.n);
    xb_put(&nm, text + pos, m->size - pos);
    pkg_set(p, "manifest.json", nm.p, nm.n);
    pkg_set(p, "signature.sig", sh, 128);
    free(text);
    xb_free(&nm);
    xb_free(&blk);
    xb_free(&msg);
}

/* --------------------------------------------------------------- misc */

uint8_t *read_all(const char *path, size_t *n)
{
    xb b;
    if (file_load(path, &b) != 0)
        return NULL;
    *n = b.n;
    return b.p;
}


expert_status open_v1_mem(const uint8_t *p, size_t n, const expert_v1_options *o,
                          expert_reader **r, expert_error *e)
{
    memset(e, 0, sizeof *e);
    *r = NULL;
    if (o != NULL)
        return expert_open_v1_memory(p, n, NULL, o, r, e);
    return expert_open_any_memory(p, n, NULL, NULL, r, e);
}

expert_status transcode_v2(expert_reader *r, const char *path, expert_error *e)
{
    expert_writer *w = NULL;
    expert_writer_options wo = {.alignment = 64, .frame_size = 1u << 16, .zstd_level = 3, .threads = 1};
    expert_status s = expert_writer_open(path, &wo, &w, e);
    if (s != EXPERT_OK)
        return s;
    size_t ml = 0;
    const char *meta = expert_metadata_json(r, &ml);
    s = expert_writer_set_metadata(w, meta, ml, e);
    for (uint32_t i = 0; s == EXPERT_OK && i < expert_section_count(r); i++) {
        expert_section_info si;
        expert_section(r, i, &si);
        uint8_t *buf = malloc(si.decoded_length ? si.decoded_length : 1);
        s = expert_read(r, i, buf, si.decoded_length, 0, e);
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        d.name = si.name;
        d.name_length = si.name_length;
        d.type = si.type;
        d.codec = si.type == EXPERT_SECTION_FILE || si.type == EXPERT_SECTION_SAFETENSORS_HEADER
                      ? EXPERT_CODEC_ZSTD
                      : EXPERT_CODEC_SHUFFLE_ZSTD;
        d.dtype = si.dtype;
        d.rank = si.rank;
        d.layer = si.layer;
        d.module = si.module;
        memcpy(d.dims, si.dims, sizeof d.dims);
        if (s == EXPERT_OK)
            s = expert_writer_add(w, &d, buf, si.decoded_length, e);
        free(buf);
    }
    if (s != EXPERT_OK) {
        expert_writer_abort(w);
        return s;
    }
    return expert_writer_finish(w, NULL, e);
}

/* ------------------------------------------------------------ checks */

int check_pkg_tensors(expert_reader *r, pkg *p, char *msg, size_t cap)
{
    pkg_file *sf = pkg_get(p, "adapter_model.safetensors");
    expert_safetensors *st = NULL;
    expert_error e;
    int rc = 0;
    if (expert_safetensors_parse(sf->data, sf->size, &st, &e) != EXPERT_OK) {
        snprintf(msg, cap, "source safetensors: %s", e.message);
        return -1;
    }
    for (uint32_t i = 0; rc == 0 && i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        expert_section_info si;
        uint32_t idx;
        expert_safetensors_tensor(st, i, &t);
        if (expert_find(r, t.name, strlen(t.name), &idx) != EXPERT_OK) {
            snprintf(msg, cap, "tensor '%s' not found", t.name);
            rc = -1;
            break;
        }
        expert_section(r, idx, &si);
        uint8_t *buf = malloc(t.data_length + 1);
        if (si.dtype != (uint8_t)t.dtype || si.decoded_length != t.data_length ||
            expert_read(r, idx, buf, t.data_length, 0, &e) != EXPERT_OK ||
            memcmp(buf, sf->data + t.data_offset, t.data_length) != 0) {
            snprintf(msg, cap, "tensor '%s' differs", t.name);
            rc = -1;
        }
        free(buf);
    }
    expert_safetensors_free(st);
    return rc;
}

int check_pkg_files(expert_reader *r, pkg *p, char *msg, size_t cap)
{
    int seen = 0;
    for (uint32_t i = 0; i < expert_section_count(r); i++) {
        expert_section_info si;
        expert_error e;
        expert_section(r, i, &si);
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)si.name_length, si.name);
        pkg_file *f = pkg_get(p, name);
        void *d = NULL;
        size_t n = 0;
        if (f == NULL) {
            snprintf(msg, cap, "unexpected file '%s'", name);
            return -1;
        }
        if (expert_file_rebuild(r, i, &d, &n, &e) != EXPERT_OK) {
            snprintf(msg, cap, "rebuild '%s': %s", name, e.message);
            return -1;
        }
        int same = n == f->size && memcmp(d, f->data, n) == 0;
        expert_v1_free(d);
        if (!same) {
            snprintf(msg, cap, "file '%s' differs", name);
            return -1;
        }
        seen++;
    }
    if (seen != p->n) {
        snprintf(msg, cap, "%d files, expected %d", seen, p->n);
        return -1;
    }
    return 0;
}

int check_pkg_dir(const char *dir, pkg *p, char *msg, size_t cap)
{
    for (int i = 0; i < p->n; i++) {
        char *fp = path_join(dir, p->f[i].name);
        size_t n = 0;
        uint8_t *d = read_all(fp, &n);
        int same = d != NULL && n == p->f[i].size && memcmp(d, p->f[i].data, n) == 0;
        free(d);
        free(fp);
        if (!same) {
            snprintf(msg, cap, "%s/%s differs or is missing", dir, p->f[i].name);
            return -1;
        }
    }
    return 0;
}
