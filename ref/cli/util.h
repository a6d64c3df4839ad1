/* util.h — shared helpers of expert-cli: argument parsing, error reporting,
 * a growable string buffer with JSON escaping, size/hex formatting, atomic
 * file writing and directory walking.
 *
 * Everything here reports failures as an expert_status plus an expert_error,
 * the same convention as the library, so the CLI has one error path. */
#ifndef EXPERT_CLI_UTIL_H
#define EXPERT_CLI_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "expert.h"
#include "outfile.h"

#ifndef CLI_NAME /* programs that borrow these helpers name themselves */
#define CLI_NAME "expert-cli"
#endif
#define CLI_VERSION "2.0.0"
#define CLI_EXIT_USAGE 64  /* EX_USAGE */
#define CLI_PARSE_HELP (-1) /* cli_parse: --help was printed, exit 0 */

/* ------------------------------------------------------------ commands */

typedef struct cli_cmd {
    const char *name;     /* "pack" */
    const char *summary;  /* one line for the command list */
    const char *help;     /* full help text (usage line first) */
    int (*run)(const struct cli_cmd *cmd, int argc, char **argv);
} cli_cmd;

/* Subcommands implemented outside main.c. argv[0] is the subcommand name;
 * the return value is the process exit code. */
int cmd_pack(const cli_cmd *cmd, int argc, char **argv);
int cmd_convert(const cli_cmd *cmd, int argc, char **argv); /* convert.c */
extern const char k_help_convert[];                          /* convert.c */
int cmd_merge(const cli_cmd *cmd, int argc, char **argv);    /* merge.c */
int cmd_compress(const cli_cmd *cmd, int argc, char **argv); /* compress.c */
int cmd_diff(const cli_cmd *cmd, int argc, char **argv);     /* diff.c */
extern const char cli_help_merge[], cli_help_compress[], cli_help_diff[];
/* A command carried out by another program of the project: exec'd with
 * `subcommand` and argv[1..], found through $env, next to this executable,
 * in ../build_subdir/ (a build tree), then on PATH. */
typedef struct cli_helper {
    const char *program;      /* "expert-quality" */
    const char *env;          /* "EXPERT_QUALITY": an explicit path */
    const char *build_subdir; /* "quality" */
    const char *subcommand;
    const char *missing_hint; /* why it may be absent */
} cli_helper;
int cli_exec_helper(const cli_cmd *cmd, const cli_helper *h, int argc, char **argv);
/* compress.c: runs expert-quality with cmd->name and argv[1..] (compress, diff) */
int cli_exec_quality(const cli_cmd *cmd, int argc, char **argv);
/* gpu.c: `vram` and `gpu-load` run expert-gpu (vram, load) */
int cmd_vram(const cli_cmd *cmd, int argc, char **argv);
int cmd_gpu_load(const cli_cmd *cmd, int argc, char **argv);
extern const char cli_help_vram[], cli_help_gpu_load[];

/* ---------------------------------------------------- argument parsing */

typedef struct cli_opt_spec {
    const char *name;  /* long name without "--" */
    char short_name;   /* 'o' for -o, or 0 */
    int has_value;     /* 1: --name VALUE / --name=VALUE / -o VALUE */
} cli_opt_spec;

typedef struct cli_opt_val {
    int seen;
    const char *value; /* last value given */
} cli_opt_val;

/* Parses argv[1..argc) of a subcommand with getopt_long. Options may appear
 * anywhere (unique prefixes of long names are accepted); "--"
 * ends them; "-" alone is a positional. --help / -h prints cmd->help to
 * stdout and returns CLI_PARSE_HELP. Usage errors print a message to stderr
 * and return CLI_EXIT_USAGE. Positionals must number in [min_pos, max_pos]. */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, const cli_opt_spec *specs,
              cli_opt_val *vals, size_t nopts, const char **pos, size_t min_pos,
              size_t max_pos, size_t *npos);
