#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SnapmountCore
import SnapmountSystem

/// Refusals and failures of the host half.
public enum HostError: SnapmountError, Equatable {
    case lockTimeout(String, after: Duration)
    case otherMounted(mountPoint: String, source: String)
    case refusedContent(device: String, found: String, expected: String)
    case fsckFailed(device: String, status: Int32, output: String)
    case mkfsFailed(device: String, status: Int32, output: String)
    case state(String)

    public var exitStatus: ExitStatus {
        switch self {
        case .lockTimeout: .timedOut
        case .otherMounted, .refusedContent, .fsckFailed: .dataRefused
        case .mkfsFailed, .state: .internalError
        }
    }

    public var description: String {
        switch self {
        case .lockTimeout(let path, let after):
            "another snapmount still holds \(path) after \(DurationText.format(after))"
        case .otherMounted(let mountPoint, let source):
            "\(mountPoint) is already mounted from \(source), which is not the release volume; refusing to mount over it"
        case .refusedContent(let device, let found, let expected):
            "\(device) holds \(found), not \(expected) and not blank; refusing to format or mount it"
        case .fsckFailed(let device, let status, let output):
            "fsck found errors it could not fix on \(device) (exit \(status)); leaving the device untouched: \(output.quotedForMessage(limit: 200))"
        case .mkfsFailed(let device, let status, let output):
            "mkfs failed on \(device) (exit \(status)): \(output.quotedForMessage(limit: 200))"
        case .state(let detail):
            "cannot write the state file: \(detail)"
        }
    }
}

/// How a run ended.
public enum FlowOutcome: Sendable, Equatable {
    case mounted(MountRecord)
    case alreadyMounted(mountPoint: String, device: String)
}

/// The boot flow of DESIGN.md §2 as a short sequence of named steps, each timed, each
/// idempotent.
public final class BootFlow {
    public let configuration: Configuration
    private let environment: [String: String]
    private let host: HostEdges
    private let clock: any AgentClock
    private let logger: Logger
    private let tuning: CloudTuning
    public private(set) var timings: [(step: String, milliseconds: Int64)] = []

    public init(configuration: Configuration, environment: [String: String], host: HostEdges,
                clock: any AgentClock = SystemClock(), logger: Logger, tuning: CloudTuning = CloudTuning()) {
        self.configuration = configuration
        self.environment = environment
        self.host = host
        self.clock = clock
        self.logger = logger
        self.tuning = tuning
    }

    private func step<T>(_ name: String, _ body: () throws -> T) throws -> T {
        let started = clock.monotonic()
        defer { timings.append((name, (clock.monotonic() - started).wholeMilliseconds)) }
        logger.debug("step \(name)")
        return try body()
    }

    public func run() throws -> FlowOutcome {
        let started = clock.monotonic()
        let lock = try step("lock") { () throws -> FileLock in
            guard let lock = try FileLock.acquire(host.stateDirectory + "/lock", timeout: host.lockTimeout, clock: clock) else {
                throw HostError.lockTimeout(host.stateDirectory + "/lock", after: host.lockTimeout)
            }
            return lock
        }
        defer { withExtendedLifetime(lock) {} }
        Failpoint.hit("after-lock")

        if let device = try step("check", alreadyMounted) {
            logger.info("\(configuration.mountPoint) is already mounted from \(device); nothing to do (\(summary(since: started)))")
            return .alreadyMounted(mountPoint: configuration.mountPoint.text, device: device)
        }

        let session = try step("identity") {
            try CloudSession.connect(environment: environment, clock: clock, logger: logger, tuning: tuning)
        }
        _ = try step("credentials") { try session.credentials.current() }
        let snapshot = try step("snapshot") { try session.resolveSnapshot(configuration.source, owner: configuration.snapshotOwner) }
        Failpoint.hit("after-snapshot")

        let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: snapshot.id,
                                    instance: session.identity.instanceID, settings: configuration.volume)
        let (volume, created) = try step("volume") { () throws -> (EC2Volume, Bool) in
            let (found, created) = try session.volumes.findOrCreate(request)
            Failpoint.hit("after-create-volume")
            do {
                return (try session.volumes.waitAvailable(found.id), created)
            } catch {
                // Giving up on a volume this run created: leave none behind (DESIGN.md §5 rule 4).
                if created { session.volumes.rollBack(found.id, neverAttached: true) }
                throw error
            }
        }
        Failpoint.hit("after-volume")

        try step("attach") {
            let device = configuration.device.text
            let mine = volume.attachments.first { $0.instanceID == session.identity.instanceID }
            do {
                if mine?.state != "attached" {
                    if mine == nil { _ = try session.volumes.attach(volume.id, device: device) }
                    Failpoint.hit("after-attach-call")
                    _ = try session.volumes.waitAttached(volume.id)
                }
                if mine?.deleteOnTermination != true {
                    try session.volumes.setDeleteOnTermination(device: mine?.device ?? device)
                }
            } catch {
                // Attaching proved impossible, or the volume would outlive the instance without
                // DeleteOnTermination: a volume this run created is detached and deleted
                // (DESIGN.md §5 rule 4); the next run creates it afresh.
                if created { session.volumes.rollBack(volume.id) }
                throw error
            }
        }
        Failpoint.hit("after-attach")

        let path = try step("device") {
            try host.devices.wait(for: volume.id, requestedName: configuration.device.text, sizeGiB: volume.sizeGiB,
                                  timeout: configuration.deviceTimeout, clock: clock)
        }
        Failpoint.hit("after-device")
        let type = try step("filesystem") { try prepareFilesystem(path) }
        Failpoint.hit("after-filesystem")
        try step("fstab") { try addFstabEntry() }
        Failpoint.hit("after-fstab")
        try step("mount") { try mount(path, type: type) }
        Failpoint.hit("after-mount")

