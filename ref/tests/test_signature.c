/*
 * test_signature.c — keys, signing and signature verification (spec §11.3,
 * §11.5, §12.3): sign/verify with the right and a wrong key, UNSIGNED, the
 * 64-byte in-place signing rule, every single-bit flip of a signed file
 * detected, and known answers: RFC 8032 §7.1 TEST 1 through OpenSSL EVP and
 * through the library (PEM of the RFC seed from spec §16, the signature of
 * the worked example, and an EVP re-computation over our own file).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "craft.h"

static char *g_dir;
static char *g_priv1, *g_pub1, *g_priv2, *g_pub2;
static expert_private_key *k1, *k2;
static expert_public_key *p1, *p2;

/* RFC 8032 §7.1 TEST 1 */
static const char *RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char *RFC_PUB = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char *RFC_SIG = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8"
                             "821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
/* spec §16: the same seed as PEM (PKCS#8) and its public key (SPKI) */
static const char *RFC_PRIV_PEM = "-----BEGIN PRIVATE KEY-----\n"
                                  "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                                  "-----END PRIVATE KEY-----\n";
static const char *RFC_PUB_PEM = "-----BEGIN PUBLIC KEY-----\n"
                                 "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
                                 "-----END PUBLIC KEY-----\n";

static void unhex(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("sig");
    if (!g_dir)
        return -1;
    g_priv1 = path_join(g_dir, "k1.pem");
    g_pub1 = path_join(g_dir, "k1.pub.pem");
    g_priv2 = path_join(g_dir, "k2.pem");
    g_pub2 = path_join(g_dir, "k2.pub.pem");
    expert_error e;
    if (expert_keygen(g_priv1, g_pub1, &e) != EXPERT_OK || expert_keygen(g_priv2, g_pub2, &e) != EXPERT_OK)
        return -1;
    if (expert_private_key_load(g_priv1, &k1, &e) != EXPERT_OK ||
        expert_private_key_load(g_priv2, &k2, &e) != EXPERT_OK ||
        expert_public_key_load(g_pub1, &p1, &e) != EXPERT_OK ||
        expert_public_key_load(g_pub2, &p2, &e) != EXPERT_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    expert_private_key_free(k1);
    expert_private_key_free(k2);
    expert_public_key_free(p1);
    expert_public_key_free(p2);
    free(g_priv1);
    free(g_pub1);
    free(g_priv2);
    free(g_pub2);
    tmpdir_remove(g_dir);
    return 0;
}

/* A small file (a few KB): a LoRA pair, a zstd tensor, a FILE. */
static void write_small(const char *path, const expert_private_key *key)
{
    static float a[2 * 8], b[8 * 2];
    static uint16_t t[300];
    static uint8_t readme[1500];
    static const char cfg[] = "{\"r\":2,\"lora_alpha\":4}";
    for (int i = 0; i < 16; i++) {
        a[i] = (float)i;
        b[i] = -(float)i;
    }
    for (int i = 0; i < 300; i++)
        t[i] = (uint16_t)(i * 7);
    for (int i = 0; i < 1500; i++)
        readme[i] = (uint8_t)("# adapter\n"[i % 10]);
    tsec s[5] = {
        {{"m.lora_A.weight", 0, EXPERT_SECTION_LORA_A, EXPERT_CODEC_RAW, EXPERT_DTYPE_F32, 2, 0, 0, 0,
          {2, 8, 0, 0}}, a, sizeof a},
        {{"m.lora_B.weight", 0, EXPERT_SECTION_LORA_B, EXPERT_CODEC_RAW, EXPERT_DTYPE_F32, 2, 0, 0, 0,
          {8, 2, 0, 0}}, b, sizeof b},
        {{"t", 0, EXPERT_SECTION_TENSOR, EXPERT_CODEC_SHUFFLE_ZSTD, EXPERT_DTYPE_U16, 1, 0,
          EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {300, 0, 0, 0}}, t, sizeof t},
        {{"adapter_config.json", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_RAW, EXPERT_DTYPE_BYTES, 1, 0,
          EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {sizeof cfg - 1, 0, 0, 0}}, cfg, sizeof cfg - 1},
        {{"README.md", 0, EXPERT_SECTION_FILE, EXPERT_CODEC_RAW, EXPERT_DTYPE_BYTES, 1, 0,
          EXPERT_LAYER_NONE, EXPERT_MODULE_NONE, {sizeof readme, 0, 0, 0}}, readme, sizeof readme},
    };
    const char *meta = "{\"format\":\"expert-v2\",\"name\":\"s\",\"version\":\"1\","
                       "\"adapter_config\":\"adapter_config.json\",\"modules\":[{\"path\":\"m\","
                       "\"type\":\"lora\",\"layer\":0,\"r\":2,\"alpha\":4,\"rslora\":false}]}";
    expert_writer_options wo = {.alignment = 64, .frame_size = 65536, .zstd_level = 3, .threads = 1};
    assert_int_equal(write_expert(path, &wo, meta, s, 5, key), EXPERT_OK);
}

static expert_status verify_path(const char *path, const expert_public_key *key)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status st = expert_open(path, NULL, &r, &e);
    if (st != EXPERT_OK)
        return st;
    st = expert_verify_full(r, key, &e);
    expert_close(r);
    return st;
}

