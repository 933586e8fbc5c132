// Linux and glibc calls that Swift's Glibc module leaves out: GNU extensions (declared here,
// as glibc declares them, because the module is built without _GNU_SOURCE) and variadic
// calls, behind typed static inline wrappers.
#ifndef CLINUX_SHIM_H
#define CLINUX_SHIM_H

#include <spawn.h>

extern int pipe2(int pipefd[2], int flags);

/// pipe2(2): a pipe whose two ends have the given flags (O_CLOEXEC) from the start.
static inline int clinux_pipe2(int *_Nonnull fds, int flags) {
    return pipe2(fds, flags);
}

#endif
