import SnapmountCore
import SnapmountSystem

/// The parts of the machine the flow touches, each behind a protocol: the real ones in the
/// product (``system(_:)``), tables and recorders in tests.
public struct HostEdges: Sendable {
    public var devices: any BlockDeviceSource
    public var prober: any BlockProber
    public var runner: any CommandRunner
    public var mounter: any Mounter
    /// Where the lock and `state.json` live.
    public var stateDirectory: String
    /// How long a second run waits for the first one's lock.
    public var lockTimeout: Duration = .seconds(600)

    public init(devices: any BlockDeviceSource, prober: any BlockProber, runner: any CommandRunner, mounter: any Mounter,
                stateDirectory: String) {
        self.devices = devices
        self.prober = prober
        self.runner = runner
        self.mounter = mounter
        self.stateDirectory = stateDirectory
    }

    /// The real machine, where the environment puts it (`SNAPMOUNT_DEV_DIR`, `SNAPMOUNT_SYS_DIR`,
    /// `SNAPMOUNT_STATE_DIR`).
    public static func system(_ environment: AgentEnvironment) -> HostEdges {
        HostEdges(devices: SysfsBlockDevices(devDirectory: environment.devDirectory, sysDirectory: environment.sysDirectory),
                  prober: BlkidProber(), runner: SystemCommandRunner(), mounter: SystemMounter(),
                  stateDirectory: environment.stateDirectory)
    }

    public var lockPath: String { stateDirectory + "/lock" }
    public var statePath: String { stateDirectory + "/state.json" }
}

/// What the state file records after a successful run.
public struct MountRecord: Sendable, Equatable {
    public var instance: String
    public var snapshot: String
    public var volume: String
    public var device: String
    public var mountPoint: String
    public var completedAt: String
    public var timings: [(step: String, milliseconds: Int64)]

    public init(instance: String, snapshot: String, volume: String, device: String, mountPoint: String, completedAt: String,
                timings: [(step: String, milliseconds: Int64)]) {
        self.instance = instance
        self.snapshot = snapshot
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
        .object([
            ("instance", .string(instance)), ("snapshot", .string(snapshot)), ("volume", .string(volume)),
            ("device", .string(device)), ("mountPoint", .string(mountPoint)), ("completedAt", .string(completedAt)),
            ("timingsMs", .object(timings.map { ($0.step, .number(String($0.milliseconds))) })),
            ("version", .string(SnapmountVersion.current)),
        ])
    }

    public init?(json: JSONValue) {
        guard let instance = json["instance"]?.string, let snapshot = json["snapshot"]?.string,
              let volume = json["volume"]?.string, let device = json["device"]?.string,
              let mountPoint = json["mountPoint"]?.string
        else { return nil }
        var timings: [(String, Int64)] = []
        if case .object(let members)? = json["timingsMs"] {
            for (step, value) in members {
                if case .number(let text) = value, let milliseconds = Int64(text) { timings.append((step, milliseconds)) }
            }
        }
        self.init(instance: instance, snapshot: snapshot, volume: volume, device: device, mountPoint: mountPoint,
                  completedAt: json["completedAt"]?.string ?? "", timings: timings)
    }

    public static func load(_ path: String) -> MountRecord? {
        guard let bytes = try? readFile(path, limit: 64 * 1024), let json = try? parseJSON(bytes) else { return nil }
        return MountRecord(json: json)
    }
}
