/* gen_infra.c — output tree, vector registry, builders (writer, model),
 * descriptions, keys and signing for the golden-vector generator. */
#include "gen.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zstd.h>

const char *g_out;

/* ------------------------------------------------------------ arena */

static void **g_arena;
static size_t g_narena, g_carena;

void *A(size_t n)
{
    if (g_narena == g_carena) {
        g_carena = g_carena ? g_carena * 2 : 1024;
        g_arena = realloc(g_arena, g_carena * sizeof *g_arena);
        if (!g_arena)
            die("out of memory");
    }
    void *p = xcalloc(1, n ? n : 1);
    g_arena[g_narena++] = p;
    return p;
}

char *AS(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = A((size_t)k + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)k + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *strrep(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    if (!at)
        die("strrep: '%s' not found in '%s'", from, s);
    if (strstr(at + strlen(from), from))
        die("strrep: '%s' occurs more than once in '%s'", from, s);
    size_t a = (size_t)(at - s), fl = strlen(from), tl = strlen(to), sl = strlen(s);
    char *d = A(sl - fl + tl + 1);
    memcpy(d, s, a);
    memcpy(d + a, to, tl);
    memcpy(d + a + tl, at + fl, sl - a - fl + 1);
    return d;
}

void arena_free(void)
{
    for (size_t i = 0; i < g_narena; i++)
        free(g_arena[i]);
    free(g_arena);
    g_arena = NULL;
    g_narena = g_carena = 0;
}

/* ------------------------------------------------------------ output files */

static char **g_files;
static size_t g_nfiles, g_cfiles;

static void mkdirs_for(const char *path)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                die("mkdir %s: %s", p, strerror(errno));
            *s = '/';
        }
    }
    free(p);
}

