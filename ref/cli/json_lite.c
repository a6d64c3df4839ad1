/* json_lite.c — a small, strict, bounded JSON reader (RFC 8259) used by
 * expert-cli to read manifest.json and adapter_config.json. It builds a tree
 * of jl_value nodes; the CLI only looks at a handful of fields.
 *
 * Limits: input <= 16 MiB, nesting <= 64, strings valid UTF-8 (escapes
 * decoded, surrogate pairs combined, lone surrogates rejected). Numbers are
 * parsed with strtod after checking the JSON grammar. */
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JL_MAX_INPUT (16u * 1024u * 1024u)
#define JL_MAX_DEPTH 64

typedef struct jl_parser {
    const char *p, *end, *start;
    char *errbuf;
    size_t errbuf_size;
    int failed;
} jl_parser;

static void jl_fail(jl_parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jl_fail(jl_parser *ps, const char *fmt, ...)
{
    size_t line = 1, col = 1, used;
    va_list ap;
    if (ps->failed)
        return;
    ps->failed = 1;
    if (ps->errbuf == NULL || ps->errbuf_size == 0)
        return;
    for (const char *q = ps->start; q < ps->p && q < ps->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(ps->errbuf, ps->errbuf_size, "line %zu col %zu: ", line, col);
    used = strlen(ps->errbuf);
    va_start(ap, fmt);
    vsnprintf(ps->errbuf + used, ps->errbuf_size - used, fmt, ap);
    va_end(ap);
}

static void jl_skip_ws(jl_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static void jl_free_contents(jl_value *v)
{
    if (v == NULL)
        return;
    free(v->string);
    free(v->key);
    for (size_t i = 0; i < v->count; i++)
        jl_free_contents(&v->items[i]);
    free(v->items);
}

void jl_free(jl_value *v)
{
    jl_free_contents(v);
    free(v);
}

/* Appends a code point as UTF-8. */
static void put_utf8(char *out, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Parses a string at ps->p (which points at the opening quote). The decoded
 * form is never longer than the source, so one allocation suffices. */
static char *jl_string(jl_parser *ps, size_t *len_out)
{
    const char *q = ps->p + 1;
    const char *close = q;
    char *out;
    size_t n = 0;

    /* find the closing quote to size the buffer */
    while (close < ps->end && *close != '"') {
        if (*close == '\\')
            close++;
        close++;
    }
    if (close >= ps->end) {
        jl_fail(ps, "unterminated string");
        return NULL;
    }
    out = malloc((size_t)(close - q) + 1);
    if (out == NULL) {
        jl_fail(ps, "out of memory");
        return NULL;
    }
    while (q < close) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20) {
            ps->p = q;
            jl_fail(ps, "control character in string");
            free(out);
            return NULL;
        }
        if (c == '\\') {
            uint32_t cp;
            q++;
            switch (*q) {
            case '"': out[n++] = '"'; q++; break;
            case '\\': out[n++] = '\\'; q++; break;
            case '/': out[n++] = '/'; q++; break;
            case 'b': out[n++] = '\b'; q++; break;
            case 'f': out[n++] = '\f'; q++; break;
            case 'n': out[n++] = '\n'; q++; break;
            case 'r': out[n++] = '\r'; q++; break;
            case 't': out[n++] = '\t'; q++; break;
            case 'u':
                if (close - q < 5 || !hex4(q + 1, &cp)) {
                    ps->p = q;
                    jl_fail(ps, "bad \\u escape");
                    free(out);
                    return NULL;
                }
                q += 5;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (close - q < 6 || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF) {
                        ps->p = q;
                        jl_fail(ps, "lone surrogate in \\u escape");
                        free(out);
                        return NULL;
                    }
                    q += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    ps->p = q;
                    jl_fail(ps, "lone surrogate in \\u escape");
                    free(out);
                    return NULL;
                }
                if (cp == 0) {
                    ps->p = q;
                    jl_fail(ps, "\\u0000 is not supported");
                    free(out);
                    return NULL;
                }
                put_utf8(out, &n, cp); /* never longer than the 6 or 12 source bytes */
                break;
            default:
                ps->p = q;
                jl_fail(ps, "bad escape");
                free(out);
                return NULL;
            }
            continue;
        }
        if (c < 0x80) {
            out[n++] = (char)c;
            q++;
            continue;
        }
        {
            /* validate one UTF-8 sequence */
            size_t len;
            uint32_t cp;
            if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1Fu; }
            else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0Fu; }
            else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07u; }
            else len = 0, cp = 0;
            if (len == 0 || (size_t)(close - q) < len) {
                ps->p = q;
                jl_fail(ps, "invalid UTF-8");
                free(out);
                return NULL;
            }
            for (size_t i = 1; i < len; i++) {
                unsigned char cc = (unsigned char)q[i];
                if ((cc & 0xC0) != 0x80) {
                    ps->p = q;
                    jl_fail(ps, "invalid UTF-8");
                    free(out);
                    return NULL;
                }
                cp = (cp << 6) | (cc & 0x3Fu);
            }
            if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                (cp >= 0xD800 && cp <= 0xDFFF)) {
                ps->p = q;
                jl_fail(ps, "invalid UTF-8");
                free(out);
                return NULL;
            }
            memcpy(out + n, q, len);
            n += len;
            q += len;
        }
    }
    out[n] = '\0';
    ps->p = close + 1;
    *len_out = n;
    return out;
}

