/* v1_sign.c — the v1 package signature scheme of the old hivellm tool
 * (Ed25519 over the sorted "path:sha256" lines of the package files), for
 * readers of either format: every package file is rebuilt from the
 * sections (v1_collect_files) and hashed. Also signs, for fixtures. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "v1.h"


/* ===================================================== file rebuild */

void v1_pfiles_free(v1_pfiles *p)
{
    for (uint32_t i = 0; i < p->count; i++) {
        expert_free(p->f[i].name);
        expert_free(p->f[i].data);
    }
    expert_free(p->f);
    memset(p, 0, sizeof *p);
}

/* The tensor sections a rebuilt safetensors file was made of (it was
 * rebuilt from them, so its header parses and every tensor has one). */
static void mark_tensors(const expert_reader *r, const uint8_t *file, size_t size, uint8_t *used)
{
    expert_safetensors *st = NULL;
    if (expert_safetensors_parse(file, size, &st, NULL) != EXPERT_OK)
        return;
    for (uint32_t t = 0; t < expert_safetensors_count(st); t++) {
        expert_tensor_info ti;
        uint32_t sec;
        if (expert_safetensors_tensor(st, t, &ti) == EXPERT_OK &&
            expert_find(r, ti.name, strlen(ti.name), &sec) == EXPERT_OK)
            used[sec] = 1;
    }
    expert_safetensors_free(st);
}

expert_status v1_collect_files(expert_reader *r, int require_all, v1_pfiles *out,
                                   expert_error *err)
{
    uint32_t n = expert_section_count(r);
    uint8_t *used = v1_calloc(n ? n : 1, 1);
    out->f = v1_calloc(n ? n : 1, sizeof *out->f);
    out->count = 0;
    if (used == NULL || out->f == NULL) {
        expert_free(used);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    expert_status s = EXPERT_OK;
    for (uint32_t i = 0; s == EXPERT_OK && i < n; i++) {
        expert_section_info si;
        expert_section(r, i, &si);
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        used[i] = 1;
        v1_pfile *f = &out->f[out->count];
        f->name = v1_strndup(si.name, si.name_length);
        if (f->name == NULL) {
            s = FAIL(EXPERT_E_NOMEM, "out of memory");
            break;
        }
        out->count++;
        void *data = NULL;
        s = expert_file_rebuild(r, i, &data, &f->size, err);
        f->data = data;
        if (s == EXPERT_OK && si.type == EXPERT_SECTION_SAFETENSORS_HEADER)
            mark_tensors(r, f->data, f->size, used);
    }
    for (uint32_t i = 0; s == EXPERT_OK && require_all && i < n; i++) {
        expert_section_info si;
        expert_section(r, i, &si);
        if (!used[i] && si.type < 0x8000) /* must-ignore types may be dropped */
            s = expert_error_set(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_OFFSET, i,
                             "section '%.*s' (%s) belongs to no package file: a v1 package "
                             "cannot hold it",
                             (int)si.name_length, si.name, expert_section_type_name(si.type));
    }
    expert_free(used);
    if (s != EXPERT_OK)
        v1_pfiles_free(out);
    return s;
}

/* ====================================================== v1 signatures */

static expert_status ed25519_verify_raw(const uint8_t pub[32], const uint8_t *msg, size_t len,
                                        const uint8_t sig[64])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = k != NULL && md != NULL && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return ok ? EXPERT_OK : EXPERT_E_BAD_SIGNATURE;
}

expert_status expert_v1_sign_raw(const uint8_t seed[32], const void *msg, size_t length,
                                 uint8_t signature[64], uint8_t public_key[32], expert_error *err)
{
    if (seed == NULL || (msg == NULL && length != 0) || signature == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t siglen = 64, publen = 32;
    static const uint8_t empty = 0;
    int ok = k != NULL && md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestSign(md, signature, &siglen, length ? msg : &empty, length) == 1 &&
             siglen == 64;
    if (ok && public_key != NULL)
        ok = EVP_PKEY_get_raw_public_key(k, public_key, &publen) == 1 && publen == 32;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return ok ? EXPERT_OK : FAIL(EXPERT_E_BAD_KEY, "Ed25519 signing with the raw seed failed");
}

static int parse_pubkey_text(const char *text, uint8_t out[32])
{
    if (strncmp(text, "ed25519:", 8) == 0)
        text += 8;
    return v1_hex_decode(text, strlen(text), out, 32);
}

/* JSON text scanner for the top-level members of an object: enough to cut
 * one member out of serde_json's pretty output without re-serialising. */
static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static size_t skip_string(const char *s, size_t n, size_t i) /* at '"'; returns past the closing quote, or n+1 */
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n + 1;
}

