/* fuzz_driver.c — a plain main() for the fuzz targets (like zstd's
 * regression_driver.c): without libFuzzer the same LLVMFuzzerTestOneInput
 * runs over files and directories given as arguments (the regression
 * corpus replay of `meson test`), or over standard input when there are no
 * arguments (AFL++: `afl-fuzz -i seeds -o out -- fuzz_X_replay`, or with @@). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static long g_runs;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    xb b = {0};
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        xb_put(&b, tmp, k);
    fclose(f);
    LLVMFuzzerTestOneInput(b.p ? b.p : tmp, b.n);
    xb_free(&b);
    g_runs++;
    return 0;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "missing: %s\n", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    DIR *d = opendir(path);
    if (!d)
        return 1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        size_t l = strlen(path) + strlen(de->d_name) + 2;
        names[n] = malloc(l);
        snprintf(names[n], l, "%s/%s", path, de->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rc |= run_path(names[i]);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0;
    if (argc < 2) {
        xb b = {0};
        uint8_t tmp[65536];
        size_t k;
        while ((k = fread(tmp, 1, sizeof tmp, stdin)) > 0)
            xb_put(&b, tmp, k);
        LLVMFuzzerTestOneInput(b.p ? b.p : tmp, b.n);
        xb_free(&b);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        rc |= run_path(argv[i]);
    printf("%ld inputs replayed\n", g_runs);
    return rc;
}
