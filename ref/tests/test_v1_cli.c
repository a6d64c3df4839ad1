/*
 * test_v1_cli.c — `expert-cli convert` end to end (binary from $EXPERT_CLI):
 * v1 -> v2 -> `extract` gives identical files, tensors bit-exact through the
 * library; v2 -> v1 -> `tar -xzf` identical, with a valid sidecar; the lossy
 * --dtype path and its error report; batch mode (parallel, failures with
 * reasons, no partial output, resumable); v1 signatures.
 * Without $EXPERT_CLI the tests print "SKIPPED" and are skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "test_v1_common.h"

static const char *g_cli;
static char *g_dir;
static char g_msg[512];

#define NEED_CLI()                                                                                \
    do {                                                                                          \
        if (g_cli == NULL) {                                                                      \
            print_message("SKIPPED: EXPERT_CLI not set\n");                                       \
            skip();                                                                               \
        }                                                                                         \
    } while (0)

#define CHECK0(expr)                                                                              \
    do {                                                                                          \
        if ((expr) != 0)                                                                          \
            fail_msg("%s: %s", #expr, g_msg);                                                     \
    } while (0)

static char *path(const char *name)
{
    return path_join(g_dir, name);
}

static void write_pkg(pkg *p, const char *name)
{
    size_t n = 0;
    uint8_t *tgz = pkg_targz(p, &n);
    char *f = path(name);
    assert_int_equal(file_save(f, tgz, n), 0);
    free(f);
    free(tgz);
}

static char *slurp_text(const char *name)
{
    char *f = path(name);
    size_t n = 0;
    uint8_t *d = read_all(f, &n);
    free(f);
    if (d == NULL)
        return NULL;
    char *t = realloc(d, n + 1);
    t[n] = '\0';
    return t;
}

static void test_convert_roundtrip(void **state)
{
    (void)state;
    NEED_CLI();
    pkg p;
    pkg_make(&p, PK_DORA, 2, 4, 501);
    write_pkg(&p, "rt.v1.expert");
    char *in = path("rt.v1.expert"), *v2 = path("rt.v2.expert"), *x = path("rt-x"),
         *back = path("rt.back.expert"), *tx = path("rt-tar");
    assert_int_equal(run_cmd(NULL, "'%s' convert -q '%s' '%s'", g_cli, in, v2), 0);
    /* through the library */
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open_any(v2, NULL, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_reader_source_format(r), 2);
    assert_int_equal(expert_verify_full(r, NULL, &e), EXPERT_OK);
    CHECK0(check_pkg_tensors(r, &p, g_msg, sizeof g_msg));
    CHECK0(check_pkg_files(r, &p, g_msg, sizeof g_msg));
    expert_close(r);
    /* `extract` gives the original files */
    assert_int_equal(run_cmd(NULL, "'%s' extract -q '%s' -o '%s'", g_cli, v2, x), 0);
    CHECK0(check_pkg_dir(x, &p, g_msg, sizeof g_msg));
    /* refuses to replace OUT without --force */
    assert_int_equal(run_cmd(NULL, "'%s' convert -q '%s' '%s' 2>/dev/null", g_cli, in, v2), 1);
    assert_int_equal(run_cmd(NULL, "'%s' convert -q --force --level 3 '%s' '%s'", g_cli, in, v2), 0);
    /* rollback: tar -xzf accepts it; the sidecar matches */
    assert_int_equal(run_cmd(NULL, "'%s' convert -q --to v1 '%s' '%s'", g_cli, v2, back), 0);
    if (run_cmd(NULL, "tar --version >/dev/null 2>&1") != 0) {
        print_message("SKIPPED: tar not found\n");
    } else {
        mkdir(tx, 0755);
        assert_int_equal(run_cmd(NULL, "tar -xzf '%s' -C '%s'", back, tx), 0);
        CHECK0(check_pkg_dir(tx, &p, g_msg, sizeof g_msg));
    }
    if (run_cmd(NULL, "sha256sum --version >/dev/null 2>&1") == 0)
        assert_int_equal(run_cmd(NULL, "cd '%s' && sha256sum -c --quiet rt.back.expert.sha256", g_dir), 0);
    assert_int_equal(expert_open_any(back, NULL, NULL, &r, &e), EXPERT_OK);
    expert_v1_info vi;
    expert_v1_info_get(r, &vi);
    assert_int_equal(vi.sidecar, EXPERT_V1_SIDECAR_MATCH);
    for (int i = 0; i < p.n; i++)
        assert_string_equal(expert_v1_entry_name(r, (uint32_t)i), p.f[i].name);
    expert_close(r);
    free(in);
    free(v2);
    free(x);
    free(back);
    free(tx);
    pkg_free(&p);
}