static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return n + 1;
    if (s[i] == '"')
        return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            if (s[i] == '"') {
                i = skip_string(s, n, i);
                continue;
            }
            if (s[i] == '{' || s[i] == '[')
                depth++;
            else if (s[i] == '}' || s[i] == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return n + 1;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
           s[i] != '\r' && s[i] != '\t')
        i++;
    return i;
}

/* Hash of manifest.json with the top-level "integrity" member cut out, in
 * each of the two ways the separator may go; 1 if one equals want. */
static int manifest_matches_without_integrity(const uint8_t *data, size_t n, const uint8_t want[32])
{
    const char *s = (const char *)data;
    size_t i = skip_ws(s, n, 0), prev_end = 0;
    if (i >= n || s[i] != '{')
        return 0;
    prev_end = i + 1;
    i = skip_ws(s, n, i + 1);
    while (i < n && s[i] == '"') {
        size_t key_start = i, key_end = skip_string(s, n, i);
        if (key_end > n)
            return 0;
        size_t j = skip_ws(s, n, key_end);
        if (j >= n || s[j] != ':')
            return 0;
        size_t vend = skip_value(s, n, skip_ws(s, n, j + 1));
        if (vend > n)
            return 0;
        size_t after = skip_ws(s, n, vend);
        int last = after < n && s[after] == '}';
        size_t next_key = after < n && s[after] == ',' ? skip_ws(s, n, after + 1) : after;
        if (key_end - key_start == 11 && memcmp(s + key_start, "\"integrity\"", 11) == 0) {
            size_t cuts[2][2] = {{prev_end, vend}, {key_start, last ? vend : next_key}};
            for (int c = 0; c < 2; c++) {
                size_t a = cuts[c][0], b = cuts[c][1];
                uint8_t *tmp = expert_malloc(n - (b - a) + 1);
                uint8_t d[32];
                if (tmp == NULL)
                    return 0;
                memcpy(tmp, data, a);
                memcpy(tmp + a, data + b, n - b);
                int ok = expert_sha256(tmp, n - (b - a), d) == EXPERT_OK && memcmp(d, want, 32) == 0;
                expert_free(tmp);
                if (ok)
                    return 1;
            }
            return 0;
        }
        if (last)
            return 0;
        prev_end = vend;
        i = next_key;
    }
    return 0;
}

static int cstr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

#define SIG_SET(st, ...)                                                                          \
    do {                                                                                          \
        info->status = (st);                                                                      \
        snprintf(info->detail, sizeof info->detail, __VA_ARGS__);                                 \
    } while (0)

static expert_status sig_result(expert_v1_signature_info *info, expert_error *err)
{
    switch (info->status) {
    case EXPERT_V1_SIG_VALID:
    case EXPERT_V1_SIG_VALID_LEGACY:
        return EXPERT_OK;
    case EXPERT_V1_SIG_UNSIGNED:
        return FAIL(EXPERT_E_UNSIGNED, "%s", info->detail);
    default:
        return FAIL(EXPERT_E_BAD_SIGNATURE, "%s", info->detail);
    }
}

