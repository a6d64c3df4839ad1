/*
 * expert-testee — the reference conformance testee (conformance/PROTOCOL.md):
 *
 *   expert-testee [--fault NAME] capabilities
 *   expert-testee [--fault NAME] read FILE [--key PUBLIC.pem]
 *   expert-testee [--fault NAME] write REQUEST.json OUT
 *   expert-testee [--fault NAME] rebuild FILE NAME
 *
 * `read` runs full validation with the reference library in the order of
 * spec §12: structural (expert_open), then access validation of every
 * section in TOC order (expert_read; the testee hashes the decoded bytes
 * itself for the description), then the rest of full validation
 * (expert_verify_full: CSR, padding, file hash, signature).
 *
 * --fault simulates a broken implementation in this reporting layer, for the
 * runner's self-check (the library itself is never altered):
 *   ignore-section-hash  sections read without the digest check, and a
 *                        SECTION_HASH_MISMATCH from full validation ignored;
 *   accept-truncated     a TRUNCATED file is reported as accepted, with an
 *                        empty description;
 *   misdecode-shuffle    decoded bytes of shuffle+zstd sections are shuffled
 *                        again (per frame) before they are hashed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "expert.h"

enum fault { FAULT_NONE, FAULT_IGNORE_SECTION_HASH, FAULT_ACCEPT_TRUNCATED, FAULT_MISDECODE_SHUFFLE };
static enum fault g_fault = FAULT_NONE;
static const char *g_fault_name = NULL;

/* ------------------------------------------------------------ output */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            fputs("expert-testee: out of memory\n", stderr);
            exit(3);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0)
        sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    /* jansson escapes; a string that is not UTF-8 (none reaches here from a
     * valid file) is written with its non-ASCII bytes as '?'. */
    json_t *j = json_stringn(s, n);
    if (j == NULL) {
        char *ascii = malloc(n ? n : 1);
        if (ascii != NULL) {
            for (size_t i = 0; i < n; i++)
                ascii[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
            j = json_stringn(ascii, n);
            free(ascii);
        }
    }
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (text != NULL)
        sb_put(b, text, strlen(text));
    else
        sb_put(b, "null", 4);
    free(text);
    json_decref(j);
}

/* Copies valid JSON without insignificant whitespace (the library has
 * validated the metadata, so strings are well formed). */
static void sb_json_minified(sbuf *b, const char *s, size_t n)
{
    size_t start = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            sb_put(b, s + start, i - start);
            start = i + 1;
        }
    }
    if (n > start)
        sb_put(b, s + start, n - start);
}

