/* sys.h — machine side of the benchmark: hwloc topology and pinning,
 * node-local buffers, a pinned worker pool, page-cache control, and the
 * context block (CPU, kernel, library versions, file system). */
#ifndef XB_SYS_H
#define XB_SYS_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ topology */

/* pin: "node" binds every measuring/decode thread to the cpuset of one NUMA
 * node; "pu" binds the measuring thread to the node's first PU and worker k
 * to the node's PU k (mod PUs). node < 0 picks the node with the most PUs. */
int xs_topology_init(int node, const char *pin, char *err, size_t errlen);
void xs_topology_fini(void);
unsigned xs_node_pus(void);           /* PUs in the chosen node */
/* Binds the calling thread as worker `k` (0 = the measuring thread). */
void xs_bind_thread(unsigned k);

/* Node-local, pre-faulted memory (hwloc_alloc_membind; malloc fallback). */
void *xs_alloc(size_t size);
void xs_free(void *p, size_t size);

/* ---------------------------------------------------------- worker pool */

typedef void (*xs_task_fn)(void *arg, unsigned worker);
/* n-1 pinned workers; the caller is worker 0. */
int xs_pool_init(unsigned n);
void xs_pool_fini(void);
unsigned xs_pool_size(void);
/* Runs fn(arg, k) on workers 0..n-1 (n <= pool size) and waits for all. */
void xs_pool_run(unsigned n, xs_task_fn fn, void *arg);

/* --------------------------------------------------------- page cache */

double xs_now(void);                  /* CLOCK_MONOTONIC seconds */
int xs_evict(const char *path);       /* posix_fadvise DONTNEED; 0 or -1 */
int xs_warm(const char *path);        /* read the whole file once */
double xs_resident_fraction(const char *path); /* mincore; -1 on error */
uint64_t xs_file_size(const char *path);

/* ------------------------------------------------------------- context */

void xs_context_add(const char *key, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Collects machine, topology, versions and the file system of data_dir. */
void xs_context_collect(const char *data_dir);
size_t xs_context_count(void);
const char *xs_context_key(size_t i);
const char *xs_context_value(size_t i);
void xs_context_free(void);

#endif
