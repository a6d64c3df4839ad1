/* fuzz_common.h — helpers shared by the fuzz targets (libFuzzer entry point
 * LLVMFuzzerTestOneInput in each fuzz_*.c; fuzz_driver.c gives the same
 * targets a plain main() for AFL++ and for the regression replay). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "xpmodel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failed invariant is a bug of the library: stop so the fuzzer keeps it. */
#define FZ_ASSERT(c)                                                                               \
    do {                                                                                           \
        if (!(c))                                                                                  \
            fz_fail(#c, __FILE__, __LINE__);                                                       \
    } while (0)
void fz_fail(const char *what, const char *file, int line) __attribute__((noreturn));

/* The RFC 8032 §7.1 TEST 1 public key of spec §16 (as a PEM file path,
 * created once), so signed seeds can be verified. */
const expert_public_key *fz_public_key(void);

/* Reads and checks everything a reader offers: sections (bounded decode into
 * a buffer of at most `max_section` bytes), lookups, layer order, modules;
 * then full validation without and with the key. Checks the API's
 * invariants (a found name resolves to its own index, the layer order is a
 * permutation, a successful read hashes to the TOC digest...). */
void fz_exercise(expert_reader *r, int full);

/* A valid container around a metadata document (bytes as given, zstd) with
 * one FILE section "adapter_config.json". */
void fz_wrap_metadata(const uint8_t *json, size_t n, xb *out);

/* A valid container with one section whose TOC claims come from the first 8
 * input bytes and whose stored bytes are the rest. */
void fz_wrap_section(const uint8_t *data, size_t size, xb *out, unsigned *threads);

/* 64-byte aligned private copy of the input (the library reads caller memory
 * in place; the copy lets ASan see reads past the end). */
uint8_t *fz_copy(const uint8_t *data, size_t size);

#endif
