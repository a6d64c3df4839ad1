/*
 * expert_v1.h — compatibility with v1 .expert packages (hivellm tar.gz).
 *
 * Included at the end of expert.h; also compiles on its own after it.
 *
 * A v1 package is a gzip'd tar whose entries all sit at the archive root
 * (manifest.json, adapter_model.safetensors, adapter_config.json, tokenizer
 * files, README.md, grammar.gbnf, LICENSE, optional tests/... and
 * signature.sig). expert_open_v1() (or expert_open_any(), which recognises
 * one by its gzip magic 1f 8b; expert_open() refuses it) reads it as a
 * stream, in memory, never writing anything to disk: this layer is built on
 * the public API of expert.h only. Every regular entry is kept (bounded by
 * expert_v1_options), adapter_model.safetensors is parsed with
 * expert_safetensors_parse(), and an in-memory v2 image (raw codec) is built
 * (expert_writer_open_memory, expert_pack) with the same sections and
 * metadata `expert-cli pack` gives the extracted
 * directory, following the v1 mapping of spec §9.5 and §10.7:
 *   - SAFETENSORS_HEADER "adapter_model.safetensors", then one section per
 *     tensor in streaming order (layer, module path, A < B < magnitude <
 *     other), with the module list in the metadata; r, alpha, rslora and
 *     feedforward come from adapter_config.json as PEFT selects them
 *     (rank/alpha patterns, feedforward_modules); a config that contradicts
 *     the tensors (r, use_dora, peft_type, IA3 shapes) is BAD_SAFETENSORS;
 *   - every other entry as a FILE section named by its path, sorted by path;
 *     manifest.json is kept byte-exact and named by "source_manifest";
 *     name, version, description and base_model {name, sha256} verbatim
 *     (quirks included: Windows paths, sha256 "");
 *   - metadata "extra.v1_source": {"sha256", "bytes", "entries": [{"name",
 *     "size", "mode", "mtime"}...] in archive order}.
 * The reader then behaves exactly as for a v2 file (lookup, tensors,
 * zero-copy views aligned as in a mapped file, validation levels);
 * expert_header() describes that image, while the archive's own size and
 * SHA-256 are in expert_v1_info. Hostile archives are refused with
 * EXPERT_E_BAD_ARCHIVE (archive defects: unsafe or duplicate names, links,
 * special files, truncation, corruption, size limits, missing safetensors)
 * or EXPERT_E_BAD_SAFETENSORS (defects of adapter_model.safetensors).
 */
#ifndef EXPERT_V1_H
#define EXPERT_V1_H

#include "expert.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- opening */

#define EXPERT_V1_DEFAULT_MAX_TOTAL (UINT64_C(1) << 30)  /* 1 GiB: tar stream, and memory held */
#define EXPERT_V1_DEFAULT_MAX_ENTRY (UINT64_C(1) << 30)  /* 1 GiB per entry */
#define EXPERT_V1_DEFAULT_MAX_ENTRIES 4096u

enum {
    /* Do not look for (or check) the "<path>.sha256" sidecar. */
    EXPERT_V1_IGNORE_SIDECAR = 1u << 0,
    /* Fail with FILE_HASH_MISMATCH on any sidecar mismatch, even for a
     * signed package (whose sidecar the old `sign` never refreshed). */
    EXPERT_V1_STRICT_SIDECAR = 1u << 1
};

typedef struct expert_v1_options {
    /* Memory the v1 reader may hold, and the decompressed tar stream
     * (entries + tar headers): the entries are held twice while the v2 image
     * is built from them, so their sum may reach half of this. 0 = default. */
    uint64_t max_total_bytes;
    uint64_t max_entry_bytes; /* one entry; 0 = default */
    uint32_t max_entries;     /* 0 = default */
    uint32_t flags;           /* EXPERT_V1_* */
    /* Schema-2.0 manifests list base models; when there are several, the one
     * to map (spec §9.5) is named here (NULL: the manifest must hold one). */
    const char *base_model;
} expert_v1_options;

