/* data.c — the A/B data sets (see data.h). */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>

#include <zlib.h>

#include "qinternal.h" /* XQ_TRY */
#include "util.h"

#define FAIL(code, ...) err_set(err, (code), __VA_ARGS__)
#define TEXT_MAX (UINT64_C(1) << 30)

static expert_status missing(const ab_source *s, expert_error *err)
{
    return FAIL(EXPERT_E_NOT_FOUND, "'%s' not found: install the Debian package '%s' (ci/bootstrap does)",
                s->path, s->package);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* Regular files under root (symbolic links and the rest skipped: the
 * fortunes package links its .u8 variants), relative paths sorted bytewise.
 * nftw has no user pointer, hence the file-scope collector; the A/B tools
 * are single-threaded. */
static struct {
    char **names;
    size_t n, cap, root_len;
    int failed;
} g_list;

static int list_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    if (type != FTW_F)
        return 0;
    if (g_list.n == g_list.cap) {
        size_t nc = g_list.cap ? 2 * g_list.cap : 1024;
        char **q = realloc(g_list.names, nc * sizeof *q);
        if (q == NULL)
            return g_list.failed = 1;
        g_list.names = q;
        g_list.cap = nc;
    }
    if ((g_list.names[g_list.n] = strdup(path + g_list.root_len + 1)) == NULL)
        return g_list.failed = 1;
    g_list.n++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static expert_status list_files(const char *root, char ***names, size_t *n, expert_error *err)
{
    memset(&g_list, 0, sizeof g_list);
    g_list.root_len = strlen(root);
    while (g_list.root_len > 1 && root[g_list.root_len - 1] == '/')
        g_list.root_len--;
    int rc = nftw(root, list_one, 32, FTW_PHYS);
    if (rc != 0 || g_list.failed) {
        free_names(g_list.names, g_list.n);
        return g_list.failed ? FAIL(EXPERT_E_NOMEM, "out of memory")
                             : FAIL(EXPERT_E_IO, "cannot list '%s': %s", root, strerror(errno));
    }
    qsort(g_list.names, g_list.n, sizeof *g_list.names, cmp_names);
    *names = g_list.names;
    *n = g_list.n;
    return EXPERT_OK;
}

static expert_status append(ab_text *t, size_t *cap, const uint8_t *p, size_t n, expert_error *err)
{
    if (t->len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 1 << 20);
        while (nc < t->len + n + 1)
            nc *= 2;
        uint8_t *q = realloc(t->data, nc);
        if (q == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        t->data = q;
        *cap = nc;
    }
    memcpy(t->data + t->len, p, n);
    t->len += n;
    return EXPERT_OK;
}

/* A fortune file without its "%" separator lines. */
static expert_status append_file(ab_text *t, size_t *cap, const char *path, expert_error *err)
{
    char *data;
    size_t len;
    XQ_TRY(read_small_file(path, TEXT_MAX, &data, &len, err));
    expert_status st = EXPERT_OK;
    for (size_t i = 0; i < len && st == EXPERT_OK;) {
        size_t j = i;
        while (j < len && data[j] != '\n')
            j++;
        size_t line = j - i + (j < len);
        if (!(line >= 1 && data[i] == '%' && (line == 1 || (line == 2 && data[i + 1] == '\n'))))
            st = append(t, cap, (const uint8_t *)data + i, line, err);
        i += line;
    }
    free(data);
    return st;
}

expert_status ab_read_text(const ab_source *src, size_t n, ab_text *out, expert_error *err)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(src[i].path, &sb) != 0) {
            ab_text_free(out);
            return missing(&src[i], err);
        }
        expert_status st = EXPERT_OK;
        if (S_ISDIR(sb.st_mode)) {
            char **names = NULL;
            size_t nn = 0;
            st = list_files(src[i].path, &names, &nn, err);
            for (size_t j = 0; st == EXPERT_OK && j < nn; j++) {
                if (ends_with(names[j], ".dat") || ends_with(names[j], ".u8"))
                    continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", src[i].path, names[j]);
                st = append_file(out, &cap, path, err);
            }
            free_names(names, nn);
        } else {
            st = append_file(out, &cap, src[i].path, err);
        }
        if (st != EXPERT_OK) {
            ab_text_free(out);
            return st;
        }
    }
    if (out->len == 0)
        return FAIL(EXPERT_E_NOT_FOUND, "no text in the given sources");
    return EXPERT_OK;
}

void ab_text_free(ab_text *t)
{
    free(t->data);
    t->data = NULL;
    t->len = 0;
}

/* ------------------------------------------------------------- SQL */

/* u in [0, 1) from the name and the seed: FNV-1a, then a splitmix finaliser. */
static double name_hash(const char *name, uint64_t seed)
{
    uint64_t h = 0xCBF29CE484222325ull ^ seed;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return (double)(h >> 11) * 0x1.0p-53;
}

