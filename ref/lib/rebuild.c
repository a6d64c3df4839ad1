/* rebuild.c — package files back out of a reader (spec §10.7): a FILE
 * section's bytes, or a safetensors file rebuilt byte-exact from its
 * SAFETENSORS_HEADER section and the tensor sections that header lists.
 *
 * One streaming implementation: expert_file_write hands the bytes to the
 * caller's sink one section at a time (extract writes them to disk), and
 * expert_file_rebuild is that stream collected into one buffer. Section
 * bytes stream a frame at a time (expert_read_stream, hash-checked), so
 * memory does not follow what the file declares; only the safetensors
 * header, bounded by the safetensors format, is held whole. */
#include <string.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

#define FAIL(code, sec, ...) xp_set_error(err, (code), EXPERT_NO_OFFSET, (sec), __VA_ARGS__)

/* The safetensors header section, decoded whole (it is parsed, not copied
 * through), within the safetensors format's header limit. */
static expert_status read_header(expert_reader *r, uint32_t index, uint8_t **buf, size_t *len,
                                 expert_error *err)
{
    expert_section_info si;
    if (expert_section(r, index, &si) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "no section %u", index);
    if (si.decoded_length > XP_SAFETENSORS_MAX_HEADER + 8)
        return FAIL(EXPERT_E_BAD_SAFETENSORS, index,
                    "safetensors header section of %llu bytes (the format allows %u)",
                    (unsigned long long)si.decoded_length, XP_SAFETENSORS_MAX_HEADER + 8);
    *len = (size_t)si.decoded_length;
    *buf = xa_malloc(xp_reader_allocator(r), *len ? *len : 1);
    if (*buf == NULL)
        return FAIL(EXPERT_E_NOMEM, index, "out of memory (%zu bytes)", *len);
    return expert_read(r, index, *buf, *len, 0, err);
}

/* §10.7: the header's bytes, then each listed tensor's decoded bytes in
 * ascending data_offsets order; a listed tensor without a matching section
 * is BAD_SAFETENSORS. */
static expert_status write_safetensors(expert_reader *r, uint32_t index, expert_write_fn write,
                                       void *user, uint64_t *total, expert_error *err)
{
    uint8_t *hdr = NULL;
    size_t hdr_len = 0;
    expert_safetensors *st = NULL;
    expert_status s = read_header(r, index, &hdr, &hdr_len, err);
    if (s == EXPERT_OK)
        s = expert_safetensors_parse_header(hdr, hdr_len, &st, err);
    if (s == EXPERT_OK && expert_safetensors_header_length(st) != hdr_len)
        s = FAIL(EXPERT_E_BAD_SAFETENSORS, index, "header section holds %zu bytes, the header is %llu",
                 hdr_len, (unsigned long long)expert_safetensors_header_length(st));
    if (s == EXPERT_OK && xp_add_overflows(hdr_len, expert_safetensors_data_length(st), total))
        s = FAIL(EXPERT_E_BAD_SAFETENSORS, index, "safetensors file length overflows");
    if (s == EXPERT_OK)
        s = write(user, index, hdr, hdr_len, err);
    uint64_t pos = hdr_len;
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
        s = expert_read_stream(r, sec, write, user, 0, err);
        pos += t.data_length;
    }
    expert_safetensors_free(st);
    xa_free(xp_reader_allocator(r), hdr);
    return s;
}

expert_status expert_file_write(expert_reader *r, uint32_t section, expert_write_fn write,
                                void *user, expert_error *err)
{
    expert_section_info si;
    if (r == NULL || write == NULL || expert_section(r, section, &si) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "invalid argument");
    if (si.type == EXPERT_SECTION_SAFETENSORS_HEADER) {
        uint64_t total = 0;
        return write_safetensors(r, section, write, user, &total, err);
    }
    if (si.type != EXPERT_SECTION_FILE)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, section,
                    "section %u is neither FILE nor SAFETENSORS_HEADER", section);
    return expert_read_stream(r, section, write, user, 0, err);
}

typedef struct mem_sink {
    uint8_t *p;
    size_t len, cap;
    const expert_allocator *alloc; /* the reader's */
} mem_sink;

static expert_status mem_write(void *user, uint32_t section, const void *data, size_t length,
                               expert_error *err)
{
    mem_sink *m = user;
    if (length > m->cap - m->len) { /* only when the caller's size was wrong */
        size_t need = m->len + length, cap = m->cap * 2;
        if (need < m->len)
            return FAIL(EXPERT_E_LIMIT_EXCEEDED, section, "file too large for this machine");
        cap = cap > need ? cap : need;
        uint8_t *p = xa_realloc(m->alloc, m->p, cap);
        if (p == NULL)
            return FAIL(EXPERT_E_NOMEM, section, "out of memory");
        m->p = p;
        m->cap = cap;
    }
    if (length > 0)
        memcpy(m->p + m->len, data, length);
    m->len += length;
    return EXPERT_OK;
}

expert_status expert_file_rebuild(expert_reader *r, uint32_t section, void **data, size_t *size,
                                  expert_error *err)
{
    expert_section_info si;
    if (r == NULL || data == NULL || size == NULL || expert_section(r, section, &si) != EXPERT_OK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "invalid argument");
    *data = NULL;
    *size = 0;
    mem_sink m = {NULL, 0, 0, xp_reader_allocator(r)};
    /* exact for a FILE; for a safetensors file the header, grown by doubling;
     * never more than the reader would agree to decode */
    expert_limits lim;
    expert_reader_limits(r, &lim);
    if (si.decoded_length < SIZE_MAX && si.decoded_length <= lim.max_decoded_bytes &&
        (m.p = xa_malloc(m.alloc, si.decoded_length ? (size_t)si.decoded_length : 1)) != NULL)
        m.cap = si.decoded_length ? (size_t)si.decoded_length : 1;
    expert_status s = expert_file_write(r, section, mem_write, &m, err);
    if (s != EXPERT_OK) {
        xa_free(m.alloc, m.p);
        return s;
    }
    *data = m.p;
    *size = m.len;
    return EXPERT_OK;
}
