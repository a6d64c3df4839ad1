/* gen_reject.c — must-reject vectors: one defect each, with the class and
 * level of spec §12 / §15 (check order S1–S16, then access, then full).
 * One file (~1,500 lines): one short function per defect, in the spec's
 * check order, so the vectors and §12 can be read side by side. */
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST "structural"
#define AC "access"
#define FU "full"

static void R(const char *name, const char *desc, xb *b, const char *error, const char *level)
{
    reject_vec(name, desc, b, error, level, NULL);
    xb_free(b);
}

static void RK(const char *name, const char *desc, xb *b, const char *error, const char *level, const char *key)
{
    reject_vec(name, desc, b, error, level, key);
    xb_free(b);
}

/* base B with another metadata text (a raw-block frame) */
static xb meta_b(const char *json)
{
    xb b = base_b();
    xm_model m;
    model_parse(b.p, b.n, &m);
    xb_free(&b);
    model_set_meta_json(&m, json, strlen(json));
    xm_serialize(&m, NULL, &b);
    xm_free(&m);
    return b;
}

/* base B with stored metadata bytes given verbatim */
static xb meta_b_stored(const xb *frame, uint64_t decoded_len)
{
    xb b = base_b();
    xm_model m;
    model_parse(b.p, b.n, &m);
    xb_free(&b);
    xm_set_meta_stored(&m, frame->p, frame->n, decoded_len);
    xm_serialize(&m, NULL, &b);
    xm_free(&m);
    return b;
}

static xb reserialize(const xb *b, void (*edit)(xm_model *, void *), void *ctx, const xm_layout *L)
{
    xm_model m;
    model_parse(b->p, b->n, &m);
    if (edit)
        edit(&m, ctx);
    xb o;
    xm_serialize(&m, L, &o);
    xm_free(&m);
    return o;
}

static xb norm_file(const char *meta, S *s, int n)
{
    F f = {meta, s, n, 64, 0, 0};
    xb b;
    build_norm(&f, &b);
    return b;
}

/* ------------------------------------------------------------ header, S1–S8 */

