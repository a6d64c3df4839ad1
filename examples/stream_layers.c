/* stream_layers.c — read every section of a .expert file in streaming order
 * (layer 0 first, non-layer sections last), one layer at a time, as a
 * runtime that uploads layer by layer would; one reused buffer.
 *
 *   cc stream_layers.c $(pkg-config --cflags --libs expert) -o stream_layers
 *   ./stream_layers FILE
 */
#include <expert.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    expert_reader *r = NULL;
    expert_error err;
    if (expert_open(argv[1], NULL, &r, &err) != EXPERT_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], expert_status_name(err.code), err.message);
        return 1;
    }
    void *buf = NULL;
    size_t cap = 0;
    uint32_t count = expert_section_count(r), layer = EXPERT_LAYER_NONE;
    uint64_t layer_bytes = 0;
    unsigned layer_sections = 0;
    int rc = 0;
    for (uint32_t i = 0; i <= count; i++) {
        expert_section_info s;
        int done = i == count;
        if (!done)
            expert_section(r, expert_section_in_layer_order(r, i), &s);
        if (i > 0 && (done || s.layer != layer)) { /* a layer is complete */
            if (layer == EXPERT_LAYER_NONE)
                printf("no layer: %u sections, %llu bytes\n", layer_sections,
                       (unsigned long long)layer_bytes);
            else
                printf("layer %u: %u sections, %llu bytes\n", layer, layer_sections,
                       (unsigned long long)layer_bytes);
            layer_bytes = 0;
            layer_sections = 0;
        }
        if (done)
            break;
        layer = s.layer;
        if (s.decoded_length > cap) {
            free(buf);
            cap = (size_t)s.decoded_length;
            if ((buf = malloc(cap)) == NULL) {
                fprintf(stderr, "out of memory\n");
                rc = 1;
                break;
            }
        }
        if (expert_read(r, s.index, buf, cap, 0, &err) != EXPERT_OK) {
            fprintf(stderr, "section %u: %s: %s\n", s.index, expert_status_name(err.code), err.message);
            rc = 1;
            break;
        }
        layer_bytes += s.decoded_length;
        layer_sections++;
    }
    free(buf);
    expert_close(r);
    return rc;
}
