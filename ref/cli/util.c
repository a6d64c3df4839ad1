/* util.c — helpers shared by the expert-cli subcommands (see util.h).
 * One file (~1,000 lines) on purpose: every helper here (argument
 * parsing, terminal escaping, atomic outputs, JSON strings, directories) is
 * small and used by several commands; splitting them would scatter util.h. */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ====================================================== argument parsing */

int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s %s: ", CLI_NAME, cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s %s --help'.\n", CLI_NAME, cmd->name);
    return CLI_EXIT_USAGE;
}

/* Long options map to 256 + their index in specs, so every getopt_long
 * answer leads back to the spec it concerns. */
#define CLI_LONG_BASE 256
#define CLI_HELP_VAL (CLI_LONG_BASE - 1)

int cli_parse(const cli_cmd *cmd, int argc, char **argv, const cli_opt_spec *specs,
              cli_opt_val *vals, size_t nopts, const char **pos, size_t min_pos,
              size_t max_pos, size_t *npos)
{
    /* "-": positionals come back in order as 1; ":": a missing value is ':' */
    char shorts[2 + 2 * 64 + 2] = "-:";
    size_t ns = 2;
    struct option *longs = calloc(nopts + 2, sizeof *longs);
    if (longs == NULL) {
        fprintf(stderr, "%s %s: NOMEM: out of memory\n", CLI_NAME, cmd->name);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < nopts; i++) {
        vals[i].seen = 0;
        vals[i].value = NULL;
        longs[i] = (struct option){specs[i].name, specs[i].has_value ? required_argument : no_argument, NULL,
                                   CLI_LONG_BASE + (int)i};
        if (specs[i].short_name != 0 && ns + 3 < sizeof shorts) {
            shorts[ns++] = specs[i].short_name;
            if (specs[i].has_value)
                shorts[ns++] = ':';
        }
    }
    longs[nopts] = (struct option){"help", no_argument, NULL, CLI_HELP_VAL};
    shorts[ns++] = 'h';
    shorts[ns] = '\0';

    size_t np = 0;
    int rc = 0, c;
    opterr = 0;
    optind = 0; /* full re-initialisation: a process may parse more than once */
    while (rc == 0 && (c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (c == 1) {
            if (np >= max_pos)
                rc = cli_usage_error(cmd, "unexpected argument '%s'", optarg);
            else
                pos[np++] = optarg;
        } else if (c == 'h' || c == CLI_HELP_VAL) {
            fputs(cmd->help, stdout);
            rc = CLI_PARSE_HELP;
        } else if (c == ':' || c == '?') {
            const cli_opt_spec *spec = NULL;
            for (size_t i = 0; i < nopts && spec == NULL; i++)
                if (optopt == CLI_LONG_BASE + (int)i || (optopt != 0 && optopt == specs[i].short_name))
                    spec = &specs[i];
            if (c == ':')
                rc = cli_usage_error(cmd, "option '--%s' needs a value", spec ? spec->name : "?");
            else if (spec != NULL)
                rc = cli_usage_error(cmd, "option '--%s' takes no value", spec->name);
            else if (optopt != 0)
                rc = cli_usage_error(cmd, "unknown option '-%c'", optopt);
            else
                rc = cli_usage_error(cmd, "unknown or ambiguous option '%s'", argv[optind - 1]);
        } else {
            size_t idx = nopts;
            for (size_t i = 0; i < nopts && idx == nopts; i++)
                if (c == CLI_LONG_BASE + (int)i || c == specs[i].short_name)
                    idx = i;
            if (idx < nopts) {
                vals[idx].seen = 1;
                vals[idx].value = specs[idx].has_value ? optarg : NULL;
            }
        }
    }
    /* after "--": the rest are positionals */
    for (int i = optind; rc == 0 && i < argc; i++) {
        if (np >= max_pos)
            rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        else
            pos[np++] = argv[i];
    }
    free(longs);
    if (rc != 0)
        return rc;
    if (np < min_pos)
        return cli_usage_error(cmd, "missing argument (expected %zu, got %zu)", min_pos, np);
    *npos = np;
    return 0;
}

unsigned cli_online_cpus(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (unsigned)(cpus > 64 ? 64 : cpus) : 1;
}

int cli_parse_u64(const cli_cmd *cmd, const char *opt, const char *text, uint64_t min,
                  uint64_t max, int allow_suffix, uint64_t *out)
{
    uint64_t v = 0, mult = 1;
    const char *p = text;

    if (*p < '0' || *p > '9')
        return cli_usage_error(cmd, "--%s: '%s' is not a number", opt, text);
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return cli_usage_error(cmd, "--%s: '%s' is too large", opt, text);
        v = v * 10 + d;
    }
    if (*p != '\0' && allow_suffix) {
        switch (*p) {
        case 'k': case 'K': mult = 1024u; break;
        case 'm': case 'M': mult = 1024u * 1024u; break;
        case 'g': case 'G': mult = 1024u * 1024u * 1024u; break;
        default: return cli_usage_error(cmd, "--%s: bad suffix in '%s'", opt, text);
        }
        p++;
        if (strcmp(p, "iB") == 0 || strcmp(p, "B") == 0)
            p += strlen(p);
    }
    if (*p != '\0')
        return cli_usage_error(cmd, "--%s: '%s' is not a number", opt, text);
    if (v > UINT64_MAX / mult)
        return cli_usage_error(cmd, "--%s: '%s' is too large", opt, text);
    v *= mult;
    if (v < min || v > max)
        return cli_usage_error(cmd, "--%s: %s is out of range [%" PRIu64 ", %" PRIu64 "]", opt,
                               text, min, max);
    *out = v;
    return 0;
}