static uint16_t ref_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void test_convert_lossy(void **state)
{
    (void)state;
    NEED_CLI();
    pkg p;
    pkg_make(&p, PK_LORA, 1, 4, 601);
    {
        /* -FLT_MAX (a special value of the test data) rounds to -inf in bf16:
         * refused. Replace it to test the successful path. */
        write_pkg(&p, "flt-max.v1.expert");
        char *fin = path("flt-max.v1.expert"), *fout = path("flt-max.bf16.expert");
        assert_int_equal(run_cmd(NULL, "'%s' convert -q --dtype bf16 '%s' '%s' 2>/dev/null", g_cli,
                                 fin, fout),
                         EXPERT_E_INVALID_ARGUMENT);
        assert_false(access(fout, F_OK) == 0);
        free(fin);
        free(fout);
        pkg_file *sf0 = pkg_get(&p, "adapter_model.safetensors");
        uint64_t hn = 0;
        for (int i = 0; i < 8; i++)
            hn |= (uint64_t)sf0->data[i] << (8 * i);
        uint32_t bits;
        memcpy(&bits, sf0->data + 8 + hn + 16, 4);
        assert_int_equal(bits, 0xff7fffffu);
        float one = 1.0f;
        memcpy(sf0->data + 8 + hn + 16, &one, 4);
    }
    write_pkg(&p, "lossy.v1.expert");
    char *in = path("lossy.v1.expert"), *out = path("lossy.bf16.expert"), *js = path("lossy.json");
    assert_int_equal(run_cmd(js, "'%s' convert --json --dtype bf16 '%s' '%s'", g_cli, in, out), 0);
    char *text = slurp_text("lossy.json");
    assert_non_null(strstr(text, "\"lossy\":{"));
    const char *ma = strstr(text, "\"max_abs_error\":");
    assert_non_null(ma);
    double reported = strtod(ma + 16, NULL);
    /* independent check: every F32 value became its round-to-nearest-even bf16 */
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open_any(out, NULL, NULL, &r, &e), EXPERT_OK);
    pkg_file *sf = pkg_get(&p, "adapter_model.safetensors");
    expert_safetensors *st = NULL;
    assert_int_equal(expert_safetensors_parse(sf->data, sf->size, &st, &e), EXPERT_OK);
    double max_abs = 0;
    for (uint32_t i = 0; i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        uint32_t idx;
        expert_section_info si;
        expert_safetensors_tensor(st, i, &t);
        assert_int_equal(expert_find(r, t.name, strlen(t.name), &idx), EXPERT_OK);
        expert_section(r, idx, &si);
        assert_int_equal(si.dtype, EXPERT_DTYPE_BF16);
        assert_int_equal(si.decoded_length, t.data_length / 2);
        uint16_t *h = malloc(si.decoded_length);
        assert_int_equal(expert_read(r, idx, h, si.decoded_length, 0, &e), EXPERT_OK);
        for (uint64_t k = 0; k < t.data_length / 4; k++) {
            uint32_t u;
            memcpy(&u, sf->data + t.data_offset + 4 * k, 4);
            assert_int_equal(h[k], ref_bf16(u));
            float x, y;
            uint32_t yb = (uint32_t)h[k] << 16;
            memcpy(&x, &u, 4);
            memcpy(&y, &yb, 4);
            if (isfinite(x) && fabs((double)x - (double)y) > max_abs)
                max_abs = fabs((double)x - (double)y);
        }
        free(h);
    }
    assert_true(fabs(max_abs - reported) <= 1e-9 * max_abs);
    /* metadata records it; the extracted safetensors is a valid BF16 file */
    size_t ml;
    assert_non_null(strstr(expert_metadata_json(r, &ml), "\"lossy\":{\"dtype\":\"bf16\""));
    uint32_t hidx;
    assert_int_equal(expert_find(r, "adapter_model.safetensors", 25, &hidx), EXPERT_OK);
    void *rebuilt = NULL;
    size_t rn = 0;
    assert_int_equal(expert_file_rebuild(r, hidx, &rebuilt, &rn, &e), EXPERT_OK);
    expert_safetensors *st2 = NULL;
    assert_int_equal(expert_safetensors_parse(rebuilt, rn, &st2, &e), EXPERT_OK);
    expert_tensor_info t0;
    expert_safetensors_tensor(st2, 0, &t0);
    assert_int_equal(t0.dtype, EXPERT_DTYPE_BF16);
    expert_safetensors_free(st2);
    expert_v1_free(rebuilt);
    expert_safetensors_free(st);
    expert_close(r);
    /* the lossless default changes nothing: compare with --dtype absent */
    free(text);
    /* f16 cannot hold 1e6: refused, and nothing is left at OUT */
    {
        st_spec specs[2] = {{"m.lora_A.weight", "F32", 2, {4, 2, 0, 0}}, /* r = 4 as the config */
                            {"m.lora_B.weight", "F32", 2, {2, 4, 0, 0}}};
        size_t n = 0;
        uint8_t *stb = st_build(specs, 2, 5, &n);
        float big = 1e6f, half = 0.5f;
        memcpy(stb + n - 4, &big, 4);
        uint64_t hn = 0;
        for (int i = 0; i < 8; i++)
            hn |= (uint64_t)stb[i] << (8 * i);
        memcpy(stb + 8 + hn + 16, &half, 4); /* drop the -FLT_MAX special value */
        pkg_set(&p, "adapter_model.safetensors", stb, n);
        free(stb);
        write_pkg(&p, "big.v1.expert");
        char *bin = path("big.v1.expert"), *bout = path("big.f16.expert");
        assert_int_equal(run_cmd(NULL, "'%s' convert -q --dtype f16 '%s' '%s' 2>/dev/null", g_cli, bin,
                                 bout),
                         EXPERT_E_INVALID_ARGUMENT);
        assert_false(access(bout, F_OK) == 0);
        assert_int_equal(run_cmd(NULL, "'%s' convert -q --dtype bf16 '%s' '%s'", g_cli, bin, bout), 0);
        free(bin);
        free(bout);
    }
    /* v2-only options are refused with --to v1 */
    assert_int_equal(run_cmd(NULL, "'%s' convert -q --to v1 --dtype bf16 '%s' x 2>/dev/null", g_cli, out),
                     64);
    free(in);
    free(out);
    free(js);
    pkg_free(&p);
}

