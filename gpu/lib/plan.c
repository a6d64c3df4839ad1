/* plan.c — what a load puts on the device, decided from the TOC alone.
 *
 * The plan is the single source of the device-byte accounting: the loader
 * allocates exactly what it says, and the VRAM profiler's prediction is its
 * totals, so a prediction without a GPU and a measurement with one come from
 * the same numbers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"

expert_status gpu_error(expert_error *err, expert_status code, uint32_t section,
                        const char *fmt, ...)
{
    if (err != NULL) {
        err->code = code;
        err->offset = EXPERT_NO_OFFSET;
        err->section = section;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int is_float(uint32_t dtype)
{
    return dtype == EXPERT_DTYPE_F32 || dtype == EXPERT_DTYPE_F16 || dtype == EXPERT_DTYPE_BF16 ||
           dtype == EXPERT_DTYPE_F64;
}

/* Host-only sections: files and the safetensors header are metadata for the
 * host; a type this reader does not know is ignored, as the spec requires. */
static int goes_to_device(const expert_section_info *s)
{
    return s->known_type && s->type != EXPERT_SECTION_FILE &&
           s->type != EXPERT_SECTION_SAFETENSORS_HEADER;
}

static int add_u64(uint64_t *acc, uint64_t v)
{
    if (*acc > UINT64_MAX - v)
        return 0;
    *acc += v;
    return 1;
}

static int align_up(uint64_t v, uint64_t a, uint64_t *out)
{
    if (v > UINT64_MAX - (a - 1))
        return 0;
    *out = (v + a - 1) / a * a;
    return 1;
}

static expert_status check_options(const expert_gpu_options *o, expert_error *err)
{
    if (o->device_dtype != 0 && o->device_dtype != EXPERT_DTYPE_F32 &&
        o->device_dtype != EXPERT_DTYPE_F16 && o->device_dtype != EXPERT_DTYPE_BF16)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "device dtype must be as stored, F32, F16 or BF16 (got %u)",
                         o->device_dtype);
    if (o->decode_threads > GPU_MAX_THREADS)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "decode threads: at most %u (got %u)", GPU_MAX_THREADS,
                         o->decode_threads);
    unsigned threads = o->decode_threads ? o->decode_threads : 1;
    if (o->slots != 0 && (o->slots > GPU_MAX_SLOTS || o->slots < 2 || o->slots < threads))
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "staging slots: 2..%u and at least the decode threads (got %u)",
                         GPU_MAX_SLOTS, o->slots);
    if (o->device < 0)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "device ordinal %d", o->device);
    return EXPERT_OK;
}

static expert_status overflow(expert_error *err, uint32_t section)
{
    return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, section,
                     "device byte count overflows 64 bits");
}

/* Fills tensor t from section s; returns the status. */
static expert_status plan_tensor(const expert_section_info *s, const expert_gpu_options *o,
                                 expert_gpu_tensor *t, expert_error *err)
{
    size_t width = expert_dtype_size(s->dtype);
    if (width == 0)
        return gpu_error(err, EXPERT_E_UNKNOWN_DTYPE, s->index, "section dtype %u", s->dtype);
    if (s->decoded_length % width != 0)
        return gpu_error(err, EXPERT_E_SIZE_MISMATCH, s->index,
                         "decoded length %llu is not a whole number of %s elements",
                         (unsigned long long)s->decoded_length, expert_dtype_name(s->dtype));
    memset(t, 0, sizeof *t);
    t->section = s->index;
    t->layer = s->layer;
    t->module = s->module;
    t->type = s->type;
    t->stored_dtype = s->dtype;
    t->device_dtype = s->dtype;
    t->rank = s->rank;
    memcpy(t->dims, s->dims, sizeof t->dims);
    t->elements = s->decoded_length / width;
    t->host_bytes = s->decoded_length;
    t->device_bytes = s->decoded_length;
    if (o->device_dtype != 0 && is_float(s->dtype) && s->dtype != o->device_dtype) {
        t->device_dtype = (uint8_t)o->device_dtype;
        t->device_bytes = t->elements * expert_dtype_size(o->device_dtype);
        t->converted = 1;
    }
    return EXPERT_OK;
}

