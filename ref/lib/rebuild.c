/* rebuild.c — package files back out of a reader (spec §10.7): a FILE
 * section's bytes, or a safetensors file rebuilt byte-exact from its
 * SAFETENSORS_HEADER section and the tensor sections that header lists.
 *
 * Both ways out share one plan (the header parsed and every listed tensor
 * matched to its section): expert_file_write streams the file to the
 * caller's sink a frame at a time (expert_read_stream, hash-checked), so
 * memory does not follow what the file declares; expert_file_rebuild reads
 * it into one buffer, every tensor straight to its place by
 * expert_read_sections (the reader's threads share them). */
#include <string.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

#define FAIL(code, sec, ...) xp_set_error(err, (code), EXPERT_NO_OFFSET, (sec), __VA_ARGS__)

/* A safetensors file as sections: its header bytes, then count tensors,
 * tensor i being section[i], length[i] bytes at offset[i] of the file. */
typedef struct st_plan {
    uint8_t *header;
    size_t header_length;
    uint32_t count;
    uint32_t *section;
    uint64_t *offset, *length;
    uint64_t file_length;
} st_plan;

static void plan_free(expert_reader *r, st_plan *p)
{
    const expert_allocator *a = xp_reader_allocator(r);
    xa_free(a, p->header);
    xa_free(a, p->section);
    xa_free(a, p->offset);
    xa_free(a, p->length);
    memset(p, 0, sizeof *p);
}

/* The safetensors header section, decoded whole (it is parsed, not copied
 * through), within the safetensors format's header limit. */
static expert_status read_header(expert_reader *r, uint32_t index, st_plan *p, expert_error *err)
{
    expert_section_info si;
    if (expert_section(r, index, &si) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "no section %u", index);
    if (si.decoded_length > XP_SAFETENSORS_MAX_HEADER + 8)
        return FAIL(EXPERT_E_BAD_SAFETENSORS, index,
                    "safetensors header section of %llu bytes (the format allows %u)",
                    (unsigned long long)si.decoded_length, XP_SAFETENSORS_MAX_HEADER + 8);
    p->header_length = (size_t)si.decoded_length;
    p->header = xa_malloc(xp_reader_allocator(r), p->header_length ? p->header_length : 1);
    if (p->header == NULL)
        return FAIL(EXPERT_E_NOMEM, index, "out of memory (%zu bytes)", p->header_length);
    return expert_read(r, index, p->header, p->header_length, 0, err);
}

/* §10.7: the header's bytes, then each listed tensor's decoded bytes in
 * ascending data_offsets order; a listed tensor without a matching section
 * is BAD_SAFETENSORS. */
static expert_status make_plan(expert_reader *r, uint32_t index, st_plan *p, expert_error *err)
{
    const expert_allocator *a = xp_reader_allocator(r);
    expert_safetensors *st = NULL;
    memset(p, 0, sizeof *p);
    expert_status s = read_header(r, index, p, err);
    if (s == EXPERT_OK)
        s = expert_safetensors_parse_header(p->header, p->header_length, &st, err);
    if (s == EXPERT_OK && expert_safetensors_header_length(st) != p->header_length)
        s = FAIL(EXPERT_E_BAD_SAFETENSORS, index, "header section holds %zu bytes, the header is %llu",
                 p->header_length, (unsigned long long)expert_safetensors_header_length(st));
    if (s == EXPERT_OK && xp_add_overflows(p->header_length, expert_safetensors_data_length(st),
                                           &p->file_length))
        s = FAIL(EXPERT_E_BAD_SAFETENSORS, index, "safetensors file length overflows");
    if (s == EXPERT_OK) {
        size_t n = expert_safetensors_count(st) ? expert_safetensors_count(st) : 1;
        p->section = xa_malloc(a, n * sizeof *p->section);
        p->offset = xa_malloc(a, n * sizeof *p->offset);
        p->length = xa_malloc(a, n * sizeof *p->length);
        if (p->section == NULL || p->offset == NULL || p->length == NULL)
            s = FAIL(EXPERT_E_NOMEM, index, "out of memory (%zu tensors)", n);
    }
    uint64_t pos = p->header_length;
    for (uint32_t i = 0; s == EXPERT_OK && i < expert_safetensors_count(st); i++) {
        expert_tensor_info t;
        expert_section_info si;
        uint32_t sec = 0;
        expert_safetensors_tensor(st, i, &t);
        if (t.data_offset != pos) {
            s = FAIL(EXPERT_E_BAD_SAFETENSORS, index, "tensor '%s' starts at %llu, expected %llu",
                     t.name, (unsigned long long)t.data_offset, (unsigned long long)pos);
            break;
        }
        if (expert_find(r, t.name, strlen(t.name), &sec) != EXPERT_OK) {
            s = FAIL(EXPERT_E_BAD_SAFETENSORS, index,
                     "tensor '%s' of the safetensors header has no section", t.name);
            break;
        }
        expert_section(r, sec, &si);
        if (si.type == EXPERT_SECTION_FILE || si.type == EXPERT_SECTION_SAFETENSORS_HEADER ||
            si.dtype != (uint8_t)t.dtype || si.rank != t.rank ||
            memcmp(si.dims, t.dims, sizeof si.dims) != 0 || si.decoded_length != t.data_length) {
            s = FAIL(EXPERT_E_BAD_SAFETENSORS, sec,
                     "tensor '%s' does not match its section (type, dtype, shape or length)",
                     t.name);
            break;
        }
        p->section[i] = sec;
        p->offset[i] = pos;
        p->length[i] = t.data_length;
        p->count = i + 1;
        pos += t.data_length;
    }
    expert_safetensors_free(st);
    if (s != EXPERT_OK)
        plan_free(r, p);
    return s;
}