static void hexify(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int report_error(expert_status st, const char *level, const expert_error *err)
{
    printf("{\"error\": \"%s\", \"level\": \"%s\"}\n", expert_status_name(st), level);
    if (err != NULL && err->message[0])
        fprintf(stderr, "expert-testee: %s: %s\n", expert_status_name(st), err->message);
    return 1;
}

/* ------------------------------------------------------------ read */

static void shuffle_in_place(uint8_t *p, size_t len, size_t e, uint8_t *tmp)
{
    size_t n = len / e;
    for (size_t j = 0; j < e; j++)
        for (size_t i = 0; i < n; i++)
            tmp[j * n + i] = p[i * e + j];
    memcpy(p, tmp, len);
}

static int cmd_read(const char *path, const char *key_path)
{
    expert_error err;
    memset(&err, 0, sizeof err);
    expert_public_key *key = NULL;
    if (key_path != NULL) {
        expert_status ks = expert_public_key_load(key_path, &key, &err);
        if (ks != EXPERT_OK)
            return report_error(ks, "full", &err);
    }
    expert_reader *r = NULL;
    /* v2 only (v1 is opt-in in the library); the spec's decoded-size limit, not
     * the library's lower default, so every spec-valid vector decodes */
    expert_open_options opt = {.flags = 0, .threads = 1, .max_decoded_bytes = UINT64_C(1) << 36};
    expert_status st = expert_open(path, &opt, &r, &err);
    if (st != EXPERT_OK) {
        expert_public_key_free(key);
        if (g_fault == FAULT_ACCEPT_TRUNCATED && st == EXPERT_E_TRUNCATED) {
            puts("{}");
            return 0;
        }
        return report_error(st, "structural", &err);
    }

    expert_header_info h;
    expert_header(r, &h);
    uint32_t count = expert_section_count(r);
    sbuf out = {0};
    char digest_hex[65];
    hexify(h.file_sha256, 32, digest_hex);
    sb_printf(&out, "{\"header\": {\"major\": %u, \"minor\": %u, \"alignment\": %u, ", h.major,
              h.minor, h.alignment);
    sb_printf(&out, "\"section_count\": %u, \"signed\": %s, \"file_sha256\": \"%s\", ", count,
              h.is_signed ? "true" : "false", digest_hex);
    hexify(h.structure_sha256, 32, digest_hex);
    sb_printf(&out, "\"structure_sha256\": \"%s\"},\n \"metadata\": ", digest_hex);
    size_t meta_len = 0;
    const char *meta = expert_metadata_json(r, &meta_len);
    sb_json_minified(&out, meta, meta_len);
    sb_str(&out, ",\n \"sections\": [");

    /* Access validation of every section, in TOC order (spec §12.3 step 2). */
    uint32_t read_flags = (g_fault == FAULT_IGNORE_SECTION_HASH || g_fault == FAULT_MISDECODE_SHUFFLE)
                              ? EXPERT_READ_NO_VERIFY
                              : 0;
    int rc = 0;
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        expert_section_info s;
        st = expert_section(r, i, &s);
        if (st != EXPERT_OK) {
            rc = report_error(st, "structural", NULL);
            break;
        }
        if (s.decoded_length > SIZE_MAX - 1) {
            rc = report_error(EXPERT_E_NOMEM, "access", NULL);
            break;
        }
        size_t cap = (size_t)s.decoded_length;
        uint8_t *data = malloc(cap ? cap : 1);
        if (data == NULL) {
            rc = report_error(EXPERT_E_NOMEM, "access", NULL);
            break;
        }
        st = expert_read(r, i, data, cap, read_flags, &err);
        if (st != EXPERT_OK) {
            free(data);
            rc = report_error(st, "access", &err);
            break;
        }
        size_t e = expert_dtype_size(s.dtype);
        if (g_fault == FAULT_MISDECODE_SHUFFLE && s.codec == EXPERT_CODEC_SHUFFLE_ZSTD && e > 1 &&
            s.frame_size > 0) {
            uint8_t *tmp = malloc(s.frame_size);
            for (size_t off = 0; tmp != NULL && off < cap; off += s.frame_size) {
                size_t len = cap - off < s.frame_size ? cap - off : s.frame_size;
                shuffle_in_place(data + off, len, e, tmp);
            }
            free(tmp);
        }
        uint8_t digest[32];
        st = expert_sha256(data, cap, digest);
        free(data);
        if (st != EXPERT_OK) {
            rc = report_error(st, "access", NULL);
            break;
        }
        if (g_fault == FAULT_MISDECODE_SHUFFLE && memcmp(digest, s.sha256, 32) != 0) {
            rc = report_error(EXPERT_E_SECTION_HASH_MISMATCH, "access", NULL);
            break;
        }
        hexify(digest, 32, digest_hex);
        sb_str(&out, i ? ",\n  " : "\n  ");
        sb_printf(&out, "{\"index\": %u, \"name\": ", i);
        sb_json_string(&out, s.name, s.name_length);
        sb_printf(&out, ", \"type\": %u, \"codec\": %u, \"dtype\": %u, \"shape\": [", s.type,
                  s.codec, s.dtype);
        for (unsigned k = 0; k < s.rank && k < EXPERT_MAX_RANK; k++)
            sb_printf(&out, "%s%llu", k ? ", " : "", (unsigned long long)s.dims[k]);
        sb_str(&out, "], \"layer\": ");
        if (s.layer == EXPERT_LAYER_NONE)
            sb_str(&out, "null");
        else
            sb_printf(&out, "%u", s.layer);
        sb_str(&out, ", \"module\": ");
        if (s.module == EXPERT_MODULE_NONE)
            sb_str(&out, "null");
        else
            sb_printf(&out, "%u", s.module);
        sb_printf(&out, ", \"flags\": %u, \"decoded_length\": %llu, \"sha256\": \"%s\"}", s.flags,
                  (unsigned long long)s.decoded_length, digest_hex);
    }
    if (rc == 0) {
        /* Steps 3–6: CSR, padding, file hash, signature (sections are cached
         * as verified, so this does not hash them again). */
        st = expert_verify_full(r, key, &err);
        if (st == EXPERT_E_SECTION_HASH_MISMATCH && g_fault == FAULT_IGNORE_SECTION_HASH)
            st = EXPERT_OK;
        if (st != EXPERT_OK)
            rc = report_error(st, "full", &err);
    }
    if (rc == 0) {
        sb_str(&out, "\n ]}\n");
        fwrite(out.p, 1, out.n, stdout);
    }
    free(out.p);
    expert_close(r);
    expert_public_key_free(key);
    return rc;
}

