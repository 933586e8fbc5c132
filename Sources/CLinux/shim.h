// Linux and glibc calls that Swift's Glibc module leaves out: GNU extensions (declared here,
// as glibc declares them, because the module is built without _GNU_SOURCE), variadic calls,
// and the one signal handler, behind typed static inline wrappers.
#ifndef CLINUX_SHIM_H
#define CLINUX_SHIM_H

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/ioctl.h>

extern int pipe2(int pipefd[2], int flags);
extern int prctl(int option, ...);
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
extern int syncfs(int fd);

/// pipe2(2): a pipe whose two ends have the given flags (O_CLOEXEC) from the start.
static inline int clinux_pipe2(int *_Nonnull fds, int flags) {
    return pipe2(fds, flags);
}

/// syncfs(2): everything written to the filesystem that holds `fd` is on its device.
static inline int clinux_syncfs(int fd) {
    return syncfs(fd);
}

/// prctl(PR_SET_DUMPABLE, 0): no core dump, no ptrace by other users — the process holds
/// credentials.
static inline int clinux_forbid_core_dumps(void) {
    return prctl(4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0);
}

/// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34): the child starts with no
/// descriptor at or above `from`.
static inline int clinux_spawn_close_from(posix_spawn_file_actions_t *_Nonnull actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

/// The signal that asked the process to stop (SIGTERM, SIGINT), 0 until one did.
static volatile sig_atomic_t clinux_stop_signal = 0;

static void clinux_record_stop(int signal) {
    clinux_stop_signal = signal;
}

/// SIGTERM and SIGINT only record that a stop was asked for; the agent stops at its next
/// safe point. They are unblocked in the calling thread too: a parent may have started
/// the agent with them blocked. The corresponding C functions are sigaction and
/// pthread_sigmask.
static inline int clinux_catch_stop_signals(void) {
    struct sigaction action;
    sigset_t stops;
    memset(&action, 0, sizeof action);
    action.sa_handler = clinux_record_stop;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGTERM, &action, NULL) != 0) return -1;
    if (sigaction(SIGINT, &action, NULL) != 0) return -1;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    return pthread_sigmask(SIG_UNBLOCK, &stops, NULL) == 0 ? 0 : -1;
}

/// posix_spawnattr_setpgroup: the child leads a process group of its own, so that
/// stopping it reaches whatever it started too.
static inline int clinux_spawnattr_own_group(posix_spawnattr_t *_Nonnull attributes) {
    short flags = 0;
    if (posix_spawnattr_getflags(attributes, &flags) != 0) return -1;
    if (posix_spawnattr_setpgroup(attributes, 0) != 0) return -1;
    return posix_spawnattr_setflags(attributes, flags | POSIX_SPAWN_SETPGROUP);
}

static inline int clinux_stop_requested(void) {
    return clinux_stop_signal;
}

/// A child starts with the default dispositions for SIGTERM and SIGINT and nothing blocked.
static inline int clinux_spawnattr_default_signals(posix_spawnattr_t *_Nonnull attributes) {
    sigset_t defaults;
    sigset_t none;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigemptyset(&none);
    if (posix_spawnattr_setsigdefault(attributes, &defaults) != 0) return -1;
    if (posix_spawnattr_setsigmask(attributes, &none) != 0) return -1;
    return posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

/// FIFREEZE and FITHAW (linux/fs.h, whose mount flags clash with glibc's): suspend writes
/// to the filesystem mounted at the directory `fd` is open on, and let them go again.
static inline int clinux_freeze(int fd) {
    return ioctl(fd, _IOWR('X', 119, int), 0);
}

static inline int clinux_thaw(int fd) {
    return ioctl(fd, _IOWR('X', 120, int), 0);
}

#endif
