/* compress.c — `expert-cli compress` and the hand-over to expert-quality.
 *
 * The compressor needs LAPACKE and OpenBLAS, which the core library and
 * expert-cli do not link. It lives in quality/ as the separate program
 * expert-quality (built only when those libraries are found); `expert-cli
 * compress` and `expert-cli diff` exec it with the same arguments, so the
 * core stays LAPACK-free and both spellings behave identically. --help works
 * without the program. When it is missing the command fails with NOT_FOUND.
 *
 * Lookup order: $EXPERT_QUALITY; expert-quality next to this executable;
 * ../quality/expert-quality relative to it (the meson build tree); $PATH. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_help_compress[] =
    "Usage: expert-cli compress IN.expert -o OUT.expert --method svd|osd --budget BYTES|RATIO\n"
    "                           [--score magnitude|gradient --grads FILE] [options]\n"
    "\n"
    "Re-fits every LoRA/DoRA/OSD module of IN into a byte budget for the WHOLE output\n"
    "file, charged with the sizes the v2 writer produces (section bodies after their\n"
    "codec, alignment, metadata, TOC, index and names); IA3 modules are copied and\n"
    "charged. Non-adapter sections (files, safetensors header) are not carried.\n"
    "  svd   best low-rank approximation (truncated SVD; for LoRA the exact SVD of\n"
    "        s·B·A by thin QR of B and Aᵀ and an r×r SVD), written as lora (DoRA:\n"
    "        dora with its magnitude kept) modules with alpha = r (scale 1).\n"
    "  osd   Optimal Singular Damage: rank k > r with sparsified factors U, Vt (zeros\n"
    "        stored, compressed by the codec), entries of U and Vt ranked jointly by\n"
    "        an importance score and kept while the module fits; the k with the\n"
    "        lowest error (magnitude) or highest kept score (gradient) wins. Written\n"
    "        as osd modules (spec §6.5/§10.6, Sp empty).\n"
    "Singular vectors follow one sign convention: the largest-|.| entry of each u_j\n"
    "is positive.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE     output file (written atomically)\n"
    "  --method M            svd | osd\n"
    "  --budget B            bytes (K/M/G suffixes) or a ratio of the input's adapter\n"
    "                        bytes: 0.125, 1/8 (the input size less its non-adapter\n"
    "                        sections)\n"
    "  --score S             osd importance: magnitude (data-free |u|·σ, reported as\n"
    "                        osd-magnitude; default) | gradient (first-order Taylor\n"
    "                        |g·θ|, reported as osd-gradient; needs --grads)\n"
    "  --grads FILE          safetensors with, per module path P, P.osd_U.grad [out,k]\n"
    "                        and P.osd_VT.grad [k,in] (gradients w.r.t. the factors of\n"
    "                        the exact SVD in this sign convention) or P.delta.grad\n"
    "                        [out,in] (w.r.t. ΔW, mapped by the chain rule)\n"
    "  --base FILE           base safetensors: DoRA modules are compressed as their\n"
    "                        effective W' - W (dense; needed for --method osd)\n"
    "  --svd M               SVD of dense changes: auto (default: randomized when the\n"
    "                        matrix has >= 2^20 entries and k <= min(out, in)/4, else\n"
    "                        exact) | exact (LAPACK sgesdd) | randomized (Halko et al.,\n"
    "                        --oversample P (10), --power-iters Q (2), --seed S);\n"
    "                        `expert-quality rsvd-check` reports its error vs exact\n"
    "  --codec C             auto (smallest per section; default) | raw | zstd |\n"
    "                        shuffle+zstd\n"
    "  --level N             zstd level 1..22 (default 9)\n"
    "  --candidates N        osd: ranks k tried per module (default 6)\n"
    "  --threads N           worker threads over modules (default 1)\n"
    "  --force               overwrite OUT\n"
    "  --modules             print one line per module\n"
    "  --json                print the result as one JSON object\n"
    "  -q, --quiet           no summary\n"
    "  -h, --help            this help\n"
    "\n"
    "Needs the expert-quality program (built when LAPACKE and OpenBLAS are found);\n"
    "without it the command fails with NOT_FOUND.\n";

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

static int wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--json") == 0)
            return 1;
    }
    return 0;
}

static void try_exec(const char *path, char **args)
{
    if (path != NULL && access(path, X_OK) == 0) {
        args[0] = (char *)(uintptr_t)path;
        execv(path, args);
    }
}

int cli_exec_helper(const cli_cmd *cmd, const cli_helper *h, int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(cmd->help, stdout);
        return 0;
    }
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (args == NULL) {
        fprintf(stderr, "%s: NOMEM: out of memory\n", CLI_NAME);
        return EXPERT_E_NOMEM;
    }
    args[1] = (char *)(uintptr_t)h->subcommand;
    for (int i = 1; i < argc; i++)
        args[i + 1] = argv[i];
    fflush(stdout);
    fflush(stderr);
    try_exec(getenv(h->env), args);
    char self[PATH_MAX], cand[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(cand, sizeof cand, "%s/%s", self, h->program);
            try_exec(cand, args);
            snprintf(cand, sizeof cand, "%s/../%s/%s", self, h->build_subdir, h->program);
            try_exec(cand, args);
        }
    }
    args[0] = (char *)(uintptr_t)h->program;
    execvp(h->program, args);
    int e = errno;
    free(args);
    expert_error err;
    err_set(&err, EXPERT_E_NOT_FOUND, "'%s' needs the %s program, which was not found (%s); %s",
            cmd->name, h->program, strerror(e), h->missing_hint);
    return cli_report(wants_json(argc, argv), NULL, EXPERT_E_NOT_FOUND, &err);
}

int cli_exec_quality(const cli_cmd *cmd, int argc, char **argv)
{
    const cli_helper quality = {
        "expert-quality", "EXPERT_QUALITY", "quality", cmd->name,
        "it is built only when LAPACKE and OpenBLAS are available (Debian: liblapacke-dev "
        "libopenblas-dev)"};
    return cli_exec_helper(cmd, &quality, argc, argv);
}

int cmd_compress(const cli_cmd *cmd, int argc, char **argv)
{
    return cli_exec_quality(cmd, argc, argv);
}
