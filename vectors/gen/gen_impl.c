/* gen_impl.c — implementation-defined vectors: the spec allows more than one
 * outcome; the testee must not crash, hang or print malformed output. */
#include "gen.h"

#include <stdlib.h>
#include <string.h>

void gen_impl(void)
{
    xb b = base_b();
    {
        xb c = dupb(&b);
        sign_buf(&c, 1);
        c.p[rd64(E(&c, 0) + T_OFFSET)] ^= 0x01; /* the section no longer matches its digest */
        fix(&c);                                /* new file_sha256 -> new structure_sha256 -> the signature is stale */
        impl_vec("section-hash-and-signature-bad",
                 "a signed file whose LORA_A bytes changed after signing (hashes recomputed, signature stale), read "
                 "with the key",
                 &c,
                 "SECTION_HASH_MISMATCH (access) or BAD_SIGNATURE: a reader MAY verify the signature right after "
                 "structural validation (spec §12.3)",
                 KEY1_PUB);
        xb_free(&c);
    }
    xb_free(&b);
    {
        /* two defects at full level: invalid CSR and a signature made with another key */
        const char *osd = "{\"format\":\"expert-v2\",\"name\":\"csr\",\"version\":\"1\",\"modules\":[{\"path\":\"o\","
                          "\"type\":\"osd\",\"layer\":0,\"rank\":1,\"sparse_format\":\"csr\"}]}";
        uint8_t *ip = A(12), *ix = A(4);
        wr32(ip, 1); /* indptr[0] != 0 */
        wr32(ip + 4, 1);
        wr32(ip + 8, 1);
        wr32(ix, 0);
        uint64_t d3 = 3, d1 = 1;
        S s[6] = {
            adapter("o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 2, 1, 2000),
            adapter("o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 1, 0, 2001),
            adapter("o.osd_Vt", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 1, 3, 2002),
            raw_sec("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1, &d3, ip, 12),
            raw_sec("o.osd_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 1, &d1, ix, 4),
            adapter("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 0, 1, 1, 0, 2003),
        };
        for (int i = 3; i < 5; i++) {
            s[i].layer = 0;
            s[i].module = 0;
        }
        F f = {osd, s, 6, 64, 0, 2};
        xb c;
        build_norm(&f, &c);
        impl_vec("csr-invalid-and-signature-bad",
                 "invalid CSR (indptr[0] = 1) in a file signed with the TEST 2 key, read with the TEST 1 public key",
                 &c, "DECODE_FAILED (full) or BAD_SIGNATURE, depending on when the reader checks the signature",
                 KEY1_PUB);
        xb_free(&c);
    }
    {
        /* 128 MiB of zeros in two 64 MiB RLE frames: decode it, or fail with NOMEM */
        S s = tensor("zeros", EXPERT_DTYPE_U8, 1, 1, 1, 0, 0, 0, 0);
        F f = {META_MIN, &s, 1, 64, 1u << 26, 0};
        xb c;
        build(&f, &c);
        size_t ml;
        char *t = meta_text(c.p, c.n, &ml);
        xm_model m;
        model_parse(c.p, c.n, &m);
        xb_free(&c);
        model_set_meta_json(&m, t, ml);
        size_t n = (size_t)1 << 27;
        uint8_t *z = xcalloc(1, n);
        wr64(m.sec[0].entry + T_DECODED, n);
        wr64(m.sec[0].entry + T_DIMS, n);
        sha256(z, n, m.sec[0].entry + T_SHA);
        xb st = {0};
        framed(&st, z, n, 1u << 26, 1, 0, -1, NULL, NULL);
        free(z);
        xm_set_section(&m, 0, st.p, st.n);
        xb_free(&st);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        impl_vec("large-section-128mib",
                 "a valid U8 section of 2^27 zero bytes stored as two 64 MiB frames of RLE blocks (about 2 KiB)", &c,
                 "accepted, or NOMEM when the reader will not allocate 128 MiB (spec §12: NOMEM may occur anywhere)",
                 NULL);
        xb_free(&c);
    }
}
