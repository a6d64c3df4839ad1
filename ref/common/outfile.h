/* outfile.h — replacing a file atomically, for the library's writer and
 * signer and for the CLI's outputs (one source, compiled into both).
 *
 * Nothing appears at the destination until commit, and an interrupted
 * write leaves no name behind: on Linux the data goes into an unnamed
 * O_TMPFILE inode that commit links into place. Where O_TMPFILE is missing
 * (other systems, some file systems) a hidden ".NAME.tmp.PID.N" beside the
 * destination is used instead, and a kill -9 can leave that name.
 *
 * Commit gives the file what the user had: replacing a regular file keeps
 * its permission bits and, where permitted, its owner and group; a new file
 * gets 0666 & ~umask. The destination entry is replaced, not edited: a
 * symbolic link at the destination is replaced by the file (resolve it
 * first to write through it), and other hard links keep the old content.
 *
 * No allocation: names live in the struct. Functions return 0 or an errno
 * value; `step` names what failed, for the caller's message. */
#ifndef EXPERT_OUTFILE_H
#define EXPERT_OUTFILE_H

#include <sys/types.h>

typedef struct xp_outfile {
    int dirfd, own_dirfd;
    int fd;               /* O_RDWR */
    int anonymous;        /* O_TMPFILE: no name until commit */
    int replacing;        /* a regular file was at the destination at begin */
    mode_t mode;          /* permission bits given at commit */
    uid_t uid;
    gid_t gid;
    char leaf[256];       /* destination inside dirfd */
    char tmp[320];        /* the named temporary, when there is one */
    const char *step;
} xp_outfile;

/* Destination `leaf` inside dirfd (borrowed; no path resolution at all). */
int xp_outfile_begin_at(xp_outfile *o, int dirfd, const char *leaf);
/* Destination `path`: its directory is opened as given (symlinks in the
 * directory part are followed, as for any user path). */
int xp_outfile_begin(xp_outfile *o, const char *path);
/* A path that opens the file being written (for a read-back check). */
void xp_outfile_reopen_path(const xp_outfile *o, char *buf, size_t n);
/* fsync, mode and owner, then into place: over an existing entry when
 * overwrite, else EEXIST if the destination exists. The directory is
 * fsynced too. On failure the destination is untouched. Releases o. */
int xp_outfile_commit(xp_outfile *o, int overwrite);
/* For a set of files that must appear together: like commit, but the file
 * gets the hidden name o->tmp beside its destination and stays there; o is
 * released (tmp and leaf stay readable). Place it, or unlink tmp, later. */
int xp_outfile_stage(xp_outfile *o);
/* Moves a staged file into place (as commit would) and fsyncs dirfd. */
int xp_outfile_place(int dirfd, const char *tmp, const char *leaf, int overwrite);
/* Drops the temporary; safe after any begin (failed or not) and after commit. */
void xp_outfile_abort(xp_outfile *o);

#endif