static expert_status plan_layout(expert_gpu_plan *p, expert_error *err)
{
    expert_gpu_totals *tot = &p->totals;
    uint64_t arena = 0;
    for (uint32_t g = 0; g < p->group_count; g++) {
        expert_gpu_group *grp = &p->groups[g];
        uint64_t staging = 0, scratch = 0;
        for (uint32_t i = grp->first; i < grp->first + grp->count; i++) {
            expert_gpu_tensor *t = &p->tensors[i];
            uint64_t sized;
            /* Staging offsets stay aligned so a converted tensor's scratch copy
             * and its staging bytes agree on alignment (kernels read whole words). */
            t->staging_offset = staging;
            if (!align_up(t->host_bytes, EXPERT_GPU_ALIGNMENT, &sized) || !add_u64(&staging, sized))
                return overflow(err, t->section);
            if (t->converted) {
                t->scratch_offset = scratch;
                if (!add_u64(&scratch, sized))
                    return overflow(err, t->section);
            }
            if (!align_up(t->device_bytes, EXPERT_GPU_ALIGNMENT, &sized))
                return overflow(err, t->section);
            t->device_offset = arena;
            if (!add_u64(&arena, sized) || !add_u64(&grp->device_bytes, t->device_bytes) ||
                !add_u64(&tot->payload_bytes, t->device_bytes) ||
                !add_u64(&tot->host_bytes, t->host_bytes))
                return overflow(err, t->section);
            uint64_t pages;
            if (p->opt.per_tensor) {
                if (!add_u64(&tot->resident_bytes, t->device_bytes) ||
                    !align_up(t->device_bytes, EXPERT_GPU_PAGE, &pages) ||
                    !add_u64(&tot->reserved_bytes, pages))
                    return overflow(err, t->section);
            }
        }
        grp->host_bytes = staging;
        grp->scratch_bytes = scratch;
        if (staging > p->max_group_host_bytes)
            p->max_group_host_bytes = staging;
        if (scratch > p->max_group_scratch_bytes)
            p->max_group_scratch_bytes = scratch;
    }
    if (p->opt.per_tensor) {
        tot->allocations = p->tensor_count;
    } else if (p->tensor_count > 0) {
        tot->resident_bytes = arena;
        tot->allocations = 1;
        if (!align_up(arena, EXPERT_GPU_PAGE, &tot->reserved_bytes))
            return overflow(err, EXPERT_NO_SECTION);
    }
    unsigned threads = p->opt.decode_threads ? p->opt.decode_threads : 1;
    unsigned slots = p->opt.slots ? p->opt.slots : threads + 1;
    if (p->max_group_host_bytes > UINT64_MAX / slots ||
        p->max_group_scratch_bytes > UINT64_MAX / slots)
        return overflow(err, EXPERT_NO_SECTION);
    tot->staging_bytes = p->max_group_host_bytes * slots;
    tot->scratch_bytes = p->max_group_scratch_bytes * slots;
    if (p->opt.max_device_bytes != 0 &&
        (tot->resident_bytes > p->opt.max_device_bytes ||
         tot->scratch_bytes > p->opt.max_device_bytes - tot->resident_bytes))
        return gpu_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_SECTION,
                         "the load needs %llu resident + %llu scratch device bytes, above the "
                         "limit of %llu",
                         (unsigned long long)tot->resident_bytes,
                         (unsigned long long)tot->scratch_bytes,
                         (unsigned long long)p->opt.max_device_bytes);
    return EXPERT_OK;
}

/* The module's [out, in] where the metadata leaves them out: A is [r, in],
 * B and U are [out, r], Vt is [k, in]. */
static void module_shape(const expert_gpu_plan *p, uint32_t m, uint64_t *out, uint64_t *in)
{
    for (uint32_t i = 0; i < p->tensor_count; i++) {
        const expert_gpu_tensor *t = &p->tensors[i];
        if (t->module != m || t->rank != 2)
            continue;
        if (*in == 0 && (t->type == EXPERT_SECTION_LORA_A || t->type == EXPERT_SECTION_OSD_VT))
            *in = t->dims[1];
        if (*out == 0 && (t->type == EXPERT_SECTION_LORA_B || t->type == EXPERT_SECTION_OSD_U))
            *out = t->dims[0];
    }
}

/* The dense ΔW a merged runtime would keep per module: out x in at the float
 * width the module's tensors have on the device. */
