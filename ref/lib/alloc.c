#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "expert.h"

/* Large blocks (decoded sections, images, archive entries) are advised for
 * transparent huge pages: they are written once, front to back, right after
 * allocation, and on a VM faulting them in 4 KiB at a time costs several
 * times the copy that fills them (bench/README.md, fresh destinations). */
#define HUGE_ADVICE_MIN (UINT64_C(4) << 20)

static void *advise_huge(void *p, size_t size)
{
#ifdef MADV_HUGEPAGE
    if (p != NULL && size >= HUGE_ADVICE_MIN) {
        uintptr_t page = 4096, lo = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t hi = ((uintptr_t)p + size) & ~(page - 1);
        if (hi > lo)
            (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* advice: failure changes nothing */
    }
#else
    (void)size;
#endif
    return p;
}

static void *default_malloc(size_t size, void *user) { (void)user; return advise_huge(malloc(size), size); }
static void *default_realloc(void *p, size_t size, void *user)
{
    (void)user;
    return advise_huge(realloc(p, size), size);
}
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

static const expert_allocator *pick(const expert_allocator *a)
{
    return a != NULL ? a : &g_alloc;
}

int xa_is_default(const expert_allocator *a)
{
    return a->malloc_fn == default_malloc;
}

expert_allocator xa_resolve(const expert_allocator *given)
{
    if (given != NULL && given->malloc_fn != NULL && given->realloc_fn != NULL &&
        given->free_fn != NULL)
        return *given;
    return g_alloc;
}

void *xa_malloc(const expert_allocator *a, size_t size)
{
    a = pick(a);
    /* malloc(0) may return NULL legitimately; never hand that ambiguity out. */
    return a->malloc_fn(size ? size : 1, a->user);
}

void *xa_calloc(const expert_allocator *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t total = count * size;
    void *p = xa_malloc(a, total);
    if (p != NULL)
        memset(p, 0, total ? total : 1);
    return p;
}

void *xa_realloc(const expert_allocator *a, void *ptr, size_t size)
{
    a = pick(a);
    return a->realloc_fn(ptr, size ? size : 1, a->user);
}

void xa_free(const expert_allocator *a, void *ptr)
{
    a = pick(a);
    if (ptr != NULL)
        a->free_fn(ptr, a->user);
}

char *xa_strndup(const expert_allocator *a, const char *s, size_t n)
{
    char *p = n < SIZE_MAX ? xa_malloc(a, n + 1) : NULL;
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *expert_malloc(size_t size)
{
    return xa_malloc(NULL, size);
}

void *expert_realloc(void *ptr, size_t size)
{
    return xa_realloc(NULL, ptr, size);
}

void expert_free(void *ptr)
{
    xa_free(NULL, ptr);
}
