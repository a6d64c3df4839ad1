/* Internal error helpers: one convention for the whole library.
 *   return xp_set_error(err, EXPERT_E_BAD_TOC, off, idx, "reserved byte %u", b);
 * fills *err (when not NULL) and returns the code, so checks read as a list. */
#ifndef EXPERT_ERRORS_INTERNAL_H
#define EXPERT_ERRORS_INTERNAL_H
#include <stdint.h>

#include "expert.h"

/* The public expert_error_set, under the name the library's code reads best with. */
#define xp_set_error expert_error_set

/* Propagate a failure unchanged (err already filled by the callee). */
#define XP_TRY(expr)                                                                              \
    do {                                                                                          \
        expert_status xp_try_status_ = (expr);                                                    \
        if (xp_try_status_ != EXPERT_OK)                                                          \
            return xp_try_status_;                                                                \
    } while (0)

#endif
