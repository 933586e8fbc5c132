/// A block device the kernel shows under `<sys>/block`, as a scan read it.
public struct BlockDevice: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    /// The NVMe controller serial (EBS: the volume id without its dash); `nil` for others.
    public let serial: String?
    public let sizeBytes: UInt64
    /// `major:minor`
    public let number: String
    /// Whether `<dev>/<name>` is a block device node.
    public let hasNode: Bool

    public init(name: String, serial: String?, sizeBytes: UInt64, number: String, hasNode: Bool = true) {
        self.name = name
        self.serial = serial
        self.sizeBytes = sizeBytes
        self.number = number
        self.hasNode = hasNode
    }

    public var isNVMe: Bool { name.hasPrefix("nvme") }

    /// `nvme1c1n1`: one controller's path to a namespace under native NVMe multipath. The
    /// kernel lists it in `/sys/block` with the controller's serial, but gives it no device
    /// node; the namespace is used through `nvme1n1`.
    public var isMultipathPath: Bool {
        guard name.hasPrefix("nvme") else { return false }
        var rest = Substring(name.dropFirst(4))
        for separator in ["c", "n"] {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, rest.dropFirst(digits.count).hasPrefix(separator) else { return false }
            rest = rest.dropFirst(digits.count + 1)
        }
        return !rest.isEmpty && rest.allSatisfy { $0.isASCII && $0.isNumber }
    }

    public var description: String {
        "\(name) (\(serial.map { "serial \($0), " } ?? "")\(sizeBytes / 1_048_576) MiB)"
    }
}

/// A block device proven to be a given EBS volume (DESIGN.md §4): only
/// ``DeviceIdentification`` makes one, so nothing else can reach mkfs, fsck or mount.
public struct ProvenDevice: Sendable, Equatable, CustomStringConvertible {
    public enum Evidence: Sendable, Equatable {
        /// The NVMe controller serial is the volume id.
        case nvmeSerial
        /// A Xen instance: the attachment's name (or its `xvd` form) at the volume's size.
        case xenName
    }

    public let volume: VolumeID
    /// `<dev>/nvme1n1`
    public let path: String
    public let device: BlockDevice
    public let evidence: Evidence

    public var description: String { path }
}

/// Which block device is a volume. Pure: it sees a scan, not the machine.
public enum DeviceIdentification {
    /// Whether this is an instance without EBS NVMe — Xen — where the attachment's name is
    /// all that tells a volume's disk. Only when the hypervisor says so (`/sys/hypervisor/type`
    /// is `xen`) and no disk carries an EBS serial: on a Nitro instance every EBS volume,
    /// the root one included, is NVMe with its volume id as serial.
    public static func namesIdentify(hypervisor: String?, among devices: [BlockDevice]) -> Bool {
        hypervisor == "xen" && !devices.contains { $0.serial?.hasPrefix("vol") == true }
    }

    /// The device that is `volume`: the one whose NVMe serial is the volume id; else, only
    /// on a Xen instance (`byName`) and for non-NVMe devices only, the attachment's name or
    /// its `xvd` form. In both cases only at exactly the volume's size, and only with a
    /// device node; multipath paths never.
    public static func identify(_ volume: VolumeID, sizeGiB: Int, attachedAs name: String, byName: Bool, devDirectory: String,
                                among devices: [BlockDevice]) -> ProvenDevice? {
        guard sizeGiB > 0 else { return nil }
        let size = UInt64(sizeGiB) << 30
        let usable = devices.filter { $0.hasNode && !$0.isMultipathPath && $0.sizeBytes == size }
        if let nvme = usable.first(where: { $0.serial == volume.nvmeSerial }) {
            return ProvenDevice(volume: volume, path: "\(devDirectory)/\(nvme.name)", device: nvme, evidence: .nvmeSerial)
        }
        guard byName else { return nil }
        for candidate in xenNames(name) {
            if let device = usable.first(where: { $0.name == candidate && !$0.isNVMe }) {
                return ProvenDevice(volume: volume, path: "\(devDirectory)/\(device.name)", device: device, evidence: .xenName)
            }
        }
        return nil
    }

    /// `/dev/sdf` → `sdf`, `xvdf`; `/dev/xvdg` → `xvdg`.
    public static func xenNames(_ attachmentName: String) -> [String] {
        let base = attachmentName.split(separator: "/").last.map(String.init) ?? attachmentName
        return base.hasPrefix("sd") ? [base, "xvd" + base.dropFirst(2)] : [base]
    }
}