static void test_sign_and_verify(void **state)
{
    (void)state;
    char *path = path_join(g_dir, "s.expert");
    write_small(path, NULL);
    xb before;
    assert_int_equal(file_load(path, &before), 0);
    assert_true(before.n > 2048 && before.n < 16384);

    /* unsigned: fine without a key, UNSIGNED with one */
    assert_int_equal(verify_path(path, NULL), EXPERT_OK);
    assert_int_equal(verify_path(path, p1), EXPERT_E_UNSIGNED);

    expert_error e;
    assert_int_equal(expert_sign_file(path, k1, &e), EXPERT_OK);
    xb after;
    assert_int_equal(file_load(path, &after), 0);
    assert_int_equal(after.n, before.n);
    /* only the 64 signature bytes changed */
    assert_memory_equal(after.p, before.p, H_SIG);
    assert_memory_equal(after.p + H_SIG + 64, before.p + H_SIG + 64, before.n - H_SIG - 64);
    static const uint8_t zero[64];
    assert_memory_not_equal(after.p + H_SIG, zero, 64);

    assert_int_equal(verify_path(path, p1), EXPERT_OK);
    assert_int_equal(verify_path(path, p2), EXPERT_E_BAD_SIGNATURE);
    assert_int_equal(verify_path(path, NULL), EXPERT_OK);
    expert_reader *r;
    assert_int_equal(expert_open(path, NULL, &r, &e), EXPERT_OK);
    expert_header_info hi;
    expert_header(r, &hi);
    assert_int_equal(hi.is_signed, 1);
    expert_close(r);

    /* signing at finish gives the same bytes (Ed25519 is deterministic) */
    char *path2 = path_join(g_dir, "s2.expert");
    write_small(path2, k1);
    xb direct;
    assert_int_equal(file_load(path2, &direct), 0);
    assert_int_equal(direct.n, after.n);
    assert_memory_equal(direct.p, after.p, after.n);

    /* re-signing with another key changes the 64 bytes only */
    assert_int_equal(expert_sign_file(path, k2, &e), EXPERT_OK);
    xb resigned;
    assert_int_equal(file_load(path, &resigned), 0);
    assert_memory_equal(resigned.p + H_SIG + 64, before.p + H_SIG + 64, before.n - H_SIG - 64);
    assert_int_equal(verify_path(path, p2), EXPERT_OK);
    assert_int_equal(verify_path(path, p1), EXPERT_E_BAD_SIGNATURE);

    /* stripping the signature turns the file into an unsigned one: UNSIGNED with a key */
    memset(resigned.p + H_SIG, 0, 64);
    assert_int_equal(file_save(path, resigned.p, resigned.n), 0);
    assert_int_equal(verify_path(path, p2), EXPERT_E_UNSIGNED);
    assert_memory_equal(resigned.p, before.p, before.n);

    /* a structurally invalid file is not signed and is left unchanged */
    xb bad;
    bad = xb_copy(before.p, before.n);
    bad.p[rd64(bad.p + H_TOC_OFF) + T_RES1] = 1; /* no rehash: STRUCTURE_HASH_MISMATCH */
    assert_int_equal(file_save(path, bad.p, bad.n), 0);
    assert_int_equal(expert_sign_file(path, k1, &e), EXPERT_E_STRUCTURE_HASH_MISMATCH);
    xb still;
    assert_int_equal(file_load(path, &still), 0);
    assert_int_equal(still.n, bad.n);
    assert_memory_equal(still.p, bad.p, bad.n);
    /* no temporary file left behind by the failed signing */
    assert_int_equal(dir_count(g_dir), 6);

    xb_free(&still);
    xb_free(&bad);
    xb_free(&resigned);
    xb_free(&direct);
    xb_free(&after);
    xb_free(&before);
    remove(path);
    remove(path2);
    free(path);
    free(path2);
}

