/* fuzz_decode: section decoding (spec §7: frame table, zstd frame rules,
 * shuffle). The first 8 input bytes choose codec, dtype, frame size, thread
 * count and decoded length; the rest are the stored bytes of one section in
 * an otherwise valid file. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    xb img = {0};
    unsigned threads = 1;
    fz_wrap_section(data, size, &img, &threads);
    expert_open_options o = {.flags = 0, .threads = threads};
    expert_reader *r = NULL;
    expert_error e;
    expert_status st = expert_open_memory(img.p, img.n, &o, &r, &e);
    FZ_ASSERT(st == EXPERT_OK); /* the container itself is always valid */
    expert_section_info s;
    FZ_ASSERT(expert_section(r, 0, &s) == EXPERT_OK);
    uint8_t *buf = malloc(s.decoded_length ? (size_t)s.decoded_length : 1);
    st = expert_read(r, 0, buf, (size_t)s.decoded_length, 0, &e);
    FZ_ASSERT(st == EXPERT_OK || st == EXPERT_E_DECODE_FAILED || st == EXPERT_E_SIZE_MISMATCH ||
              st == EXPERT_E_SECTION_HASH_MISMATCH || st == EXPERT_E_NOMEM);
    expert_status full = expert_verify_full(r, NULL, &e);
    /* full validation decodes frame by frame: same verdict as expert_read */
    if (st == EXPERT_OK)
        FZ_ASSERT(full == EXPERT_OK);
    else
        FZ_ASSERT(full == st);
    /* unverified reads must still never overrun */
    (void)expert_read(r, 0, buf, (size_t)s.decoded_length, EXPERT_READ_NO_VERIFY, &e);
    free(buf);
    expert_close(r);
    xb_free(&img);
    return 0;
}
