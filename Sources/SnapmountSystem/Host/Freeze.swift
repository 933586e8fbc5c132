#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CLinux
import SnapmountCore

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
/// calls are `sync` and `ioctl(FIFREEZE)` / `ioctl(FITHAW)` on the mount point.
public struct SystemFreezer: FilesystemFreezer {
    public init() {}

    public func freeze(_ mountPoint: String) throws(SystemCallError) {
        let fd = try systemCall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        // Freezing flushes too, but a sync first keeps the frozen window short.
        sync()
        try systemCall("ioctl FIFREEZE", mountPoint) { clinux_freeze(fd) }
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
    }
}
