/* fuzz_v1: the v1 tar.gz reader through expert_open_memory's gzip dispatch.
 * An input that is not gzip is taken as the tar stream and gzipped first,
 * so the fuzzer mutates tar headers directly instead of deflate bits. */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "fuzz_common.h"
#include "expert_v1.h"

static uint8_t *gzip(const uint8_t *p, size_t n, size_t *out_n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    uint8_t *o = malloc(cap);
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)n;
    z.next_out = o;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_n = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(o);
        return NULL;
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (4u << 20))
        return 0;
    uint8_t *gz;
    size_t n;
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        gz = fz_copy(data, size);
        n = size;
    } else {
        gz = gzip(data, size, &n);
        if (!gz)
            return 0;
    }
    /* small limits keep every input fast and bounded */
    expert_v1_options vo;
    memset(&vo, 0, sizeof vo);
    vo.max_total_bytes = 16u << 20;
    vo.max_entry_bytes = 8u << 20;
    vo.max_entries = 256;
    expert_reader *r = NULL;
    expert_error e;
    if (expert_open_v1_memory(gz, n, NULL, &vo, &r, &e) == EXPERT_OK) {
        FZ_ASSERT(expert_reader_source_format(r) == 1);
        fz_exercise(r, 1);
        for (uint32_t i = 0; i < expert_section_count(r); i++) {
            void *d = NULL;
            size_t dl = 0;
            if (expert_file_rebuild(r, i, &d, &dl, &e) == EXPERT_OK)
                expert_v1_free(d);
        }
        expert_close(r);
    }
    /* the generic entry point dispatches gzip to the same reader */
    r = NULL;
    if (n < (64u << 10) && expert_open_memory(gz, n, NULL, &r, &e) == EXPERT_OK)
        expert_close(r);
    free(gz);
    return 0;
}
