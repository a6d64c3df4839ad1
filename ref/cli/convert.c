/* convert.c — `expert-cli convert`: v1 tar.gz <-> .expert v2, one file or a
 * directory tree (--batch, parallel, resumable).
 *
 * The library does the format work: expert_open_v1() reads a v1 package into
 * an in-memory v2 image with the sections and metadata `pack` gives the
 * extracted directory, so v1 -> v2 is a transcode of that image's sections
 * (TOC order, same names, types, shapes, layers, modules and metadata) with
 * the chosen codec; v2 -> v1 is expert_export_v1() (every package file
 * byte-exact, original entry order when known) plus a sha256sum sidecar.
 * Outputs are atomic (temp file + rename): a failed conversion leaves
 * nothing at OUT. The only lossy path is the opt-in --dtype. One command in
 * one file (~1,200 lines): the single-file path, the batch driver (worker
 * threads, resume, JSON/Markdown summary) and --dtype share its options. */
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char k_help_convert[] =
    "Usage: expert-cli convert IN OUT [options]\n"
    "       expert-cli convert --batch IN_DIR OUT_DIR [options]\n"
    "\n"
    "Converts between v1 packages (hivellm tar.gz) and .expert v2. IN's format is\n"
    "detected from its first bytes. Lossless unless --dtype is given.\n"
    "  --to v2 (default)  OUT gets the sections and metadata `pack` gives the\n"
    "                     extracted package: every file of IN is recoverable\n"
    "                     byte-exact with `extract` (manifest.json too, as the\n"
    "                     source_manifest FILE section), every tensor bit-exact.\n"
    "  --to v1            rollback: OUT is a v1 tar.gz (GNU tar, gzip) holding every\n"
    "                     package file byte-exact, in the original entry order when\n"
    "                     IN came from v1, plus OUT.sha256 (sha256sum format).\n"
    "A v1 IN is checked against IN.sha256 when present (a mismatch fails unless the\n"
    "package is v1-signed: the old `sign` never refreshed the sidecar) and its v1\n"
    "signature, if any, is verified and reported (see --v1-pubkey).\n"
    "\n"
    "Options:\n"
    "  --to v1|v2             output format (default v2)\n"
    "  --codec C              v2: raw | zstd | shuffle+zstd for tensors (default\n"
    "                         shuffle+zstd); files use zstd unless raw\n"
    "  --level N              v2: zstd level 1..22 (default 9); v1: gzip 1..9 (default 6)\n"
    "  --align N              v2: section alignment 64 | 256 | 4096 (default 64)\n"
    "  --frame-size BYTES     v2: frame size, power of two 64K..64M (default 1M)\n"
    "  --threads N            compression/decode threads per conversion\n"
    "  --sign PRIVATE.pem     v2: sign the output with an Ed25519 key\n"
    "  --dtype bf16|f16       v2, LOSSY and opt-in: store F32 tensors as bf16/f16\n"
    "                         (round to nearest even; the safetensors header is\n"
    "                         rewritten to match) and report the max absolute and\n"
    "                         relative error introduced\n"
    "  --v1-pubkey KEY        require a valid v1 signature by KEY (\"ed25519:<hex>\"),\n"
    "                         else fail; without it the package's own key is used\n"
    "                         and the result is only reported\n"
    "  --base-model NAME      v1 input whose manifest lists several base models: the\n"
    "                         one to map into the metadata\n"
    "  --v1-max-bytes BYTES   v1 input: limit on the decompressed archive and on any\n"
    "                         entry (default 1G; guards against gzip bombs)\n"
    "  --force                replace an existing OUT (single file mode)\n"
    "  --json                 print the result as one JSON object\n"
    "  -q, --quiet            no summary or progress\n"
    "\n"
    "Batch mode:\n"
    "  --batch                IN and OUT are directories: every *.expert file under\n"
    "                         IN_DIR is converted to the same relative path under\n"
    "                         OUT_DIR; inputs already in the target format are skipped\n"
    "  --jobs N               parallel conversions (default: online CPUs)\n"
    "  --summary-json FILE    JSON summary: files, sizes before/after, ratio, time,\n"
    "                         failures with reasons\n"
    "  --summary-md FILE      the same as a Markdown table\n"
    "Batch runs are resumable: an existing output that opens, passes full\n"
    "validation and holds the same sections (name, type, SHA-256) as its input is\n"
    "skipped; any other existing output is converted again. A progress bar is\n"
    "drawn on a terminal. Exit status: 0, or the class of the first failure.\n";

/* ================================================================ options */

typedef struct conv_opts {
    int to;                /* 1 or 2 */
    uint8_t tensor_codec, aux_codec;
    expert_writer_options wopt;
    int gzip_level;        /* --to v1 */
    unsigned threads;
    const char *sign_path;
    expert_private_key *key;
    int lossy;             /* 0, EXPERT_DTYPE_BF16 or EXPERT_DTYPE_F16 */
    const char *v1_pubkey; /* text */
    const char *base_model;    /* v1 input with several base models */
    uint64_t v1_max_bytes;     /* v1 input: decompressed size limit, 0 = library default */
    int force, json, quiet, batch;
    unsigned jobs;
    const char *summary_json, *summary_md;
} conv_opts;

typedef enum { R_CONVERTED, R_SKIPPED, R_FAILED } conv_state;

typedef struct conv_result {
    char *input, *output;  /* display paths */
    conv_state state;
    const char *skip_reason;
    int from, to;
    uint64_t bytes_before, bytes_after;
    double seconds;
    uint32_t sections, tensors, files;
    /* lossy */
    uint32_t lossy_tensors;
    double max_abs, max_rel;
    /* v1 input: sidecar state, signature */
    int sidecar;           /* expert_v1_sidecar + 1, 0 when not v1 */
    int sig_checked;
    expert_v1_sig_status sig_status;
    char sig_detail[512];
    expert_status status;
    expert_error err;
} conv_result;

/* ============================================================ lossy dtype */

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static uint16_t f32_to_f16(uint32_t u, int *overflow)
{
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    *overflow = 0;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a == 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x477ff000u) { /* rounds to >= 65520: not representable */
        *overflow = 1;
        return (uint16_t)(sign | 0x7c00u);
    }
    if (a >= 0x38800000u) { /* normal half */
        uint32_t r = a - 0x38000000u;
        r = r + 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a < 0x33000000u) /* below half the smallest subnormal: +-0 */
        return (uint16_t)sign;
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t half = 1u << (shift - 1), rem = m & ((1u << shift) - 1u), q = m >> shift;
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24 */
        return sign ? -v : v;
    }
    if (e == 31)
        return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* Converts n F32 values; updates the error maxima. Returns -1 on f16
 * overflow (index in *bad). */
