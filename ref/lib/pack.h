/* pack.h — what the v1 import shares with the packer besides expert_pack. */
#ifndef EXPERT_PACK_INTERNAL_H
#define EXPERT_PACK_INTERNAL_H

#include <jansson.h>

#include "expert.h"

/* A package's JSON file (manifest.json, adapter_config.json): at most
 * 16 MiB, a JSON object; else EXPERT_E_INVALID_ARGUMENT naming the file. */
expert_status xp_json_object_load(const char *name, const void *data, uint64_t size,
                                  json_t **out, expert_error *err);

#endif
