/*
 * test_v1_multi.c — several experts open at once, v1 (tar.gz, from a path
 * and from memory) and v2 mixed, read from several threads: every tensor of
 * every expert must equal its source bytes. Each thread also opens and
 * closes its own v1 readers while the shared ones are in use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_v1_common.h"

#define N_EXPERTS 5
#define N_THREADS 8
#define ROUNDS 3

typedef struct expert_src {
    pkg p;
    expert_safetensors *st; /* over p's safetensors bytes */
    char *path;             /* the file opened (v1 or v2) */
    int format;
    expert_reader *r;       /* shared reader */
} expert_src;

static expert_src g_x[N_EXPERTS];
static atomic_int g_checked, g_bad;

static void check_expert(expert_reader *r, expert_src *x, int use_view)
{
    pkg_file *sf = pkg_get(&x->p, "adapter_model.safetensors");
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (uint32_t i = 0; i < expert_safetensors_count(x->st); i++) {
        expert_tensor_info t;
        uint32_t idx;
        expert_error e;
        expert_safetensors_tensor(x->st, i, &t);
        if (expert_find(r, t.name, strlen(t.name), &idx) != EXPERT_OK) {
            atomic_fetch_add(&g_bad, 1);
            continue;
        }
        expert_section_info si;
        expert_section(r, idx, &si);
        const void *v = NULL;
        size_t vl = 0;
        if (use_view && si.codec == EXPERT_CODEC_RAW) {
            if (expert_view(r, idx, &v, &vl, 0, &e) != EXPERT_OK) {
                atomic_fetch_add(&g_bad, 1);
                continue;
            }
        } else {
            if (cap < t.data_length) {
                free(buf);
                cap = t.data_length;
                buf = malloc(cap);
            }
            if (expert_read(r, idx, buf, cap, 0, &e) != EXPERT_OK) {
                atomic_fetch_add(&g_bad, 1);
                continue;
            }
            v = buf;
            vl = (size_t)si.decoded_length;
        }
        if (vl != t.data_length || memcmp(v, sf->data + t.data_offset, vl) != 0)
            atomic_fetch_add(&g_bad, 1);
        atomic_fetch_add(&g_checked, 1);
    }
    free(buf);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < N_EXPERTS; k++) {
            int j = (k + id) % N_EXPERTS; /* threads start on different experts */
            check_expert(g_x[j].r, &g_x[j], (id + round) & 1);
        }
        /* a private reader of a v1 file, opened while others read */
        int j = (id + round) % N_EXPERTS;
        expert_reader *own = NULL;
        expert_error e;
        expert_open_options oo = {.threads = 2};
        if (expert_open_any(g_x[j].path, &oo, NULL, &own, &e) != EXPERT_OK ||
            expert_reader_source_format(own) != g_x[j].format) {
            atomic_fetch_add(&g_bad, 1);
        } else {
            check_expert(own, &g_x[j], 0);
        }
        expert_close(own);
    }
    return NULL;
}

static void test_mixed_experts_threads(void **state)
{
    (void)state;
    char *dir = tmpdir_make("multi");
    static const pkg_kind kinds[N_EXPERTS] = {PK_DORA, PK_LORA, PK_IA3, PK_DORA, PK_DORA};
    static const int as_v2[N_EXPERTS] = {0, 0, 1, 1, 0};
    expert_error e;
    for (int i = 0; i < N_EXPERTS; i++) {
        expert_src *x = &g_x[i];
        char name[64];
        pkg_make(&x->p, kinds[i], 2 + (unsigned)i % 2, 4 + 2 * (unsigned)i, 1000 + (uint64_t)i);
        pkg_file *sf = pkg_get(&x->p, "adapter_model.safetensors");
        assert_int_equal(expert_safetensors_parse(sf->data, sf->size, &x->st, &e), EXPERT_OK);
        size_t n = 0;
        uint8_t *tgz = pkg_targz(&x->p, &n);
        snprintf(name, sizeof name, "x%d.v1.expert", i);
        char *v1 = path_join(dir, name);
        assert_int_equal(file_save(v1, tgz, n), 0);
        x->format = 1;
        x->path = v1;
        if (as_v2[i]) {
            expert_reader *r1 = NULL;
            snprintf(name, sizeof name, "x%d.v2.expert", i);
            x->path = path_join(dir, name);
            assert_int_equal(expert_open_any(v1, NULL, NULL, &r1, &e), EXPERT_OK);
            assert_int_equal(transcode_v2(r1, x->path, &e), EXPERT_OK);
            expert_close(r1);
            free(v1);
            x->format = 2;
        }
        expert_open_options oo = {.threads = 2};
        if (i == 4) /* one shared v1 reader straight from memory */
            assert_int_equal(expert_open_any_memory(tgz, n, &oo, NULL, &x->r, &e), EXPERT_OK);
        else
            assert_int_equal(expert_open_any(x->path, &oo, NULL, &x->r, &e), EXPERT_OK);
        assert_int_equal(expert_reader_source_format(x->r), x->format);
        free(tgz);
    }
    pthread_t t[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(t[i], NULL);
    int all = 0, expect = 0;
    for (int i = 0; i < N_EXPERTS; i++)
        all += (int)expert_safetensors_count(g_x[i].st);
    for (int id = 0; id < N_THREADS; id++)
        for (int round = 0; round < ROUNDS; round++)
            expect += all + (int)expert_safetensors_count(g_x[(id + round) % N_EXPERTS].st);
    print_message("  %d tensor checks across %d experts and %d threads, %d mismatches\n",
                  atomic_load(&g_checked), N_EXPERTS, N_THREADS, atomic_load(&g_bad));
    assert_int_equal(atomic_load(&g_bad), 0);
    assert_int_equal(atomic_load(&g_checked), expect);
    for (int i = 0; i < N_EXPERTS; i++) {
        expert_close(g_x[i].r);
        expert_safetensors_free(g_x[i].st);
        pkg_free(&g_x[i].p);
        free(g_x[i].path);
    }
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_experts_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