expert_status expert_v1_verify(expert_reader *r, const char *trusted_pubkey,
                               expert_v1_signature_info *out, expert_error *err)
{
    expert_v1_signature_info local, *info = out != NULL ? out : &local;
    memset(info, 0, sizeof *info);
    if (r == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    uint8_t trusted[32];
    if (trusted_pubkey != NULL && !parse_pubkey_text(trusted_pubkey, trusted))
        return FAIL(EXPERT_E_BAD_KEY, "public key must be \"ed25519:<64 hex digits>\"");

    v1_pfiles pf;
    memset(&pf, 0, sizeof pf);
    V1_TRY(v1_collect_files(r, 0, &pf, err));
    expert_status s = EXPERT_OK;
    json_t *manifest = NULL;
    char **names = NULL;
    uint8_t *msg = NULL;
    const v1_pfile *mf = NULL, *sigf = NULL;
    for (uint32_t i = 0; i < pf.count; i++) {
        if (strcmp(pf.f[i].name, MANIFEST_NAME) == 0)
            mf = &pf.f[i];
        else if (strcmp(pf.f[i].name, SIGNATURE_NAME) == 0)
            sigf = &pf.f[i];
    }
    if (mf != NULL) {
        json_error_t je;
        manifest = json_loadb((const char *)mf->data, mf->size, 0, &je);
    }
    const json_t *integ = json_object_get(manifest, "integrity");
    if (integ == NULL && sigf == NULL) {
        SIG_SET(EXPERT_V1_SIG_UNSIGNED, "the package carries no v1 signature (no integrity block "
                                        "in manifest.json, no signature.sig)");
        goto finish;
    }
    if (!json_is_object(integ)) {
        SIG_SET(EXPERT_V1_SIG_INVALID, "signature.sig is present but manifest.json has no "
                                       "integrity block: the signed file list is unknown");
        goto finish;
    }
    const char *sig_hex = v1_jstr(integ, "signature");
    const char *pub_hex = v1_jstr(integ, "pubkey");
    const char *alg = v1_jstr(integ, "signature_algorithm");
    const json_t *files = json_object_get(integ, "files");
    uint8_t sig[64], pub[32];
    if (alg != NULL && strcmp(alg, "ed25519") != 0) {
        SIG_SET(EXPERT_V1_SIG_INVALID, "unsupported signature_algorithm '%s'", alg);
        goto finish;
    }
    if (sig_hex == NULL && sigf != NULL) { /* fall back to signature.sig */
        size_t k = sigf->size;
        while (k > 0 && (sigf->data[k - 1] == '\n' || sigf->data[k - 1] == '\r' || sigf->data[k - 1] == ' '))
            k--;
        if (!v1_hex_decode((const char *)sigf->data, k, sig, 64)) {
            SIG_SET(EXPERT_V1_SIG_INVALID, "signature.sig is not 128 hex digits");
            goto finish;
        }
    } else if (sig_hex == NULL || !v1_hex_decode(sig_hex, strlen(sig_hex), sig, 64)) {
        SIG_SET(EXPERT_V1_SIG_INVALID, "integrity.signature is missing or not 128 hex digits");
        goto finish;
    }
    if (sigf != NULL) {
        uint8_t sig2[64];
        size_t k = sigf->size;
        while (k > 0 && (sigf->data[k - 1] == '\n' || sigf->data[k - 1] == '\r' || sigf->data[k - 1] == ' '))
            k--;
        if (!v1_hex_decode((const char *)sigf->data, k, sig2, 64) || memcmp(sig, sig2, 64) != 0) {
            SIG_SET(EXPERT_V1_SIG_INVALID, "signature.sig differs from integrity.signature");
            goto finish;
        }
    }
    if (trusted_pubkey != NULL) {
        memcpy(pub, trusted, 32);
    } else if (pub_hex == NULL || !parse_pubkey_text(pub_hex, pub)) {
        SIG_SET(EXPERT_V1_SIG_INVALID, "integrity.pubkey is missing or not \"ed25519:<64 hex>\"");
        goto finish;
    } else {
        info->key_from_package = 1;
    }
    memcpy(info->pubkey, "ed25519:", 8);
    v1_hex_encode(pub, 32, info->pubkey + 8);
    if (!json_is_object(files) || json_object_size(files) == 0) {
        SIG_SET(EXPERT_V1_SIG_INVALID, "integrity.files is missing or empty");
        goto finish;
    }
    /* Message: "<path>:<hex>" lines sorted by path, joined by "\n". */
    size_t nf = json_object_size(files), msg_len = 0, k = 0;
    names = v1_calloc(nf, sizeof *names);
    if (names == NULL) {
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto finish;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)files, key, val) {
        if (!json_is_string(val)) {
            SIG_SET(EXPERT_V1_SIG_INVALID, "integrity.files['%s'] is not a string", key);
            goto finish;
        }
        names[k++] = (char *)key;
        msg_len += strlen(key) + 1 + json_string_length(val) + 1;
    }
    qsort(names, nf, sizeof *names, cstr_cmp);
    msg = expert_malloc(msg_len + 1);
    if (msg == NULL) {
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto finish;
    }
    size_t mp = 0;
    for (size_t i = 0; i < nf; i++) {
        const char *h = json_string_value(json_object_get(files, names[i]));
        size_t kl = strlen(names[i]), hl = strlen(h);
        if (i > 0)
            msg[mp++] = '\n';
        memcpy(msg + mp, names[i], kl);
        mp += kl;
        msg[mp++] = ':';
        memcpy(msg + mp, h, hl);
        mp += hl;
    }
    info->files_signed = (uint32_t)nf;
    if (ed25519_verify_raw(pub, msg, mp, sig) != EXPERT_OK) {
        SIG_SET(EXPERT_V1_SIG_INVALID,
                "the Ed25519 signature does not verify over the %zu recorded file hashes with "
                "%s%s (wrong key, or the hash list was edited)",
                nf, info->pubkey, info->key_from_package ? " (the package's own key)" : "");
        goto finish;
    }
    /* The signed hashes are authentic: compare them with the files. */
    int manifest_state = 0; /* 0 matches, 1 matches without integrity, 2 changed */
    for (size_t i = 0; i < nf; i++) {
        const char *h = json_string_value(json_object_get(files, names[i]));
        const v1_pfile *f = NULL;
        uint8_t want[32], got[32];
        for (uint32_t j = 0; j < pf.count && f == NULL; j++)
            if (strcmp(pf.f[j].name, names[i]) == 0)
                f = &pf.f[j];
        if (f == NULL) {
            SIG_SET(EXPERT_V1_SIG_INVALID, "signed file '%s' is missing from the package", names[i]);
            goto finish;
        }
        if (!v1_hex_decode(h, strlen(h), want, 32)) {
            SIG_SET(EXPERT_V1_SIG_INVALID, "integrity.files['%s'] is not a SHA-256 hex digest",
                    names[i]);
            goto finish;
        }
        if (expert_sha256(f->data, f->size, got) != EXPERT_OK) {
            s = FAIL(EXPERT_E_NOMEM, "hashing failed");
            goto finish;
        }
        if (memcmp(got, want, 32) == 0) {
            info->files_matched++;
            continue;
        }
        if (strcmp(names[i], MANIFEST_NAME) == 0) {
            manifest_state = manifest_matches_without_integrity(f->data, f->size, want) ? 1 : 2;
            continue;
        }
        SIG_SET(EXPERT_V1_SIG_INVALID, "'%s' changed after signing (SHA-256 differs from the signed "
                                       "hash)", names[i]);
        goto finish;
    }
    for (uint32_t j = 0; j < pf.count; j++) {
        if (strcmp(pf.f[j].name, SIGNATURE_NAME) == 0 || json_object_get(files, pf.f[j].name) != NULL)
            continue;
        SIG_SET(EXPERT_V1_SIG_INVALID, "'%s' is not covered by the signature (added after signing)",
                pf.f[j].name);
        goto finish;
    }
    if (manifest_state == 0)
        SIG_SET(EXPERT_V1_SIG_VALID, "v1 signature valid: %zu files match their signed hashes%s", nf,
                info->key_from_package ? " (key taken from the package: integrity, not origin)" : "");
    else if (manifest_state == 1) {
        info->files_matched++;
        SIG_SET(EXPERT_V1_SIG_VALID_LEGACY,
                "v1 signature valid: %zu files match their signed hashes; manifest.json matches once "
                "the integrity block the old `expert-cli sign` inserted after hashing is removed "
                "(known defect of the old tool)%s",
                nf, info->key_from_package ? "; key taken from the package: integrity, not origin" : "");
    } else
        SIG_SET(EXPERT_V1_SIG_LEGACY_DEFECT,
                "cannot verify: the signature is valid for the hashes recorded at signing time and "
                "the other %u files match, but manifest.json changed after signing (the old "
                "`expert-cli sign` hashes manifest.json before inserting the integrity block, a known "
                "defect) and its signed content cannot be recovered",
                info->files_matched);
finish:
    expert_free(msg);
    expert_free(names);
    json_decref(manifest);
    v1_pfiles_free(&pf);
    if (s != EXPERT_OK)
        return s;
    return sig_result(info, err);
}