        let record = try step("report") { () throws -> MountRecord in
            let record = MountRecord(instance: session.identity.instanceID.text, snapshot: snapshot.id.text, volume: volume.id.text,
                                     device: path, mountPoint: configuration.mountPoint.text, completedAt: clock.now().iso8601,
                                     timings: timings)
            do {
                try makeDirectories(host.stateDirectory, mode: 0o755)
                try AtomicFile.replace(host.statePath, with: Array((record.json.pretty() + "\n").utf8))
            } catch {
                throw HostError.state("\(error)")
            }
            return record
        }
        logger.info("mounted \(configuration.mountPoint) from \(volume.id) (\(snapshot.id)) on \(path) in \(summary(since: started))")
        return .mounted(record)
    }

    /// `12.3s: lock 0ms, check 1ms, …`
    public func summary(since started: ContinuousClock.Instant) -> String {
        let total = clock.monotonic() - started
        return DurationText.format(.milliseconds(total.wholeMilliseconds)) + ": "
            + timings.map { "\($0.step) \(DurationText.format(.milliseconds($0.milliseconds)))" }.joined(separator: ", ")
    }

    // MARK: - Steps on the machine

    /// Step 1: the mount point is mounted already — from the release volume (done), or from
    /// something else (refused).
    func alreadyMounted() throws -> String? {
        guard let entry = host.mounter.mounts().last(where: { $0.mountPoint == configuration.mountPoint.text }) else { return nil }
        let device = host.devices.scan().first { $0.number == entry.device }
        let path = device.map { "\(host.devices.devDirectory)/\($0.name)" } ?? entry.source
        let isEBS = device.map { ($0.serial?.hasPrefix("vol") ?? false) || $0.name.hasPrefix("xvd") || $0.name.hasPrefix("sd") } ?? false
        if isEBS, case .filesystem(_, let label)? = try? host.prober.probe(path), label == configuration.label.text {
            return path
        }
        throw HostError.otherMounted(mountPoint: configuration.mountPoint.text, source: entry.source)
    }

    /// Step 8: fsck a filesystem with the expected type and label, mkfs a blank device,
    /// refuse anything else. Returns the filesystem type.
    func prepareFilesystem(_ path: String) throws -> String {
        let expected = "\(configuration.filesystem) labelled \(configuration.label.text.quotedForMessage())"
        switch try host.prober.probe(path) {
        case .filesystem(let type, let label) where type == configuration.filesystem.rawValue && label == configuration.label.text:
            try check(path, type: type)
            return type
        case .blank where try host.prober.isZeroed(path):
            try format(path)
            return configuration.filesystem.rawValue
        case .blank:
            throw HostError.refusedContent(device: path, found: "data without any known signature (not zeros)", expected: expected)
        case let content:
            throw HostError.refusedContent(device: path, found: content.description, expected: expected)
        }
    }

    private func check(_ path: String, type: String) throws {
        guard type == "ext4" else {
            logger.info("\(path): xfs checks its own log when mounted; no fsck")
            return
        }
        let result = try host.runner.run("fsck.ext4", ["-p", path])
        // fsck(8): 1 errors corrected, 2 corrected and a reboot advised, 4 and up left uncorrected.
        switch result.status {
        case 0: return
        case 1: logger.notice("fsck corrected errors on \(path)")
        case 2, 3: logger.warning("fsck corrected errors on \(path) and advises a reboot")
        default: throw HostError.fsckFailed(device: path, status: result.status, output: result.output)
        }
    }

    private func format(_ path: String) throws {
        // Probe again at the last moment: only a device with no signature at all is formatted.
        guard case .blank = try host.prober.probe(path), try host.prober.isZeroed(path) else {
            throw HostError.refusedContent(device: path, found: "a signature that appeared while checking", expected: "blank")
        }
        let label = configuration.label.text
        let result: ProcessResult
        switch configuration.filesystem {
        case .ext4: result = try host.runner.run("mkfs.ext4", ["-q", "-L", label, path])
        case .xfs: result = try host.runner.run("mkfs.xfs", ["-q", "-L", label, path])
        }
        guard result.status == 0 else { throw HostError.mkfsFailed(device: path, status: result.status, output: result.output) }
        logger.info("formatted blank \(path) as \(configuration.filesystem) labelled \(label)")
    }

    public var fstabEntry: FstabEntry {
        FstabEntry(label: configuration.label, mountPoint: configuration.mountPoint, filesystem: configuration.filesystem,
                   options: configuration.mountOptions)
    }

    /// Step 9: one entry, added atomically, if not there already.
    func addFstabEntry() throws {
        let path = configuration.fstab.text
        var current: [UInt8] = []
        do throws(SystemCallError) {
            current = try readFile(path, limit: 1 << 20)
        } catch {
            guard error.errno == ENOENT else { throw error }
        }
        switch try FstabEditor.ensure(fstabEntry, in: current) {
        case .unchanged:
            return
        case .append(let bytes):
            try AtomicFile.replace(path, with: bytes)
            logger.info("added to \(path): \(fstabEntry.line)")
        }
    }

    /// Step 10: mkdir and mount(2), unless already mounted from this device.
    func mount(_ path: String, type: String) throws {
        let mountPoint = configuration.mountPoint.text
        if let entry = host.mounter.mounts().last(where: { $0.mountPoint == mountPoint }) {
            guard entry.device == deviceNumber(path) else { throw HostError.otherMounted(mountPoint: mountPoint, source: entry.source) }
            return
        }
        try host.mounter.mount(device: path, on: mountPoint, type: type, options: fstabEntry.options.split(separator: ",").map(String.init))
    }
}