/* ------------------------------------------------------------ write */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (d == NULL)
        return NULL;
    if (n == 0) {
        strcpy(d, "/");
        return d;
    }
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

static char *resolve(const char *dir, const char *rel)
{
    if (rel[0] == '/')
        return strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static int load_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 65536, n = 0;
    uint8_t *p = malloc(cap);
    while (p != NULL) {
        if (n == cap) {
            uint8_t *q = realloc(p, cap * 2);
            if (q == NULL) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
        size_t k = fread(p + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    int bad = ferror(f) || p == NULL;
    fclose(f);
    if (bad) {
        free(p);
        return -1;
    }
    *out = p;
    *len = n;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int fail_write(const char *what)
{
    fprintf(stderr, "expert-testee write: %s\n", what);
    return 1;
}

static int get_u32(const json_t *obj, const char *key, uint32_t dflt, uint32_t none, uint32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (json_is_null(v)) {
        *out = none;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* ------------------------------------------------------------ rebuild */

/* The level at which full validation found a defect (spec §12). */
static const char *verify_level(expert_status st)
{
    return st == EXPERT_E_DECODE_FAILED || st == EXPERT_E_SIZE_MISMATCH ||
                   st == EXPERT_E_SECTION_HASH_MISMATCH
               ? "access"
               : "full";
}

/* Full validation, then the package file of section NAME (spec §10.7),
 * reported by length and SHA-256. */
static int cmd_rebuild(const char *path, const char *name)
{
    expert_error err;
    memset(&err, 0, sizeof err);
    expert_reader *r = NULL;
    expert_open_options opt = {.flags = 0, .threads = 1, .max_decoded_bytes = UINT64_C(1) << 36};
    expert_status st = expert_open(path, &opt, &r, &err);
    if (st != EXPERT_OK)
        return report_error(st, "structural", &err);
    st = expert_verify_full(r, NULL, &err);
    if (st != EXPERT_OK) {
        expert_close(r);
        return report_error(st, verify_level(st), &err);
    }
    uint32_t index = 0;
    void *data = NULL;
    size_t length = 0;
    st = expert_find(r, name, strlen(name), &index);
    if (st == EXPERT_OK)
        st = expert_file_rebuild(r, index, &data, &length, &err);
    expert_close(r);
    if (st != EXPERT_OK)
        return report_error(st, "rebuild", &err);
    uint8_t digest[32];
    char hex[65];
    expert_sha256(data, length, digest);
    expert_v1_free(data);
    hexify(digest, 32, hex);
    printf("{\"length\": %zu, \"sha256\": \"%s\"}\n", length, hex);
    return 0;
}

static int cmd_write(const char *request_path, const char *out_path)
{
    json_error_t jerr;
    json_t *req = json_load_file(request_path, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL || !json_is_object(req)) {
        fprintf(stderr, "expert-testee write: %s: %s\n", request_path, req ? "not an object" : jerr.text);
        json_decref(req);
        return 1;
    }
    char *dir = dir_of(request_path);
    int rc = 1;
    expert_writer *w = NULL;
    expert_private_key *key = NULL;
    char *meta = NULL;
    expert_error err;
    memset(&err, 0, sizeof err);
    expert_writer_options opt;
    memset(&opt, 0, sizeof opt);
    uint32_t alignment, frame_size;
    if (get_u32(req, "alignment", 64, 64, &alignment) || get_u32(req, "frame_size", 0, 0, &frame_size)) {
        rc = fail_write("bad alignment or frame_size");
        goto done;
    }
    opt.alignment = alignment;
    opt.frame_size = frame_size;
    const json_t *metadata = json_object_get(req, "metadata");
    const json_t *sections = json_object_get(req, "sections");
    if (!json_is_object(metadata) || (sections != NULL && !json_is_array(sections))) {
        rc = fail_write("metadata must be an object and sections an array");
        goto done;
    }
    meta = json_dumps(metadata, JSON_COMPACT);
    if (meta == NULL) {
        rc = fail_write("cannot serialise the metadata");
        goto done;
    }
    const json_t *sk = json_object_get(req, "signing_key");
    if (sk != NULL && !json_is_null(sk)) {
        if (!json_is_string(sk)) {
            rc = fail_write("signing_key must be a string");
            goto done;
        }
        char *kp = resolve(dir, json_string_value(sk));
        expert_status ks = kp ? expert_private_key_load(kp, &key, &err) : EXPERT_E_NOMEM;
        free(kp);
        if (ks != EXPERT_OK) {
            fprintf(stderr, "expert-testee write: signing key: %s: %s\n", expert_status_name(ks),
                    err.message);
            goto done;
        }
    }
    expert_status st = expert_writer_open(out_path, &opt, &w, &err);
    if (st != EXPERT_OK) {
        fprintf(stderr, "expert-testee write: %s: %s\n", expert_status_name(st), err.message);
        goto done;
    }
    size_t i;
    const json_t *s;
    json_array_foreach(sections, i, s) {
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        const json_t *name = json_object_get(s, "name");
        const json_t *shape = json_object_get(s, "shape");
        uint32_t type, codec, dtype, flags;
        if (!json_is_object(s) || !json_is_string(name) || !json_is_array(shape) ||
            json_array_size(shape) > EXPERT_MAX_RANK || get_u32(s, "type", UINT32_MAX, UINT32_MAX, &type) ||
            get_u32(s, "codec", 0, 0, &codec) || get_u32(s, "dtype", UINT32_MAX, UINT32_MAX, &dtype) ||
            get_u32(s, "flags", 0, 0, &flags) ||
            get_u32(s, "layer", EXPERT_LAYER_NONE, EXPERT_LAYER_NONE, &d.layer) ||
            get_u32(s, "module", EXPERT_MODULE_NONE, EXPERT_MODULE_NONE, &d.module) || type > 0xFFFF ||
            codec > 0xFF || dtype > 0xFF) {
            fprintf(stderr, "expert-testee write: sections[%zu] is malformed\n", i);
            goto abort;
        }
        d.name = json_string_value(name);
        d.name_length = json_string_length(name);
        d.type = (uint16_t)type;
        d.codec = (uint8_t)codec;
        d.dtype = (uint8_t)dtype;
        d.flags = flags;
        d.rank = (uint8_t)json_array_size(shape);
        for (size_t k = 0; k < d.rank; k++) {
            const json_t *dim = json_array_get(shape, k);
            if (!json_is_integer(dim) || json_integer_value(dim) < 0) {
                fprintf(stderr, "expert-testee write: sections[%zu].shape is malformed\n", i);
                goto abort;
            }
            d.dims[k] = (uint64_t)json_integer_value(dim);
        }
        uint8_t *data = NULL;
        size_t len = 0;
        const json_t *dh = json_object_get(s, "data_hex");
        const json_t *df = json_object_get(s, "data_file");
        if (json_is_string(dh)) {
            const char *h = json_string_value(dh);
            size_t hl = json_string_length(dh);
            if (hl % 2 != 0) {
                fprintf(stderr, "expert-testee write: sections[%zu].data_hex has odd length\n", i);
                goto abort;
            }
            len = hl / 2;
            data = malloc(len ? len : 1);
            for (size_t k = 0; data != NULL && k < len; k++) {
                int a = hexval(h[2 * k]), b = hexval(h[2 * k + 1]);
                if (a < 0 || b < 0) {
                    free(data);
                    data = NULL;
                    fprintf(stderr, "expert-testee write: sections[%zu].data_hex is not hex\n", i);
                    goto abort;
                }
                data[k] = (uint8_t)(a * 16 + b);
            }
        } else if (json_is_string(df)) {
            char *fp = resolve(dir, json_string_value(df));
            int lr = fp ? load_file(fp, &data, &len) : -1;
            if (lr != 0) {
                fprintf(stderr, "expert-testee write: cannot read %s: %s\n", fp ? fp : "?",
                        strerror(errno));
                free(fp);
                goto abort;
            }
            free(fp);
        } else {
            fprintf(stderr, "expert-testee write: sections[%zu] has no data_hex or data_file\n", i);
            goto abort;
        }
        if (data == NULL) {
            fprintf(stderr, "expert-testee write: out of memory\n");
            goto abort;
        }
        st = expert_writer_add(w, &d, data, len, &err);
        free(data);
        if (st != EXPERT_OK) {
            fprintf(stderr, "expert-testee write: sections[%zu]: %s: %s\n", i, expert_status_name(st),
                    err.message);
            goto abort;
        }
    }
    st = expert_writer_set_metadata(w, meta, strlen(meta), &err);
    if (st != EXPERT_OK) {
        fprintf(stderr, "expert-testee write: metadata: %s: %s\n", expert_status_name(st), err.message);
        goto abort;
    }
    st = expert_writer_finish(w, key, &err);
    w = NULL;
    if (st != EXPERT_OK) {
        fprintf(stderr, "expert-testee write: finish: %s: %s\n", expert_status_name(st), err.message);
        goto done;
    }
    rc = 0;
    goto done;
abort:
    expert_writer_abort(w);
    w = NULL;
done:
    free(meta);
    free(dir);
    expert_private_key_free(key);
    json_decref(req);
    return rc;
}

/* ------------------------------------------------------------ main */

static int usage(void)
{
    fputs("usage: expert-testee [--fault ignore-section-hash|accept-truncated|misdecode-shuffle]\n"
          "                     capabilities | read FILE [--key PUBLIC.pem] | write REQUEST.json OUT\n"
          "                     | rebuild FILE NAME\n",
          stderr);
    return 2;
}

int main(int argc, char **argv)
{
    int a = 1;
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs("expert-testee: the reference C testee of the conformance protocol\n"
              "(conformance/PROTOCOL.md). Exit 0 accepted/written, 1 rejected, 2 usage.\n"
              "--fault makes it deliberately wrong, for the runner's self-check.\n",
              stdout);
        usage();
        return 0;
    }
    while (a < argc && strncmp(argv[a], "--fault", 7) == 0) {
        const char *v = NULL;
        if (argv[a][7] == '=')
            v = argv[a] + 8;
        else if (argv[a][7] == 0 && a + 1 < argc)
            v = argv[++a];
        if (v == NULL)
            return usage();
        if (strcmp(v, "ignore-section-hash") == 0)
            g_fault = FAULT_IGNORE_SECTION_HASH;
        else if (strcmp(v, "accept-truncated") == 0)
            g_fault = FAULT_ACCEPT_TRUNCATED;
        else if (strcmp(v, "misdecode-shuffle") == 0)
            g_fault = FAULT_MISDECODE_SHUFFLE;
        else if (strcmp(v, "none") == 0)
            g_fault = FAULT_NONE;
        else
            return usage();
        g_fault_name = g_fault == FAULT_NONE ? NULL : v;
        a++;
    }
    if (a >= argc)
        return usage();
    const char *cmd = argv[a++];
    if (strcmp(cmd, "capabilities") == 0 && a == argc) {
        printf("{\"name\": \"expert-c-reference%s%s\", \"version\": \"%s\", \"protocol\": 1, "
               "\"read\": true, \"write\": true, \"verify_signature\": true, \"rebuild\": true}\n",
               g_fault_name ? " fault=" : "", g_fault_name ? g_fault_name : "",
               expert_version_string());
        return 0;
    }
    if (strcmp(cmd, "read") == 0 && a < argc) {
        const char *file = argv[a++];
        const char *key = NULL;
        while (a < argc) {
            if (strcmp(argv[a], "--key") == 0 && a + 1 < argc) {
                key = argv[a + 1];
                a += 2;
            } else if (strncmp(argv[a], "--key=", 6) == 0) {
                key = argv[a] + 6;
                a++;
            } else {
                return usage();
            }
        }
        return cmd_read(file, key);
    }
    if (strcmp(cmd, "write") == 0 && a + 2 == argc)
        return cmd_write(argv[a], argv[a + 1]);
    if (strcmp(cmd, "rebuild") == 0 && a + 2 == argc)
        return cmd_rebuild(argv[a], argv[a + 1]);
    return usage();
}
