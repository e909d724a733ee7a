// libStrataWriteLog.so: loaded with LD_PRELOAD into a process, records every change it makes to the
// files under one directory (include/strata_write_log.h has the log's format and environment).
// A kill -9 keeps everything the process wrote, synced or not; a power cut keeps only what reached
// the disk. The log lets a test build the directories a power cut could leave at each sync.
//
// Each intercepted call finds the next definition with dlsym(RTLD_NEXT) and calls it. Calls on
// recorded files run under one mutex together with their bookkeeping, so that the log's order is
// the order the calls took effect in, whatever thread made them.
//
// No Swift target may link this library: its definitions would replace libc's in that process.

// Fortified glibc headers define some of these functions inline; this file defines them itself.
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the log's fields are written as the host stores them");

enum { CREATE = 1, OPEN_EXISTING, WRITE, TRUNCATE, EXTEND, SYNC, RANGE_SYNC, RENAME, UNLINK, MKDIR, MARK, UNKNOWN, PAGE, DIRECTORY_SYNC };
// The unit in which mappings are compared and logged.
enum { PAGE_BYTES = 4096 };
// What a descriptor of a recorded directory maps to: its fsync is a DIRECTORY_SYNC.
#define DIRECTORY UINT32_MAX

#define EXPORT __attribute__((visibility("default")))

static __typeof__(openat) *real_openat;
static __typeof__(close) *real_close;
static __typeof__(dup) *real_dup;
static __typeof__(dup2) *real_dup2;
static __typeof__(dup3) *real_dup3;
static __typeof__(fcntl) *real_fcntl;
static __typeof__(write) *real_write;
static __typeof__(pwrite) *real_pwrite;
static __typeof__(writev) *real_writev;
static __typeof__(pwritev) *real_pwritev;
static __typeof__(ftruncate) *real_ftruncate;
static __typeof__(fallocate) *real_fallocate;
static __typeof__(posix_fallocate) *real_posix_fallocate;
static __typeof__(fsync) *real_fsync;
static __typeof__(fdatasync) *real_fdatasync;
static __typeof__(msync) *real_msync;
static __typeof__(mmap) *real_mmap;
static __typeof__(munmap) *real_munmap;
static __typeof__(renameat2) *real_renameat2;
static __typeof__(unlinkat) *real_unlinkat;
static __typeof__(mkdirat) *real_mkdirat;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int active;  // both variables were set and the log is open
static int log_fd = -1;
static char root[PATH_MAX], log_path[PATH_MAX];
// The root's parent ("" when the root is /): a sync of it makes the root's own name durable.
static char root_parent[PATH_MAX];

// The names under the root the recorder knows, with their inodes.
struct name { char *path; uint32_t inode; struct name *next; };
static struct name *names;
static uint32_t last_inode;

// Each descriptor's inode (0: not recorded), indexed by descriptor.
static uint32_t *fds;
static size_t fd_capacity;

// A shared writable mapping of a recorded file, with a copy of the bytes last logged for it.
struct mapping {
    char *base;
    size_t length;
    uint32_t inode;
    off_t offset;
    int fd;  // a duplicate of the mapped descriptor: the file's size is needed after the program closes its own
    unsigned char *copy;
    struct mapping *next;
};
static struct mapping *mappings;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    dprintf(2, "strata-write-log: ");
    vdprintf(2, format, ap);
    dprintf(2, "\n");
    va_end(ap);
    abort();
}

static void *resolve(const char *symbol) {
    void *f = dlsym(RTLD_NEXT, symbol);
    if (!f) die("no next definition of %s", symbol);
    return f;
}

static void stop_in_child(void) { active = 0; }

