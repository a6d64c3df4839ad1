/*
 * expert-vectors-gen — writes the golden vectors of .expert v2:
 *
 *   expert-vectors-gen [--clean] OUTDIR SPEC_DIR
 *
 * OUTDIR receives accept/, reject/, impl/, write/, keys/, manifest.json,
 * README.md and SHA256SUMS. SPEC_DIR is specs/binary-format (for the worked
 * example of spec §16). Output is deterministic: the same libzstd gives the
 * same bytes; see README.md for which files depend on libzstd.
 */
#include "gen.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int dir_has_output(const char *dir)
{
    static const char *parts[] = {"accept", "reject", "impl", "write", "keys", "manifest.json", "README.md",
                                  "SHA256SUMS"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *p = AS("%s/%s", dir, parts[i]);
        struct stat st;
        if (stat(p, &st) == 0)
            return 1;
    }
    return 0;
}

static void clean(const char *dir)
{
    static const char *parts[] = {"accept", "reject", "impl", "write", "keys", "manifest.json", "README.md",
                                  "SHA256SUMS"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *p = AS("%s/%s", dir, parts[i]);
        struct stat st;
        if (stat(p, &st) == 0 && nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
            die("cannot remove %s: %s", p, strerror(errno));
    }
}

int main(int argc, char **argv)
{
    int do_clean = 0, a = 1;
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: expert-vectors-gen [--clean] OUTDIR SPEC_DIR\n"
               "Writes the golden vectors (accept/, reject/, impl/, write/, keys/, manifest.json,\n"
               "README.md, SHA256SUMS) into OUTDIR, deterministically. SPEC_DIR holds example.expert.\n"
               "--clean replaces vectors already in OUTDIR. `ninja vectors-regenerate` runs it.\n");
        return 0;
    }
    if (a < argc && strcmp(argv[a], "--clean") == 0) {
        do_clean = 1;
        a++;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: expert-vectors-gen [--clean] OUTDIR SPEC_DIR\n");
        return 2;
    }
    g_out = argv[a];
    const char *spec_dir = argv[a + 1];
    if (mkdir(g_out, 0755) != 0 && errno != EEXIST)
        die("cannot create %s: %s", g_out, strerror(errno));
    if (do_clean)
        clean(g_out);
    else if (dir_has_output(g_out))
        die("%s already holds vectors; use --clean to replace them", g_out);

    write_keys();
    gen_accept(spec_dir);
    gen_reject();
    gen_impl();
    gen_write();
    write_manifest();
    write_readme();
    out_sums();
    unlink(AS("%s/.build.expert", g_out));
    int counts[4] = {0};
    static const char *groups[4] = {"accept", "reject", "impl", "write"};
    for (int i = 0; i < g_nvecs; i++)
        for (int g = 0; g < 4; g++)
            counts[g] += strcmp(g_vecs[i].group, groups[g]) == 0;
    printf("expert-vectors-gen: %d vectors (accept %d, reject %d, impl %d, write %d) in %s\n", g_nvecs, counts[0],
           counts[1], counts[2], counts[3], g_out);
    arena_free();
    return 0;
}
