import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem

/// Block devices from a table that a test (or ``SimulatedDevicePlane``) fills.
public final class TableDevices: BlockDeviceSource, @unchecked Sendable {
    public let devDirectory: String
    private let lock = NSLock()
    private var table: [BlockDevice]
    private var hypervisorType: String?

    public init(devDirectory: String = "/dev", devices: [BlockDevice] = [], hypervisor: String? = nil) {
        self.devDirectory = devDirectory
        self.table = devices
        self.hypervisorType = hypervisor
    }

    public var hypervisor: String? { lock.withLock { hypervisorType } }
    public func setHypervisor(_ type: String?) { lock.withLock { hypervisorType = type } }

    public func scan() -> [BlockDevice] { lock.withLock { table.sorted { $0.name < $1.name } } }
    public func add(_ device: BlockDevice) { lock.withLock { table.append(device) } }
    public func remove(named name: String) { lock.withLock { table.removeAll { $0.name == name } } }

    public func watch() throws(DeviceError) -> any DeviceWatch { PollingWatch() }

    /// The table's device at `path` (`<dev>/<name>`).
    public func device(at path: String) -> BlockDevice? {
        scan().first { "\(devDirectory)/\($0.name)" == path }
    }
}

/// A watch without events: the waiter looks again after a short sleep.
final class PollingWatch: DeviceWatch {
    func wait(upTo timeout: Duration) {
        SystemClock().sleep(for: min(timeout, .milliseconds(20)))
    }
}

/// Answers probes from a table by device path, and records them.
public final class TableProber: BlockProber, @unchecked Sendable {
    private let lock = NSLock()
    private var contents: [String: DeviceContent] = [:]
    private var zeroed: [String: Bool] = [:]
    public private(set) var probed: [String] = []

    public init() {}

    public func set(_ path: String, _ content: DeviceContent, zeroed isZeroed: Bool = false) {
        lock.withLock {
            contents[path] = content
            zeroed[path] = isZeroed
        }
    }

    public func content(of path: String) -> DeviceContent? { lock.withLock { contents[path] } }

    public func probe(_ path: String) throws(ProbeError) -> DeviceContent {
        let content = lock.withLock { () -> DeviceContent? in
            probed.append(path)
            return contents[path]
        }
        guard let content else { throw .open(path, errno: ENOENT) }
        return content
    }

    public func isZeroed(_ path: String) throws(ProbeError) -> Bool {
        guard let value = lock.withLock({ zeroed[path] }) else { throw .open(path, errno: ENOENT) }
        return value
    }
}

/// Records every command and answers with the status scripted for its program (0 when
/// none is). A successful mkfs writes its filesystem into the prober, as a real one would.
public final class RecordingRunner: CommandRunner, @unchecked Sendable {
    private let lock = NSLock()
    private let prober: TableProber?
    private var statuses: [String: Int32] = [:]
    private var recorded: [[String]] = []

    public init(prober: TableProber? = nil) {
        self.prober = prober
    }

    public func run(_ program: String, _ arguments: [String], timeout: Duration?) throws(ProcessRunError) -> ProcessResult {
        let status = lock.withLock { () -> Int32 in
            recorded.append([program] + arguments)
            return statuses[program] ?? 0
        }
        if status == 0, program.hasPrefix("mkfs."), let path = arguments.last,
           let label = arguments.firstIndex(of: "-L").map({ arguments[$0 + 1] }) {
            prober?.set(path, .filesystem(type: String(program.dropFirst(5)), label: label))
        }
        return ProcessResult(status: status, output: status == 0 ? "" : "\(program): scripted failure \(status)")
    }

    /// From now on, `program` exits with `status`.
    public func script(_ program: String, status: Int32) { lock.withLock { statuses[program] = status } }

    /// Every command run, program first.
    public var calls: [[String]] { lock.withLock { recorded } }
}

/// A mount table in memory; mounting a device of ``TableDevices`` records its number.
public final class TableMounter: Mounter, @unchecked Sendable {
    private let lock = NSLock()
    private let devices: TableDevices
    private var table: [MountInfo] = []
    public var failure: MountError?

    public init(devices: TableDevices, mounted: [MountInfo] = []) {
        self.devices = devices
        self.table = mounted
    }

    /// Set: the table cannot be read.
    public var unreadable: SystemCallError?