/* ======================================================== error handling */

void err_clear(expert_error *err)
{
    err->code = EXPERT_OK;
    err->offset = EXPERT_NO_OFFSET;
    err->section = EXPERT_NO_SECTION;
    err->message[0] = '\0';
}

expert_status err_set(expert_error *err, expert_status code, const char *fmt, ...)
{
    va_list ap;
    err_clear(err);
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

expert_status err_errno(expert_error *err, expert_status code, int errno_value,
                        const char *fmt, ...)
{
    va_list ap;
    size_t used;
    err_clear(err);
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    used = strlen(err->message);
    snprintf(err->message + used, sizeof err->message - used, ": %s", strerror(errno_value));
    return code;
}

/* Name of section `index` as a NUL-terminated copy, or NULL. */
static char *section_name_copy(const expert_reader *r, uint32_t index)
{
    expert_section_info si;
    char *name;
    if (r == NULL || index == EXPERT_NO_SECTION || expert_section(r, index, &si) != EXPERT_OK ||
        si.name == NULL)
        return NULL;
    name = malloc((size_t)si.name_length + 1);
    if (name == NULL)
        return NULL;
    memcpy(name, si.name, si.name_length);
    name[si.name_length] = '\0';
    return name;
}

int cli_report(int json, const expert_reader *r, expert_status st, const expert_error *err)
{
    const char *cls = expert_status_name(st);
    const char *msg = (err != NULL && err->code == st) ? err->message : "";
    uint64_t offset = (err != NULL && err->code == st) ? err->offset : EXPERT_NO_OFFSET;
    uint32_t section = (err != NULL && err->code == st) ? err->section : EXPERT_NO_SECTION;
    char *sname = section_name_copy(r, section);
    int code = st == EXPERT_OK ? 1 : (int)st;

    if (json) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":false,\"error\":{\"class\":");
        sb_json_cstr(&sb, cls);
        sb_printf(&sb, ",\"code\":%d,\"message\":", (int)st);
        sb_json_cstr(&sb, msg);
        if (offset != EXPERT_NO_OFFSET)
            sb_printf(&sb, ",\"offset\":%" PRIu64, offset);
        else
            sb_puts(&sb, ",\"offset\":null");
        if (section != EXPERT_NO_SECTION)
            sb_printf(&sb, ",\"section\":%" PRIu32, section);
        else
            sb_puts(&sb, ",\"section\":null");
        if (sname != NULL) {
            sb_puts(&sb, ",\"section_name\":");
            sb_json_cstr(&sb, sname);
        }
        sb_puts(&sb, "}}");
        if (!sb.failed)
            printf("%s\n", sb.data);
        else
            printf("{\"ok\":false,\"error\":{\"class\":\"%s\",\"code\":%d}}\n", cls, (int)st);
        fflush(stdout);
        sb_free(&sb);
    } else {
        fprintf(stderr, "%s: %s", CLI_NAME, cls);
        if (msg[0] != '\0') {
            fputs(": ", stderr);
            fput_term(stderr, msg, strlen(msg));
        }
        if (section != EXPERT_NO_SECTION || offset != EXPERT_NO_OFFSET) {
            const char *sep = "";
            fputs(" (", stderr);
            if (section != EXPERT_NO_SECTION) {
                fprintf(stderr, "section %" PRIu32, section);
                if (sname != NULL) {
                    fputs(" '", stderr);
                    fput_term(stderr, sname, strlen(sname));
                    fputc('\'', stderr);
                }
                sep = ", ";
            }
            if (offset != EXPERT_NO_OFFSET)
                fprintf(stderr, "%soffset 0x%" PRIx64, sep, offset);
            fputc(')', stderr);
        }
        fputc('\n', stderr);
    }
    free(sname);
    return code;
}

