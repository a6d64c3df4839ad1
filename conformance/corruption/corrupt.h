/* corrupt.h — shared declarations of the corruption suite (corrupt.c,
 * bases.c, edits.c). */
#ifndef CORRUPT_H
#define CORRUPT_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "xpmodel.h"

/* Validation levels, in the order a file goes through them. LV_NONE: the
 * file passed every level that was run (accepted). LV_K: full validation
 * with the public key (signature checks, spec §12.3 step 6). */
enum { LV_NONE = 0, LV_S = 1, LV_A = 2, LV_F = 3, LV_K = 4 };

#define CLS(c) (UINT64_C(1) << (c))
#define ANY_CLASS UINT64_MAX

/* Expected outcome: one (level, class set), optionally an accepted
 * alternative. level LV_NONE = the mutated file is valid and must pass. */
typedef struct expect {
    int level;
    uint64_t mask;
    int alt_level;
    uint64_t alt_mask;
} expect;

typedef struct base {
    char name[48];
    uint8_t *img;      /* 4096-aligned copy */
    size_t n;
    int key;           /* key index it is signed with, -1 unsigned, -2 signed with an unknown key */
    int is_vector;
    int sibling;       /* base index with the same content signed by the other key, or -1 */
    xm_model m;        /* parsed by the independent model */
    uint64_t meta_off, toc_off, index_off, str_off, index_len;
    uint32_t module_count;
    char **referenced; /* names referenced by metadata (adapter_config, source_manifest) */
    int nref;
} base;

typedef struct ctx {
    base *bases;
    int nbases;
    expert_public_key *pub[16]; /* 0, 1: generated keys; 2+: vectors' keys */
    char *tmpdir;
    int exhaustive;
} ctx;

extern ctx g;

/* bases.c */
int bases_build(const char *gen, const char *cli, const char *vectors, int quick);
uint8_t *aligned_dup(const void *p, size_t n);
/* decoded bytes of section i of a base (independent decoder); malloc'd */
uint8_t *plain_of(const base *b, uint32_t i, size_t *len);
char *meta_json_of(const base *b, size_t *len); /* decoded metadata JSON, NUL-terminated */

/* Costly edits (64 MiB bombs, 70,000 modules, metadata of megabytes) run on
 * the suite's own bases; on golden vectors only with --exhaustive. */
int heavy_skip(const base *b);

/* edits.c: targeted edits. Each returns 0 and fills out/e when it applies
 * to the base, -1 when it does not. */
typedef int (*edit_fn)(const base *b, int arg, xb *out, expect *e);
typedef struct edit {
    const char *name;
    const char *group;
    edit_fn fn;
    int arg;
} edit;
const edit *edits_table(size_t *n);

#endif
