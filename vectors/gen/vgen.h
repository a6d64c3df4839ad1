/*
 * vgen.h — helpers of the golden-vector generator over the independent
 * layout model (conformance/model/xpmodel.h, written from the spec and not
 * from ref/lib, so the vectors test the library against the spec and not
 * against itself): a generator's fatal errors, the model parsed or framed
 * with those, hex and JSON text helpers.
 */
#ifndef VGEN_H
#define VGEN_H

#include <stddef.h>
#include <stdint.h>

#include "xpmodel.h"

void *xmalloc(size_t n);
void *xcalloc(size_t a, size_t b);
char *xstrdup(const char *s);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

void hex(const uint8_t *p, size_t n, char *out); /* 2n+1 chars */

/* xm_parse, or the generator stops. */
void model_parse(const uint8_t *p, size_t n, xm_model *m);
/* The metadata as one hand-built single-segment frame (raw and RLE blocks):
 * bytes that do not depend on the libzstd version. */
void model_set_meta_json(xm_model *m, const char *json, size_t len);
/* zframe, or the generator stops (options no frame can have). */
void frame(xb *out, const uint8_t *content, size_t n, const zf_opts *o);

/* ---- JSON helpers ---- */
void json_str(xb *b, const uint8_t *s, size_t n); /* quoted, escaped */
/* Strips insignificant whitespace from valid JSON (a NUL-terminated copy). */
char *json_minify(const char *s, size_t n);

#endif