/// What libblkid finds on a device.
public enum DeviceContent: Sendable, Equatable, CustomStringConvertible {
    /// No signature of any kind.
    case blank
    /// A filesystem, with its label if it has one.
    case filesystem(type: String, label: String?)
    /// Anything else: a partition table, RAID member, LUKS, swap, or several signatures.
    case other(String)

    public var description: String {
        switch self {
        case .blank: "no signature (blank)"
        case .filesystem(let type, let label): "\(type) filesystem" + (label.map { " labelled \($0.quotedForMessage())" } ?? " without a label")
        case .other(let what): what
        }
    }
}

/// What to do with the volume's device (DESIGN.md §5 rule 1).
public enum FilesystemAction: Sendable, Equatable, CustomStringConvertible {
    /// The expected filesystem with the expected label: check it, then mount it.
    case check(Filesystem)
    /// No signature at all and zeros at both ends: a volume from a blank snapshot.
    case format(Filesystem)
    /// Anything else is data snapmount did not put there.
    case refuse(found: String)

    public var description: String {
        switch self {
        case .check(let filesystem): "check the \(filesystem) filesystem"
        case .format(let filesystem): "format it \(filesystem)"
        case .refuse(let found): "refuse: it holds \(found)"
        }
    }
}

public enum FilesystemDecision {
    /// fsck a filesystem of the expected type and label, mkfs a device with no signature
    /// and zeros at both ends, refuse anything else — a label or type mismatch included.
    /// `zeroedAtBothEnds` is asked only for a device without a signature.
    ///
    /// `formatInterrupted`: snapmount's own marker says a mkfs it started on this volume never
    /// finished (the device was proven blank before it began): whatever that mkfs left is
    /// formatted again, never refused forever.
    public static func decide<E: Error>(_ content: DeviceContent, expected filesystem: Filesystem, label: FilesystemLabel,
                                        formatInterrupted: Bool = false,
                                        zeroedAtBothEnds: () throws(E) -> Bool) throws(E) -> FilesystemAction {
        if formatInterrupted { return .format(filesystem) }
        switch content {
        case .filesystem(let type, let found) where type == filesystem.rawValue && found == label.text:
            return .check(filesystem)
        case .blank:
            return try zeroedAtBothEnds() ? .format(filesystem) : .refuse(found: "data without any known signature (not zeros)")
        case let other:
            return .refuse(found: other.description)
        }
    }
}

/// What fsck's exit status means (fsck(8): a sum of bits).
public enum FsckOutcome: Sendable, Equatable {
    case clean
    case corrected
    /// Errors corrected; fsck advises a reboot (a mounted root — never our unmounted volume).
    case correctedRebootAdvised
    /// 4: errors left uncorrected. The filesystem holds damage snapmount will not mount or
    /// repair by force: a refusal, the device untouched.
    case uncorrected
    /// 8 (operational error: the device busy, unreadable) or 32 (fsck cancelled): fsck did not
    /// finish its check, so nothing is known about the filesystem; another run may.
    case notChecked
    /// 16 (usage or syntax error) or 128 (shared-library error): fsck could not run as asked.
    case fsckBroken

    public init(status: Int32) {
        if status & (16 | 128) != 0 {
            self = .fsckBroken
        } else if status & (8 | 32) != 0 {
            self = .notChecked
        } else if status & 4 != 0 {
            self = .uncorrected
        } else if status & 2 != 0 {
            self = .correctedRebootAdvised
        } else if status & 1 != 0 {
            self = .corrected
        } else {
            self = .clean
        }
    }
}

/// What is mounted at the mount point now, read from the mount table.
public enum MountPointState: Sendable, Equatable {
    case notMounted
    /// The release volume: an EBS device with the expected label.
    case release(device: String)
    /// Something else; never mounted over.
    case other(source: String)
}

public enum MountPointCheck {
    /// Whether `entry` (the mount point's last mount, if any) is the release: its device is
    /// an EBS volume (an NVMe serial `vol…`, or a Xen `xvd`/`sd` disk) and holds a filesystem
    /// with the expected label. `content` is the probe of that device, when it could be probed.
    public static func evaluate(_ entry: MountInfo?, device: BlockDevice?, devDirectory: String, content: DeviceContent?,
                                label: FilesystemLabel) -> MountPointState {
        guard let entry else { return .notMounted }
        guard let device else { return .other(source: entry.source) }
        let isEBS = (device.serial?.hasPrefix("vol") ?? false) || device.name.hasPrefix("xvd") || device.name.hasPrefix("sd")
        if isEBS, case .filesystem(_, let found)? = content, found == label.text {
            return .release(device: "\(devDirectory)/\(device.name)")
        }
        return .other(source: entry.source)
    }
}
