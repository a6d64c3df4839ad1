/* peft.c — PEFT safetensors key -> (section type, module path, layer).
 *
 * PEFT saves adapter tensors under the module's path with the adapter name
 * stripped (huggingface/peft: src/peft/utils/save_and_load.py):
 *   <module>.lora_A.weight            LORA_A          [r, in]
 *   <module>.lora_B.weight            LORA_B          [out, r]
 *   <module>.lora_magnitude_vector    DORA_MAGNITUDE  [out]  (PEFT strips ".weight")
 *   <module>.lora_magnitude_vector.weight, <module>.dora_scale  (other exporters)
 *   <module>.ia3_l                    IA3_VECTOR      [out,1] or [1,in]
 * Anything else is a TENSOR whose module path is the whole key. The layer
 * comes from the whole key (spec §10.2, see find_layer). On a too-small
 * buffer the result is EXPERT_E_INVALID_ARGUMENT with *out still filled, so
 * out->module_path_length + 1 is the size needed. Pure string handling: no
 * allocation.
 */
#include <stdint.h>
#include <string.h>

#include "expert.h"

#define PEFT_MAX_LAYER 65535u

static const struct {
    const char *suffix;
    uint16_t type;
} k_roles[] = {
    {".lora_A.weight", EXPERT_SECTION_LORA_A},
    {".lora_B.weight", EXPERT_SECTION_LORA_B},
    {".lora_magnitude_vector.weight", EXPERT_SECTION_DORA_MAGNITUDE},
    {".lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE},
    {".dora_scale", EXPERT_SECTION_DORA_MAGNITUDE},
    {".ia3_l", EXPERT_SECTION_IA3_VECTOR},
};

/* spec §10.2: the leftmost match of the regex \.layers\.([0-9]+)\. decides;
 * its digits must have no leading zero (or be exactly "0") and a value
 * < 65536, else the layer is NONE. */
static uint32_t find_layer(const char *key, size_t len)
{
    static const char tag[] = ".layers.";
    const size_t tag_len = sizeof tag - 1;
    for (size_t i = 0; i + tag_len < len; i++) {
        if (memcmp(key + i, tag, tag_len) != 0)
            continue;
        size_t start = i + tag_len, j = start;
        while (j < len && key[j] >= '0' && key[j] <= '9')
            j++;
        if (j == start || j >= len || key[j] != '.')
            continue; /* no match at this position: keep scanning */
        size_t ndig = j - start;
        if (ndig > 1 && key[start] == '0')
            return EXPERT_LAYER_NONE; /* leading zero */
        if (ndig > 5)
            return EXPERT_LAYER_NONE;
        uint32_t v = 0;
        for (size_t k = start; k < j; k++)
            v = v * 10u + (uint32_t)(key[k] - '0');
        return v <= PEFT_MAX_LAYER ? v : EXPERT_LAYER_NONE;
    }
    return EXPERT_LAYER_NONE;
}

expert_status expert_peft_classify(const char *key, char *module_path_buf, size_t buf_size,
                                   expert_peft_role *out)
{
    if (key == NULL || out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;

    size_t len = strlen(key);
    uint16_t type = EXPERT_SECTION_TENSOR;
    size_t path_len = len;
    for (size_t i = 0; i < sizeof k_roles / sizeof k_roles[0]; i++) {
        size_t sl = strlen(k_roles[i].suffix);
        /* the module path in front of the suffix must not be empty */
        if (len > sl && memcmp(key + len - sl, k_roles[i].suffix, sl) == 0) {
            type = k_roles[i].type;
            path_len = len - sl;
            break;
        }
    }

    out->type = type;
    out->layer = find_layer(key, len);
    out->module_path_length = path_len;

    if (module_path_buf == NULL || buf_size <= path_len) {
        if (module_path_buf != NULL && buf_size > 0)
            module_path_buf[0] = '\0';
        return EXPERT_E_INVALID_ARGUMENT; /* out->module_path_length says what is needed */
    }
    memcpy(module_path_buf, key, path_len);
    module_path_buf[path_len] = '\0';
    return EXPERT_OK;
}