static void setup(void) {
    real_openat = resolve("openat");
    real_close = resolve("close");
    real_dup = resolve("dup");
    real_dup2 = resolve("dup2");
    real_dup3 = resolve("dup3");
    real_fcntl = resolve("fcntl");
    real_write = resolve("write");
    real_pwrite = resolve("pwrite");
    real_writev = resolve("writev");
    real_pwritev = resolve("pwritev");
    real_ftruncate = resolve("ftruncate");
    real_fallocate = resolve("fallocate");
    real_posix_fallocate = resolve("posix_fallocate");
    real_fsync = resolve("fsync");
    real_fdatasync = resolve("fdatasync");
    real_msync = resolve("msync");
    real_mmap = resolve("mmap");
    real_munmap = resolve("munmap");
    real_renameat2 = resolve("renameat2");
    real_unlinkat = resolve("unlinkat");
    real_mkdirat = resolve("mkdirat");

    const char *log = getenv("STRATA_WRITE_LOG"), *dir = getenv("STRATA_WRITE_LOG_ROOT");
    if (!log || !dir) return;
    if (!realpath(dir, root)) die("STRATA_WRITE_LOG_ROOT %s: %s", dir, strerror(errno));
    snprintf(root_parent, sizeof root_parent, "%s", root);
    char *last_slash = strrchr(root_parent, '/');
    if (strcmp(root, "/") == 0) root_parent[0] = 0;
    else if (last_slash == root_parent) root_parent[1] = 0;
    else *last_slash = 0;
    log_fd = real_openat(AT_FDCWD, log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0 || !realpath(log, log_path)) die("STRATA_WRITE_LOG %s: %s", log, strerror(errno));
    // A program this one starts would open the same log and empty it; a forked copy would
    // write records of its own into it.
    unsetenv("STRATA_WRITE_LOG");
    unsetenv("STRATA_WRITE_LOG_ROOT");
    pthread_atfork(NULL, NULL, stop_in_child);
    active = 1;
}

// Every intercepted call may be the process's first, even before this library's constructor.
static void ready(void) { pthread_once(&once, setup); }
__attribute__((constructor)) static void start(void) { ready(); }

// MARK: The log

static void append(const void *bytes, size_t count) {
    const char *p = bytes;
    while (count > 0) {
        ssize_t n = real_write(log_fd, p, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("writing the log %s: %s", log_path, n < 0 ? strerror(errno) : "wrote nothing");
        p += n;
        count -= (size_t)n;
    }
}

// A record's fixed fields are gathered here, then written with its variable part.
struct record { unsigned char bytes[64]; size_t count; };

static struct record begin(uint8_t type) { struct record r = {{type}, 1}; return r; }
static void put32(struct record *r, uint32_t v) { memcpy(r->bytes + r->count, &v, 4); r->count += 4; }
static void put64(struct record *r, uint64_t v) { memcpy(r->bytes + r->count, &v, 8); r->count += 8; }

// A field of `count` bytes (a path, a write's data) after their length.
static void append_bytes(const void *bytes, size_t count) {
    if (count > UINT32_MAX) die("a field of %zu bytes", count);
    uint32_t n = (uint32_t)count;
    append(&n, 4);
    append(bytes, count);
}

// Writes a record's fixed fields, then `count` bytes after their length.
static void finish(struct record *r, const void *bytes, size_t count) {
    if (count > UINT32_MAX) die("a field of %zu bytes", count);
    put32(r, (uint32_t)count);
    append(r->bytes, r->count);
    append(bytes, count);
}

static void log_path_record(uint8_t type, uint32_t inode, const char *path) {
    struct record r = begin(type);
    if (type == CREATE || type == OPEN_EXISTING || type == UNKNOWN) put32(&r, inode);
    finish(&r, path, strlen(path));
}

static void log_size(uint8_t type, uint32_t inode, uint64_t size) {
    struct record r = begin(type);
    put32(&r, inode);
    put64(&r, size);
    append(r.bytes, r.count);
}

// MARK: Names and descriptors

// Whether `path` (relative to `dirfd`) is under the root; then `rel` gets its path relative to
// the root. Only the directory part is resolved: the last name is what the call names.
static int tracked(int dirfd, const char *path, char rel[PATH_MAX]) {
    if (!active || !path) return 0;
    char full[2 * PATH_MAX], dir[PATH_MAX], resolved[2 * PATH_MAX + 2];
    if (path[0] == '/') {
        snprintf(full, sizeof full, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return 0;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0) return 0;
            base[n] = 0;
        }
        snprintf(full, sizeof full, "%s/%s", base, path);
    }
    size_t length = strlen(full);
    while (length > 1 && full[length - 1] == '/') full[--length] = 0;
    char *slash = strrchr(full, '/');
    const char *last = slash + 1;
    *slash = 0;
    if (!realpath(slash == full ? "/" : full, dir)) return 0;
    if (strcmp(last, ".") == 0 || strcmp(last, "..") == 0) {
        snprintf(resolved, sizeof resolved, "%s/%s", dir, last);
        if (!realpath(resolved, dir)) return 0;
        snprintf(resolved, sizeof resolved, "%s", dir);
    } else {
        snprintf(resolved, sizeof resolved, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, last);
    }
    size_t r = strlen(root);
    if (strcmp(resolved, log_path) == 0 || strncmp(resolved, root, r) != 0) return 0;
    if (resolved[r] != 0 && resolved[r] != '/') return 0;
    snprintf(rel, PATH_MAX, "%s", resolved[r] ? resolved + r + 1 : "");
    return 1;
}