static int narrow(const uint8_t *src, size_t n, int dtype, uint8_t *dst, double *max_abs,
                  double *max_rel, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + 4 * i, 4);
        float x = bits_f32(u), y;
        uint16_t h;
        if (dtype == EXPERT_DTYPE_BF16) {
            h = f32_to_bf16(u);
            y = bits_f32((uint32_t)h << 16);
        } else {
            int of = 0;
            h = f32_to_f16(u, &of);
            y = f16_to_f32(h);
        }
        if (isfinite(x) && !isfinite(y)) { /* rounds past the largest finite value */
            *bad = i;
            return -1;
        }
        dst[2 * i] = (uint8_t)h;
        dst[2 * i + 1] = (uint8_t)(h >> 8);
        if (isfinite(x)) {
            double d = fabs((double)x - (double)y);
            if (d > *max_abs)
                *max_abs = d;
            if (x != 0.0f && d / fabs((double)x) > *max_rel)
                *max_rel = d / fabs((double)x);
        }
    }
    return 0;
}

/* Rewrites a safetensors header (the exact 8+N bytes) for the narrowed
 * dtype: F32 entries become BF16/F16, data_offsets are recomputed in file
 * order, member order and __metadata__ are kept, padding is spaces. */
typedef struct st_member {
    json_t *v;
    uint64_t begin, end;
    int narrowed;
} st_member;

static int member_begin_cmp(const void *a, const void *b)
{
    const st_member *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

static expert_status rewrite_st_header(const uint8_t *hdr, size_t len, int dtype, strbuf *out,
                                       expert_error *err)
{
    json_error_t je;
    if (len < 8)
        return err_set(err, EXPERT_E_BAD_SAFETENSORS, "safetensors header section too short");
    json_t *root = json_loadb((const char *)hdr + 8, len - 8, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(err, EXPERT_E_BAD_SAFETENSORS, "safetensors header: %s",
                       root ? "not an object" : je.text);
    }
    size_t n = json_object_size(root), nt = 0;
    st_member *m = calloc(n ? n : 1, sizeof *m);
    expert_status s = m != NULL ? EXPERT_OK : err_set(err, EXPERT_E_NOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (s != EXPERT_OK || strcmp(key, "__metadata__") == 0)
            continue;
        const json_t *dt = json_object_get(v, "dtype"), *off = json_object_get(v, "data_offsets");
        if (!json_is_string(dt) || !json_is_array(off) || json_array_size(off) != 2 ||
            !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1))) {
            s = err_set(err, EXPERT_E_BAD_SAFETENSORS, "safetensors header: malformed entry '%s'",
                        key);
            break;
        }
        m[nt].v = v;
        m[nt].begin = (uint64_t)json_integer_value(json_array_get(off, 0));
        m[nt].end = (uint64_t)json_integer_value(json_array_get(off, 1));
        m[nt].narrowed = strcmp(json_string_value(dt), "F32") == 0;
        nt++;
    }
    if (s == EXPERT_OK) {
        qsort(m, nt, sizeof *m, member_begin_cmp);
        const char *to = dtype == EXPERT_DTYPE_BF16 ? "BF16" : "F16";
        uint64_t pos = 0;
        int bad = 0;
        for (size_t i = 0; i < nt; i++) {
            uint64_t l = (m[i].end - m[i].begin) / (m[i].narrowed ? 2u : 1u);
            if (m[i].narrowed)
                bad |= json_object_set_new(m[i].v, "dtype", json_string(to)) != 0;
            bad |= json_object_set_new(m[i].v, "data_offsets",
                                       json_pack("[I,I]", (json_int_t)pos, (json_int_t)(pos + l))) != 0;
            pos += l;
        }
        char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
        size_t tl = text != NULL ? strlen(text) : 0, padded = tl;
        while ((8 + padded) % 8 != 0)
            padded++;
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        sb_append(out, (const char *)le, 8);
        sb_append(out, text != NULL ? text : "", tl);
        for (size_t i = tl; i < padded; i++)
            sb_puts(out, " ");
        if (text == NULL || out->failed)
            s = err_set(err, EXPERT_E_NOMEM, "out of memory");
        free(text);
    }
    if (s == EXPERT_OK) { /* the result must be a valid header */
        expert_safetensors *st = NULL;
        s = expert_safetensors_parse_header(out->data, out->len, &st, err);
        expert_safetensors_free(st);
    }
    free(m);
    json_decref(root);
    return s;
}

/* The metadata with extra.lossy recording a --dtype pass (a second pass is
 * refused: the record of the first would be lost). */
static expert_status meta_add_lossy(const char *meta, size_t n, json_t *lossy, strbuf *out,
                                    expert_error *err)
{
    json_error_t je;
    json_t *root = json_loadb(meta, n, JSON_ALLOW_NUL, &je);
    json_t *extra = json_object_get(root, "extra");
    expert_status s = EXPERT_OK;
    if (!json_is_object(root))
        s = err_set(err, EXPERT_E_BAD_METADATA, "metadata is not an object");
    else if (json_object_get(extra, "lossy") != NULL)
        s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "the input was already converted with --dtype");
    else if (extra == NULL && json_object_set_new(root, "extra", extra = json_object()) != 0)
        s = err_set(err, EXPERT_E_NOMEM, "out of memory");
    else if (!json_is_object(extra))
        s = err_set(err, EXPERT_E_BAD_METADATA, "metadata extra is not an object");
    if (s == EXPERT_OK) {
        char *text = json_object_set(extra, "lossy", lossy) == 0 ? json_dumps(root, JSON_COMPACT)
                                                                : NULL;
        if (text != NULL)
            sb_append(out, text, strlen(text));
        if (text == NULL || out->failed)
            s = err_set(err, EXPERT_E_NOMEM, "out of memory");
        free(text);
    }
    json_decref(root);
    return s;
}

/* ============================================================ conversion */

static int is_file_type(uint16_t t)
{
    return t == EXPERT_SECTION_FILE || t == EXPERT_SECTION_SAFETENSORS_HEADER;
}