/* Prints "expert-cli CMD: <msg>" and a hint to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Decimal unsigned integer, optional K/M/G (binary) suffix when allow_suffix. */
/* Online CPUs, 1 to 64: the default for --threads and --jobs. */
unsigned cli_online_cpus(void);
int cli_parse_u64(const cli_cmd *cmd, const char *opt, const char *text, uint64_t min,
                  uint64_t max, int allow_suffix, uint64_t *out);

/* ------------------------------------------------------ error handling */

/* Clears an error (code OK, no offset, no section, empty message). */
void err_clear(expert_error *err);
/* Fills err like the library does; returns code. */
expert_status err_set(expert_error *err, expert_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, appending ": strerror(errno_value)". */
expert_status err_errno(expert_error *err, expert_status code, int errno_value,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Reports a failure: with json, one object {"ok":false,"error":{...}} on
 * stdout; otherwise "expert-cli: CLASS: message (section N 'name', offset
 * 0x..)" on stderr. r (may be NULL) resolves the section name. Returns the
 * exit code, i.e. the numeric class of st (1 if st is somehow OK). */
int cli_report(int json, const expert_reader *r, expert_status st, const expert_error *err);

/* --------------------------------------------------------- string buffer */

typedef struct strbuf {
    char *data;   /* NUL-terminated when len > 0 or after any append */
    size_t len, cap;
    int failed;   /* sticky: an allocation failed, contents incomplete */
} strbuf;

void sb_init(strbuf *sb);
void sb_free(strbuf *sb);
void sb_append(strbuf *sb, const char *s, size_t n);
void sb_puts(strbuf *sb, const char *s);
void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a quoted JSON string. Invalid UTF-8 becomes U+FFFD. */
void sb_json_string(strbuf *sb, const char *s, size_t n);
void sb_json_cstr(strbuf *sb, const char *s); /* NULL -> null */
/* A finite double in the shortest form that reads back exactly; non-finite
 * values become null (JSON has no NaN/Infinity). */
void sb_json_double(strbuf *sb, double v);
/* Appends s[0..n) made safe for a person's terminal: printable UTF-8 as
 * is; C0 controls, DEL and bytes that are not UTF-8 as \xNN; C1 controls
 * and characters that hide or reorder text (bidi overrides, zero-width) as
 * \u{XXXX}. Every name or string from a file, printed for a person, goes
 * through here (JSON output uses sb_json_string instead). */
void sb_term_string(strbuf *sb, const char *s, size_t n);
/* The same as a string to release with term_free (s may be NULL: ""); never
 * NULL: "?" when out of memory. */
char *term_text(const char *s);
void term_free(char *text);
/* The same, written to f. */
void fput_term(FILE *f, const char *s, size_t n);
/* Writes the buffer plus '\n' to stdout; EXPERT_E_NOMEM if sb->failed. */
expert_status sb_print_line(strbuf *sb, expert_error *err);

/* ------------------------------------------------------------ formatting */

/* "512 B", "1.50 KiB", "25.9 MiB". Returns buf. */
const char *fmt_size(uint64_t n, char buf[32]);
/* Lower-case hex of n bytes into out (2n+1 bytes). Returns out. */
const char *fmt_hex(const uint8_t *p, size_t n, char *out);
/* decoded/stored as "2.31x", or "-" when stored is 0. Returns buf. */
const char *fmt_ratio(uint64_t decoded, uint64_t stored, char buf[32]);
/* "[12, 1024]" for dims[0..rank). Returns buf. */
const char *fmt_shape(const uint64_t *dims, unsigned rank, char buf[128]);

/* Monotonic clock in nanoseconds. */
uint64_t clock_ns(void);

/* ------------------------------------------------------------ file I/O */

/* read()/write() loops that retry on EINTR and short counts. */
expert_status read_full(int fd, void *buf, size_t n, const char *what, expert_error *err);
expert_status write_full(int fd, const void *buf, size_t n, const char *what,
                         expert_error *err);
/* Reads a whole regular file (at most max bytes) into a malloc'd buffer with
 * a terminating NUL (not counted in *len). */
expert_status read_small_file(const char *path, size_t max, char **out, size_t *len,
                              expert_error *err);
/* 1 if path exists (lstat), 0 if not. */
int path_exists(const char *path);

/* Atomic file (outfile.h): nothing appears at the destination before commit
 * and an interrupted write leaves no name (O_TMPFILE on Linux); a replaced
 * file keeps its mode and owner, a new one gets 0666 & ~umask. Commit
 * refuses to replace an existing entry unless overwrite. */
typedef struct atomic_file {
    xp_outfile out;
    char *display;    /* path for messages */
} atomic_file;

expert_status atomic_begin(atomic_file *af, int dirfd, const char *leaf, const char *display,
                           expert_error *err);
expert_status atomic_write(atomic_file *af, const void *data, size_t n, expert_error *err);
/* At `offset` of the file, leaving the file position alone: several threads
 * may fill disjoint ranges of one file at once. */
expert_status atomic_pwrite(atomic_file *af, const void *data, size_t n, uint64_t offset,
                            expert_error *err);
expert_status atomic_commit(atomic_file *af, int overwrite, expert_error *err);
/* For files that must appear together: finish the file under a hidden
 * name beside its destination (copied to tmp), to be placed later. */
expert_status atomic_stage(atomic_file *af, char tmp[320], expert_error *err);
expert_status atomic_place(int dirfd, const char *tmp, const char *leaf, int overwrite, const char *display,
                           expert_error *err);
void atomic_abort(atomic_file *af); /* removes the temp file; safe after commit */
/* Writes path atomically with what `produce` writes into af (opens the
 * parent directory); nothing replaces path unless produce returns OK. */
typedef expert_status (*atomic_producer)(void *ctx, atomic_file *af, expert_error *err);
expert_status atomic_produce_path(const char *path, int overwrite, atomic_producer produce,
                                  void *ctx, expert_error *err);
/* Writes `n` bytes to path atomically (opens its parent directory). */
expert_status atomic_write_path(const char *path, const void *data, size_t n, int overwrite,
                                expert_error *err);

/* mkdir -p for an ordinary user-given path (symlinks allowed), mode 0755.
 * existed (may be NULL): the length of the prefix of path that was there
 * before, cut before the first component this call created (strlen(path)
 * when it created none). */
expert_status make_dirs(const char *path, size_t *existed, expert_error *err);
/* Told of each directory open_subdir creates (its first len bytes of
 * reldir); nonzero means out of memory. */
typedef int (*dir_created_fn)(void *ctx, const char *reldir, size_t len);
/* Opens (creating with 0755 when create) the directory `reldir` below dirfd,
 * one component at a time and never following symlinks, so the result lies
 * inside dirfd's tree. reldir "" gives a dup of dirfd. on_create may be NULL. */
expert_status open_subdir(int dirfd, const char *reldir, size_t reldir_len, int create,
                          dir_created_fn on_create, void *ctx, int *out_fd, expert_error *err);
/* 1 if name[0..len) is a safe relative path: not empty, not absolute, no
 * empty, "." or ".." components, no backslash, no NUL. */
int is_safe_relpath(const char *name, size_t len);

/* Regular files under a directory, relative '/'-separated paths sorted by
 * byte order. Symlinks and special files are errors (INVALID_ARGUMENT). */
typedef struct file_entry {
    char *path;
    uint64_t size;
    uint64_t dev, ino;
} file_entry;

typedef struct file_list {
    file_entry *items;
    size_t count, cap;
} file_list;

expert_status walk_dir(const char *root, file_list *out, expert_error *err);
void file_list_free(file_list *list);

#endif /* EXPERT_CLI_UTIL_H */