static struct name *find_name(const char *path) {
    for (struct name *n = names; n; n = n->next)
        if (strcmp(n->path, path) == 0) return n;
    return NULL;
}

static void forget_name(const char *path) {
    for (struct name **p = &names; *p; p = &(*p)->next) {
        if (strcmp((*p)->path, path) == 0) {
            struct name *gone = *p;
            *p = gone->next;
            free(gone->path);
            free(gone);
            return;
        }
    }
}

static uint32_t new_name(const char *path) {
    forget_name(path);
    struct name *n = malloc(sizeof *n);
    if (!n || !(n->path = strdup(path))) die("out of memory");
    n->inode = ++last_inode;
    n->next = names;
    names = n;
    return n->inode;
}

// Whether `path` is `dir` or lies under it.
static size_t under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/') ? n : 0;
}

static uint32_t fd_inode(int fd) { return fd >= 0 && (size_t)fd < fd_capacity ? fds[fd] : 0; }

static void set_fd(int fd, uint32_t inode) {
    if (fd < 0) return;
    if ((size_t)fd >= fd_capacity) {
        if (!inode) return;
        size_t capacity = (size_t)fd * 2 + 64;
        fds = realloc(fds, capacity * sizeof *fds);
        if (!fds) die("out of memory");
        memset(fds + fd_capacity, 0, (capacity - fd_capacity) * sizeof *fds);
        fd_capacity = capacity;
    }
    fds[fd] = inode;
}

// A recorded regular file's inode for `fd`, or 0.
static uint32_t file_inode(int fd) {
    uint32_t inode = fd_inode(fd);
    return inode == DIRECTORY ? 0 : inode;
}

// MARK: Mappings

// Keeps the mappings' copies equal to what the log says the file holds after a write through a
// descriptor (`bytes`) or a truncation (NULL: zeros, which is what the file reads as when it
// grows again).
static void note_in_copies(uint32_t inode, uint64_t offset, const void *bytes, uint64_t count) {
    for (struct mapping *m = mappings; m; m = m->next) {
        uint64_t start = (uint64_t)m->offset, end = start + m->length;
        uint64_t from = offset > start ? offset : start, to = offset + count < end ? offset + count : end;
        if (m->inode != inode || from >= to) continue;
        if (bytes) memcpy(m->copy + (from - start), (const char *)bytes + (from - offset), to - from);
        else memset(m->copy + (from - start), 0, to - from);
    }
}

static void log_write(uint8_t type, uint32_t inode, uint64_t offset, const void *bytes, size_t count) {
    for (size_t done = 0; done < count;) {
        size_t n = count - done < (1u << 30) ? count - done : (1u << 30);
        struct record r = begin(type);
        put32(&r, inode);
        put64(&r, offset + done);
        finish(&r, (const char *)bytes + done, n);
        done += n;
    }
    if (type == WRITE) note_in_copies(inode, offset, bytes, count);
}

static void log_truncate(uint32_t inode, uint64_t size) {
    log_size(TRUNCATE, inode, size);
    note_in_copies(inode, size, NULL, UINT64_MAX - size);
}