static int count_tmp_files(const char *dir)
{
    return run_cmd(NULL, "test -z \"$(find '%s' -name '*.tmp.*' -o -name '.*tmp*' | head -1)\"", dir);
}

static void test_convert_batch(void **state)
{
    (void)state;
    NEED_CLI();
    char *in = path("batch-in"), *sub = path("batch-in/sub/deeper"), *out = path("batch-out");
    char *sj = path("batch.json"), *sm = path("batch.md"), *rj = path("batch-rerun.json");
    assert_int_equal(run_cmd(NULL, "mkdir -p '%s'", sub), 0);
    pkg ps[3];
    for (int i = 0; i < 3; i++) {
        char name[64];
        pkg_make(&ps[i], (pkg_kind)i, 1 + (unsigned)i, 4, 700 + (uint64_t)i);
        snprintf(name, sizeof name, i == 2 ? "batch-in/sub/deeper/p%d.expert" : "batch-in/p%d.expert", i);
        write_pkg(&ps[i], name);
    }
    /* one v2 input (skipped: already v2), one broken, one non-.expert file */
    char *p0 = path("batch-in/p0.expert"), *v2in = path("batch-in/already.expert");
    assert_int_equal(run_cmd(NULL, "'%s' convert -q '%s' '%s'", g_cli, p0, v2in), 0);
    {
        size_t n = 0;
        uint8_t *tgz = pkg_targz(&ps[1], &n);
        char *bf = path("batch-in/sub/broken.expert");
        assert_int_equal(file_save(bf, tgz, n / 2), 0);
        free(bf);
        free(tgz);
        char *txt = path("batch-in/notes.txt");
        assert_int_equal(file_save(txt, "x", 1), 0);
        free(txt);
    }
    int rc = run_cmd(NULL, "'%s' convert -q --batch '%s' '%s' --jobs 3 --summary-json '%s' --summary-md '%s' 2>/dev/null",
                     g_cli, in, out, sj, sm);
    assert_int_equal(rc, EXPERT_E_BAD_ARCHIVE); /* the first failure's class */
    char *s = slurp_text("batch.json");
    assert_non_null(s);
    assert_non_null(strstr(s, "\"total\":5,\"converted\":3,\"skipped\":1,\"failed\":1"));
    assert_non_null(strstr(s, "\"failures\":[{\"input\":"));
    assert_non_null(strstr(s, "broken.expert\",\"class\":\"BAD_ARCHIVE\",\"reason\":\"truncated"));
    assert_non_null(strstr(s, "\"bytes_before\":"));
    assert_non_null(strstr(s, "\"ratio\":"));
    free(s);
    s = slurp_text("batch.md");
    assert_non_null(strstr(s, "| input | status |"));
    assert_non_null(strstr(s, "**failed**"));
    free(s);
    /* outputs: converted ones open and match; no partial output anywhere */
    const char *outs[3] = {"batch-out/p0.expert", "batch-out/p1.expert", "batch-out/sub/deeper/p2.expert"};
    for (int i = 0; i < 3; i++) {
        char *o = path(outs[i]);
        expert_reader *r = NULL;
        expert_error e;
        assert_int_equal(expert_open_any(o, NULL, NULL, &r, &e), EXPERT_OK);
        CHECK0(check_pkg_files(r, &ps[i], g_msg, sizeof g_msg));
        CHECK0(check_pkg_tensors(r, &ps[i], g_msg, sizeof g_msg));
        expert_close(r);
        free(o);
    }
    char *bo = path("batch-out/sub/broken.expert");
    assert_false(access(bo, F_OK) == 0);
    assert_int_equal(count_tmp_files(out), 0);
    /* resumable: nothing left to do */
    rc = run_cmd(rj, "'%s' convert --json --batch '%s' '%s' --jobs 2 2>/dev/null", g_cli, in, out);
    assert_int_equal(rc, EXPERT_E_BAD_ARCHIVE);
    s = slurp_text("batch-rerun.json");
    assert_non_null(strstr(s, "\"converted\":0,\"skipped\":4,\"failed\":1"));
    assert_non_null(strstr(s, "sections match"));
    free(s);
    /* a damaged output is redone */
    char *o1 = path("batch-out/p1.expert");
    assert_int_equal(run_cmd(NULL, "truncate -s -100 '%s'", o1), 0);
    rc = run_cmd(rj, "'%s' convert --json --batch '%s' '%s' 2>/dev/null", g_cli, in, out);
    s = slurp_text("batch-rerun.json");
    assert_non_null(strstr(s, "\"converted\":1,\"skipped\":3,\"failed\":1"));
    free(s);
    /* rollback of the whole tree */
    char *back = path("batch-back");
    rc = run_cmd(NULL, "'%s' convert -q --batch --to v1 '%s' '%s' 2>/dev/null", g_cli, out, back);
    assert_int_equal(rc, 0);
    char *b2 = path("batch-back/sub/deeper/p2.expert");
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open_any(b2, NULL, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_reader_source_format(r), 1);
    CHECK0(check_pkg_files(r, &ps[2], g_msg, sizeof g_msg));
    expert_close(r);
    free(b2);
    free(back);
    free(o1);
    free(bo);
    free(p0);
    free(v2in);
    for (int i = 0; i < 3; i++)
        pkg_free(&ps[i]);
    free(in);
    free(sub);
    free(out);
    free(sj);
    free(sm);
    free(rj);
}