/* ========================================================= string buffer */

void sb_init(strbuf *sb)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->failed = 0;
}

void sb_free(strbuf *sb)
{
    free(sb->data);
    sb_init(sb);
}

static int sb_reserve(strbuf *sb, size_t extra)
{
    size_t need, cap;
    char *p;
    if (sb->failed)
        return 0;
    if (extra > SIZE_MAX - sb->len - 1) {
        sb->failed = 1;
        return 0;
    }
    need = sb->len + extra + 1;
    if (need <= sb->cap)
        return 1;
    cap = sb->cap ? sb->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(sb->data, cap);
    if (p == NULL) {
        sb->failed = 1;
        return 0;
    }
    sb->data = p;
    sb->cap = cap;
    return 1;
}

void sb_append(strbuf *sb, const char *s, size_t n)
{
    if (!sb_reserve(sb, n))
        return;
    if (n > 0)
        memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void sb_puts(strbuf *sb, const char *s)
{
    sb_append(sb, s, strlen(s));
}

void sb_printf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;
    char small[256];

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        sb_append(sb, small, (size_t)n);
        return;
    }
    if (!sb_reserve(sb, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s[0..n) with its code point in
 * *cp, or 0 if invalid (overlong, surrogate, past U+10FFFF, truncated). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    size_t len;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10FFFF)) ||
        (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Characters a terminal acts on, or that hide or reorder the text around
 * them: C1 controls, bidirectional marks, embeddings, overrides and
 * isolates, zero-width and invisible formatting characters, line and
 * paragraph separators, the byte order mark. */
static int is_deceptive(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0xAD || cp == 0x061C || cp == 0x180E ||
           (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202E) ||
           (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB);
}

void sb_term_string(strbuf *sb, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        uint32_t cp = 0;
        size_t len = utf8_decode(p + i, n - i, &cp);
        char buf[16];
        if (len == 1 && cp >= 0x20 && cp != 0x7F) {
            run++;
            i++;
            continue;
        }
        if (len > 1 && !is_deceptive(cp)) {
            run += len;
            i += len;
            continue;
        }
        sb_append(sb, s + i - run, run);
        run = 0;
        if (len <= 1) { /* C0, DEL, or a byte that is not UTF-8 */
            snprintf(buf, sizeof buf, "\\x%02X", p[i]);
            i++;
        } else {
            snprintf(buf, sizeof buf, "\\u{%04" PRIX32 "}", cp);
            i += len;
        }
        sb_puts(sb, buf);
    }
    sb_append(sb, s + n - run, run);
}

/* What term_text gives when it cannot allocate: never NULL, never freed. */
static char k_term_unavailable[] = "?";

