/* rebuild.h — expert_file_rebuild for the v1 export, which also needs to
 * know which sections the package files consumed. */
#ifndef EXPERT_REBUILD_INTERNAL_H
#define EXPERT_REBUILD_INTERNAL_H

#include <stdint.h>

#include "expert.h"

/* As expert_file_rebuild; used (optional, one byte per section) gets a 1
 * for every section the file was built from. */
expert_status xp_file_rebuild(expert_reader *r, uint32_t section, uint8_t **data, size_t *size,
                              uint8_t *used, expert_error *err);

#endif
