/* types.c — names and sizes of the format's enumerations (spec §6, §7), and
 * the library version. */
#include <string.h>

#include "expert.h"

static const struct {
    const char *name;
    size_t size;
} k_dtypes[EXPERT_DTYPE_COUNT] = {
    [EXPERT_DTYPE_BYTES] = {"BYTES", 1}, [EXPERT_DTYPE_F32] = {"F32", 4},
    [EXPERT_DTYPE_F16] = {"F16", 2},     [EXPERT_DTYPE_BF16] = {"BF16", 2},
    [EXPERT_DTYPE_F64] = {"F64", 8},     [EXPERT_DTYPE_I8] = {"I8", 1},
    [EXPERT_DTYPE_U8] = {"U8", 1},       [EXPERT_DTYPE_I16] = {"I16", 2},
    [EXPERT_DTYPE_U16] = {"U16", 2},     [EXPERT_DTYPE_I32] = {"I32", 4},
    [EXPERT_DTYPE_U32] = {"U32", 4},     [EXPERT_DTYPE_I64] = {"I64", 8},
    [EXPERT_DTYPE_U64] = {"U64", 8},     [EXPERT_DTYPE_BOOL] = {"BOOL", 1},
};

static const char *k_codecs[] = {"raw", "zstd", "shuffle+zstd"};

static const struct {
    uint32_t type;
    const char *name;
} k_types[] = {
    {EXPERT_SECTION_FILE, "FILE"},
    {EXPERT_SECTION_SAFETENSORS_HEADER, "SAFETENSORS_HEADER"},
    {EXPERT_SECTION_LORA_A, "LORA_A"},
    {EXPERT_SECTION_LORA_B, "LORA_B"},
    {EXPERT_SECTION_DORA_MAGNITUDE, "DORA_MAGNITUDE"},
    {EXPERT_SECTION_IA3_VECTOR, "IA3_VECTOR"},
    {EXPERT_SECTION_OSD_U, "OSD_U"},
    {EXPERT_SECTION_OSD_S, "OSD_S"},
    {EXPERT_SECTION_OSD_VT, "OSD_VT"},
    {EXPERT_SECTION_OSD_SPARSE_INDPTR, "OSD_SPARSE_INDPTR"},
    {EXPERT_SECTION_OSD_SPARSE_INDICES, "OSD_SPARSE_INDICES"},
    {EXPERT_SECTION_OSD_SPARSE_VALUES, "OSD_SPARSE_VALUES"},
    {EXPERT_SECTION_SOFT_PROMPT, "SOFT_PROMPT"},
    {EXPERT_SECTION_TENSOR, "TENSOR"},
};

const char *expert_dtype_name(uint32_t dtype)
{
    return dtype < EXPERT_DTYPE_COUNT ? k_dtypes[dtype].name : NULL;
}

size_t expert_dtype_size(uint32_t dtype)
{
    return dtype < EXPERT_DTYPE_COUNT ? k_dtypes[dtype].size : 0;
}

const char *expert_codec_name(uint32_t codec)
{
    return codec < sizeof k_codecs / sizeof k_codecs[0] ? k_codecs[codec] : NULL;
}

const char *expert_section_type_name(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].type == type)
            return k_types[i].name;
    return NULL;
}

expert_status expert_dtype_from_name(const char *name, expert_dtype *out)
{
    if (name == NULL || out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < EXPERT_DTYPE_COUNT; i++) {
        if (strcasecmp(name, k_dtypes[i].name) == 0) {
            *out = (expert_dtype)i;
            return EXPERT_OK;
        }
    }
    return EXPERT_E_INVALID_ARGUMENT;
}

expert_status expert_codec_from_name(const char *name, expert_codec *out)
{
    if (name == NULL || out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < sizeof k_codecs / sizeof k_codecs[0]; i++) {
        if (strcmp(name, k_codecs[i]) == 0) {
            *out = (expert_codec)i;
            return EXPERT_OK;
        }
    }
    return EXPERT_E_INVALID_ARGUMENT;
}

unsigned expert_version_number(void)
{
    return EXPERT_VERSION_NUMBER;
}

const char *expert_version_string(void)
{
    return EXPERT_VERSION_STRING;
}
