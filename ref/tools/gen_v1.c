/* gen_v1.c — expert-gen-v1: builds a v1 .expert package (tar.gz) from an
 * expert directory (e.g. one written by expert-gen-sample) the way the old
 * hivellm packer does (cli/src/commands/package.rs):
 *   - tar with GNU headers, every entry at the archive root, mode 0644,
 *     uid/gid 0, two zero end blocks, gzip level 6;
 *   - entry order: manifest.json, adapter_model.safetensors,
 *     adapter_config.json, special_tokens_map.json, tokenizer_config.json,
 *     tokenizer.json, training_args.bin, vocab.json, README.md (each if
 *     present), grammar.gbnf, tests/... (--include-tests only), LICENSE;
 *     other files of the directory are not packed (as the old packer);
 *   - manifest.json is copied as is (the old packer re-serialises its parsed
 *     Manifest; expert-gen-sample already writes that form);
 *   - --sidecar writes OUT.sha256 in sha256sum format (hash of the archive).
 * --sign SEED emulates the old `expert-cli sign`: hash every entry, sign the
 * sorted "path:hash" lines (joined by "\n") with the raw 32-byte Ed25519 seed,
 * insert an "integrity" block into manifest.json AFTER hashing (the old
 * tool's defect), add signature.sig and re-tar. A sidecar written with
 * --sign keeps the pre-signing hash (the old tool never refreshed it) unless
 * --fresh-sidecar. Deterministic: mtimes are --mtime (default 0).
 *
 * Exit status: 0 ok, 64 usage, otherwise the library error class. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "expert.h"
#include "expert_v1.h"

#define PROG "expert-gen-v1"
#define EXIT_USAGE 64
#define MAX_FILES 1024

typedef struct file {
    char *name;
    unsigned char *data;
    size_t size;
} file;

static file g_files[MAX_FILES + 2];
static size_t g_count;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " DIR -o OUT.expert [options]\n"
            "Packs an expert directory into a v1 .expert (tar.gz) the way the old packer does.\n"
            "\n"
            "  -o, --output FILE    output package\n"
            "  --level N            gzip level 1..9 (default 6, the old packer's)\n"
            "  --mtime T            entry mtime, seconds since the epoch (default 0)\n"
            "  --include-tests      also pack tests/* (old packer: --include-tests)\n"
            "  --sign SEED          sign like the old `expert-cli sign` with a raw 32-byte seed\n"
            "  --sidecar            write OUT.sha256 (sha256sum format)\n"
            "  --fresh-sidecar      with --sign: hash the signed archive, not the pre-signing one\n"
            "  -q, --quiet          print nothing on success\n");
}

static int fail(expert_status s, const expert_error *e)
{
    fprintf(stderr, PROG ": %s: %s\n", expert_status_name(s), e->message);
    return (int)s;
}

static int read_file(const char *path, unsigned char **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fclose(f);
            return -1;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0)
            break;
        if (len == cap) {
            unsigned char *g = realloc(buf, cap * 2);
            if (g == NULL)
                free(buf);
            buf = g;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return -1;
    }
    *out = buf;
    *n = len;
    return 0;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (p == NULL) {
        perror(PROG);
        exit(1);
    }
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int is_regular(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int add_file(const char *dir, const char *name)
{
    char *path = join(dir, name);
    if (!is_regular(path)) {
        free(path);
        return 0;
    }
    if (g_count >= MAX_FILES) {
        fprintf(stderr, PROG ": too many files\n");
        exit(1);
    }
    file *f = &g_files[g_count];
    if (read_file(path, &f->data, &f->size) != 0) {
        fprintf(stderr, PROG ": cannot read %s: %s\n", path, strerror(errno));
        exit(1);
    }
    f->name = strdup(name);
    g_count++;
    free(path);
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_tests(const char *dir)
{
    char *tdir = join(dir, "tests");
    DIR *d = opendir(tdir);
    char *names[MAX_FILES];
    size_t n = 0;
    struct dirent *de;
    if (d == NULL) {
        free(tdir);
        return;
    }
    while ((de = readdir(d)) != NULL && n < MAX_FILES) {
        if (de->d_name[0] == '.')
            continue;
        char *rel = join("tests", de->d_name);
        char *full = join(dir, rel);
        if (is_regular(full))
            names[n++] = rel;
        else
            free(rel);
        free(full);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        add_file(dir, names[i]);
        free(names[i]);
    }
    free(tdir);
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static int write_sidecar(const char *out, const unsigned char *data, size_t n)
{
    unsigned char d[32];
    char h[65], *path = malloc(strlen(out) + 8);
    const char *base = strrchr(out, '/');
    base = base ? base + 1 : out;
    if (path == NULL || expert_sha256(data, n, d) != EXPERT_OK)
        return -1;
    hex(d, 32, h);
    sprintf(path, "%s.sha256", out);
    FILE *f = fopen(path, "wb");
    free(path);
    if (f == NULL)
        return -1;
    fprintf(f, "%s  %s\n", h, base);
    return fclose(f);
}

static int write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t k = fwrite(p, 1, n, f);
    return (fclose(f) != 0 || k != n) ? -1 : 0;
}

/* Offset where a new top-level member goes: before "license", else before
 * "tags", else before the closing brace (serde order: integrity, license, tags). */