/* Flip bit 0 of every byte of a small signed file: opening plus full
 * verification with the key must fail for every offset. Without a key, every
 * byte outside the signature field must still be caught. */
static void test_every_byte_protected(void **state)
{
    (void)state;
    char *path = path_join(g_dir, "flip.expert");
    write_small(path, k1);
    xb img;
    assert_int_equal(file_load(path, &img), 0);
    uint8_t *mem = aligned_copy(img.p, img.n);
    assert_non_null(mem);
    unsigned counts[64] = {0};
    for (size_t off = 0; off < img.n; off++) {
        mem[off] ^= 0x01;
        expert_reader *r = NULL;
        expert_error e;
        expert_status st = expert_open_memory(mem, img.n, NULL, &r, &e);
        expert_status st_nokey = st;
        if (st == EXPERT_OK) {
            st = expert_verify_full(r, p1, &e);
            expert_close(r);
            if (st == EXPERT_OK)
                fail_msg("flipping bit 0 of byte %zu went undetected (with key)", off);
            assert_int_equal(expert_open_memory(mem, img.n, NULL, &r, &e), EXPERT_OK);
            st_nokey = expert_verify_full(r, NULL, &e);
            expert_close(r);
        }
        int in_sig = off >= H_SIG && off < H_SIG + 64;
        if (!in_sig && st_nokey == EXPERT_OK)
            fail_msg("flipping bit 0 of byte %zu went undetected without a key", off);
        if (in_sig && st != EXPERT_E_BAD_SIGNATURE)
            fail_msg("signature byte %zu flipped: %s, expected BAD_SIGNATURE", off,
                     expert_status_name(st));
        counts[(unsigned)st < 64 ? (unsigned)st : 63]++;
        mem[off] ^= 0x01;
    }
    print_message("%zu offsets flipped; classes:", img.n);
    for (unsigned i = 0; i < 64; i++)
        if (counts[i])
            print_message(" %s=%u", expert_status_name((expert_status)i), counts[i]);
    print_message("\n");
    /* the untouched image still verifies */
    expert_reader *r;
    expert_error e;
    assert_int_equal(expert_open_memory(mem, img.n, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_verify_full(r, p1, &e), EXPERT_OK);
    expert_close(r);
    free(mem);
    xb_free(&img);
    remove(path);
    free(path);
}

/* RFC 8032 §7.1 TEST 1 with OpenSSL EVP directly. */
static void test_rfc8032_evp(void **state)
{
    (void)state;
    uint8_t seed[32], pub[32], sig[64], got[64], gotpub[32];
    unhex(RFC_SEED, seed, 32);
    unhex(RFC_PUB, pub, 32);
    unhex(RFC_SIG, sig, 64);
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    assert_non_null(pk);
    size_t pl = 32;
    assert_int_equal(EVP_PKEY_get_raw_public_key(pk, gotpub, &pl), 1);
    assert_memory_equal(gotpub, pub, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk), 1);
    size_t sl = 64;
    assert_int_equal(EVP_DigestSign(ctx, got, &sl, (const unsigned char *)"", 0), 1);
    assert_int_equal(sl, 64);
    assert_memory_equal(got, sig, 64);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
}

