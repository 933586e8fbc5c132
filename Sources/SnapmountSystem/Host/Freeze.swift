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
    /// What weakens the guard of the freeze just made, if anything (said once, as a warning).
    func guardWarning(_ mountPoint: String) -> String?
}

extension FilesystemFreezer {
    public func guardWarning(_ mountPoint: String) -> String? { nil }
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

    public func guardWarning(_ mountPoint: String) -> String? {
        lock.withLock { $0[mountPoint]?.escapeProblem }.map {
            "the thaw guard could not leave this process's cgroup (\($0)): a kill of the whole cgroup (systemd's stop, an OOM group kill) would leave \(mountPoint) frozen until fsfreeze --unfreeze"
        }
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
/// No single kill takes both: the child ignores SIGTERM, SIGINT, SIGHUP and SIGPIPE, has its
/// own process group, and leaves this process's cgroup for the root of the hierarchies that
/// systemd kills by (the unified one, `name=systemd`), so that a unit's stop or an OOM group
/// kill ends publish but not its guard.
public final class ThawGuard: @unchecked Sendable {  // used by one owner at a time (SystemFreezer hands it over under its lock)
    private var writeFD: Int32
    private let pid: pid_t

    static let script = #"trap '' TERM INT HUP PIPE; read -r line; [ "$line" = thawed ] || exec fsfreeze --unfreeze "$1" 2>/dev/null"#

    /// Why the guard is still in this process's cgroup, if it is.
    public private(set) var escapeProblem: String?

    public init(mountPoint: String) throws(SystemCallError) {
        // A guard that dies first must not kill this process with SIGPIPE: EPIPE is answer enough.
        signal(SIGPIPE, SIG_IGN)
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
        escapeProblem = leaveKillingCgroups(pid)
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

/// Moves `pid` out of this process's cgroup into the root of each hierarchy a service
/// manager kills a unit by: the unified (v2) one and v1's `name=systemd`. Returns what went
/// wrong, or `nil` (also when this process is at the root already). The corresponding
/// files are `/proc/self/cgroup` and `<hierarchy>/cgroup.procs`.
func leaveKillingCgroups(_ pid: pid_t, cgroupRoot: String = "/sys/fs/cgroup") -> String? {
    guard let bytes = try? readFile("/proc/self/cgroup", limit: 64 * 1024) else { return nil }
    var problems: [String] = []
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
        let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[2] != "/" else { continue }
        let candidates: [String]
        switch (fields[0], fields[1]) {
        case ("0", ""): candidates = [cgroupRoot, cgroupRoot + "/unified"]
        case (_, "name=systemd"): candidates = [cgroupRoot + "/systemd"]
        default: continue
        }
        guard let root = candidates.first(where: { fileExists($0 + "/cgroup.procs") }) else { continue }
        do throws(SystemCallError) {
            let fd = try systemCall("open", root + "/cgroup.procs") { open(root + "/cgroup.procs", O_WRONLY | O_CLOEXEC) }
            defer { close(fd) }
            try writeAll(fd, Array("\(pid)\n".utf8), subject: root + "/cgroup.procs")
        } catch {
            problems.append("\(error)")
        }
    }
    return problems.isEmpty ? nil : problems.joined(separator: "; ")
}
