/* main.c — expert-cli: command dispatch, help, and the subcommands that read
 * .expert files (inspect, validate, extract, get) or handle keys (keygen,
 * sign, verify). `pack` lives in pack.c. Its length (~1,600 lines) is
 * mostly the help text of every command and six commands sharing the
 * open/decode helpers below. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ================================================================= help */

static const char k_help_main[] =
    "Usage: expert-cli <command> [options]\n"
    "       expert-cli help <command>   |   expert-cli --help   |   expert-cli --version\n"
    "\n"
    "Reference command-line tool for .expert v2 adapter containers.\n"
    "\n"
    "Commands:\n";

static const char k_help_errors[] =
    "\n"
    "Exit status:\n"
    "  0    success\n"
    "  64   usage error (unknown option, missing or bad argument)\n"
    "  N    failure of class N (the library's numeric error class):\n";

static const char k_help_errors_tail[] =
    "Errors go to stderr as\n"
    "  expert-cli: CLASS: message (section N 'name', offset 0x...)\n"
    "With --json, stdout gets one object instead:\n"
    "  {\"ok\":false,\"error\":{\"class\":..,\"code\":..,\"message\":..,\"offset\":..,\"section\":..}}\n"
    "Problems the CLI finds itself use the same classes: IO for files it cannot\n"
    "read or write (or refuses to overwrite), INVALID_ARGUMENT for symlinks or\n"
    "special files in a package directory and for unsafe names at extraction.\n";

static const char k_help_pack[] =
    "Usage: expert-cli pack DIR -o OUT.expert [options]\n"
    "\n"
    "Packs every regular file under DIR (recursively; symlinks and special files\n"
    "are refused) into OUT.expert. adapter_model.safetensors at the top of DIR is\n"
    "split into a SAFETENSORS_HEADER section plus one section per tensor, in\n"
    "streaming order (layer, module, lora_A < lora_B < magnitude < other);\n"
    "every other file becomes a FILE section, sorted by path. Metadata (name,\n"
    "version, base model, modules with r/alpha/rslora) comes from manifest.json\n"
    "and adapter_config.json when present, with PEFT's rules (spec 9.5): alpha\n"
    "is the alpha_pattern value PEFT selects (regex), else lora_alpha, else\n"
    "PEFT's default 8; without adapter_config.json the manifest adapter's alpha,\n"
    "else r. r must agree with r / rank_pattern; feedforward_modules (list or\n"
    "regex) decides IA3 feed-forward modules. The same code imports v1 tar.gz\n"
    "packages, so `pack DIR` and `convert DIR.tar.gz` give the same sections.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE      output file, written atomically: with --force an\n"
    "                         existing OUT is replaced (not edited; it keeps its\n"
    "                         mode and owner, other hard links keep the old copy)\n"
    "  -f, --force            replace OUT if it exists\n"
    "  --codec C              raw | zstd | shuffle+zstd for tensors (default\n"
    "                         shuffle+zstd); files and the header use zstd unless raw\n"
    "  --level N              zstd level 1..22 (default 9)\n"
    "  --align N              section alignment 64 | 256 | 4096 (default 64)\n"
    "  --frame-size BYTES     codec frame size, power of two 64K..64M (default 1M);\n"
    "                         K/M suffixes allowed\n"
    "  --threads N            compression threads (default: none)\n"
    "  --sign PRIVATE.pem     sign the result with an Ed25519 key\n"
    "  --json                 print the result as one JSON object\n"
    "  -q, --quiet            no summary, warnings or progress\n"
    "  -h, --help             this help\n";

static const char k_help_inspect[] =
    "Usage: expert-cli inspect FILE [--json] [--sections | --no-sections]\n"
    "\n"
    "Opens FILE (structural validation) and shows the header (version, alignment,\n"
    "size, signature state, file and structure SHA-256), a metadata summary, the\n"
    "section table (index, name, type, codec, dtype, shape, layer, stored and\n"
    "decoded size, ratio = decoded/stored) and totals per codec and per type.\n"
    "\n"
    "Options:\n"
    "  --json           everything as one JSON object (metadata embedded as-is,\n"
    "                   sections with their SHA-256)\n"
    "  --sections       include the section table (default)\n"
    "  --no-sections    header, metadata and totals only\n"
    "  -h, --help       this help\n";

#define MAX_DECODED_HELP                                                                   \
    "  --max-decoded SIZE refuse a file whose sections declare more than SIZE\n"             \
    "                     decoded bytes in all, before decoding (K/M/G suffixes;\n"          \
    "                     default 1G; the spec allows up to 64G)\n"

static const char k_help_validate[] =
    "Usage: expert-cli validate FILE [options]\n"
    "\n"
    "Validates FILE and prints \"OK <level>\" or the error (exit status = class).\n"
    "  structural   header, structure hash, metadata, TOC, index, layout\n"
    "  access       structural + decode every section and check its SHA-256\n"
    "  full         access + padding + file SHA-256 (+ signature with --key)\n"
    "  load         structural + every section read into memory at once, as a\n"
    "               runtime loads (expert_read_sections, --threads sharing the\n"
    "               sections); hashes checked unless --mark is accepted\n"
    "\n"
    "Without --key, validation proves the file is intact, not who made it: a\n"
    "forger can write a valid file. Only --key (or 'verify') authenticates; in a\n"
    "pipeline that must accept only signed files, use --key with\n"
    "--require-signature.\n"
    "\n"
    "Options:\n"
    "  --level L          structural | access | full | load (default full)\n"
    "  --key PUBLIC.pem   check the signature too (implies --level full)\n"
    "  --require-signature\n"
    "                     fail unless the signature was checked and is valid:\n"
    "                     UNSIGNED (36) for an unsigned file, BAD_KEY (37) for\n"
    "                     a signed file without --key, BAD_SIGNATURE (35) for a\n"
    "                     signature that does not verify\n"
    "  --threads N        decode/verify threads (default: caller's thread only)\n"
    "  --no-mmap          read the file with read() instead of mapping it\n"
    "  --write-mark MARK  after full validation passed, write a verified mark\n"
    "                     for FILE to MARK (128 bytes, replaced atomically);\n"
    "                     refused for a file changed in the last 2 s\n"
    "  --mark MARK        open with a mark written by --write-mark: while FILE\n"
    "                     is the file it names, reads skip section hashes\n"
    "                     (level load); a stale mark means an ordinary load\n"
    MAX_DECODED_HELP
    "  --repeat N         timing mode: open (+ level work) + close N times and\n"
    "                     print the first run, then median/min/max of runs 2..N\n"
    "                     (of the single run when N is 1), in microseconds; p10\n"
    "                     and p90 too from 10 such runs on\n"
    "  --json             print the result as one JSON object\n"
    "  -h, --help         this help\n";

static const char k_help_extract[] =
    "Usage: expert-cli extract FILE -o DIR [--force] [--json]\n"
    "\n"
    "Writes every FILE section to DIR/<name> and rebuilds adapter_model.safetensors\n"
    "byte-exactly from its SAFETENSORS_HEADER section and tensor sections. Names\n"
    "that are absolute or contain '..', '.', empty components, backslashes or NUL\n"
    "are refused; nothing is written outside DIR (symlinks are not followed).\n"
    "Every section's SHA-256 is checked as it is decoded; the threads share the\n"
    "sections of all files, each streamed a frame at a time to its place (memory:\n"
    "a frame per thread, whatever the sections declare). All or nothing: each\n"
    "file is written and fsynced under a hidden name beside its destination, and\n"
    "only when every file is complete are they all renamed into place; on any\n"
    "failure the hidden files, the directories this run created and DIR itself\n"
    "(if this run created it) are removed, and nothing existing is touched. With\n"
    "--force, a file replaced before a later rename fails cannot be restored.\n"
    "Directories get mode 0755, files 0666 & ~umask.\n"
    "Names are bytes: where the file system normalises or folds names (macOS,\n"
    "Windows), two names that differ only in Unicode normalisation or case are\n"
    "one file, and extract stops at the second (with --force the later wins).\n"
    "\n"
    "Options:\n"
    "  -o, --output DIR   destination directory (created if missing)\n"
    "  --force            overwrite existing files\n"
    "  --threads N        decode and hash threads (default: the online CPUs)\n"
    MAX_DECODED_HELP
    "  --json             print the result as one JSON object\n"
    "  -q, --quiet        no summary\n"
    "  -h, --help         this help\n";

static const char k_help_get[] =
    "Usage: expert-cli get FILE SECTION [-o OUT] [--index] [--json]\n"
    "\n"
    "Writes the decoded bytes of one section (by name, or by TOC index with\n"
    "--index) to OUT (atomically, replacing it) or to standard output, which\n"
    "must not be a terminal. The section's SHA-256 is checked.\n"
    "\n"
    "Options:\n"
    "  -o, --output OUT   output file (default: standard output)\n"
    "  --index            SECTION is a TOC index\n"
    "  --json             print the section's TOC entry as JSON (the bytes go\n"
    "                     to OUT only, when -o is given)\n"
    "  --threads N        decode threads\n"
    MAX_DECODED_HELP
    "  -h, --help         this help\n";

static const char k_help_keygen[] =
    "Usage: expert-cli keygen --private PRIV.pem --public PUB.pem [--force] [--json]\n"
    "\n"
    "Creates an Ed25519 key pair: PKCS#8 private key and SubjectPublicKeyInfo\n"
    "public key, both PEM. Existing files are not replaced without --force.\n";

