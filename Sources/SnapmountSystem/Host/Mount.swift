#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// One line of `/proc/self/mountinfo`.
public struct MountInfo: Sendable, Equatable {
    /// `major:minor` of the mounted device.
    public let device: String
    public let mountPoint: String
    public let type: String
    public let source: String

    /// Parses mountinfo text (proc(5)); mount points are unescaped (`\040` → space).
    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { return nil }
            return MountInfo(device: fields[2], mountPoint: FstabEditor.unescape(fields[4]), type: fields[separator + 1], source: fields[separator + 2])
        }
    }
}

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

/// mount(2) and the mount table, behind a protocol for the dry run and tests.
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
        var flags: UInt = 0
        let table: [String: UInt] = [
            "ro": UInt(MS_RDONLY), "nosuid": UInt(MS_NOSUID), "nodev": UInt(MS_NODEV), "noexec": UInt(MS_NOEXEC),
            "sync": UInt(MS_SYNCHRONOUS), "dirsync": UInt(MS_DIRSYNC), "noatime": UInt(MS_NOATIME),
            "nodiratime": UInt(MS_NODIRATIME), "relatime": UInt(MS_RELATIME), "strictatime": UInt(MS_STRICTATIME),
            "lazytime": UInt(1 << 25), "mand": UInt(MS_MANDLOCK),
        ]
        for flag in kernel.flags { flags |= table[flag] ?? 0 }
        let data = kernel.data.joined(separator: ",")
        let result = data.isEmpty
            ? Glibc.mount(device, mountPoint, type, flags, nil)
            : data.withCString { Glibc.mount(device, mountPoint, type, flags, $0) }
        guard result == 0 else { throw .failed(device: device, mountPoint: mountPoint, errno: errno) }
    }
}

/// `major:minor` of a device node. The corresponding C function is `stat`.
public func deviceNumber(_ path: String) -> String? {
    var status = stat()
    guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFBLK else { return nil }
    // glibc's major() and minor() are macros; this is their definition for a 64-bit dev_t.
    let rdev = UInt64(status.st_rdev)
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)
    return "\(major):\(minor)"
}
