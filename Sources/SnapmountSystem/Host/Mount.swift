#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

public enum MountError: SnapmountError, Equatable {
    case failed(device: String, mountPoint: String, errno: Int32)
    case unmountFailed(mountPoint: String, errno: Int32)
    case mkdir(SystemCallError)
    /// The mount table could not be read: "nothing mounted" would be a guess.
    case table(SystemCallError)

    public var exitStatus: ExitStatus { .internalError }

    public var description: String {
        switch self {
        case .failed(let device, let mountPoint, let code):
            "mount \(device) on \(mountPoint) failed: \(String(cString: strerror(code)))"
        case .unmountFailed(let mountPoint, let code):
            "umount \(mountPoint) failed: \(String(cString: strerror(code)))" + (code == EBUSY ? " (something on this machine is using it)" : "")
        case .mkdir(let error):
            "cannot create the mount point: \(error)"
        case .table(let error):
            "cannot read the mount table: \(error)"
        }
    }
}

/// mount(2) and the mount table, behind a protocol: the kernel's in the product, a table in
/// tests.
public protocol Mounter: Sendable {
    /// What is mounted; mount points are as the kernel shows them (symbolic links resolved).
    func mounts() throws(MountError) -> [MountInfo]
    func mount(device: String, on mountPoint: String, type: String, options: [String]) throws(MountError)
    /// Unmounts what is mounted at `mountPoint` (as the kernel shows it).
    func unmount(_ mountPoint: String) throws(MountError)
}

public struct SystemMounter: Mounter {
    public let mountInfoPath: String

    public init(mountInfoPath: String = "/proc/self/mountinfo") {
        self.mountInfoPath = mountInfoPath
    }

    public func mounts() throws(MountError) -> [MountInfo] {
        do {
            return MountInfo.parse(String(decoding: try readFile(mountInfoPath, limit: 16 << 20), as: UTF8.self))
        } catch {
            throw .table(error)
        }
    }

    /// The corresponding C function is `umount2`.
    public func unmount(_ mountPoint: String) throws(MountError) {
        do {
            try systemCall("umount2", mountPoint) { umount2(mountPoint, 0) }
        } catch {
            throw .unmountFailed(mountPoint: mountPoint, errno: error.errno)
        }
    }

    /// Creates the mount point and mounts; options only fstab understands are left out.
    /// The corresponding C function is `mount`.
    public func mount(device: String, on mountPoint: String, type: String, options: [String]) throws(MountError) {
        do { try makeDirectories(mountPoint, mode: 0o755) } catch { throw .mkdir(error) }
        let kernel = KernelMountOptions(options)
        let data = kernel.data.joined(separator: ",")
        do {
            try systemCall("mount", mountPoint) {
                data.isEmpty
                    ? Glibc.mount(device, mountPoint, type, kernel.bits, nil)
                    : data.withCString { Glibc.mount(device, mountPoint, type, kernel.bits, $0) }
            }
        } catch {
            throw .failed(device: device, mountPoint: mountPoint, errno: error.errno)
        }
    }
}
