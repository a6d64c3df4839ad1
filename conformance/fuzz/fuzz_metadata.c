/* fuzz_metadata: the input is a metadata document; it is wrapped in a valid
 * container (zstd frame, digests) so that every input reaches the metadata
 * parser and schema checks (spec §9, steps S10–S16). */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    xb img = {0};
    fz_wrap_metadata(data, size, &img);
    expert_reader *r = NULL;
    expert_error e;
    expert_status st = expert_open_memory(img.p, img.n, NULL, &r, &e);
    if (st == EXPERT_OK) {
        fz_exercise(r, 1);
        expert_close(r);
    } else {
        /* the container is valid: only the metadata (S10, S15, S16) can fail */
        FZ_ASSERT(st == EXPERT_E_BAD_METADATA || st == EXPERT_E_BAD_TOC ||
                  st == EXPERT_E_LIMIT_EXCEEDED || st == EXPERT_E_NOMEM);
    }
    xb_free(&img);
    return 0;
}
