/*
 * expert.h — reference reader/writer for the .expert v2 adapter container.
 *
 * The normative format description is specs/binary-format/spec.md; section
 * numbers quoted here ("spec §N") refer to it.
 *
 * Conventions (one for the whole library):
 *  - Every function that can fail returns an expert_status; EXPERT_OK is 0.
 *  - Functions taking an `expert_error *err` fill it on failure when err is
 *    not NULL: the class (same as the return value), a message, and for file
 *    problems the byte offset and the section index involved.
 *  - The library never prints, aborts or exits. It allocates with malloc/free
 *    (replaceable through expert_set_allocator for fault-injection tests).
 *  - Handles are opaque. Free/close functions accept NULL.
 *  - A reader is safe to use from several threads at once after open.
 */
#ifndef EXPERT_H
#define EXPERT_H

#include <stddef.h>
#include <stdint.h>

/* Public functions carry EXPERT_API; the library is built with hidden
 * visibility, so nothing else is exported (checked by ref/tests/check_exports.sh). */
#ifndef EXPERT_API
#if defined(__GNUC__) || defined(__clang__)
#define EXPERT_API __attribute__((visibility("default")))
#else
#define EXPERT_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The format version this library reads and writes (header offsets 0x08 and
 * 0x0A, spec §3). */
#define EXPERT_FORMAT_MAJOR 2
#define EXPERT_FORMAT_MINOR 0

/* The library's version (not a package's: see expert_package_version).
 * The functions give the version of the library linked at run time. */
#define EXPERT_VERSION_MAJOR 2
#define EXPERT_VERSION_MINOR 0
#define EXPERT_VERSION_PATCH 0
#define EXPERT_VERSION_STRING "2.0.0"
#define EXPERT_VERSION_NUMBER \
    (EXPERT_VERSION_MAJOR * 10000 + EXPERT_VERSION_MINOR * 100 + EXPERT_VERSION_PATCH)

EXPERT_API unsigned expert_version_number(void);     /* EXPERT_VERSION_NUMBER of the library */
EXPERT_API const char *expert_version_string(void);  /* e.g. "2.0.0" */

/* ---------------------------------------------------------------- errors */

/* Error classes, spec §15. Numeric values are stable. */
typedef enum expert_status {
    EXPERT_OK = 0,
    EXPERT_E_IO = 1,
    EXPERT_E_NOMEM = 2,
    EXPERT_E_INVALID_ARGUMENT = 3,
    EXPERT_E_BAD_MAGIC = 10,
    EXPERT_E_UNSUPPORTED_VERSION = 11,
    EXPERT_E_TRUNCATED = 12,
    EXPERT_E_TRAILING_DATA = 13,
    EXPERT_E_BAD_HEADER = 14,
    EXPERT_E_OUT_OF_BOUNDS = 15,
    EXPERT_E_OVERLAP = 16,
    EXPERT_E_MISALIGNED = 17,
    EXPERT_E_BAD_TOC = 18,
    EXPERT_E_BAD_INDEX = 19,
    EXPERT_E_BAD_METADATA = 20,
    EXPERT_E_UNKNOWN_CODEC = 21,
    EXPERT_E_UNKNOWN_SECTION_TYPE = 22,
    EXPERT_E_UNKNOWN_FLAG = 23,
    EXPERT_E_UNKNOWN_DTYPE = 24,
    EXPERT_E_DUPLICATE_NAME = 25,
    EXPERT_E_LIMIT_EXCEEDED = 26,
    EXPERT_E_STRUCTURE_HASH_MISMATCH = 27,
    EXPERT_E_DECODE_FAILED = 30,
    EXPERT_E_SIZE_MISMATCH = 31,
    EXPERT_E_SECTION_HASH_MISMATCH = 32,
    EXPERT_E_FILE_HASH_MISMATCH = 33,
    EXPERT_E_BAD_PADDING = 34,
    EXPERT_E_BAD_SIGNATURE = 35,
    EXPERT_E_UNSIGNED = 36,
    EXPERT_E_BAD_KEY = 37,
    EXPERT_E_NOT_FOUND = 40,
    EXPERT_E_BAD_SAFETENSORS = 41,
    EXPERT_E_BAD_ARCHIVE = 42
} expert_status;

