/* vgen.c — see vgen.h. */
#include "vgen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ fatal errors, memory */

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("expert-vectors-gen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

void *xcalloc(size_t a, size_t b)
{
    void *p = calloc(a ? a : 1, b ? b : 1);
    if (!p)
        die("out of memory");
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *d = xmalloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

/* ------------------------------------------------------------ text */

void hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* ------------------------------------------------------------ model */

void model_parse(const uint8_t *p, size_t n, xm_model *m)
{
    if (xm_parse(p, n, m) != 0)
        die("model_parse: not a parsable %zu-byte image", n);
}

void frame(xb *out, const uint8_t *content, size_t n, const zf_opts *o)
{
    if (zframe(out, content, n, o) != 0)
        die("zframe: options no frame can have");
}

void model_set_meta_json(xm_model *m, const char *json, size_t len)
{
    xb f = {0};
    frame(&f, (const uint8_t *)json, len, NULL);
    xm_set_meta_stored(m, f.p, f.n, len);
    xb_free(&f);
}

/* ------------------------------------------------------------ JSON */

/* Not jansson: the manifest must list names byte for byte, including the
 * reject vectors' names that are not UTF-8 (jansson refuses those), and its
 * bytes must not change with the jansson version. */
void json_str(xb *b, const uint8_t *s, size_t n)
{
    xb_u8(b, '"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            xb_u8(b, '\\');
            xb_u8(b, c);
        } else if (c < 0x20) {
            xb_printf(b, "\\u%04x", c);
        } else {
            xb_u8(b, c);
        }
    }
    xb_u8(b, '"');
}

char *json_minify(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    size_t k = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            d[k++] = c;
            if (c == '\\' && i + 1 < n)
                d[k++] = s[++i];
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
            d[k++] = c;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            d[k++] = c;
        }
    }
    d[k] = 0;
    return d;
}
