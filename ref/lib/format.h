/* format.h — on-disk constants of .expert v2 (spec §3–§8) and the small
 * helpers every parser needs: little-endian loads/stores and checked
 * arithmetic. Nothing here allocates or fails silently. */
#ifndef EXPERT_FORMAT_H
#define EXPERT_FORMAT_H

#include <stdint.h>
#include <string.h>

#include "expert.h"

/* ---- header (spec §3) ---- */
#define XP_MAGIC "HLLMEXP\0"
#define XP_HEADER_SIZE 256u
#define XP_HEADER_SIZE_MAX 4096u
#define XP_OFF_MAGIC 0x00u
#define XP_OFF_MAJOR 0x08u
#define XP_OFF_MINOR 0x0Au
#define XP_OFF_HEADER_SIZE 0x0Cu
#define XP_OFF_TOC_COUNT 0x10u
#define XP_OFF_FILE_SHA256 0x14u
#define XP_OFF_SIGNATURE 0x34u
#define XP_OFF_ALIGNMENT 0x74u
#define XP_OFF_FLAGS 0x78u
#define XP_OFF_TOC_ENTRY_SIZE 0x7Cu
#define XP_OFF_STRUCTURE_SHA256 0x80u
#define XP_OFF_METADATA_OFFSET 0xA0u
#define XP_OFF_METADATA_LENGTH 0xA8u
#define XP_OFF_METADATA_DECODED 0xB0u
#define XP_OFF_TOC_OFFSET 0xB8u
#define XP_OFF_INDEX_OFFSET 0xC0u
#define XP_OFF_INDEX_LENGTH 0xC8u
#define XP_OFF_STRINGS_OFFSET 0xD0u
#define XP_OFF_STRINGS_LENGTH 0xD8u
#define XP_OFF_FILE_LENGTH 0xE0u
#define XP_OFF_RESERVED 0xE8u
#define XP_RESERVED_LEN 24u
#define XP_SHA256_LEN 32u
#define XP_SIGNATURE_LEN 64u

/* Header flag bits 0–15 must be understood; 16–31 may be ignored. */
#define XP_FLAGS_MUST_UNDERSTAND 0x0000FFFFu
#define XP_FLAGS_KNOWN 0u

/* ---- TOC entry (spec §5) ---- */
#define XP_TOC_ENTRY_SIZE 128u
#define XP_TOC_NAME_OFFSET 0u
#define XP_TOC_NAME_LENGTH 4u
#define XP_TOC_TYPE 6u
#define XP_TOC_CODEC 8u
#define XP_TOC_DTYPE 9u
#define XP_TOC_RANK 10u
#define XP_TOC_RESERVED0 11u
#define XP_TOC_FLAGS 12u
#define XP_TOC_LAYER 16u
#define XP_TOC_MODULE 20u
#define XP_TOC_FRAME_SIZE 24u
#define XP_TOC_RESERVED1 28u
#define XP_TOC_OFFSET 32u
#define XP_TOC_STORED 40u
#define XP_TOC_DECODED 48u
#define XP_TOC_DIMS 56u
#define XP_TOC_SHA256 88u
#define XP_TOC_RESERVED2 120u

/* ---- limits (spec §14) ---- */
#define XP_MAX_SECTIONS 65536u
#define XP_MAX_NAME EXPERT_MAX_NAME_BYTES
#define XP_MAX_METADATA (16u * 1024u * 1024u)
#define XP_MAX_STRINGS (64u * 1024u * 1024u)
#define XP_MAX_SECTION_DECODED (UINT64_C(1) << 32)
#define XP_MAX_TOTAL_DECODED (UINT64_C(1) << 36)
#define XP_MIN_FRAME_SIZE (1u << 16)
#define XP_MAX_FRAME_SIZE (1u << 26)
#define XP_DEFAULT_FRAME_SIZE (1u << 20)
#define XP_MAX_LAYER 65535u
#define XP_MAX_JSON_DEPTH 32
#define XP_ZSTD_WINDOW_LOG_MAX 27