static void header_vectors(void)
{
    xb b = base_b(), c;

    c = dupb(&b);
    c.p[0] = 'h';
    fix(&c);
    R("magic-wrong-byte", "first magic byte 'h' instead of 'H'", &c, "BAD_MAGIC", ST);
    c = dupb(&b);
    c.p[7] = '2';
    fix(&c);
    R("magic-missing-nul", "magic ends in '2' instead of NUL", &c, "BAD_MAGIC", ST);
    c = (xb){0};
    xb_put(&c, "", 0);
    R("file-empty", "a file of 0 bytes", &c, "BAD_MAGIC", ST);
    c = (xb){0};
    xb_put(&c, "HLLMEXP", 7);
    R("file-7-bytes", "the first 7 magic bytes only: shorter than 8 bytes", &c, "BAD_MAGIC", ST);
    {
        static const uint8_t gz[20] = {0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        c = (xb){0};
        xb_put(&c, gz, sizeof gz);
        R("magic-gzip", "a gzip stream (the v1 tar.gz container), not the v2 magic", &c, "BAD_MAGIC", ST);
    }
    c = (xb){0};
    xb_put(&c, b.p, 255);
    R("file-truncated-in-header", "the first 255 bytes of a valid file: magic present, header incomplete", &c,
      "TRUNCATED", ST);

    c = dupb(&b);
    wr16(c.p + H_MAJOR, 3);
    fix(&c);
    R("version-major-3", "major version 3", &c, "UNSUPPORTED_VERSION", ST);
    c = dupb(&b);
    wr16(c.p + H_MAJOR, 1);
    fix(&c);
    R("version-major-1", "major version 1 with the v2 magic", &c, "UNSUPPORTED_VERSION", ST);
    c = dupb(&b);
    wr16(c.p + H_MAJOR, 0);
    fix(&c);
    R("version-major-0", "major version 0", &c, "UNSUPPORTED_VERSION", ST);

    static const uint32_t bad_hs[3] = {248, 260, 4104};
    static const char *bad_hs_name[3] = {"header-size-248", "header-size-260", "header-size-4104"};
    static const char *bad_hs_desc[3] = {"header_size 248: below 256", "header_size 260: not a multiple of 8",
                                         "header_size 4104: above 4096"};
    for (int i = 0; i < 3; i++) {
        c = dupb(&b);
        wr32(c.p + H_HEADER_SIZE, bad_hs[i]);
        fix(&c);
        R(bad_hs_name[i], bad_hs_desc[i], &c, "BAD_HEADER", ST);
    }

    c = dupb(&b);
    c.n -= 1;
    R("file-truncated-last-byte", "the last byte of a valid file cut off: size < file_length", &c, "TRUNCATED", ST);
    c = dupb(&b);
    c.n = 256;
    R("file-truncated-to-header", "only the 256-byte header of a valid file: S1-S4 pass, size < file_length", &c,
      "TRUNCATED", ST);
    c = dupb(&b);
    c.n = rd64(E(&c, 2) + T_OFFSET) + 5;
    R("file-truncated-mid-section", "a valid file cut 5 bytes into its third section", &c, "TRUNCATED", ST);
    c = dupb(&b);
    xb_u8(&c, 0);
    R("file-trailing-byte", "one zero byte appended: size > file_length", &c, "TRAILING_DATA", ST);
    c = dupb(&b);
    if (c.n >= 4096)
        die("base B is too large for header-size-not-below-file-length");
    wr32(c.p + H_HEADER_SIZE, 4096);
    fix(&c);
    R("header-size-not-below-file-length",
      "header_size 4096 (valid by itself) but the file is shorter: header_size < file_length fails (S6a)", &c,
      "BAD_HEADER", ST);
    c = dupb(&b);
    c.p[0xFF] = 1;
    fix(&c);
    R("header-reserved-nonzero", "the last reserved header byte (0xFF) is 1", &c, "BAD_HEADER", ST);
    static const uint32_t bad_al[3] = {128, 32, 0};
    for (int i = 0; i < 3; i++) {
        c = dupb(&b);
        wr32(c.p + H_ALIGN, bad_al[i]);
        fix(&c);
        R(AS("alignment-%u", bad_al[i]), AS("alignment field %u (only 64, 256, 4096 are valid)", bad_al[i]), &c,
          "BAD_HEADER", ST);
    }
    c = dupb(&b);
    wr32(c.p + H_TOC_ENTRY_SIZE, 64);
    fix(&c);
    R("toc-entry-size-64", "toc_entry_size 64 instead of 128", &c, "BAD_HEADER", ST);
    c = dupb(&b);
    wr32(c.p + H_FLAGS, 1);
    fix(&c);
    R("header-flag-bit-0", "header flag bit 0 (must-understand) set", &c, "UNKNOWN_FLAG", ST);
    c = dupb(&b);
    wr32(c.p + H_FLAGS, 0x8000);
    fix(&c);
    R("header-flag-bit-15", "header flag bit 15 (must-understand) set", &c, "UNKNOWN_FLAG", ST);

    /* S7 */
    c = dupb(&b);
    wr32(c.p + H_TOC_COUNT, 65537);
    fix(&c);
    R("limit-toc-count-65537", "toc_count 65537 in the header (one past the limit)", &c, "LIMIT_EXCEEDED", ST);
    c = dupb(&b);
    wr32(c.p + H_TOC_COUNT, 0xFFFFFFFFu);
    fix(&c);
    R("limit-toc-count-max-u32", "toc_count 0xFFFFFFFF in the header", &c, "LIMIT_EXCEEDED", ST);
    c = dupb(&b);
    wr64(c.p + H_META_LEN, 0);
    fix(&c);
    R("header-metadata-length-0", "metadata_length 0", &c, "BAD_HEADER", ST);
    c = dupb(&b);
    wr64(c.p + H_META_LEN, (1u << 24) + 1);
    fix(&c);
    R("limit-metadata-length-claim", "metadata_length claims 2^24 + 1 bytes", &c, "LIMIT_EXCEEDED", ST);
    c = dupb(&b);
    wr64(c.p + H_META_DEC, 1);
    fix(&c);
    R("header-metadata-decoded-length-1", "metadata_decoded_length 1 (below 2)", &c, "BAD_HEADER", ST);
    c = dupb(&b);
    wr64(c.p + H_META_DEC, (uint64_t)1 << 32);
    fix(&c);
    R("limit-metadata-decoded-length-claim", "metadata_decoded_length claims 2^32 bytes (the frame holds far less)",
      &c, "LIMIT_EXCEEDED", ST);
    {
        size_t n = (1u << 24) + 1;
        char *t = xmalloc(n);
        size_t ml = strlen(META_B);
        memcpy(t, META_B, ml);
        memset(t + ml, ' ', n - ml);
        xm_model m;
        model_parse(b.p, b.n, &m);
        model_set_meta_json(&m, t, n);
        free(t);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        R("limit-metadata-decoded-16mib-plus-1",
          "metadata that really decodes to 2^24 + 1 bytes (JSON + whitespace, RLE blocks)", &c, "LIMIT_EXCEEDED", ST);
    }
    c = dupb(&b);
    wr64(c.p + H_STR_LEN, ((uint64_t)1 << 26) + 1);
    fix(&c);
    R("limit-strings-length-claim", "strings_length claims 2^26 + 1 bytes", &c, "LIMIT_EXCEEDED", ST);
    c = dupb(&b);
    wr64(c.p + H_INDEX_LEN, rd64(c.p + H_INDEX_LEN) + 4);
    fix(&c);
    R("index-length-wrong", "index_length 4 bytes more than 8 + 4 x slot_count(toc_count)", &c, "BAD_INDEX", ST);

    /* S8 */
    c = dupb(&b);
    wr64(c.p + H_META_OFF, (rd64(c.p + H_FILE_LEN) + 7) & ~(uint64_t)7);
    fix(&c);
    R("region-metadata-out-of-bounds", "metadata_offset at the end of the file (the region lies past it)", &c,
      "OUT_OF_BOUNDS", ST);
    c = dupb(&b);
    wr64(c.p + H_META_OFF, 128);
    fix(&c);
    R("region-metadata-inside-header", "metadata_offset 128: inside the header", &c, "OUT_OF_BOUNDS", ST);
    c = dupb(&b);
    wr64(c.p + H_META_OFF, rd64(c.p + H_META_OFF) + 4);
    fix(&c);
    R("region-metadata-misaligned", "metadata_offset moved by 4 bytes: in bounds, not a multiple of 8", &c,
      "MISALIGNED", ST);
    c = dupb(&b);
    wr64(c.p + H_TOC_OFF, UINT64_MAX - 7);
    fix(&c);
    R("region-toc-offset-overflow", "toc_offset 2^64 - 8: offset + 128 x toc_count overflows", &c, "OUT_OF_BOUNDS",
      ST);
    c = dupb(&b);
    wr64(c.p + H_TOC_OFF, rd64(c.p + H_TOC_OFF) + 4);
    fix(&c);
    R("region-toc-misaligned", "toc_offset moved by 4 bytes: in bounds, not a multiple of 8", &c, "MISALIGNED", ST);
    c = dupb(&b);
    wr64(c.p + H_INDEX_OFF, rd64(c.p + H_INDEX_OFF) + 4);
    fix(&c);
    R("region-index-misaligned", "index_offset moved by 4 bytes: in bounds, not a multiple of 8", &c, "MISALIGNED",
      ST);
    c = dupb(&b);
    wr64(c.p + H_STR_LEN, rd64(c.p + H_STR_LEN) + 1);
    fix(&c);
    R("region-strings-out-of-bounds", "strings_length one byte longer than the file allows", &c, "OUT_OF_BOUNDS", ST);
    c = dupb(&b);
    wr64(c.p + H_STR_OFF, UINT64_MAX - 2);
    fix(&c);
    R("region-strings-offset-overflow", "strings_offset 2^64 - 3: offset + length overflows", &c, "OUT_OF_BOUNDS", ST);
    {
        xb e = base_empty();
        c = dupb(&e);
        wr64(c.p + H_TOC_OFF, (rd64(c.p + H_FILE_LEN) + 15) & ~(uint64_t)7);
        fix(&c);
        R("region-empty-toc-past-end", "zero sections: the empty TOC's offset lies past file_length", &c,
          "OUT_OF_BOUNDS", ST);
        c = dupb(&e);
        wr64(c.p + H_TOC_OFF, 260);
        fix(&c);
        R("region-empty-toc-misaligned",
          "zero sections: the empty TOC's offset 260 is in bounds but not a multiple of 8", &c, "MISALIGNED", ST);
        c = dupb(&e);
        wr64(c.p + H_TOC_OFF, 128);
        fix(&c);
        R("region-empty-toc-inside-header", "zero sections: the empty TOC's offset 128 is inside the header", &c,
          "OUT_OF_BOUNDS", ST);
        xb_free(&e);
    }

    /* S9 */
    c = dupb(&b);
    c.p[H_STRUCT_SHA] ^= 1;
    R("structure-hash-wrong", "one bit of structure_sha256 flipped", &c, "STRUCTURE_HASH_MISMATCH", ST);
    c = dupb(&b);
    wr32(E(&c, 4) + T_FLAGS, 0x00010000u); /* valid by itself (must-ignore bit) */
    {
        uint8_t h[32];
        xm_file_sha(c.p, c.n, h);
        memcpy(c.p + H_FILE_SHA, h, 32);
    }
    R("structure-hash-stale-toc", "a TOC flags field changed (to a valid must-ignore bit) without updating structure_sha256",
      &c, "STRUCTURE_HASH_MISMATCH", ST);
    c = dupb(&b);
    c.p[H_FILE_SHA] ^= 1;
    R("structure-hash-covers-file-hash",
      "file_sha256 changed and nothing else: structure_sha256 covers file_sha256, so S9 fails before full validation",
      &c, "STRUCTURE_HASH_MISMATCH", ST);
    {
        xm_model m;
        model_parse(b.p, b.n, &m);
        uint8_t ext[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        xm_set_header_size(&m, 264, ext);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        c.p[260] ^= 0xFF;
        uint8_t h[32];
        xm_file_sha(c.p, c.n, h);
        memcpy(c.p + H_FILE_SHA, h, 32);
        R("structure-hash-stale-header-extension",
          "header_size 264: an extension byte changed after hashing (file_sha256 updated, structure_sha256 not)", &c,
          "STRUCTURE_HASH_MISMATCH", ST);
    }
    c = dupb(&b);
    {
        uint8_t *str = c.p + rd64(c.p + H_STR_OFF);
        str[rd32(E(&c, 4) + T_NAME_OFF)] = 'E'; /* extra.bias -> Extra.bias */
        uint8_t h[32];
        xm_file_sha(c.p, c.n, h);
        memcpy(c.p + H_FILE_SHA, h, 32);
    }
    R("structure-hash-stale-strings", "a byte of the strings region changed without updating structure_sha256", &c,
      "STRUCTURE_HASH_MISMATCH", ST);
    xb_free(&b);
}

/* ------------------------------------------------------------ metadata, S10 and S16 */

static void skippable_then(xb *fr, const char *json)
{
    static const uint8_t skip[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'v', 'e', 'c', 's'};
    xb_put(fr, skip, sizeof skip);
    frame(fr, (const uint8_t *)json, strlen(json), NULL);
}

static void metadata_vectors(void)
{
    const char *J = META_B;
    size_t L = strlen(J);
    xb c, fr;
#define MF(nm, ds, build_frame, declared)                                                                              \
    do {                                                                                                               \
        fr = (xb){0};                                                                                                 \
        build_frame;                                                                                                   \
        c = meta_b_stored(&fr, declared);                                                                              \
        xb_free(&fr);                                                                                                 \
        R(nm, ds, &c, "BAD_METADATA", ST);                                                                             \
    } while (0)
    zf_opts o;
    MF("metadata-frame-bad-magic", "the metadata frame starts 28 B5 2F FE", (frame(&fr, (const uint8_t *)J, L, NULL), fr.p[3] = 0xFE), L);
    MF("metadata-frame-skippable", "a skippable frame before the metadata frame", skippable_then(&fr, J), L);
    o = (zf_opts){.window_log = 17, .no_fcs = 1};
    MF("metadata-frame-no-content-size", "the metadata frame omits Frame_Content_Size", frame(&fr, (const uint8_t *)J, L, &o), L);
    {
        char *J2 = AS("%s ", J); /* one more byte: FCS = L + 1, header says L */
        MF("metadata-frame-content-size-mismatch",
           "a well-formed frame of L + 1 bytes (FCS L + 1) where metadata_decoded_length says L",
           frame(&fr, (const uint8_t *)J2, L + 1, NULL), L);
    }
    o = (zf_opts){.dict_id = 7};
    MF("metadata-frame-dictionary", "the metadata frame has Dictionary_ID 7", frame(&fr, (const uint8_t *)J, L, &o), L);
    o = (zf_opts){.window_log = 28};
    MF("metadata-frame-window-256mib", "the metadata frame declares a 2^28-byte window (limit 2^27)",
       frame(&fr, (const uint8_t *)J, L, &o), L);
    MF("metadata-frame-trailing-byte", "one zero byte after the metadata frame inside metadata_length",
       (frame(&fr, (const uint8_t *)J, L, NULL), xb_u8(&fr, 0)), L);
    MF("metadata-frame-two-frames", "the metadata split over two zstd frames (only one is allowed)",
       (frame(&fr, (const uint8_t *)J, L / 2, NULL), frame(&fr, (const uint8_t *)J + L / 2, L - L / 2, NULL)), L);
    o = (zf_opts){.checksum = 2};
    MF("metadata-frame-bad-checksum", "the metadata frame's content checksum does not match",
       frame(&fr, (const uint8_t *)J, L, &o), L);
    o = (zf_opts){.extra_block_bytes = 5};
    MF("metadata-frame-corrupt-block", "the last raw block declares 5 bytes more than the frame holds",
       frame(&fr, (const uint8_t *)J, L, &o), L);
#undef MF

    struct {
        const char *name, *desc, *json;
    } v[] = {
        {"metadata-json-invalid-utf8", "byte 0xFF inside a JSON string", strrep(J, "\"base\"", "\"ba\xff" "e\"")},
        {"metadata-json-overlong-utf8", "overlong UTF-8 (C0 AF) inside a string", strrep(J, "\"base\"", "\"b\xc0\xaf\"")},
        {"metadata-json-utf8-surrogate", "a UTF-8-encoded surrogate (ED A0 80) inside a string",
         strrep(J, "\"base\"", "\"b\xed\xa0\x80\"")},
        {"metadata-json-bom", "a UTF-8 byte-order mark before the JSON", AS("\xef\xbb\xbf%s", J)},
        {"metadata-json-top-level-array", "the top-level value is an array", AS("[%s]", J)},
        {"metadata-json-top-level-string", "the top-level value is a string", "\"expert-v2\""},
        {"metadata-json-duplicate-key", "member \"name\" twice at the top level",
         strrep(J, "\"name\":\"base\"", "\"name\":\"base\",\"name\":\"other\"")},
        {"metadata-json-duplicate-key-escaped",
         "{\"a\":1,\"\\u0061\":2} inside extra: duplicates after unescaping",
         strrep(J, "\"modules\"", "\"extra\":{\"x\":{\"a\":1,\"\\u0061\":2}},\"modules\"")},
        {"metadata-json-duplicate-key-in-module", "member \"r\" twice in a module object",
         strrep(J, "\"r\":2", "\"r\":2,\"r\":2")},
        {"metadata-json-nan", "NaN as a value in extra", strrep(J, "\"modules\"", "\"extra\":{\"x\":NaN},\"modules\"")},
        {"metadata-json-infinity", "-Infinity as a value in extra",
         strrep(J, "\"modules\"", "\"extra\":{\"x\":-Infinity},\"modules\"")},
        {"metadata-json-number-overflow", "1e999 (rounds to infinity as a binary64) in extra",
         strrep(J, "\"modules\"", "\"extra\":{\"x\":1e999},\"modules\"")},
        {"metadata-json-escaped-nul", "\\u0000 inside the description string",
         strrep(J, "\"modules\"", "\"description\":\"a\\u0000b\",\"modules\"")},
        {"metadata-json-escaped-nul-in-key", "\\u0000 inside a member name in extra",
         strrep(J, "\"modules\"", "\"extra\":{\"a\\u0000\":1},\"modules\"")},
        {"metadata-json-lone-high-surrogate", "an unpaired \\ud800 escape in the description",
         strrep(J, "\"modules\"", "\"description\":\"x\\ud800y\",\"modules\"")},
        {"metadata-json-lone-low-surrogate", "an unpaired \\udc00 escape in the description",
         strrep(J, "\"modules\"", "\"description\":\"\\udc00\",\"modules\"")},
        {"metadata-json-trailing-comma", "a trailing comma in an object", strrep(J, "\"rslora\":false}", "\"rslora\":false,}")},
        {"metadata-json-two-values", "a second JSON value after the object", AS("%s {}", J)},
        {"metadata-json-comment", "a /* comment */ before the object", AS("/* c */%s", J)},
        {"metadata-json-leading-zero", "a number with a leading zero (04) as alpha", strrep(J, "\"alpha\":4", "\"alpha\":04")},
        {"metadata-json-control-char", "a raw TAB character inside a string", strrep(J, "\"base\"", "\"ba\tse\"")},
        {"metadata-json-single-quotes", "a string in single quotes", strrep(J, "\"base\"", "'base'")},
        {"metadata-json-truncated", "the JSON text ends early (last brace missing)", AS("%.*s", (int)L - 1, J)},
        {"metadata-schema-format-wrong", "format \"expert-v1\"", strrep(J, "expert-v2", "expert-v1")},
        {"metadata-schema-format-missing", "no format member", strrep(J, "\"format\":\"expert-v2\",", "")},
        {"metadata-schema-name-missing", "no name member", strrep(J, "\"name\":\"base\",", "")},
        {"metadata-schema-name-empty", "name is the empty string", strrep(J, "\"name\":\"base\"", "\"name\":\"\"")},
        {"metadata-schema-version-number", "version is the number 1", strrep(J, "\"version\":\"1.0.0\"", "\"version\":1")},
        {"metadata-schema-modules-missing", "no modules member",
         "{\"format\":\"expert-v2\",\"name\":\"base\",\"version\":\"1.0.0\",\"adapter_config\":"
         "\"adapter_config.json\"}"},
        {"metadata-schema-modules-object", "modules is an object holding the module",
         "{\"format\":\"expert-v2\",\"name\":\"base\",\"version\":\"1.0.0\",\"adapter_config\":"
         "\"adapter_config.json\",\"modules\":{\"m\":{\"path\":\"model.layers.0.self_attn.q_proj\",\"type\":"
         "\"lora\",\"layer\":0,\"in_features\":8,\"out_features\":6,\"r\":2,\"alpha\":4,\"rslora\":false}}}"},
        {"metadata-schema-module-not-object", "a module entry is a string",
         strrep(J, "\"rslora\":false}]", "\"rslora\":false},\"m\"]")},
        {"metadata-schema-module-type-unknown", "module type \"lokr\"", strrep(J, "\"lora\"", "\"lokr\"")},
        {"metadata-schema-module-path-empty", "module path is empty",
         strrep(J, "\"model.layers.0.self_attn.q_proj\"", "\"\"")},
        {"metadata-schema-module-paths-duplicate", "two modules with the same path (the second an ia3 module)",
         strrep(J, "\"rslora\":false}]",
                "\"rslora\":false},{\"path\":\"model.layers.0.self_attn.q_proj\",\"type\":\"ia3\",\"layer\":0,"
                "\"feedforward\":false}]")},
        {"metadata-schema-layer-65536", "module layer 65536", strrep(J, "\"layer\":0", "\"layer\":65536")},
        {"metadata-schema-layer-negative", "module layer -1", strrep(J, "\"layer\":0", "\"layer\":-1")},
        {"metadata-schema-layer-string", "module layer \"0\"", strrep(J, "\"layer\":0", "\"layer\":\"0\"")},
        {"metadata-schema-layer-missing", "module without layer", strrep(J, "\"layer\":0,", "")},
        {"metadata-schema-r-zero", "r = 0", strrep(J, "\"r\":2", "\"r\":0")},
        {"metadata-schema-r-fraction", "r written 2.0 (a fraction part: not an integer)", strrep(J, "\"r\":2", "\"r\":2.0")},
        {"metadata-schema-r-exponent", "r written 2e0 (an exponent part: not an integer)", strrep(J, "\"r\":2", "\"r\":2e0")},
        {"metadata-schema-r-above-2-53", "r = 9007199254740992 (2^53, above the integer range)",
         strrep(J, "\"r\":2", "\"r\":9007199254740992")},
        {"metadata-schema-alpha-string", "alpha is the string \"4\"", strrep(J, "\"alpha\":4", "\"alpha\":\"4\"")},
        {"metadata-schema-alpha-missing", "lora module without alpha", strrep(J, "\"alpha\":4,", "")},
        {"metadata-schema-rslora-missing", "lora module without rslora", strrep(J, ",\"rslora\":false", "")},
        {"metadata-schema-rslora-number", "rslora is 0 instead of false", strrep(J, "\"rslora\":false", "\"rslora\":0")},
        {"metadata-schema-in-features-zero", "in_features 0", strrep(J, "\"in_features\":8", "\"in_features\":0")},
        {"metadata-schema-base-model-no-name", "base_model without name",
         strrep(J, "\"modules\"", "\"base_model\":{\"sha256\":\"\"},\"modules\"")},
        {"metadata-schema-base-model-string", "base_model is a string",
         strrep(J, "\"modules\"", "\"base_model\":\"Qwen3\",\"modules\"")},
        {"metadata-schema-extra-array", "extra is an array", strrep(J, "\"modules\"", "\"extra\":[],\"modules\"")},
        {"metadata-schema-description-number", "description is a number",
         strrep(J, "\"modules\"", "\"description\":5,\"modules\"")},
        {"metadata-schema-adapter-config-number", "adapter_config is a number",
         strrep(J, "\"adapter_config\":\"adapter_config.json\"", "\"adapter_config\":1")},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        c = meta_b(v[i].json);
        R(v[i].name, v[i].desc, &c, "BAD_METADATA", ST);
    }
    {
        xb j = {0};
        xb_str(&j, "{\"format\":\"expert-v2\",\"name\":\"base\",\"version\":\"1.0.0\",\"adapter_config\":"
                    "\"adapter_config.json\",\"extra\":");
        for (int d = 2; d <= 33; d++)
            xb_str(&j, d % 2 ? "[" : "{\"k\":");
        xb_str(&j, "1");
        for (int d = 33; d >= 2; d--)
            xb_str(&j, d % 2 ? "]" : "}");
        const char *mods = strstr(J, ",\"modules\"");
        xb_str(&j, mods);
        c = meta_b((const char *)j.p);
        xb_free(&j);
        R("metadata-json-depth-33", "metadata nested 33 deep (one past the limit)", &c, "BAD_METADATA", ST);
        j = (xb){0};
        xb_str(&j, "{\"format\":\"expert-v2\",\"name\":\"base\",\"version\":\"1.0.0\",\"extra\":");
        for (int d = 0; d < 100000; d++)
            xb_str(&j, "[");
        for (int d = 0; d < 100000; d++)
            xb_str(&j, "]");
        xb_str(&j, mods);
        c = meta_b((const char *)j.p);
        xb_free(&j);
        R("metadata-json-depth-100000", "arrays nested 100000 deep (a recursive parser must not overflow its stack)",
          &c, "BAD_METADATA", ST);
    }

    /* the schema of other module types */
    {
        S s[1] = {adapter("model.layers.0.mlp.up_proj.ia3_l", EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 0, 2, 6,
                          1, 1100)};
        c = norm_file("{\"format\":\"expert-v2\",\"name\":\"ia3\",\"version\":\"1\",\"modules\":[{\"path\":"
                      "\"model.layers.0.mlp.up_proj\",\"type\":\"ia3\",\"layer\":0}]}",
                      s, 1);
        R("metadata-schema-ia3-feedforward-missing", "ia3 module without feedforward", &c, "BAD_METADATA", ST);
        S o[3] = {
            adapter("o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 4, 1, 1101),
            adapter("o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 1, 0, 1102),
            adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 1, 4, 1103),
        };
        c = norm_file("{\"format\":\"expert-v2\",\"name\":\"osd\",\"version\":\"1\",\"modules\":[{\"path\":\"o\","
                      "\"type\":\"osd\",\"layer\":0,\"rank\":1,\"sparse_format\":\"coo\"}]}",
                      o, 3);
        R("metadata-schema-osd-sparse-format-coo", "osd module with sparse_format \"coo\"", &c, "BAD_METADATA", ST);
        c = norm_file("{\"format\":\"expert-v2\",\"name\":\"osd\",\"version\":\"1\",\"modules\":[{\"path\":\"o\","
                      "\"type\":\"osd\",\"layer\":0,\"sparse_format\":\"csr\"}]}",
                      o, 3);
        R("metadata-schema-osd-rank-missing", "osd module without rank", &c, "BAD_METADATA", ST);
    }

    /* S16: cross-references, checked last */
    c = meta_b(strrep(J, "\"adapter_config\":\"adapter_config.json\"", "\"adapter_config\":\"missing.json\""));
    R("metadata-xref-adapter-config-missing", "adapter_config names a section that does not exist", &c, "BAD_METADATA",
      ST);
    c = meta_b(strrep(J, "\"modules\"", "\"source_manifest\":\"extra.bias\",\"modules\""));
    R("metadata-xref-source-manifest-not-file", "source_manifest names a TENSOR section, not a FILE", &c,
      "BAD_METADATA", ST);
}

/* ------------------------------------------------------------ TOC entries, S11 */

typedef struct rename_ctx {
    uint32_t i;
    const char *name;
    size_t len;
} rename_ctx;

static void do_rename(xm_model *m, void *ctx)
{
    rename_ctx *r = ctx;
    model_rename(m, r->i, r->name, r->len);
}

static xb renamed(const xb *b, uint32_t i, const char *name, size_t len)
{
    rename_ctx r = {i, name, len ? len : strlen(name)};
    return reserialize(b, do_rename, &r, NULL);
}

static void toc_vectors(void)
{
    xb b = base_b(), c;
    /* entry 4 is TENSOR extra.bias F16 [5], raw, 10 bytes */
#define P(nm, ds, code, err)                                                                                           \
    do {                                                                                                               \
        c = dupb(&b);                                                                                                  \
        uint8_t *e = E(&c, 4);                                                                                         \
        (void)e;                                                                                                       \
        code;                                                                                                          \
        fix(&c);                                                                                                       \
        R(nm, ds, &c, err, ST);                                                                                        \
    } while (0)
    P("toc-reserved-byte-11", "TOC reserved byte 11 is 1", e[T_RES1] = 1, "BAD_TOC");
    P("toc-reserved-bytes-28", "TOC reserved bytes 28-31 hold 1", wr32(e + T_RES2, 1), "BAD_TOC");
    P("toc-reserved-bytes-120", "TOC reserved byte 127 is 0x80", e[127] = 0x80, "BAD_TOC");
    P("toc-codec-3", "codec 3", e[T_CODEC] = 3, "UNKNOWN_CODEC");
    P("toc-codec-255", "codec 255", e[T_CODEC] = 255, "UNKNOWN_CODEC");
    P("toc-dtype-14", "dtype 14", e[T_DTYPE] = 14, "UNKNOWN_DTYPE");
    P("toc-dtype-255", "dtype 255", e[T_DTYPE] = 255, "UNKNOWN_DTYPE");
    P("toc-section-type-0", "section type 0x0000", wr16(e + T_TYPE, 0), "UNKNOWN_SECTION_TYPE");
    P("toc-section-type-0003", "section type 0x0003 (unassigned, must-understand range)", wr16(e + T_TYPE, 3),
      "UNKNOWN_SECTION_TYPE");
    P("toc-section-type-7fff", "section type 0x7FFF (last of the must-understand range)", wr16(e + T_TYPE, 0x7FFF),
      "UNKNOWN_SECTION_TYPE");
    P("toc-flag-bit-0", "TOC flag bit 0 (must-understand) set", wr32(e + T_FLAGS, 1), "UNKNOWN_FLAG");
    P("toc-flag-bit-15", "TOC flag bit 15 set next to must-ignore bit 16", wr32(e + T_FLAGS, 0x18000), "UNKNOWN_FLAG");
    P("toc-rank-5", "rank 5", e[T_RANK] = 5, "BAD_TOC");
    P("toc-dims-beyond-rank", "rank 1 with dims[1] = 7", wr64(e + T_DIMS + 8, 7), "BAD_TOC");
    P("limit-section-decoded-length-claim", "decoded_length claims 2^32 + 1 bytes",
      wr64(e + T_DECODED, ((uint64_t)1 << 32) + 1), "LIMIT_EXCEEDED");
    P("toc-numel-mismatch", "shape [6] (12 bytes of F16) for 10 decoded bytes", wr64(e + T_DIMS, 6), "SIZE_MISMATCH");
    P("toc-raw-frame-size-nonzero", "a raw section with frame_size 65536", wr32(e + T_FRAME, 65536), "BAD_TOC");
    P("toc-raw-stored-ne-decoded", "a raw section with stored_length 9, decoded_length 10", wr64(e + T_STORED, 9),
      "SIZE_MISMATCH");
    P("toc-layer-65536", "layer 65536", wr32(e + T_LAYER, 65536), "BAD_TOC");
    P("toc-module-out-of-range", "module 1 where metadata has one module", wr32(e + T_MODULE, 1), "BAD_TOC");
    P("section-out-of-bounds", "the last section's offset moved past the end of the file",
      wr64(e + T_OFFSET, (c.n + 63) & ~(size_t)63), "OUT_OF_BOUNDS");
    P("section-offset-overflow", "section offset 2^64 - 64: offset + stored_length overflows",
      wr64(e + T_OFFSET, UINT64_MAX - 63), "OUT_OF_BOUNDS");
    P("section-inside-header", "a non-empty section at offset 0 (inside the header)", wr64(e + T_OFFSET, 0),
      "OUT_OF_BOUNDS");
    P("name-length-0", "name_length 0", wr16(e + T_NAME_LEN, 0), "BAD_TOC");
    P("name-out-of-bounds", "name_offset + name_length one past strings_length",
      wr32(e + T_NAME_OFF, (uint32_t)(rd64(c.p + H_STR_LEN) - rd16(e + T_NAME_LEN) + 1)), "OUT_OF_BOUNDS");
    P("name-offset-max-u32", "name_offset 0xFFFFFFFF", wr32(e + T_NAME_OFF, 0xFFFFFFFFu), "OUT_OF_BOUNDS");
    /* must-ignore types still get every generic check (spec §6.3) */
    P("must-ignore-type-unknown-codec", "a must-ignore section type (0x8000) with codec 3",
      (wr16(e + T_TYPE, 0x8000), e[T_CODEC] = 3), "UNKNOWN_CODEC");
    P("must-ignore-type-unknown-dtype", "a must-ignore section type (0xFFFF) with dtype 200",
      (wr16(e + T_TYPE, 0xFFFF), e[T_DTYPE] = 200), "UNKNOWN_DTYPE");
    P("must-ignore-type-flag-bit-0", "a must-ignore section type (0x9000) with TOC flag bit 0",
      (wr16(e + T_TYPE, 0x9000), wr32(e + T_FLAGS, 1)), "UNKNOWN_FLAG");
    P("must-ignore-type-layer-65536", "a must-ignore section type (0x8000) with layer 65536",
      (wr16(e + T_TYPE, 0x8000), wr32(e + T_LAYER, 65536)), "BAD_TOC");
    P("must-ignore-type-numel-mismatch", "a must-ignore section type (0x8000) whose shape does not match its length",
      (wr16(e + T_TYPE, 0x8000), wr64(e + T_DIMS, 4)), "SIZE_MISMATCH");
#undef P
    /* FILE entry 2 (adapter_config.json) as rank 2 */
    c = dupb(&b);
    {
        uint8_t *e = E(&c, 3);
        e[T_RANK] = 2;
        wr64(e + T_DIMS + 8, 1);
    }
    fix(&c);
    R("toc-bytes-rank-2", "a BYTES section (FILE docs/README.md) with rank 2, shape [n, 1]", &c, "BAD_TOC", ST);
    {
        /* shape overflow: numel overflows at step 2 although dims[2] = 0 */
        S s[2] = {
            tensor("x", EXPERT_DTYPE_U8, 0, 3, 0, 0, 0, 0, 0),
            tensor("y", EXPERT_DTYPE_U8, 0, 1, 4, 0, 0, 0, 1200),
        };
        xb z = norm_file(META_MIN, s, 2);
        c = dupb(&z);
        wr64(E(&c, 0) + T_DIMS, (uint64_t)1 << 32);
        wr64(E(&c, 0) + T_DIMS + 8, (uint64_t)1 << 32);
        fix(&c);
        R("toc-numel-overflow-before-zero-dim",
          "an empty U8 section of shape [2^32, 2^32, 0]: the product overflows at the second step (spec §5.4)", &c,
          "SIZE_MISMATCH", ST);
        c = dupb(&z);
        E(&c, 0)[T_DTYPE] = EXPERT_DTYPE_F32;
        E(&c, 0)[T_RANK] = 1;
        wr64(E(&c, 0) + T_DIMS, (uint64_t)1 << 62);
        fix(&c);
        R("toc-size-overflow-numel-times-e", "an empty F32 section of shape [2^62]: numel x 4 overflows", &c,
          "SIZE_MISMATCH", ST);
        c = dupb(&z);
        wr64(E(&c, 0) + T_OFFSET, (c.n + 64 + 63) & ~(size_t)63);
        fix(&c);
        R("section-empty-offset-past-end", "an empty section whose offset lies past file_length", &c, "OUT_OF_BOUNDS",
          ST);
        c = dupb(&z);
        wr64(E(&c, 0) + T_OFFSET, 8);
        fix(&c);
        R("layout-empty-section-misaligned",
          "an empty section at offset 8: in bounds, occupies nothing, but not a multiple of the alignment", &c,
          "MISALIGNED", ST);
        xb_free(&z);
    }
    {
        /* frame_size rules on a framed section (base Z, entry 1: small.z) */
        xb z = base_z(1);
        static const uint32_t fs[4] = {98304, 32768, 1u << 27, 0};
        static const char *fsn[4] = {"toc-frame-size-not-power-of-two", "toc-frame-size-32kib",
                                     "toc-frame-size-128mib", "toc-frame-size-0-framed"};
        static const char *fsd[4] = {"a zstd section with frame_size 98304 (not a power of two)",
                                     "a zstd section with frame_size 32768 (below 2^16)",
                                     "a zstd section with frame_size 2^27 (above 2^26)",
                                     "a zstd section with frame_size 0"};
        for (int i = 0; i < 4; i++) {
            c = dupb(&z);
            wr32(E(&c, 1) + T_FRAME, fs[i]);
            fix(&c);
            R(fsn[i], fsd[i], &c, "BAD_TOC", ST);
        }
        xb_free(&z);
    }
    {
        /* total decoded length: 16 claims of 2^32 reach 2^36 exactly; one more byte exceeds it */
        xm_model m;
        xb e0 = base_empty();
        model_parse(e0.p, e0.n, &m);
        xb_free(&e0);
        for (int i = 0; i < 17; i++) {
            uint8_t en[TOC_ENTRY] = {0};
            wr16(en + T_TYPE, EXPERT_SECTION_TENSOR);
            en[T_CODEC] = 1;
            en[T_DTYPE] = EXPERT_DTYPE_U8;
            en[T_RANK] = 1;
            wr32(en + T_LAYER, EXPERT_LAYER_NONE);
            wr32(en + T_MODULE, EXPERT_MODULE_NONE);
            wr32(en + T_FRAME, 1u << 26);
            uint64_t dl = i < 16 ? (uint64_t)1 << 32 : 1;
            wr64(en + T_DECODED, dl);
            wr64(en + T_DIMS, dl);
            static const uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
            xm_add_section(&m, en, AS("claim.%02d", i), junk, 8);
        }
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        R("limit-total-decoded-length",
          "17 zstd sections claiming 16 x 2^32 + 1 decoded bytes: the running total passes 2^36 at entry 16", &c,
          "LIMIT_EXCEEDED", ST);
    }

    /* names (entry 4: TENSOR extra.bias, no path rules) */
    struct {
        const char *name, *desc, *bytes;
        size_t len;
        const char *err;
    } nv[] = {
        {"name-invalid-utf8", "a name containing byte 0xFF", "extra\xff" "bias", 10, "BAD_TOC"},
        {"name-overlong-utf8", "a name with an overlong encoding of '/' (C0 AF)", "extra\xc0\xaf" "bias", 11, "BAD_TOC"},
        {"name-utf8-surrogate", "a name with an encoded surrogate U+D800 (ED A0 80)", "extra\xed\xa0\x80", 8, "BAD_TOC"},
        {"name-utf8-above-10ffff", "a name with code point U+110000 (F4 90 80 80)", "x\xf4\x90\x80\x80", 5, "BAD_TOC"},
        {"name-utf8-truncated", "a name ending in a truncated sequence (E2 82)", "euro\xe2\x82", 6, "BAD_TOC"},
        {"name-utf8-lone-continuation", "a name with a lone continuation byte (0x80)", "a\x80z", 3, "BAD_TOC"},
        {"name-contains-nul", "a name containing a NUL byte", "extra\0bias", 10, "BAD_TOC"},
    };
    for (size_t i = 0; i < sizeof nv / sizeof nv[0]; i++) {
        c = renamed(&b, 4, nv[i].bytes, nv[i].len);
        R(nv[i].name, nv[i].desc, &c, nv[i].err, ST);
    }
    {
        char *n1025 = A(1026);
        for (int i = 0; i < 1025; i++)
            n1025[i] = (char)('a' + i % 26);
        c = renamed(&b, 4, n1025, 1025);
        R("limit-name-length-1025", "a name of 1025 bytes (one past the limit)", &c, "BAD_TOC", ST);
    }

    /* per-type rules, S11j (entry 3 is FILE docs/README.md) */
    struct {
        const char *name, *desc, *path;
    } pv[] = {
        {"type-file-absolute-path", "FILE named /etc/passwd (absolute path)", "/etc/passwd"},
        {"type-file-backslash", "FILE named docs\\README.md (backslash)", "docs\\README.md"},
        {"type-file-dotdot", "FILE named ../README.md", "../README.md"},
        {"type-file-dotdot-inside", "FILE named docs/../../README.md", "docs/../../README.md"},
        {"type-file-dot-component", "FILE named docs/./README.md", "docs/./README.md"},
        {"type-file-empty-component", "FILE named docs//README.md", "docs//README.md"},
        {"type-file-trailing-slash", "FILE named docs/ (empty last component)", "docs/"},
        {"type-file-dot", "FILE named .", "."},
    };
    for (size_t i = 0; i < sizeof pv / sizeof pv[0]; i++) {
        c = renamed(&b, 3, pv[i].path, 0);
        R(pv[i].name, pv[i].desc, &c, "BAD_TOC", ST);
    }
#define PT(nm, ds, idx, code)                                                                                          \
    do {                                                                                                               \
        c = dupb(&b);                                                                                                  \
        uint8_t *e = E(&c, idx);                                                                                       \
        code;                                                                                                          \
        fix(&c);                                                                                                       \
        R(nm, ds, &c, "BAD_TOC", ST);                                                                                  \
    } while (0)
    PT("type-file-dtype-u8", "FILE section with dtype U8", 3, e[T_DTYPE] = EXPERT_DTYPE_U8);
    PT("type-lora-a-rank-1", "LORA_A [16] (rank 1)", 0, (e[T_RANK] = 1, wr64(e + T_DIMS, 16), wr64(e + T_DIMS + 8, 0)));
    PT("type-lora-b-dtype-i32", "LORA_B with dtype I32 (not a float dtype)", 1, e[T_DTYPE] = EXPERT_DTYPE_I32);
    PT("type-tensor-bytes", "TENSOR with dtype BYTES", 4,
       (e[T_DTYPE] = EXPERT_DTYPE_BYTES, wr64(e + T_DIMS, 10)));
    PT("type-adapter-module-none", "LORA_A with module NONE", 0, wr32(e + T_MODULE, EXPERT_MODULE_NONE));
    PT("type-adapter-layer-mismatch", "LORA_A with layer 1 while its module has layer 0", 0, wr32(e + T_LAYER, 1));
    PT("type-adapter-layer-none", "LORA_A with layer NONE while its module has layer 0", 0,
       wr32(e + T_LAYER, EXPERT_LAYER_NONE));
    PT("type-soft-prompt-rank-3", "SOFT_PROMPT of rank 3 (entry extra.bias retyped, shape [1, 1, 5])", 4,
       (wr16(e + T_TYPE, EXPERT_SECTION_SOFT_PROMPT), e[T_RANK] = 3, wr64(e + T_DIMS, 1), wr64(e + T_DIMS + 8, 1),
        wr64(e + T_DIMS + 16, 5)));
#undef PT
    xb_free(&b);

    /* per-type rules needing other modules */
    {
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"types\",\"version\":\"1\",\"modules\":["
                           "{\"path\":\"d\",\"type\":\"dora\",\"layer\":0,\"r\":2,\"alpha\":2,\"rslora\":false},"
                           "{\"path\":\"i\",\"type\":\"ia3\",\"layer\":0,\"feedforward\":false},"
                           "{\"path\":\"o\",\"type\":\"osd\",\"layer\":0,\"rank\":1,\"sparse_format\":\"csr\"}]}";
        static const int32_t ip[5] = {0, 1, 1, 2, 2};
        static const int32_t ix[2] = {0, 3};
        uint8_t *ipb = A(20), *ixb = A(8);
        for (int i = 0; i < 5; i++)
            wr32(ipb + 4 * i, (uint32_t)ip[i]);
        for (int i = 0; i < 2; i++)
            wr32(ixb + 4 * i, (uint32_t)ix[i]);
        uint64_t d5 = 5, d2 = 2;
        S s[11] = {
            adapter("d.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 2, 4, 1300),
            adapter("d.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 4, 2, 1301),
            adapter("d.lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, EXPERT_DTYPE_F32, 0, 0, 2, 1, 4, 1302),
            adapter("i.ia3_l", EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 1, 2, 4, 1, 1303),
            adapter("o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 2, 2, 4, 1, 1304),
            adapter("o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 2, 1, 1, 0, 1305),
            adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 2, 2, 1, 4, 1306),
            raw_sec("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1, &d5, ipb, 20),
            raw_sec("o.osd_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 1, &d2, ixb, 8),
            adapter("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 2, 1, 2, 0, 1307),
            bytes_sec("adapter_model.safetensors", EXPERT_SECTION_SAFETENSORS_HEADER,
                      "\x08\0\0\0\0\0\0\0{}      ", 16),
        };
        for (int i = 7; i < 9; i++) {
            s[i].layer = 0;
            s[i].module = 2;
        }
        xb t = norm_file(meta, s, 11);
        accept_vec("adapter-types-base", "DoRA ([1, out] magnitude), IA3, OSD with CSR, SAFETENSORS_HEADER: the base "
                                         "of the type-* reject vectors",
                   &t, NULL);
#define PT(nm, ds, idx, code)                                                                                          \
    do {                                                                                                               \
        c = dupb(&t);                                                                                                  \
        uint8_t *e = E(&c, idx);                                                                                       \
        code;                                                                                                          \
        fix(&c);                                                                                                       \
        R(nm, ds, &c, "BAD_TOC", ST);                                                                                  \
    } while (0)
        PT("type-dora-magnitude-rank-2-dim0-not-1", "DORA_MAGNITUDE [2, 2] (rank 2 needs dims[0] = 1)", 2,
           (wr64(e + T_DIMS, 2), wr64(e + T_DIMS + 8, 2)));
        PT("type-dora-magnitude-rank-3", "DORA_MAGNITUDE [1, 1, 4]", 2,
           (e[T_RANK] = 3, wr64(e + T_DIMS, 1), wr64(e + T_DIMS + 8, 1), wr64(e + T_DIMS + 16, 4)));
        PT("type-ia3-rank-1", "IA3_VECTOR [4] (rank 1)", 3, (e[T_RANK] = 1, wr64(e + T_DIMS + 8, 0)));
        PT("type-ia3-no-unit-dim", "IA3_VECTOR [2, 2] (neither dimension is 1)", 3,
           (wr64(e + T_DIMS, 2), wr64(e + T_DIMS + 8, 2)));
        PT("type-osd-s-rank-2", "OSD_S [1, 1] (rank 2)", 5, (e[T_RANK] = 2, wr64(e + T_DIMS + 8, 1)));
        PT("type-osd-u-rank-1", "OSD_U [4] (rank 1)", 4, (e[T_RANK] = 1, wr64(e + T_DIMS + 8, 0)));
        PT("type-osd-indptr-dtype-f32", "OSD_SPARSE_INDPTR with dtype F32", 7, e[T_DTYPE] = EXPERT_DTYPE_F32);
        PT("type-osd-indptr-dtype-u32", "OSD_SPARSE_INDPTR with dtype U32", 7, e[T_DTYPE] = EXPERT_DTYPE_U32);
        PT("type-osd-indices-rank-2", "OSD_SPARSE_INDICES [1, 2] (rank 2)", 8,
           (e[T_RANK] = 2, wr64(e + T_DIMS, 1), wr64(e + T_DIMS + 8, 2)));
        PT("type-osd-values-dtype-i32", "OSD_SPARSE_VALUES with dtype I32", 9, e[T_DTYPE] = EXPERT_DTYPE_I32);
        PT("type-module-type-mismatch", "a LORA_A section owned by the ia3 module", 0, wr32(e + T_MODULE, 1));
        PT("type-module-type-mismatch-osd-in-dora", "an OSD_S section owned by the dora module", 5,
           wr32(e + T_MODULE, 0));
        PT("type-safetensors-header-dtype-u8", "SAFETENSORS_HEADER with dtype U8", 10, e[T_DTYPE] = EXPERT_DTYPE_U8);
#undef PT
        c = renamed(&t, 10, "../adapter_model.safetensors", 0);
        R("type-safetensors-header-unsafe-path", "SAFETENSORS_HEADER named ../adapter_model.safetensors", &c,
          "BAD_TOC", ST);
        {
            xm_model m;
            model_parse(t.p, t.n, &m);
            uint8_t en[TOC_ENTRY];
            memcpy(en, m.sec[10].entry, TOC_ENTRY);
            xm_add_section(&m, en, "second.safetensors", "\x08\0\0\0\0\0\0\0{}      ", 16);
            xm_serialize(&m, NULL, &c);
            xm_free(&m);
            R("type-safetensors-header-twice", "a second SAFETENSORS_HEADER section (reported on the second)", &c,
              "BAD_TOC", ST);
        }
        xb_free(&t);
    }
}

/* ------------------------------------------------------------ names, index, layout: S12–S14 */

static void layout_vectors(void)
{
    xb b = base_b(), c;
    c = renamed(&b, 3, "extra.bias", 0);
    R("name-duplicate", "FILE docs/README.md renamed extra.bias, the name of TENSOR entry 4", &c, "DUPLICATE_NAME", ST);
    {
        xm_model m;
        model_parse(b.p, b.n, &m);
        uint8_t en[TOC_ENTRY];
        memcpy(en, m.sec[4].entry, TOC_ENTRY);
        wr16(en + T_TYPE, 0x8000);
        xm_add_section(&m, en, "model.layers.0.self_attn.q_proj.lora_A.weight", m.sec[4].data, m.sec[4].len);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        R("name-duplicate-must-ignore-type", "a must-ignore section (0x8000) with the name of the LORA_A section", &c,
          "DUPLICATE_NAME", ST);
    }

    /* S13: the stored index differs from the canonical one */
    {
        c = dupb(&b);
        uint8_t *ix = c.p + rd64(c.p + H_INDEX_OFF);
        uint32_t sc = rd32(ix);
        uint32_t occ = 0, emp = 0;
        for (uint32_t k = 0; k < sc; k++)
            if (rd32(ix + 8 + 4 * k) != 0) {
                occ = k;
                break;
            }
        for (uint32_t k = 0; k < sc; k++)
            if (rd32(ix + 8 + 4 * k) == 0) {
                emp = k;
                break;
            }
        uint32_t v = rd32(ix + 8 + 4 * occ);
        wr32(ix + 8 + 4 * occ, 0);
        wr32(ix + 8 + 4 * emp, v);
        fix(&c);
        R("index-slot-moved", "an index entry moved to an empty slot where a lookup would not find it", &c,
          "BAD_INDEX", ST);
        c = dupb(&b);
        ix = c.p + rd64(c.p + H_INDEX_OFF);
        wr32(ix, 8);
        fix(&c);
        R("index-slot-count-wrong", "slot_count field 8 where toc_count 5 needs 16 (index_length is right)", &c,
          "BAD_INDEX", ST);
        c = dupb(&b);
        ix = c.p + rd64(c.p + H_INDEX_OFF);
        wr32(ix + 4, 1);
        fix(&c);
        R("index-reserved-nonzero", "the index's reserved field is 1", &c, "BAD_INDEX", ST);
        c = dupb(&b);
        ix = c.p + rd64(c.p + H_INDEX_OFF);
        for (uint32_t k = 0; k < sc; k++)
            if (rd32(ix + 8 + 4 * k) == 0) {
                wr32(ix + 8 + 4 * k, 6);
                break;
            }
        fix(&c);
        R("index-slot-past-toc", "an empty slot holds 6 (TOC index 5 of 5 entries)", &c, "BAD_INDEX", ST);
    }
    {
        /* two names in the same slot: the stored index has them in the other probe order */
        char n1[16] = "", n2[16] = "";
        int found = 0;
        for (int i = 0; i < 1000 && !found; i++)
            for (int j = i + 1; j < 1000 && !found; j++) {
                char a[16], bb[16];
                snprintf(a, sizeof a, "t%d", i);
                snprintf(bb, sizeof bb, "t%d", j);
                if ((fnv1a64(a, strlen(a)) & 7) == (fnv1a64(bb, strlen(bb)) & 7)) {
                    strcpy(n1, a);
                    strcpy(n2, bb);
                    found = 1;
                }
            }
        S s[2] = {tensor(n1, EXPERT_DTYPE_U8, 0, 1, 1, 0, 0, 0, 1400), tensor(n2, EXPERT_DTYPE_U8, 0, 1, 1, 0, 0, 0, 1401)};
        xb z = norm_file(META_MIN, s, 2);
        c = dupb(&z);
        uint8_t *ix = c.p + rd64(c.p + H_INDEX_OFF);
        uint32_t p = (uint32_t)(fnv1a64(n1, strlen(n1)) & 7);
        if (rd32(ix + 8 + 4 * p) != 1 || rd32(ix + 8 + 4 * ((p + 1) & 7)) != 2)
            die("index-probe-order: unexpected layout");
        wr32(ix + 8 + 4 * p, 2);
        wr32(ix + 8 + 4 * ((p + 1) & 7), 1);
        fix(&c);
        R("index-probe-order-swapped",
          AS("names \"%s\" and \"%s\" share a home slot; the stored index has them in the wrong probe order (lookups "
             "still work, but it is not canonical)",
             n1, n2),
          &c, "BAD_INDEX", ST);
        xb_free(&z);
    }

    /* S14 */
    c = dupb(&b);
    wr64(E(&c, 4) + T_OFFSET, rd64(c.p + H_META_OFF));
    fix(&c);
    R("layout-section-overlaps-metadata", "the last section's offset set to metadata_offset (the extents overlap)", &c,
      "OVERLAP", ST);
    {
        S s[3] = {
            tensor("alias.a", EXPERT_DTYPE_U8, 0, 1, 64, 0, 0, 0, 1500),
            tensor("alias.b", EXPERT_DTYPE_U8, 0, 1, 64, 0, 0, 0, 1500),
            tensor("z", EXPERT_DTYPE_U8, 0, 1, 3, 0, 0, 0, 1501),
        };
        xb z = norm_file(META_MIN, s, 3);
        c = dupb(&z);
        uint64_t o1 = rd64(E(&c, 1) + T_OFFSET);
        memset(c.p + o1, 0, 64);
        wr64(E(&c, 1) + T_OFFSET, rd64(E(&c, 0) + T_OFFSET));
        fix(&c);
        R("layout-sections-alias",
          "two sections with identical content at the same offset (aliasing; both digests are valid)", &c, "OVERLAP",
          ST);
        xb_free(&z);
    }
    {
        /* a FILE whose bytes are the metadata frame: the metadata region can point at it and stay valid */
        xb fr = {0};
        frame(&fr, (const uint8_t *)META_MIN, strlen(META_MIN), NULL);
        S s[2] = {bytes_sec("meta.zst", EXPERT_SECTION_FILE, fr.p, fr.n),
                  tensor("z", EXPERT_DTYPE_U8, 0, 1, 3, 0, 0, 0, 1502)};
        xb z = norm_file(META_MIN, s, 2);
        xb_free(&fr);
        c = dupb(&z);
        wr64(c.p + H_META_OFF, rd64(E(&c, 0) + T_OFFSET));
        fix(&c);
        R("layout-metadata-aliases-section",
          "metadata_offset points at a FILE section holding the same metadata frame: the region overlaps the section",
          &c, "OVERLAP", ST);
        xb_free(&z);
    }
    {
        c = dupb(&b);
        uint8_t *e = E(&c, 4);
        uint64_t off = rd64(e + T_OFFSET);
        if (off + 4 + 10 > rd64(c.p + H_META_OFF))
            die("layout-section-misaligned: no room");
        memmove(c.p + off + 4, c.p + off, 10);
        memset(c.p + off, 0, 4);
        wr64(e + T_OFFSET, off + 4);
        fix(&c);
        R("layout-section-misaligned",
          "the last section moved 4 bytes (with its data): in bounds, no overlap, not a multiple of 64", &c,
          "MISALIGNED", ST);
    }
    {
        xm_layout L = {0};
        L.ngap_sec = 1;
        L.gap_sec_at[0] = 1;
        L.gap_sec[0] = 64;
        c = reserialize(&b, NULL, NULL, &L);
        R("layout-gap-before-section", "64 zero bytes of padding before a section (the gap must be < 64)", &c,
          "BAD_PADDING", ST);
        L.gap_sec_at[0] = 0;
        c = reserialize(&b, NULL, NULL, &L);
        R("layout-gap-before-first-section", "the first section at offset 320: a 64-byte gap after the header", &c,
          "BAD_PADDING", ST);
    }
    {
        xm_layout L = {0};
        L.gap_toc = 8;
        c = reserialize(&b, NULL, NULL, &L);
        R("layout-gap-before-toc", "8 zero bytes between the metadata and the TOC (the gap must be < 8)", &c,
          "BAD_PADDING", ST);
        L = (xm_layout){0};
        L.gap_strings = 8;
        c = reserialize(&b, NULL, NULL, &L);
        R("layout-gap-before-strings", "8 zero bytes between the index and the strings (the gap must be < 8)", &c,
          "BAD_PADDING", ST);
    }
    {
        c = dupb(&b);
        xb_zero(&c, 8);
        wr64(c.p + H_FILE_LEN, c.n);
        fix(&c);
        R("layout-trailing-zeros", "8 zero bytes after the last extent, counted in file_length", &c, "TRAILING_DATA",
          ST);
    }
    xb_free(&b);
}

/* ------------------------------------------------------------ module composition, S15 */

static void module_vectors(void)
{
    xb b = base_b(), c;
    c = dupb(&b);
    wr16(E(&c, 1) + T_TYPE, EXPERT_SECTION_TENSOR);
    fix(&c);
    R("module-lora-missing-b", "the LORA_B section retyped TENSOR (keeping its module index): the module lacks LORA_B",
      &c, "BAD_TOC", ST);
    c = dupb(&b);
    wr16(E(&c, 1) + T_TYPE, EXPERT_SECTION_LORA_A);
    fix(&c);
    R("module-lora-two-a", "the LORA_B section retyped LORA_A: two LORA_A, no LORA_B", &c, "BAD_TOC", ST);
    c = dupb(&b);
    wr64(E(&c, 1) + T_DIMS, 4);
    wr64(E(&c, 1) + T_DIMS + 8, 3);
    fix(&c);
    R("module-lora-inner-dim-mismatch", "LORA_A [2, 8] with LORA_B [4, 3]: B's r is 3", &c, "BAD_TOC", ST);
    c = meta_b(strrep(META_B, "\"r\":2", "\"r\":3"));
    R("module-lora-r-mismatch", "metadata r = 3, tensors have r = 2", &c, "BAD_TOC", ST);
    c = meta_b(strrep(META_B, "\"in_features\":8", "\"in_features\":9"));
    R("module-lora-in-features-mismatch", "in_features 9, LORA_A has 8 columns", &c, "BAD_TOC", ST);
    c = meta_b(strrep(META_B, "\"out_features\":6", "\"out_features\":2"));
    R("module-lora-out-features-mismatch", "out_features 2, LORA_B has 6 rows", &c, "BAD_TOC", ST);
    c = meta_b(strrep(META_B, "\"rslora\":false}]",
                      "\"rslora\":false},{\"path\":\"unused\",\"type\":\"ia3\",\"layer\":null,\"feedforward\":true}]"));
    R("module-without-sections", "a declared ia3 module that owns no section", &c, "BAD_TOC", ST);
    xb_free(&b);

    const char *dora = "{\"format\":\"expert-v2\",\"name\":\"dora\",\"version\":\"1\",\"modules\":[{\"path\":\"d\","
                       "\"type\":\"dora\",\"layer\":0,\"r\":2,\"alpha\":2,\"rslora\":false}]}";
    {
        S s[3] = {
            adapter("d.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 2, 4, 1600),
            adapter("d.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 5, 2, 1601),
            adapter("d.lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, EXPERT_DTYPE_F32, 0, 0, 1, 4, 0, 1602),
        };
        c = norm_file(dora, s, 3);
        R("module-dora-magnitude-length", "DORA_MAGNITUDE of 4 elements where LORA_B has out = 5", &c, "BAD_TOC", ST);
        c = norm_file(dora, s, 2);
        R("module-dora-missing-magnitude", "a dora module with LORA_A and LORA_B only", &c, "BAD_TOC", ST);
    }
    {
        const char *ia3 = "{\"format\":\"expert-v2\",\"name\":\"ia3\",\"version\":\"1\",\"modules\":[{\"path\":\"i\","
                          "\"type\":\"ia3\",\"layer\":0,\"feedforward\":true}]}";
        S s[1] = {adapter("i.ia3_l", EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 0, 2, 6, 1, 1610)};
        c = norm_file(ia3, s, 1);
        R("module-ia3-orientation", "feedforward true with an [out, 1] = [6, 1] vector (needs [1, in])", &c, "BAD_TOC",
          ST);
        c = norm_file(strrep(ia3, "\"feedforward\":true", "\"feedforward\":false,\"out_features\":7"), s, 1);
        R("module-ia3-out-features-mismatch", "feedforward false, vector [6, 1], out_features 7", &c, "BAD_TOC", ST);
    }
    {
        const char *osd = "{\"format\":\"expert-v2\",\"name\":\"osd\",\"version\":\"1\",\"modules\":[{\"path\":\"o\","
                          "\"type\":\"osd\",\"layer\":0,\"rank\":2,\"sparse_format\":\"csr\"}]}";
        static const int32_t ip[5] = {0, 1, 1, 2, 2}, ix[2] = {0, 3};
        uint8_t *ipb = A(24), *ixb = A(8);
        for (int i = 0; i < 5; i++)
            wr32(ipb + 4 * i, (uint32_t)ip[i]);
        for (int i = 0; i < 2; i++)
            wr32(ixb + 4 * i, (uint32_t)ix[i]);
        uint64_t d5 = 5, d6 = 6, d2 = 2;
        S s[6] = {
            adapter("o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 4, 2, 1620),
            adapter("o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 2, 0, 1621),
            adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 2, 4, 1622),
            raw_sec("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1, &d5, ipb, 20),
            raw_sec("o.osd_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 1, &d2, ixb, 8),
            adapter("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 0, 1, 2, 0, 1623),
        };
        for (int i = 3; i < 5; i++) {
            s[i].layer = 0;
            s[i].module = 0;
        }
        c = norm_file(osd, s, 5);
        R("module-osd-partial-sparse", "an osd module with INDPTR and INDICES but no VALUES", &c, "BAD_TOC", ST);
        c = norm_file(strrep(osd, "\"rank\":2", "\"rank\":3"), s, 6);
        R("module-osd-rank-mismatch", "metadata rank 3, U/S/Vt have k = 2", &c, "BAD_TOC", ST);
        S t[6];
        memcpy(t, s, sizeof t);
        t[5] = adapter("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 0, 1, 3, 0, 1624);
        c = norm_file(osd, t, 6);
        R("module-osd-nnz-mismatch", "OSD_SPARSE_INDICES [2] with OSD_SPARSE_VALUES [3]", &c, "BAD_TOC", ST);
        memcpy(t, s, sizeof t);
        wr32(ipb + 20, 2);
        t[3] = raw_sec("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1, &d6, ipb, 24);
        t[3].layer = 0;
        t[3].module = 0;
        c = norm_file(osd, t, 6);
        R("module-osd-indptr-length", "OSD_SPARSE_INDPTR [6] where out = 4 needs [5]", &c, "BAD_TOC", ST);
        memcpy(t, s, sizeof t);
        t[2] = adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 1, 8, 1625);
        c = norm_file(osd, t, 6);
        R("module-osd-vt-k-mismatch", "OSD_U [4, 2], OSD_S [2], OSD_Vt [1, 8]", &c, "BAD_TOC", ST);
        memcpy(t, s, sizeof t);
        t[5].module = EXPERT_MODULE_NONE;
        t[5].type = EXPERT_SECTION_TENSOR;
        t[5].layer = EXPERT_LAYER_NONE;
        {
            /* the values exist, but as a TENSOR of no module */
            c = norm_file(osd, t, 6);
            R("module-osd-values-not-owned", "the CSR values stored as a TENSOR without module", &c, "BAD_TOC", ST);
        }
    }
}

/* ------------------------------------------------------------ access level */

static const uint8_t *g_plain;
static void m_magic(xb *f, int i)
{
    (void)i;
    f->p[0] = 0x29;
}
static void m_skippable(xb *f, int i)
{
    (void)i;
    xb n = {0};
    static const uint8_t skip[12] = {0x5E, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 0, 0, 0, 0};
    xb_put(&n, skip, sizeof skip);
    xb_put(&n, f->p, f->n);
    xb_free(f);
    *f = n;
}
static void m_trailing(xb *f, int i)
{
    (void)i;
    xb_u8(f, 0);
}
extern const uint8_t *g_chunk;
extern size_t g_chunk_len;
static void m_two_frames(xb *f, int i)
{
    (void)i;
    xb n = {0};
    frame(&n, g_chunk, g_chunk_len / 2, NULL);
    frame(&n, g_chunk + g_chunk_len / 2, g_chunk_len - g_chunk_len / 2, NULL);
    xb_free(f);
    *f = n;
}
static void m_longer(xb *f, int i)
{
    (void)i;
    uint8_t *t = xmalloc(g_chunk_len + 4);
    memcpy(t, g_chunk, g_chunk_len);
    memset(t + g_chunk_len, 0x11, 4);
    xb n = {0};
    frame(&n, t, g_chunk_len + 4, NULL);
    free(t);
    xb_free(f);
    *f = n;
}
static void m_full_size(xb *f, int i)
{
    (void)i;
    uint8_t *t = xcalloc(1, 65536);
    memcpy(t, g_chunk, g_chunk_len);
    xb n = {0};
    frame(&n, t, 65536, NULL);
    free(t);
    xb_free(f);
    *f = n;
}
static void m_empty(xb *f, int i)
{
    (void)i;
    f->n = 0;
}

static xb z_frame_defect(int codec, int frame, const zf_opts *o, void (*mangle)(xb *, int))
{
    xb b = base_z(codec);
    xm_model m;
    model_parse(b.p, b.n, &m);
    xb_free(&b);
    uint8_t *data = mkdata(EXPERT_DTYPE_F32, 20000, 201);
    g_plain = data;
    xb st = {0};
    framed(&st, data, 80000, 65536, 4, codec == 2, frame, o, mangle);
    xm_set_section(&m, 0, st.p, st.n);
    xb_free(&st);
    xm_serialize(&m, NULL, &b);
    xm_free(&m);
    return b;
}

static void access_vectors(void)
{
    xb b = base_b(), c;
    c = dupb(&b);
    c.p[rd64(E(&c, 0) + T_OFFSET) + 5] ^= 0x40;
    fix(&c);
    R("section-hash-data-changed", "one bit of a raw LORA_A section changed (file hashes updated)", &c,
      "SECTION_HASH_MISMATCH", AC);
    c = dupb(&b);
    E(&c, 4)[T_SHA + 31] ^= 1;
    fix(&c);
    R("section-hash-toc-digest-wrong", "the TOC sha256 of the last section has one bit flipped", &c,
      "SECTION_HASH_MISMATCH", AC);
    c = dupb(&b);
    wr16(E(&c, 4) + T_TYPE, 0x8000);
    E(&c, 4)[T_SHA] ^= 1;
    fix(&c);
    R("section-hash-must-ignore-type", "a must-ignore section (0x8000) whose content does not match its digest", &c,
      "SECTION_HASH_MISMATCH", AC);
    xb_free(&b);
    {
        S s[2] = {
            tensor("empty", EXPERT_DTYPE_F32, 0, 1, 0, 0, 0, 0, 0),
            tensor("x", EXPERT_DTYPE_F32, 0, 1, 3, 0, 0, 0, 1700),
        };
        xb z = norm_file(META_MIN, s, 2);
        c = dupb(&z);
        memset(E(&c, 0) + T_SHA, 0, 32);
        fix(&c);
        R("section-hash-empty-section", "an empty section whose digest is all zero instead of SHA-256(\"\")", &c,
          "SECTION_HASH_MISMATCH", AC);
        xb_free(&z);
    }
    for (int codec = 1; codec <= 2; codec++) {
        const char *cn = codec == 1 ? "zstd" : "shuffle";
        xb z = base_z(codec);
        c = dupb(&z);
        E(&c, 0)[T_SHA + 7] ^= 0x10;
        fix(&c);
        R(AS("section-hash-%s", cn), AS("a %s section that decodes cleanly but not to its TOC digest", cn), &c,
          "SECTION_HASH_MISMATCH", AC);
        xb_free(&z);
    }

    /* frame table, SIZE_MISMATCH */
    {
        xb z = base_z(1);
        xm_model m;
        model_parse(z.p, z.n, &m);
        uint8_t four[4];
        wr32(four, 7);
        xm_set_section(&m, 0, four, 4);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        R("frame-table-short", "a 2-frame section whose stored bytes are 4 (less than the 8-byte frame table)", &c,
          "SIZE_MISMATCH", AC);
        c = dupb(&z);
        uint8_t *sec = c.p + rd64(E(&c, 0) + T_OFFSET);
        wr32(sec, rd32(sec) + 1);
        fix(&c);
        R("frame-table-sum-mismatch", "c_0 one larger: 4n + sum(c_i) exceeds stored_length by 1", &c, "SIZE_MISMATCH",
          AC);
        c = dupb(&z);
        sec = c.p + rd64(E(&c, 0) + T_OFFSET);
        wr32(sec + 4, 0xFFFFFFFFu);
        fix(&c);
        R("frame-table-huge-entry", "c_1 = 0xFFFFFFFF", &c, "SIZE_MISMATCH", AC);
        xb_free(&z);
        /* an empty framed section with 4 stored bytes */
        S s[2] = {tensor("e", EXPERT_DTYPE_F32, 1, 1, 0, 0, 0, 0, 0), tensor("x", EXPERT_DTYPE_U8, 0, 1, 2, 0, 0, 0, 1710)};
        xb e = norm_file(META_MIN, s, 2);
        model_parse(e.p, e.n, &m);
        xb_free(&e);
        wr32(m.sec[0].entry + T_FRAME, 65536);
        static const uint8_t zero4[4] = {0, 0, 0, 0};
        xm_set_section(&m, 0, zero4, 4);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        R("frame-empty-section-stored-bytes",
          "a zstd section with decoded_length 0 (n = 0 frames) but 4 stored bytes", &c, "SIZE_MISMATCH", AC);
    }

    /* frames, DECODE_FAILED */
    zf_opts o;
    c = z_frame_defect(1, 1, NULL, m_magic);
    R("frame-bad-magic", "frame 1 starts 29 B5 2F FD", &c, "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_skippable);
    R("frame-skippable", "frame 1's slot starts with a skippable frame", &c, "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_empty);
    R("frame-empty-slot", "c_1 = 0: frame 1 is empty", &c, "DECODE_FAILED", AC);
    o = (zf_opts){.window_log = 17, .no_fcs = 1};
    c = z_frame_defect(1, 1, &o, NULL);
    R("frame-no-content-size", "frame 1 omits Frame_Content_Size", &c, "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_longer);
    R("frame-content-size-too-large", "frame 1 is a well-formed frame of L_1 + 4 bytes (FCS L_1 + 4)", &c,
      "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_full_size);
    R("frame-last-not-short", "the last frame decodes to a full frame_size (65536) instead of L_1 = 14464", &c,
      "DECODE_FAILED", AC);
    o = (zf_opts){.fcs_set = 1, .fcs = 65536 - 1};
    c = z_frame_defect(1, 0, &o, NULL);
    R("frame-declares-less-than-content",
      "frame 0 declares FCS 65535 but its blocks hold 65536 bytes (a reader must stop at the declared size)", &c,
      "DECODE_FAILED", AC);
    o = (zf_opts){.dict_id = 1};
    c = z_frame_defect(1, 1, &o, NULL);
    R("frame-dictionary", "frame 1 has Dictionary_ID 1", &c, "DECODE_FAILED", AC);
    o = (zf_opts){.window_log = 28};
    c = z_frame_defect(1, 1, &o, NULL);
    R("frame-window-256mib", "frame 1 declares a 2^28-byte window (limit 2^27)", &c, "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_trailing);
    R("frame-trailing-byte", "frame 1's slot holds the frame plus one zero byte", &c, "DECODE_FAILED", AC);
    c = z_frame_defect(1, 1, NULL, m_two_frames);
    R("frame-two-frames-in-slot", "frame 1's slot holds two zstd frames of half the content each", &c, "DECODE_FAILED",
      AC);
    o = (zf_opts){.checksum = 2};
    c = z_frame_defect(1, 1, &o, NULL);
    R("frame-bad-checksum", "frame 1's content checksum does not match", &c, "DECODE_FAILED", AC);
    o = (zf_opts){.extra_block_bytes = 3};
    c = z_frame_defect(1, 1, &o, NULL);
    R("frame-corrupt-block", "frame 1's last raw block declares 3 bytes more than the slot holds", &c, "DECODE_FAILED",
      AC);
    c = z_frame_defect(2, 1, NULL, m_magic);
    R("frame-shuffle-bad-magic", "a shuffle+zstd section whose frame 1 has a wrong magic", &c, "DECODE_FAILED", AC);
}

/* ------------------------------------------------------------ full level */

static xb csr_base(int i64, const int64_t *indptr, const int64_t *indices)
{
    const char *osd = "{\"format\":\"expert-v2\",\"name\":\"csr\",\"version\":\"1\",\"modules\":[{\"path\":\"o\","
                      "\"type\":\"osd\",\"layer\":0,\"in_features\":5,\"out_features\":4,\"rank\":2,"
                      "\"sparse_format\":\"csr\"}]}";
    size_t e = i64 ? 8 : 4;
    uint8_t *ipb = A(5 * e), *ixb = A(4 * e);
    for (int i = 0; i < 5; i++)
        i64 ? wr64(ipb + 8 * i, (uint64_t)indptr[i]) : wr32(ipb + 4 * i, (uint32_t)indptr[i]);
    for (int i = 0; i < 4; i++)
        i64 ? wr64(ixb + 8 * i, (uint64_t)indices[i]) : wr32(ixb + 4 * i, (uint32_t)indices[i]);
    uint64_t d5 = 5, d4 = 4;
    uint8_t dt = i64 ? EXPERT_DTYPE_I64 : EXPERT_DTYPE_I32;
    S s[6] = {
        adapter("o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 4, 2, 1800),
        adapter("o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 2, 0, 1801),
        adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 2, 5, 1802),
        raw_sec("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, dt, 1, &d5, ipb, 5 * e),
        raw_sec("o.osd_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, dt, 1, &d4, ixb, 4 * e),
        adapter("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 0, 1, 4, 0, 1803),
    };
    for (int i = 3; i < 5; i++) {
        s[i].layer = 0;
        s[i].module = 0;
    }
    return norm_file(osd, s, 6);
}

static void full_vectors(void)
{
    xb b = base_b(), c;
    c = dupb(&b);
    {
        uint64_t end1 = rd64(E(&c, 1) + T_OFFSET) + rd64(E(&c, 1) + T_STORED);
        c.p[end1 + 3] = 0x01;
    }
    fix(&c);
    R("padding-nonzero-before-section", "a padding byte before a section is 0x01 (file hashes updated)", &c,
      "BAD_PADDING", FU);
    c = dupb(&b);
    {
        uint64_t end4 = rd64(E(&c, 4) + T_OFFSET) + rd64(E(&c, 4) + T_STORED);
        if (rd64(c.p + H_META_OFF) <= end4)
            die("base B has no padding before the metadata");
        c.p[rd64(c.p + H_META_OFF) - 1] = 0x80;
    }
    fix(&c);
    R("padding-nonzero-before-metadata", "the last padding byte before the metadata region is 0x80", &c, "BAD_PADDING",
      FU);
    {
        S s[1] = {tensor("x", EXPERT_DTYPE_U8, 0, 1, 1, 0, 0, 0, 1900)};
        F f = {META_MIN, s, 1, 4096, 0, 0};
        xb z;
        build_norm(&f, &z);
        c = dupb(&z);
        c.p[4095] = 0xFF;
        fix(&c);
        R("padding-nonzero-alignment-4096", "alignment 4096: the byte just before the first section is 0xFF", &c,
          "BAD_PADDING", FU);
        xb_free(&z);
    }
    c = dupb(&b);
    c.p[H_FILE_SHA + 31] ^= 0x01;
    xm_rehash_structure(c.p, c.n);
    R("file-hash-wrong", "one bit of file_sha256 flipped (structure_sha256 recomputed over it)", &c,
      "FILE_HASH_MISMATCH", FU);
    c = dupb(&b);
    {
        uint64_t off = rd64(E(&c, 4) + T_OFFSET);
        c.p[off] ^= 0x01;
        set_sha_from_raw(&c, 4);
        xm_rehash_structure(c.p, c.n);
    }
    R("file-hash-stale-after-section-edit",
      "a section's bytes and its TOC digest changed together; structure_sha256 updated, file_sha256 not", &c,
      "FILE_HASH_MISMATCH", FU);

    /* CSR validity */
    static const int64_t ok_ip[5] = {0, 1, 3, 3, 4}, ok_ix[4] = {2, 0, 4, 1};
    xb ok = csr_base(0, ok_ip, ok_ix);
    accept_vec("adapter-osd-csr-base", "the valid OSD + CSR file the csr-* reject vectors change", &ok, NULL);
    xb_free(&ok);
    struct {
        const char *name, *desc;
        int i64;
        int64_t ip[5], ix[4];
    } cv[] = {
        {"csr-indptr-first-nonzero", "indptr[0] = 1", 0, {1, 1, 3, 3, 4}, {2, 0, 4, 1}},
        {"csr-indptr-decreasing", "indptr 0, 3, 1, 3, 4 decreases", 0, {0, 3, 1, 3, 4}, {2, 0, 4, 1}},
        {"csr-indptr-last-not-nnz", "indptr[out] = 3 where nnz = 4", 0, {0, 1, 3, 3, 3}, {2, 0, 4, 1}},
        {"csr-indptr-past-nnz", "indptr 0, 1, 5, 5, 4: an entry above nnz", 0, {0, 1, 5, 5, 4}, {2, 0, 4, 1}},
        {"csr-index-out-of-range", "a column index equal to in (5)", 0, {0, 1, 3, 3, 4}, {2, 0, 5, 1}},
        {"csr-index-negative", "a column index -1 (I32)", 0, {0, 1, 3, 3, 4}, {2, -1, 4, 1}},
        {"csr-columns-not-increasing", "row 1 has columns 4, 0", 0, {0, 1, 3, 3, 4}, {2, 4, 0, 1}},
        {"csr-columns-duplicate", "row 1 has columns 4, 4", 0, {0, 1, 3, 3, 4}, {2, 4, 4, 1}},
        {"csr-i64-index-out-of-range", "I64 indices: a column index of 2^40", 1, {0, 1, 3, 3, 4}, {2, 0, (int64_t)1 << 40, 1}},
        {"csr-i64-indptr-negative", "I64 indptr with a negative entry", 1, {0, -1, 3, 3, 4}, {2, 0, 4, 1}},
    };
    for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
        c = csr_base(cv[i].i64, cv[i].ip, cv[i].ix);
        R(cv[i].name, AS("OSD CSR part: %s", cv[i].desc), &c, "DECODE_FAILED", FU);
    }

    /* signatures (spec §11.3, §11.6) */
    xb sg = dupb(&b);
    sign_buf(&sg, 1);
    c = dupb(&sg);
    c.p[H_SIG + 10] ^= 0x04;
    RK("signature-bit-flipped", "a signed file with one bit of R flipped", &c, "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&b);
    sign_buf(&c, 2);
    RK("signature-wrong-key", "signed with the RFC 8032 TEST 2 key, verified with the TEST 1 public key", &c,
       "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&sg);
    {
        /* S' = S + L (non-canonical: S not below the group order) */
        static const uint8_t Lord[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                         0xa2, 0xde, 0xf9, 0xde, 0x14, 0,    0,    0,    0,    0,    0,
                                         0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};
        uint8_t *s = c.p + H_SIG + 32;
        unsigned carry = 0;
        for (int i = 0; i < 32; i++) {
            unsigned v = s[i] + Lord[i] + carry;
            s[i] = (uint8_t)v;
            carry = v >> 8;
        }
    }
    RK("signature-s-not-reduced", "the signature's S replaced by S + L (equivalent modulo L, but not below L)", &c,
       "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&b);
    sign_raw(&c, 1, c.p + H_STRUCT_SHA, 32);
    RK("signature-no-domain-tag", "a signature over structure_sha256 alone, without the HLLMEXP2-SIGN-V1 tag", &c,
       "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&b);
    {
        uint8_t msg[48];
        memcpy(msg, "HLLMEXP2-SIGN-V1", 16);
        memcpy(msg + 16, c.p + H_FILE_SHA, 32);
        sign_raw(&c, 1, msg, 48);
    }
    RK("signature-over-file-hash", "a signature over the tag and file_sha256 instead of structure_sha256", &c,
       "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&sg);
    memset(c.p + H_SIG, 0, 32);
    RK("signature-zero-r", "a signed file whose R half is all zero (S kept)", &c, "BAD_SIGNATURE", FU, KEY1_PUB);
    c = dupb(&b);
    RK("signature-absent-with-key",
       "an unsigned file (or a signed one with the signature stripped) read with a public key", &c, "UNSIGNED", FU,
       KEY1_PUB);
    c = dupb(&sg);
    RK("key-x25519", "a valid signed file, but the public key given is an X25519 key", &c, "BAD_KEY", FU, KEY_X25519);
    c = dupb(&sg);
    RK("key-malformed-pem", "a valid signed file, but the key file's PEM body is not base64", &c, "BAD_KEY", FU,
       KEY_GARBAGE);
    c = dupb(&sg);
    RK("key-two-pem-blocks", "a valid signed file, but the key file holds two PUBLIC KEY blocks (spec §11.5)",
       &c, "BAD_KEY", FU, KEY_TWO_BLOCKS);
    c = dupb(&sg);
    RK("key-der-trailing-byte",
       "a valid signed file, but the key's base64 decodes to the 44-byte DER plus one byte (spec §11.5)", &c,
       "BAD_KEY", FU, KEY_DER_TRAILING);
    xb_free(&sg);
    xb_free(&b);
}

void gen_reject(void)
{
    header_vectors();
    metadata_vectors();
    toc_vectors();
    layout_vectors();
    module_vectors();
    access_vectors();
    full_vectors();
}