    public func mounts() throws(MountError) -> [MountInfo] {
        if let unreadable { throw .table(unreadable) }
        return lock.withLock { table }
    }

    /// Records the mount as the kernel would show it: at the mount point's real path.
    public func mount(device: String, on mountPoint: String, type: String, options: [String]) throws(MountError) {
        if let failure { throw failure }
        let number = devices.device(at: device)?.number ?? "0:0"
        try? FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let real = resolvedPath(mountPoint)
        lock.withLock { table.append(MountInfo(device: number, mountPoint: real, type: type, source: device)) }
    }

    /// Set: asked before each unmount; an errno it returns fails that unmount (EBUSY: in use).
    public var unmountFault: (@Sendable (String) -> Int32?)?

    public func unmount(_ mountPoint: String) throws(MountError) {
        if let code = unmountFault?(mountPoint) { throw .unmountFailed(mountPoint: mountPoint, errno: code) }
        let removed = lock.withLock { () -> Bool in
            guard let index = table.lastIndex(where: { $0.mountPoint == mountPoint }) else { return false }
            table.remove(at: index)
            return true
        }
        if !removed { throw .unmountFailed(mountPoint: mountPoint, errno: EINVAL) }
    }

    /// A reboot: nothing is mounted any more (systemd would mount the fstab line; the
    /// agent runs first in these tests).
    public func unmountAll() { lock.withLock { table = [] } }
}

/// DevCloud's device plane without root: an attached volume appears in a ``TableDevices``
/// as a Nitro instance shows it — `nvme<N>n1`, serial = the volume id without its dash, the
/// volume's size — holding what its snapshot holds; detach removes it.
public actor SimulatedDevicePlane {
    public let devices: TableDevices
    public let prober: TableProber
    /// What a volume made from each snapshot holds; a snapshot not listed holds the release.
    private var contents: [String: (DeviceContent, zeroed: Bool)] = [:]
    private var presented: [String: String] = [:]
    private var next = 1
    private var xen = false
    /// `false`: attachments complete, but no device ever appears.
    private var presentsDevices = true

    /// A Nitro instance's root volume: NVMe, with its EBS serial.
    public static let nitroRoot = BlockDevice(name: "nvme0n1", serial: "vol0aaaaaaaaaaaaaaa0", sizeBytes: 8 << 30, number: "259:0")
    /// A Xen instance's root volume.
    public static let xenRoot = BlockDevice(name: "xvda", serial: nil, sizeBytes: 8 << 30, number: "202:0")

    public init(devices: TableDevices, prober: TableProber) {
        self.devices = devices
        self.prober = prober
    }

    public func setContent(ofSnapshot id: String, _ content: DeviceContent, zeroed: Bool = false) {
        contents[id] = (content, zeroed)
    }

    /// A Xen instance: the hypervisor says so, the root disk is `xvda`, and volumes appear
    /// under their attachment's `xvd` name, without a serial.
    public func setXen() {
        xen = true
        devices.setHypervisor("xen")
        devices.remove(named: Self.nitroRoot.name)
        devices.add(Self.xenRoot)
    }

    public func setPresentsDevices(_ value: Bool) { presentsDevices = value }

    public func handle(_ event: AttachmentEvent) {
        switch event {
        case .attached(let volume, _, let device):
            guard presentsDevices, presented[volume.id] == nil else { return }
            let name = xen ? DeviceIdentification.xenNames(device).last ?? "xvdf" : "nvme\(next)n1"
            let number = xen ? "202:\(16 * next)" : "259:\(next)"
            next += 1
            presented[volume.id] = name
            let (content, zeroed) = volume.snapshotID.flatMap { contents[$0] } ?? (.filesystem(type: "ext4", label: "code_release"), false)
            prober.set("\(devices.devDirectory)/\(name)", content, zeroed: zeroed)
            devices.add(BlockDevice(name: name, serial: xen ? nil : volume.id.replacingOccurrences(of: "-", with: ""),
                                    sizeBytes: UInt64(volume.sizeGiB) << 30, number: number))
        case .detached(let volume, _, _):
            if let name = presented.removeValue(forKey: volume.id) { devices.remove(named: name) }
        case .deleted(let id):
            if let name = presented.removeValue(forKey: id) { devices.remove(named: name) }
        }
    }
}

