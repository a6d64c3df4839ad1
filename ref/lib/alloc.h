/* Internal allocation wrappers: every allocation in the library goes through
 * here so tests can inject failures (expert_set_allocator). */
#ifndef EXPERT_ALLOC_H
#define EXPERT_ALLOC_H
#include <stddef.h>

void *xp_malloc(size_t size);
void *xp_calloc(size_t count, size_t size); /* overflow-checked */
void *xp_realloc(void *ptr, size_t size);
void xp_free(void *ptr);
char *xp_strndup(const char *s, size_t n);

#endif
