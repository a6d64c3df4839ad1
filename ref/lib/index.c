/* index.c — the O(1) name index (spec §8): FNV-1a 64 + linear probing,
 * built canonically so a reader can check it by rebuilding. */
#include "format.h"

uint64_t xp_fnv1a64(const void *data, size_t length)
{
    const uint8_t *p = data;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < length; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint32_t xp_index_slot_count(uint32_t toc_count)
{
    /* Load factor <= 1/2 keeps probe chains short; toc_count <= 65536 so
     * the result (<= 131072) cannot overflow. */
    uint32_t slots = 8;
    while (slots < 2u * toc_count)
        slots <<= 1;
    return slots;
}

uint32_t expert_index_slot_count(uint32_t section_count)
{
    return xp_index_slot_count(section_count);
}

void xp_index_build(uint32_t *slots, uint32_t slot_count, uint32_t toc_count,
                    const uint8_t *const *names, const uint16_t *name_lengths)
{
    uint32_t mask = slot_count - 1;
    for (uint32_t i = 0; i < toc_count; i++) {
        uint32_t p = (uint32_t)(xp_fnv1a64(names[i], name_lengths[i]) & mask);
        while (slots[p] != 0)
            p = (p + 1) & mask;
        slots[p] = i + 1;
    }
}