/* Signed message = domain tag || structure_sha256 (spec §11). */
#define XP_SIGN_DOMAIN "HLLMEXP2-SIGN-V1"
#define XP_SIGN_DOMAIN_LEN 16u

/* ---- little-endian access: explicit byte order, no alignment assumptions ---- */
static inline uint16_t xp_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t xp_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t xp_le64(const uint8_t *p)
{
    return (uint64_t)xp_le32(p) | ((uint64_t)xp_le32(p + 4) << 32);
}
static inline void xp_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void xp_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void xp_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- checked arithmetic: every size from the file goes through these ---- */
static inline int xp_add_overflows(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline int xp_mul_overflows(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
/* Rounds up to a power-of-two multiple; returns nonzero on overflow. */
static inline int xp_align_up(uint64_t v, uint64_t align, uint64_t *out)
{
    uint64_t t;
    if (xp_add_overflows(v, align - 1, &t))
        return 1;
    *out = t & ~(align - 1);
    return 0;
}
static inline int xp_is_pow2(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

/* ---- index (spec §8) ---- */
uint64_t xp_fnv1a64(const void *data, size_t length);
uint32_t xp_index_slot_count(uint32_t toc_count);
/* A section name with its full FNV-1a hash, computed once. */
typedef struct xp_name {
    const void *bytes;
    uint64_t hash;
    uint32_t length;
} xp_name;
/* Sorts order[0..n) by name (hash, length, bytes; TOC order among equal
 * names). Returns 1 when two names are equal, with *dup the lowest TOC index
 * repeating an earlier name and *first that earlier one. */
int xp_names_sort(const xp_name *names, uint32_t n, uint32_t *order, uint32_t *dup,
                  uint32_t *first);
/* Binary search in the order of xp_names_sort: 1 and *index when found. */
int xp_names_find(const xp_name *names, const uint32_t *order, uint32_t n, const void *name,
                  size_t length, uint32_t *index);
/* Fills slots[0..slot_count) canonically for distinct names in TOC order;
 * `next` is slot_count words of scratch. */
void xp_index_build(uint32_t *slots, uint32_t slot_count, const xp_name *names, uint32_t n,
                    uint32_t *next);

/* ---- hashing helpers (crypto.c) ---- */
typedef struct evp_md_ctx_st xp_sha256_ctx; /* OpenSSL's EVP_MD_CTX */
expert_status xp_sha256_new(xp_sha256_ctx **out);
expert_status xp_sha256_update(xp_sha256_ctx *c, const void *data, size_t length);
expert_status xp_sha256_final(xp_sha256_ctx *c, uint8_t out[32]);
void xp_sha256_free(xp_sha256_ctx *c);
/* Hash of the header with the named fields zeroed (spec §11). */
expert_status xp_hash_header(xp_sha256_ctx *c, const uint8_t *header, size_t header_size,
                             int zero_file_sha);
expert_status xp_ed25519_sign(const expert_private_key *key, const uint8_t *msg, size_t len,
                              uint8_t sig[64], expert_error *err);
expert_status xp_ed25519_verify(const expert_public_key *key, const uint8_t *msg, size_t len,
                                const uint8_t sig[64]);

/* ---- codec (codec.c) ---- */
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
/* Encodes one section and hands the stored bytes (frame table, then each
 * frame; or the data itself for raw) to `sink` in order. */
typedef expert_status (*xp_sink_fn)(void *ctx, const uint8_t *data, size_t length,
                                    expert_error *err);
expert_status xp_encode(const expert_allocator *alloc, uint8_t codec, size_t elem_size, uint32_t frame_size, int level,
                        unsigned threads, const uint8_t *data, size_t length, xp_sink_fn sink,
                        void *sink_ctx, uint64_t *stored_length, expert_error *err);
/* A reusable zstd decompression context plus scratch buffer. */
typedef struct xp_dcache {
    const expert_allocator *alloc; /* the owning reader's */
    ZSTD_DCtx *dctx;
    uint8_t *scratch;
    size_t cap;
    uint8_t *stored;        /* a section's stored bytes read with pread */
    size_t stored_cap;
    struct xp_dcache *next; /* free-list link, owned by the reader */
} xp_dcache;
int xp_dcache_fit(xp_dcache *c, size_t scratch_size); /* 0, or -1 out of memory */
void xp_dcache_release(xp_dcache *c);                 /* frees the members */
uint8_t *xp_dcache_stored(xp_dcache *c, size_t size); /* a buffer of size bytes, or NULL */
/* Decodes stored bytes into dst (exactly decoded_length bytes). `cache` (may
 * be NULL) serves the caller's thread. */
expert_status xp_decode(const expert_allocator *alloc, uint8_t codec, size_t elem_size, uint32_t frame_size,
                        const uint8_t *stored, uint64_t stored_length, uint8_t *dst,
                        uint64_t decoded_length, unsigned threads, xp_dcache *cache,
                        uint64_t file_offset, uint32_t section, expert_error *err);
/* Frame-level access, for streaming verification with bounded memory. */
typedef struct xp_frame_ctx {
    const uint8_t *stored;
    uint64_t *starts;      /* nframes+1 offsets within stored */
    uint64_t nframes;
    uint32_t frame_size;
    uint64_t decoded_length;
    size_t elem_size;
    int shuffle;
    uint64_t file_offset;
    uint32_t section;
    const expert_allocator *alloc;
} xp_frame_ctx;
expert_status xp_frames_parse(const expert_allocator *alloc, const uint8_t *stored, uint64_t stored_length,
                              uint64_t decoded_length, uint32_t frame_size, uint64_t **starts_out,
                              uint64_t *nframes_out, uint64_t file_offset, uint32_t section,
                              expert_error *err);
/* Decodes frame f into out (frame length bytes); scratch holds frame_size
 * bytes when fc->shuffle. */
expert_status xp_frame_decode(const xp_frame_ctx *fc, ZSTD_DCtx *dctx, uint8_t *scratch,
                              uint64_t f, uint8_t *out, expert_error *err);
int xp_zstd_frame_check(const uint8_t *src, size_t src_len, uint64_t expect, char *why,
                        size_t why_len);
void xp_shuffle(const uint8_t *src, uint8_t *dst, size_t length, size_t elem_size);
void xp_unshuffle(const uint8_t *src, uint8_t *dst, size_t length, size_t elem_size);

/* ---- metadata (metadata.c) ---- */
/* Bounds a JSON text before it is parsed: 0, or XP_JSON_TOO_DEEP (more than
 * max_depth nested containers) or XP_JSON_TOO_MANY (more than max_items
 * values and keys, counted as an upper bound). */
enum { XP_JSON_TOO_DEEP = 1, XP_JSON_TOO_MANY = 2 };
int xp_json_prescan(const char *json, size_t length, uint32_t max_items, int max_depth);
/* Largest safetensors header JSON (as the safetensors reference reader). */
#define XP_SAFETENSORS_MAX_HEADER 100000000u
typedef struct xp_metadata xp_metadata;
/* max_items: the reader's max_metadata_items (LIMIT_EXCEEDED past it). */
expert_status xp_metadata_parse(const expert_allocator *alloc, const char *json, size_t length,
                                uint32_t max_items, xp_metadata **out, uint64_t file_offset,
                                expert_error *err);
void xp_metadata_free(xp_metadata *m);
const char *xp_metadata_name(const xp_metadata *m);
const char *xp_metadata_version(const xp_metadata *m);
const char *xp_metadata_source_manifest(const xp_metadata *m);
const char *xp_metadata_adapter_config(const xp_metadata *m);
uint32_t xp_metadata_module_count(const xp_metadata *m);
const expert_module_info *xp_metadata_module(const xp_metadata *m, uint32_t i);

/* ---- reader internals shared with the writer ---- */
const uint8_t *expert_reader_bytes(const expert_reader *r, size_t *length);
const expert_allocator *xp_reader_allocator(const expert_reader *r);

#endif