static const char k_help_sign[] =
    "Usage: expert-cli sign FILE --key PRIV.pem [--json]\n"
    "\n"
    "Signs FILE with an Ed25519 private key: only the 64 signature bytes change.\n"
    "FILE must pass full validation first (a signature never vouches for content\n"
    "that cannot verify); otherwise nothing changes and the exit status is the\n"
    "validation's class. The file is replaced, not edited: a signed copy is\n"
    "written beside it and renamed over it, keeping its mode and owner, so other\n"
    "hard links keep the unsigned copy. A symbolic link is followed: its target\n"
    "is signed and the link stays.\n";

static const char k_help_verify[] =
    "Usage: expert-cli verify FILE --key PUB.pem [--threads N] [--json]\n"
    "\n"
    "Full validation of FILE including its signature. Exit status 0 only if the\n"
    "signature is valid; UNSIGNED (36) if FILE has none, BAD_SIGNATURE (35) if\n"
    "it does not match the key.\n";

static const char k_help_help[] =
    "Usage: expert-cli help [COMMAND]\n"
    "\n"
    "Shows the list of commands, or the help of COMMAND.\n";

static int cmd_inspect(const cli_cmd *cmd, int argc, char **argv);
static int cmd_validate(const cli_cmd *cmd, int argc, char **argv);
static int cmd_extract(const cli_cmd *cmd, int argc, char **argv);
static int cmd_get(const cli_cmd *cmd, int argc, char **argv);
static int cmd_keygen(const cli_cmd *cmd, int argc, char **argv);
static int cmd_sign(const cli_cmd *cmd, int argc, char **argv);
static int cmd_verify(const cli_cmd *cmd, int argc, char **argv);
static int cmd_help(const cli_cmd *cmd, int argc, char **argv);

static const cli_cmd k_commands[] = {
    {"pack", "pack a PEFT adapter directory into a .expert file", k_help_pack, cmd_pack},
    {"convert", "convert v1 tar.gz <-> v2 (one file, or a tree with --batch)", k_help_convert,
     cmd_convert},
    {"inspect", "show header, metadata summary and section table", k_help_inspect, cmd_inspect},
    {"validate", "validate a file (structural/access/full), optionally timed",
     k_help_validate, cmd_validate},
    {"extract", "unpack files and adapter_model.safetensors into a directory",
     k_help_extract, cmd_extract},
    {"get", "write the decoded bytes of one section", k_help_get, cmd_get},
    {"keygen", "create an Ed25519 key pair (PEM)", k_help_keygen, cmd_keygen},
    {"sign", "sign a .expert file in place", k_help_sign, cmd_sign},
    {"verify", "full validation including the signature", k_help_verify, cmd_verify},
    {"merge", "merge an expert into base safetensors weights", cli_help_merge, cmd_merge},
    {"compress", "re-fit an expert into a byte budget (svd | osd)", cli_help_compress,
     cmd_compress},
    {"diff", "per-module error between two experts' weight changes", cli_help_diff,
     cmd_diff},
    {"vram", "device memory per expert: predicted, measured with a GPU", cli_help_vram, cmd_vram},
    {"gpu-load", "stream experts to a CUDA GPU layer by layer, timed", cli_help_gpu_load,
     cmd_gpu_load},
    {"help", "show help for a command", k_help_help, cmd_help},
};
#define COMMAND_COUNT (sizeof k_commands / sizeof k_commands[0])

static const expert_status k_classes[] = {
    EXPERT_E_IO, EXPERT_E_NOMEM, EXPERT_E_INVALID_ARGUMENT, EXPERT_E_BAD_MAGIC,
    EXPERT_E_UNSUPPORTED_VERSION, EXPERT_E_TRUNCATED, EXPERT_E_TRAILING_DATA,
    EXPERT_E_BAD_HEADER, EXPERT_E_OUT_OF_BOUNDS, EXPERT_E_OVERLAP, EXPERT_E_MISALIGNED,
    EXPERT_E_BAD_TOC, EXPERT_E_BAD_INDEX, EXPERT_E_BAD_METADATA, EXPERT_E_UNKNOWN_CODEC,
    EXPERT_E_UNKNOWN_SECTION_TYPE, EXPERT_E_UNKNOWN_FLAG, EXPERT_E_UNKNOWN_DTYPE,
    EXPERT_E_DUPLICATE_NAME, EXPERT_E_LIMIT_EXCEEDED, EXPERT_E_STRUCTURE_HASH_MISMATCH,
    EXPERT_E_DECODE_FAILED, EXPERT_E_SIZE_MISMATCH, EXPERT_E_SECTION_HASH_MISMATCH,
    EXPERT_E_FILE_HASH_MISMATCH, EXPERT_E_BAD_PADDING, EXPERT_E_BAD_SIGNATURE,
    EXPERT_E_UNSIGNED, EXPERT_E_BAD_KEY, EXPERT_E_NOT_FOUND, EXPERT_E_BAD_SAFETENSORS,
    EXPERT_E_BAD_ARCHIVE,
};

static void print_main_help(FILE *out)
{
    fputs(k_help_main, out);
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %-9s %s\n", k_commands[i].name, k_commands[i].summary);
    fputs("\nEvery command takes --help. Options are long (--opt VALUE or --opt=VALUE).\n", out);
    fputs(k_help_errors, out);
    for (size_t i = 0, n = sizeof k_classes / sizeof k_classes[0]; i < n; i++) {
        int last = i % 3 == 2 || i + 1 == n;
        fprintf(out, "%s%2d %-*s%s", i % 3 == 0 ? "       " : "", (int)k_classes[i],
                last ? 0 : 24, expert_status_name(k_classes[i]), last ? "\n" : " ");
    }
    fputs(k_help_errors_tail, out);
}

static const cli_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(k_commands[i].name, name) == 0)
            return &k_commands[i];
    return NULL;
}

static int cmd_help(const cli_cmd *cmd, int argc, char **argv)
{
    const char *pos[1];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, NULL, NULL, 0, pos, 0, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (npos == 0) {
        print_main_help(stdout);
        return 0;
    }
    {
        const cli_cmd *c = find_command(pos[0]);
        if (c == NULL)
            return cli_usage_error(cmd, "unknown command '%s'", pos[0]);
        fputs(c->help, stdout);
    }
    return 0;
}

/* ============================================================ shared bits */

/* Opens a v2 file. With allow_v1 (a command that reads what the user named,
 * whatever its format) a v1 tar.gz is read through the compatibility layer,
 * and a notice goes to stderr unless quiet. */
static uint64_t g_max_decoded; /* --max-decoded; 0: the library's default */

static expert_status open_reader(const char *path, int no_mmap, unsigned threads, int allow_v1,
                                 int quiet, expert_reader **r, expert_error *err)
{
    expert_open_options opt = {0};
    opt.max_decoded_bytes = g_max_decoded;
    opt.flags = no_mmap ? EXPERT_OPEN_NO_MMAP : 0;
    opt.threads = threads;
    *r = NULL;
    expert_status s = allow_v1 ? expert_open_any(path, &opt, NULL, r, err) : expert_open(path, &opt, r, err);
    if (s == EXPERT_OK && !quiet && expert_reader_notice(*r) != NULL)
        fprintf(stderr, "%s: note: %s\n", CLI_NAME, expert_reader_notice(*r));
    return s;
}

/* --max-decoded SIZE: bytes with an optional K, M or G (powers of 1024). */
static int parse_max_decoded(const cli_cmd *cmd, const cli_opt_val *v)
{
    if (!v->seen)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v->value, &end, 10);
    unsigned shift = 0;
    if (end != v->value && *end != '\0' && end[1] == '\0')
        shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
              : *end == 'G' || *end == 'g' ? 30 : 64;
    else if (end == v->value || *end != '\0')
        shift = 64;
    if (errno != 0 || shift == 64 || n == 0 || n > (UINT64_MAX >> shift) || v->value[0] == '-')
        return cli_usage_error(cmd, "--max-decoded wants a positive size such as 4096, 512M or 16G, "
                                    "not '%s'", v->value);
    g_max_decoded = (uint64_t)n << shift;
    return 0;
}

static int parse_threads(const cli_cmd *cmd, const cli_opt_val *v, unsigned *out)
{
    uint64_t n = 0;
    int rc;
    *out = 0;
    if (!v->seen)
        return 0;
    rc = cli_parse_u64(cmd, "threads", v->value, 0, 1024, 0, &n);
    if (rc == 0)
        *out = (unsigned)n;
    return rc;
}

/* A section's name as a NUL-terminated string (malloc'd). */
static char *dup_name(const expert_section_info *si)
{
    char *p = malloc((size_t)si->name_length + 1);
    if (p != NULL) {
        memcpy(p, si->name, si->name_length);
        p[si->name_length] = '\0';
    }
    return p;
}

static const char *type_label(uint16_t type, char buf[16])
{
    const char *n = expert_section_type_name(type);
    if (n != NULL)
        return n;
    snprintf(buf, 16, "0x%04x", (unsigned)type);
    return buf;
}

static const char *codec_label(uint8_t codec)
{
    const char *n = expert_codec_name(codec);
    return n ? n : "?";
}

static const char *dtype_label(uint8_t dtype)
{
    const char *n = expert_dtype_name(dtype);
    return n ? n : "?";
}