static int file_size(const char *path, uint64_t *out)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    *out = (uint64_t)st.st_size;
    return 0;
}

static expert_status write_v2(expert_reader *r, const char *out, const conv_opts *o,
                              conv_result *res, expert_error *err)
{
    expert_writer *w = NULL;
    expert_writer_options wo = o->wopt;
    uint8_t *buf = NULL, *nbuf = NULL;
    size_t cap = 0, ncap = 0;
    strbuf newhdr, meta2;
    expert_status s;

    sb_init(&newhdr);
    sb_init(&meta2);
    wo.threads = o->threads;
    s = expert_writer_open(out, &wo, &w, err);
    if (s != EXPERT_OK)
        return s;
    for (uint32_t i = 0; s == EXPERT_OK && i < expert_section_count(r); i++) {
        expert_section_info si;
        expert_section_desc d;
        const void *data;
        size_t len;
        expert_section(r, i, &si);
        if (si.decoded_length > SIZE_MAX) {
            s = err_set(err, EXPERT_E_LIMIT_EXCEEDED, "section %" PRIu32 " too large", i);
            break;
        }
        if (cap < si.decoded_length || buf == NULL) {
            free(buf);
            cap = si.decoded_length ? (size_t)si.decoded_length : 1;
            buf = malloc(cap);
            if (buf == NULL) {
                s = err_set(err, EXPERT_E_NOMEM, "out of memory");
                break;
            }
        }
        s = expert_read(r, i, buf, cap, 0, err);
        if (s != EXPERT_OK)
            break;
        memset(&d, 0, sizeof d);
        d.name = si.name;
        d.name_length = si.name_length;
        d.type = si.type;
        d.codec = is_file_type(si.type) ? o->aux_codec : o->tensor_codec;
        d.dtype = si.dtype;
        d.rank = si.rank;
        d.flags = si.flags;
        d.layer = si.layer;
        d.module = si.module;
        memcpy(d.dims, si.dims, sizeof d.dims);
        data = buf;
        len = (size_t)si.decoded_length;
        if (o->lossy && si.type == EXPERT_SECTION_SAFETENSORS_HEADER) {
            newhdr.len = 0;
            s = rewrite_st_header(buf, len, o->lossy, &newhdr, err);
            if (s != EXPERT_OK)
                break;
            data = newhdr.data;
            len = newhdr.len;
            d.dims[0] = len;
        } else if (o->lossy && !is_file_type(si.type) && si.dtype == EXPERT_DTYPE_F32 &&
                   si.type < 0x8000) {
            size_t nel = len / 4, bad = 0;
            if (ncap < 2 * nel || nbuf == NULL) {
                free(nbuf);
                ncap = nel ? 2 * nel : 1;
                nbuf = malloc(ncap);
                if (nbuf == NULL) {
                    s = err_set(err, EXPERT_E_NOMEM, "out of memory");
                    break;
                }
            }
            if (narrow(buf, nel, o->lossy, nbuf, &res->max_abs, &res->max_rel, &bad) != 0) {
                uint32_t u;
                memcpy(&u, buf + 4 * bad, 4);
                s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                            "tensor '%.*s': value %g at element %zu is outside the %s range%s",
                            (int)si.name_length, si.name, (double)bits_f32(u), bad,
                            o->lossy == EXPERT_DTYPE_BF16 ? "bf16" : "f16",
                            o->lossy == EXPERT_DTYPE_F16 ? " (try --dtype bf16)" : "");
                break;
            }
            d.dtype = (uint8_t)o->lossy;
            data = nbuf;
            len = 2 * nel;
            res->lossy_tensors++;
        }
        s = expert_writer_add(w, &d, data, len, err);
        if (s == EXPERT_OK) {
            res->sections++;
            if (si.type == EXPERT_SECTION_FILE || si.type == EXPERT_SECTION_SAFETENSORS_HEADER)
                res->files++;
            else
                res->tensors++;
        }
    }
    if (s == EXPERT_OK) {
        size_t ml = 0;
        const char *meta = expert_metadata_json(r, &ml);
        if (o->lossy) {
            json_t *lossy = json_pack("{s:s, s:I, s:f, s:f}", "dtype",
                                      o->lossy == EXPERT_DTYPE_BF16 ? "bf16" : "f16", "tensors",
                                      (json_int_t)res->lossy_tensors, "max_abs_error", res->max_abs,
                                      "max_rel_error", res->max_rel);
            s = lossy != NULL ? meta_add_lossy(meta, ml, lossy, &meta2, err)
                              : err_set(err, EXPERT_E_NOMEM, "out of memory");
            json_decref(lossy);
            meta = meta2.data;
            ml = meta2.len;
        }
        if (s == EXPERT_OK)
            s = expert_writer_set_metadata(w, meta, ml, err);
    }
    free(buf);
    free(nbuf);
    sb_free(&newhdr);
    sb_free(&meta2);
    if (s != EXPERT_OK) {
        expert_writer_abort(w);
        return s;
    }
    return expert_writer_finish(w, o->key, err);
}

static expert_status write_v1(expert_reader *r, const char *out, const conv_opts *o,
                              expert_error *err)
{
    expert_v1_write_options wo = {o->gzip_level, 0};
    expert_status s = expert_export_v1(r, out, &wo, err);
    if (s != EXPERT_OK)
        return s;
    /* OUT.sha256 (sha256sum format), as v1 packages ship */
    char *data = NULL, *sc = malloc(strlen(out) + 8);
    size_t len = 0;
    uint8_t d[32];
    char hex[65], line[400];
    const char *base = strrchr(out, '/');
    base = base ? base + 1 : out;
    if (sc == NULL)
        s = err_set(err, EXPERT_E_NOMEM, "out of memory");
    if (s == EXPERT_OK)
        s = read_small_file(out, (size_t)1 << 40, &data, &len, err);
    if (s == EXPERT_OK && expert_sha256(data, len, d) != EXPERT_OK)
        s = err_set(err, EXPERT_E_NOMEM, "hashing failed");
    if (s == EXPERT_OK) {
        sprintf(sc, "%s.sha256", out);
        snprintf(line, sizeof line, "%s  %s\n", fmt_hex(d, 32, hex), base);
        s = atomic_write_path(sc, line, strlen(line), 1, err);
    }
    if (s != EXPERT_OK)
        unlink(out); /* no partial output */
    free(data);
    free(sc);
    return s;
}