#define EXPERT_NO_OFFSET UINT64_MAX
#define EXPERT_NO_SECTION UINT32_MAX

typedef struct expert_error {
    expert_status code;
    uint64_t offset;   /* byte offset in the file, or EXPERT_NO_OFFSET */
    uint32_t section;  /* TOC index, or EXPERT_NO_SECTION */
    char message[256];
} expert_error;

/* Stable upper-case class name, e.g. "SECTION_HASH_MISMATCH". Never NULL. */
EXPERT_API const char *expert_status_name(expert_status s);
/* Parses a class name back (for conformance tools); EXPERT_E_INVALID_ARGUMENT if unknown. */
EXPERT_API expert_status expert_status_from_name(const char *name, expert_status *out);
/* Fills *err (when err is not NULL) and returns code: the library's error
 * convention, for callbacks (expert_write_fn) and layers built on this API. */
EXPERT_API expert_status expert_error_set(expert_error *err, expert_status code, uint64_t offset,
                                          uint32_t section, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Replace malloc/realloc/free for the whole library (not thread-safe; call
 * before any other function). Pass NULLs to restore the defaults. */
typedef struct expert_allocator {
    void *(*malloc_fn)(size_t size, void *user);
    void *(*realloc_fn)(void *ptr, size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} expert_allocator;
EXPERT_API void expert_set_allocator(const expert_allocator *alloc);
/* The library's allocator, for memory exchanged with it: what the library
 * hands out (expert_file_rebuild, the v1 buffers) is released with
 * expert_free. expert_malloc never returns NULL for size 0. */
EXPERT_API void *expert_malloc(size_t size);
EXPERT_API void *expert_realloc(void *ptr, size_t size);
EXPERT_API void expert_free(void *ptr);

/* ---------------------------------------------------------- format enums */

typedef enum expert_codec {
    EXPERT_CODEC_RAW = 0,
    EXPERT_CODEC_ZSTD = 1,
    EXPERT_CODEC_SHUFFLE_ZSTD = 2
} expert_codec;

typedef enum expert_dtype {
    EXPERT_DTYPE_BYTES = 0,
    EXPERT_DTYPE_F32 = 1,
    EXPERT_DTYPE_F16 = 2,
    EXPERT_DTYPE_BF16 = 3,
    EXPERT_DTYPE_F64 = 4,
    EXPERT_DTYPE_I8 = 5,
    EXPERT_DTYPE_U8 = 6,
    EXPERT_DTYPE_I16 = 7,
    EXPERT_DTYPE_U16 = 8,
    EXPERT_DTYPE_I32 = 9,
    EXPERT_DTYPE_U32 = 10,
    EXPERT_DTYPE_I64 = 11,
    EXPERT_DTYPE_U64 = 12,
    EXPERT_DTYPE_BOOL = 13
} expert_dtype;
#define EXPERT_DTYPE_COUNT 14

typedef enum expert_section_type {
    EXPERT_SECTION_FILE = 0x0001,
    EXPERT_SECTION_SAFETENSORS_HEADER = 0x0002,
    EXPERT_SECTION_LORA_A = 0x0010,
    EXPERT_SECTION_LORA_B = 0x0011,
    EXPERT_SECTION_DORA_MAGNITUDE = 0x0012,
    EXPERT_SECTION_IA3_VECTOR = 0x0013,
    EXPERT_SECTION_OSD_U = 0x0020,
    EXPERT_SECTION_OSD_S = 0x0021,
    EXPERT_SECTION_OSD_VT = 0x0022,
    EXPERT_SECTION_OSD_SPARSE_INDPTR = 0x0023,
    EXPERT_SECTION_OSD_SPARSE_INDICES = 0x0024,
    EXPERT_SECTION_OSD_SPARSE_VALUES = 0x0025,
    EXPERT_SECTION_SOFT_PROMPT = 0x0030,
    EXPERT_SECTION_TENSOR = 0x003F
} expert_section_type;

#define EXPERT_LAYER_NONE UINT32_MAX
#define EXPERT_MODULE_NONE UINT32_MAX
#define EXPERT_MAX_RANK 4

/* Names for tools: "F32", "zstd", "LORA_A"... NULL for unknown values. */
EXPERT_API const char *expert_dtype_name(uint32_t dtype);
EXPERT_API size_t expert_dtype_size(uint32_t dtype); /* 0 if unknown */
EXPERT_API const char *expert_codec_name(uint32_t codec);
EXPERT_API const char *expert_section_type_name(uint32_t type);
EXPERT_API expert_status expert_dtype_from_name(const char *name, expert_dtype *out);
EXPERT_API expert_status expert_codec_from_name(const char *name, expert_codec *out);
/* Slots of the name index for a file with this many sections (spec §8), for
 * tools that predict a file's layout. */
EXPERT_API uint32_t expert_index_slot_count(uint32_t section_count);
/* 1 when a section name is one the format allows (spec §12.1 (h)): 1..1024
 * bytes of UTF-8 (RFC 3629) without NUL. */
#define EXPERT_MAX_NAME_BYTES 1024u
EXPERT_API int expert_name_valid(const char *name, size_t length);

/* -------------------------------------------------------------- reading */

typedef struct expert_reader expert_reader;

/* A verified mark: the caller's record that a file passed full validation
 * (expert_mark_make), bound to the file's identity (device, inode, size,
 * mtime, ctime) and to its file_sha256 and structure_sha256. Given back at
 * open (expert_open_options.mark) it stands for the section hashes as long
 * as the file is unchanged; it is kept where the caller says, never inside
 * the file. Threat model: spec §11.7. */
#define EXPERT_MARK_BYTES 128u
typedef struct expert_mark {
    uint8_t bytes[EXPERT_MARK_BYTES];
} expert_mark;

enum {
    EXPERT_OPEN_NO_MMAP = 1u << 0, /* read the file into memory with read() */
    EXPERT_OPEN_V2_ONLY = 1u << 1  /* the only behaviour; kept so older callers still build */
};

/* Reader limits below the spec's (§14.1), for untrusted input: a small file
 * must not cost large time or memory. Zero in expert_open_options means the
 * default. expert_reader_limits() reads back every limit a reader applies. */
#define EXPERT_DEFAULT_MAX_DECODED_BYTES (UINT64_C(1) << 30) /* 1 GiB; the spec allows 2^36 */
#define EXPERT_DEFAULT_MAX_METADATA_ITEMS (1u << 20)         /* JSON values and keys */

/* Options structs start with struct_size, so fields can be added at the
 * end without breaking callers built against an older header: 0 (a zeroed
 * or designated initializer) or sizeof(the struct) as this header declares
 * it; anything else is INVALID_ARGUMENT. */
typedef struct expert_open_options {
    size_t struct_size;    /* 0 or sizeof(expert_open_options) */
    uint32_t flags;        /* EXPERT_OPEN_* */
    unsigned threads;      /* decode/verify threads; 0 or 1 = caller's thread only */
    /* Σ decoded_length over the file's sections above which nothing is
     * decoded: every read, stream and validation past the structural level
     * fails with LIMIT_EXCEEDED before doing any work. Structural open and
     * inspection are unaffected. 0 = EXPERT_DEFAULT_MAX_DECODED_BYTES. */
    uint64_t max_decoded_bytes;
    /* Metadata JSON values and object keys, counted before parsing
     * (LIMIT_EXCEEDED at open). 0 = EXPERT_DEFAULT_MAX_METADATA_ITEMS. */
    uint32_t max_metadata_items;
    /* Every allocation of the reader, and the buffers it hands out
     * (expert_file_rebuild), go through this allocator (copied at open);
     * NULL = the library's (expert_set_allocator). */
    const expert_allocator *allocator;
    /* A mark from expert_mark_make, or NULL. expert_open only: the file is
     * read with pread, never mapped (a mapping would show later changes to
     * the file). When the mark still matches the file, reads skip the hash
     * (expert_reader_trusted says so); when it does not, the load is an
     * ordinary one and every section is hash-checked. */
    const expert_mark *mark;
} expert_open_options;

typedef struct expert_limits {
    /* the reader's own, settable through expert_open_options */
    uint64_t max_decoded_bytes;
    uint32_t max_metadata_items;
    /* the spec's (§14.1), fixed */
    uint32_t max_sections, max_name_bytes, max_json_depth;
    uint64_t max_metadata_bytes, max_strings_bytes, max_section_decoded, max_total_decoded;
    uint32_t max_frame_size;
} expert_limits;
/* The limits `r` applies; with r == NULL, the defaults. */
EXPERT_API void expert_reader_limits(const expert_reader *r, expert_limits *out);

/* Opens a v2 file and runs structural validation (level 1): header,
 * structure hash, metadata, TOC, index, layout. Touches no section body.
 * A v1 tar.gz is BAD_MAGIC after 2 bytes: v1 is opened through the
 * compatibility layer of expert_v1.h (expert_open_v1, expert_open_any). */
EXPERT_API expert_status expert_open(const char *path, const expert_open_options *opt,
                          expert_reader **out, expert_error *err);
/* Same over caller memory, which must outlive the reader (not copied). */
EXPERT_API expert_status expert_open_memory(const void *data, size_t size, const expert_open_options *opt,
                                 expert_reader **out, expert_error *err);
/* Same over memory the reader takes over: release(owner) is called once,
 * when the reader is closed, or before this returns when it fails. */
typedef void (*expert_release_fn)(void *owner);
EXPERT_API expert_status expert_open_memory_owned(const void *data, size_t size,
                                                  const expert_open_options *opt,
                                                  expert_release_fn release, void *owner,
                                                  expert_reader **out, expert_error *err);
/* The owner given to expert_open_memory_owned when `release` is the
 * callback it was given with, else NULL: a layer recognises its readers. */
EXPERT_API void *expert_reader_owner(const expert_reader *r, expert_release_fn release);
EXPERT_API void expert_close(expert_reader *r);

typedef struct expert_header_info {
    uint16_t major, minor;
    uint32_t header_size, section_count, alignment, flags;
    uint64_t file_length;
    uint64_t metadata_offset, metadata_length, metadata_decoded_length;
    uint64_t toc_offset, index_offset, index_length, strings_offset, strings_length;
    uint8_t file_sha256[32];
    uint8_t structure_sha256[32];
    int is_signed;
    int used_mmap;
} expert_header_info;
EXPERT_API void expert_header(const expert_reader *r, expert_header_info *out);

typedef struct expert_section_info {
    uint32_t index;        /* TOC index */
    const char *name;      /* NOT NUL-terminated inside the file: use name_length */
    uint16_t name_length;
    uint16_t type;
    uint8_t codec, dtype, rank;
    uint32_t flags, layer, module, frame_size;
    uint64_t offset, stored_length, decoded_length;
    uint64_t dims[EXPERT_MAX_RANK];
    uint8_t sha256[32];
    int known_type;        /* 0 for must-ignore types this reader does not know */
} expert_section_info;

EXPERT_API uint32_t expert_section_count(const expert_reader *r);
EXPERT_API expert_status expert_section(const expert_reader *r, uint32_t index, expert_section_info *out);
/* O(1) lookup through the file's hash index. EXPERT_E_NOT_FOUND if absent. */
EXPERT_API expert_status expert_find(const expert_reader *r, const char *name, size_t name_length,
                          uint32_t *index);
/* i-th section in streaming order: ascending layer (non-layer sections last),
 * ties in TOC order. */
EXPERT_API uint32_t expert_section_in_layer_order(const expert_reader *r, uint32_t i);

enum {
    EXPERT_READ_NO_VERIFY = 1u << 0 /* skip the access-level hash check */
};

/* Decodes section `index` into dst (capacity >= decoded_length). Unless
 * EXPERT_READ_NO_VERIFY, the decoded bytes' SHA-256 is checked the first time
 * the section is decoded (validation level 2); later reads of a verified
 * section skip the hash. Uses the reader's thread count for multi-frame sections. */
EXPERT_API expert_status expert_read(expert_reader *r, uint32_t index, void *dst, size_t dst_capacity,
                          uint32_t flags, expert_error *err);
/* Many sections at once, each into its caller-owned destination: the
 * reader's threads share the requests (taken in file order), each request
 * decoded and verified as expert_read does it. On failure every
 * destination is zeroed and the error is that of the lowest-numbered
 * failing request, whatever the timing. Destinations must not overlap. */
typedef struct expert_read_request {
    uint32_t section;
    void *dst;
    size_t capacity;       /* >= the section's decoded_length */
} expert_read_request;
EXPERT_API expert_status expert_read_sections(expert_reader *r, const expert_read_request *requests,
                                              size_t count, uint32_t flags, expert_error *err);

/* Zero-copy: pointer into the mapping for raw-codec sections (aligned as the
 * file says). Verifies the hash on first access unless EXPERT_READ_NO_VERIFY.
 * EXPERT_E_INVALID_ARGUMENT for compressed sections. */
EXPERT_API expert_status expert_view(expert_reader *r, uint32_t index, const void **data, size_t *length,
                          uint32_t flags, expert_error *err);

/* Receives decoded bytes in order (`section` says which section they came
 * from). A status other than EXPERT_OK stops the stream and is returned. */
typedef expert_status (*expert_write_fn)(void *user, uint32_t section, const void *data,
                                         size_t length, expert_error *err);
/* Streams section `index` decoded, one frame (or, raw, 1 MiB) per call to
 * `write`; memory is one frame whatever decoded_length says. The SHA-256 is
 * checked as the bytes pass, unless EXPERT_READ_NO_VERIFY or the section is
 * already verified, and its failure (SECTION_HASH_MISMATCH) is known only at
 * the end: a sink must hold what it got until this returns EXPERT_OK (write
 * a temporary file, say). `write` may be NULL to decode and verify only. */
EXPERT_API expert_status expert_read_stream(expert_reader *r, uint32_t index, expert_write_fn write,
                                 void *user, uint32_t flags, expert_error *err);
/* Many sections streamed at once: the reader's threads share them (taken in
 * file order), each section streamed as expert_read_stream does it, by one
 * thread, in order (a section named twice is INVALID_ARGUMENT); `write` is
 * called from several threads at once (a sink
 * that places bytes by section, pwrite say, needs no lock). Memory is a frame
 * per thread. The error is that of the lowest-numbered failing entry,
 * whatever the timing; as with expert_read_stream, a sink must hold what it
 * got until this returns EXPERT_OK. */
EXPERT_API expert_status expert_stream_sections(expert_reader *r, const uint32_t *sections,
                                                size_t count, expert_write_fn write, void *user,
                                                uint32_t flags, expert_error *err);

typedef struct expert_public_key expert_public_key;
typedef struct expert_private_key expert_private_key;

/* Validation level 2: every section decoded a frame at a time and hashed
 * (the reader's threads share the sections). */
EXPERT_API expert_status expert_verify_access(expert_reader *r, expert_error *err);
/* Validation level 3: every section decoded and hashed, padding, file hash,
 * and the signature when `key` is not NULL. */
EXPERT_API expert_status expert_verify_full(expert_reader *r, const expert_public_key *key, expert_error *err);
/* A mark for the file `r` was opened from (a path), after expert_verify_full
 * succeeded on it (or after a trusted open) and while the file is unchanged.
 * INVALID_ARGUMENT otherwise, and for a file changed in the last
 * EXPERT_MARK_SETTLE_SECONDS: file systems stamp times with a coarse clock,
 * so a change right after the mark could leave mtime and ctime as they were. */
#define EXPERT_MARK_SETTLE_SECONDS 2
EXPERT_API expert_status expert_mark_make(expert_reader *r, expert_mark *out, expert_error *err);
/* 1 while reads of `r` skip section hashes because its mark was accepted;
 * 0 after a read that found the file changed (the reader re-verifies). */
EXPERT_API int expert_reader_trusted(const expert_reader *r);

/* Signature only (structure hash already checked at open): UNSIGNED when the
 * signature field is all zero, BAD_SIGNATURE when it does not verify. */
EXPERT_API expert_status expert_verify_signature(const expert_reader *r, const expert_public_key *key,
                                      expert_error *err);

/* Decoded metadata JSON (NUL-terminated, owned by the reader). */
EXPERT_API const char *expert_metadata_json(const expert_reader *r, size_t *length);
EXPERT_API const char *expert_name(const expert_reader *r);
EXPERT_API const char *expert_package_version(const expert_reader *r); /* metadata "version" */

typedef struct expert_module_info {
    const char *path;      /* NUL-terminated, owned by the reader */
    const char *type;      /* "lora", "dora", "ia3", "osd" */
    int64_t layer;         /* -1 when null */
    uint64_t in_features, out_features;
    uint64_t r;            /* lora/dora: r; osd: rank k; ia3: 0 */
    double alpha;          /* lora/dora */
    int rslora, feedforward;
    double scale;          /* alpha/r, alpha/sqrt(r), or 1 */
} expert_module_info;
EXPERT_API uint32_t expert_module_count(const expert_reader *r);
EXPERT_API expert_status expert_module(const expert_reader *r, uint32_t index, expert_module_info *out);

/* ------------------------------------------------------- package files */

/* Streams one package file as it was packed (spec §10.7): a FILE section's
 * bytes, or for a SAFETENSORS_HEADER section the safetensors file rebuilt
 * byte-exact from it and the tensor sections it lists (a listed tensor
 * without its matching section is BAD_SAFETENSORS). Every section read is
 * hash-checked as it streams (see expert_read_stream: keep what the sink got
 * until EXPERT_OK); memory is a frame, plus the safetensors header. */
EXPERT_API expert_status expert_file_write(expert_reader *r, uint32_t section, expert_write_fn write,
                                void *user, expert_error *err);
/* The same file in one buffer, allocated with the reader's allocator:
 * release it with expert_free(), or with the allocator given at open. Every
 * section is read and hash-checked as expert_read_sections does it (the
 * reader's threads share a safetensors file's tensors). Memory is the whole
 * file: see expert_file_length. */
EXPERT_API expert_status expert_file_rebuild(expert_reader *r, uint32_t section, void **data, size_t *size,
                                  expert_error *err);
/* What that file is made of, without reading its data (a safetensors
 * file's header is read and matched to its sections): its length, and the
 * sections in file order (the FILE section; or the header section, then
 * each tensor's), the first `capacity` of them into `sections` (NULL when
 * capacity is 0), their number in *count. A caller picks between one buffer
 * and a stream by the length. */
EXPERT_API expert_status expert_file_layout(expert_reader *r, uint32_t section, uint32_t *sections,
                                            uint32_t capacity, uint32_t *count, uint64_t *length,
                                            expert_error *err);

/* -------------------------------------------------------------- writing */

typedef struct expert_writer expert_writer;

typedef struct expert_writer_options {
    size_t struct_size;    /* 0 or sizeof(expert_writer_options) */
    uint32_t alignment;    /* 64 (default when 0), 256 or 4096 */
    uint32_t frame_size;   /* default 1 MiB when 0 */
    int zstd_level;        /* default 9 when 0 (ratio/speed knee on F32 weights) */
    unsigned threads;      /* compression threads, 0/1 = none */
    /* Every allocation of the writer, and the image a memory writer hands
     * out, go through this allocator (copied at open); NULL = the library's. */
    const expert_allocator *allocator;
} expert_writer_options;

/* Starts a new file: data goes to a temporary file next to `path`; nothing
 * appears at `path` until expert_writer_finish succeeds. */
EXPERT_API expert_status expert_writer_open(const char *path, const expert_writer_options *opt,
                                 expert_writer **out, expert_error *err);

typedef struct expert_section_desc {
    const char *name;
    size_t name_length;    /* 0 = strlen(name) */
    uint16_t type;
    uint8_t codec, dtype, rank;
    uint32_t flags;
    uint32_t layer;        /* EXPERT_LAYER_NONE if none */
    uint32_t module;       /* EXPERT_MODULE_NONE if none */
    uint64_t dims[EXPERT_MAX_RANK];
} expert_section_desc;

/* Encodes and appends one section; the data is written to disk before this
 * returns, so peak memory stays near one section plus a few frames. */
EXPERT_API expert_status expert_writer_add(expert_writer *w, const expert_section_desc *desc,
                                const void *data, size_t length, expert_error *err);
/* Metadata JSON (validated against spec §9). Required before finish. */
EXPERT_API expert_status expert_writer_set_metadata(expert_writer *w, const char *json, size_t length,
                                         expert_error *err);
/* Writes metadata, TOC, index and strings, the hashes, the signature when
 * key != NULL, fsyncs and renames into place. The writer is freed either way. */
EXPERT_API expert_status expert_writer_finish(expert_writer *w, const expert_private_key *key,
                                   expert_error *err);
/* Discards everything written (removes the temporary file). */
EXPERT_API void expert_writer_abort(expert_writer *w);

/* A writer whose file is built in memory (nothing touches the disk);
 * size_hint preallocates. It ends with expert_writer_finish_memory, which
 * hands the image over (data aligned to the file alignment, so it opens with
 * expert_open_memory as a mapped file would); the writer is freed either way. */
typedef struct expert_image {
    const uint8_t *data;
    size_t size;
    void *allocation;          /* what expert_image_free releases */
    expert_allocator allocator; /* the writer's, which allocated it */
} expert_image;
EXPERT_API expert_status expert_writer_open_memory(const expert_writer_options *opt, size_t size_hint,
                                                   expert_writer **out, expert_error *err);
EXPERT_API expert_status expert_writer_finish_memory(expert_writer *w, const expert_private_key *key,
                                                     expert_image *out, expert_error *err);
EXPERT_API void expert_image_free(expert_image *image);

/* -------------------------------------------------------------- packing */

/* A PEFT package (spec §9.5: manifest.json, adapter_config.json,
 * adapter_model.safetensors and any other files) turned into sections and
 * metadata. The one implementation behind `expert-cli pack DIR` and the v1
 * tar.gz import: PEFT semantics (alpha, rank and feed-forward patterns,
 * DoRA/IA3 checks) are decided here only.
 *
 * Sections, in this order: the SAFETENSORS_HEADER of
 * adapter_model.safetensors, its tensors in streaming order (layer, module
 * path, role A < B < magnitude < other), then every other file sorted by
 * name. Files that are not there are simply absent. */
typedef struct expert_pack_file {
    const char *name;      /* package path, '/'-separated (spec §6.4), NUL-terminated */
    const void *data;      /* must stay readable until its on_section file_done */
    uint64_t size;
} expert_pack_file;

/* Progress, and a release point: after this call the packer never reads
 * files[file] bytes [offset, offset + length) again, nor any of the file
 * once file_done is set. A caller may drop those pages or free the buffer. */
typedef struct expert_pack_progress {
    size_t file;
    uint64_t offset, length;
    int file_done;
    size_t sections_done, sections_total;
} expert_pack_progress;

typedef struct expert_pack_options {
    size_t struct_size;      /* sizeof(expert_pack_options): fields may be added at the end */
    uint8_t tensor_codec;    /* EXPERT_CODEC_* of tensor sections (0 = raw) */
    uint8_t file_codec;      /* FILE and SAFETENSORS_HEADER sections */
    const char *fallback_name; /* metadata name when the manifest has none; NULL = "package" */
    const char *base_model;  /* which manifest base_models[] entry, when it lists several */
    const char *created_by;  /* metadata created_by; NULL = "libexpert <version>" */
    const char *extra_json;  /* a JSON object stored as metadata "extra", or NULL */
    void (*on_section)(void *user, const expert_pack_progress *p); /* may be NULL */
    void *user;
} expert_pack_options;

typedef struct expert_pack_result {
    uint32_t sections;
    size_t tensors, files, modules;  /* files: FILE sections */
    size_t alpha_defaulted;          /* LoRA/DoRA modules whose alpha no config stated */
    uint64_t decoded_bytes;
} expert_pack_result;

/* Adds the package's sections to `w` and sets its metadata; the caller
 * finishes (or aborts) the writer. A package that contradicts itself
 * (invalid JSON, tensors that disagree with adapter_config.json, several base
 * models and no choice) is EXPERT_E_INVALID_ARGUMENT; a malformed
 * safetensors file is EXPERT_E_BAD_SAFETENSORS. `result` may be NULL. */
EXPERT_API expert_status expert_pack(expert_writer *w, const expert_pack_file *files, size_t count,
                          const expert_pack_options *opt, expert_pack_result *result,
                          expert_error *err);

/* ------------------------------------------------------- keys, signing */

/* Ed25519 keys as PEM: PKCS#8 private, SubjectPublicKeyInfo public (RFC 8410). */
EXPERT_API expert_status expert_keygen(const char *private_pem_path, const char *public_pem_path,
                            expert_error *err);
EXPERT_API expert_status expert_private_key_load(const char *pem_path, expert_private_key **out,
                                      expert_error *err);
EXPERT_API expert_status expert_public_key_load(const char *pem_path, expert_public_key **out,
                                     expert_error *err);
EXPERT_API void expert_private_key_free(expert_private_key *k);
EXPERT_API void expert_public_key_free(expert_public_key *k);
/* Signs an existing file in place (atomic rewrite of the 64 signature bytes).
 * Runs structural validation first. */
EXPERT_API expert_status expert_sign_file(const char *path, const expert_private_key *key, expert_error *err);

/* ---------------------------------------------------------- safetensors */

/* A parsed safetensors file (PEFT adapter_model.safetensors). The parser
 * enforces the safetensors rules: 8-byte LE header length N, N <= 100,000,000,
 * 8+N <= size, UTF-8 JSON object without duplicate keys, optional
 * "__metadata__" string->string map, known dtypes, shapes whose element count
 * and byte size do not overflow, data_offsets [begin,end) with
 * end-begin == numel*dtype_size, tensors tiling the buffer exactly when sorted
 * by offset (no gaps, no overlap), and 8+N+last_end == size. Any violation is
 * EXPERT_E_BAD_SAFETENSORS with a message and the offending byte offset. */
typedef struct expert_safetensors expert_safetensors;

typedef struct expert_tensor_info {
    const char *name;              /* NUL-terminated, owned by the parse */
    expert_dtype dtype;            /* mapped to the .expert dtype enum */
    uint32_t rank;                 /* <= EXPERT_MAX_RANK, else BAD_SAFETENSORS */
    uint64_t dims[EXPERT_MAX_RANK];
    uint64_t data_offset;          /* absolute offset in the file */
    uint64_t data_length;
} expert_tensor_info;

/* `data` must outlive the handle (tensor data is not copied). */
EXPERT_API expert_status expert_safetensors_parse(const void *data, size_t size, expert_safetensors **out,
                                       expert_error *err);
/* Header-only parse: `length` >= 8+N bytes of the file's start are given; all
 * rules are checked except the final "8+N+last_end == file size", which the
 * caller checks with expert_safetensors_data_length(). Used to rebuild a
 * safetensors file from a stored SAFETENSORS_HEADER section. */
EXPERT_API expert_status expert_safetensors_parse_header(const void *data, size_t length,
                                              expert_safetensors **out, expert_error *err);
/* Size of the data buffer (the last tensor's end offset, relative to 8+N). */
EXPERT_API uint64_t expert_safetensors_data_length(const expert_safetensors *st);
EXPERT_API void expert_safetensors_free(expert_safetensors *st);
/* Length of the header part, i.e. 8 + N. */
EXPERT_API uint64_t expert_safetensors_header_length(const expert_safetensors *st);
/* Tensors in file (data offset) order. */
EXPERT_API uint32_t expert_safetensors_count(const expert_safetensors *st);
EXPERT_API expert_status expert_safetensors_tensor(const expert_safetensors *st, uint32_t i,
                                        expert_tensor_info *out);

/* PEFT key -> role. For "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"
 * gives module_path "base_model.model.model.layers.7.self_attn.q_proj", layer 7,
 * type EXPERT_SECTION_LORA_A. Recognises lora_A/lora_B (".weight"), DoRA
 * magnitude ("lora_magnitude_vector", "lora_magnitude_vector.weight",
 * "dora_scale"), "ia3_l"; anything else is EXPERT_SECTION_TENSOR with the
 * whole key as module path. layer = EXPERT_LAYER_NONE when the key has no
 * ".layers.<n>." component. module_path is written NUL-terminated into buf. */
typedef struct expert_peft_role {
    uint16_t type;
    uint32_t layer;
    size_t module_path_length;
} expert_peft_role;
EXPERT_API expert_status expert_peft_classify(const char *key, char *module_path_buf, size_t buf_size,
                                   expert_peft_role *out);

/* SHA-256 helper (OpenSSL EVP underneath). */
EXPERT_API expert_status expert_sha256(const void *data, size_t length, uint8_t out[32]);

#ifdef __cplusplus
}
#endif

#include "expert_v1.h" /* v1 tar.gz compatibility (opt-in): reading, conversion, legacy signatures */
#include "expert_adapter.h" /* adapter semantics: fusion of LoRA/DoRA/IA3/OSD */

#endif /* EXPERT_H */
