/* index.c — the O(1) name index (spec §8): FNV-1a 64 + linear probing,
 * built canonically so a reader can check it by rebuilding.
 *
 * Hostile names are cheap to make: only the low bits of the hash pick a
 * slot, so tens of thousands of names can share one probe chain. Nothing
 * here walks a chain name by name. Duplicates are found by sorting on the
 * full hash, the canonical index is built with a "next free slot" forest
 * (linear probing's result without its probes), and lookups binary-search
 * the sorted names. Each is O(n log n) or better whatever the names are. */
#include <stdlib.h>
#include <string.h>

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

static int name_cmp(const xp_name *a, const xp_name *b)
{
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->length != b->length)
        return a->length < b->length ? -1 : 1;
    return memcmp(a->bytes, b->bytes, a->length);
}

static int order_cmp(const void *x, const void *y, void *ctx)
{
    const xp_name *names = ctx;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    int c = name_cmp(&names[i], &names[j]);
    return c != 0 ? c : (i > j) - (i < j); /* equal names: TOC order */
}

int xp_names_sort(const xp_name *names, uint32_t n, uint32_t *order, uint32_t *dup,
                  uint32_t *first)
{
    for (uint32_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, order_cmp, (void *)names);
    /* Report the lowest TOC index that repeats an earlier name, as a reader
     * inserting names in TOC order meets it first; within a run of equal
     * names the TOC order is kept, so its earlier twin is just before it. */
    int found = 0;
    for (uint32_t k = 1; k < n; k++)
        if ((!found || order[k] < *dup) && name_cmp(&names[order[k - 1]], &names[order[k]]) == 0) {
            *dup = order[k];
            *first = order[k - 1];
            found = 1;
        }
    return found;
}

/* Root of p's tree: the first free slot at or after p (cyclically), with
 * path compression. Terminates because at most half the slots are taken. */
static uint32_t next_free(uint32_t *next, uint32_t p)
{
    uint32_t root = p;
    while (next[root] != root)
        root = next[root];
    while (next[p] != root) {
        uint32_t q = next[p];
        next[p] = root;
        p = q;
    }
    return root;
}

void xp_index_build(uint32_t *slots, uint32_t slot_count, const xp_name *names, uint32_t n,
                    uint32_t *next)
{
    uint32_t mask = slot_count - 1;
    for (uint32_t k = 0; k < slot_count; k++) {
        slots[k] = 0;
        next[k] = k;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = next_free(next, (uint32_t)(names[i].hash & mask));
        slots[p] = i + 1;
        next[p] = (p + 1) & mask;
    }
}

int xp_names_find(const xp_name *names, const uint32_t *order, uint32_t n, const void *name,
                  size_t length, uint32_t *index)
{
    if (length > UINT32_MAX)
        return 0;
    xp_name key = {name, xp_fnv1a64(name, length), (uint32_t)length};
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(&names[order[mid]], &key);
        if (c == 0) {
            *index = order[mid];
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}