static const char *sidecar_name(int s)
{
    static const char *names[] = {"not-checked", "absent", "match", "stale (signed package)",
                                  "malformed"};
    return s >= 1 && s <= 5 ? names[s - 1] : "-";
}

static const char *sig_name(expert_v1_sig_status s)
{
    switch (s) {
    case EXPERT_V1_SIG_UNSIGNED: return "unsigned";
    case EXPERT_V1_SIG_VALID: return "valid";
    case EXPERT_V1_SIG_VALID_LEGACY: return "valid-legacy";
    case EXPERT_V1_SIG_LEGACY_DEFECT: return "unverifiable-old-tool-defect";
    default: return "invalid";
    }
}

/* Same sections (name, type, SHA-256 of the decoded bytes) in both readers. */
static int same_sections(const expert_reader *a, const expert_reader *b)
{
    uint32_t n = expert_section_count(a);
    if (n != expert_section_count(b))
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info x, y;
        uint32_t j;
        expert_section(a, i, &x);
        if (expert_find(b, x.name, x.name_length, &j) != EXPERT_OK)
            return 0;
        expert_section(b, j, &y);
        if (x.type != y.type || memcmp(x.sha256, y.sha256, 32) != 0)
            return 0;
    }
    return 1;
}

/* Converts one file. Thread-safe; prints nothing. */
static void convert_one(const conv_opts *o, const char *in, const char *out, int resume,
                        conv_result *res)
{
    expert_reader *r = NULL;
    expert_open_options oo = {.flags = 0, .threads = o->threads};
    expert_error *err = &res->err;
    uint64_t t0 = clock_ns();
    expert_status s;

    err_clear(err);
    res->to = o->to;
    if (file_size(in, &res->bytes_before) != 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s'", in);
        goto done;
    }
    {
        /* v1 inputs get the v1 options; anything else the normal open */
        uint8_t magic[2] = {0, 0};
        FILE *f = fopen(in, "rb");
        size_t got = f ? fread(magic, 1, 2, f) : 0;
        if (f)
            fclose(f);
        expert_v1_options vo = {o->v1_max_bytes, o->v1_max_bytes, 0, 0, o->base_model};
        if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b)
            s = expert_open_v1(in, &oo, &vo, &r, err);
        else
            s = expert_open(in, &oo, &r, err);
    }
    if (s != EXPERT_OK)
        goto done;
    res->from = expert_reader_source_format(r);
    {
        expert_v1_info vi;
        if (expert_v1_info_get(r, &vi) == EXPERT_OK)
            res->sidecar = (int)vi.sidecar + 1;
    }
    if (o->batch && res->from == o->to) {
        res->state = R_SKIPPED;
        res->skip_reason = o->to == 2 ? "already v2" : "already v1";
        goto done;
    }
    if (resume && path_exists(out)) {
        expert_reader *done_r = NULL;
        expert_error e2;
        expert_open_options any = {.threads = o->threads};
        if (expert_open_any(out, &any, NULL, &done_r, &e2) == EXPERT_OK && /* OUT may be a v1 rollback */
            expert_reader_source_format(done_r) == o->to &&
            expert_verify_full(done_r, NULL, &e2) == EXPERT_OK && same_sections(r, done_r)) {
            res->state = R_SKIPPED;
            res->skip_reason = "output already converted (sections match)";
            file_size(out, &res->bytes_after);
            expert_close(done_r);
            goto done;
        }
        expert_close(done_r);
    }
    /* v1 signature: required with --v1-pubkey, else reported when present */
    if (res->from == 1 || o->v1_pubkey != NULL) {
        expert_v1_info vi;
        int is_signed = expert_v1_info_get(r, &vi) == EXPERT_OK ? vi.is_signed : 1;
        if (o->v1_pubkey != NULL || is_signed) {
            expert_v1_signature_info si;
            expert_error e2;
            expert_status vs = expert_v1_verify(r, o->v1_pubkey, &si, &e2);
            res->sig_checked = 1;
            res->sig_status = si.status;
            snprintf(res->sig_detail, sizeof res->sig_detail, "%s", si.detail);
            if (o->v1_pubkey != NULL && vs != EXPERT_OK) {
                s = vs;
                *err = e2;
                goto done;
            }
        } else {
            res->sig_checked = 1;
            res->sig_status = EXPERT_V1_SIG_UNSIGNED;
        }
    }
    s = o->to == 2 ? write_v2(r, out, o, res, err) : write_v1(r, out, o, err);
    if (s == EXPERT_OK) {
        res->state = R_CONVERTED;
        file_size(out, &res->bytes_after);
    }
done:
    expert_close(r);
    res->status = s;
    if (s != EXPERT_OK)
        res->state = R_FAILED;
    res->seconds = (double)(clock_ns() - t0) / 1e9;
}

/* ============================================================== reporting */

static void result_json(strbuf *sb, const conv_result *r)
{
    static const char *states[] = {"converted", "skipped", "failed"};
    sb_puts(sb, "{\"input\":");
    sb_json_cstr(sb, r->input);
    sb_puts(sb, ",\"output\":");
    sb_json_cstr(sb, r->output);
    sb_printf(sb, ",\"status\":\"%s\"", states[r->state]);
    if (r->from)
        sb_printf(sb, ",\"from\":\"v%d\"", r->from);
    sb_printf(sb, ",\"to\":\"v%d\",\"bytes_before\":%" PRIu64 ",\"bytes_after\":%" PRIu64
                  ",\"ratio\":",
              r->to, r->bytes_before, r->bytes_after);
    if (r->bytes_after)
        sb_json_double(sb, (double)r->bytes_before / (double)r->bytes_after);
    else
        sb_puts(sb, "null");
    sb_puts(sb, ",\"seconds\":");
    sb_json_double(sb, r->seconds);
    if (r->state == R_CONVERTED && r->to == 2)
        sb_printf(sb, ",\"sections\":%" PRIu32 ",\"tensors\":%" PRIu32 ",\"files\":%" PRIu32,
                  r->sections, r->tensors, r->files);
    if (r->state == R_SKIPPED) {
        sb_puts(sb, ",\"reason\":");
        sb_json_cstr(sb, r->skip_reason);
    }
    if (r->state == R_FAILED) {
        sb_puts(sb, ",\"error\":{\"class\":");
        sb_json_cstr(sb, expert_status_name(r->status));
        sb_printf(sb, ",\"code\":%d,\"message\":", (int)r->status);
        sb_json_cstr(sb, r->err.message);
        sb_puts(sb, "}");
    }
    if (r->sidecar) {
        sb_puts(sb, ",\"v1_sidecar\":");
        sb_json_cstr(sb, sidecar_name(r->sidecar));
    }
    if (r->sig_checked) {
        sb_puts(sb, ",\"v1_signature\":{\"status\":");
        sb_json_cstr(sb, sig_name(r->sig_status));
        sb_puts(sb, ",\"detail\":");
        sb_json_cstr(sb, r->sig_detail[0] ? r->sig_detail : "no v1 signature");
        sb_puts(sb, "}");
    }
    if (r->lossy_tensors > 0 || (r->state == R_CONVERTED && r->to == 2 && r->max_abs > 0)) {
        sb_printf(sb, ",\"lossy\":{\"tensors\":%" PRIu32 ",\"max_abs_error\":", r->lossy_tensors);
        sb_json_double(sb, r->max_abs);
        sb_puts(sb, ",\"max_rel_error\":");
        sb_json_double(sb, r->max_rel);
        sb_puts(sb, "}");
    }
    sb_puts(sb, "}");
}