/// An instance whose cloud is a DevCloud and whose machine is doubled: devices, probes,
/// mkfs/fsck and mounts are tables; the lock, state and fstab are real files in a
/// temporary directory. The real boot flow runs on it without root.
public final class SimulatedHost: @unchecked Sendable {
    public let cloud: DevCloud
    public let root: String
    public let devices: TableDevices
    public let prober: TableProber
    public let runner: RecordingRunner
    public let mounter: TableMounter
    public let plane: SimulatedDevicePlane
    public var fstab: String { root + "/fstab" }
    public var mountPoint: String { root + "/release" }

    public static let initialFstab = "# /etc/fstab: static file system information.\nUUID=1234-ABCD / ext4 errors=remount-ro 0 1\n"

    public init(cloud: DevCloud) async throws {
        self.cloud = cloud
        root = NSTemporaryDirectory() + "snapmount-sim-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Self.initialFstab.write(toFile: root + "/fstab", atomically: true, encoding: .utf8)
        devices = TableDevices(devDirectory: root + "/dev", devices: [SimulatedDevicePlane.nitroRoot])
        prober = TableProber()
        runner = RecordingRunner(prober: prober)
        mounter = TableMounter(devices: devices)
        plane = SimulatedDevicePlane(devices: devices, prober: prober)
        let plane = self.plane
        await cloud.state.onAttachment { event in await plane.handle(event) }
    }

    public var edges: HostEdges {
        var edges = HostEdges(devices: devices, prober: prober, runner: runner, mounter: mounter, lockDirectory: root + "/run",
                              recordDirectory: root + "/state")
        edges.lockTimeout = .seconds(30)
        edges.procDirectory = root + "/proc"
        return edges
    }

    public func configuration(_ extra: [ConfigKey: String] = [:]) throws -> Configuration {
        var options: [ConfigKey: String] = [.source: cloud.sourceURL, .mountPoint: mountPoint, .fstab: fstab, .deviceTimeout: "5s"]
        options.merge(extra) { _, new in new }
        return try Configuration.resolve(file: nil, environment: [:], options: options)
    }

    /// One run of the real boot flow, as a fresh process would make it.
    public func run(_ mode: FlowMode = .apply, _ extra: [ConfigKey: String] = [:], tuning: CloudTuning = fastTuning(),
                    environment extraEnvironment: [String: String] = [:], clock: any AgentClock = SystemClock(),
                    logger: Logger = quietLogger,
                    afterStep: (@Sendable (BootStep) -> Void)? = nil) async throws -> (outcome: FlowOutcome, checklist: [ChecklistItem<BootStep>]) {
        let configuration = try configuration(extra)
        let environment = try AgentEnvironment(cloud.environment.merging(extraEnvironment) { _, new in new })
        let edges = edges
        return try await onThread {
            let flow = BootFlow(configuration: configuration, environment: environment, host: edges, mode: mode, clock: clock,
                                logger: logger, tuning: tuning)
            flow.afterStep = afterStep
            return (try flow.run(), flow.checklist)
        }
    }

    /// The run's error, if it failed.
    public func runError(_ extra: [ConfigKey: String] = [:], tuning: CloudTuning = fastTuning()) async throws -> (any Error)? {
        do {
            _ = try await run(.apply, extra, tuning: tuning)
            return nil
        } catch {
            return error
        }
    }

    public var isMounted: Bool { ((try? mounter.mounts()) ?? []).contains { $0.mountPoint == resolvedPath(mountPoint) } }

    public func fstabText() throws -> String { try String(contentsOfFile: fstab, encoding: .utf8) }

    /// A reboot: mounts and `/run` are gone; `/var/lib` stays; EC2 keeps the volume attached.
    public func reboot() {
        mounter.unmountAll()
        try? FileManager.default.removeItem(atPath: root + "/run")
    }

    public func cleanup() {
        try? FileManager.default.removeItem(atPath: root)
    }
}

/// A started DevCloud with the release snapshot published and a simulated instance, both
/// gone when the body ends.
public func withSimulatedHost<T: Sendable>(_ settings: DevCloudSettings = fastSettings(),
                                           _ body: @escaping @Sendable (SimulatedHost) async throws -> T) async throws -> T {
    let cloud = try await DevCloud.start(settings)
    await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1))
    await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
    let host: SimulatedHost
    do {
        host = try await SimulatedHost(cloud: cloud)
    } catch {
        await stopCloud(cloud)
        throw error
    }
    do {
        let result = try await body(host)
        host.cleanup()
        await stopCloud(cloud)
        return result
    } catch {
        host.cleanup()
        await stopCloud(cloud)
        throw error
    }
}

