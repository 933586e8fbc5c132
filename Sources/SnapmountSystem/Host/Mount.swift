#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

public enum MountError: SnapmountError, Equatable {
    case failed(device: String, mountPoint: String, errno: Int32)
    case mkdir(SystemCallError)

    public var exitStatus: ExitStatus { .internalError }

    public var description: String {
        switch self {
        case .failed(let device, let mountPoint, let code):
            "mount \(device) on \(mountPoint) failed: \(String(cString: strerror(code)))"
        case .mkdir(let error):
            "cannot create the mount point: \(error)"
        }
    }
}

/// mount(2) and the mount table, behind a protocol: the kernel's in the product, a table in
/// tests.
public protocol Mounter: Sendable {
    func mounts() -> [MountInfo]
    func mount(device: String, on mountPoint: String, type: String, options: [String]) throws(MountError)
}

public struct SystemMounter: Mounter {
    public init() {}

    public func mounts() -> [MountInfo] {
        MountInfo.parse(readText("/proc/self/mountinfo", limit: 4 << 20) ?? "")
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
