/* diff.c — `expert-cli diff A B`: handed over to expert-quality like
 * `compress` (see compress.c), which needs LAPACK for the exact norms. */
#include "util.h"

const char cli_help_diff[] =
    "Usage: expert-cli diff A.expert B.expert [--base BASE.safetensors] [--json]\n"
    "\n"
    "Per module (matched by path): the relative Frobenius and spectral error of B's\n"
    "effective weight change against A's, ‖ΔA − ΔB‖ / ‖ΔA‖, plus the pooled\n"
    "Frobenius error over all modules. Low-rank changes (LoRA s·B·A, OSD\n"
    "U·diag(S)·Vt) are compared exactly through a QR of the stacked factors and the\n"
    "SVD of a small core; changes with a sparse part, and DoRA/IA3 with --base, are\n"
    "materialised (spectral norm by block power iteration to 1e-7).\n"
    "Without --base a DoRA change is compared on its low-rank part s·B·A only and an\n"
    "IA3 change as diag(l) − I; the note column says so.\n"
    "\n"
    "Options:\n"
    "  --base FILE   base safetensors (exact W' − W for DoRA and IA3)\n"
    "  --json        print the result as one JSON object\n"
    "  -h, --help    this help\n"
    "\n"
    "Needs the expert-quality program (built when LAPACKE and OpenBLAS are found);\n"
    "without it the command fails with NOT_FOUND.\n";

int cmd_diff(const cli_cmd *cmd, int argc, char **argv)
{
    return cli_exec_quality(cmd, argc, argv);
}
