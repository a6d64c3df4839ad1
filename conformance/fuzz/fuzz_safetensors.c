/* fuzz_safetensors: the safetensors parser (full file and header-only). */
#include <stdlib.h>

#include "fuzz_common.h"

static void check(const expert_safetensors *st, size_t size, int full)
{
    uint64_t hl = expert_safetensors_header_length(st);
    FZ_ASSERT(hl >= 8 && hl <= size);
    uint32_t n = expert_safetensors_count(st);
    uint64_t prev_end = hl;
    for (uint32_t i = 0; i < n; i++) {
        expert_tensor_info t;
        FZ_ASSERT(expert_safetensors_tensor(st, i, &t) == EXPERT_OK);
        FZ_ASSERT(t.name != NULL && t.rank <= EXPERT_MAX_RANK);
        FZ_ASSERT(t.data_offset == prev_end); /* tiling, in file order */
        prev_end = t.data_offset + t.data_length;
        if (full)
            FZ_ASSERT(t.data_offset <= size && t.data_length <= size - t.data_offset);
    }
    if (full)
        FZ_ASSERT(prev_end == size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = fz_copy(data, size);
    expert_safetensors *st = NULL;
    expert_error e;
    if (expert_safetensors_parse(p, size, &st, &e) == EXPERT_OK) {
        check(st, size, 1);
        expert_safetensors_free(st);
    }
    st = NULL;
    if (expert_safetensors_parse_header(p, size, &st, &e) == EXPERT_OK) {
        check(st, size, 0);
        expert_safetensors_free(st);
    }
    free(p);
    return 0;
}