static expert_status plan_dense(const expert_reader *r, expert_gpu_plan *p, expert_error *err)
{
    uint32_t modules = expert_module_count(r);
    for (uint32_t m = 0; m < modules; m++) {
        expert_module_info mi;
        if (expert_module(r, m, &mi) != EXPERT_OK)
            continue;
        size_t width = 0;
        for (uint32_t i = 0; i < p->tensor_count; i++) {
            const expert_gpu_tensor *t = &p->tensors[i];
            size_t w = expert_dtype_size(t->device_dtype);
            if (t->module == m && is_float(t->device_dtype) && w > width)
                width = w;
        }
        if (width == 0)
            continue;
        module_shape(p, m, &mi.out_features, &mi.in_features);
        p->totals.adapter_modules++;
        if (mi.out_features != 0 && mi.in_features > UINT64_MAX / mi.out_features / width)
            return overflow(err, EXPERT_NO_SECTION);
        if (!add_u64(&p->totals.dense_delta_bytes, mi.out_features * mi.in_features * width))
            return overflow(err, EXPERT_NO_SECTION);
    }
    return EXPERT_OK;
}

expert_status expert_gpu_plan_build(const expert_reader *r, const expert_gpu_options *opt,
                                    expert_gpu_plan **out, expert_error *err)
{
    if (r == NULL || out == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "reader and output are required");
    *out = NULL;
    expert_gpu_options o;
    memset(&o, 0, sizeof o);
    if (opt != NULL)
        o = *opt;
    expert_status st = check_options(&o, err);
    if (st != EXPERT_OK)
        return st;
    uint32_t n = expert_section_count(r);
    expert_gpu_plan *p = calloc(1, sizeof *p);
    if (p == NULL)
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    p->opt = o;
    /* At most n tensors and n groups (one per section in the worst case). */
    p->tensors = calloc(n ? n : 1, sizeof *p->tensors);
    p->groups = calloc(n ? n : 1, sizeof *p->groups);
    if (p->tensors == NULL || p->groups == NULL) {
        expert_gpu_plan_free(p);
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = expert_section_in_layer_order(r, i);
        expert_section_info s;
        st = expert_section(r, idx, &s);
        if (st != EXPERT_OK) {
            expert_gpu_plan_free(p);
            return gpu_error(err, st, idx, "section %u: not readable", idx);
        }
        if (!goes_to_device(&s))
            continue;
        expert_gpu_tensor *t = &p->tensors[p->tensor_count];
        st = plan_tensor(&s, &o, t, err);
        if (st != EXPERT_OK) {
            expert_gpu_plan_free(p);
            return st;
        }
        /* Streaming order sorts by layer, so a group is a run of equal layers. */
        if (p->group_count == 0 || p->groups[p->group_count - 1].layer != s.layer) {
            p->groups[p->group_count].first = p->tensor_count;
            p->groups[p->group_count].layer = s.layer;
            p->group_count++;
        }
        t->group = p->group_count - 1;
        p->groups[p->group_count - 1].count++;
        p->tensor_count++;
    }
    p->totals.tensors = p->tensor_count;
    p->totals.groups = p->group_count;
    st = plan_layout(p, err);
    if (st == EXPERT_OK)
        st = plan_dense(r, p, err);
    if (st != EXPERT_OK) {
        expert_gpu_plan_free(p);
        return st;
    }
    *out = p;
    return EXPERT_OK;
}

void expert_gpu_plan_free(expert_gpu_plan *p)
{
    if (p == NULL)
        return;
    free(p->tensors);
    free(p->groups);
    free(p);
}

const expert_gpu_options *expert_gpu_plan_options(const expert_gpu_plan *p)
{
    return p ? &p->opt : NULL;
}

uint32_t expert_gpu_plan_tensor_count(const expert_gpu_plan *p) { return p ? p->tensor_count : 0; }

const expert_gpu_tensor *expert_gpu_plan_tensor(const expert_gpu_plan *p, uint32_t i)
{
    return p != NULL && i < p->tensor_count ? &p->tensors[i] : NULL;
}

uint32_t expert_gpu_plan_group_count(const expert_gpu_plan *p) { return p ? p->group_count : 0; }

const expert_gpu_group *expert_gpu_plan_group(const expert_gpu_plan *p, uint32_t i)
{
    return p != NULL && i < p->group_count ? &p->groups[i] : NULL;
}

void expert_gpu_plan_totals(const expert_gpu_plan *p, expert_gpu_totals *out)
{
    if (out == NULL)
        return;
    if (p == NULL)
        memset(out, 0, sizeof *out);
    else
        *out = p->totals;
}