// Logs the pages of [from, to) of `m` that changed since they were last logged. Pages past the
// end of the file are left alone: reading them would be SIGBUS (LMDB maps more than the file).
static void capture(struct mapping *m, char *from, char *to) {
    struct stat st;
    if (fstat(m->fd, &st) != 0) die("fstat of a mapped file: %s", strerror(errno));
    for (size_t at = (size_t)(from - m->base) / PAGE_BYTES * PAGE_BYTES; at < (size_t)(to - m->base); at += PAGE_BYTES) {
        off_t in_file = m->offset + (off_t)at;
        if (in_file >= st.st_size) break;
        size_t n = PAGE_BYTES;
        if (n > m->length - at) n = m->length - at;
        if ((off_t)n > st.st_size - in_file) n = (size_t)(st.st_size - in_file);
        if (memcmp(m->base + at, m->copy + at, n) == 0) continue;
        // Copied first, so the log has one version even if another thread is storing to it.
        memcpy(m->copy + at, m->base + at, n);
        log_write(PAGE, m->inode, (uint64_t)in_file, m->copy + at, n);
    }
}

static int overlaps(struct mapping *m, const void *address, size_t length) {
    const char *a = address;
    return a < m->base + m->length && a + length > m->base;
}

static void add_mapping(void *base, size_t length, uint32_t inode, int fd, off_t offset) {
    struct mapping *m = calloc(1, sizeof *m);
    if (!m || !(m->copy = calloc(1, length))) die("out of memory for a copy of a %zu-byte mapping", length);
    m->base = base;
    m->length = length;
    m->inode = inode;
    m->offset = offset;
    m->fd = real_fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (m->fd < 0) die("dup of a mapped file: %s", strerror(errno));
    // The copy holds what the file holds now; past its end, zeros (what it reads as if extended).
    for (size_t done = 0; done < length;) {
        ssize_t n = pread(m->fd, m->copy + done, length - done, offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("reading a mapped file: %s", strerror(errno));
        if (n == 0) break;
        done += (size_t)n;
    }
    m->next = mappings;
    mappings = m;
}

// At exit, mappings still there hold changes that were never synced: the kernel writes them back
// some time later.
__attribute__((destructor)) static void capture_at_exit(void) {
    if (!active) return;
    pthread_mutex_lock(&lock);
    for (struct mapping *m = mappings; m; m = m->next) capture(m, m->base, m->base + m->length);
    pthread_mutex_unlock(&lock);
}

// MARK: Opening and closing

// Starts recording `fd`, just opened as `rel` with `flags`; `existed` says whether the name was
// there before.
static void note_open(int fd, const char *rel, int flags, int existed) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat of %s: %s", rel, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        set_fd(fd, DIRECTORY);
        return;
    }
    if (!S_ISREG(st.st_mode)) return;
    if ((flags & O_TMPFILE) == O_TMPFILE) die("O_TMPFILE under the root is not recorded (%s)", rel);
    struct name *known = find_name(rel);
    uint32_t inode;
    if (!existed) {
        inode = new_name(rel);
        log_path_record(CREATE, inode, rel);
    } else if (known) {
        inode = known->inode;
        log_path_record(OPEN_EXISTING, inode, rel);
        if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) log_truncate(inode, 0);
    } else {
        inode = new_name(rel);
        log_path_record(UNKNOWN, inode, rel);
    }
    set_fd(fd, inode);
}

static int open_at(int dirfd, const char *path, int flags, mode_t mode) {
    ready();
    char rel[PATH_MAX];
    if (!tracked(dirfd, path, rel)) return real_openat(dirfd, path, flags, mode);
    pthread_mutex_lock(&lock);
    struct stat st;
    int existed = fstatat(dirfd, path, &st, 0) == 0;
    int fd = real_openat(dirfd, path, flags, mode);
    int saved = errno;
    if (fd >= 0) note_open(fd, rel, flags, existed);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return fd;
}

// open's mode argument is there only when the flags create a file.
#define MODE(flags)                                                              \
    mode_t mode = 0;                                                             \
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {                 \
        va_list ap;                                                              \
        va_start(ap, flags);                                                     \
        mode = va_arg(ap, mode_t);                                               \
        va_end(ap);                                                              \
    }