/* expert_open / expert_open_memory for a v1 package with explicit limits.
 * The memory variant copies what it needs: `data` may be freed after it
 * returns. A v2 file given here is refused (BAD_ARCHIVE: not gzip). */
EXPERT_API expert_status expert_open_v1(const char *path, const expert_open_options *opt,
                             const expert_v1_options *v1opt, expert_reader **out,
                             expert_error *err);
EXPERT_API expert_status expert_open_v1_memory(const void *data, size_t size, const expert_open_options *opt,
                                    const expert_v1_options *v1opt, expert_reader **out,
                                    expert_error *err);

/* Either format, told apart by the first two bytes (gzip magic: v1): for
 * tools that take what the user gives them. v2 files open as expert_open /
 * expert_open_memory would (the memory is borrowed), v1 packages as
 * expert_open_v1 / expert_open_v1_memory (copied). */
EXPERT_API expert_status expert_open_any(const char *path, const expert_open_options *opt,
                                         const expert_v1_options *v1opt, expert_reader **out,
                                         expert_error *err);
EXPERT_API expert_status expert_open_any_memory(const void *data, size_t size,
                                                const expert_open_options *opt,
                                                const expert_v1_options *v1opt, expert_reader **out,
                                                expert_error *err);

/* 1 when the reader was built from a v1 tar.gz, 2 for a v2 file (0 for NULL). */
EXPERT_API int expert_reader_source_format(const expert_reader *r);
/* Deprecation notice for v1 readers (a static string the caller may show);
 * NULL for v2 readers. The library itself never prints. */
EXPERT_API const char *expert_reader_notice(const expert_reader *r);

/* Sidecar state ("<path>.sha256" in sha256sum format, hashing the
 * compressed archive). */
typedef enum expert_v1_sidecar {
    EXPERT_V1_SIDECAR_NOT_CHECKED = 0, /* opened from memory, or IGNORE_SIDECAR */
    EXPERT_V1_SIDECAR_ABSENT = 1,
    EXPERT_V1_SIDECAR_MATCH = 2,
    /* Mismatch on a signed package: the old `expert-cli sign` re-tars the
     * archive without refreshing the sidecar (its known defect), so this is
     * expected; verify the signature instead. Unsigned mismatches fail open. */
    EXPERT_V1_SIDECAR_STALE_SIGNED = 3,
    EXPERT_V1_SIDECAR_MALFORMED = 4    /* present but not "<64 hex>[ name]" */
} expert_v1_sidecar;

typedef struct expert_v1_info {
    uint64_t archive_bytes;     /* compressed size */
    uint8_t archive_sha256[32]; /* of the compressed archive */
    uint64_t unpacked_bytes;    /* sum of entry sizes */
    uint32_t entry_count;       /* regular entries */
    expert_v1_sidecar sidecar;
    int is_signed;              /* manifest integrity block or signature.sig present */
} expert_v1_info;

/* EXPERT_E_INVALID_ARGUMENT for a reader that is not v1. */
EXPERT_API expert_status expert_v1_info_get(const expert_reader *r, expert_v1_info *out);
/* Name of the i-th regular entry in archive order (NULL past the end or for v2). */
EXPERT_API const char *expert_v1_entry_name(const expert_reader *r, uint32_t i);

/* Frees what the v1 functions allocate (the same as expert_free). */
EXPERT_API void expert_v1_free(void *p);

/* ------------------------------------------------------ v1 signatures */

/* The v1 scheme (hivellm expert-cli `sign`): raw 32-byte Ed25519 seed as the
 * private key, "ed25519:<64 hex>" as the public key, message = the lines
 * "<path>:<sha256 hex>" of every file, sorted by path and joined by "\n"
 * (no trailing newline); the signature (128 hex) goes into manifest.json's
 * "integrity" block and signature.sig. The old tool hashed manifest.json
 * BEFORE inserting that block, so a package it signed never verifies as is. */
