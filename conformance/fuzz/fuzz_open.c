/* fuzz_open: any bytes as a .expert file; structural validation (open) and
 * every structural accessor with the API's invariants. */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = fz_copy(data, size);
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.flags = 0, .threads = 1};
    if (expert_open_memory(p, size, &o, &r, &e) == EXPERT_OK) {
        fz_exercise(r, 0);
        expert_close(r);
    } else {
        FZ_ASSERT(r == NULL && e.code != EXPERT_OK);
    }
    free(p);
    return 0;
}
