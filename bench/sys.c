/* sys.c — topology (hwloc), pinning, node-local buffers, worker pool,
 * page-cache control and the context block. See sys.h. */
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <hwloc.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <zlib.h>
#include <zstd.h>

#include <expert.h>

#ifndef XB_BENCHMARK_VERSION
#define XB_BENCHMARK_VERSION "unknown"
#endif
#ifndef XB_EXPERT_VERSION
#define XB_EXPERT_VERSION "unknown"
#endif
#ifndef XB_HWLOC_VERSION
#define XB_HWLOC_VERSION "unknown"
#endif
#ifndef XB_BUILD_TYPE
#define XB_BUILD_TYPE "unknown"
#endif

/* ============================================================ topology */

static hwloc_topology_t g_topo;
static int g_topo_ok;
static hwloc_obj_t g_node;          /* chosen NUMA node (may be NULL) */
static hwloc_cpuset_t g_cpuset;     /* cpuset used for binding */
static hwloc_nodeset_t g_nodeset;
static int g_pin_pu;
static int g_membind_ok;

static void set_err(char *err, size_t n, const char *fmt, ...)
{
    if (err == NULL || n == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

int xs_topology_init(int node, const char *pin, char *err, size_t errlen)
{
    g_pin_pu = pin != NULL && strcmp(pin, "pu") == 0;
    if (hwloc_topology_init(&g_topo) != 0 || hwloc_topology_load(g_topo) != 0) {
        set_err(err, errlen, "hwloc: cannot load the topology");
        return -1;
    }
    g_topo_ok = 1;
    int nn = hwloc_get_nbobjs_by_type(g_topo, HWLOC_OBJ_NUMANODE);
    if (nn > 0) {
        if (node >= nn) {
            set_err(err, errlen, "--xb-node=%d but the machine has %d NUMA node(s)", node, nn);
            return -1;
        }
        if (node < 0) { /* the node with the most PUs */
            int best = 0, best_pus = -1;
            for (int i = 0; i < nn; i++) {
                hwloc_obj_t o = hwloc_get_obj_by_type(g_topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
                int pus = hwloc_bitmap_weight(o->cpuset);
                if (pus > best_pus) {
                    best_pus = pus;
                    best = i;
                }
            }
            node = best;
        }
        g_node = hwloc_get_obj_by_type(g_topo, HWLOC_OBJ_NUMANODE, (unsigned)node);
    }
    g_cpuset = hwloc_bitmap_dup(g_node ? g_node->cpuset
                                       : hwloc_topology_get_topology_cpuset(g_topo));
    g_nodeset = hwloc_bitmap_dup(g_node ? g_node->nodeset
                                        : hwloc_topology_get_topology_nodeset(g_topo));
    /* Only PUs we may run on. */
    hwloc_bitmap_and(g_cpuset, g_cpuset, hwloc_topology_get_allowed_cpuset(g_topo));
    if (hwloc_bitmap_iszero(g_cpuset)) {
        set_err(err, errlen, "hwloc: the chosen node has no allowed PU");
        return -1;
    }
    xs_bind_thread(0);
    /* Allocations of this thread (the library's included) on the node. */
    g_membind_ok = hwloc_set_membind(g_topo, g_nodeset, HWLOC_MEMBIND_BIND,
                                     HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) == 0;
    return 0;
}

void xs_topology_fini(void)
{
    if (!g_topo_ok)
        return;
    hwloc_bitmap_free(g_cpuset);
    hwloc_bitmap_free(g_nodeset);
    hwloc_topology_destroy(g_topo);
    g_topo_ok = 0;
}

unsigned xs_node_pus(void)
{
    return g_topo_ok ? (unsigned)hwloc_bitmap_weight(g_cpuset) : 1;
}

static int g_bind_failed;

void xs_bind_thread(unsigned k)
{
    if (!g_topo_ok)
        return;
    int rc;
    if (g_pin_pu) {
        unsigned n = xs_node_pus();
        int id = hwloc_bitmap_first(g_cpuset);
        for (unsigned j = 0; j < k % n; j++)
            id = hwloc_bitmap_next(g_cpuset, id);
        hwloc_bitmap_t one = hwloc_bitmap_alloc();
        hwloc_bitmap_only(one, (unsigned)id);
        rc = hwloc_set_cpubind(g_topo, one, HWLOC_CPUBIND_THREAD);
        hwloc_bitmap_free(one);
    } else {
        rc = hwloc_set_cpubind(g_topo, g_cpuset, HWLOC_CPUBIND_THREAD);
    }
    if (rc != 0)
        g_bind_failed = 1;
}

void *xs_alloc(size_t size)
{
    void *p = NULL;
    if (size == 0)
        size = 1;
    if (g_topo_ok)
        p = hwloc_alloc_membind(g_topo, size, g_nodeset, HWLOC_MEMBIND_BIND,
                                HWLOC_MEMBIND_BYNODESET);
    if (p == NULL) {
        /* hwloc falls back itself unless STRICT; this is for a failed topology. */
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
    }
    memset(p, 0, size); /* pre-fault: page faults are never part of a measurement */
    return p;
}

void xs_free(void *p, size_t size)
{
    if (p == NULL)
        return;
    if (size == 0)
        size = 1;
    if (g_topo_ok)
        hwloc_free(g_topo, p, size);
    else
        munmap(p, size);
}

/* ========================================================== worker pool */

static struct {
    pthread_t tid[256];
    unsigned n;            /* including the caller */
    pthread_mutex_t m;
    pthread_cond_t go, done;
    unsigned long gen;
    unsigned active;       /* workers taking part in the current run */
    unsigned pending;
    xs_task_fn fn;
    void *arg;
    int quit;
} g_pool = {.m = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER,
            .done = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *p)
{
    unsigned k = (unsigned)(uintptr_t)p;
    xs_bind_thread(k);
    if (g_topo_ok)
        hwloc_set_membind(g_topo, g_nodeset, HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
    unsigned long seen = 0;
    pthread_mutex_lock(&g_pool.m);
    for (;;) {
        while (!g_pool.quit && g_pool.gen == seen)
            pthread_cond_wait(&g_pool.go, &g_pool.m);
        if (g_pool.quit)
            break;
        seen = g_pool.gen;
        if (k >= g_pool.active)
            continue;
        xs_task_fn fn = g_pool.fn;
        void *arg = g_pool.arg;
        pthread_mutex_unlock(&g_pool.m);
        fn(arg, k);
        pthread_mutex_lock(&g_pool.m);
        if (--g_pool.pending == 0)
            pthread_cond_signal(&g_pool.done);
    }
    pthread_mutex_unlock(&g_pool.m);
    return NULL;
}

int xs_pool_init(unsigned n)
{
    if (n < 1)
        n = 1;
    if (n > 256)
        n = 256;
    g_pool.n = 1;
    for (unsigned k = 1; k < n; k++) {
        if (pthread_create(&g_pool.tid[k], NULL, pool_main, (void *)(uintptr_t)k) != 0)
            return -1;
        g_pool.n = k + 1;
    }
    return 0;
}

void xs_pool_fini(void)
{
    pthread_mutex_lock(&g_pool.m);
    g_pool.quit = 1;
    pthread_cond_broadcast(&g_pool.go);
    pthread_mutex_unlock(&g_pool.m);
    for (unsigned k = 1; k < g_pool.n; k++)
        pthread_join(g_pool.tid[k], NULL);
    g_pool.n = 1;
}

unsigned xs_pool_size(void) { return g_pool.n ? g_pool.n : 1; }

void xs_pool_run(unsigned n, xs_task_fn fn, void *arg)
{
    if (n > xs_pool_size())
        n = xs_pool_size();
    if (n <= 1) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&g_pool.m);
    g_pool.fn = fn;
    g_pool.arg = arg;
    g_pool.active = n;
    g_pool.pending = n - 1;
    g_pool.gen++;
    pthread_cond_broadcast(&g_pool.go);
    pthread_mutex_unlock(&g_pool.m);
    fn(arg, 0);
    pthread_mutex_lock(&g_pool.m);
    while (g_pool.pending != 0)
        pthread_cond_wait(&g_pool.done, &g_pool.m);
    pthread_mutex_unlock(&g_pool.m);
}

/* ========================================================== page cache */

double xs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int xs_evict(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc == 0 ? 0 : -1;
}

int xs_warm(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    static char buf[1 << 20];
    ssize_t k;
    while ((k = read(fd, buf, sizeof buf)) > 0)
        ;
    close(fd);
    return k < 0 ? -1 : 0;
}

uint64_t xs_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

double xs_resident_fraction(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (size + page - 1) / page;
    unsigned char *vec = malloc(pages);
    double frac = -1;
    if (vec != NULL && mincore(m, size, vec) == 0) {
        size_t res = 0;
        for (size_t i = 0; i < pages; i++)
            res += vec[i] & 1;
        frac = (double)res / (double)pages;
    }
    free(vec);
    munmap(m, size);
    return frac;
}

/* ============================================================= context */

typedef struct kv {
    char *key, *value;
} kv;
static kv *g_ctx;
static size_t g_nctx, g_capctx;

void xs_context_add(const char *key, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < g_nctx; i++)
        if (strcmp(g_ctx[i].key, key) == 0) {
            free(g_ctx[i].value);
            g_ctx[i].value = strdup(buf);
            return;
        }
    if (g_nctx == g_capctx) {
        size_t cap = g_capctx ? 2 * g_capctx : 32;
        kv *n = realloc(g_ctx, cap * sizeof *n);
        if (n == NULL)
            return;
        g_ctx = n;
        g_capctx = cap;
    }
    g_ctx[g_nctx].key = strdup(key);
    g_ctx[g_nctx].value = strdup(buf);
    g_nctx++;
}

size_t xs_context_count(void) { return g_nctx; }
const char *xs_context_key(size_t i) { return i < g_nctx ? g_ctx[i].key : NULL; }
const char *xs_context_value(size_t i) { return i < g_nctx ? g_ctx[i].value : NULL; }

void xs_context_free(void)
{
    for (size_t i = 0; i < g_nctx; i++) {
        free(g_ctx[i].key);
        free(g_ctx[i].value);
    }
    free(g_ctx);
    g_ctx = NULL;
    g_nctx = g_capctx = 0;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
}

static void cpu_info(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192], model[256] = "unknown";
    int have_model = 0, have_flags = 0;
    char flags_of_note[256] = "";
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (!have_model && strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                snprintf(model, sizeof model, "%s", c + 2);
                trim(model);
                have_model = 1;
            }
        } else if (!have_flags && strncmp(line, "flags", 5) == 0) {
            static const char *const want[] = {"sha_ni", "avx2", "avx512f", "avx512bw",
                                               "bmi2", "hypervisor", "aes"};
            for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                char pat[32];
                snprintf(pat, sizeof pat, " %s", want[i]);
                char *p = strstr(line, pat);
                size_t l = strlen(pat);
                if (p && (p[l] == ' ' || p[l] == '\n' || p[l] == 0)) {
                    size_t n = strlen(flags_of_note);
                    snprintf(flags_of_note + n, sizeof flags_of_note - n, "%s%s",
                             n ? " " : "", want[i]);
                }
            }
            have_flags = 1;
        }
    }
    if (f)
        fclose(f);
    xs_context_add("cpu_model", "%s", model);
    xs_context_add("cpu_flags_of_note", "%s", flags_of_note);
    xs_context_add("cpus_online", "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    f = fopen("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "r");
    if (f && fgets(line, sizeof line, f)) {
        trim(line);
        xs_context_add("cpu_governor", "%s", line);
    } else {
        xs_context_add("cpu_governor", "n/a");
    }
    if (f)
        fclose(f);
    f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "MemTotal:", 9) == 0) {
            char *p = line + 9;
            while (*p == ' ')
                p++;
            trim(p);
            xs_context_add("mem_total", "%s", p);
        }
    }
    if (f)
        fclose(f);
}

