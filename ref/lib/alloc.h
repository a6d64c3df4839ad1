/* Internal allocation wrappers: every allocation in the library goes through
 * an expert_allocator, the context's (a reader's or writer's, from its
 * options) or the library's (expert_set_allocator), so callers can account
 * for memory and tests can inject failures. The xa_* functions take the
 * allocator; a NULL one means the library's. The xp_* ones are the library's. */
#ifndef EXPERT_ALLOC_H
#define EXPERT_ALLOC_H
#include <stddef.h>

#include "expert.h"

void *xa_malloc(const expert_allocator *a, size_t size);
void *xa_calloc(const expert_allocator *a, size_t count, size_t size); /* overflow-checked */
void *xa_realloc(const expert_allocator *a, void *ptr, size_t size);
void xa_free(const expert_allocator *a, void *ptr);
char *xa_strndup(const expert_allocator *a, const char *s, size_t n);
/* A context's allocator: *given, or the library's at this moment (copied, so
 * a later expert_set_allocator does not split one context's allocations). */
expert_allocator xa_resolve(const expert_allocator *given);
/* 1 for the built-in malloc/realloc/free (nobody replaced them). */
int xa_is_default(const expert_allocator *a);

#define xp_malloc(size) xa_malloc(NULL, (size))
#define xp_calloc(count, size) xa_calloc(NULL, (count), (size))
#define xp_realloc(ptr, size) xa_realloc(NULL, (ptr), (size))
#define xp_free(ptr) xa_free(NULL, (ptr))
#define xp_strndup(s, n) xa_strndup(NULL, (s), (n))

#endif
