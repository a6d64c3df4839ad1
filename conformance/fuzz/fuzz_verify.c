/* fuzz_verify: any bytes as a .expert file; open, access-level reads of
 * every section (bounded), full validation without and with a key. The
 * last input byte picks the decode thread count so the threaded decoder
 * and verifier are fuzzed too. */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = fz_copy(data, size);
    expert_reader *r = NULL;
    expert_error e;
    expert_open_options o = {.flags = 0, .threads = size > 0 && (data[size - 1] & 1) ? 3 : 1};
    if (expert_open_memory(p, size, &o, &r, &e) == EXPERT_OK) {
        fz_exercise(r, 1);
        expert_close(r);
    }
    free(p);
    return 0;
}