char *term_text(const char *s)
{
    strbuf sb;
    sb_init(&sb);
    sb_term_string(&sb, s ? s : "", s ? strlen(s) : 0);
    if (sb.failed || sb.data == NULL) {
        sb_free(&sb);
        return k_term_unavailable;
    }
    return sb.data;
}

void term_free(char *text)
{
    if (text != k_term_unavailable)
        free(text);
}

void fput_term(FILE *f, const char *s, size_t n)
{
    strbuf sb;
    sb_init(&sb);
    sb_term_string(&sb, s, n);
    if (!sb.failed && sb.data != NULL)
        fputs(sb.data, f);
    else if (sb.failed)
        fputs("?", f);
    sb_free(&sb);
}

void sb_json_string(strbuf *sb, const char *s, size_t n)
{
    /* JSON text is Unicode: bytes that are not UTF-8 (a path may hold any)
     * become U+FFFD; jansson does the escaping. */
    strbuf clean;
    sb_init(&clean);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (len == 0) {
            sb_puts(&clean, "\xEF\xBF\xBD");
            i++;
        } else {
            sb_append(&clean, s + i, len);
            i += len;
        }
    }
    json_t *j = clean.failed ? NULL : json_stringn(clean.data ? clean.data : "", clean.len);
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (text == NULL)
        sb->failed = 1;
    else
        sb_puts(sb, text);
    free(text);
    json_decref(j);
    sb_free(&clean);
}

void sb_json_cstr(strbuf *sb, const char *s)
{
    if (s == NULL)
        sb_puts(sb, "null");
    else
        sb_json_string(sb, s, strlen(s));
}

void sb_json_double(strbuf *sb, double v)
{
    char buf[64];
    if (!isfinite(v)) {
        sb_puts(sb, "null");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    sb_puts(sb, buf);
}

expert_status sb_print_line(strbuf *sb, expert_error *err)
{
    if (sb->failed)
        return err_set(err, EXPERT_E_NOMEM, "out of memory building output");
    if (fwrite(sb->data ? sb->data : "", 1, sb->len, stdout) != sb->len || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0)
        return err_errno(err, EXPERT_E_IO, errno, "cannot write to standard output");
    return EXPERT_OK;
}

/* ============================================================ formatting */

const char *fmt_size(uint64_t n, char buf[32])
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;
    if (n < 1024) {
        snprintf(buf, 32, "%" PRIu64 " B", n);
        return buf;
    }
    v /= 1024.0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, 32, v < 10.0 ? "%.2f %s" : v < 100.0 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

const char *fmt_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

const char *fmt_ratio(uint64_t decoded, uint64_t stored, char buf[32])
{
    if (stored == 0)
        snprintf(buf, 32, "-");
    else
        snprintf(buf, 32, "%.2fx", (double)decoded / (double)stored);
    return buf;
}

const char *fmt_shape(const uint64_t *dims, unsigned rank, char buf[128])
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, 128, "[");
    for (unsigned i = 0; i < rank && i < EXPERT_MAX_RANK && used < 128; i++)
        used += (size_t)snprintf(buf + used, 128 - used, i ? ", %" PRIu64 : "%" PRIu64, dims[i]);
    if (used < 128)
        snprintf(buf + used, 128 - used, "]");
    return buf;
}

uint64_t clock_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ============================================================== file I/O */

expert_status read_full(int fd, void *buf, size_t n, const char *what, expert_error *err)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = read(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return err_errno(err, EXPERT_E_IO, errno, "cannot read '%s'", what);
        }
        if (got == 0)
            return err_set(err, EXPERT_E_IO, "cannot read '%s': file shrank while reading", what);
        p += got;
        n -= (size_t)got;
    }
    return EXPERT_OK;
}

expert_status write_full(int fd, const void *buf, size_t n, const char *what, expert_error *err)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t put = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return err_errno(err, EXPERT_E_IO, errno, "cannot write '%s'", what);
        }
        p += put;
        n -= (size_t)put;
    }
    return EXPERT_OK;
}

