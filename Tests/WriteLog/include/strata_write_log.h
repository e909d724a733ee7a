// The log libStrataWriteLog.so writes (Tests/WriteLog/write_log.c): every change a
// process makes to the files under one directory, in the order it makes them, so that a test can
// rebuild what a power cut at any moment could have left there
// (Tests/StrataStoreTests/PowerLossTests.swift). Nothing includes this header: SwiftPM wants an
// include directory, and this is where the format is written down.
//
// Load the library with LD_PRELOAD and set both of:
//   STRATA_WRITE_LOG=/path/log        the log, created or emptied (never itself recorded)
//   STRATA_WRITE_LOG_ROOT=/dir        only files under this directory are recorded
// Without them the library only passes calls on. It takes both out of the environment once read,
// so that programs the process starts do not empty the log.
//
// A log is a sequence of records: a type byte, then the record's fields, little-endian.
//   inode   u32: the recorder's own number for a file, given when the file is created (or first
//           met). A name keeps its inode until it is unlinked or renamed over; a rename moves it;
//           a descriptor keeps its inode whatever happens to the name. Inode 0 is not used.
//   bytes   u32 count, then that many bytes. A path is bytes: relative to the root, "" for the
//           root itself.
//
//    1 CREATE         inode, path            open(O_CREAT) made a new, empty file
//    2 OPEN_EXISTING  inode, path            a file the log knows was opened again (a cross-check)
//    3 WRITE          inode, u64 offset, bytes   write, pwrite, writev, pwritev
//    4 TRUNCATE       inode, u64 size        ftruncate, open(O_TRUNC)
//    5 EXTEND         inode, u64 size        fallocate: the size becomes at least this
//    6 SYNC           inode                  fsync or fdatasync of a file returned
//    7 RANGE_SYNC     inode, u64 offset, u64 length   msync(MS_SYNC) returned for that part
//    8 RENAME         path from, path to     a file or directory
//    9 UNLINK         path                   unlink, or rmdir of an empty directory
//   10 MKDIR          path
//   11 MARK           bytes                  what the process wrote to its stdout (fd 1)
//   12 UNKNOWN        inode, path            a file that was there before recording, or moved in
//                                            from outside the root: its contents are not known
//   13 PAGE           inode, u64 offset, bytes   a page (4 KiB, or less at the end of the file)
//                                            changed through a shared writable mapping, found by
//                                            comparing the mapping with a copy at msync, munmap
//                                            and exit: the change happened at some time since
//                                            the page was last compared
//   14 DIRECTORY_SYNC path                   fsync or fdatasync of a directory returned: of
//                                            `path` under the root ("" the root itself), or
//                                            ".." for the root's parent (which makes the root's
//                                            own name durable). Other directories are not logged.
//                                            Until its directory is synced, a name made (CREATE,
//                                            MKDIR, a RENAME's target) or removed (UNLINK, a
//                                            RENAME's source) there may not survive a power cut.
//
// Not seen, so not to be used under the root: truncate(2) by path, link, symlink, mremap,
// mprotect adding PROT_WRITE, copy_file_range, sendfile, splice, io_uring, aio, sync, syncfs,
// and calls glibc makes internally (fopen'd streams).