static void test_convert_signed(void **state)
{
    (void)state;
    NEED_CLI();
    pkg p;
    uint8_t seed[32];
    char pub[73];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i ^ 0x5a);
    pkg_make(&p, PK_DORA, 1, 2, 801);
    pkg_sign_v1(&p, seed, pub);
    write_pkg(&p, "signed.v1.expert");
    char *in = path("signed.v1.expert"), *out = path("signed.v2.expert"), *js = path("signed.json");
    assert_int_equal(run_cmd(js, "'%s' convert --json '%s' '%s'", g_cli, in, out), 0);
    char *s = slurp_text("signed.json");
    assert_non_null(strstr(s, "\"v1_signature\":{\"status\":\"valid-legacy\""));
    free(s);
    /* required key: a wrong one fails and writes nothing */
    char *out2 = path("signed2.v2.expert");
    assert_int_equal(run_cmd(NULL, "'%s' convert -q --v1-pubkey ed25519:%064d '%s' '%s' 2>/dev/null",
                             g_cli, 7, in, out2),
                     EXPERT_E_BAD_SIGNATURE);
    assert_false(access(out2, F_OK) == 0);
    assert_int_equal(run_cmd(NULL, "'%s' convert -q --v1-pubkey %s '%s' '%s'", g_cli, pub, in, out2), 0);
    /* the v1 signature still verifies on the converted v2 */
    expert_reader *r = NULL;
    expert_error e;
    expert_v1_signature_info si;
    assert_int_equal(expert_open_any(out2, NULL, NULL, &r, &e), EXPERT_OK);
    assert_int_equal(expert_v1_verify(r, pub, &si, &e), EXPERT_OK);
    assert_int_equal(si.status, EXPERT_V1_SIG_VALID_LEGACY);
    expert_close(r);
    free(in);
    free(out);
    free(out2);
    free(js);
    pkg_free(&p);
}

