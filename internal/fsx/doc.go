// Package fsx holds bgd's two file-system primitives, shared by the state
// file (package state) and the files the load balancer drivers rewrite
// (lb/nginx's include file, lb/haproxy's map file):
//
//   - WriteFileAtomic replaces a file so that a reader sees the old content
//     or the new, never a mix. It writes a temp file in the same directory,
//     fsyncs it, renames it over the path and fsyncs the directory. rename(2)
//     is atomic on POSIX file systems: the directory entry switches from the
//     old inode to the new one in one step, and a reader that opened the
//     old file keeps reading the old inode. Being in the same directory
//     keeps the rename on one file system (across file systems it would
//     fail, never copy). The temp file is created with
//     O_CREAT|O_EXCL|O_NOFOLLOW, so a name planted in the directory (a
//     symlink to /etc/shadow) is never opened, let alone written through.
//
//   - Flock takes an exclusive flock(2) on an open file. The lock belongs to
//     the open file description: the kernel releases it when the last
//     descriptor closes, so a holder that dies (even by SIGKILL) never
//     leaves it taken. It is advisory: it excludes only the processes that
//     take it too (every bgd), and it is not a lock on the name: a file
//     replaced by rename is a new inode with a lock of its own, which is why
//     callers lock a separate lock file or the directory, never the file
//     they replace.
//
// What may be at a path (a symlink, a FIFO, a device) and how to word the
// refusal is the caller's business: package state checks its paths before
// it calls these.
package fsx
