/*
 * data.h — the A/B data, all from Debian packages, read offline:
 *  - English text for pre-training the language model (fortunes, and the
 *    licence texts of base-files);
 *  - SQL: the mysqltest `.test` files of mariadb-test-data, split by file
 *    into train / calibration / test with a seeded hash of the path;
 *  - Fashion-MNIST: the official idx files of dataset-fashion-mnist.
 * A missing package is NOT_FOUND naming the package to install.
 */
#ifndef AB_DATA_H
#define AB_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"

typedef struct ab_source {
    const char *path;     /* a file, or a directory read entirely (sorted) */
    const char *package;  /* the Debian package that ships it, for messages */
} ab_source;

typedef struct ab_text {
    uint8_t *data;
    size_t len;
} ab_text;

/* Concatenates the sources (fortune files without their "%" separator lines
 * and without the .dat/.u8 index files). */
expert_status ab_read_text(const ab_source *src, size_t n, ab_text *out, expert_error *err);
void ab_text_free(ab_text *t);

/* ------------------------------------------------------------- SQL */

enum { AB_SPLIT_TRAIN = 0, AB_SPLIT_CALIB = 1, AB_SPLIT_TEST = 2 };

typedef struct ab_doc {
    char *name;          /* path relative to the root, e.g. main/select.test */
    uint8_t *data;
    size_t len;
    int split;
} ab_doc;

typedef struct ab_docs {
    ab_doc *d;
    size_t n;
} ab_docs;

/* Every `*.test` file under src->path, sorted by name; a file goes to train
 * when u < train, to calibration when u < train + calib, else to test, with
 * u in [0, 1) a seeded hash of its name (independent of the file order and
 * of the other files). */
expert_status ab_sql_load(const ab_source *src, uint64_t seed, double train, double calib, ab_docs *out,
                          expert_error *err);
void ab_docs_free(ab_docs *d);
/* The documents of one split joined by '\n' (the training stream). */
expert_status ab_docs_join(const ab_docs *d, int split, ab_text *out, expert_error *err);

/* ---------------------------------------------------- Fashion-MNIST */

typedef struct ab_images {
    int n, rows, cols;
    uint8_t *pixels;     /* [n, rows·cols] */
    uint8_t *labels;     /* [n] */
} ab_images;

/* set: "train" or "t10k"; dir holds <set>-images-idx3-ubyte.gz and
 * <set>-labels-idx1-ubyte.gz (magic, counts and sizes checked). */
expert_status ab_fmnist_load(const ab_source *dir, const char *set, ab_images *out, expert_error *err);
void ab_images_free(ab_images *im);

/* -------------------------------------------------- text in JSON */

/* Bytes as a JSON string value: each byte b is the code point U+00bb
 * (ISO-8859-1), so any byte string survives JSON and UTF-8. */
char *ab_bytes_to_utf8(const uint8_t *p, size_t n, size_t *out_len);
/* The inverse; -1 if the text is not UTF-8 or has a code point > U+00FF. */
int ab_utf8_to_bytes(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len);

#endif