/* ------------------------------------------- pack DIR == convert DIR.tar.gz */

static void pkg_remove(pkg *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->f[i].name, name) == 0) {
            free(p->f[i].data);
            memmove(&p->f[i], &p->f[i + 1], (size_t)(p->n - i - 1) * sizeof p->f[0]);
            p->n--;
            return;
        }
}

static void write_pkg_dir(const pkg *p, const char *dir)
{
    assert_int_equal(run_cmd(NULL, "rm -rf '%s' && mkdir -p '%s/tests'", dir, dir), 0);
    for (int i = 0; i < p->n; i++) {
        char *f = path_join(dir, p->f[i].name);
        assert_int_equal(file_save(f, p->f[i].data, p->f[i].size), 0);
        free(f);
    }
}

/* Metadata without what may differ between the two writers. */
static json_t *meta_core(expert_reader *r)
{
    size_t n = 0;
    const char *m = expert_metadata_json(r, &n);
    json_t *j = json_loadb(m, n, 0, NULL);
    assert_non_null(j);
    json_object_del(j, "created_by");
    json_object_del(j, "extra");
    return j;
}

static void same_package(const char *a_path, const char *b_path)
{
    expert_reader *a = NULL, *b = NULL;
    expert_error e;
    expert_open_options v2 = {.flags = EXPERT_OPEN_V2_ONLY, .threads = 0};
    assert_int_equal(expert_open(a_path, &v2, &a, &e), EXPERT_OK);
    assert_int_equal(expert_open(b_path, &v2, &b, &e), EXPERT_OK);
    assert_int_equal(expert_section_count(a), expert_section_count(b));
    for (uint32_t i = 0; i < expert_section_count(a); i++) {
        expert_section_info x, y;
        assert_int_equal(expert_section(a, i, &x), EXPERT_OK);
        assert_int_equal(expert_section(b, i, &y), EXPERT_OK);
        if (x.name_length != y.name_length || memcmp(x.name, y.name, x.name_length) != 0 ||
            x.type != y.type || x.dtype != y.dtype || x.rank != y.rank || x.layer != y.layer ||
            x.module != y.module || memcmp(x.dims, y.dims, sizeof x.dims) != 0 ||
            memcmp(x.sha256, y.sha256, 32) != 0)
            fail_msg("section %u differs: '%.*s' vs '%.*s'", i, (int)x.name_length, x.name,
                     (int)y.name_length, y.name);
    }
    json_t *ma = meta_core(a), *mb = meta_core(b);
    if (!json_equal(ma, mb)) {
        char *ta = json_dumps(ma, JSON_COMPACT), *tb = json_dumps(mb, JSON_COMPACT);
        fail_msg("metadata differs:\n  pack:    %s\n  convert: %s", ta, tb);
    }
    json_decref(ma);
    json_decref(mb);
    expert_close(a);
    expert_close(b);
}

