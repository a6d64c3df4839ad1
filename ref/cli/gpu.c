/* gpu.c — `expert-cli vram` and `expert-cli gpu-load`: carried out by
 * expert-gpu (gpu/), which links CUDA; expert-cli itself does not. */
#include "util.h"

const char cli_help_vram[] =
    "Usage: expert-cli vram FILE... [--dtype as-stored|f32|bf16|f16] [--per-tensor]\n"
    "                       [--experts N] [--predict-only] [--json]\n"
    "\n"
    "Device memory per expert: the loader's exact accounting (predicted, no GPU\n"
    "needed) beside the dense delta-W, for 1 and N experts, with the < 50 MB target\n"
    "as a verdict; measured with cudaMemGetInfo when a CUDA device is present.\n"
    "Runs `expert-gpu vram`; see `expert-gpu vram --help`.\n";

const char cli_help_gpu_load[] =
    "Usage: expert-cli gpu-load FILE... [--dtype as-stored|f32|bf16|f16] [--per-tensor]\n"
    "                           [--threads N] [--slots N] [--repeat N] [--json]\n"
    "\n"
    "Streams experts (v2, or v1 tar.gz) to the GPU layer by layer and reports time\n"
    "to first layer, total time and bandwidth against a plain cudaMemcpy floor.\n"
    "Exit 77 without a CUDA device. Runs `expert-gpu load`; see its --help.\n";

static int run_gpu(const cli_cmd *cmd, const char *sub, int argc, char **argv)
{
    const cli_helper gpu = {"expert-gpu", "EXPERT_GPU", "gpu", sub,
                            "it is built with the project (meson builds gpu/ always; its CUDA "
                            "half needs nvcc, cuBLAS and cuSPARSE)"};
    return cli_exec_helper(cmd, &gpu, argc, argv);
}

int cmd_vram(const cli_cmd *cmd, int argc, char **argv) { return run_gpu(cmd, "vram", argc, argv); }

int cmd_gpu_load(const cli_cmd *cmd, int argc, char **argv)
{
    return run_gpu(cmd, "load", argc, argv);
}