static void print_single(const conv_opts *o, const conv_result *r)
{
    char b1[32], b2[32];
    char *in = term_text(r->input), *out = term_text(r->output);
    printf("converted %s (v%d, %s) -> %s (v%d, %s): ratio %.3fx in %.3f s\n", in, r->from,
           fmt_size(r->bytes_before, b1), out, r->to, fmt_size(r->bytes_after, b2),
           r->bytes_after ? (double)r->bytes_before / (double)r->bytes_after : 0.0, r->seconds);
    if (r->to == 2)
        printf("  sections: %" PRIu32 " (%" PRIu32 " tensors, %" PRIu32 " files), codec %s\n",
               r->sections, r->tensors, r->files, expert_codec_name(o->tensor_codec));
    else
        printf("  also wrote %s.sha256\n", out);
    term_free(in);
    term_free(out);
    if (r->sidecar)
        printf("  v1 sidecar (IN.sha256): %s\n", sidecar_name(r->sidecar));
    if (r->sig_checked) {
        printf("  v1 signature: %s%s", sig_name(r->sig_status), r->sig_detail[0] ? ": " : "");
        fput_term(stdout, r->sig_detail, strlen(r->sig_detail));
        putchar('\n');
    }
    if (r->lossy_tensors > 0)
        printf("  LOSSY: %" PRIu32 " F32 tensors stored as %s; max abs error %.6g, max rel error "
               "%.6g\n",
               r->lossy_tensors, o->lossy == EXPERT_DTYPE_BF16 ? "bf16" : "f16", r->max_abs,
               r->max_rel);
}

/* ============================================================ batch mode */

typedef struct batch {
    const conv_opts *o;
    conv_result *res;
    char **in_paths, **out_paths;
    size_t count;
    size_t next, done, converted, skipped, failed;
    pthread_mutex_t lock;
    int progress;
    uint64_t t0;
} batch;

static void draw_progress(batch *b)
{
    const int width = 30;
    int fill = b->count ? (int)((double)b->done / (double)b->count * width) : width;
    double el = (double)(clock_ns() - b->t0) / 1e9;
    fprintf(stderr, "\r[%.*s%.*s] %zu/%zu  converted %zu  skipped %zu  failed %zu  %.1fs ", fill,
            "##############################", width - fill, "..............................",
            b->done, b->count, b->converted, b->skipped, b->failed, el);
    if (b->done == b->count)
        fputc('\n', stderr);
    fflush(stderr);
}