/* The library's signing primitive with the RFC key (loaded from the PEM of
 * spec §16): the signature it stores equals EVP's pure Ed25519 over
 * "HLLMEXP2-SIGN-V1" || structure_sha256, and the public PEM verifies it. */
static void test_rfc8032_library(void **state)
{
    (void)state;
    char *kp = path_join(g_dir, "rfc.pem"), *pp = path_join(g_dir, "rfc.pub.pem");
    assert_int_equal(file_save(kp, RFC_PRIV_PEM, strlen(RFC_PRIV_PEM)), 0);
    assert_int_equal(file_save(pp, RFC_PUB_PEM, strlen(RFC_PUB_PEM)), 0);
    expert_private_key *k;
    expert_public_key *p;
    expert_error e;
    assert_int_equal(expert_private_key_load(kp, &k, &e), EXPERT_OK);
    assert_int_equal(expert_public_key_load(pp, &p, &e), EXPERT_OK);

    char *path = path_join(g_dir, "rfc.expert");
    write_small(path, NULL);
    assert_int_equal(expert_sign_file(path, k, &e), EXPERT_OK);
    xb img;
    assert_int_equal(file_load(path, &img), 0);
    uint8_t msg[48];
    memcpy(msg, "HLLMEXP2-SIGN-V1", 16);
    memcpy(msg + 16, img.p + H_STRUCT_SHA, 32);
    uint8_t seed[32], want[64];
    unhex(RFC_SEED, seed, 32);
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk), 1);
    size_t sl = 64;
    assert_int_equal(EVP_DigestSign(ctx, want, &sl, msg, sizeof msg), 1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    assert_memory_equal(img.p + H_SIG, want, 64);
    assert_int_equal(verify_path(path, p), EXPERT_OK);
    assert_int_equal(verify_path(path, p1), EXPERT_E_BAD_SIGNATURE);
    xb_free(&img);

    /* spec §16: the worked example signed with this key */
    const char *sd = getenv("EXPERT_SPEC_DIR");
    char *ex = sd ? path_join(sd, "example.expert") : NULL;
    xb exb;
    if (ex && file_load(ex, &exb) == 0) {
        char *copy = path_join(g_dir, "example-signed.expert");
        assert_int_equal(file_save(copy, exb.p, exb.n), 0);
        assert_int_equal(expert_sign_file(copy, k, &e), EXPERT_OK);
        xb sgn;
        assert_int_equal(file_load(copy, &sgn), 0);
        uint8_t sig[64], h[32], wh[32];
        unhex("53a3bbf8aadeb2c0fd13d192cb971326875689bf89bea29a212c44b7dae1576f"
              "0a83c5eacb285daf87bde7a25a646984b878ff03089b75cb7a75eace24ef8509",
              sig, 64);
        assert_memory_equal(sgn.p + H_SIG, sig, 64);
        sha256(sgn.p, sgn.n, h);
        unhex("2b640cd0092d09014b9b23487f685f77c17aef555f53bf08410cf618ae6e7731", wh, 32);
        assert_memory_equal(h, wh, 32);
        assert_int_equal(verify_path(copy, p), EXPERT_OK);
        xb_free(&sgn);
        xb_free(&exb);
        remove(copy);
        free(copy);
    } else {
        print_message("example.expert not available; spec §16 signature check skipped\n");
    }
    free(ex);
    expert_private_key_free(k);
    expert_public_key_free(p);
    remove(kp);
    remove(pp);
    remove(path);
    free(kp);
    free(pp);
    free(path);
}

