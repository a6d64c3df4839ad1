/* outfile.c — see outfile.h. */
#include "outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned g_counter; /* temp-name uniqueness within a process; races only cost a retry */

static void fd_path(int fd, char *buf, size_t n)
{
#ifdef __linux__
    snprintf(buf, n, "/proc/self/fd/%d", fd);
#else
    snprintf(buf, n, "/dev/fd/%d", fd);
#endif
}

static void next_tmp_name(xp_outfile *o)
{
    /* hidden, and within NAME_MAX however long the destination's name */
    snprintf(o->tmp, sizeof o->tmp, ".%.200s.tmp.%ld.%u", o->leaf, (long)getpid(), g_counter++);
}

int xp_outfile_begin_at(xp_outfile *o, int dirfd, const char *leaf)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->dirfd = dirfd;
    o->step = "name the output";
    size_t n = strlen(leaf);
    if (n == 0 || n >= sizeof o->leaf)
        return n == 0 ? EINVAL : ENAMETOOLONG;
    memcpy(o->leaf, leaf, n + 1);

    struct stat st;
    if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        o->replacing = 1;
        o->mode = st.st_mode & 07777;
        o->uid = st.st_uid;
        o->gid = st.st_gid;
    }
    o->step = "create a temporary file";
#ifdef O_TMPFILE
    o->fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
    o->anonymous = o->fd >= 0;
#endif
    for (int attempt = 0; o->fd < 0 && attempt < 100; attempt++) {
        next_tmp_name(o);
        o->fd = openat(dirfd, o->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (o->fd < 0 && errno != EEXIST)
            break;
    }
    if (o->fd < 0) {
        o->tmp[0] = '\0';
        return errno;
    }
    /* 0666 through the umask is what a new file gets; a named temporary
     * stays private until commit gives it that (or the replaced file's) mode. */
    if (!o->replacing && fstat(o->fd, &st) == 0)
        o->mode = st.st_mode & 07777;
    if (!o->anonymous)
        fchmod(o->fd, 0600);
    return 0;
}

int xp_outfile_begin(xp_outfile *o, const char *path)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->dirfd = -1;
    o->step = "name the output";
    const char *slash = strrchr(path, '/');
    const char *leaf = slash != NULL ? slash + 1 : path;
    char dir[4096];
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return ENAMETOOLONG;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    if (*leaf == '\0' || strcmp(leaf, ".") == 0 || strcmp(leaf, "..") == 0)
        return EISDIR;
    o->step = "open the output's directory";
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno;
    int e = xp_outfile_begin_at(o, dirfd, leaf);
    o->own_dirfd = 1;
    if (e != 0)
        xp_outfile_abort(o);
    return e;
}

void xp_outfile_reopen_path(const xp_outfile *o, char *buf, size_t n)
{
    fd_path(o->fd, buf, n);
}

static void release(xp_outfile *o)
{
    if (o->fd >= 0)
        close(o->fd);
    if (o->own_dirfd && o->dirfd >= 0)
        close(o->dirfd);
    o->fd = -1;
    o->dirfd = -1;
    o->own_dirfd = 0;
}

/* Gives the unnamed inode the temporary name o->tmp. */
static int link_anonymous(xp_outfile *o, const char *name)
{
    char self[64];
    fd_path(o->fd, self, sizeof self);
    return linkat(AT_FDCWD, self, o->dirfd, name, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
}

/* Renames (overwrite) or links (not) the named temporary into place. */
static int place_named(int dirfd, const char *tmp, const char *leaf, int overwrite)
{
    if (overwrite)
        return renameat(dirfd, tmp, dirfd, leaf) == 0 ? 0 : errno;
    if (linkat(dirfd, tmp, dirfd, leaf, 0) == 0) {
        unlinkat(dirfd, tmp, 0);
        return 0;
    }
    if (errno == EEXIST)
        return EEXIST;
    /* a file system without hard links: check, then rename (small race) */
    struct stat st;
    if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return EEXIST;
    return renameat(dirfd, tmp, dirfd, leaf) == 0 ? 0 : errno;
}

/* Gives an unnamed inode a fresh hidden name in o->tmp. */
static int name_anonymous(xp_outfile *o)
{
    int e = EEXIST;
    for (int attempt = 0; e == EEXIST && attempt < 100; attempt++) {
        next_tmp_name(o);
        e = link_anonymous(o, o->tmp);
    }
    if (e != 0)
        o->tmp[0] = '\0';
    else
        o->anonymous = 0;
    return e;
}

static int publish(xp_outfile *o, int overwrite)
{
    if (o->anonymous && !overwrite) {
        o->step = "link the file into place";
        return link_anonymous(o, o->leaf); /* EEXIST when something is there */
    }
    if (o->anonymous) {
        /* linkat cannot replace: link under a temporary name, then rename
         * over the destination (only this instant can leave a name behind) */
        o->step = "link the file";
        int e = name_anonymous(o);
        if (e != 0)
            return e;
    }
    o->step = "rename the file into place";
    int e = place_named(o->dirfd, o->tmp, o->leaf, overwrite);
    if (e == 0 && !overwrite)
        o->tmp[0] = '\0';
    return e;
}

/* fsync, then the mode and owner the destination should have. */
static int finish_inode(xp_outfile *o)
{
    o->step = "flush the file to disk";
    if (fsync(o->fd) != 0)
        return errno;
    fchmod(o->fd, o->mode);
    if (o->replacing) { /* owner and group where permitted; a user's own group otherwise */
        struct stat st;
        if (fstat(o->fd, &st) == 0 && (st.st_uid != o->uid || st.st_gid != o->gid) &&
            fchown(o->fd, o->uid, o->gid) != 0 && fchown(o->fd, (uid_t)-1, o->gid) != 0)
            fchmod(o->fd, o->mode & 0777); /* set-id bits never outlive an owner change */
    }
    return 0;
}

int xp_outfile_stage(xp_outfile *o)
{
    int e = finish_inode(o);
    if (e == 0 && o->anonymous) {
        o->step = "link the file";
        e = name_anonymous(o);
    }
    if (e != 0) {
        xp_outfile_abort(o);
        return e;
    }
    release(o);
    return 0;
}

int xp_outfile_place(int dirfd, const char *tmp, const char *leaf, int overwrite)
{
    int e = place_named(dirfd, tmp, leaf, overwrite);
    if (e == 0)
        fsync(dirfd);
    return e;
}

int xp_outfile_commit(xp_outfile *o, int overwrite)
{
    int e = finish_inode(o);
    if (e == 0)
        e = publish(o, overwrite);
    if (e != 0) {
        xp_outfile_abort(o);
        return e;
    }
    o->tmp[0] = '\0';
    fsync(o->dirfd); /* the new name itself must survive a crash */
    release(o);
    return 0;
}

void xp_outfile_abort(xp_outfile *o)
{
    if (o->tmp[0] != '\0' && o->dirfd >= 0)
        unlinkat(o->dirfd, o->tmp, 0);
    o->tmp[0] = '\0';
    release(o);
}
