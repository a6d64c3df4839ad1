/* crypto.c — SHA-256 and Ed25519 through OpenSSL 3 EVP.
 * Pure Ed25519 only (one-shot EVP_DigestSign with a NULL digest): OpenSSL 3.0
 * silently ignores an "Ed25519ph" instance parameter, so we never ask for it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

struct expert_private_key {
    EVP_PKEY *pkey;
};
struct expert_public_key {
    EVP_PKEY *pkey;
};

/* xp_sha256_ctx is OpenSSL's EVP_MD_CTX under our name: nothing of ours
 * to allocate, so hashing costs a context nothing from its allocator. */
expert_status xp_sha256_new(xp_sha256_ctx **out)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return EXPERT_E_NOMEM;
    }
    *out = md;
    return EXPERT_OK;
}

expert_status xp_sha256_update(xp_sha256_ctx *c, const void *data, size_t length)
{
    if (length == 0)
        return EXPERT_OK;
    return EVP_DigestUpdate(c, data, length) == 1 ? EXPERT_OK : EXPERT_E_NOMEM;
}

expert_status xp_sha256_final(xp_sha256_ctx *c, uint8_t out[32])
{
    unsigned int n = 0;
    return EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32 ? EXPERT_OK : EXPERT_E_NOMEM;
}

void xp_sha256_free(xp_sha256_ctx *c)
{
    EVP_MD_CTX_free(c);
}

expert_status expert_sha256(const void *data, size_t length, uint8_t out[32])
{
    if (data == NULL && length != 0)
        return EXPERT_E_INVALID_ARGUMENT;
    unsigned int n = 0;
    static const uint8_t empty = 0;
    return EVP_Digest(length ? data : &empty, length, out, &n, EVP_sha256(), NULL) == 1
               ? EXPERT_OK
               : EXPERT_E_NOMEM;
}

expert_status xp_hash_header(xp_sha256_ctx *c, const uint8_t *header, size_t header_size,
                             int zero_file_sha)
{
    /* Spec §11: the hash fields are taken as zero while hashing; the file
     * hash also zeroes itself, the structure hash keeps file_sha256. */
    uint8_t copy[XP_HEADER_SIZE_MAX];
    if (header_size > sizeof copy)
        return EXPERT_E_INVALID_ARGUMENT;
    memcpy(copy, header, header_size);
    if (zero_file_sha)
        memset(copy + XP_OFF_FILE_SHA256, 0, XP_SHA256_LEN);
    memset(copy + XP_OFF_SIGNATURE, 0, XP_SIGNATURE_LEN);
    memset(copy + XP_OFF_STRUCTURE_SHA256, 0, XP_SHA256_LEN);
    return xp_sha256_update(c, copy, header_size);
}

expert_status xp_ed25519_sign(const expert_private_key *key, const uint8_t *msg, size_t len,
                              uint8_t sig[64], expert_error *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t siglen = 64;
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, key->pkey) == 1 &&
             EVP_DigestSign(md, sig, &siglen, msg, len) == 1 && siglen == 64;
    EVP_MD_CTX_free(md);
    if (!ok)
        return xp_set_error(err, EXPERT_E_BAD_KEY, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "Ed25519 signing failed");
    return EXPERT_OK;
}

expert_status xp_ed25519_verify(const expert_public_key *key, const uint8_t *msg, size_t len,
                                const uint8_t sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return EXPERT_E_NOMEM;
    int ok = EVP_DigestVerifyInit(md, NULL, NULL, NULL, key->pkey) == 1 &&
             EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(md);
    return ok ? EXPERT_OK : EXPERT_E_BAD_SIGNATURE;
}

/* Writes PEM text to path atomically (temp + fsync + rename), mode 0600 for secrets. */
static expert_status write_pem_atomic(const char *path, EVP_PKEY *pkey, int is_private,
                                      expert_error *err)
{
    size_t n = strlen(path);
    char *tmp = xp_malloc(n + 16);
    if (tmp == NULL)
        return xp_set_error(err, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        expert_status s = xp_set_error(err, EXPERT_E_IO, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                                       "cannot create %s: %s", tmp, strerror(errno));
        xp_free(tmp);
        return s;
    }
    fchmod(fd, is_private ? 0600 : 0644);
    FILE *f = fdopen(fd, "w");
    int ok = f != NULL;
    if (ok)
        ok = is_private ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1
                        : PEM_write_PUBKEY(f, pkey) == 1;
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    if (f != NULL)
        ok = (fclose(f) == 0) && ok;
    else
        close(fd);
    if (ok && rename(tmp, path) != 0)
        ok = 0;
    if (!ok) {
        unlink(tmp);
        xp_free(tmp);
        return xp_set_error(err, EXPERT_E_IO, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "cannot write key %s", path);
    }
    xp_free(tmp);
    return EXPERT_OK;
}

expert_status expert_keygen(const char *private_pem_path, const char *public_pem_path,
                            expert_error *err)
{
    if (private_pem_path == NULL || public_pem_path == NULL)
        return xp_set_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "key paths required");
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    int ok = pc != NULL && EVP_PKEY_keygen_init(pc) == 1 && EVP_PKEY_keygen(pc, &pkey) == 1;
    EVP_PKEY_CTX_free(pc);
    if (!ok)
        return xp_set_error(err, EXPERT_E_BAD_KEY, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "Ed25519 key generation failed");
    expert_status s = write_pem_atomic(private_pem_path, pkey, 1, err);
    if (s == EXPERT_OK)
        s = write_pem_atomic(public_pem_path, pkey, 0, err);
    EVP_PKEY_free(pkey);
    return s;
}