/* The section's file: INVALID_ARGUMENT unless FILE or SAFETENSORS_HEADER. */
static expert_status file_section(expert_reader *r, uint32_t section, expert_section_info *si,
                                  expert_error *err)
{
    if (r == NULL || expert_section(r, section, si) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "invalid argument");
    if (si->type != EXPERT_SECTION_FILE && si->type != EXPERT_SECTION_SAFETENSORS_HEADER)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, section,
                    "section %u is neither FILE nor SAFETENSORS_HEADER", section);
    return EXPERT_OK;
}

expert_status expert_file_layout(expert_reader *r, uint32_t section, uint32_t *sections,
                                 uint32_t capacity, uint32_t *count, uint64_t *length,
                                 expert_error *err)
{
    expert_section_info si;
    st_plan p;
    memset(&p, 0, sizeof p);
    if (count == NULL || length == NULL || (sections == NULL && capacity != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "invalid argument");
    *count = 0;
    *length = 0;
    expert_status s = file_section(r, section, &si, err);
    if (s == EXPERT_OK && si.type == EXPERT_SECTION_SAFETENSORS_HEADER)
        s = make_plan(r, section, &p, err);
    if (s != EXPERT_OK)
        return s;
    *count = 1 + p.count;
    *length = si.type == EXPERT_SECTION_FILE ? si.decoded_length : p.file_length;
    for (uint32_t i = 0; i < *count && i < capacity; i++)
        sections[i] = i == 0 ? section : p.section[i - 1];
    plan_free(r, &p);
    return EXPERT_OK;
}

expert_status expert_file_write(expert_reader *r, uint32_t section, expert_write_fn write,
                                void *user, expert_error *err)
{
    expert_section_info si;
    st_plan p;
    expert_status s = file_section(r, section, &si, err);
    if (s == EXPERT_OK && write == NULL)
        s = FAIL(EXPERT_E_INVALID_ARGUMENT, section, "no sink to write to");
    if (s != EXPERT_OK || si.type == EXPERT_SECTION_FILE)
        return s == EXPERT_OK ? expert_read_stream(r, section, write, user, 0, err) : s;
    if ((s = make_plan(r, section, &p, err)) != EXPERT_OK)
        return s;
    s = write(user, section, p.header, p.header_length, err);
    for (uint32_t i = 0; s == EXPERT_OK && i < p.count; i++)
        s = expert_read_stream(r, p.section[i], write, user, 0, err);
    plan_free(r, &p);
    return s;
}

expert_status expert_file_rebuild(expert_reader *r, uint32_t section, void **data, size_t *size,
                                  expert_error *err)
{
    expert_section_info si;
    st_plan p;
    memset(&p, 0, sizeof p);
    if (data == NULL || size == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "invalid argument");
    *data = NULL;
    *size = 0;
    expert_status s = file_section(r, section, &si, err);
    if (s == EXPERT_OK && si.type == EXPERT_SECTION_SAFETENSORS_HEADER)
        s = make_plan(r, section, &p, err);
    /* every length here was declared by sections the reader accepted at
     * open, within its max_decoded_bytes */
    uint64_t length = si.type == EXPERT_SECTION_FILE ? si.decoded_length : p.file_length;
    if (s == EXPERT_OK && length >= SIZE_MAX)
        s = FAIL(EXPERT_E_LIMIT_EXCEEDED, section, "file too large for this machine");
    const expert_allocator *a = r != NULL ? xp_reader_allocator(r) : NULL;
    uint8_t *buf = s == EXPERT_OK ? xa_malloc(a, length ? (size_t)length : 1) : NULL;
    if (s == EXPERT_OK && buf == NULL)
        s = FAIL(EXPERT_E_NOMEM, section, "out of memory (%llu bytes)", (unsigned long long)length);
    expert_read_request *req = NULL;
    if (s == EXPERT_OK && si.type == EXPERT_SECTION_FILE) {
        s = expert_read(r, section, buf, (size_t)length, 0, err);
    } else if (s == EXPERT_OK) {
        req = xa_malloc(a, (p.count ? p.count : 1) * sizeof *req);
        if (req == NULL)
            s = FAIL(EXPERT_E_NOMEM, section, "out of memory (%u tensors)", p.count);
        for (uint32_t i = 0; s == EXPERT_OK && i < p.count; i++)
            req[i] = (expert_read_request){p.section[i], buf + p.offset[i], (size_t)p.length[i]};
        if (s == EXPERT_OK) {
            memcpy(buf, p.header, p.header_length);
            s = expert_read_sections(r, req, p.count, 0, err);
        }
    }
    xa_free(a, req);
    if (r != NULL)
        plan_free(r, &p);
    if (s != EXPERT_OK) {
        xa_free(a, buf);
        return s;
    }
    *data = buf;
    *size = (size_t)length;
    return EXPERT_OK;
}