/* The PEFT semantics both paths must give (spec §9.5). */
typedef struct pack_variant {
    const char *what;
    pkg_kind kind;
    const char *config; /* adapter_config.json; NULL: the package has none */
    int fails;          /* the config contradicts the tensors: both must refuse */
    double (*alpha)(const char *path);
    int rslora;
    int (*feedforward)(const char *path);
} pack_variant;

static double alpha_peft_default(const char *path) { (void)path; return 8.0; }
static double alpha_manifest(const char *path) { (void)path; return 12.0; } /* pkg_make: 2r */
static double alpha_16(const char *path) { (void)path; return 16.0; }
static double alpha_by_pattern(const char *path)
{
    if (strstr(path, ".layers.1.self_attn.v_proj") != NULL)
        return 5.0;
    if (strstr(path, ".q_proj") != NULL)
        return 3.0;
    return 16.0;
}
static int ff_down(const char *path) { return strstr(path, "down_proj") != NULL; }

#define LORA_CFG(extra) "{\"peft_type\":\"LORA\"," extra "\"target_modules\":[\"q_proj\"," \
    "\"k_proj\",\"v_proj\",\"o_proj\",\"up_proj\",\"down_proj\"]}"

static const pack_variant k_variants[] = {
    {"no lora_alpha: PEFT's default 8, not the manifest's 12", PK_LORA,
     LORA_CFG("\"r\":6,\"use_dora\":false,"), 0, alpha_peft_default, 0, NULL},
    {"no adapter_config.json: the manifest adapter's alpha", PK_LORA, NULL, 0, alpha_manifest, 0,
     NULL},
    {"alpha_pattern keys are regexes, first match wins", PK_LORA,
     LORA_CFG("\"r\":6,\"lora_alpha\":16,\"alpha_pattern\":{\"layers\\\\.1\\\\.self_attn\\\\.v_proj\":5,"
              "\"q_proj\":3},"),
     0, alpha_by_pattern, 0, NULL},
    {"rank_pattern that disagrees with lora_A", PK_LORA,
     LORA_CFG("\"r\":6,\"lora_alpha\":16,\"rank_pattern\":{\"o_proj\":5},"), 1, NULL, 0, NULL},
    {"rank_pattern (a regex) overrides r", PK_LORA,
     LORA_CFG("\"r\":99,\"lora_alpha\":16,\"rank_pattern\":{\"(q|k|v|o|up|down)_proj\":6},"),
     0, alpha_16, 0, NULL},
    {"use_rslora", PK_LORA, LORA_CFG("\"r\":6,\"lora_alpha\":16,\"use_rslora\":true,"), 0, alpha_16, 1,
     NULL},
    {"use_dora true with magnitudes", PK_DORA, LORA_CFG("\"r\":6,\"lora_alpha\":16,\"use_dora\":true,"), 0,
     alpha_16, 0, NULL},
    {"use_dora true without magnitudes", PK_LORA, LORA_CFG("\"r\":6,\"lora_alpha\":16,\"use_dora\":true,"),
     1, NULL, 0, NULL},
    {"feedforward_modules as a list", PK_IA3,
     "{\"peft_type\":\"IA3\",\"feedforward_modules\":[\"down_proj\"]}", 0, NULL, 0, ff_down},
    {"feedforward_modules as a regex string", PK_IA3,
     "{\"peft_type\":\"IA3\",\"feedforward_modules\":\"model\\\\.layers\\\\.\\\\d+\\\\.mlp\\\\.down_proj\"}",
     0, NULL, 0, ff_down},
    {"feedforward_modules regex naming a [out,1] vector", PK_IA3,
     "{\"peft_type\":\"IA3\",\"feedforward_modules\":\".*_proj\"}", 1, NULL, 0, NULL},
};

