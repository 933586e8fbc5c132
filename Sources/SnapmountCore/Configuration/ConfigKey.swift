/// Every configuration key of DESIGN.md §3. Each is a line `key = value` in
/// `/etc/snapmount.conf`, a long option `--key value`, and an environment variable
/// `SNAPMOUNT_KEY`.
public enum ConfigKey: String, CaseIterable, Sendable, Comparable, CustomStringConvertible {
    case source
    case mountPoint = "mount-point"
    case label
    case filesystem
    case device
    case volumeType = "volume-type"
    case volumeSize = "volume-size"
    case iops
    case throughput
    case encrypted
    case kmsKeyID = "kms-key-id"
    case tags
    case initializationRate = "initialization-rate"
    case deviceTimeout = "device-timeout"
    case runTimeout = "run-timeout"
    case snapshotOwner = "snapshot-owner"
    case fstab
    case mountOptions = "mount-options"
    case activate
    case activateTimeout = "activate-timeout"
    case healthCheck = "health-check"
    case healthTimeout = "health-timeout"

    public var description: String { rawValue }

    /// `--mount-point`
    public var optionName: String { "--" + rawValue }

    /// `SNAPMOUNT_MOUNT_POINT`
    public var environmentVariable: String {
        "SNAPMOUNT_" + String(rawValue.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    /// The value used when no option, variable or file line sets the key.
    public var defaultValue: String? {
        switch self {
        case .mountPoint: "/release"
        case .label: "code_release"
        case .filesystem: "ext4"
        case .device: "/dev/sdf"
        case .volumeType: "gp3"
        case .deviceTimeout: "50s"
        case .runTimeout: "5m"
        case .fstab: "/etc/fstab"
        case .mountOptions: "defaults,nofail"
        case .snapshotOwner: "self"
        case .activateTimeout: "5m"
        case .healthTimeout: "60s"
        case .activate, .healthCheck,
             .source, .volumeSize, .iops, .throughput, .encrypted, .kmsKeyID, .tags, .initializationRate: nil
        }
    }

    /// What kind of value the key takes, for help texts and error messages.
    public var valueName: String {
        switch self {
        case .source: "source"
        case .mountPoint, .fstab: "path"
        case .label: "label"
        case .filesystem: "ext4|xfs"
        case .device: "device"
        case .volumeType: "type"
        case .volumeSize: "GiB"
        case .iops: "iops"
        case .throughput, .initializationRate: "MiB/s"
        case .encrypted: "bool"
        case .kmsKeyID: "key"
        case .tags: "Key=Value,..."
        case .deviceTimeout, .runTimeout, .activateTimeout, .healthTimeout: "duration"
        case .activate: "command"
        case .healthCheck: "url|command"
        case .snapshotOwner: "self|account-id|any"
        case .mountOptions: "options"
        }
    }

    /// One line for `--help` and the man page.
    public var summary: String {
        switch self {
        case .source: "Where the snapshot id comes from: an http:// or https:// URL, ssm:/NAME or tag:KEY=VALUE (required)."
        case .mountPoint: "Where to mount the release (default /release)."
        case .label: "Filesystem label set by mkfs and expected by fsck and mount (default code_release)."
        case .filesystem: "Filesystem to create on a blank volume: ext4 or xfs (default ext4)."
        case .device: "Device name passed to AttachVolume, /dev/sd[b-z] or /dev/xvd[b-z] (default /dev/sdf)."
        case .volumeType: "EBS volume type: gp3, gp2, io1, io2, st1, sc1 or standard (default gp3)."
        case .volumeSize: "Volume size in GiB (default: the snapshot's size)."
        case .iops: "Provisioned IOPS, for gp3, io1 and io2."
        case .throughput: "Throughput in MiB/s, for gp3."
        case .encrypted: "Create the volume encrypted: true or false (default: the snapshot's setting)."
        case .kmsKeyID: "KMS key for an encrypted volume (needs encrypted = true)."
        case .tags: "Extra volume tags, Key=Value,Key2=Value2."
        case .initializationRate: "Fetch the snapshot's blocks at this rate, 100-300 MiB/s, rather than lazily on first read."
        case .deviceTimeout: "How long to wait for the block device, e.g. 50s or 2m (default 50s)."
        case .runTimeout: "How long the whole run may take, every wait and retry included (default 5m)."
        case .snapshotOwner: "Whose snapshots to accept: self (default), a 12-digit account id, or any (said explicitly)."
        case .fstab: "The fstab file to edit (default /etc/fstab)."
        case .mountOptions: "Options for the fstab entry and the mount (default defaults,nofail)."
        case .activate: "What a new release needs to take effect, run after every switch, e.g. systemctl restart app.service (words, as a shell splits them; no shell)."
        case .activateTimeout: "How long activate may run (default 5m)."
        case .healthCheck: "How to tell the release serves: an http:// or https:// URL that answers 2xx, or a command that exits 0; tried until health-timeout."
        case .healthTimeout: "How long the health check may take to pass after activation (default 60s)."
        }
    }

    public static func < (lhs: ConfigKey, rhs: ConfigKey) -> Bool {
        guard let l = allCases.firstIndex(of: lhs), let r = allCases.firstIndex(of: rhs) else { return false }
        return l < r
    }

    /// Environment variables with the `SNAPMOUNT_` prefix that are not configuration keys.
    public static let otherEnvironmentVariables: Set<String> = [
        "SNAPMOUNT_DEV_DIR", "SNAPMOUNT_SYS_DIR", "SNAPMOUNT_STATE_DIR", "SNAPMOUNT_CONFIG",
        // Crash tests only; ignored by release builds.
        "SNAPMOUNT_FAILPOINT",
    ]

    /// The key an operator probably meant by `name`, for "did you mean" hints.
    public static func closest(to name: String) -> ConfigKey? {
        let normalized = name.lowercased().map { $0 == "_" ? "-" : $0 }
        if let exact = ConfigKey(rawValue: String(normalized)) { return exact }
        let candidates = allCases.map { ($0, editDistance(Array(normalized), Array($0.rawValue))) }
        guard let best = candidates.min(by: { $0.1 < $1.1 }), best.1 <= 2 else { return nil }
        return best.0
    }

    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1,
                                       previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