static int jl_number(jl_parser *ps, double *out)
{
    const char *q = ps->p;
    char buf[128];
    size_t len;

    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9') {
        if (q == ps->p && q < ps->end)
            jl_fail(ps, "unexpected character '%c'", *q);
        else
            jl_fail(ps, "bad number");
        return 0;
    }
    if (*q == '0')
        q++;
    else
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            jl_fail(ps, "bad number");
            return 0;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            jl_fail(ps, "bad number");
            return 0;
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    len = (size_t)(q - ps->p);
    if (len >= sizeof buf) {
        jl_fail(ps, "number too long");
        return 0;
    }
    memcpy(buf, ps->p, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    if (!isfinite(*out)) {
        jl_fail(ps, "number out of range");
        return 0;
    }
    ps->p = q;
    return 1;
}

static int jl_literal(jl_parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        jl_fail(ps, "unexpected token");
        return 0;
    }
    ps->p += n;
    return 1;
}

static int jl_value_parse(jl_parser *ps, jl_value *v, int depth);

/* Appends a zeroed child to v->items; NULL on failure. */
static jl_value *jl_push(jl_parser *ps, jl_value *v, size_t *cap)
{
    if (v->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        jl_value *p = realloc(v->items, ncap * sizeof *p);
        if (p == NULL) {
            jl_fail(ps, "out of memory");
            return NULL;
        }
        v->items = p;
        *cap = ncap;
    }
    memset(&v->items[v->count], 0, sizeof v->items[0]);
    v->items[v->count].type = JL_NULL;
    return &v->items[v->count++];
}

static int jl_container(jl_parser *ps, jl_value *v, int depth, int is_object)
{
    size_t cap = 0;
    char close = is_object ? '}' : ']';

    v->type = is_object ? JL_OBJECT : JL_ARRAY;
    ps->p++; /* '{' or '[' */
    jl_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    for (;;) {
        jl_value *child = jl_push(ps, v, &cap);
        if (child == NULL)
            return 0;
        jl_skip_ws(ps);
        if (is_object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                jl_fail(ps, "expected a member name");
                return 0;
            }
            child->key = jl_string(ps, &child->key_length);
            if (child->key == NULL)
                return 0;
            jl_skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                jl_fail(ps, "expected ':'");
                return 0;
            }
            ps->p++;
        }
        if (!jl_value_parse(ps, child, depth + 1))
            return 0;
        jl_skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return 1;
        }
        jl_fail(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        return 0;
    }
}

static int jl_value_parse(jl_parser *ps, jl_value *v, int depth)
{
    if (depth > JL_MAX_DEPTH) {
        jl_fail(ps, "nesting deeper than %d", JL_MAX_DEPTH);
        return 0;
    }
    jl_skip_ws(ps);
    if (ps->p >= ps->end) {
        jl_fail(ps, "unexpected end of input");
        return 0;
    }
    switch (*ps->p) {
    case '{': return jl_container(ps, v, depth, 1);
    case '[': return jl_container(ps, v, depth, 0);
    case '"':
        v->type = JL_STRING;
        v->string = jl_string(ps, &v->string_length);
        return v->string != NULL;
    case 't': v->type = JL_TRUE; return jl_literal(ps, "true");
    case 'f': v->type = JL_FALSE; return jl_literal(ps, "false");
    case 'n': v->type = JL_NULL; return jl_literal(ps, "null");
    default:
        v->type = JL_NUMBER;
        return jl_number(ps, &v->number);
    }
}

jl_value *jl_parse(const char *text, size_t length, char *errbuf, size_t errbuf_size)
{
    jl_parser ps;
    jl_value *root;

    ps.p = ps.start = text;
    ps.end = text + length;
    ps.errbuf = errbuf;
    ps.errbuf_size = errbuf_size;
    ps.failed = 0;
    if (errbuf != NULL && errbuf_size > 0)
        errbuf[0] = '\0';
    if (length > JL_MAX_INPUT) {
        jl_fail(&ps, "input larger than %u bytes", JL_MAX_INPUT);
        return NULL;
    }
    /* a UTF-8 byte order mark is tolerated */
    if (length >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        ps.p += 3;
    root = calloc(1, sizeof *root);
    if (root == NULL) {
        jl_fail(&ps, "out of memory");
        return NULL;
    }
    if (jl_value_parse(&ps, root, 0)) {
        jl_skip_ws(&ps);
        if (ps.p == ps.end)
            return root;
        jl_fail(&ps, "trailing characters after the JSON value");
    }
    jl_free(root);
    return NULL;
}

const jl_value *jl_get(const jl_value *object, const char *key)
{
    size_t klen;
    if (object == NULL || object->type != JL_OBJECT)
        return NULL;
    klen = strlen(key);
    for (size_t i = object->count; i-- > 0;) {
        const jl_value *m = &object->items[i];
        if (m->key_length == klen && memcmp(m->key, key, klen) == 0)
            return m;
    }
    return NULL;
}

const char *jl_get_string(const jl_value *object, const char *key)
{
    const jl_value *v = jl_get(object, key);
    return (v != NULL && v->type == JL_STRING) ? v->string : NULL;
}

int jl_get_number(const jl_value *object, const char *key, double *out)
{
    const jl_value *v = jl_get(object, key);
    if (v == NULL || v->type != JL_NUMBER)
        return 0;
    *out = v->number;
    return 1;
}

int jl_get_bool(const jl_value *object, const char *key, int *out)
{
    const jl_value *v = jl_get(object, key);
    if (v == NULL || (v->type != JL_TRUE && v->type != JL_FALSE))
        return 0;
    *out = v->type == JL_TRUE;
    return 1;
}
