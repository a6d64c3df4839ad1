/* v1.h — shared by the v1 compatibility layer's files (read.c, sign.c,
 * write.c). The layer is built on libexpert's public API only (expert.h):
 * its build sees no library-internal header. */
#ifndef EXPERT_V1_LAYER_H
#define EXPERT_V1_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "expert.h"
#include "expert_v1.h"

#define FAIL(code, ...) expert_error_set(err, (code), EXPERT_NO_OFFSET, EXPERT_NO_SECTION, __VA_ARGS__)

/* Propagate a failure unchanged (err already filled by the callee). */
#define V1_TRY(expr)                                                                              \
    do {                                                                                          \
        expert_status v1_try_status_ = (expr);                                                    \
        if (v1_try_status_ != EXPERT_OK)                                                          \
            return v1_try_status_;                                                                \
    } while (0)

#define ST_NAME "adapter_model.safetensors"
#define MANIFEST_NAME "manifest.json"
#define ADAPTER_CONFIG_NAME "adapter_config.json"
#define SIGNATURE_NAME "signature.sig"

/* Overflow-checked, zeroed; with the library allocator (expert_malloc). */
void *v1_calloc(size_t count, size_t size);
char *v1_strndup(const char *s, size_t n);

/* Lower-case hex of n bytes into out (2n+1 chars); exactly 2n hex digits
 * back to n bytes (1 on success). */
void v1_hex_encode(const uint8_t *p, size_t n, char *out);
int v1_hex_decode(const char *s, size_t len, uint8_t *out, size_t n);
/* An archive entry name checked and normalised (NULL with *why if unsafe). */
char *v1_normalize_name(const char *raw, int is_dir, const char **why);
/* A string member of a JSON object, or NULL. */
const char *v1_jstr(const json_t *o, const char *key);

/* Every package file of a reader (FILE sections and rebuilt safetensors),
 * in TOC order. */
typedef struct v1_pfile {
    char *name;
    uint8_t *data;
    size_t size;
    uint32_t mode;
    int64_t mtime;
    int has_meta;
    unsigned order;
} v1_pfile;

typedef struct v1_pfiles {
    v1_pfile *f;
    uint32_t count;
} v1_pfiles;

void v1_pfiles_free(v1_pfiles *p);
/* Every package file of a reader, rebuilt; require_all: a section that
 * belongs to no file is an error (a v1 package could not hold it). */
expert_status v1_collect_files(expert_reader *r, int require_all, v1_pfiles *out,
                               expert_error *err);

#endif