/* PEM/DER forms written by keygen (spec §11.5). */
static void check_pem(const char *path, const char *label, const uint8_t *prefix, size_t plen,
                      size_t der_len)
{
    xb b;
    assert_int_equal(file_load(path, &b), 0);
    b.p[b.n] = 0;
    char begin[64], end[64];
    snprintf(begin, sizeof begin, "-----BEGIN %s-----\n", label);
    snprintf(end, sizeof end, "-----END %s-----", label);
    assert_true(strncmp((char *)b.p, begin, strlen(begin)) == 0);
    char *body = (char *)b.p + strlen(begin);
    char *stop = strstr(body, end);
    assert_non_null(stop);
    char b64[256];
    size_t n = 0;
    for (char *c = body; c < stop && n < sizeof b64 - 1; c++)
        if (*c != '\n' && *c != '\r')
            b64[n++] = *c;
    b64[n] = 0;
    uint8_t der[256];
    int dl = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)n);
    while (n > 0 && b64[n - 1] == '=') {
        dl--;
        n--;
    }
    assert_int_equal(dl, der_len);
    assert_memory_equal(der, prefix, plen);
    xb_free(&b);
}

static void test_key_files(void **state)
{
    (void)state;
    static const uint8_t pkcs8[16] = {0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                      0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};
    static const uint8_t spki[12] = {0x30, 0x2A, 0x30, 0x05, 0x06, 0x03,
                                     0x2B, 0x65, 0x70, 0x03, 0x21, 0x00};
    check_pem(g_priv1, "PRIVATE KEY", pkcs8, sizeof pkcs8, 48);
    check_pem(g_pub1, "PUBLIC KEY", spki, sizeof spki, 44);

    expert_private_key *k = NULL;
    expert_public_key *p = NULL;
    expert_error e;
    /* wrong kinds */
    assert_int_equal(expert_private_key_load(g_pub1, &k, &e), EXPERT_E_BAD_KEY);
    assert_int_equal(expert_public_key_load(g_priv1, &p, &e), EXPERT_E_BAD_KEY);
    /* garbage, empty, truncated PEM */
    char *bad = path_join(g_dir, "bad.pem");
    static const char *bodies[] = {
        "",
        "not a key\n",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1h\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKx\n-----END PUBLIC KEY-----\n",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        assert_int_equal(file_save(bad, bodies[i], strlen(bodies[i])), 0);
        assert_int_equal(expert_private_key_load(bad, &k, &e), EXPERT_E_BAD_KEY);
        assert_int_equal(expert_public_key_load(bad, &p, &e), EXPERT_E_BAD_KEY);
    }
    /* another algorithm (EC P-256) */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    assert_non_null(ec);
    FILE *f = fopen(bad, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, ec, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    assert_int_equal(expert_private_key_load(bad, &k, &e), EXPERT_E_BAD_KEY);
    f = fopen(bad, "w");
    assert_int_equal(PEM_write_PUBKEY(f, ec), 1);
    fclose(f);
    assert_int_equal(expert_public_key_load(bad, &p, &e), EXPERT_E_BAD_KEY);
    EVP_PKEY_free(ec);
    /* missing file */
    char *missing = path_join(g_dir, "missing.pem");
    assert_int_equal(expert_private_key_load(missing, &k, &e), EXPERT_E_IO);
    assert_int_equal(expert_public_key_load(missing, &p, &e), EXPERT_E_IO);
    remove(bad);
    free(bad);
    free(missing);
    expert_private_key_free(NULL);
    expert_public_key_free(NULL);
}

/* Spec §11.5 "malformed PEM", exactly: the TEST 1 key of §16 in the allowed
 * variants is accepted; two blocks, PEM headers, and DER with one byte more
 * or less are BAD_KEY. */
/* A PEM file whose base64 is the key's DER (der_len bytes) with `extra`
 * bytes more (a 0x00) or fewer. */
static void write_der_variant(const char *path, const char *b64, int der_len, int extra,
                              const char *label)
{
    uint8_t der[64];
    unsigned char out[128];
    char text[512];
    int n = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)strlen(b64));
    assert_true(n >= der_len);
    der[der_len] = 0x00;
    EVP_EncodeBlock(out, der, der_len + extra);
    snprintf(text, sizeof text, "-----BEGIN %s-----\n%s\n-----END %s-----\n", label, out, label);
    assert_int_equal(file_save(path, text, strlen(text)), 0);
}