void out_write(const char *rel, const void *p, size_t n)
{
    for (size_t i = 0; i < g_nfiles; i++)
        if (strcmp(g_files[i], rel) == 0)
            die("file %s written twice", rel);
    char *path = AS("%s/%s", g_out, rel);
    mkdirs_for(path);
    if (file_save(path, p, n) != 0)
        die("cannot write %s: %s", path, strerror(errno));
    if (g_nfiles == g_cfiles) {
        g_cfiles = g_cfiles ? g_cfiles * 2 : 256;
        g_files = realloc(g_files, g_cfiles * sizeof *g_files);
        if (!g_files)
            die("out of memory");
    }
    g_files[g_nfiles++] = AS("%s", rel);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void out_sums(void)
{
    qsort(g_files, g_nfiles, sizeof *g_files, cmp_str);
    xb s = {0};
    for (size_t i = 0; i < g_nfiles; i++) {
        xb f;
        if (file_load(AS("%s/%s", g_out, g_files[i]), &f) != 0)
            die("cannot read back %s", g_files[i]);
        uint8_t d[32];
        char h[65];
        sha256(f.p, f.n, d);
        hex(d, 32, h);
        xb_printf(&s, "%s  %s\n", h, g_files[i]);
        xb_free(&f);
    }
    char *path = AS("%s/SHA256SUMS", g_out);
    if (file_save(path, s.p, s.n) != 0)
        die("cannot write %s", path);
    xb_free(&s);
    free(g_files);
    g_files = NULL;
    g_nfiles = g_cfiles = 0;
}

/* ------------------------------------------------------------ registry */

vec g_vecs[MAX_VECS];
int g_nvecs;

static vec *new_vec(const char *group, const char *name, const char *desc)
{
    if (g_nvecs == MAX_VECS)
        die("too many vectors");
    char *full = AS("%s/%s", group, name);
    for (int i = 0; i < g_nvecs; i++)
        if (strcmp(g_vecs[i].name, full) == 0)
            die("vector %s defined twice", full);
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
            die("vector name %s: use [a-z0-9-]", name);
    vec *v = &g_vecs[g_nvecs++];
    memset(v, 0, sizeof *v);
    v->name = full;
    v->group = group;
    v->desc = desc;
    return v;
}

/* ------------------------------------------------------------ data */

size_t esize(uint8_t dtype)
{
    static const size_t e[14] = {1, 4, 2, 2, 8, 1, 1, 2, 2, 4, 4, 8, 8, 1};
    return dtype < 14 ? e[dtype] : 0;
}

const char *dtype_lc(uint8_t d)
{
    static const char *n[14] = {"bytes", "f32", "f16", "bf16", "f64", "i8",  "u8",
                                "i16",   "u16", "i32", "u32",  "i64", "u64", "bool"};
    return d < 14 ? n[d] : "?";
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

uint8_t *mkdata(uint8_t dtype, uint64_t numel, uint64_t seed)
{
    size_t e = esize(dtype), n = (size_t)numel * e;
    uint8_t *p = A(n);
    prng r = {seed * 0x9E3779B97F4A7C15ull + 0x1234567ull};
    for (uint64_t i = 0; i < numel; i++) {
        uint8_t *q = p + i * e;
        uint64_t x = prng_next(&r);
        switch (dtype) {
        case 0: { /* BYTES: text-like, compressible */
            static const char alpha[] = "the quick brown fox jumps over a lazy dog\n";
            q[0] = (uint8_t)alpha[(i * 7 + (x % 3)) % (sizeof alpha - 1)];
            break;
        }
        case 1:
            wr32(q, f32_bits((float)((prng_unit(&r) - 0.5) * 0.25)));
            break;
        case 2: /* binary16: sign, exponent 9..14, random mantissa */
            wr16(q, (uint16_t)(((x & 1) << 15) | ((9 + (x >> 1) % 6) << 10) | ((x >> 8) & 0x3FF)));
            break;
        case 3:
            wr16(q, (uint16_t)(f32_bits((float)((prng_unit(&r) - 0.5) * 0.25)) >> 16));
            break;
        case 4: {
            double d = (prng_unit(&r) - 0.5) * 0.01;
            uint64_t u;
            memcpy(&u, &d, 8);
            wr64(q, u);
            break;
        }
        case 5:
            q[0] = (uint8_t)(int8_t)((int)(x % 41) - 20);
            break;
        case 6:
            q[0] = (uint8_t)(x % 64);
            break;
        case 7:
            wr16(q, (uint16_t)(int16_t)((int)(x % 2001) - 1000));
            break;
        case 8:
            wr16(q, (uint16_t)(x % 4000));
            break;
        case 9:
            wr32(q, (uint32_t)(int32_t)((int64_t)(x % 200001) - 100000));
            break;
        case 10:
            wr32(q, (uint32_t)(x % 1000000));
            break;
        case 11:
            wr64(q, (uint64_t)((int64_t)(x % 2000001) - 1000000));
            break;
        case 12:
            wr64(q, x % 1000000000000ull);
            break;
        case 13:
            q[0] = (uint8_t)(x & 1);
            break;
        default:
            die("mkdata: dtype %u", dtype);
        }
    }
    return p;
}

/* ------------------------------------------------------------ sections */

S tensor(const char *name, uint8_t dtype, uint8_t codec, uint8_t rank, uint64_t d0, uint64_t d1,
         uint64_t d2, uint64_t d3, uint64_t seed)
{
    S s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.type = EXPERT_SECTION_TENSOR;
    s.codec = codec;
    s.dtype = dtype;
    s.rank = rank;
    s.layer = EXPERT_LAYER_NONE;
    s.module = EXPERT_MODULE_NONE;
    uint64_t d[4] = {d0, d1, d2, d3};
    uint64_t numel = 1;
    for (int k = 0; k < 4; k++) {
        s.dims[k] = k < rank ? d[k] : 0;
        if (k < rank)
            numel *= d[k];
    }
    s.len = (size_t)(numel * esize(dtype));
    s.data = mkdata(dtype, numel, seed);
    return s;
}

S adapter(const char *name, uint16_t type, uint8_t dtype, uint32_t layer, uint32_t module, uint8_t rank,
          uint64_t d0, uint64_t d1, uint64_t seed)
{
    S s = tensor(name, dtype, EXPERT_CODEC_RAW, rank, d0, d1, 0, 0, seed);
    s.type = type;
    s.layer = layer;
    s.module = module;
    return s;
}

S file_sec(const char *name, const char *text)
{
    S s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.type = EXPERT_SECTION_FILE;
    s.codec = EXPERT_CODEC_RAW;
    s.dtype = EXPERT_DTYPE_BYTES;
    s.rank = 1;
    s.layer = EXPERT_LAYER_NONE;
    s.module = EXPERT_MODULE_NONE;
    s.len = strlen(text);
    s.dims[0] = s.len;
    s.data = (const uint8_t *)text;
    return s;
}

S bytes_sec(const char *name, uint16_t type, const void *data, size_t len)
{
    S s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.type = type;
    s.codec = EXPERT_CODEC_RAW;
    s.dtype = EXPERT_DTYPE_BYTES;
    s.rank = 1;
    s.layer = EXPERT_LAYER_NONE;
    s.module = EXPERT_MODULE_NONE;
    s.len = len;
    s.dims[0] = len;
    s.data = data;
    return s;
}

S raw_sec(const char *name, uint16_t type, uint8_t dtype, uint8_t rank, const uint64_t *dims,
          const void *data, size_t len)
{
    S s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.type = type;
    s.codec = EXPERT_CODEC_RAW;
    s.dtype = dtype;
    s.rank = rank;
    s.layer = EXPERT_LAYER_NONE;
    s.module = EXPERT_MODULE_NONE;
    for (int k = 0; k < rank; k++)
        s.dims[k] = dims[k];
    s.len = len;
    s.data = data;
    return s;
}

/* ------------------------------------------------------------ keys, signing */

static const uint8_t k_seed1[32] = { /* RFC 8032 §7.1 TEST 1 */
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
static const uint8_t k_seed2[32] = { /* RFC 8032 §7.1 TEST 2 */
    0x4c, 0xcd, 0x08, 0x9b, 0x28, 0xff, 0x96, 0xda, 0x9d, 0xb6, 0xc3, 0x46, 0xec, 0x11, 0x4e, 0x0f,
    0x5b, 0x8a, 0x31, 0x9f, 0x35, 0xab, 0xa6, 0x24, 0xda, 0x8c, 0xf6, 0xed, 0x4f, 0xb8, 0xa6, 0xfb};

static EVP_PKEY *pkey(int which)
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, which == 2 ? k_seed2 : k_seed1, 32);
    if (!k)
        die("cannot create an Ed25519 key");
    return k;
}

static char *pem_of(EVP_PKEY *k, int priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = priv ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(b, k);
    if (!ok)
        die("PEM encoding failed");
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = A((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    BIO_free(b);
    return s;
}

void write_keys(void)
{
    for (int w = 1; w <= 2; w++) {
        EVP_PKEY *k = pkey(w);
        char *priv = pem_of(k, 1), *pub = pem_of(k, 0);
        out_write(w == 1 ? KEY1_PRIV : KEY2_PRIV, priv, strlen(priv));
        out_write(w == 1 ? KEY1_PUB : KEY2_PUB, pub, strlen(pub));
        EVP_PKEY_free(k);
    }
    /* Spec §16 prints the TEST 1 key in PEM: the files must be those bytes. */
    const char *spec_priv = "-----BEGIN PRIVATE KEY-----\n"
                            "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                            "-----END PRIVATE KEY-----\n";
    const char *spec_pub = "-----BEGIN PUBLIC KEY-----\n"
                           "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
                           "-----END PUBLIC KEY-----\n";
    xb a, b;
    if (file_load(AS("%s/%s", g_out, KEY1_PRIV), &a) || file_load(AS("%s/%s", g_out, KEY1_PUB), &b))
        die("cannot read the keys back");
    if (strcmp((char *)a.p, spec_priv) != 0 || strcmp((char *)b.p, spec_pub) != 0)
        die("the TEST 1 key PEM differs from spec §16");
    xb_free(&a);
    xb_free(&b);
    /* Not an Ed25519 key: an X25519 public key (RFC 8410), for BAD_KEY. */
    const char *x25519 = "-----BEGIN PUBLIC KEY-----\n"
                         "MCowBQYDK2VuAyEA3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\n"
                         "-----END PUBLIC KEY-----\n";
    out_write(KEY_X25519, x25519, strlen(x25519));
    const char *garbage = "-----BEGIN PUBLIC KEY-----\n"
                          "this is not base64 !!\n"
                          "-----END PUBLIC KEY-----\n";
    out_write(KEY_GARBAGE, garbage, strlen(garbage));
    /* Spec §11.5 "malformed PEM": more than one block (the TEST 1 key twice),
     * and base64 of the 44-byte DER followed by one 0x00 byte. */
    char *two = AS("%s%s", spec_pub, spec_pub);
    out_write(KEY_TWO_BLOCKS, two, strlen(two));
    const char *trailing = "-----BEGIN PUBLIC KEY-----\n"
                           "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURoA\n"
                           "-----END PUBLIC KEY-----\n";
    out_write(KEY_DER_TRAILING, trailing, strlen(trailing));
}

static void ed_sign(int which, const uint8_t *msg, size_t n, uint8_t sig[64])
{
    EVP_PKEY *k = pkey(which);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    size_t sl = 64;
    if (EVP_DigestSignInit(c, NULL, NULL, NULL, k) != 1 || EVP_DigestSign(c, sig, &sl, msg, n) != 1 || sl != 64)
        die("Ed25519 signing failed");
    EVP_MD_CTX_free(c);
    EVP_PKEY_free(k);
}

void sign_buf(xb *b, int which)
{
    uint8_t msg[48];
    memcpy(msg, "HLLMEXP2-SIGN-V1", 16);
    memcpy(msg + 16, b->p + H_STRUCT_SHA, 32);
    ed_sign(which, msg, 48, b->p + H_SIG);
}

void sign_raw(xb *b, int which, const uint8_t *msg, size_t n) { ed_sign(which, msg, n, b->p + H_SIG); }

/* ------------------------------------------------------------ builders */

static expert_private_key *load_priv(int which)
{
    expert_private_key *k = NULL;
    expert_error err;
    if (expert_private_key_load(AS("%s/%s", g_out, which == 2 ? KEY2_PRIV : KEY1_PRIV), &k, &err) != EXPERT_OK)
        die("cannot load the signing key: %s", err.message);
    return k;
}

int build_try(const F *f, xb *out)
{
    char *path = AS("%s/.build.expert", g_out);
    expert_writer_options o;
    memset(&o, 0, sizeof o);
    o.alignment = f->align;
    o.frame_size = f->frame;
    o.zstd_level = 19;
    o.threads = 0;
    expert_writer *w = NULL;
    expert_error err;
    memset(&err, 0, sizeof err);
    if (expert_writer_open(path, &o, &w, &err) != EXPERT_OK)
        die("writer_open: %s", err.message);
    for (int i = 0; i < f->n; i++) {
        const S *s = &f->s[i];
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        d.name = s->name;
        d.name_length = s->name_len ? s->name_len : strlen(s->name);
        d.type = s->type;
        d.codec = s->codec;
        d.dtype = s->dtype;
        d.rank = s->rank;
        d.flags = s->flags;
        d.layer = s->layer;
        d.module = s->module;
        memcpy(d.dims, s->dims, sizeof d.dims);
        static const uint8_t dummy[1];
        expert_status st = expert_writer_add(w, &d, s->data ? s->data : dummy, s->len, &err);
        if (st != EXPERT_OK) {
            fprintf(stderr, "writer_add(%s): %s: %s\n", s->name, expert_status_name(st), err.message);
            expert_writer_abort(w);
            return -1;
        }
    }
    expert_status st = expert_writer_set_metadata(w, f->meta, strlen(f->meta), &err);
    if (st != EXPERT_OK) {
        fprintf(stderr, "set_metadata: %s: %s\n", expert_status_name(st), err.message);
        expert_writer_abort(w);
        return -1;
    }
    expert_private_key *key = f->sign ? load_priv(f->sign) : NULL;
    st = expert_writer_finish(w, key, &err);
    expert_private_key_free(key);
    if (st != EXPERT_OK) {
        fprintf(stderr, "writer_finish: %s: %s\n", expert_status_name(st), err.message);
        return -1;
    }
    if (file_load(path, out) != 0)
        die("cannot read back %s", path);
    unlink(path);
    return 0;
}

void build(const F *f, xb *out)
{
    if (build_try(f, out) != 0)
        die("the reference writer refused a valid file (metadata %s)", f->meta);
}

char *meta_text(const uint8_t *p, size_t n, size_t *len)
{
    uint64_t off = rd64(p + H_META_OFF), ml = rd64(p + H_META_LEN), dl = rd64(p + H_META_DEC);
    if (off > n || ml > n - off || dl > (1u << 25))
        die("meta_text: bad metadata region");
    char *t = A((size_t)dl + 1);
    size_t r = ZSTD_decompress(t, (size_t)dl, p + off, (size_t)ml);
    if (ZSTD_isError(r) || r != dl)
        die("meta_text: metadata does not decode: %s", ZSTD_isError(r) ? ZSTD_getErrorName(r) : "length");
    t[dl] = 0;
    if (len)
        *len = (size_t)dl;
    return t;
}

void normalize(xb *b)
{
    size_t ml;
    char *t = meta_text(b->p, b->n, &ml);
    xm_model m;
    model_parse(b->p, b->n, &m);
    model_set_meta_json(&m, t, ml);
    xb o;
    xm_serialize(&m, NULL, &o);
    xm_free(&m);
    xb_free(b);
    *b = o;
}

/* Writer output made independent of what the library's writer accepts: the
 * writer gets every section as a must-ignore type (0x8000) without module and
 * a stub metadata; the real types, module indices and metadata (as a raw-block
 * zstd frame) are then put into the TOC and the file is re-serialised in the
 * canonical layout with fresh digests. For a valid file this is byte for byte
 * what the writer would produce with a raw-block metadata frame; it also
 * builds the invalid files of the reject vectors. */
void build_norm(const F *f, xb *out)
{
    S *s = xcalloc((size_t)f->n, sizeof *s);
    for (int i = 0; i < f->n; i++) {
        s[i] = f->s[i];
        if (s[i].type < 0x8000)
            s[i].type = 0x8000;
        s[i].module = EXPERT_MODULE_NONE;
    }
    F g = *f;
    g.s = s;
    g.meta = "{\"format\":\"expert-v2\",\"name\":\"stub\",\"version\":\"1\",\"modules\":[]}";
    g.sign = 0;
    build(&g, out);
    free(s);
    xm_model m;
    model_parse(out->p, out->n, &m);
    for (int i = 0; i < f->n; i++) {
        wr16(m.sec[i].entry + T_TYPE, f->s[i].type);
        wr32(m.sec[i].entry + T_MODULE, f->s[i].module);
    }
    model_set_meta_json(&m, f->meta, strlen(f->meta));
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
    if (f->sign)
        sign_buf(out, f->sign);
}

xb dupb(const xb *b)
{
    xb d = {0};
    xb_put(&d, b->p, b->n);
    return d;
}

uint8_t *E(xb *b, uint32_t i) { return b->p + rd64(b->p + H_TOC_OFF) + (uint64_t)TOC_ENTRY * i; }

void fix(xb *b) { xm_rehash(b->p, b->n); }

void set_sha_from_raw(xb *b, uint32_t i)
{
    uint8_t *e = E(b, i);
    sha256(b->p + rd64(e + T_OFFSET), (size_t)rd64(e + T_DECODED), e + T_SHA);
}

void model_compact_strings(xm_model *m)
{
    xb s = {0};
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t no = rd32(m->sec[i].entry + T_NAME_OFF);
        uint16_t nl = rd16(m->sec[i].entry + T_NAME_LEN);
        wr32(m->sec[i].entry + T_NAME_OFF, (uint32_t)s.n);
        xb_put(&s, m->strings + no, nl);
    }
    free(m->strings);
    m->strings = xmalloc(s.n);
    if (s.n)
        memcpy(m->strings, s.p, s.n);
    m->strings_len = s.n;
    xb_free(&s);
}

void model_rename(xm_model *m, uint32_t i, const void *name, size_t len)
{
    xm_set_name(m, i, name, len);
    model_compact_strings(m);
}

/* ------------------------------------------------------------ decoding (generator-side check) */

static int decode_section(const uint8_t *p, size_t n, const uint8_t *e, uint8_t **out)
{
    uint64_t off = rd64(e + T_OFFSET), st = rd64(e + T_STORED), dl = rd64(e + T_DECODED);
    uint8_t codec = e[T_CODEC];
    size_t es = esize(e[T_DTYPE]);
    if (off > n || st > n - off || dl > ((uint64_t)1 << 31))
        return -1;
    uint8_t *d = xmalloc((size_t)dl);
    const uint8_t *s = p + off;
    if (codec == 0) {
        if (st != dl) {
            free(d);
            return -1;
        }
        memcpy(d, s, (size_t)dl);
        *out = d;
        return 0;
    }
    uint32_t F = rd32(e + T_FRAME);
    if (F == 0 || es == 0) {
        free(d);
        return -1;
    }
    uint64_t nf = dl ? (dl - 1) / F + 1 : 0;
    if (st < 4 * nf) {
        free(d);
        return -1;
    }
    uint64_t pos = 4 * nf;
    uint8_t *tmp = xmalloc(F);
    for (uint64_t i = 0; i < nf; i++) {
        uint32_t c = rd32(s + 4 * i);
        uint64_t L = dl - i * F < F ? dl - i * F : F;
        if (pos + c > st) {
            free(tmp);
            free(d);
            return -1;
        }
        size_t r = ZSTD_decompress(tmp, (size_t)L, s + pos, c);
        if (ZSTD_isError(r) || r != L) {
            free(tmp);
            free(d);
            return -1;
        }
        if (codec == 2 && es > 1) {
            size_t N = (size_t)L / es;
            for (size_t j = 0; j < es; j++)
                for (size_t k = 0; k < N; k++)
                    d[i * F + k * es + j] = tmp[j * N + k];
        } else {
            memcpy(d + i * F, tmp, (size_t)L);
        }
        pos += c;
    }
    free(tmp);
    if (pos != st) {
        free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* Does shuffling the decoded bytes of a codec-2 section again (per frame)
 * change them? Marks the vectors that the misdecode-shuffle fault must fail. */
static int shuffle_sensitive(const uint8_t *p, size_t n)
{
    if (n < 256)
        return 0;
    uint64_t toc = rd64(p + H_TOC_OFF);
    uint32_t cnt = rd32(p + H_TOC_COUNT);
    if (cnt > 65536 || toc > n || (uint64_t)cnt * TOC_ENTRY > n - toc)
        return 0;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *e = p + toc + (uint64_t)i * TOC_ENTRY;
        size_t es = esize(e[T_DTYPE]);
        if (e[T_CODEC] != 2 || es <= 1)
            continue;
        uint8_t *d;
        if (decode_section(p, n, e, &d) != 0)
            continue;
        uint64_t dl = rd64(e + T_DECODED);
        uint32_t F = rd32(e + T_FRAME);
        int changed = 0;
        for (uint64_t off = 0; off < dl && !changed; off += F) {
            size_t L = (size_t)(dl - off < F ? dl - off : F), N = L / es;
            for (size_t j = 0; j < es && !changed; j++)
                for (size_t k = 0; k < N && !changed; k++)
                    if (d[off + j * N + k] != d[off + k * es + j])
                        changed = 1;
        }
        free(d);
        if (changed)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ descriptions */

static char *describe(const uint8_t *p, size_t n)
{
    xb o = {0};
    char h1[65], h2[65];
    hex(p + H_FILE_SHA, 32, h1);
    hex(p + H_STRUCT_SHA, 32, h2);
    int is_signed = 0;
    for (int i = 0; i < 64; i++)
        is_signed |= p[H_SIG + i] != 0;
    uint32_t cnt = rd32(p + H_TOC_COUNT);
    xb_printf(&o,
               "{\n  \"header\": {\"major\": %u, \"minor\": %u, \"alignment\": %u, \"section_count\": %u, "
               "\"signed\": %s,\n             \"file_sha256\": \"%s\",\n             \"structure_sha256\": "
               "\"%s\"},\n",
               rd16(p + H_MAJOR), rd16(p + H_MINOR), rd32(p + H_ALIGN), cnt, is_signed ? "true" : "false", h1, h2);
    size_t ml;
    char *t = meta_text(p, n, &ml);
    char *min = json_minify(t, ml);
    xb_printf(&o, "  \"metadata\": %s,\n  \"sections\": [", min);
    free(min);
    uint64_t toc = rd64(p + H_TOC_OFF), str = rd64(p + H_STR_OFF);
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *e = p + toc + (uint64_t)i * TOC_ENTRY;
        uint8_t *d;
        if (decode_section(p, n, e, &d) != 0)
            die("describe: section %u does not decode", i);
        uint8_t dig[32];
        sha256(d, (size_t)rd64(e + T_DECODED), dig);
        free(d);
        if (memcmp(dig, e + T_SHA, 32) != 0)
            die("describe: section %u: digest of the decoded bytes differs from the TOC", i);
        char hx[65];
        hex(dig, 32, hx);
        xb_printf(&o, "%s\n    {\"index\": %u, \"name\": ", i ? "," : "", i);
        json_str(&o, p + str + rd32(e + T_NAME_OFF), rd16(e + T_NAME_LEN));
        xb_printf(&o, ", \"type\": %u, \"codec\": %u, \"dtype\": %u, \"shape\": [", rd16(e + T_TYPE), e[T_CODEC],
                   e[T_DTYPE]);
        for (int k = 0; k < e[T_RANK]; k++)
            xb_printf(&o, "%s%llu", k ? ", " : "", (unsigned long long)rd64(e + T_DIMS + 8 * k));
        uint32_t layer = rd32(e + T_LAYER), module = rd32(e + T_MODULE);
        xb_str(&o, "], \"layer\": ");
        if (layer == 0xFFFFFFFFu)
            xb_str(&o, "null");
        else
            xb_printf(&o, "%u", layer);
        xb_str(&o, ", \"module\": ");
        if (module == 0xFFFFFFFFu)
            xb_str(&o, "null");
        else
            xb_printf(&o, "%u", module);
        xb_printf(&o, ",\n     \"flags\": %u, \"decoded_length\": %llu, \"sha256\": \"%s\"}", rd32(e + T_FLAGS),
                   (unsigned long long)rd64(e + T_DECODED), hx);
    }
    xb_str(&o, cnt ? "\n  ]\n}\n" : "]\n}\n");
    char *s = AS("%s", (char *)o.p);
    xb_free(&o);
    return s;
}

/* Sanity checks every accept vector must pass here (generator bugs). */
static void check_valid(const char *name, const uint8_t *p, size_t n)
{
    if (n < 256 || memcmp(p, "HLLMEXP\0", 8) != 0 || rd64(p + H_FILE_LEN) != n)
        die("%s: not a plausible file", name);
    uint8_t h[32];
    xm_file_sha(p, n, h);
    if (memcmp(h, p + H_FILE_SHA, 32) != 0)
        die("%s: file_sha256 is stale", name);
    xm_structure_sha(p, n, h);
    if (memcmp(h, p + H_STRUCT_SHA, 32) != 0)
        die("%s: structure_sha256 is stale", name);
}

/* ------------------------------------------------------------ emitters */

void accept_vec(const char *name, const char *desc, const xb *b, const char *key)
{
    vec *v = new_vec("accept", name, desc);
    check_valid(v->name, b->p, b->n);
    v->file = AS("%s.expert", v->name);
    v->expect = AS("%s.json", v->name);
    v->key = key;
    v->shuffle = shuffle_sensitive(b->p, b->n);
    out_write(v->file, b->p, b->n);
    char *d = describe(b->p, b->n);
    out_write(v->expect, d, strlen(d));
}

void reject_vec(const char *name, const char *desc, const xb *b, const char *error, const char *level,
                const char *key)
{
    vec *v = new_vec("reject", name, desc);
    expert_status st;
    if (expert_status_from_name(error, &st) != EXPERT_OK)
        die("%s: unknown error class %s", v->name, error);
    if (strcmp(level, "structural") && strcmp(level, "access") && strcmp(level, "full"))
        die("%s: level %s", v->name, level);
    v->file = AS("%s.expert", v->name);
    v->error = error;
    v->level = level;
    v->key = key;
    v->shuffle = shuffle_sensitive(b->p, b->n);
    out_write(v->file, b->p, b->n);
}

void rebuild_reject_vec(const char *name, const char *desc, const xb *b, const char *error,
                        const char *section)
{
    reject_vec(name, desc, b, error, "full", NULL);
    vec *v = &g_vecs[g_nvecs - 1];
    v->level = "rebuild";
    v->rebuild = section;
}

void impl_vec(const char *name, const char *desc, const xb *b, const char *note, const char *key)
{
    vec *v = new_vec("impl", name, desc);
    v->file = AS("%s.expert", v->name);
    v->note = note;
    v->key = key;
    out_write(v->file, b->p, b->n);
}

void write_vec(const char *name, const char *desc, const char *request_json, const char *key)
{
    vec *v = new_vec("write", name, desc);
    v->request = AS("%s.request.json", v->name);
    v->key = key;
    out_write(v->request, request_json, strlen(request_json));
}

/* ------------------------------------------------------------ manifest, README */

static void jfield(xb *o, const char *k, const char *v)
{
    xb_printf(o, ", \"%s\": ", k);
    if (v)
        json_str(o, (const uint8_t *)v, strlen(v));
    else
        xb_str(o, "null");
}

void write_manifest(void)
{
    xb o = {0};
    xb_printf(&o, "{\"generator\": \"vectors/gen (expert-vectors-gen)\", \"zstd_version\": \"%s\",\n"
                   " \"vectors\": [\n",
               ZSTD_versionString());
    for (int i = 0; i < g_nvecs; i++) {
        vec *v = &g_vecs[i];
        xb_str(&o, "  {\"name\": ");
        json_str(&o, (const uint8_t *)v->name, strlen(v->name));
        jfield(&o, "group", v->group);
        if (strcmp(v->group, "write") == 0) {
            jfield(&o, "request", v->request);
        } else {
            jfield(&o, "file", v->file);
        }
        if (strcmp(v->group, "accept") == 0)
            jfield(&o, "expect", v->expect);
        if (v->error) {
            jfield(&o, "error", v->error);
            jfield(&o, "level", v->level);
        }
        if (v->note)
            jfield(&o, "note", v->note);
        if (v->rebuild) {
            jfield(&o, "rebuild", v->rebuild);
            if (v->rebuild_sha256) {
                jfield(&o, "rebuild_sha256", v->rebuild_sha256);
                xb_printf(&o, ", \"rebuild_length\": %llu", (unsigned long long)v->rebuild_length);
            }
        }
        if (v->key || strcmp(v->group, "accept") == 0)
            jfield(&o, "key", v->key);
        if (v->shuffle)
            xb_str(&o, ", \"tags\": [\"shuffle-sensitive\"]");
        jfield(&o, "description", v->desc);
        xb_str(&o, i + 1 < g_nvecs ? "},\n" : "}\n");
    }
    xb_str(&o, " ]}\n");
    out_write("manifest.json", o.p, o.n);
    xb_free(&o);
}

void write_readme(void)
{
    static const char *groups[4] = {"accept", "reject", "impl", "write"};
    static const char *titles[4] = {
        "Must accept (`accept/`): the testee must accept the file and print a description equal to the `.json` file",
        "Must reject (`reject/`): exactly one defect each; the testee must report the class at the level given",
        "Implementation-defined (`impl/`): either outcome passes; a crash, hang or malformed output fails",
        ("Write requests (`write/`): the testee writes a file that the reference reader must accept with the requested "
         "content")};
    int count[4] = {0};
    for (int i = 0; i < g_nvecs; i++)
        for (int g = 0; g < 4; g++)
            count[g] += strcmp(g_vecs[i].group, groups[g]) == 0;
    xb o = {0};
    xb_printf(&o,
               "# Golden vectors for `.expert` v2\n\n"
               "Generated by `vectors/gen` (do not edit by hand; regenerate with `expert-vectors-gen`, see\n"
               "`vectors/meson.build`). The committed bytes are the truth: `SHA256SUMS` lists every file and\n"
               "`manifest.json` gives the expectation of every vector in the format of `conformance/PROTOCOL.md`.\n\n"
               "%d vectors: %d accept, %d reject, %d implementation-defined, %d write. Generated with libzstd %s.\n\n"
               "Keys (`keys/`): `rfc8032-test1.pem` / `.pub.pem` is the RFC 8032 §7.1 TEST 1 key of spec §16;\n"
               "`rfc8032-test2.*` is TEST 2 (a second, wrong key); `x25519.pub.pem`, `garbage.pub.pem`,\n"
               "`two-blocks.pub.pem` (the TEST 1 key twice) and `der-trailing-byte.pub.pem` (its DER plus one byte)\n"
               "are not usable Ed25519 keys (BAD_KEY, spec §11.5).\n\n"
               "Where the exact compressed bytes do not matter, sections are raw and the metadata is a zstd frame of\n"
               "raw/RLE blocks built by the generator, so those files do not depend on the libzstd version; the\n"
               "`codec-zstd-*`, `codec-shuffle-*`, `frames-*` and `writer-*` accept vectors are the reference\n"
               "writer's output byte for byte (libzstd level 19).\n",
               g_nvecs, count[0], count[1], count[2], count[3], ZSTD_versionString());
    for (int g = 0; g < 4; g++) {
        xb_printf(&o, "\n## %s\n\n", titles[g]);
        for (int i = 0; i < g_nvecs; i++) {
            vec *v = &g_vecs[i];
            if (strcmp(v->group, groups[g]) != 0)
                continue;
            xb_printf(&o, "- `%s` — %s", v->name, v->desc);
            if (v->error)
                xb_printf(&o, " → **%s** (%s)", v->error, v->level);
            if (v->note)
                xb_printf(&o, " (either outcome: %s)", v->note);
            if (v->key)
                xb_printf(&o, " [key `%s`]", v->key);
            xb_str(&o, "\n");
        }
    }
    out_write("README.md", o.p, o.n);
    xb_free(&o);
}