static void *batch_worker(void *arg)
{
    batch *b = arg;
    for (;;) {
        pthread_mutex_lock(&b->lock);
        size_t i = b->next < b->count ? b->next++ : b->count;
        pthread_mutex_unlock(&b->lock);
        if (i >= b->count)
            break;
        conv_result *r = &b->res[i];
        expert_status s = EXPERT_OK;
        /* the output's directory */
        char *dir = strdup(b->out_paths[i]);
        if (dir == NULL) {
            s = err_set(&r->err, EXPERT_E_NOMEM, "out of memory");
        } else {
            char *slash = strrchr(dir, '/');
            if (slash != NULL && slash != dir) {
                *slash = '\0';
                s = make_dirs(dir, NULL, &r->err);
            }
            free(dir);
        }
        if (s == EXPERT_OK) {
            convert_one(b->o, b->in_paths[i], b->out_paths[i], 1, r);
        } else {
            r->status = s;
            r->state = R_FAILED;
        }
        pthread_mutex_lock(&b->lock);
        b->done++;
        if (r->state == R_CONVERTED)
            b->converted++;
        else if (r->state == R_SKIPPED)
            b->skipped++;
        else
            b->failed++;
        if (b->progress)
            draw_progress(b);
        pthread_mutex_unlock(&b->lock);
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static char *path_join2(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    if (la > 0 && a[la - 1] != '/')
        p[la++] = '/';
    memcpy(p + la, b, lb + 1);
    return p;
}

static void summary_totals(const batch *b, uint64_t *before, uint64_t *after)
{
    *before = *after = 0;
    for (size_t i = 0; i < b->count; i++)
        if (b->res[i].state != R_FAILED && b->res[i].bytes_after > 0) {
            *before += b->res[i].bytes_before;
            *after += b->res[i].bytes_after;
        }
}

static expert_status write_summaries(const batch *b, const char *in_dir, const char *out_dir,
                                     double seconds, expert_error *err)
{
    const conv_opts *o = b->o;
    uint64_t before, after;
    expert_status s = EXPERT_OK;
    summary_totals(b, &before, &after);
    if (o->summary_json != NULL) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":");
        sb_puts(&sb, b->failed ? "false" : "true");
        sb_puts(&sb, ",\"input_dir\":");
        sb_json_cstr(&sb, in_dir);
        sb_puts(&sb, ",\"output_dir\":");
        sb_json_cstr(&sb, out_dir);
        sb_printf(&sb, ",\"to\":\"v%d\",\"jobs\":%u,\"total\":%zu,\"converted\":%zu,"
                       "\"skipped\":%zu,\"failed\":%zu,\"bytes_before\":%" PRIu64
                       ",\"bytes_after\":%" PRIu64 ",\"ratio\":",
                  o->to, o->jobs, b->count, b->converted, b->skipped, b->failed, before, after);
        if (after)
            sb_json_double(&sb, (double)before / (double)after);
        else
            sb_puts(&sb, "null");
        sb_puts(&sb, ",\"seconds\":");
        sb_json_double(&sb, seconds);
        sb_puts(&sb, ",\"files\":[");
        for (size_t i = 0; i < b->count; i++) {
            if (i)
                sb_puts(&sb, ",");
            result_json(&sb, &b->res[i]);
        }
        sb_puts(&sb, "],\"failures\":[");
        for (size_t i = 0, k = 0; i < b->count; i++) {
            if (b->res[i].state != R_FAILED)
                continue;
            if (k++)
                sb_puts(&sb, ",");
            sb_puts(&sb, "{\"input\":");
            sb_json_cstr(&sb, b->res[i].input);
            sb_puts(&sb, ",\"class\":");
            sb_json_cstr(&sb, expert_status_name(b->res[i].status));
            sb_puts(&sb, ",\"reason\":");
            sb_json_cstr(&sb, b->res[i].err.message);
            sb_puts(&sb, "}");
        }
        sb_puts(&sb, "]}\n");
        s = sb.failed ? err_set(err, EXPERT_E_NOMEM, "out of memory")
                      : atomic_write_path(o->summary_json, sb.data, sb.len, 1, err);
        sb_free(&sb);
    }
    if (s == EXPERT_OK && o->summary_md != NULL) {
        strbuf sb;
        char b1[32], b2[32];
        sb_init(&sb);
        sb_printf(&sb, "# expert-cli convert summary\n\n"
                       "- input: `%s`, output: `%s`, target: v%d, jobs: %u\n"
                       "- files: %zu (converted %zu, skipped %zu, failed %zu)\n",
                  in_dir, out_dir, o->to, o->jobs, b->count, b->converted, b->skipped, b->failed);
        sb_printf(&sb, "- size: %s -> %s", fmt_size(before, b1), fmt_size(after, b2));
        if (after)
            sb_printf(&sb, " (ratio %.3fx)", (double)before / (double)after);
        sb_printf(&sb, "\n- time: %.2f s\n\n", seconds);
        sb_puts(&sb, "| input | status | from | bytes before | bytes after | ratio | seconds | "
                     "v1 signature | note |\n|---|---|---|---:|---:|---:|---:|---|---|\n");
        for (size_t i = 0; i < b->count; i++) {
            const conv_result *r = &b->res[i];
            static const char *states[] = {"converted", "skipped", "**failed**"};
            char ratio[32] = "-";
            if (r->bytes_after)
                snprintf(ratio, sizeof ratio, "%.3f", (double)r->bytes_before / (double)r->bytes_after);
            sb_printf(&sb, "| `%s` | %s | %s | %" PRIu64 " | %" PRIu64 " | %s | %.3f | %s | ",
                      r->input, states[r->state], r->from ? (r->from == 1 ? "v1" : "v2") : "-",
                      r->bytes_before, r->bytes_after, ratio, r->seconds,
                      r->sig_checked ? sig_name(r->sig_status) : "-");
            const char *note = r->state == R_FAILED ? r->err.message
                               : r->state == R_SKIPPED ? r->skip_reason : "";
            for (const char *c = note; *c; c++) /* keep the table intact */
                sb_append(&sb, *c == '|' ? "/" : (*c == '\n' ? " " : c), 1);
            if (r->state == R_FAILED)
                sb_printf(&sb, " (%s)", expert_status_name(r->status));
            sb_puts(&sb, " |\n");
        }
        s = sb.failed ? err_set(err, EXPERT_E_NOMEM, "out of memory")
                      : atomic_write_path(o->summary_md, sb.data, sb.len, 1, err);
        sb_free(&sb);
    }
    return s;
}