static void test_key_strict_forms(void **state)
{
    (void)state;
    static const char pub_b64[] = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    static const char priv_b64[] = "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g";
    char text[1024];
    char *f = path_join(g_dir, "strict.pem");
    expert_public_key *p = NULL;
    expert_private_key *k = NULL;
    expert_error e;
    struct { const char *what; int ok; } pub_cases[] = {
        {"-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n", 1},
        {"comment before\r\n-----BEGIN PUBLIC KEY-----\r\n%s\r\n-----END PUBLIC KEY-----\r\nafter\n", 1},
        {"-----BEGIN PUBLIC KEY-----\n%1$s\n-----END PUBLIC KEY-----\n"
         "-----BEGIN PUBLIC KEY-----\n%1$s\n-----END PUBLIC KEY-----\n", 0},
        {"-----BEGIN PUBLIC KEY-----\nComment: x\n\n%s\n-----END PUBLIC KEY-----\n", 0},
        {"-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n"
         "-----BEGIN PRIVATE KEY-----\n" "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
         "-----END PRIVATE KEY-----\n", 0},
    };
    for (size_t i = 0; i < sizeof pub_cases / sizeof pub_cases[0]; i++) {
        snprintf(text, sizeof text, pub_cases[i].what, pub_b64);
        assert_int_equal(file_save(f, text, strlen(text)), 0);
        expert_status st = expert_public_key_load(f, &p, &e);
        if (st != (pub_cases[i].ok ? EXPERT_OK : EXPERT_E_BAD_KEY))
            fail_msg("public case %zu: %s (%s)", i, expert_status_name(st), e.message);
        expert_public_key_free(p);
        p = NULL;
    }
    /* the DER with a trailing byte, and one byte short */
    for (int extra = -1; extra <= 1; extra += 2) {
        write_der_variant(f, pub_b64, 44, extra, "PUBLIC KEY");
        assert_int_equal(expert_public_key_load(f, &p, &e), EXPERT_E_BAD_KEY);
        write_der_variant(f, priv_b64, 48, extra, "PRIVATE KEY");
        assert_int_equal(expert_private_key_load(f, &k, &e), EXPERT_E_BAD_KEY);
    }
    snprintf(text, sizeof text,
             "-----BEGIN PRIVATE KEY-----\n%1$s\n-----END PRIVATE KEY-----\n"
             "-----BEGIN PRIVATE KEY-----\n%1$s\n-----END PRIVATE KEY-----\n", priv_b64);
    assert_int_equal(file_save(f, text, strlen(text)), 0);
    assert_int_equal(expert_private_key_load(f, &k, &e), EXPERT_E_BAD_KEY);
    snprintf(text, sizeof text, "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n", priv_b64);
    assert_int_equal(file_save(f, text, strlen(text)), 0);
    assert_int_equal(expert_private_key_load(f, &k, &e), EXPERT_OK);
    expert_private_key_free(k);
    remove(f);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_and_verify),
        cmocka_unit_test(test_every_byte_protected),
        cmocka_unit_test(test_rfc8032_evp),
        cmocka_unit_test(test_rfc8032_library),
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_key_strict_forms),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