static void check_semantics(const pack_variant *v, const char *file)
{
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open_any(file, NULL, NULL, &r, &e), EXPERT_OK);
    assert_true(expert_module_count(r) > 0);
    for (uint32_t i = 0; i < expert_module_count(r); i++) {
        expert_module_info m;
        assert_int_equal(expert_module(r, i, &m), EXPERT_OK);
        if (v->alpha != NULL && fabs(m.alpha - v->alpha(m.path)) > 0)
            fail_msg("%s: module %s alpha %g, want %g", v->what, m.path, m.alpha, v->alpha(m.path));
        if (v->alpha != NULL && m.rslora != v->rslora)
            fail_msg("%s: module %s rslora %d", v->what, m.path, m.rslora);
        if (v->feedforward != NULL && m.feedforward != v->feedforward(m.path))
            fail_msg("%s: module %s feedforward %d", v->what, m.path, m.feedforward);
    }
    expert_close(r);
}

static void test_pack_matches_convert(void **state)
{
    (void)state;
    NEED_CLI();
    char *dir = path("pv-dir"), *tgz = path("pv.tar.gz"), *a = path("pv-pack.expert"),
         *b = path("pv-convert.expert");
    for (size_t k = 0; k < sizeof k_variants / sizeof k_variants[0]; k++) {
        const pack_variant *v = &k_variants[k];
        pkg p;
        pkg_make(&p, v->kind, 2, 6, 700 + k);
        if (v->config != NULL)
            pkg_set(&p, "adapter_config.json", v->config, strlen(v->config));
        else
            pkg_remove(&p, "adapter_config.json");
        write_pkg_dir(&p, dir);
        write_pkg(&p, "pv.tar.gz");
        unlink(a);
        unlink(b);
        int ra = run_cmd(NULL, "'%s' pack -q --codec raw '%s' -o '%s' 2>/dev/null", g_cli, dir, a);
        int rb = run_cmd(NULL, "'%s' convert -q --codec raw '%s' '%s' 2>/dev/null", g_cli, tgz, b);
        if (v->fails) {
            if (ra == 0 || rb == 0)
                fail_msg("%s: pack exit %d, convert exit %d; both must refuse", v->what, ra, rb);
            assert_int_equal(ra, rb);
        } else {
            if (ra != 0 || rb != 0)
                fail_msg("%s: pack exit %d, convert exit %d", v->what, ra, rb);
            same_package(a, b);
            check_semantics(v, a);
        }
        pkg_free(&p);
    }
    free(dir);
    free(tgz);
    free(a);
    free(b);
}