expert_status read_small_file(const char *path, size_t max, char **out, size_t *len,
                              expert_error *err)
{
    struct stat st;
    char *buf;
    expert_status s;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_errno(err, EXPERT_E_IO, errno, "cannot open '%s'", path);
    if (fstat(fd, &st) != 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s'", path);
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        close(fd);
        return err_set(err, EXPERT_E_LIMIT_EXCEEDED, "'%s' is not a regular file of at most %zu bytes",
                       path, max);
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return err_set(err, EXPERT_E_NOMEM, "out of memory reading '%s'", path);
    }
    s = read_full(fd, buf, (size_t)st.st_size, path, err);
    close(fd);
    if (s != EXPERT_OK) {
        free(buf);
        return s;
    }
    buf[st.st_size] = '\0';
    *out = buf;
    *len = (size_t)st.st_size;
    return EXPERT_OK;
}

int path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ========================================================= atomic files */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* Temp files, modes, owners and the final link are outfile.c's (shared with
 * the library's writer); this adds the CLI's messages. */
expert_status atomic_begin(atomic_file *af, int dirfd, const char *leaf, const char *display,
                           expert_error *err)
{
    af->display = xstrdup(display);
    if (af->display == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    int e = xp_outfile_begin_at(&af->out, dirfd, leaf);
    if (e != 0) {
        expert_status s = err_errno(err, EXPERT_E_IO, e, "cannot %s for '%s'", af->out.step, display);
        free(af->display);
        af->display = NULL;
        return s;
    }
    return EXPERT_OK;
}

expert_status atomic_write(atomic_file *af, const void *data, size_t n, expert_error *err)
{
    return write_full(af->out.fd, data, n, af->display, err);
}

expert_status atomic_pwrite(atomic_file *af, const void *data, size_t n, uint64_t offset,
                            expert_error *err)
{
    const unsigned char *p = data;
    while (n > 0) {
        if (offset > (uint64_t)INT64_MAX - n)
            return err_set(err, EXPERT_E_IO, "cannot write '%s': offset too large", af->display);
        ssize_t put = pwrite(af->out.fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)offset);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return err_errno(err, EXPERT_E_IO, errno, "cannot write '%s'", af->display);
        }
        p += put;
        n -= (size_t)put;
        offset += (uint64_t)put;
    }
    return EXPERT_OK;
}

void atomic_abort(atomic_file *af)
{
    if (af->display != NULL)
        xp_outfile_abort(&af->out);
    free(af->display);
    af->display = NULL;
}

expert_status atomic_commit(atomic_file *af, int overwrite, expert_error *err)
{
    int e = xp_outfile_commit(&af->out, overwrite);
    expert_status s = EXPERT_OK;
    if (e == EEXIST)
        s = err_set(err, EXPERT_E_IO, "'%s' exists (use --force to replace it)", af->display);
    else if (e != 0)
        s = err_errno(err, EXPERT_E_IO, e, "cannot %s for '%s'", af->out.step, af->display);
    free(af->display);
    af->display = NULL;
    return s;
}

expert_status atomic_stage(atomic_file *af, char tmp[320], expert_error *err)
{
    int e = xp_outfile_stage(&af->out);
    expert_status s = e == 0 ? EXPERT_OK
                             : err_errno(err, EXPERT_E_IO, e, "cannot %s for '%s'", af->out.step, af->display);
    if (e == 0)
        memcpy(tmp, af->out.tmp, sizeof af->out.tmp);
    free(af->display);
    af->display = NULL;
    return s;
}

expert_status atomic_place(int dirfd, const char *tmp, const char *leaf, int overwrite, const char *display,
                           expert_error *err)
{
    int e = xp_outfile_place(dirfd, tmp, leaf, overwrite);
    if (e == EEXIST)
        return err_set(err, EXPERT_E_IO, "'%s' exists (use --force to replace it)", display);
    return e == 0 ? EXPERT_OK : err_errno(err, EXPERT_E_IO, e, "cannot move '%s' into place", display);
}