expert_status ab_sql_load(const ab_source *src, uint64_t seed, double train, double calib, ab_docs *out,
                          expert_error *err)
{
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(src->path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return missing(src, err);
    char **names;
    size_t count, n = 0;
    XQ_TRY(list_files(src->path, &names, &count, err));
    for (size_t j = 0; j < count; j++)
        n += (size_t)ends_with(names[j], ".test");
    expert_status st = n == 0 ? FAIL(EXPERT_E_NOT_FOUND, "no .test files under '%s' (package '%s')", src->path,
                                     src->package)
                              : EXPERT_OK;
    if (st == EXPERT_OK && (out->d = calloc(n, sizeof *out->d)) == NULL)
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
    for (size_t j = 0; st == EXPERT_OK && j < count; j++) {
        if (!ends_with(names[j], ".test"))
            continue;
        ab_doc *d = &out->d[out->n];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", src->path, names[j]);
        char *data;
        st = read_small_file(path, TEXT_MAX, &data, &d->len, err);
        if (st != EXPERT_OK)
            break;
        d->data = (uint8_t *)data;
        d->name = strdup(names[j]);
        if (d->name == NULL) {
            free(data);
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
            break;
        }
        double u = name_hash(d->name, seed);
        d->split = u < train ? AB_SPLIT_TRAIN : u < train + calib ? AB_SPLIT_CALIB : AB_SPLIT_TEST;
        out->n++;
    }
    free_names(names, count);
    if (st != EXPERT_OK)
        ab_docs_free(out);
    return st;
}

void ab_docs_free(ab_docs *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->d[i].name);
        free(d->d[i].data);
    }
    free(d->d);
    memset(d, 0, sizeof *d);
}

expert_status ab_docs_join(const ab_docs *d, int split, ab_text *out, expert_error *err)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->d[i].split != split)
            continue;
        expert_status st = append(out, &cap, d->d[i].data, d->d[i].len, err);
        if (st == EXPERT_OK)
            st = append(out, &cap, (const uint8_t *)"\n", 1, err);
        if (st != EXPERT_OK) {
            ab_text_free(out);
            return st;
        }
    }
    if (out->len == 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "split %d holds no documents", split);
    return EXPERT_OK;
}

/* ---------------------------------------------------- Fashion-MNIST */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads a gzip'd idx file: magic, dims (count, then rows, cols for images)
 * and exactly count·rows·cols bytes of data, nothing after. */
static expert_status read_idx(const char *path, uint32_t magic, int ndim, uint32_t *dims, uint8_t **data,
                              expert_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (f == NULL)
        return FAIL(EXPERT_E_IO, "cannot open '%s': %s", path, strerror(errno));
    uint8_t hdr[16];
    size_t hl = 4 + 4 * (size_t)ndim;
    expert_status st = EXPERT_OK;
    if (gzread(f, hdr, (unsigned)hl) != (int)hl || be32(hdr) != magic)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' is not an idx file with magic 0x%08x", path, magic);
    size_t total = 1;
    for (int i = 0; st == EXPERT_OK && i < ndim; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > 1000000)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': dimension %d is %u", path, i, dims[i]);
        total *= dims[i];
    }
    if (st == EXPERT_OK && total > (size_t)1 << 30)
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': %zu bytes of data is too large", path, total);
    if (st == EXPERT_OK && (*data = malloc(total)) == NULL)
        st = FAIL(EXPERT_E_NOMEM, "out of memory");
    if (st == EXPERT_OK) {
        uint8_t extra;
        if (gzread(f, *data, (unsigned)total) != (int)total || gzread(f, &extra, 1) != 0) {
            free(*data);
            *data = NULL;
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' does not hold exactly %zu bytes of data", path, total);
        }
    }
    gzclose(f);
    return st;
}

expert_status ab_fmnist_load(const ab_source *dir, const char *set, ab_images *out, expert_error *err)
{
    memset(out, 0, sizeof *out);
    char ip[4096], lp[4096];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir->path, set);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir->path, set);
    if (!path_exists(ip) || !path_exists(lp)) {
        ab_source s = {path_exists(ip) ? lp : ip, dir->package};
        return missing(&s, err);
    }
    uint32_t di[3], dl[1];
    XQ_TRY(read_idx(ip, 0x00000803u, 3, di, &out->pixels, err));
    expert_status st = read_idx(lp, 0x00000801u, 1, dl, &out->labels, err);
    if (st == EXPERT_OK && dl[0] != di[0])
        st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' has %u labels for %u images", lp, dl[0], di[0]);
    for (uint32_t i = 0; st == EXPERT_OK && i < dl[0]; i++)
        if (out->labels[i] > 9)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s': label %u of item %u", lp, out->labels[i], i);
    if (st != EXPERT_OK) {
        ab_images_free(out);
        return st;
    }
    out->n = (int)di[0];
    out->rows = (int)di[1];
    out->cols = (int)di[2];
    return EXPERT_OK;
}

void ab_images_free(ab_images *im)
{
    free(im->pixels);
    free(im->labels);
    memset(im, 0, sizeof *im);
}

/* -------------------------------------------------- text in JSON */

char *ab_bytes_to_utf8(const uint8_t *p, size_t n, size_t *out_len)
{
    char *s = malloc(2 * n + 1), *q = s;
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            *q++ = (char)p[i];
        } else {
            *q++ = (char)(0xC0 | (p[i] >> 6));
            *q++ = (char)(0x80 | (p[i] & 0x3F));
        }
    }
    *q = '\0';
    *out_len = (size_t)(q - s);
    return s;
}

int ab_utf8_to_bytes(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned v;
        if (c < 0x80) {
            v = c;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < n && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
            v = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
            i++;
        } else {
            return -1;
        }
        if (k >= cap)
            return -1;
        out[k++] = (uint8_t)v;
    }
    *out_len = k;
    return 0;
}