static int run_batch(const cli_cmd *cmd, conv_opts *o, const char *in_dir, const char *out_dir)
{
    file_list files;
    expert_error err;
    batch b;
    int rc = 0;
    memset(&files, 0, sizeof files);
    memset(&b, 0, sizeof b);
    err_clear(&err);
    (void)cmd;
    expert_status s = walk_dir(in_dir, &files, &err);
    if (s == EXPERT_OK)
        s = make_dirs(out_dir, NULL, &err);
    if (s != EXPERT_OK) {
        file_list_free(&files);
        return cli_report(o->json, NULL, s, &err);
    }
    /* OUT_DIR inside IN_DIR: never take our own outputs as inputs */
    char *in_real = realpath(in_dir, NULL), *out_real = realpath(out_dir, NULL);
    const char *skip_prefix = NULL;
    size_t skip_len = 0;
    if (in_real && out_real && strncmp(out_real, in_real, strlen(in_real)) == 0 &&
        out_real[strlen(in_real)] == '/') {
        skip_prefix = out_real + strlen(in_real) + 1;
        skip_len = strlen(skip_prefix);
    }
    b.o = o;
    b.res = calloc(files.count ? files.count : 1, sizeof *b.res);
    b.in_paths = calloc(files.count ? files.count : 1, sizeof *b.in_paths);
    b.out_paths = calloc(files.count ? files.count : 1, sizeof *b.out_paths);
    if (b.res == NULL || b.in_paths == NULL || b.out_paths == NULL) {
        rc = cli_report(o->json, NULL, err_set(&err, EXPERT_E_NOMEM, "out of memory"), &err);
        goto out;
    }
    for (size_t i = 0; i < files.count; i++) {
        const char *rel = files.items[i].path;
        if (!ends_with(rel, ".expert"))
            continue;
        if (skip_prefix != NULL && strncmp(rel, skip_prefix, skip_len) == 0 && rel[skip_len] == '/')
            continue;
        b.in_paths[b.count] = path_join2(in_dir, rel);
        b.out_paths[b.count] = path_join2(out_dir, rel);
        b.res[b.count].input = b.in_paths[b.count];
        b.res[b.count].output = b.out_paths[b.count];
        if (b.in_paths[b.count] == NULL || b.out_paths[b.count] == NULL) {
            rc = cli_report(o->json, NULL, err_set(&err, EXPERT_E_NOMEM, "out of memory"), &err);
            goto out;
        }
        b.count++;
    }
    pthread_mutex_init(&b.lock, NULL);
    b.progress = !o->quiet && !o->json && isatty(STDERR_FILENO);
    b.t0 = clock_ns();
    {
        unsigned n = o->jobs;
        if (n > b.count)
            n = b.count ? (unsigned)b.count : 1;
        pthread_t *tids = calloc(n, sizeof *tids);
        unsigned started = 0;
        for (unsigned t = 1; tids != NULL && t < n; t++)
            if (pthread_create(&tids[t], NULL, batch_worker, &b) == 0)
                tids[started++] = tids[t];
        batch_worker(&b);
        for (unsigned t = 0; t < started; t++)
            pthread_join(tids[t], NULL);
        free(tids);
    }
    pthread_mutex_destroy(&b.lock);
    double seconds = (double)(clock_ns() - b.t0) / 1e9;
    s = write_summaries(&b, in_dir, out_dir, seconds, &err);
    if (s != EXPERT_OK) {
        rc = cli_report(o->json, NULL, s, &err);
        goto out;
    }
    {
        uint64_t before, after;
        char b1[32], b2[32];
        summary_totals(&b, &before, &after);
        if (o->json) {
            strbuf sb;
            sb_init(&sb);
            sb_printf(&sb, "{\"ok\":%s,\"total\":%zu,\"converted\":%zu,\"skipped\":%zu,\"failed\":%zu,"
                           "\"bytes_before\":%" PRIu64 ",\"bytes_after\":%" PRIu64 ",\"seconds\":",
                      b.failed ? "false" : "true", b.count, b.converted, b.skipped, b.failed, before,
                      after);
            sb_json_double(&sb, seconds);
            sb_puts(&sb, ",\"files\":[");
            for (size_t i = 0; i < b.count; i++) {
                if (i)
                    sb_puts(&sb, ",");
                result_json(&sb, &b.res[i]);
            }
            sb_puts(&sb, "]}");
            sb_print_line(&sb, &err);
            sb_free(&sb);
        } else if (!o->quiet) {
            char *in = term_text(in_dir), *out = term_text(out_dir);
            printf("batch %s -> %s: %zu files, converted %zu, skipped %zu, failed %zu; %s -> %s",
                   in, out, b.count, b.converted, b.skipped, b.failed, fmt_size(before, b1),
                   fmt_size(after, b2));
            term_free(in);
            term_free(out);
            if (after)
                printf(" (ratio %.3fx)", (double)before / (double)after);
            printf(" in %.2f s\n", seconds);
        }
        for (size_t i = 0; i < b.count; i++)
            if (b.res[i].state == R_FAILED) {
                if (!o->json) {
                    fprintf(stderr, "%s convert: ", CLI_NAME);
                    fput_term(stderr, b.res[i].input, strlen(b.res[i].input));
                    fprintf(stderr, ": %s: ", expert_status_name(b.res[i].status));
                    fput_term(stderr, b.res[i].err.message, strlen(b.res[i].err.message));
                    fputc('\n', stderr);
                }
                if (rc == 0)
                    rc = (int)b.res[i].status;
            }
    }
out:
    for (size_t i = 0; i < b.count; i++) {
        free(b.in_paths[i]);
        free(b.out_paths[i]);
    }
    free(b.in_paths);
    free(b.out_paths);
    free(b.res);
    free(in_real);
    free(out_real);
    file_list_free(&files);
    return rc;
}

/* ================================================================ command */

enum {
    C_TO, C_CODEC, C_LEVEL, C_ALIGN, C_FRAME, C_THREADS, C_SIGN, C_DTYPE, C_V1KEY, C_FORCE,
    C_JSON, C_QUIET, C_BATCH, C_JOBS, C_SJSON, C_SMD, C_BASE, C_V1MAX, C_COUNT
};

static const cli_opt_spec k_convert_opts[C_COUNT] = {
    [C_TO] = {"to", 0, 1},           [C_CODEC] = {"codec", 0, 1},
    [C_LEVEL] = {"level", 0, 1},     [C_ALIGN] = {"align", 0, 1},
    [C_FRAME] = {"frame-size", 0, 1}, [C_THREADS] = {"threads", 0, 1},
    [C_SIGN] = {"sign", 0, 1},       [C_DTYPE] = {"dtype", 0, 1},
    [C_V1KEY] = {"v1-pubkey", 0, 1}, [C_FORCE] = {"force", 'f', 0},
    [C_JSON] = {"json", 0, 0},       [C_QUIET] = {"quiet", 'q', 0},
    [C_BATCH] = {"batch", 0, 0},     [C_JOBS] = {"jobs", 'j', 1},
    [C_SJSON] = {"summary-json", 0, 1}, [C_SMD] = {"summary-md", 0, 1},
    [C_BASE] = {"base-model", 0, 1},  [C_V1MAX] = {"v1-max-bytes", 0, 1},
};