/* pack refuses to replace OUT without --force; get --json prints the TOC
 * entry; get refuses binary to a terminal; validate --repeat reports p10/p90
 * only from 10 runs on. */
static void test_cli_edges(void **state)
{
    (void)state;
    NEED_CLI();
    pkg p;
    pkg_make(&p, PK_LORA, 1, 4, 900);
    char *dir = path("edge-dir"), *out = path("edge.expert"), *js = path("edge.json"),
         *bin = path("edge.bin");
    write_pkg_dir(&p, dir);
    unlink(out);
    assert_int_equal(run_cmd(NULL, "'%s' pack -q '%s' -o '%s'", g_cli, dir, out), 0);
    assert_int_not_equal(run_cmd(NULL, "'%s' pack -q '%s' -o '%s' 2>/dev/null", g_cli, dir, out), 0);
    assert_int_equal(run_cmd(NULL, "'%s' pack -q --force '%s' -o '%s'", g_cli, dir, out), 0);

    assert_int_equal(run_cmd(js, "'%s' get --json '%s' adapter_config.json", g_cli, out), 0);
    char *text = slurp_text("edge.json");
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "adapter_config.json");
    assert_int_equal(json_string_length(json_object_get(j, "sha256")), 64);
    assert_null(json_object_get(j, "output"));
    json_decref(j);
    free(text);
    assert_int_equal(run_cmd(js, "'%s' get --json -o '%s' '%s' adapter_config.json", g_cli, bin, out), 0);
    text = slurp_text("edge.json");
    j = json_loads(text, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "output")), bin);
    json_decref(j);
    free(text);
    pkg_file *cfg = pkg_get(&p, "adapter_config.json");
    size_t n = 0;
    uint8_t *got = read_all(bin, &n);
    assert_int_equal(n, cfg->size);
    assert_memory_equal(got, cfg->data, n);
    free(got);
    if (run_cmd(NULL, "script --version >/dev/null 2>&1") != 0) {
        print_message("SKIPPED: script(1) not installed, get-to-terminal not checked\n");
    } else {
        /* under script(1) standard output is a pseudo-terminal */
        assert_int_not_equal(run_cmd(NULL, "script -qec \"'%s' get '%s' adapter_config.json\" /dev/null "
                                           ">/dev/null 2>&1", g_cli, out), 0);
    }

    for (int runs = 3; runs <= 12; runs += 9) {
        assert_int_equal(run_cmd(js, "'%s' validate --json --repeat %d '%s'", g_cli, runs, out), 0);
        text = slurp_text("edge.json");
        j = json_loads(text, 0, NULL);
        assert_non_null(j);
        const json_t *t = json_object_get(j, "timing");
        assert_true(runs < 11 ? json_is_null(json_object_get(t, "p10_us"))
                              : json_is_number(json_object_get(t, "p10_us")));
        json_decref(j);
        free(text);
    }
    free(dir);
    free(out);
    free(js);
    free(bin);
    pkg_free(&p);
}

static int setup(void **state)
{
    (void)state;
    g_cli = getenv("EXPERT_CLI");
    if (g_cli != NULL && access(g_cli, X_OK) != 0)
        g_cli = NULL;
    g_dir = tmpdir_make("cli");
    return g_dir == NULL;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_roundtrip),
        cmocka_unit_test(test_convert_lossy),
        cmocka_unit_test(test_convert_batch),
        cmocka_unit_test(test_convert_signed),
        cmocka_unit_test(test_pack_matches_convert),
        cmocka_unit_test(test_cli_edges),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