expert_status atomic_produce_path(const char *path, int overwrite, atomic_producer produce,
                                  void *ctx, expert_error *err)
{
    atomic_file af;
    af.display = xstrdup(path);
    if (af.display == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    int e = xp_outfile_begin(&af.out, path);
    if (e != 0) {
        expert_status s = err_errno(err, e == EISDIR ? EXPERT_E_INVALID_ARGUMENT : EXPERT_E_IO, e,
                                    "cannot %s for '%s'", af.out.step, path);
        free(af.display);
        return s;
    }
    expert_status s = produce(ctx, &af, err);
    if (s == EXPERT_OK)
        return atomic_commit(&af, overwrite, err);
    atomic_abort(&af);
    return s;
}

typedef struct bytes_ctx {
    const void *data;
    size_t n;
} bytes_ctx;

static expert_status produce_bytes(void *ctx, atomic_file *af, expert_error *err)
{
    const bytes_ctx *b = ctx;
    return atomic_write(af, b->data, b->n, err);
}

expert_status atomic_write_path(const char *path, const void *data, size_t n, int overwrite,
                                expert_error *err)
{
    bytes_ctx b = {data, n};
    return atomic_produce_path(path, overwrite, produce_bytes, &b, err);
}

/* =========================================================== directories */

expert_status make_dirs(const char *path, size_t *existed, expert_error *err)
{
    size_t n = strlen(path), last_sep = 0;
    char *buf = malloc(n + 1);
    struct stat st;

    if (existed != NULL)
        *existed = n;
    if (buf == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0755) == 0) {
            if (existed != NULL && *existed == n)
                *existed = last_sep; /* this component is the first one created */
        } else if (errno != EEXIST) {
            expert_status s = err_errno(err, EXPERT_E_IO, errno, "cannot create directory '%s'", buf);
            free(buf);
            return s;
        }
        if (i < n)
            buf[i] = '/';
        last_sep = i;
    }
    free(buf);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return err_set(err, EXPERT_E_IO, "'%s' is not a directory", path);
    return EXPERT_OK;
}

int is_safe_relpath(const char *name, size_t len)
{
    size_t start = 0;
    if (len == 0 || name[0] == '/')
        return 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && (name[i] == '\0' || name[i] == '\\'))
            return 0;
        if (i == len || name[i] == '/') {
            size_t clen = i - start;
            if (clen == 0)
                return 0;
            if ((clen == 1 && name[start] == '.') ||
                (clen == 2 && name[start] == '.' && name[start + 1] == '.'))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

expert_status open_subdir(int dirfd, const char *reldir, size_t reldir_len, int create,
                          dir_created_fn on_create, void *ctx, int *out_fd, expert_error *err)
{
    int cur = dup(dirfd);
    size_t start = 0;
    char comp[1025];

    if (cur < 0)
        return err_errno(err, EXPERT_E_IO, errno, "dup");
    while (start < reldir_len) {
        size_t end = start;
        int next;
        while (end < reldir_len && reldir[end] != '/')
            end++;
        if (end == start || end - start >= sizeof comp) {
            close(cur);
            return err_set(err, EXPERT_E_INVALID_ARGUMENT, "bad directory name '%.*s'",
                           (int)reldir_len, reldir);
        }
        memcpy(comp, reldir + start, end - start);
        comp[end - start] = '\0';
        if (create) {
            if (mkdirat(cur, comp, 0755) == 0) {
                if (on_create != NULL && on_create(ctx, reldir, end) != 0) {
                    close(cur);
                    return err_set(err, EXPERT_E_NOMEM, "out of memory");
                }
            } else if (errno != EEXIST) {
                expert_status s = err_errno(err, EXPERT_E_IO, errno, "cannot create directory '%.*s'",
                                            (int)end, reldir);
                close(cur);
                return s;
            }
        }
        next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            int e = errno;
            close(cur);
            if (e == ELOOP || e == ENOTDIR)
                return err_set(err, EXPERT_E_INVALID_ARGUMENT,
                               "'%.*s' exists and is not a directory (symlinks are not followed)",
                               (int)end, reldir);
            return err_errno(err, EXPERT_E_IO, e, "cannot open directory '%.*s'", (int)end, reldir);
        }
        close(cur);
        cur = next;
        start = end + 1;
    }
    *out_fd = cur;
    return EXPERT_OK;
}

