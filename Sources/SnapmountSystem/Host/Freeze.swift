#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CLinux
import SnapmountCore
import Synchronization

/// Suspends writes to a mounted filesystem while its volume is snapshotted, behind a
/// protocol: the kernel's FIFREEZE in the product, a recorder in tests.
public protocol FilesystemFreezer: Sendable {
    /// `sync`, then freeze: from here on every write to the filesystem waits.
    func freeze(_ mountPoint: String) throws(SystemCallError)
    /// Lets the writes go again; a filesystem that is not frozen is left as it is.
    func thaw(_ mountPoint: String) throws(SystemCallError)
    /// Whether a freeze could be made, without making it (the dry run).
    func check(_ mountPoint: String) throws(SystemCallError)
}

/// The kernel's freeze, as `fsfreeze(8)` does it. Needs CAP_SYS_ADMIN. The corresponding C
/// calls are `sync` and `ioctl(FIFREEZE)` / `ioctl(FITHAW)` on the mount point. Each freeze
/// has a ``ThawGuard``: if this process dies while the filesystem is frozen, it is thawed anyway.
public final class SystemFreezer: FilesystemFreezer, @unchecked Sendable {
    private let lock = Mutex<[String: ThawGuard]>([:])

    public init() {}

    public func freeze(_ mountPoint: String) throws(SystemCallError) {
        let fd = try systemCall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        // Freezing flushes too, but a sync first keeps the frozen window short.
        sync()
        // The guard first: spawned while nothing is frozen yet.
        let thawGuard = try ThawGuard(mountPoint: mountPoint)
        do throws(SystemCallError) {
            try systemCall("ioctl FIFREEZE", mountPoint) { clinux_freeze(fd) }
        } catch {
            thawGuard.release()  // not frozen by us: nothing for the guard to thaw
            throw error
        }
        lock.withLock { $0[mountPoint] = thawGuard }
    }

    /// Root (CAP_SYS_ADMIN, which FIFREEZE needs) and a directory to open.
    public func check(_ mountPoint: String) throws(SystemCallError) {
        let fd = try systemCall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        close(fd)
        guard geteuid() == 0 else { throw SystemCallError("ioctl FIFREEZE", mountPoint, errno: EPERM) }
    }

    public func thaw(_ mountPoint: String) throws(SystemCallError) {
        let fd = try systemCall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        do throws(SystemCallError) {
            try systemCall("ioctl FITHAW", mountPoint) { clinux_thaw(fd) }
        } catch {
            guard error.errno == EINVAL else { throw error }  // EINVAL: not frozen
        }
        // Thawed here: the guard goes without touching the filesystem.
        lock.withLock { $0.removeValue(forKey: mountPoint) }?.release()
    }
}

/// Thaws a frozen filesystem if the process that froze it dies first — SIGKILL, a crash, the
/// OOM killer —, when no code of that process can run. A child `sh` reads a pipe whose
/// other end only this process holds (close-on-exec): the word `thawed` means the process
/// thawed the filesystem itself, and the child ends; end of file without it means the process
/// is gone (the kernel closed its descriptors), and the child runs `fsfreeze --unfreeze`.
public final class ThawGuard: @unchecked Sendable {  // used by one owner at a time (SystemFreezer hands it over under its lock)
    private var writeFD: Int32
    private let pid: pid_t

    static let script = #"read -r line; [ "$line" = thawed ] || exec fsfreeze --unfreeze "$1" 2>/dev/null"#

    public init(mountPoint: String) throws(SystemCallError) {
        var fds: [Int32] = [0, 0]
        try systemCall("pipe2", "thaw guard") { clinux_pipe2(&fds, O_CLOEXEC) }
        let (pid, spawned) = spawnChild("/bin/sh", ["-c", Self.script, "snapmount-thaw-guard", mountPoint], input: fds[0], output: nil)
        close(fds[0])
        guard spawned == 0 else {
            close(fds[1])
            throw SystemCallError("posix_spawn", "thaw guard /bin/sh", errno: spawned)
        }
        self.pid = pid
        writeFD = fds[1]
    }

    /// The process thawed the filesystem itself: the guard ends without touching it.
    public func release() { end(saying: "thawed\n") }

    /// What the kernel does when this process dies: the pipe closes without `thawed`, and
    /// the guard thaws the filesystem. (Tests call it; the product never needs to.)
    public func abandon() { end(saying: nil) }

    private func end(saying word: String?) {
        guard writeFD >= 0 else { return }
        if let word { try? writeAll(writeFD, Array(word.utf8), subject: "thaw guard") }
        close(writeFD)
        writeFD = -1
        var status: Int32 = 0
        _ = try? systemCall("waitpid", "thaw guard") { waitpid(pid, &status, 0) }
    }

    deinit { abandon() }
}
