/* craft.c — see craft.h. */
#include "craft.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ files */

int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

uint8_t *toc_entry(uint8_t *file, uint32_t i)
{
    return file + rd64(file + H_TOC_OFF) + (uint64_t)i * TOC_ENTRY;
}

/* ------------------------------------------------------------ utilities */

char *tmpdir_make(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    size_t need = strlen(base) + strlen(tag) + 32;
    char *t = malloc(need);
    if (!t)
        return NULL;
    snprintf(t, need, "%s/expert-%s-XXXXXX", base, tag);
    if (!mkdtemp(t)) {
        free(t);
        return NULL;
    }
    return t;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tmpdir_remove(char *dir)
{
    if (!dir)
        return;
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

char *path_join(const char *dir, const char *name)
{
    size_t need = strlen(dir) + strlen(name) + 2;
    char *p = malloc(need);
    if (p)
        snprintf(p, need, "%s/%s", dir, name);
    return p;
}

int read_file_bytes(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    struct stat st;
    uint8_t *p = NULL;
    int ok = fstat(fileno(f), &st) == 0 && (p = malloc((size_t)st.st_size + 1)) != NULL &&
             fread(p, 1, (size_t)st.st_size, f) == (size_t)st.st_size;
    fclose(f);
    if (!ok) {
        free(p);
        return -1;
    }
    *data = p;
    *size = (size_t)st.st_size;
    return 0;
}

int write_file_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int dir_count(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int c = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            c++;
    closedir(d);
    return c;
}

/* Sections and metadata into an open writer; aborts it on failure. */
static expert_status fill_writer(expert_writer *w, const char *meta_json, const tsec *s, size_t n)
{
    expert_error err;
    expert_status st = EXPERT_OK;
    for (size_t i = 0; i < n; i++) {
        static const uint8_t dummy[1];
        st = expert_writer_add(w, &s[i].d, s[i].data ? s[i].data : dummy, s[i].len, &err);
        if (st != EXPERT_OK) {
            fprintf(stderr, "writer_add(%s): %s: %s\n", s[i].d.name, expert_status_name(st),
                    err.message);
            expert_writer_abort(w);
            return st;
        }
    }
    const char *json = meta_json ? meta_json : META_MIN;
    st = expert_writer_set_metadata(w, json, strlen(json), &err);
    if (st != EXPERT_OK) {
        fprintf(stderr, "set_metadata: %s: %s\n", expert_status_name(st), err.message);
        expert_writer_abort(w);
    }
    return st;
}

expert_status write_expert(const char *path, const expert_writer_options *opt, const char *meta_json,
                           const tsec *s, size_t n, const expert_private_key *key)
{
    expert_writer *w = NULL;
    expert_error err;
    expert_status st = expert_writer_open(path, opt, &w, &err);
    if (st == EXPERT_OK)
        st = fill_writer(w, meta_json, s, n);
    if (st == EXPERT_OK && (st = expert_writer_finish(w, key, &err)) != EXPERT_OK)
        fprintf(stderr, "finish: %s: %s\n", expert_status_name(st), err.message);
    return st;
}

expert_status write_expert_image(const expert_writer_options *opt, const char *meta_json,
                                 const tsec *s, size_t n, const expert_private_key *key,
                                 expert_image *out)
{
    expert_writer *w = NULL;
    expert_error err;
    expert_status st = expert_writer_open_memory(opt, 0, &w, &err);
    if (st == EXPERT_OK)
        st = fill_writer(w, meta_json, s, n);
    if (st == EXPERT_OK && (st = expert_writer_finish_memory(w, key, out, &err)) != EXPERT_OK)
        fprintf(stderr, "finish_memory: %s: %s\n", expert_status_name(st), err.message);
    return st;
}

void *aligned_copy(const void *p, size_t n)
{
    void *m = NULL;
    if (posix_memalign(&m, 4096, n ? n : 1) != 0)
        return NULL;
    if (n)
        memcpy(m, p, n);
    return m;
}

expert_status open_mem(const uint8_t *p, size_t n, unsigned threads, void **mem, expert_reader **r,
                       expert_error *err)
{
    *mem = aligned_copy(p, n);
    *r = NULL;
    if (!*mem)
        return EXPERT_E_NOMEM;
    expert_open_options o = {.flags = 0, .threads = threads};
    expert_status st = expert_open_memory(*mem, n, &o, r, err);
    if (st != EXPERT_OK) {
        free(*mem);
        *mem = NULL;
    }
    return st;
}

int run_cmd(const char *out_path, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 64)
        return -1;
    if (out_path != NULL) {
        size_t k = strlen(cmd);
        snprintf(cmd + k, sizeof cmd - k, " > '%s'", out_path);
    }
    int st = system(cmd);
    return st == -1 ? -1 : (WIFEXITED(st) ? WEXITSTATUS(st) : 128);
}
