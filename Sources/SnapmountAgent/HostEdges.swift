import SnapmountCore
import SnapmountSystem

/// The parts of the machine the flow touches, each behind a protocol: the real ones in the
/// product (``system(_:)``), tables and recorders in tests.
public struct HostEdges: Sendable {
    public var devices: any BlockDeviceSource
    public var prober: any BlockProber
    public var runner: any CommandRunner
    public var mounter: any Mounter
    /// Where the lock lives: `/run/snapmount`.
    public var lockDirectory: String
    /// Where what must survive a reboot lives: the record of what is mounted, and the marker
    /// of a format in progress. `/var/lib/snapmount` (the unit's `StateDirectory=`).
    public var recordDirectory: String
    /// How long a second run waits for the first one's lock (within the run's deadline).
    public var lockTimeout: Duration = .seconds(600)
    /// Where the processes are listed (who holds a busy mount): `/proc`.
    public var procDirectory = "/proc"

    public init(devices: any BlockDeviceSource, prober: any BlockProber, runner: any CommandRunner, mounter: any Mounter,
                lockDirectory: String, recordDirectory: String) {
        self.devices = devices
        self.prober = prober
        self.runner = runner
        self.mounter = mounter
        self.lockDirectory = lockDirectory
        self.recordDirectory = recordDirectory
    }

    /// The real machine, where the environment puts it (`SNAPMOUNT_DEV_DIR`, `SNAPMOUNT_SYS_DIR`,
    /// `SNAPMOUNT_STATE_DIR`).
    public static func system(_ environment: AgentEnvironment) -> HostEdges {
        HostEdges(devices: SysfsBlockDevices(devDirectory: environment.devDirectory, sysDirectory: environment.sysDirectory),
                  prober: BlkidProber(), runner: SystemCommandRunner(), mounter: SystemMounter(),
                  lockDirectory: environment.lockDirectory, recordDirectory: environment.recordDirectory)
    }

    public var lockPath: String { lockDirectory + "/lock" }
    public var recordPath: String { recordDirectory + "/state.json" }

    /// Present while snapmount formats this volume: a run that finds it knows the device
    /// holds nothing but its own interrupted mkfs, and formats it again.
    public func formatMarker(_ volume: VolumeID) -> String { recordDirectory + "/formatting-\(volume)" }
}

/// What the record (`/var/lib/snapmount/state.json`) says about the mounted release. It
/// survives a reboot; a run that finds the release already mounted refreshes it.
public struct MountRecord: Sendable, Equatable {
    /// `nil` when only the machine was asked (the already-mounted path makes no cloud call).
    public var instance: String?
    /// `nil` when not known here: `snapmount status` asks EC2 for the volume's own snapshot.
    public var snapshot: String?
    /// The release the volume held when it was mounted (its identity); a push may change it
    /// since, so `status` reads the manifest on the mounted filesystem first.
    public var release: String?
    public var volume: String
    public var device: String
    public var mountPoint: String
    /// When this volume was mounted by snapmount (kept across refreshes of the same volume).
    public var completedAt: String
    public var timings: [(step: String, milliseconds: Int64)]

    public init(instance: String?, snapshot: String?, volume: String, device: String, mountPoint: String, completedAt: String,
                timings: [(step: String, milliseconds: Int64)], release: String? = nil) {
        self.instance = instance
        self.snapshot = snapshot
        self.release = release
        self.volume = volume
        self.device = device
        self.mountPoint = mountPoint
        self.completedAt = completedAt
        self.timings = timings
    }

    public static func == (lhs: MountRecord, rhs: MountRecord) -> Bool {
        lhs.json == rhs.json
    }

    public var json: JSONValue {
        func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return .object([
            ("instance", optional(instance)), ("snapshot", optional(snapshot)), ("release", optional(release)), ("volume", .string(volume)),
            ("device", .string(device)), ("mountPoint", .string(mountPoint)), ("completedAt", .string(completedAt)),
            ("timingsMs", .object(timings.map { ($0.step, .number(String($0.milliseconds))) })),
            ("version", .string(SnapmountVersion.current)),
        ])
    }

    public init?(json: JSONValue) {
        guard let volume = json["volume"]?.string, let device = json["device"]?.string, let mountPoint = json["mountPoint"]?.string
        else { return nil }
        var timings: [(String, Int64)] = []
        if case .object(let members)? = json["timingsMs"] {
            for (step, value) in members {
                if case .number(let text) = value, let milliseconds = Int64(text) { timings.append((step, milliseconds)) }
            }
        }
        self.init(instance: json["instance"]?.string, snapshot: json["snapshot"]?.string.flatMap { SnapshotID($0)?.text }, volume: volume,
                  device: device, mountPoint: mountPoint, completedAt: json["completedAt"]?.string ?? "", timings: timings,
                  release: json["release"]?.string.flatMap { ReleaseID($0)?.text })
    }

    public static func load(_ path: String) -> MountRecord? {
        guard let bytes = try? readFile(path, limit: 64 * 1024), let json = try? parseJSON(bytes) else { return nil }
        return MountRecord(json: json)
    }

    /// Replaces the record atomically.
    public func save(to directory: String, path: String) throws(SystemCallError) {
        try makeDirectories(directory, mode: 0o755)
        try AtomicFile.replace(path, with: Array((json.pretty() + "\n").utf8))
    }
}

/// What is mounted at a path, as the flows and `status` all need it: the kernel's entry, the
/// block device behind it (when this machine lists one), and the EBS volume that device is
/// (by its NVMe serial).
public struct MountedHere: Sendable {
    public let entry: MountInfo
    public let device: BlockDevice?
    /// `<dev>/<name>` of the device, or the entry's source when no device was found.
    public let devicePath: String
    public let volume: VolumeID?
}

extension HostEdges {
    /// The one query for "what is mounted at `path`": the last mount on it (the one on top),
    /// `nil` when nothing is. The path is compared as the kernel shows it (symbolic links resolved).
    public func mounted(at path: String) throws(MountError) -> MountedHere? {
        let resolved = resolvedPath(path)
        guard let entry = try mounter.mounts().last(where: { $0.mountPoint == resolved }) else { return nil }
        let device = devices.scan().first { $0.number == entry.device }
        return MountedHere(entry: entry, device: device, devicePath: device.map { "\(devices.devDirectory)/\($0.name)" } ?? entry.source,
                           volume: device?.serial.flatMap(VolumeID.fromNVMeSerial))
    }
}