/* ------------------------------------------------------- directory walk */

#define WALK_MAX_DEPTH 64
#define WALK_MAX_PATH 1024 /* a section name holds at most 1024 bytes */
#define WALK_MAX_FILES 65000

static expert_status list_add(file_list *list, const char *path, const struct stat *st,
                              expert_error *err)
{
    if (list->count >= WALK_MAX_FILES)
        return err_set(err, EXPERT_E_LIMIT_EXCEEDED, "more than %d files", WALK_MAX_FILES);
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        file_entry *p = realloc(list->items, cap * sizeof *p);
        if (p == NULL)
            return err_set(err, EXPERT_E_NOMEM, "out of memory listing files");
        list->items = p;
        list->cap = cap;
    }
    list->items[list->count].path = xstrdup(path);
    if (list->items[list->count].path == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory listing files");
    list->items[list->count].size = (uint64_t)st->st_size;
    list->items[list->count].dev = (uint64_t)st->st_dev;
    list->items[list->count].ino = (uint64_t)st->st_ino;
    list->count++;
    return EXPERT_OK;
}

static const char *file_kind(mode_t mode)
{
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "not a regular file";
}

/* Walks the directory open as dirfd (consumed), whose relative path is prefix. */
static expert_status walk_rec(int dirfd, const char *root, const char *prefix, int depth,
                              file_list *out, expert_error *err)
{
    DIR *d;
    struct dirent *de;
    expert_status s = EXPERT_OK;
    char path[WALK_MAX_PATH + 2];

    if (depth > WALK_MAX_DEPTH) {
        close(dirfd);
        return err_set(err, EXPERT_E_LIMIT_EXCEEDED, "'%s/%s': directories nested too deeply",
                       root, prefix);
    }
    d = fdopendir(dirfd);
    if (d == NULL) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot read directory '%s/%s'", root, prefix);
        close(dirfd);
        return s;
    }
    for (;;) {
        struct stat st;
        int n;
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0)
                s = err_errno(err, EXPERT_E_IO, errno, "cannot read directory '%s/%s'", root, prefix);
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n = snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "/" : "", de->d_name);
        if (n < 0 || (size_t)n > WALK_MAX_PATH) {
            s = err_set(err, EXPERT_E_LIMIT_EXCEEDED,
                        "'%s/%s%s%s': relative path longer than %d bytes", root, prefix,
                        prefix[0] ? "/" : "", de->d_name, WALK_MAX_PATH);
            break;
        }
        if (strchr(de->d_name, '\\') != NULL) {
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                        "'%s/%s': backslashes are not allowed in package file names", root, path);
            break;
        }
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s/%s'", root, path);
            break;
        }
        if (S_ISREG(st.st_mode)) {
            s = list_add(out, path, &st, err);
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                s = err_errno(err, EXPERT_E_IO, errno, "cannot open directory '%s/%s'", root, path);
            else
                s = walk_rec(sub, root, path, depth + 1, out, err);
        } else {
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                        "'%s/%s' is %s; only regular files and directories can be packed", root,
                        path, file_kind(st.st_mode));
        }
        if (s != EXPERT_OK)
            break;
    }
    closedir(d);
    return s;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const file_entry *)a)->path, ((const file_entry *)b)->path);
}

expert_status walk_dir(const char *root, file_list *out, expert_error *err)
{
    expert_status s;
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    out->items = NULL;
    out->count = out->cap = 0;
    if (fd < 0)
        return err_errno(err, EXPERT_E_IO, errno, "cannot open directory '%s'", root);
    s = walk_rec(fd, root, "", 0, out, err);
    if (s != EXPERT_OK) {
        file_list_free(out);
        return s;
    }
    if (out->count > 1)
        qsort(out->items, out->count, sizeof out->items[0], entry_cmp);
    return EXPERT_OK;
}

void file_list_free(file_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i].path);
    free(list->items);
    list->items = NULL;
    list->count = list->cap = 0;
}
