#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "expert.h"

static void *default_malloc(size_t size, void *user) { (void)user; return malloc(size); }
static void *default_realloc(void *p, size_t size, void *user) { (void)user; return realloc(p, size); }
static void default_free(void *p, void *user) { (void)user; free(p); }

static expert_allocator g_alloc = {default_malloc, default_realloc, default_free, NULL};

void expert_set_allocator(const expert_allocator *alloc)
{
    if (alloc == NULL || alloc->malloc_fn == NULL || alloc->realloc_fn == NULL ||
        alloc->free_fn == NULL) {
        g_alloc.malloc_fn = default_malloc;
        g_alloc.realloc_fn = default_realloc;
        g_alloc.free_fn = default_free;
        g_alloc.user = NULL;
        return;
    }
    g_alloc = *alloc;
    /* jansson keeps its own malloc on purpose: jansson 2.14 mishandles a
     * failed buffer growth while lexing strings (akheron/jansson#362), so
     * injecting failures into it would corrupt or overflow rather than test
     * anything of ours. */
}

void *xp_malloc(size_t size)
{
    /* malloc(0) may return NULL legitimately; never hand that ambiguity out. */
    return g_alloc.malloc_fn(size ? size : 1, g_alloc.user);
}

void *xp_calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t total = count * size;
    void *p = xp_malloc(total);
    if (p != NULL)
        memset(p, 0, total ? total : 1);
    return p;
}

void *xp_realloc(void *ptr, size_t size)
{
    return g_alloc.realloc_fn(ptr, size ? size : 1, g_alloc.user);
}

void xp_free(void *ptr)
{
    if (ptr != NULL)
        g_alloc.free_fn(ptr, g_alloc.user);
}

char *xp_strndup(const char *s, size_t n)
{
    char *p = xp_malloc(n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *expert_malloc(size_t size)
{
    return xp_malloc(size);
}

void *expert_realloc(void *ptr, size_t size)
{
    return xp_realloc(ptr, size);
}

void expert_free(void *ptr)
{
    xp_free(ptr);
}