/* Grows *buf to at least n bytes (at least 1). */
static expert_status ensure_buffer(unsigned char **buf, size_t *cap, uint64_t n, expert_error *err)
{
    unsigned char *p;
    if (n > SIZE_MAX - 1)
        return err_set(err, EXPERT_E_LIMIT_EXCEEDED, "section too large for this machine");
    if (n <= *cap && *buf != NULL)
        return EXPERT_OK;
    p = realloc(*buf, n ? (size_t)n : 1);
    if (p == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory (%" PRIu64 " bytes)", n);
    *buf = p;
    *cap = n ? (size_t)n : 1;
    return EXPERT_OK;
}

/* Decodes section `index` into *buf (grown as needed). */
static expert_status decode_section(expert_reader *r, uint32_t index, unsigned char **buf,
                                    size_t *cap, uint64_t *len, expert_error *err)
{
    expert_section_info si;
    expert_status s = expert_section(r, index, &si);
    if (s != EXPERT_OK)
        return err_set(err, s, "no section %" PRIu32, index);
    s = ensure_buffer(buf, cap, si.decoded_length, err);
    if (s != EXPERT_OK)
        return s;
    s = expert_read(r, index, *buf, *cap, 0, err);
    if (s == EXPERT_OK)
        *len = si.decoded_length;
    return s;
}

/* ================================================================ inspect */

typedef struct total_row {
    uint32_t key;
    uint64_t count, stored, decoded;
} total_row;

typedef struct totals {
    total_row rows[64];
    size_t n;
} totals;

static void totals_add(totals *t, uint32_t key, uint64_t stored, uint64_t decoded)
{
    size_t i;
    for (i = 0; i < t->n; i++)
        if (t->rows[i].key == key)
            break;
    if (i == t->n) {
        if (t->n == sizeof t->rows / sizeof t->rows[0])
            i = t->n - 1; /* more distinct keys than rows: lump into the last */
        else
            t->n++;
        t->rows[i].key = key;
    }
    t->rows[i].count++;
    t->rows[i].stored += stored;
    t->rows[i].decoded += decoded;
}

static void inspect_header_json(strbuf *sb, const char *path, const expert_header_info *h)
{
    char hex[65];
    sb_puts(sb, "{\"ok\":true,\"file\":");
    sb_json_cstr(sb, path);
    sb_printf(sb,
              ",\"header\":{\"major\":%u,\"minor\":%u,\"header_size\":%" PRIu32
              ",\"section_count\":%" PRIu32 ",\"alignment\":%" PRIu32 ",\"flags\":%" PRIu32
              ",\"file_length\":%" PRIu64 ",\"metadata_offset\":%" PRIu64
              ",\"metadata_length\":%" PRIu64 ",\"metadata_decoded_length\":%" PRIu64
              ",\"toc_offset\":%" PRIu64 ",\"index_offset\":%" PRIu64
              ",\"index_length\":%" PRIu64 ",\"strings_offset\":%" PRIu64
              ",\"strings_length\":%" PRIu64,
              (unsigned)h->major, (unsigned)h->minor, h->header_size, h->section_count,
              h->alignment, h->flags, h->file_length, h->metadata_offset, h->metadata_length,
              h->metadata_decoded_length, h->toc_offset, h->index_offset, h->index_length,
              h->strings_offset, h->strings_length);
    sb_printf(sb, ",\"file_sha256\":\"%s\"", fmt_hex(h->file_sha256, 32, hex));
    sb_printf(sb, ",\"structure_sha256\":\"%s\"", fmt_hex(h->structure_sha256, 32, hex));
    sb_printf(sb, ",\"signed\":%s,\"used_mmap\":%s}", h->is_signed ? "true" : "false",
              h->used_mmap ? "true" : "false");
}

static void inspect_section_json(strbuf *sb, const expert_section_info *si)
{
    char hex[65], tb[16];
    sb_printf(sb, "{\"index\":%" PRIu32 ",\"name\":", si->index);
    sb_json_string(sb, si->name, si->name_length);
    sb_puts(sb, ",\"type\":");
    sb_json_cstr(sb, type_label(si->type, tb));
    sb_printf(sb, ",\"type_id\":%u,\"known_type\":%s,\"codec\":", (unsigned)si->type,
              si->known_type ? "true" : "false");
    sb_json_cstr(sb, codec_label(si->codec));
    sb_puts(sb, ",\"dtype\":");
    sb_json_cstr(sb, dtype_label(si->dtype));
    sb_printf(sb, ",\"rank\":%u,\"shape\":[", (unsigned)si->rank);
    for (unsigned d = 0; d < si->rank && d < EXPERT_MAX_RANK; d++)
        sb_printf(sb, d ? ",%" PRIu64 : "%" PRIu64, si->dims[d]);
    sb_puts(sb, "]");
    if (si->layer == EXPERT_LAYER_NONE)
        sb_puts(sb, ",\"layer\":null");
    else
        sb_printf(sb, ",\"layer\":%" PRIu32, si->layer);
    if (si->module == EXPERT_MODULE_NONE)
        sb_puts(sb, ",\"module\":null");
    else
        sb_printf(sb, ",\"module\":%" PRIu32, si->module);
    sb_printf(sb,
              ",\"flags\":%" PRIu32 ",\"frame_size\":%" PRIu32 ",\"offset\":%" PRIu64
              ",\"stored_length\":%" PRIu64 ",\"decoded_length\":%" PRIu64 ",\"sha256\":\"%s\"}",
              si->flags, si->frame_size, si->offset, si->stored_length, si->decoded_length,
              fmt_hex(si->sha256, 32, hex));
}

static void totals_json(strbuf *sb, const char *key, const totals *t, int by_type)
{
    char tb[16];
    sb_printf(sb, ",\"%s\":{", key);
    for (size_t i = 0; i < t->n; i++) {
        const total_row *row = &t->rows[i];
        if (i > 0)
            sb_puts(sb, ",");
        sb_json_cstr(sb, by_type ? type_label((uint16_t)row->key, tb) : codec_label((uint8_t)row->key));
        sb_printf(sb, ":{\"count\":%" PRIu64 ",\"stored\":%" PRIu64 ",\"decoded\":%" PRIu64 "}",
                  row->count, row->stored, row->decoded);
    }
    sb_puts(sb, "}");
}

static void totals_print(const char *title, const totals *t, int by_type)
{
    char tb[16], b1[32], b2[32], b3[32];
    printf("\n%-22s %8s %12s %12s %8s\n", title, "sections", "stored", "decoded", "ratio");
    for (size_t i = 0; i < t->n; i++) {
        const total_row *row = &t->rows[i];
        printf("%-22s %8" PRIu64 " %12s %12s %8s\n",
               by_type ? type_label((uint16_t)row->key, tb) : codec_label((uint8_t)row->key),
               row->count, fmt_size(row->stored, b1), fmt_size(row->decoded, b2),
               fmt_ratio(row->decoded, row->stored, b3));
    }
}

enum { I_JSON, I_SECTIONS, I_NO_SECTIONS, I_NO_MMAP, I_COUNT };
static const cli_opt_spec k_inspect_opts[I_COUNT] = {
    [I_JSON] = {"json", 0, 0},
    [I_SECTIONS] = {"sections", 0, 0},
    [I_NO_SECTIONS] = {"no-sections", 0, 0},
    [I_NO_MMAP] = {"no-mmap", 0, 0},
};

static int cmd_inspect(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[I_COUNT];
    const char *pos[1];
    size_t npos;
    expert_reader *r = NULL;
    expert_error err;
    expert_header_info h;
    expert_status s;
    totals by_codec, by_type;
    uint64_t stored = 0, decoded = 0;
    uint32_t count;
    int json, show_sections, rc;

    rc = cli_parse(cmd, argc, argv, k_inspect_opts, v, I_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (v[I_SECTIONS].seen && v[I_NO_SECTIONS].seen)
        return cli_usage_error(cmd, "--sections and --no-sections exclude each other");
    json = v[I_JSON].seen;
    show_sections = !v[I_NO_SECTIONS].seen;
    err_clear(&err);
    s = open_reader(pos[0], v[I_NO_MMAP].seen, 0, 1, json, &r, &err);
    if (s != EXPERT_OK)
        return cli_report(json, NULL, s, &err);

    expert_header(r, &h);
    count = expert_section_count(r);
    memset(&by_codec, 0, sizeof by_codec);
    memset(&by_type, 0, sizeof by_type);

    if (json) {
        strbuf sb;
        size_t mlen = 0;
        const char *meta = expert_metadata_json(r, &mlen);
        sb_init(&sb);
        inspect_header_json(&sb, pos[0], &h);
        sb_puts(&sb, ",\"name\":");
        sb_json_cstr(&sb, expert_name(r));
        sb_puts(&sb, ",\"version\":");
        sb_json_cstr(&sb, expert_package_version(r));
        sb_printf(&sb, ",\"module_count\":%" PRIu32 ",\"metadata\":", expert_module_count(r));
        if (meta != NULL)
            sb_append(&sb, meta, mlen);
        else
            sb_puts(&sb, "null");
        if (show_sections)
            sb_puts(&sb, ",\"sections\":[");
        for (uint32_t i = 0; i < count; i++) {
            expert_section_info si;
            if ((s = expert_section(r, i, &si)) != EXPERT_OK)
                break;
            totals_add(&by_codec, si.codec, si.stored_length, si.decoded_length);
            totals_add(&by_type, si.type, si.stored_length, si.decoded_length);
            stored += si.stored_length;
            decoded += si.decoded_length;
            if (show_sections) {
                if (i > 0)
                    sb_puts(&sb, ",");
                inspect_section_json(&sb, &si);
            }
        }
        if (show_sections)
            sb_puts(&sb, "]");
        sb_printf(&sb, ",\"totals\":{\"sections\":%" PRIu32 ",\"stored\":%" PRIu64
                       ",\"decoded\":%" PRIu64,
                  count, stored, decoded);
        totals_json(&sb, "by_codec", &by_codec, 0);
        totals_json(&sb, "by_type", &by_type, 1);
        sb_puts(&sb, "}}");
        if (s == EXPERT_OK)
            s = sb_print_line(&sb, &err);
        else
            err_set(&err, s, "cannot read the section table");
        sb_free(&sb);
    } else {
        char hex[65], b1[32], b2[32], b3[32], shape[128], tb[16];
        int name_w = 4;
        char *text = term_text(pos[0]);
        printf("file:             %s\n", text);
        term_free(text);
        printf("format:           .expert v%u.%u, header %" PRIu32 " bytes, alignment %" PRIu32
               ", flags 0x%08" PRIx32 "\n",
               (unsigned)h.major, (unsigned)h.minor, h.header_size, h.alignment, h.flags);
        printf("size:             %s (%" PRIu64 " bytes)\n", fmt_size(h.file_length, b1),
               h.file_length);
        printf("signed:           %s\n", h.is_signed ? "yes" : "no");
        printf("file sha256:      %s\n", fmt_hex(h.file_sha256, 32, hex));
        printf("structure sha256: %s\n", fmt_hex(h.structure_sha256, 32, hex));
        text = term_text(expert_name(r) ? expert_name(r) : "?");
        printf("name:             %s\n", text);
        term_free(text);
        text = term_text(expert_package_version(r) ? expert_package_version(r) : "?");
        printf("version:          %s\n", text);
        term_free(text);
        printf("modules:          %" PRIu32 "\n", expert_module_count(r));
        printf("metadata:         %s stored, %s JSON\n", fmt_size(h.metadata_length, b1),
               fmt_size(h.metadata_decoded_length, b2));
        printf("sections:         %" PRIu32 "\n", count);
        for (uint32_t i = 0; show_sections && i < count; i++) {
            expert_section_info si;
            if (expert_section(r, i, &si) == EXPERT_OK) {
                strbuf nb;
                sb_init(&nb);
                sb_term_string(&nb, si.name, si.name_length);
                if (nb.len > (size_t)name_w && nb.len < 4096)
                    name_w = (int)nb.len;
                sb_free(&nb);
            }
        }
        if (show_sections && count > 0)
            printf("\n%5s  %-*s  %-18s %-12s %-5s %-14s %5s %10s %10s %7s\n", "#", name_w, "name",
                   "type", "codec", "dtype", "shape", "layer", "stored", "decoded", "ratio");
        for (uint32_t i = 0; i < count; i++) {
            expert_section_info si;
            char layer[16];
            if ((s = expert_section(r, i, &si)) != EXPERT_OK) {
                err_set(&err, s, "cannot read section %" PRIu32, i);
                break;
            }
            totals_add(&by_codec, si.codec, si.stored_length, si.decoded_length);
            totals_add(&by_type, si.type, si.stored_length, si.decoded_length);
            stored += si.stored_length;
            decoded += si.decoded_length;
            if (!show_sections)
                continue;
            if (si.layer == EXPERT_LAYER_NONE)
                snprintf(layer, sizeof layer, "-");
            else
                snprintf(layer, sizeof layer, "%" PRIu32, si.layer);
            strbuf nb;
            sb_init(&nb);
            sb_term_string(&nb, si.name, si.name_length);
            printf("%5" PRIu32 "  %-*s  %-18s %-12s %-5s %-14s %5s %10s %10s %7s\n", i, name_w,
                   nb.failed ? "?" : nb.data ? nb.data : "", type_label(si.type, tb), codec_label(si.codec),
                   dtype_label(si.dtype), fmt_shape(si.dims, si.rank, shape), layer,
                   fmt_size(si.stored_length, b1), fmt_size(si.decoded_length, b2),
                   fmt_ratio(si.decoded_length, si.stored_length, b3));
            sb_free(&nb);
        }
        if (s == EXPERT_OK) {
            totals_print("by codec", &by_codec, 0);
            totals_print("by type", &by_type, 1);
            printf("%-22s %8" PRIu32 " %12s %12s %8s\n", "total", count, fmt_size(stored, b1),
                   fmt_size(decoded, b2), fmt_ratio(decoded, stored, b3));
        }
    }
    rc = s == EXPERT_OK ? 0 : cli_report(json, r, s, &err);
    expert_close(r);
    return rc;
}

/* =============================================================== validate */

typedef enum level { LEVEL_STRUCTURAL, LEVEL_ACCESS, LEVEL_FULL, LEVEL_LOAD } level;
static const char *const k_level_names[] = {"structural", "access", "full", "load"};

typedef struct validate_job {
    const char *path;
    level lvl;
    int no_mmap, json, require_signature;
    unsigned threads;
    uint64_t repeat;
    expert_public_key *key;
    const expert_mark *mark;    /* --mark */
    const char *write_mark;     /* --write-mark */
    int trusted;                /* the last open accepted the mark */
    uint8_t *load_buf;          /* level load: every section, reused across runs */
    size_t load_size;
    expert_read_request *reqs;
    uint32_t nreqs;
} validate_job;

/* Level load: every section into one buffer, laid out once (the first run
 * faults it in, as a runtime's first load does; later runs reuse it). The
 * buffer is an anonymous mapping advised for huge pages: faulting 4 KiB
 * pages in costs several times the load itself on a VM (bench/README.md). */
static expert_status load_all(validate_job *job, expert_reader *r, expert_error *err)
{
    uint32_t n = expert_section_count(r);
    if (job->reqs == NULL) {
        uint64_t total = 0;
        job->reqs = calloc(n ? n : 1, sizeof *job->reqs);
        if (job->reqs == NULL)
            return err_set(err, EXPERT_E_NOMEM, "out of memory");
        for (uint32_t i = 0; i < n; i++) {
            expert_section_info si;
            expert_section(r, i, &si);
            job->reqs[i] = (expert_read_request){.section = i, .capacity = (size_t)si.decoded_length};
            total += (si.decoded_length + 63) & ~(uint64_t)63;
        }
        void *p = total <= SIZE_MAX ? mmap(NULL, total ? (size_t)total : 1, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                    : MAP_FAILED;
        if (p == MAP_FAILED)
            return err_set(err, EXPERT_E_NOMEM, "out of memory for %" PRIu64 " decoded bytes", total);
#ifdef MADV_HUGEPAGE
        (void)madvise(p, total ? (size_t)total : 1, MADV_HUGEPAGE);
#endif
        job->load_buf = p;
        job->load_size = total ? (size_t)total : 1;
        job->nreqs = n;
    }
    if (n != job->nreqs)
        return err_set(err, EXPERT_E_IO, "%s changed between runs", job->path);
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        job->reqs[i].dst = job->load_buf + off;
        off += (job->reqs[i].capacity + 63) & ~(size_t)63;
    }
    return expert_read_sections(r, job->reqs, n, 0, err);
}

#define DECILE_MIN_RUNS 10 /* fewer runs: no p10/p90 */

/* One open + level work (+ close unless keep). */
static expert_status validate_once(validate_job *job, expert_reader **keep, expert_error *err)
{
    expert_reader *r = NULL;
    expert_open_options opt = {.flags = job->no_mmap ? EXPERT_OPEN_NO_MMAP : 0,
                               .threads = job->threads,
                               .max_decoded_bytes = g_max_decoded,
                               .mark = job->mark};
    expert_status s = expert_open(job->path, &opt, &r, err);
    job->trusted = s == EXPERT_OK && expert_reader_trusted(r);
    if (s == EXPERT_OK && job->lvl == LEVEL_ACCESS)
        s = expert_verify_access(r, err);
    else if (s == EXPERT_OK && job->lvl == LEVEL_FULL)
        s = expert_verify_full(r, job->key, err);
    else if (s == EXPERT_OK && job->lvl == LEVEL_LOAD)
        s = load_all(job, r, err);
    if (s == EXPERT_OK && (job->key != NULL || job->require_signature)) {
        expert_header_info h;
        expert_header(r, &h);
        if (!h.is_signed)
            s = err_set(err, EXPERT_E_UNSIGNED, "the file has no signature");
        else if (job->key == NULL) /* a signature checked against no key proves nothing */
            s = err_set(err, EXPERT_E_BAD_KEY, "the file is signed, but without --key the signature "
                                               "cannot be checked (--require-signature)");
    }
    if (keep != NULL)
        *keep = r;
    else
        expert_close(r);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Linear-interpolated quantile of sorted v[0..n), q in [0,1]. */
static double quantile(const double *v, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

static int run_timing(validate_job *job)
{
    double *us = malloc((size_t)job->repeat * sizeof *us);
    const double *stats;
    size_t n_stats;
    expert_error err;
    expert_status s = EXPERT_OK;
    double med, mn, mx, p10, p90;

    err_clear(&err);
    if (us == NULL) {
        err_set(&err, EXPERT_E_NOMEM, "out of memory");
        return cli_report(job->json, NULL, EXPERT_E_NOMEM, &err);
    }
    for (uint64_t i = 0; i < job->repeat; i++) {
        uint64_t t0 = clock_ns();
        s = validate_once(job, NULL, &err);
        us[i] = (double)(clock_ns() - t0) / 1000.0;
        if (s != EXPERT_OK) {
            free(us);
            return cli_report(job->json, NULL, s, &err);
        }
    }
    /* statistics over runs 2..N (warm); over the single run when N == 1 */
    stats = job->repeat > 1 ? us + 1 : us;
    n_stats = job->repeat > 1 ? (size_t)job->repeat - 1 : 1;
    {
        double *sorted = malloc(n_stats * sizeof *sorted);
        if (sorted == NULL) {
            free(us);
            err_set(&err, EXPERT_E_NOMEM, "out of memory");
            return cli_report(job->json, NULL, EXPERT_E_NOMEM, &err);
        }
        memcpy(sorted, stats, n_stats * sizeof *sorted);
        qsort(sorted, n_stats, sizeof *sorted, cmp_double);
        med = quantile(sorted, n_stats, 0.5);
        mn = sorted[0];
        mx = sorted[n_stats - 1];
        p10 = quantile(sorted, n_stats, 0.1);
        p90 = quantile(sorted, n_stats, 0.9);
        free(sorted);
    }
    if (job->json) {
        strbuf sb;
        sb_init(&sb);
        sb_printf(&sb, "{\"ok\":true,\"level\":\"%s\",\"file\":", k_level_names[job->lvl]);
        sb_json_cstr(&sb, job->path);
        sb_printf(&sb, ",\"mmap\":%s,\"threads\":%u,\"signature\":\"%s\"",
                  job->no_mmap || job->mark ? "false" : "true", job->threads,
                  job->key ? "valid" : "not_checked");
        if (job->mark != NULL)
            sb_printf(&sb, ",\"mark\":\"%s\"", job->trusted ? "accepted" : "not_accepted");
        sb_printf(&sb, ",\"timing\":{\"runs\":%" PRIu64, job->repeat);
        sb_printf(&sb, ",\"first_us\":%.1f,\"stats_runs\":%zu,\"median_us\":%.1f,\"min_us\":%.1f"
                       ",\"max_us\":%.1f",
                  us[0], n_stats, med, mn, mx);
        if (n_stats >= DECILE_MIN_RUNS)
            sb_printf(&sb, ",\"p10_us\":%.1f,\"p90_us\":%.1f}}", p10, p90);
        else /* a decile of fewer runs is the minimum or maximum again */
            sb_puts(&sb, ",\"p10_us\":null,\"p90_us\":null}}");
        s = sb_print_line(&sb, &err);
        sb_free(&sb);
    } else {
        printf("OK %s\n", k_level_names[job->lvl]);
        printf("runs:    %" PRIu64 " x open+%s+close (%s, threads %u%s)\n", job->repeat,
               k_level_names[job->lvl],
               job->mark ? "pread, marked" : job->no_mmap ? "read()" : "mmap", job->threads,
               job->mark == NULL ? "" : job->trusted ? ", mark accepted" : ", mark not accepted");
        printf("first:   %.1f us\n", us[0]);
        printf("%s median %.1f us, min %.1f, max %.1f", job->repeat > 1 ? "runs 2..N:" : "run 1:",
               med, mn, mx);
        if (n_stats >= DECILE_MIN_RUNS)
            printf(", p10 %.1f, p90 %.1f", p10, p90);
        printf("\n");
    }
    free(us);
    return s == EXPERT_OK ? 0 : cli_report(job->json, NULL, s, &err);
}

enum { V_LEVEL, V_KEY, V_THREADS, V_JSON, V_REPEAT, V_NO_MMAP, V_MAX_DECODED, V_REQUIRE_SIG, V_MARK,
       V_WRITE_MARK, V_COUNT };
static const cli_opt_spec k_validate_opts[V_COUNT] = {
    [V_LEVEL] = {"level", 0, 1},   [V_KEY] = {"key", 0, 1},       [V_THREADS] = {"threads", 0, 1},
    [V_JSON] = {"json", 0, 0},     [V_REPEAT] = {"repeat", 0, 1}, [V_NO_MMAP] = {"no-mmap", 0, 0},
    [V_MAX_DECODED] = {"max-decoded", 0, 1}, [V_REQUIRE_SIG] = {"require-signature", 0, 0},
    [V_MARK] = {"mark", 0, 1},     [V_WRITE_MARK] = {"write-mark", 0, 1},
};

/* Validates once and prints "OK <level>" or the error. */
static int validate_report(validate_job *job)
{
    expert_reader *r = NULL;
    expert_error err;
    expert_status s;
    const char *sig;
    int is_signed = 0, rc = 0;

    err_clear(&err);
    s = validate_once(job, &r, &err);
    if (r != NULL) {
        expert_header_info h;
        expert_header(r, &h);
        is_signed = h.is_signed;
    }
    if (s == EXPERT_OK && job->write_mark != NULL) {
        expert_mark m;
        s = expert_mark_make(r, &m, &err);
        if (s == EXPERT_OK)
            s = atomic_write_path(job->write_mark, m.bytes, sizeof m.bytes, 1, &err);
    }
    if (s != EXPERT_OK) {
        rc = cli_report(job->json, r, s, &err);
        expert_close(r);
        return rc;
    }
    sig = job->key ? "valid" : is_signed ? "not_checked" : "unsigned";
    const char *mark = job->mark == NULL ? NULL : job->trusted ? "accepted" : "not_accepted";
    if (job->json) {
        strbuf sb;
        sb_init(&sb);
        sb_printf(&sb, "{\"ok\":true,\"level\":\"%s\",\"file\":", k_level_names[job->lvl]);
        sb_json_cstr(&sb, job->path);
        sb_printf(&sb, ",\"sections\":%" PRIu32 ",\"signed\":%s,\"signature\":\"%s\"",
                  expert_section_count(r), is_signed ? "true" : "false", sig);
        if (mark != NULL)
            sb_printf(&sb, ",\"mark\":\"%s\"", mark);
        if (job->write_mark != NULL) {
            sb_puts(&sb, ",\"mark_written\":");
            sb_json_cstr(&sb, job->write_mark);
        }
        sb_puts(&sb, "}");
        s = sb_print_line(&sb, &err);
        sb_free(&sb);
        if (s != EXPERT_OK)
            rc = cli_report(0, NULL, s, &err);
    } else if (job->key != NULL) {
        printf("OK %s (signature valid)\n", k_level_names[job->lvl]);
    } else if (is_signed && job->lvl == LEVEL_FULL) {
        printf("OK %s (signed; signature not checked, no --key)\n", k_level_names[job->lvl]);
    } else {
        printf("OK %s\n", k_level_names[job->lvl]);
    }
    if (!job->json && mark != NULL)
        printf("mark %s%s\n", job->trusted ? "accepted" : "not accepted",
               job->trusted ? ": section hashes skipped" : ": every section hash-checked");
    if (!job->json && job->write_mark != NULL)
        printf("mark written to %s\n", job->write_mark);
    expert_close(r);
    return rc;
}

static int cmd_validate(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[V_COUNT];
    const char *pos[1];
    size_t npos;
    validate_job job;
    expert_error err;
    int rc;

    memset(&job, 0, sizeof job);
    rc = cli_parse(cmd, argc, argv, k_validate_opts, v, V_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if ((rc = parse_max_decoded(cmd, &v[V_MAX_DECODED])) != 0)
        return rc;
    job.path = pos[0];
    job.lvl = LEVEL_FULL;
    job.json = v[V_JSON].seen;
    job.no_mmap = v[V_NO_MMAP].seen;
    job.repeat = 0;
    if (v[V_LEVEL].seen) {
        const char *l = v[V_LEVEL].value;
        if (strcmp(l, "structural") == 0 || strcmp(l, "1") == 0)
            job.lvl = LEVEL_STRUCTURAL;
        else if (strcmp(l, "access") == 0 || strcmp(l, "2") == 0)
            job.lvl = LEVEL_ACCESS;
        else if (strcmp(l, "full") == 0 || strcmp(l, "3") == 0)
            job.lvl = LEVEL_FULL;
        else if (strcmp(l, "load") == 0)
            job.lvl = LEVEL_LOAD;
        else
            return cli_usage_error(cmd, "--level must be structural, access, full or load");
    }
    job.require_signature = v[V_REQUIRE_SIG].seen;
    if ((v[V_KEY].seen || job.require_signature) && job.lvl != LEVEL_FULL)
        return cli_usage_error(cmd, "--key and --require-signature need --level full (the signature "
                                    "is checked there)");
    if ((rc = parse_threads(cmd, &v[V_THREADS], &job.threads)) != 0)
        return rc;
    job.write_mark = v[V_WRITE_MARK].seen ? v[V_WRITE_MARK].value : NULL;
    if (job.write_mark != NULL && (job.lvl != LEVEL_FULL || v[V_REPEAT].seen))
        return cli_usage_error(cmd, "--write-mark needs --level full (a mark vouches for a fully "
                                    "validated file) and no --repeat");
    if (v[V_MARK].seen && v[V_NO_MMAP].seen)
        return cli_usage_error(cmd, "--mark and --no-mmap: a marked open always reads with pread");
    if (v[V_REPEAT].seen &&
        (rc = cli_parse_u64(cmd, "repeat", v[V_REPEAT].value, 1, 10000000, 0, &job.repeat)) != 0)
        return rc;
    err_clear(&err);
    expert_mark mark;
    if (v[V_MARK].seen) {
        char *bytes = NULL;
        size_t len = 0;
        expert_status s = read_small_file(v[V_MARK].value, EXPERT_MARK_BYTES + 1, &bytes, &len, &err);
        if (s == EXPERT_OK && len != EXPERT_MARK_BYTES)
            s = err_set(&err, EXPERT_E_INVALID_ARGUMENT, "%s is %zu bytes, not a %u-byte mark",
                        v[V_MARK].value, len, EXPERT_MARK_BYTES);
        if (s == EXPERT_OK)
            memcpy(mark.bytes, bytes, EXPERT_MARK_BYTES);
        free(bytes);
        if (s != EXPERT_OK)
            return cli_report(job.json, NULL, s, &err);
        job.mark = &mark;
    }
    if (v[V_KEY].seen) {
        expert_status s = expert_public_key_load(v[V_KEY].value, &job.key, &err);
        if (s != EXPERT_OK)
            return cli_report(job.json, NULL, s, &err);
    }
    rc = job.repeat > 0 ? run_timing(&job) : validate_report(&job);
    expert_public_key_free(job.key);
    if (job.load_buf != NULL)
        munmap(job.load_buf, job.load_size);
    free(job.reqs);
    return rc;
}

/* ================================================================ extract */

/* A file written in full under a hidden name, waiting for the others. */
typedef struct staged_file {
    char *name;          /* destination, relative to the output directory */
    char tmp[320];       /* hidden name beside it */
} staged_file;

typedef struct extract_job {
    expert_reader *r;
    const char *dir;
    int rootfd, force, json, quiet;
    struct extract_place *place; /* per section: where its bytes go */
    unsigned char *used; /* per section: consumed by a package file */
    strbuf files_json;   /* [{"name":..,"bytes":..},...] */
    uint64_t files, bytes;
    staged_file *staged; /* all or nothing: placed together at the end */
    size_t nstaged, cap_staged;
    char **created;      /* directories this run created, in creation order */
    size_t ncreated, cap_created;
    size_t placed;       /* staged files moved into place so far */
} extract_job;

static int note_created_dir(void *ctx, const char *reldir, size_t len)
{
    extract_job *job = ctx;
    if (job->ncreated == job->cap_created) {
        size_t cap = job->cap_created ? 2 * job->cap_created : 16;
        char **p = realloc(job->created, cap * sizeof *p);
        if (p == NULL)
            return -1;
        job->created = p;
        job->cap_created = cap;
    }
    char *d = malloc(len + 1);
    if (d == NULL)
        return -1;
    memcpy(d, reldir, len);
    d[len] = '\0';
    job->created[job->ncreated++] = d;
    return 0;
}

/* "DIR/name", as the user will see it; NULL when out of memory. */
static char *output_path(const extract_job *job, const char *name)
{
    size_t n = strlen(job->dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", job->dir, name);
    return p;
}

/* Opens the parent directory of `name` inside the output tree and starts an
 * atomic file for its last component. */
static expert_status extract_begin(extract_job *job, const char *name, int *dirfd,
                                   atomic_file *af, expert_error *err)
{
    const char *slash = strrchr(name, '/');
    size_t dir_len = slash ? (size_t)(slash - name) : 0;
    char *display;
    expert_status s;

    s = open_subdir(job->rootfd, name, dir_len, 1, note_created_dir, job, dirfd, err);
    if (s != EXPERT_OK)
        return s;
    display = output_path(job, name);
    if (display == NULL) {
        close(*dirfd);
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    }
    s = atomic_begin(af, *dirfd, slash ? slash + 1 : name, display, err);
    free(display);
    if (s != EXPERT_OK)
        close(*dirfd);
    return s;
}

/* A new slot in the staged list holding a copy of name; NULL when out of memory. */
static staged_file *stage_slot(extract_job *job, const char *name)
{
    if (job->nstaged == job->cap_staged) {
        size_t cap = job->cap_staged ? 2 * job->cap_staged : 16;
        staged_file *p = realloc(job->staged, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        job->staged = p;
        job->cap_staged = cap;
    }
    staged_file *sf = &job->staged[job->nstaged];
    sf->name = strdup(name);
    return sf->name != NULL ? sf : NULL;
}

static expert_status extract_finish(extract_job *job, const char *name, uint64_t bytes,
                                    int dirfd, atomic_file *af, expert_status s, expert_error *err)
{
    staged_file *sf = s == EXPERT_OK ? stage_slot(job, name) : NULL;
    if (s == EXPERT_OK && sf == NULL)
        s = err_set(err, EXPERT_E_NOMEM, "out of memory");
    if (sf != NULL) {
        s = atomic_stage(af, sf->tmp, err);
        if (s == EXPERT_OK)
            job->nstaged++;
        else
            free(sf->name);
    } else {
        atomic_abort(af);
    }
    close(dirfd);
    if (s == EXPERT_OK) {
        if (job->files > 0)
            sb_puts(&job->files_json, ",");
        sb_puts(&job->files_json, "{\"name\":");
        sb_json_cstr(&job->files_json, name);
        sb_printf(&job->files_json, ",\"bytes\":%" PRIu64 "}", bytes);
        job->files++;
        job->bytes += bytes;
    }
    return s;
}

/* Extract streams the sections of up to this many files in one pass (the
 * reader's threads share them): each open file holds two descriptors. */
#define EXTRACT_BATCH 32

/* A file of the batch, open under its hidden name. */
typedef struct extract_file {
    char *name;
    int dirfd;
    atomic_file af;
    uint64_t length;
} extract_file;

/* Where each section's bytes go: file `file` of the batch, from `base`, and
 * how far the one thread streaming it has got. */
typedef struct extract_place {
    uint32_t file;
    uint64_t base, done;
} extract_place;

typedef struct extract_batch {
    extract_job *job;
    extract_file files[EXTRACT_BATCH];
    uint32_t nfiles;
    uint32_t *sections; /* the batch's sections, file after file */
    uint32_t nsections;
} extract_batch;

static expert_status extract_write(void *user, uint32_t section, const void *data, size_t length,
                                   expert_error *err)
{
    extract_batch *b = user;
    extract_place *pl = &b->job->place[section];
    expert_status s = atomic_pwrite(&b->files[pl->file].af, data, length, pl->base + pl->done, err);
    pl->done += length;
    return s;
}

/* Opens file `index` of the package under a hidden name and places its
 * sections; INVALID_ARGUMENT-free: the names were prechecked. */
static expert_status batch_add(extract_batch *b, uint32_t index, expert_error *err)
{
    extract_job *job = b->job;
    expert_section_info si;
    extract_file *f = &b->files[b->nfiles];
    uint32_t nsec = 0, cap = expert_section_count(job->r) - b->nsections;
    expert_status s = expert_file_layout(job->r, index, b->sections + b->nsections, cap, &nsec,
                                         &f->length, err);
    if (s != EXPERT_OK)
        return s;
    if (nsec > cap)
        return err_set(err, EXPERT_E_BAD_TOC, "the package's files share sections");
    uint64_t base = 0;
    for (uint32_t k = 0; k < nsec; k++) {
        uint32_t sec = b->sections[b->nsections + k];
        if (job->used[sec])
            return err_set(err, EXPERT_E_BAD_TOC, "section %" PRIu32 " belongs to two files", sec);
        job->used[sec] = 1;
        job->place[sec] = (extract_place){b->nfiles, base, 0};
        expert_section(job->r, sec, &si);
        base += si.decoded_length;
    }
    expert_section(job->r, index, &si);
    if ((f->name = dup_name(&si)) == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    if ((s = extract_begin(job, f->name, &f->dirfd, &f->af, err)) != EXPERT_OK) {
        free(f->name);
        return s;
    }
    b->nsections += nsec;
    b->nfiles++;
    return EXPERT_OK;
}

/* Streams the batch's sections into its files (verified as they pass), then
 * stages every file; on failure the files not staged are removed. */
static expert_status batch_run(extract_batch *b, expert_status s, expert_error *err)
{
    if (s == EXPERT_OK)
        s = expert_stream_sections(b->job->r, b->sections, b->nsections, extract_write, b, 0, err);
    for (uint32_t k = 0; k < b->nfiles; k++) {
        extract_file *f = &b->files[k];
        s = extract_finish(b->job, f->name, f->length, f->dirfd, &f->af, s, err);
        free(f->name);
    }
    b->nfiles = 0;
    b->nsections = 0;
    return s;
}

/* Every output name must be safe and, without --force, not exist yet:
 * checked for all sections before anything is written. */
static expert_status extract_precheck(extract_job *job, expert_error *err)
{
    uint32_t n = expert_section_count(job->r);
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info si;
        struct stat st;
        char *name;
        if (expert_section(job->r, i, &si) != EXPERT_OK)
            return err_set(err, EXPERT_E_BAD_TOC, "cannot read section %" PRIu32, i);
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        if (!is_safe_relpath(si.name, si.name_length)) {
            expert_status s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                                      "refusing to extract unsafe name '%.*s'",
                                      (int)si.name_length, si.name);
            err->section = i;
            return s;
        }
        /* existing parent components must be real directories */
        for (uint16_t k = 0; k < si.name_length; k++) {
            char parent[1025];
            if (si.name[k] != '/' || k >= sizeof parent)
                continue;
            memcpy(parent, si.name, k);
            parent[k] = '\0';
            if (fstatat(job->rootfd, parent, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
                expert_status s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                                          "'%s/%s' exists and is not a directory (symlinks are "
                                          "not followed)", job->dir, parent);
                err->section = i;
                return s;
            }
        }
        if (job->force)
            continue;
        name = dup_name(&si);
        if (name == NULL)
            return err_set(err, EXPERT_E_NOMEM, "out of memory");
        if (fstatat(job->rootfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            expert_status s = err_set(err, EXPERT_E_IO,
                                      "'%s/%s' already exists (use --force to overwrite)",
                                      job->dir, name);
            free(name);
            return s;
        }
        free(name);
    }
    return EXPERT_OK;
}

/* The parent directory of a staged file, reopened safely (no symlinks). */
static int staged_dir(extract_job *job, const char *name, const char **leaf)
{
    const char *slash = strrchr(name, '/');
    int fd = -1;
    expert_error ignored;
    *leaf = slash ? slash + 1 : name;
    if (open_subdir(job->rootfd, name, slash ? (size_t)(slash - name) : 0, 0, NULL, NULL, &fd,
                    &ignored) != EXPERT_OK)
        return -1;
    return fd;
}

/* All or nothing: when every file was written and verified, the staged
 * files are moved into place; otherwise they are removed, and so are the
 * directories this run created, so a failed extract leaves the output as it
 * found it. */
static expert_status extract_settle(extract_job *job, expert_status s, expert_error *err)
{
    size_t placed = 0;
    for (; s == EXPERT_OK && placed < job->nstaged; placed++) {
        staged_file *f = &job->staged[placed];
        const char *leaf;
        int fd = staged_dir(job, f->name, &leaf);
        char *display = output_path(job, f->name);
        s = fd < 0 ? err_set(err, EXPERT_E_IO, "cannot reopen the directory of '%s'", f->name)
                   : atomic_place(fd, f->tmp, leaf, job->force, display ? display : f->name, err);
        free(display);
        if (fd >= 0)
            close(fd);
        if (s != EXPERT_OK)
            break;
    }
    if (s != EXPERT_OK) {
        for (size_t i = placed; i < job->nstaged; i++) {
            const char *leaf;
            int fd = staged_dir(job, job->staged[i].name, &leaf);
            if (fd >= 0) {
                unlinkat(fd, job->staged[i].tmp, 0);
                close(fd);
            }
        }
        for (size_t i = job->ncreated; placed == 0 && i-- > 0;)
            unlinkat(job->rootfd, job->created[i], AT_REMOVEDIR); /* fails, harmlessly, if not empty */
    }
    job->placed = placed;
    return s;
}

static expert_status extract_all(extract_job *job, expert_error *err)
{
    uint32_t n = expert_section_count(job->r);
    uint32_t skipped = 0;
    extract_batch b = {.job = job, .sections = calloc((size_t)n + 1, sizeof *b.sections)};
    expert_status s = b.sections == NULL ? err_set(err, EXPERT_E_NOMEM, "out of memory")
                                         : extract_precheck(job, err);

    for (uint32_t i = 0; s == EXPERT_OK && i < n; i++) {
        expert_section_info si;
        if (expert_section(job->r, i, &si) != EXPERT_OK) {
            s = err_set(err, EXPERT_E_BAD_TOC, "cannot read section %" PRIu32, i);
            break;
        }
        if (si.type != EXPERT_SECTION_FILE && si.type != EXPERT_SECTION_SAFETENSORS_HEADER)
            continue;
        if (b.nfiles == EXTRACT_BATCH)
            s = batch_run(&b, s, err);
        if (s == EXPERT_OK)
            s = batch_add(&b, i, err);
    }
    s = batch_run(&b, s, err);
    free(b.sections);
    s = extract_settle(job, s, err);
    for (uint32_t i = 0; s == EXPERT_OK && i < n; i++)
        skipped += !job->used[i];
    if (s == EXPERT_OK && skipped > 0 && !job->quiet)
        fprintf(stderr, "%s extract: warning: %" PRIu32
                        " section(s) belong to no file and were not extracted\n",
                CLI_NAME, skipped);
    return s;
}

enum { X_OUT, X_FORCE, X_THREADS, X_JSON, X_QUIET, X_MAX_DECODED, X_COUNT };
static const cli_opt_spec k_extract_opts[X_COUNT] = {
    [X_OUT] = {"output", 'o', 1}, [X_FORCE] = {"force", 'f', 0}, [X_THREADS] = {"threads", 0, 1},
    [X_JSON] = {"json", 0, 0},    [X_QUIET] = {"quiet", 'q', 0}, [X_MAX_DECODED] = {"max-decoded", 0, 1},
};

/* Removes the directories of dir beyond its first `keep` bytes, deepest
 * first, each only if empty: an extract that fails leaves none it created. */
static void remove_new_dirs(const char *dir, size_t keep)
{
    size_t n = strlen(dir);
    while (n > keep && dir[n - 1] == '/')
        n--;
    while (n > keep) {
        char *p = strndup(dir, n);
        if (p == NULL || rmdir(p) != 0) {
            free(p);
            return;
        }
        free(p);
        while (n > keep && dir[n - 1] != '/')
            n--;
        while (n > keep && dir[n - 1] == '/')
            n--;
    }
}

static int cmd_extract(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[X_COUNT];
    const char *pos[1];
    size_t npos;
    extract_job job;
    expert_error err;
    expert_status s;
    unsigned threads;
    int rc;
    size_t existing = SIZE_MAX; /* length of the prefix of DIR that existed before */

    memset(&job, 0, sizeof job);
    job.rootfd = -1;
    sb_init(&job.files_json);
    rc = cli_parse(cmd, argc, argv, k_extract_opts, v, X_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!v[X_OUT].seen)
        return cli_usage_error(cmd, "the output directory (-o DIR) is required");
    if ((rc = parse_threads(cmd, &v[X_THREADS], &threads)) != 0 ||
        (rc = parse_max_decoded(cmd, &v[X_MAX_DECODED])) != 0)
        return rc;
    job.dir = v[X_OUT].value;
    job.force = v[X_FORCE].seen;
    job.json = v[X_JSON].seen;
    job.quiet = v[X_QUIET].seen;
    err_clear(&err);

    if (!v[X_THREADS].seen)
        threads = cli_online_cpus();
    s = open_reader(pos[0], 0, threads, 0, 1, &job.r, &err);
    if (s == EXPERT_OK) {
        job.used = calloc((size_t)expert_section_count(job.r) + 1, 1);
        job.place = calloc((size_t)expert_section_count(job.r) + 1, sizeof *job.place);
        if (job.used == NULL || job.place == NULL)
            s = err_set(&err, EXPERT_E_NOMEM, "out of memory");
    }
    if (s == EXPERT_OK)
        s = make_dirs(job.dir, &existing, &err);
    if (s == EXPERT_OK) {
        job.rootfd = open(job.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (job.rootfd < 0)
            s = err_errno(&err, EXPERT_E_IO, errno, "cannot open directory '%s'", job.dir);
    }
    if (s == EXPERT_OK)
        s = extract_all(&job, &err);
    if (s == EXPERT_OK && job.json) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"dir\":");
        sb_json_cstr(&sb, job.dir);
        sb_printf(&sb, ",\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"files\":[", job.files,
                  job.bytes);
        sb_append(&sb, job.files_json.data ? job.files_json.data : "", job.files_json.len);
        sb_puts(&sb, "]}");
        if (job.files_json.failed)
            sb.failed = 1;
        s = sb_print_line(&sb, &err);
        sb_free(&sb);
    } else if (s == EXPERT_OK && !job.quiet) {
        char b[32];
        char *dir = term_text(job.dir);
        printf("extracted %" PRIu64 " file(s), %s, to %s\n", job.files, fmt_size(job.bytes, b), dir);
        term_free(dir);
    }
    rc = s == EXPERT_OK ? 0 : cli_report(job.json, job.r, s, &err);
    if (job.rootfd >= 0)
        close(job.rootfd);
    if (s != EXPERT_OK && job.placed == 0)
        remove_new_dirs(job.dir, existing);
    for (size_t i = 0; i < job.nstaged; i++)
        free(job.staged[i].name);
    for (size_t i = 0; i < job.ncreated; i++)
        free(job.created[i]);
    free(job.staged);
    free(job.created);
    free(job.used);
    free(job.place);
    sb_free(&job.files_json);
    expert_close(job.r);
    return rc;
}

/* ==================================================================== get */

enum { G_OUT, G_INDEX, G_THREADS, G_JSON, G_MAX_DECODED, G_COUNT };
static const cli_opt_spec k_get_opts[G_COUNT] = {
    [G_OUT] = {"output", 'o', 1},
    [G_INDEX] = {"index", 0, 0},
    [G_THREADS] = {"threads", 0, 1},
    [G_JSON] = {"json", 0, 0},
    [G_MAX_DECODED] = {"max-decoded", 0, 1},
};

typedef struct get_ctx {
    expert_reader *r;
    uint32_t index;
} get_ctx;

static expert_status to_atomic_file(void *user, uint32_t section, const void *data, size_t length,
                                    expert_error *err)
{
    (void)section;
    return atomic_write(user, data, length, err);
}

/* -o OUT: streamed into the temp file, which replaces OUT only once the
 * section's hash has matched. */
static expert_status get_to_file(void *ctx, atomic_file *af, expert_error *err)
{
    const get_ctx *g = ctx;
    return expert_read_stream(g->r, g->index, to_atomic_file, af, 0, err);
}

static expert_status to_stdout(void *user, uint32_t section, const void *data, size_t length,
                               expert_error *err)
{
    (void)user;
    (void)section;
    return write_full(STDOUT_FILENO, data, length, "standard output", err);
}

#define GET_BUFFERED_MAX (UINT64_C(64) << 20)

/* Standard output cannot be taken back, so no byte goes out before the hash
 * matched: a small section is decoded into memory and checked first; a
 * large one is streamed twice (checked, then written), keeping memory at a
 * frame whatever size the file declares. */
static expert_status get_to_stdout(expert_reader *r, uint32_t index, expert_error *err)
{
    expert_section_info si;
    expert_section(r, index, &si);
    if (si.decoded_length > GET_BUFFERED_MAX) {
        expert_status s = expert_read_stream(r, index, NULL, NULL, 0, err);
        return s != EXPERT_OK ? s
                              : expert_read_stream(r, index, to_stdout, NULL, EXPERT_READ_NO_VERIFY, err);
    }
    unsigned char *buf = NULL;
    size_t cap = 0;
    uint64_t len = 0;
    expert_status s = decode_section(r, index, &buf, &cap, &len, err);
    if (s == EXPERT_OK)
        s = write_full(STDOUT_FILENO, buf, (size_t)len, "standard output", err);
    free(buf);
    return s;
}

static int cmd_get(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[G_COUNT];
    const char *pos[2];
    size_t npos;
    expert_reader *r = NULL;
    expert_error err;
    expert_status s;
    uint64_t index64 = 0;
    uint32_t index = 0;
    unsigned threads;
    int rc;

    rc = cli_parse(cmd, argc, argv, k_get_opts, v, G_COUNT, pos, 2, 2, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if ((rc = parse_threads(cmd, &v[G_THREADS], &threads)) != 0 ||
        (rc = parse_max_decoded(cmd, &v[G_MAX_DECODED])) != 0)
        return rc;
    if (v[G_INDEX].seen &&
        (rc = cli_parse_u64(cmd, "index", pos[1], 0, UINT32_MAX - 1, 0, &index64)) != 0)
        return rc;
    int json = v[G_JSON].seen;
    if (!v[G_OUT].seen && !json && isatty(STDOUT_FILENO))
        return cli_usage_error(cmd, "refusing to write section bytes to a terminal: use -o OUT, "
                                    "redirect standard output, or --json for the TOC entry");
    err_clear(&err);
    s = open_reader(pos[0], 0, threads, 0, 1, &r, &err);
    if (s == EXPERT_OK) {
        if (v[G_INDEX].seen) {
            index = (uint32_t)index64;
            if (index >= expert_section_count(r))
                s = err_set(&err, EXPERT_E_NOT_FOUND, "no section with index %" PRIu32
                                                      " (the file has %" PRIu32 ")",
                            index, expert_section_count(r));
        } else {
            s = expert_find(r, pos[1], strlen(pos[1]), &index);
            if (s != EXPERT_OK)
                err_set(&err, s, "no section named '%s'", pos[1]);
        }
    }
    if (s == EXPERT_OK && v[G_OUT].seen) {
        get_ctx g = {r, index};
        s = atomic_produce_path(v[G_OUT].value, 1, get_to_file, &g, &err);
    } else if (s == EXPERT_OK && !json) {
        s = get_to_stdout(r, index, &err);
    }
    if (s == EXPERT_OK && json) {
        expert_section_info si;
        strbuf sb;
        sb_init(&sb);
        expert_section(r, index, &si);
        inspect_section_json(&sb, &si);
        if (v[G_OUT].seen && sb.len > 0 && !sb.failed) { /* the entry, and where the bytes went */
            sb.len--; /* reopen the object */
            sb_puts(&sb, ",\"output\":");
            sb_json_cstr(&sb, v[G_OUT].value);
            sb_puts(&sb, "}");
        }
        s = sb_print_line(&sb, &err);
        sb_free(&sb);
    }
    rc = s == EXPERT_OK ? 0 : cli_report(json, r, s, &err);
    expert_close(r);
    return rc;
}

/* ======================================================= keygen/sign/verify */

static int print_ok_json(const char *body)
{
    expert_error err;
    strbuf sb;
    expert_status s;
    sb_init(&sb);
    sb_puts(&sb, body);
    s = sb_print_line(&sb, &err);
    sb_free(&sb);
    return s == EXPERT_OK ? 0 : cli_report(0, NULL, s, &err);
}

enum { K_PRIVATE, K_PUBLIC, K_FORCE, K_JSON, K_COUNT };
static const cli_opt_spec k_keygen_opts[K_COUNT] = {
    [K_PRIVATE] = {"private", 0, 1},
    [K_PUBLIC] = {"public", 0, 1},
    [K_FORCE] = {"force", 'f', 0},
    [K_JSON] = {"json", 0, 0},
};

static int cmd_keygen(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[K_COUNT];
    const char *pos[1];
    size_t npos;
    expert_error err;
    expert_status s;
    int rc = cli_parse(cmd, argc, argv, k_keygen_opts, v, K_COUNT, pos, 0, 0, &npos);

    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!v[K_PRIVATE].seen || !v[K_PUBLIC].seen)
        return cli_usage_error(cmd, "--private and --public are required");
    if (strcmp(v[K_PRIVATE].value, v[K_PUBLIC].value) == 0)
        return cli_usage_error(cmd, "--private and --public must be different files");
    err_clear(&err);
    if (!v[K_FORCE].seen) {
        const char *p = path_exists(v[K_PRIVATE].value) ? v[K_PRIVATE].value
                        : path_exists(v[K_PUBLIC].value) ? v[K_PUBLIC].value
                                                          : NULL;
        if (p != NULL) {
            err_set(&err, EXPERT_E_IO, "'%s' already exists (use --force to overwrite)", p);
            return cli_report(v[K_JSON].seen, NULL, EXPERT_E_IO, &err);
        }
    }
    s = expert_keygen(v[K_PRIVATE].value, v[K_PUBLIC].value, &err);
    if (s != EXPERT_OK)
        return cli_report(v[K_JSON].seen, NULL, s, &err);
    if (v[K_JSON].seen) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"private\":");
        sb_json_cstr(&sb, v[K_PRIVATE].value);
        sb_puts(&sb, ",\"public\":");
        sb_json_cstr(&sb, v[K_PUBLIC].value);
        sb_puts(&sb, "}");
        rc = sb.failed ? cli_report(0, NULL, EXPERT_E_NOMEM, NULL) : print_ok_json(sb.data);
        sb_free(&sb);
        return rc;
    }
    printf("wrote private key %s\nwrote public key  %s\n", v[K_PRIVATE].value, v[K_PUBLIC].value);
    return 0;
}

enum { S_KEY, S_JSON, S_COUNT };
static const cli_opt_spec k_sign_opts[S_COUNT] = {
    [S_KEY] = {"key", 'k', 1},
    [S_JSON] = {"json", 0, 0},
};

static int cmd_sign(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[S_COUNT];
    const char *pos[1];
    size_t npos;
    expert_private_key *key = NULL;
    expert_error err;
    expert_status s;
    int rc = cli_parse(cmd, argc, argv, k_sign_opts, v, S_COUNT, pos, 1, 1, &npos);

    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!v[S_KEY].seen)
        return cli_usage_error(cmd, "--key PRIV.pem is required");
    err_clear(&err);
    s = expert_private_key_load(v[S_KEY].value, &key, &err);
    if (s == EXPERT_OK)
        s = expert_sign_file(pos[0], key, &err);
    expert_private_key_free(key);
    if (s != EXPERT_OK)
        return cli_report(v[S_JSON].seen, NULL, s, &err);
    if (v[S_JSON].seen) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"file\":");
        sb_json_cstr(&sb, pos[0]);
        sb_puts(&sb, ",\"signed\":true}");
        rc = sb.failed ? cli_report(0, NULL, EXPERT_E_NOMEM, NULL) : print_ok_json(sb.data);
        sb_free(&sb);
        return rc;
    }
    printf("signed %s\n", pos[0]);
    return 0;
}

enum { F_KEY, F_THREADS, F_JSON, F_NO_MMAP, F_COUNT };
static const cli_opt_spec k_verify_opts[F_COUNT] = {
    [F_KEY] = {"key", 'k', 1},
    [F_THREADS] = {"threads", 0, 1},
    [F_JSON] = {"json", 0, 0},
    [F_NO_MMAP] = {"no-mmap", 0, 0},
};

static int cmd_verify(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[F_COUNT];
    const char *pos[1];
    size_t npos;
    validate_job job;
    expert_error err;
    int rc = cli_parse(cmd, argc, argv, k_verify_opts, v, F_COUNT, pos, 1, 1, &npos);

    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!v[F_KEY].seen)
        return cli_usage_error(cmd, "--key PUB.pem is required");
    memset(&job, 0, sizeof job);
    job.path = pos[0];
    job.lvl = LEVEL_FULL;
    job.json = v[F_JSON].seen;
    job.no_mmap = v[F_NO_MMAP].seen;
    if ((rc = parse_threads(cmd, &v[F_THREADS], &job.threads)) != 0)
        return rc;
    err_clear(&err);
    {
        expert_status s = expert_public_key_load(v[F_KEY].value, &job.key, &err);
        if (s != EXPERT_OK)
            return cli_report(job.json, NULL, s, &err);
    }
    rc = validate_report(&job);
    expert_public_key_free(job.key);
    return rc;
}

/* =================================================================== main */

int main(int argc, char **argv)
{
    const cli_cmd *cmd;
    int rc;

    if (argc < 2) {
        print_main_help(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_main_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("%s %s (libexpert %s, format .expert %d.%d)\n", CLI_NAME, CLI_VERSION,
               expert_version_string(), EXPERT_FORMAT_MAJOR, EXPERT_FORMAT_MINOR);
        return 0;
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        fprintf(stderr, "%s: unknown command '%s'\nTry '%s --help'.\n", CLI_NAME, argv[1], CLI_NAME);
        return CLI_EXIT_USAGE;
    }
    rc = cmd->run(cmd, argc - 1, argv + 1);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == 0) {
            fprintf(stderr, "%s: IO: cannot write to standard output\n", CLI_NAME);
            rc = EXPERT_E_IO;
        }
    }
    return rc;
}