static void topology_info(void)
{
    if (!g_topo_ok) {
        xs_context_add("topology", "unavailable");
        return;
    }
    int np = hwloc_get_nbobjs_by_type(g_topo, HWLOC_OBJ_PACKAGE);
    int nn = hwloc_get_nbobjs_by_type(g_topo, HWLOC_OBJ_NUMANODE);
    int nc = hwloc_get_nbobjs_by_type(g_topo, HWLOC_OBJ_CORE);
    int npu = hwloc_get_nbobjs_by_type(g_topo, HWLOC_OBJ_PU);
    char caches[256] = "";
    static const hwloc_obj_type_t ct[] = {HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L3CACHE};
    static const char *const cn[] = {"L1d", "L2", "L3"};
    for (int i = 0; i < 3; i++) {
        int cnt = hwloc_get_nbobjs_by_type(g_topo, ct[i]);
        if (cnt <= 0)
            continue;
        hwloc_obj_t o = hwloc_get_obj_by_type(g_topo, ct[i], 0);
        size_t n = strlen(caches);
        snprintf(caches + n, sizeof caches - n, "%s%s %d x %llu KiB", n ? ", " : "", cn[i], cnt,
                 (unsigned long long)(o->attr->cache.size / 1024));
    }
    xs_context_add("topology", "%d package(s), %d NUMA node(s), %d core(s), %d PU(s); %s", np, nn,
                   nc, npu, caches);
    char *cs = NULL, *ns = NULL;
    hwloc_bitmap_list_asprintf(&cs, g_cpuset);
    hwloc_bitmap_list_asprintf(&ns, g_nodeset);
    unsigned long long mem = g_node ? (unsigned long long)g_node->attr->numanode.local_memory : 0;
    xs_context_add("numa_node", "%d", g_node ? (int)g_node->logical_index : -1);
    xs_context_add("numa_node_cpus", "%s", cs ? cs : "?");
    xs_context_add("numa_node_memory", "%llu MiB", mem >> 20);
    xs_context_add("numa_nodeset", "%s", ns ? ns : "?");
    free(cs);
    free(ns);
    xs_context_add("pinning", "%s%s", g_pin_pu ? "pu (measuring thread on the node's first PU, worker k on PU k)"
                                                : "node (every thread bound to the node's cpuset)",
                   g_bind_failed ? "; binding FAILED" : "");
    xs_context_add("membind", "%s", g_membind_ok ? "bound to the node (hwloc_set_membind, thread)"
                                                 : "not supported here (first-touch on the node's cpus)");
}