static size_t insert_point(const char *s, size_t n, int *is_last)
{
    const char *keys[] = {"\n  \"license\":", "\n  \"tags\":"};
    *is_last = 0;
    for (int k = 0; k < 2; k++) {
        const char *p = strstr(s, keys[k]);
        if (p != NULL)
            return (size_t)(p - s) + 1; /* at the two-space indent of that member */
    }
    *is_last = 1;
    size_t i = n;
    while (i > 0 && s[i - 1] != '}')
        i--;
    while (i > 1 && (s[i - 2] == '\n' || s[i - 2] == ' '))
        i--;
    return i - 1; /* just after the last value */
}

static int sign_package(const char *seed_path, int64_t mtime, expert_error *err)
{
    unsigned char *seed = NULL;
    size_t seed_len = 0;
    if (read_file(seed_path, &seed, &seed_len) != 0 || seed_len != 32) {
        fprintf(stderr, PROG ": %s must hold a raw 32-byte Ed25519 seed\n", seed_path);
        free(seed);
        return 1;
    }
    /* 1. hash every entry; 2. message = sorted "path:hex" joined by "\n". */
    size_t idx[MAX_FILES], n = g_count, msg_len = 0;
    char (*hx)[65] = calloc(n ? n : 1, sizeof *hx);
    for (size_t i = 0; i < n; i++) {
        unsigned char d[32];
        expert_sha256(g_files[i].data, g_files[i].size, d);
        hex(d, 32, hx[i]);
        idx[i] = i;
        msg_len += strlen(g_files[i].name) + 66;
    }
    for (size_t i = 1; i < n; i++) /* insertion sort by name */
        for (size_t j = i; j > 0 && strcmp(g_files[idx[j - 1]].name, g_files[idx[j]].name) > 0; j--) {
            size_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    char *msg = malloc(msg_len + 1);
    size_t mp = 0;
    for (size_t i = 0; i < n; i++)
        mp += (size_t)sprintf(msg + mp, "%s%s:%s", i ? "\n" : "", g_files[idx[i]].name, hx[idx[i]]);
    unsigned char sig[64], pub[32];
    expert_status s = expert_v1_sign_raw(seed, msg, mp, sig, pub, err);
    free(msg);
    free(seed);
    if (s != EXPERT_OK) {
        free(hx);
        return fail(s, err);
    }
    char sighex[129], pubhex[65], when[32];
    hex(sig, 64, sighex);
    hex(pub, 32, pubhex);
    time_t t = (time_t)mtime;
    struct tm tmv;
    gmtime_r(&t, &tmv);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    /* 3. insert the integrity block into manifest.json (after hashing). */
    file *m = &g_files[0];
    size_t blk_cap = 512 + n * 200, bl = 0;
    char *blk = malloc(blk_cap);
    bl += (size_t)sprintf(blk + bl,
                          "  \"integrity\": {\n    \"created_at\": \"%s\",\n    \"publisher\": "
                          "\"expert-cli\",\n    \"pubkey\": \"ed25519:%s\",\n    "
                          "\"signature_algorithm\": \"ed25519\",\n    \"signature\": \"%s\",\n    "
                          "\"files\": {\n",
                          when, pubhex, sighex);
    for (size_t i = 0; i < n; i++)
        bl += (size_t)sprintf(blk + bl, "      \"%s\": \"%s\"%s\n", g_files[idx[i]].name, hx[idx[i]],
                              i + 1 < n ? "," : "");
    bl += (size_t)sprintf(blk + bl, "    }\n  }");
    int last = 0;
    char *text = malloc(m->size + 1);
    memcpy(text, m->data, m->size);
    text[m->size] = '\0';
    size_t at = insert_point(text, m->size, &last);
    unsigned char *nm = malloc(m->size + bl + 8);
    size_t k = 0;
    if (last) { /* ",\n  "integrity": {...}" after the last member */
        memcpy(nm, text, at);
        k = at;
        memcpy(nm + k, ",\n", 2);
        k += 2;
        memcpy(nm + k, blk, bl);
        k += bl;
    } else { /* "  "integrity": {...},\n" before license/tags */
        memcpy(nm, text, at);
        k = at;
        memcpy(nm + k, blk, bl);
        k += bl;
        memcpy(nm + k, ",\n", 2);
        k += 2;
    }
    memcpy(nm + k, text + at, m->size - at);
    k += m->size - at;
    free(text);
    free(blk);
    free(hx);
    free(m->data);
    m->data = nm;
    m->size = k;
    /* 4. signature.sig (the same hex), at the end of the re-tarred archive. */
    file *sf = &g_files[g_count++];
    sf->name = strdup("signature.sig");
    sf->data = (unsigned char *)strdup(sighex);
    sf->size = 128;
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *out = NULL, *seed = NULL;
    int level = 6, include_tests = 0, sidecar = 0, fresh = 0, quiet = 0;
    int64_t mtime = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && v) {
            out = v;
            i++;
        } else if (!strcmp(a, "--level") && v) {
            level = atoi(v);
            i++;
        } else if (!strcmp(a, "--mtime") && v) {
            mtime = strtoll(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--sign") && v) {
            seed = v;
            i++;
        } else if (!strcmp(a, "--include-tests")) {
            include_tests = 1;
        } else if (!strcmp(a, "--sidecar")) {
            sidecar = 1;
        } else if (!strcmp(a, "--fresh-sidecar")) {
            sidecar = fresh = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] != '-' && dir == NULL) {
            dir = a;
        } else {
            fprintf(stderr, PROG ": bad argument '%s'\n", a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (dir == NULL || out == NULL || level < 1 || level > 9) {
        usage(stderr);
        return EXIT_USAGE;
    }
    static const char *const order[] = {"manifest.json",          "adapter_model.safetensors",
                                        "adapter_config.json",    "special_tokens_map.json",
                                        "tokenizer_config.json",  "tokenizer.json",
                                        "training_args.bin",      "vocab.json",
                                        "README.md",              "grammar.gbnf"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (!add_file(dir, order[i]) && i == 0) {
            fprintf(stderr, PROG ": %s has no manifest.json\n", dir);
            return 1;
        }
    if (include_tests)
        add_tests(dir);
    add_file(dir, "LICENSE");

    expert_error err;
    memset(&err, 0, sizeof err);
    expert_v1_write_options wo = {level, mtime};
    expert_v1_entry ents[MAX_FILES + 2];
    void *pre = NULL;
    size_t pre_len = 0;
    expert_status s;
    if (seed != NULL && sidecar && !fresh) { /* the sidecar the packer wrote before signing */
        for (size_t i = 0; i < g_count; i++)
            ents[i] = (expert_v1_entry){g_files[i].name, g_files[i].data, g_files[i].size, 0644, mtime};
        s = expert_v1_write_memory(ents, g_count, &wo, &pre, &pre_len, &err);
        if (s != EXPERT_OK)
            return fail(s, &err);
    }
    if (seed != NULL) {
        int rc = sign_package(seed, mtime, &err);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < g_count; i++)
        ents[i] = (expert_v1_entry){g_files[i].name, g_files[i].data, g_files[i].size, 0644, mtime};
    void *data = NULL;
    size_t len = 0;
    s = expert_v1_write_memory(ents, g_count, &wo, &data, &len, &err);
    if (s != EXPERT_OK)
        return fail(s, &err);
    if (write_bytes(out, data, len) != 0) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", out, strerror(errno));
        return 1;
    }
    if (sidecar && write_sidecar(out, pre ? pre : data, pre ? pre_len : len) != 0) {
        fprintf(stderr, PROG ": cannot write %s.sha256\n", out);
        return 1;
    }
    if (!quiet)
        printf("%s: %zu entries, %zu bytes%s%s\n", out, g_count, len, seed ? ", signed (v1)" : "",
               sidecar ? (seed && !fresh ? ", stale sidecar" : ", sidecar") : "");
    expert_v1_free(data);
    expert_v1_free(pre);
    for (size_t i = 0; i < g_count; i++) {
        free(g_files[i].name);
        free(g_files[i].data);
    }
    return 0;
}