typedef enum expert_v1_sig_status {
    EXPERT_V1_SIG_UNSIGNED = 0,      /* no integrity block and no signature.sig */
    EXPERT_V1_SIG_VALID = 1,         /* signature verifies and every file matches */
    /* Verifies, and manifest.json matches its signed hash once the
     * "integrity" member the old tool inserted after signing is removed. */
    EXPERT_V1_SIG_VALID_LEGACY = 2,
    /* The signature verifies over the recorded hashes and every other file
     * matches, but manifest.json changed after signing in a way that cannot
     * be undone: the old tool's known defect; cannot be verified. */
    EXPERT_V1_SIG_LEGACY_DEFECT = 3,
    EXPERT_V1_SIG_INVALID = 4        /* bad signature, changed/extra/missing file, malformed */
} expert_v1_sig_status;

typedef struct expert_v1_signature_info {
    expert_v1_sig_status status;
    int key_from_package;  /* no trusted key given: the package's own key was used */
    char pubkey[73];       /* "ed25519:<hex>" used, or "" */
    uint32_t files_signed; /* entries in integrity.files */
    uint32_t files_matched;
    char detail[512];      /* human-readable explanation */
} expert_v1_signature_info;

/* Verifies the v1 signature of the package files held by r (a v1 reader, or
 * a v2 file converted from one: the files are rebuilt from its sections).
 * trusted_pubkey: "ed25519:<64 hex>" or bare hex; NULL = use the key inside
 * the package (it proves integrity, not origin). Returns OK for VALID and
 * VALID_LEGACY, UNSIGNED, BAD_SIGNATURE (LEGACY_DEFECT, INVALID) or BAD_KEY;
 * `out` (optional) is filled in every case. */
EXPERT_API expert_status expert_v1_verify(expert_reader *r, const char *trusted_pubkey,
                               expert_v1_signature_info *out, expert_error *err);

/* Old-tool signing primitive for fixtures and tools: Ed25519 over msg with
 * the raw seed; also gives the public key. */
EXPERT_API expert_status expert_v1_sign_raw(const uint8_t seed[32], const void *msg, size_t length,
                                 uint8_t signature[64], uint8_t public_key[32], expert_error *err);

/* --------------------------------------------------- writing v1 tar.gz */

typedef struct expert_v1_entry {
    const char *name;      /* relative '/' path */
    const void *data;
    size_t size;
    uint32_t mode;         /* 0 = 0644 */
    int64_t mtime;         /* seconds since the epoch */
} expert_v1_entry;

typedef struct expert_v1_write_options {
    int gzip_level;        /* 1..9, 0 = 6 (the old packer's zlib default) */
    int64_t mtime;         /* for entries exported without a recorded mtime */
} expert_v1_write_options;

/* Writes a v1 package the way the old packer does: GNU tar headers, entries
 * in the given order at the root, regular files only, uid/gid 0, two zero
 * end blocks, gzip. Names must be safe relative paths. Atomic: temp file in
 * the target directory, fsync, rename. */
EXPERT_API expert_status expert_v1_write(const char *path, const expert_v1_entry *entries, size_t count,
                              const expert_v1_write_options *opt, expert_error *err);
/* Same into memory (release with expert_v1_free). */
EXPERT_API expert_status expert_v1_write_memory(const expert_v1_entry *entries, size_t count,
                                     const expert_v1_write_options *opt, void **data,
                                     size_t *size, expert_error *err);

/* Rollback: writes the package files of r (every FILE section and the
 * rebuilt safetensors file) as a v1 tar.gz, byte-exact, in the original
 * archive order and modes when the metadata records them (extra.v1_source),
 * else in the old packer's order. Sections that belong to no file (e.g. OSD)
 * cannot be represented: INVALID_ARGUMENT. */
EXPERT_API expert_status expert_export_v1(expert_reader *r, const char *path,
                               const expert_v1_write_options *opt, expert_error *err);
EXPERT_API expert_status expert_export_v1_memory(expert_reader *r, const expert_v1_write_options *opt,
                                      void **data, size_t *size, expert_error *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPERT_V1_H */