static const char *fs_name(unsigned long t)
{
    switch (t) {
    case 0xEF53: return "ext2/3/4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794c7630: return "overlayfs";
    case 0x6969: return "nfs";
    case 0x2fc12fc1: return "zfs";
    case 0x01021997: return "9p";
    case 0x6a656a63: return "virtiofs";
    case 0x65735546: return "fuse";
    case 0xF2F52010: return "f2fs";
    default: return "unknown";
    }
}

static void fs_info(const char *dir)
{
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL)
        snprintf(real, sizeof real, "%s", dir);
    xs_context_add("data_dir", "%s", real);
    struct statfs sf;
    if (statfs(real, &sf) == 0)
        xs_context_add("data_fs_magic", "0x%lx (%s), block %ld", (unsigned long)sf.f_type,
                       fs_name((unsigned long)sf.f_type), (long)sf.f_bsize);
    /* Longest mount point that prefixes the path: fstype, source, options. */
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096], best_mp[PATH_MAX] = "", best_desc[1024] = "unknown";
    size_t best = 0;
    while (f && fgets(line, sizeof line, f)) {
        /* id parent maj:min root mountpoint options ... - fstype source superopts */
        char root[PATH_MAX], mp[PATH_MAX], opts[512];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s %511s", root, mp, opts) != 3)
            continue;
        size_t l = strlen(mp);
        int prefix = strncmp(real, mp, l) == 0 && (real[l] == '/' || real[l] == 0 || l == 1);
        if (!prefix || l < best)
            continue;
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        char fstype[64] = "?", source[512] = "?";
        sscanf(dash + 3, "%63s %511s", fstype, source);
        best = l;
        snprintf(best_mp, sizeof best_mp, "%s", mp);
        int n = snprintf(best_desc, sizeof best_desc, "%s on %s (%s), mount options %s", fstype,
                         mp, source, opts);
        if (n < 0 || (size_t)n >= sizeof best_desc) /* a long mount point: keep what fits */
            best_desc[sizeof best_desc - 1] = '\0';
    }
    if (f)
        fclose(f);
    xs_context_add("data_fs", "%s", best_desc);
}

