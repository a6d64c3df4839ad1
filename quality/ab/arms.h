/*
 * arms.h — where the A/B models meet the .expert format: checkpoints
 * (safetensors), LoRA branches, writing each arm as a real .expert file with
 * the v2 writer, and applying an .expert file to a model through libexpert
 * and the core fusion (expert_adapter.h), merged or unmerged.
 *
 * Module paths are PEFT's: "base_model.model." + the layer name
 * (base_model.model.model.layers.0.self_attn.q_proj), so the experts look
 * like the real ones and `expert-quality compress` treats them alike.
 */
#ifndef AB_ARMS_H
#define AB_ARMS_H

#include "expert.h"
#include "models.h"

#define AB_PEFT_PREFIX "base_model.model."

/* ------------------------------------------------------- checkpoints */

/* Writes every named tensor of m as F32 safetensors (atomic), with
 * __metadata__ {"format": "expert-ab", "task": task, "config": config_json}.
 * sha_hex (65 bytes, may be NULL) receives the file's SHA-256. */
expert_status ab_checkpoint_save(const ab_model *m, const char *path, const char *task,
                                 const char *config_json, char sha_hex[65], expert_error *err);

/* Reads a checkpoint's task and model configuration (owned strings, free
 * with free()) and its SHA-256, without building a model. */
expert_status ab_checkpoint_info(const char *path, char **task, char **config_json, char sha_hex[65],
                                 expert_error *err);
/* Loads every named tensor of m from the checkpoint: each must exist with
 * dtype F32 and the model's shape (INVALID_ARGUMENT naming the tensor). */
expert_status ab_checkpoint_load(ab_model *m, const char *path, expert_error *err);

/* Writes named F32 matrices (e.g. gradients) as safetensors (atomic). */
typedef struct ab_out_tensor {
    char name[160];
    const float *data;
    int rows, cols;
} ab_out_tensor;
expert_status ab_safetensors_write(const char *path, const ab_out_tensor *t, size_t n,
                                   const char *metadata_json, expert_error *err);

/* ------------------------------------------------------------- LoRA */

/* Attaches a LoRA branch of rank r to every adapter target: A kaiming-
 * uniform with bound 1/√in (PEFT's kaiming_uniform_(a = √5)), B = 0, scale
 * alpha / r. 0, or -1 when out of memory. */
int ab_lora_attach(ab_model *m, int r, double alpha, uint64_t seed);

/* -------------------------------------------------- writing the arms */

typedef struct ab_expert_meta {
    const char *name;        /* e.g. "ab-sql-lora-r4-s1" */
    const char *base_name;   /* e.g. "expert-ab sql base" */
    const char *base_sha;    /* hex SHA-256 of the base checkpoint */
    const char *extra_json;  /* object stored under extra.ab (may be NULL) */
} ab_expert_meta;

/* The model's LoRA branches as `lora` modules (alpha = s·r). */
expert_status ab_write_lora_expert(const ab_model *m, const char *path, const ab_expert_meta *meta,
                                   expert_error *err);
/* The dense fine-tune: per target, ΔW = W_tuned − W_base as an `osd` module
 * of rank 0 whose sparse part holds every entry (spec §10.6: "a pure sparse
 * delta is k = 0"); compress materialises it and truncates its SVD. */
expert_status ab_write_full_expert(const ab_model *tuned, const ab_model *base, const char *path,
                                   const ab_expert_meta *meta, expert_error *err);
/* An expert with no modules: the "base" arm goes through the same path. */
expert_status ab_write_empty_expert(const char *path, const ab_expert_meta *meta, expert_error *err);

/* --------------------------------------------------- applying an arm */

typedef enum ab_apply_how { AB_APPLY_MERGED = 0, AB_APPLY_UNMERGED = 1 } ab_apply_how;

typedef struct ab_applied ab_applied;

/* Opens `path` with libexpert, checks that its base_model.sha256 is base_sha
 * (INVALID_ARGUMENT: the expert was made for another base), maps each module
 * to the model's layer of the same path (NOT_FOUND) with the same shape
 * (INVALID_ARGUMENT), decodes it (section hashes verified) and either merges
 * it into W (and b) with expert_adapter_merge, or keeps it for the unmerged
 * forward pass (expert_adapter_forward in place of the layer's matmul).
 * Free *out with ab_applied_free once the model is done (for an unmerged
 * apply that detaches the modules again). A merged apply changes the model's
 * weights for good. */
expert_status ab_apply_expert(ab_model *m, const char *path, const char *base_sha, ab_apply_how how,
                              ab_applied **out, expert_error *err);
void ab_applied_free(ab_applied *a);
/* Number of modules applied. */
size_t ab_applied_count(const ab_applied *a);

#endif
