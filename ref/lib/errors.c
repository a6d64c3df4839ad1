#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors_internal.h"

static const struct {
    expert_status code;
    const char *name;
} k_names[] = {
    {EXPERT_OK, "OK"},
    {EXPERT_E_IO, "IO"},
    {EXPERT_E_NOMEM, "NOMEM"},
    {EXPERT_E_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
    {EXPERT_E_BAD_MAGIC, "BAD_MAGIC"},
    {EXPERT_E_UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION"},
    {EXPERT_E_TRUNCATED, "TRUNCATED"},
    {EXPERT_E_TRAILING_DATA, "TRAILING_DATA"},
    {EXPERT_E_BAD_HEADER, "BAD_HEADER"},
    {EXPERT_E_OUT_OF_BOUNDS, "OUT_OF_BOUNDS"},
    {EXPERT_E_OVERLAP, "OVERLAP"},
    {EXPERT_E_MISALIGNED, "MISALIGNED"},
    {EXPERT_E_BAD_TOC, "BAD_TOC"},
    {EXPERT_E_BAD_INDEX, "BAD_INDEX"},
    {EXPERT_E_BAD_METADATA, "BAD_METADATA"},
    {EXPERT_E_UNKNOWN_CODEC, "UNKNOWN_CODEC"},
    {EXPERT_E_UNKNOWN_SECTION_TYPE, "UNKNOWN_SECTION_TYPE"},
    {EXPERT_E_UNKNOWN_FLAG, "UNKNOWN_FLAG"},
    {EXPERT_E_UNKNOWN_DTYPE, "UNKNOWN_DTYPE"},
    {EXPERT_E_DUPLICATE_NAME, "DUPLICATE_NAME"},
    {EXPERT_E_LIMIT_EXCEEDED, "LIMIT_EXCEEDED"},
    {EXPERT_E_STRUCTURE_HASH_MISMATCH, "STRUCTURE_HASH_MISMATCH"},
    {EXPERT_E_DECODE_FAILED, "DECODE_FAILED"},
    {EXPERT_E_SIZE_MISMATCH, "SIZE_MISMATCH"},
    {EXPERT_E_SECTION_HASH_MISMATCH, "SECTION_HASH_MISMATCH"},
    {EXPERT_E_FILE_HASH_MISMATCH, "FILE_HASH_MISMATCH"},
    {EXPERT_E_BAD_PADDING, "BAD_PADDING"},
    {EXPERT_E_BAD_SIGNATURE, "BAD_SIGNATURE"},
    {EXPERT_E_UNSIGNED, "UNSIGNED"},
    {EXPERT_E_BAD_KEY, "BAD_KEY"},
    {EXPERT_E_NOT_FOUND, "NOT_FOUND"},
    {EXPERT_E_BAD_SAFETENSORS, "BAD_SAFETENSORS"},
    {EXPERT_E_BAD_ARCHIVE, "BAD_ARCHIVE"},
};

const char *expert_status_name(expert_status s)
{
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (k_names[i].code == s)
            return k_names[i].name;
    return "UNKNOWN_ERROR";
}

expert_status expert_status_from_name(const char *name, expert_status *out)
{
    if (name == NULL || out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++) {
        if (strcmp(k_names[i].name, name) == 0) {
            *out = k_names[i].code;
            return EXPERT_OK;
        }
    }
    return EXPERT_E_INVALID_ARGUMENT;
}

expert_status expert_error_set(expert_error *err, expert_status code, uint64_t offset,
                                uint32_t section, const char *fmt, ...)
{
    if (err != NULL) {
        err->code = code;
        err->offset = offset;
        err->section = section;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}