/* The only DER forms spec §11.5 defines: PKCS#8 v1 and SubjectPublicKeyInfo
 * for id-Ed25519, each a fixed prefix followed by the 32 key bytes. */
static const uint8_t k_priv_prefix[16] = {0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                          0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20};
static const uint8_t k_pub_prefix[12] = {0x30, 0x2A, 0x30, 0x05, 0x06, 0x03,
                                         0x2B, 0x65, 0x70, 0x03, 0x21, 0x00};

#define KEY_FILE_MAX 65536

static expert_status bad_key(expert_error *err, const char *path, int is_private, const char *why)
{
    return xp_set_error(err, EXPERT_E_BAD_KEY, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                        "%s is not an Ed25519 %s key in PEM (-----BEGIN %s-----): %s", path,
                        is_private ? "PKCS#8 private" : "SubjectPublicKeyInfo public",
                        is_private ? "PRIVATE KEY" : "PUBLIC KEY", why);
}

/* Spec §11.5, strictly: exactly one PEM block, with the expected label and
 * no headers, whose base64 decodes to exactly the DER above. OpenSSL's PEM
 * reader does the base64; the rest is checked here, because its key parsers
 * accept more (trailing bytes, other encodings, several blocks). */
static expert_status load_pem(const char *path, int is_private, EVP_PKEY **out, expert_error *err)
{
    if (path == NULL)
        return xp_set_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "key path required");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return xp_set_error(err, EXPERT_E_IO, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "cannot open key %s: %s", path, strerror(errno));
    char *text = xp_malloc(KEY_FILE_MAX + 1);
    size_t n = text != NULL ? fread(text, 1, KEY_FILE_MAX + 1, f) : 0;
    int read_error = ferror(f);
    fclose(f);
    if (text == NULL)
        return xp_set_error(err, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "out of memory");
    if (read_error) {
        xp_free(text);
        return xp_set_error(err, EXPERT_E_IO, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "cannot read key %s", path);
    }
    if (n > KEY_FILE_MAX) {
        xp_free(text);
        return bad_key(err, path, is_private, "the file is larger than 64 KiB");
    }
    const char *label = is_private ? "PRIVATE KEY" : "PUBLIC KEY";
    const char *why = NULL;
    char *name = NULL, *header = NULL, *name2 = NULL, *header2 = NULL;
    unsigned char *der = NULL, *der2 = NULL;
    long der_len = 0, der2_len = 0;
    BIO *bio = BIO_new_mem_buf(text, (int)n);
    if (bio == NULL)
        why = "out of memory";
    else if (PEM_read_bio(bio, &name, &header, &der, &der_len) != 1)
        why = "no well-formed BEGIN/END block";
    else if (strcmp(name, label) != 0)
        why = "the block has another label";
    else if (header[0] != '\0')
        why = "the block has PEM headers";
    else if (PEM_read_bio(bio, &name2, &header2, &der2, &der2_len) == 1)
        why = "the file holds more than one PEM block";
    ERR_clear_error(); /* the second read's "no start line" */
    EVP_PKEY *pkey = NULL;
    if (why == NULL) {
        const uint8_t *prefix = is_private ? k_priv_prefix : k_pub_prefix;
        size_t plen = is_private ? sizeof k_priv_prefix : sizeof k_pub_prefix;
        if ((size_t)der_len != plen + 32 || memcmp(der, prefix, plen) != 0)
            why = (size_t)der_len >= plen && memcmp(der, prefix, plen) == 0
                      ? "the DER has the wrong length"
                      : "not the DER of an Ed25519 key (other algorithm, encrypted, or PKCS#8 v2)";
        else
            pkey = is_private
                       ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, der + plen, 32)
                       : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der + plen, 32);
        if (why == NULL && pkey == NULL)
            why = "OpenSSL refused the key bytes";
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    OPENSSL_free(name2);
    OPENSSL_free(header2);
    OPENSSL_free(der2);
    BIO_free(bio);
    xp_free(text);
    if (why != NULL)
        return bad_key(err, path, is_private, why);
    *out = pkey;
    return EXPERT_OK;
}

expert_status expert_private_key_load(const char *pem_path, expert_private_key **out,
                                      expert_error *err)
{
    if (out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    EVP_PKEY *pkey = NULL;
    XP_TRY(load_pem(pem_path, 1, &pkey, err));
    expert_private_key *k = xp_malloc(sizeof *k);
    if (k == NULL) {
        EVP_PKEY_free(pkey);
        return xp_set_error(err, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "out of memory");
    }
    k->pkey = pkey;
    *out = k;
    return EXPERT_OK;
}

expert_status expert_public_key_load(const char *pem_path, expert_public_key **out,
                                     expert_error *err)
{
    if (out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    EVP_PKEY *pkey = NULL;
    XP_TRY(load_pem(pem_path, 0, &pkey, err));
    expert_public_key *k = xp_malloc(sizeof *k);
    if (k == NULL) {
        EVP_PKEY_free(pkey);
        return xp_set_error(err, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "out of memory");
    }
    k->pkey = pkey;
    *out = k;
    return EXPERT_OK;
}

void expert_private_key_free(expert_private_key *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    xp_free(k);
}

void expert_public_key_free(expert_public_key *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    xp_free(k);
}