EXPORT int open(const char *path, int flags, ...) { MODE(flags) return open_at(AT_FDCWD, path, flags, mode); }
EXPORT int open64(const char *path, int flags, ...) { MODE(flags) return open_at(AT_FDCWD, path, flags, mode); }
EXPORT int openat(int dirfd, const char *path, int flags, ...) { MODE(flags) return open_at(dirfd, path, flags, mode); }
EXPORT int openat64(int dirfd, const char *path, int flags, ...) { MODE(flags) return open_at(dirfd, path, flags, mode); }
EXPORT int creat(const char *path, mode_t mode) { return open_at(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
EXPORT int creat64(const char *path, mode_t mode) { return open_at(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

EXPORT int close(int fd) {
    ready();
    if (!active) return real_close(fd);
    pthread_mutex_lock(&lock);
    set_fd(fd, 0);
    int rc = real_close(fd);
    int saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

// A duplicate shares the original's inode.
static int duplicated(int from, int to) {
    int saved = errno;
    if (to >= 0) set_fd(to, fd_inode(from));
    pthread_mutex_unlock(&lock);
    errno = saved;
    return to;
}

EXPORT int dup(int fd) {
    ready();
    if (!active) return real_dup(fd);
    pthread_mutex_lock(&lock);
    return duplicated(fd, real_dup(fd));
}

EXPORT int dup2(int fd, int to) {
    ready();
    if (!active) return real_dup2(fd, to);
    pthread_mutex_lock(&lock);
    return duplicated(fd, real_dup2(fd, to));
}

EXPORT int dup3(int fd, int to, int flags) {
    ready();
    if (!active) return real_dup3(fd, to, flags);
    pthread_mutex_lock(&lock);
    return duplicated(fd, real_dup3(fd, to, flags));
}

static int fcntl_any(int fd, int command, void *argument) {
    ready();
    // Only duplicates are bookkeeping. The rest run unlocked: F_SETLKW may wait for a long time.
    if (!active || (command != F_DUPFD && command != F_DUPFD_CLOEXEC)) return real_fcntl(fd, command, argument);
    pthread_mutex_lock(&lock);
    return duplicated(fd, real_fcntl(fd, command, argument));
}

EXPORT int fcntl(int fd, int command, ...) {
    va_list ap;
    va_start(ap, command);
    void *argument = va_arg(ap, void *);
    va_end(ap);
    return fcntl_any(fd, command, argument);
}

EXPORT int fcntl64(int fd, int command, ...) {
    va_list ap;
    va_start(ap, command);
    void *argument = va_arg(ap, void *);
    va_end(ap);
    return fcntl_any(fd, command, argument);
}

// MARK: Writes

// Where a write through `fd`'s file position lands.
static off_t position(int fd) {
    if (real_fcntl(fd, F_GETFL) & O_APPEND) {
        struct stat st;
        if (fstat(fd, &st) != 0) die("fstat: %s", strerror(errno));
        return st.st_size;
    }
    return lseek(fd, 0, SEEK_CUR);
}

// Logs what a write of `iov` at `offset` (-1: at the file position, read before) did: `done`
// bytes. Bytes for stdout are a MARK, whatever stdout is.
static ssize_t written(int fd, uint32_t inode, off_t offset, const struct iovec *iov, int count, ssize_t done) {
    int saved = errno;
    size_t left = done > 0 ? (size_t)done : 0;
    for (int i = 0; i < count && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        if (fd == 1) {
            struct record r = begin(MARK);
            finish(&r, iov[i].iov_base, n);
        }
        if (inode) log_write(WRITE, inode, (uint64_t)offset, iov[i].iov_base, n);
        offset += (off_t)n;
        left -= n;
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return done;
}

// Takes the lock; returns `fd`'s inode and where a write at `offset` (-1: the file position) lands.
static uint32_t before_write(int fd, off_t *offset) {
    pthread_mutex_lock(&lock);
    uint32_t inode = file_inode(fd);
    if (inode && *offset < 0) *offset = position(fd);
    return inode;
}

EXPORT ssize_t write(int fd, const void *bytes, size_t count) {
    ready();
    if (!active) return real_write(fd, bytes, count);
    off_t at = -1;
    uint32_t inode = before_write(fd, &at);
    struct iovec iov = {(void *)bytes, count};
    return written(fd, inode, at, &iov, 1, real_write(fd, bytes, count));
}

static ssize_t pwrite_any(int fd, const void *bytes, size_t count, off_t offset) {
    ready();
    if (!active) return real_pwrite(fd, bytes, count, offset);
    uint32_t inode = before_write(fd, &offset);
    struct iovec iov = {(void *)bytes, count};
    return written(fd, inode, offset, &iov, 1, real_pwrite(fd, bytes, count, offset));
}

EXPORT ssize_t pwrite(int fd, const void *bytes, size_t count, off_t offset) { return pwrite_any(fd, bytes, count, offset); }
EXPORT ssize_t pwrite64(int fd, const void *bytes, size_t count, off_t offset) { return pwrite_any(fd, bytes, count, offset); }

EXPORT ssize_t writev(int fd, const struct iovec *iov, int count) {
    ready();
    if (!active) return real_writev(fd, iov, count);
    off_t at = -1;
    uint32_t inode = before_write(fd, &at);
    return written(fd, inode, at, iov, count, real_writev(fd, iov, count));
}

static ssize_t pwritev_any(int fd, const struct iovec *iov, int count, off_t offset) {
    ready();
    if (!active) return real_pwritev(fd, iov, count, offset);
    uint32_t inode = before_write(fd, &offset);
    return written(fd, inode, offset, iov, count, real_pwritev(fd, iov, count, offset));
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) { return pwritev_any(fd, iov, count, offset); }
EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t offset) { return pwritev_any(fd, iov, count, offset); }

// MARK: Sizes

static int ftruncate_any(int fd, off_t size) {
    ready();
    if (!active) return real_ftruncate(fd, size);
    pthread_mutex_lock(&lock);
    int rc = real_ftruncate(fd, size);
    int saved = errno;
    uint32_t inode = file_inode(fd);
    if (rc == 0 && inode) log_truncate(inode, (uint64_t)size);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int ftruncate(int fd, off_t size) { return ftruncate_any(fd, size); }
EXPORT int ftruncate64(int fd, off_t size) { return ftruncate_any(fd, size); }

// fallocate that changes the size is an EXTEND; with FALLOC_FL_KEEP_SIZE it changes only which
// blocks are reserved, which a replay need not know. Punching holes or zeroing is not recorded.
static int fallocate_any(int fd, int mode, off_t offset, off_t length, int posix) {
    ready();
    if (!active) return posix ? real_posix_fallocate(fd, offset, length) : real_fallocate(fd, mode, offset, length);
    pthread_mutex_lock(&lock);
    uint32_t inode = file_inode(fd);
    if (inode && mode != 0 && mode != FALLOC_FL_KEEP_SIZE) die("fallocate mode %#x on a recorded file", mode);
    int rc = posix ? real_posix_fallocate(fd, offset, length) : real_fallocate(fd, mode, offset, length);
    int saved = errno;
    if (rc == 0 && inode && mode == 0) log_size(EXTEND, inode, (uint64_t)(offset + length));
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int fallocate(int fd, int mode, off_t offset, off_t length) { return fallocate_any(fd, mode, offset, length, 0); }
EXPORT int fallocate64(int fd, int mode, off_t offset, off_t length) { return fallocate_any(fd, mode, offset, length, 0); }
EXPORT int posix_fallocate(int fd, off_t offset, off_t length) { return fallocate_any(fd, 0, offset, length, 1); }
EXPORT int posix_fallocate64(int fd, off_t offset, off_t length) { return fallocate_any(fd, 0, offset, length, 1); }

// MARK: Syncs

// Logs a DIRECTORY_SYNC if `fd` (synced) is a directory under the root, the root, or the root's
// parent. A directory is named by where it is now (/proc/self/fd), not where it was opened: the
// sync makes its current entries durable. The root's parent is not under the root, so its
// descriptor is not marked DIRECTORY; any descriptor is checked with fstat.
static void log_directory_sync(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_nlink == 0) return;
    char link[64], at[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, at, sizeof at - 1);
    if (n < 0) return;
    at[n] = 0;
    const char *rel;
    size_t r = strlen(root);
    if (strcmp(at, root) == 0) rel = "";
    else if (strncmp(at, root, r) == 0 && at[r] == '/') rel = at + r + 1;
    else if (root_parent[0] && strcmp(at, root_parent) == 0) rel = "..";
    else return;
    log_path_record(DIRECTORY_SYNC, 0, rel);
}

// The lock is held across the sync, so that the SYNC record covers exactly the writes before it.
static int sync_any(int fd, int data_only) {
    ready();
    if (!active) return data_only ? real_fdatasync(fd) : real_fsync(fd);
    pthread_mutex_lock(&lock);
    int rc = data_only ? real_fdatasync(fd) : real_fsync(fd);
    int saved = errno;
    uint32_t inode = fd_inode(fd);
    if (rc == 0 && inode && inode != DIRECTORY) {
        struct record r = begin(SYNC);
        put32(&r, inode);
        append(r.bytes, r.count);
    } else if (rc == 0) {
        log_directory_sync(fd);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int fsync(int fd) { return sync_any(fd, 0); }
EXPORT int fdatasync(int fd) { return sync_any(fd, 1); }
// sync_file_range is no barrier (it neither waits for metadata nor flushes the disk's cache):
// it is not intercepted.

// MARK: Mappings' calls

EXPORT void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    ready();
    if (!active) return real_mmap(address, length, protection, flags, fd, offset);
    pthread_mutex_lock(&lock);
    if (flags & MAP_FIXED) {
        for (struct mapping *m = mappings; m; m = m->next)
            if (overlaps(m, address, length)) die("MAP_FIXED over a recorded mapping");
    }
    void *result = real_mmap(address, length, protection, flags, fd, offset);
    int saved = errno;
    int type = flags & MAP_TYPE;
    uint32_t inode = (flags & MAP_ANONYMOUS) ? 0 : file_inode(fd);
    if (result != MAP_FAILED && inode && (protection & PROT_WRITE) && (type == MAP_SHARED || type == MAP_SHARED_VALIDATE))
        add_mapping(result, length, inode, fd, offset);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return result;
}

EXPORT void *mmap64(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    return mmap(address, length, protection, flags, fd, offset);
}

// Changes not yet logged are logged (unsynced) before the mapping goes.
EXPORT int munmap(void *address, size_t length) {
    ready();
    if (!active) return real_munmap(address, length);
    pthread_mutex_lock(&lock);
    for (struct mapping **p = &mappings; *p;) {
        struct mapping *m = *p;
        if (!overlaps(m, address, length)) {
            p = &m->next;
            continue;
        }
        if ((char *)address > m->base || (char *)address + length < m->base + m->length)
            die("munmap of part of a recorded mapping");
        capture(m, m->base, m->base + m->length);
        *p = m->next;
        real_close(m->fd);
        free(m->copy);
        free(m);
    }
    int rc = real_munmap(address, length);
    int saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

// Changed pages in the range are logged first, then, once msync(MS_SYNC) returned, that the
// range is on disk. A store to the mapping by another thread between the two is flushed but
// logged only later, as unsynced: the replay is then more pessimistic than the disk, never less.
EXPORT int msync(void *address, size_t length, int flags) {
    ready();
    if (!active) return real_msync(address, length, flags);
    pthread_mutex_lock(&lock);
    char *from = address, *to = from + length;
    for (struct mapping *m = mappings; m; m = m->next)
        if (overlaps(m, address, length))
            capture(m, from > m->base ? from : m->base, to < m->base + m->length ? to : m->base + m->length);
    int rc = real_msync(address, length, flags);
    int saved = errno;
    if (rc == 0 && (flags & MS_SYNC)) {
        for (struct mapping *m = mappings; m; m = m->next) {
            if (!overlaps(m, address, length)) continue;
            char *start = from > m->base ? from : m->base, *end = to < m->base + m->length ? to : m->base + m->length;
            struct record r = begin(RANGE_SYNC);
            put32(&r, m->inode);
            put64(&r, (uint64_t)(m->offset + (start - m->base)));
            put64(&r, (uint64_t)(end - start));
            append(r.bytes, r.count);
        }
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

// MARK: Names

static int renamed(int from_dir, const char *from, int to_dir, const char *to, unsigned flags) {
    ready();
    char a[PATH_MAX], b[PATH_MAX];
    int from_tracked = tracked(from_dir, from, a), to_tracked = tracked(to_dir, to, b);
    if (!from_tracked && !to_tracked) return real_renameat2(from_dir, from, to_dir, to, flags);
    if (flags & RENAME_EXCHANGE) die("RENAME_EXCHANGE under the root is not recorded");
    pthread_mutex_lock(&lock);
    int rc = real_renameat2(from_dir, from, to_dir, to, flags);
    int saved = errno;
    // Renaming a name to itself changes nothing.
    if (rc == 0 && !(from_tracked && to_tracked && strcmp(a, b) == 0)) {
        if (from_tracked && to_tracked) {
            struct record r = begin(RENAME);
            finish(&r, a, strlen(a));
            append_bytes(b, strlen(b));
        } else if (from_tracked) {
            log_path_record(UNLINK, 0, a);
        }
        // The names `to` replaced go; those under `from` move (or leave the root).
        for (struct name **p = &names; *p;) {
            struct name *n = *p;
            size_t prefix = 0;
            if (to_tracked && under(n->path, b)) {
                *p = n->next;
                free(n->path);
                free(n);
                continue;
            }
            if (from_tracked && (prefix = under(n->path, a))) {
                char moved[2 * PATH_MAX];
                snprintf(moved, sizeof moved, "%s%s", b, n->path + prefix);
                free(n->path);
                if (!to_tracked) {
                    *p = n->next;
                    free(n);
                    continue;
                }
                if (!(n->path = strdup(moved))) die("out of memory");
            }
            p = &n->next;
        }
        if (to_tracked && !from_tracked) {
            struct stat st;
            if (fstatat(to_dir, to, &st, 0) == 0 && S_ISDIR(st.st_mode)) die("a directory moved in under the root: %s", b);
            log_path_record(UNKNOWN, new_name(b), b);
        }
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int rename(const char *from, const char *to) { return renamed(AT_FDCWD, from, AT_FDCWD, to, 0); }
EXPORT int renameat(int from_dir, const char *from, int to_dir, const char *to) { return renamed(from_dir, from, to_dir, to, 0); }
EXPORT int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned flags) {
    return renamed(from_dir, from, to_dir, to, flags);
}

static int unlinked(int dirfd, const char *path, int flags) {
    ready();
    char rel[PATH_MAX];
    if (!tracked(dirfd, path, rel)) return real_unlinkat(dirfd, path, flags);
    pthread_mutex_lock(&lock);
    int rc = real_unlinkat(dirfd, path, flags);
    int saved = errno;
    if (rc == 0) {
        log_path_record(UNLINK, 0, rel);
        forget_name(rel);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int unlink(const char *path) { return unlinked(AT_FDCWD, path, 0); }
EXPORT int unlinkat(int dirfd, const char *path, int flags) { return unlinked(dirfd, path, flags); }
EXPORT int rmdir(const char *path) { return unlinked(AT_FDCWD, path, AT_REMOVEDIR); }

static int made_directory(int dirfd, const char *path, mode_t mode) {
    ready();
    char rel[PATH_MAX];
    if (!tracked(dirfd, path, rel)) return real_mkdirat(dirfd, path, mode);
    pthread_mutex_lock(&lock);
    int rc = real_mkdirat(dirfd, path, mode);
    int saved = errno;
    if (rc == 0) log_path_record(MKDIR, 0, rel);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

EXPORT int mkdir(const char *path, mode_t mode) { return made_directory(AT_FDCWD, path, mode); }
EXPORT int mkdirat(int dirfd, const char *path, mode_t mode) { return made_directory(dirfd, path, mode); }