static int parse_convert_args(const cli_cmd *cmd, int argc, char **argv, conv_opts *o,
                              const char **in, const char **out)
{
    cli_opt_val v[C_COUNT];
    const char *pos[2];
    size_t npos = 0;
    uint64_t n;
    int rc = cli_parse(cmd, argc, argv, k_convert_opts, v, C_COUNT, pos, 2, 2, &npos);
    if (rc != 0)
        return rc;
    *in = pos[0];
    *out = pos[1];
    o->to = 2;
    if (v[C_TO].seen) {
        if (strcmp(v[C_TO].value, "v2") == 0 || strcmp(v[C_TO].value, "2") == 0)
            o->to = 2;
        else if (strcmp(v[C_TO].value, "v1") == 0 || strcmp(v[C_TO].value, "1") == 0)
            o->to = 1;
        else
            return cli_usage_error(cmd, "--to must be v1 or v2, not '%s'", v[C_TO].value);
    }
    if (o->to == 1) {
        static const int v2_only[] = {C_CODEC, C_ALIGN, C_FRAME, C_SIGN, C_DTYPE};
        static const char *names[] = {"--codec", "--align", "--frame-size", "--sign", "--dtype"};
        for (size_t i = 0; i < sizeof v2_only / sizeof v2_only[0]; i++)
            if (v[v2_only[i]].seen)
                return cli_usage_error(cmd, "%s applies to v2 output only%s", names[i],
                                       v2_only[i] == C_SIGN
                                           ? " (rollback keeps every file byte-exact; a v1 "
                                             "signature the package had is kept as it was)"
                                           : "");
    }
    o->tensor_codec = EXPERT_CODEC_SHUFFLE_ZSTD;
    o->aux_codec = EXPERT_CODEC_ZSTD;
    if (v[C_CODEC].seen) {
        const char *c = v[C_CODEC].value;
        if (strcmp(c, "raw") == 0)
            o->tensor_codec = o->aux_codec = EXPERT_CODEC_RAW;
        else if (strcmp(c, "zstd") == 0)
            o->tensor_codec = EXPERT_CODEC_ZSTD;
        else if (strcmp(c, "shuffle+zstd") == 0)
            o->tensor_codec = EXPERT_CODEC_SHUFFLE_ZSTD;
        else
            return cli_usage_error(cmd, "--codec must be raw, zstd or shuffle+zstd, not '%s'", c);
    }
    if (v[C_LEVEL].seen) {
        if (o->to == 2) {
            if ((rc = cli_parse_u64(cmd, "level", v[C_LEVEL].value, 1, 22, 0, &n)) != 0)
                return rc;
            o->wopt.zstd_level = (int)n;
        } else {
            if ((rc = cli_parse_u64(cmd, "level", v[C_LEVEL].value, 1, 9, 0, &n)) != 0)
                return rc;
            o->gzip_level = (int)n;
        }
    }
    if (v[C_ALIGN].seen) {
        if ((rc = cli_parse_u64(cmd, "align", v[C_ALIGN].value, 64, 4096, 0, &n)) != 0)
            return rc;
        if (n != 64 && n != 256 && n != 4096)
            return cli_usage_error(cmd, "--align must be 64, 256 or 4096");
        o->wopt.alignment = (uint32_t)n;
    }
    if (v[C_FRAME].seen) {
        if ((rc = cli_parse_u64(cmd, "frame-size", v[C_FRAME].value, 1u << 16, 1u << 26, 1, &n)) != 0)
            return rc;
        if ((n & (n - 1)) != 0)
            return cli_usage_error(cmd, "--frame-size must be a power of two (64K..64M)");
        o->wopt.frame_size = (uint32_t)n;
    }
    if (v[C_THREADS].seen) {
        if ((rc = cli_parse_u64(cmd, "threads", v[C_THREADS].value, 0, 64, 0, &n)) != 0)
            return rc;
        o->threads = (unsigned)n;
    }
    if (v[C_DTYPE].seen) {
        if (strcmp(v[C_DTYPE].value, "bf16") == 0)
            o->lossy = EXPERT_DTYPE_BF16;
        else if (strcmp(v[C_DTYPE].value, "f16") == 0)
            o->lossy = EXPERT_DTYPE_F16;
        else
            return cli_usage_error(cmd, "--dtype must be bf16 or f16 (lossy), not '%s'",
                                   v[C_DTYPE].value);
    }
    if (v[C_V1MAX].seen) {
        if ((rc = cli_parse_u64(cmd, "v1-max-bytes", v[C_V1MAX].value, 1, UINT64_MAX / 2, 1, &n)) != 0)
            return rc;
        o->v1_max_bytes = n;
    }
    o->base_model = v[C_BASE].value;
    o->sign_path = v[C_SIGN].value;
    o->v1_pubkey = v[C_V1KEY].value;
    o->force = v[C_FORCE].seen;
    o->json = v[C_JSON].seen;
    o->quiet = v[C_QUIET].seen;
    o->batch = v[C_BATCH].seen;
    o->jobs = cli_online_cpus();
    if (v[C_JOBS].seen) {
        if ((rc = cli_parse_u64(cmd, "jobs", v[C_JOBS].value, 1, 256, 0, &n)) != 0)
            return rc;
        o->jobs = (unsigned)n;
    }
    if (!o->batch && (v[C_JOBS].seen || v[C_SJSON].seen || v[C_SMD].seen))
        return cli_usage_error(cmd, "--jobs and --summary-* need --batch");
    o->summary_json = v[C_SJSON].value;
    o->summary_md = v[C_SMD].value;
    return 0;
}

int cmd_convert(const cli_cmd *cmd, int argc, char **argv)
{
    conv_opts o;
    const char *in = NULL, *out = NULL;
    expert_error err;
    expert_status s = EXPERT_OK;
    int rc;

    memset(&o, 0, sizeof o);
    err_clear(&err);
    rc = parse_convert_args(cmd, argc, argv, &o, &in, &out);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (o.v1_pubkey != NULL && strncmp(o.v1_pubkey, "ed25519:", 8) != 0) {
        /* a file holding the key text */
        char *text = NULL;
        size_t len = 0;
        static char keybuf[160];
        if (read_small_file(o.v1_pubkey, sizeof keybuf - 1, &text, &len, &err) == EXPERT_OK) {
            while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
                text[--len] = '\0';
            snprintf(keybuf, sizeof keybuf, "%s", text);
            o.v1_pubkey = keybuf;
        }
        free(text);
        err_clear(&err);
    }
    if (o.sign_path != NULL) {
        s = expert_private_key_load(o.sign_path, &o.key, &err);
        if (s != EXPERT_OK)
            return cli_report(o.json, NULL, s, &err);
    }
    if (o.batch) {
        rc = run_batch(cmd, &o, in, out);
        expert_private_key_free(o.key);
        return rc;
    }
    if (!o.force && path_exists(out)) {
        expert_private_key_free(o.key);
        s = err_set(&err, EXPERT_E_IO, "'%s' already exists (use --force to replace it)", out);
        return cli_report(o.json, NULL, s, &err);
    }
    conv_result res;
    memset(&res, 0, sizeof res);
    res.input = (char *)in;
    res.output = (char *)out;
    convert_one(&o, in, out, 0, &res);
    expert_private_key_free(o.key);
    if (res.state == R_FAILED)
        return cli_report(o.json, NULL, res.status, &res.err);
    if (o.json) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,");
        size_t mark = sb.len;
        result_json(&sb, &res);
        /* splice: {"ok":true, + the result's members */
        if (!sb.failed) {
            memmove(sb.data + mark, sb.data + mark + 1, sb.len - mark);
            sb.len--;
        }
        s = sb_print_line(&sb, &err);
        sb_free(&sb);
        if (s != EXPERT_OK)
            return cli_report(0, NULL, s, &err);
    } else if (!o.quiet) {
        print_single(&o, &res);
    }
    return 0;
}