void xs_context_collect(const char *data_dir)
{
    struct utsname u;
    if (uname(&u) == 0) {
        xs_context_add("kernel", "%s %s %s", u.sysname, u.release, u.machine);
        xs_context_add("kernel_build", "%s", u.version);
        xs_context_add("hostname", "%s", u.nodename);
    }
    cpu_info();
    topology_info();
    fs_info(data_dir);
    xs_context_add("lib_expert", "%s (format %d.%d)", XB_EXPERT_VERSION, EXPERT_FORMAT_MAJOR,
                   EXPERT_FORMAT_MINOR);
    xs_context_add("lib_zstd", "%s", ZSTD_versionString());
    xs_context_add("lib_openssl", "%s", OpenSSL_version(OPENSSL_VERSION));
    xs_context_add("lib_jansson", "%s", jansson_version_str());
    xs_context_add("lib_archive", "%s", archive_version_details());
    xs_context_add("lib_zlib", "%s", zlibVersion());
    unsigned hv = hwloc_get_api_version();
    xs_context_add("lib_hwloc", "%s (API %u.%u.%u)", XB_HWLOC_VERSION, hv >> 16, (hv >> 8) & 0xff,
                   hv & 0xff);
    xs_context_add("lib_benchmark", "%s", XB_BENCHMARK_VERSION);
    xs_context_add("compiler", "%s", __VERSION__);
    xs_context_add("build_type", "%s", XB_BUILD_TYPE);
}
