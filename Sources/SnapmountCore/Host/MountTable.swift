/// One line of `/proc/self/mountinfo`.
public struct MountInfo: Sendable, Equatable {
    /// `major:minor` of the mounted device.
    public let device: String
    public let mountPoint: String
    public let type: String
    public let source: String
    /// The directory of the filesystem that is mounted here: `/` for a whole volume, the
    /// subdirectory for a bind mount of one.
    public let root: String

    public init(device: String, mountPoint: String, type: String, source: String, root: String = "/") {
        self.device = device
        self.mountPoint = mountPoint
        self.type = type
        self.source = source
        self.root = root
    }

    /// Parses mountinfo text (proc(5)); mount points are unescaped (`\040` → space).
    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 10, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { return nil }
            return MountInfo(device: fields[2], mountPoint: FstabEditor.unescape(fields[4]), type: fields[separator + 1],
                             source: fields[separator + 2], root: FstabEditor.unescape(fields[3]))
        }
    }
}

/// The mount options that are flags of mount(2): the one table of option names, the bits
/// `<sys/mount.h>` gives them, and the options that clear them.
public enum MountFlag: String, Sendable, CaseIterable {
    case ro, nosuid, nodev, noexec, sync, dirsync, noatime, nodiratime, relatime, strictatime, lazytime, mand

    /// `MS_RDONLY`, `MS_NOSUID`, …
    public var bit: UInt {
        switch self {
        case .ro: 1
        case .nosuid: 2
        case .nodev: 4
        case .noexec: 8
        case .sync: 16
        case .mand: 64
        case .dirsync: 128
        case .noatime: 1024
        case .nodiratime: 2048
        case .relatime: 1 << 21
        case .strictatime: 1 << 24
        case .lazytime: 1 << 25
        }
    }

    /// The option that turns the flag off again (`rw` after `ro`); none for the atime modes.
    public var clearedBy: String? {
        switch self {
        case .ro: "rw"
        case .nosuid: "suid"
        case .nodev: "dev"
        case .noexec: "exec"
        case .sync: "async"
        case .noatime: "atime"
        case .nodiratime: "diratime"
        case .mand: "nomand"
        case .dirsync, .relatime, .strictatime, .lazytime: nil
        }
    }
}

/// Mount options split into what mount(2) takes: flags and the filesystem's data string.
/// Options only fstab and systemd understand (`nofail`, `x-systemd.*`, `defaults`, …) are
/// left out: the kernel would reject them.
public struct KernelMountOptions: Sendable, Equatable {
    /// The flags to set, in the order given.
    public var flags: [MountFlag] = []
    /// The comma-separated data string for the filesystem.
    public var data: [String] = []

    static let fstabOnly: Set<String> = ["defaults", "nofail", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nobootwait"]

    public init(_ options: [String]) {
        for option in options {
            if Self.fstabOnly.contains(option) || option.hasPrefix("x-") || option.hasPrefix("comment=") { continue }
            if let flag = MountFlag(rawValue: option) {
                if !flags.contains(flag) { flags.append(flag) }
            } else if let cleared = MountFlag.allCases.first(where: { $0.clearedBy == option }) {
                flags.removeAll { $0 == cleared }
            } else {
                data.append(option)
            }
        }
    }

    /// The `mountflags` argument of mount(2).
    public var bits: UInt { flags.reduce(0) { $0 | $1.bit } }
}