/// A freezer that records when the filesystem was frozen and thawed, and can refuse.
public final class RecordingFreezer: FilesystemFreezer, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [(frozen: Bool, at: ContinuousClock.Instant)] = []
    private var refusal: Int32?

    public init() {}

    /// Every freeze fails with this errno (EPERM: not root).
    public func refuse(_ code: Int32?) { lock.withLock { refusal = code } }

    public func freeze(_ mountPoint: String) throws(SystemCallError) {
        if let code = lock.withLock({ refusal }) { throw SystemCallError("ioctl FIFREEZE", mountPoint, errno: code) }
        lock.withLock { events.append((true, ContinuousClock.now)) }
    }

    public func thaw(_ mountPoint: String) throws(SystemCallError) {
        lock.withLock { events.append((false, ContinuousClock.now)) }
    }

    public func check(_ mountPoint: String) throws(SystemCallError) {
        if let code = lock.withLock({ refusal }) { throw SystemCallError("ioctl FIFREEZE", mountPoint, errno: code) }
    }

    /// Each frozen span, from freeze to thaw (`nil` end: still frozen).
    public var spans: [(from: ContinuousClock.Instant, to: ContinuousClock.Instant?)] {
        lock.withLock {
            var result: [(ContinuousClock.Instant, ContinuousClock.Instant?)] = []
            for event in events {
                if event.frozen {
                    result.append((event.at, nil))
                } else if let last = result.indices.last, result[last].1 == nil {
                    result[last].1 = event.at
                }
            }
            return result
        }
    }

    public var isFrozen: Bool { spans.last.map { $0.to == nil } ?? false }
}

extension SimulatedHost {
    /// The published file a release server's web server would serve.
    public var publishedFile: String { root + "/www/snap.txt" }

    /// One run of `snapmount publish` on this machine (the release server), after the boot
    /// flow has mounted its release volume.
    public func publish(_ mode: FlowMode = .apply, keep: Int? = nil, volume: VolumeID? = nil, output: String? = nil,
                        freezeLimit: Duration = PublishOptions.defaultFreezeLimit, freezer: RecordingFreezer, tuning: CloudTuning = fastTuning(), clock: any AgentClock = SystemClock(),
                        logger: Logger = quietLogger) async throws -> (outcome: PublishOutcome, checklist: [ChecklistItem<PublishStep>]) {
        try FileManager.default.createDirectory(atPath: root + "/www", withIntermediateDirectories: true)
        var options = PublishOptions(mountPoint: try AbsolutePath(parsing: mountPoint), volume: volume,
                                     target: try PublishTarget(parsing: output ?? publishedFile), release: "release", keep: keep)
        options.freezeLimit = freezeLimit
        let environment = try AgentEnvironment(cloud.environment)
        let edges = edges
        let settled = options
        return try await onThread {
            let flow = PublishFlow(options: settled, environment: environment, host: edges, freezer: freezer, mode: mode, clock: clock,
                                   logger: logger, tuning: tuning)
            do {
                return (try flow.run(), flow.checklist)
            } catch {
                throw PublishRunError(error: error, checklist: flow.checklist)
            }
        }
    }
}

/// A failed publish, with the checklist it got to.
public struct PublishRunError: Error, @unchecked Sendable {
    public let error: any Error
    public let checklist: [ChecklistItem<PublishStep>]
    public var status: ExitStatus { ExitStatus(for: error) }
    public var message: String { "\(error)" }
}

extension SimulatedHost {
    /// One run of `snapmount rollback` on this machine (the release server).
    public func rollback(_ mode: FlowMode = .apply, output: String? = nil) async throws -> RollbackOutcome {
        let target = try PublishTarget(parsing: output ?? publishedFile)
        let environment = try AgentEnvironment(cloud.environment)
        let lockDirectory = root + "/run"
        return try await onThread {
            let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
            return try RollbackFlow(target: target, mode: mode, lockDirectory: lockDirectory).run(session: session, clock: SystemClock(), logger: quietLogger)
        }
    }
}
