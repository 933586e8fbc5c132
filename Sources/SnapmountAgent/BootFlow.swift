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
    case fsckNotFinished(device: String, status: Int32, output: String)
    case mkfsFailed(device: String, status: Int32, output: String)
    case deviceNotPresent(VolumeID, seen: [String])
    case state(String)
    case retiringMounted(VolumeID, mountPoint: String)
    /// The release stayed busy (EBUSY) until the run's deadline: the old one is still mounted.
    case mountBusy(String, holders: [MountHolder])

    public var exitStatus: ExitStatus {
        switch self {
        case .lockTimeout, .deviceNotPresent, .mountBusy: .timedOut
        case .otherMounted, .refusedContent, .fsckFailed, .retiringMounted: .dataRefused
        case .fsckNotFinished(_, let status, _): FsckOutcome(status: status) == .notChecked ? .timedOut : .internalError
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
        case .fsckNotFinished(let device, let status, let output):
            "fsck could not check \(device) (exit \(status)); not mounting it unchecked: \(output.quotedForMessage(limit: 200))"
        case .mkfsFailed(let device, let status, let output):
            "mkfs failed on \(device) (exit \(status)): \(output.quotedForMessage(limit: 200))"
        case .deviceNotPresent(let volume, let seen):
            "no block device for \(volume) now; seen: " + (seen.isEmpty ? "none" : seen.joined(separator: ", "))
        case .state(let detail):
            "cannot write the state file: \(detail)"
        case .mountBusy(let mountPoint, let holders):
            "\(mountPoint) stayed busy until the run's deadline, so the release published meanwhile is not mounted yet (the one mounted stays): "
                + (holders.isEmpty ? "no process found holding it" : "held by " + holders.map(\.description).joined(separator: ", "))
                + "; order those services after snapmount.service (RequiresMountsFor=\(mountPoint)), or stop them, and run snapmount again"
        case .retiringMounted(let volume, let mountPoint):
            "\(volume), this instance's volume of another release, is mounted at \(mountPoint); unmount it, then run snapmount again to move to the release the source names"
        }
    }
}

/// How a run ended.
public enum FlowOutcome: Sendable, Equatable {
    case mounted(MountRecord)
    case alreadyMounted(mountPoint: String, device: String)
    /// Check mode: the checklist is complete; the status is that of its first ✗.
    case checked(ExitStatus)

    /// The record, when the run mounted the release: `try #require(outcome.mountedRecord)`.
    public var mountedRecord: MountRecord? {
        if case .mounted(let record) = self { return record }
        return nil
    }
}

/// The boot flow of DESIGN.md §2: one short list of named steps, each timed, each
/// idempotent, each leaving a line on the checklist. `--dry-run` is the same list in check
/// mode, where the mutating edges report instead of acting.
public final class BootFlow {
    public let configuration: Configuration
    public let mode: FlowMode
    private let environment: AgentEnvironment
    private let host: HostEdges
    private let clock: any AgentClock
    private let logger: Logger
    private let tuning: CloudTuning
    private var steps: StepRecorder<BootStep>
    public var checklist: [ChecklistItem<BootStep>] { steps.checklist }
    /// Called after each step that succeeded (tests: publish a release between two steps).
    public var afterStep: ((BootStep) -> Void)?
    public var timings: [(step: String, milliseconds: Int64)] { steps.timings }

    public init(configuration: Configuration, environment: AgentEnvironment, host: HostEdges, mode: FlowMode = .apply,
                clock: any AgentClock = SystemClock(), logger: Logger, tuning: CloudTuning = CloudTuning()) {
        self.configuration = configuration
        self.environment = environment
        self.host = host
        self.mode = mode
        self.clock = clock
        self.logger = logger
        self.tuning = tuning
        self.steps = StepRecorder(mode: mode, clock: clock, logger: logger)
    }

    /// How many times one run moves on to a release published while it ran.
    public static let convergeRounds = 3

    /// Apply mode: mounts the release, or throws what stopped it. Check mode: fills the
    /// checklist and throws nothing a step found. A release published while the run was
    /// under way (the source names another snapshot once the first is mounted) is moved to
    /// before the run returns — before the application starts —, at most ``convergeRounds`` times.
    public func run() throws -> FlowOutcome {
        var round = 1
        while true {
            if let outcome = try runOnce(round: round) { return outcome }
            round += 1
        }
    }

    /// One pass over the steps; `nil`: the source changed meanwhile, and the release was
    /// unmounted to make room for the new one.
    private func runOnce(round: Int) throws -> FlowOutcome? {
        let started = clock.monotonic()
        steps = StepRecorder(mode: mode, clock: clock, logger: logger, afterStep: afterStep)
        let lock = try step(.lock, takeLock)
        defer { withExtendedLifetime(lock) {} }
        Failpoint.hit("after-lock")
        if case .release(let device)? = try step(.check, inspectMountPoint) {
            if mode == .apply {
                try finishInterruptedSwitch()
                refreshRecord(device: device)
            }
            logger.info("\(configuration.mountPoint) is already mounted from \(device); nothing to do (\(summary(since: started)))")
            return .alreadyMounted(mountPoint: configuration.mountPoint.text, device: device)
        }

        // Steps 2 and 3: who and where this instance is (IMDSv2); its credentials.
        let session = try step(.identity) { try SharedSteps.identity(environment, clock: clock, logger: logger, tuning: tuning) }
        let credentials = try step(.credentials, needs: session, SharedSteps.credentials)
        let snapshot = try step(.snapshot, needs: both(session, credentials)) { session, _ in try resolveSnapshot(session) }
        Failpoint.hit("after-snapshot")
        let volume = try step(.volume, needs: both(session, snapshot)) { session, snapshot in try ensureVolume(session, snapshot) }
        Failpoint.hit("after-volume")
        let attachment = try step(.attach, needs: both(session, volume)) { session, volume in try ensureAttached(session, volume) }
        Failpoint.hit("after-attach")
        let device = try step(.device, needs: both(volume, attachment)) { volume, attachment in try findDevice(volume, attachment) }
        Failpoint.hit("after-device")
        let filesystem = try step(.filesystem, needs: device, otherwise: "no device to probe yet", prepareFilesystem)
        Failpoint.hit("after-filesystem")
        try step(.fstab, addFstabEntry)
        Failpoint.hit("after-fstab")
        try step(.mount, needs: both(device, filesystem), otherwise: "would mount the device on \(configuration.mountPoint) (\(configuration.filesystem))") { device, filesystem in
            try mount(device, filesystem)
        }
        Failpoint.hit("after-mount")
        if mode == .apply { try finishInterruptedSwitch() }
        // The release source is what publish snapshots: it is what it is, whatever is published.
        if mode == .apply, round < Self.convergeRounds, volume?.volume?.isReleaseSource != true, let session, let snapshot,
           let published = publishedNow(session),
           published != snapshot.id {
            logger.notice("the source now names \(published), not \(snapshot.id): a release was published during this boot; moving to it before the application starts (round \(round + 1))")
            try unmountBusyAware(resolvedPath(configuration.mountPoint.text))
            return nil
        }
        // In apply mode every value is there: a step that could not produce one threw.
        guard mode == .apply, let session, let snapshot, let volume = volume?.volume, let device,
              let record = try step(.report, { try writeRecord(session, snapshot, volume, device) })
        else { return .checked(checklist.exitStatus) }
        logger.info("mounted \(configuration.mountPoint) from \(volume.id) (\(snapshot.id)) on \(device) in \(summary(since: started))")
        return .mounted(record)
    }

    /// A kept volume may hold a switch of its tree that was interrupted (`snapmount switch`
    /// killed, or the machine rebooted, half way): finished before the application starts.
    private func finishInterruptedSwitch() throws {
        if let side = try ReleaseTree(mountPoint: configuration.mountPoint.text, clock: clock).finishInterrupted() {
            logger.warning("\(configuration.mountPoint): finished a switch to the \(side.rawValue) tree that was interrupted")
        }
    }

    /// The run as the unit makes it: a run that fails for a reason that may pass — a remote
    /// service unavailable (69), a wait that timed out (75) — is made again, whole (every
    /// step is idempotent), after a growing pause, while the run's deadline allows. systemd's
    /// `Restart=` cannot stand in for this: a oneshot's failed start fails the units ordered
    /// after it, and its restart does not start them again.
    public func runUntilDeadline() throws -> FlowOutcome {
        var round = 1
        while true {
            do {
                return try run()
            } catch {
                let status = ExitStatus(for: error)
                // A mount that stayed busy is not retried whole: the rerun would find the old
                // release mounted and call it done.
                let busy = { if case HostError.mountBusy = error { return true } else { return false } }()
                guard mode == .apply, status == .unavailable || status == .timedOut, !(error is InterruptedError), !busy,
                      clock.interruption() == nil
                else { throw error }
                let pause = min(Duration.seconds(30), .seconds(2) * (1 << min(round - 1, 4)))
                guard clock.allows(pause) else {
                    logger.error("giving up: run-timeout (\(DurationText.format(configuration.runTimeout))) leaves no time for another round")
                    throw error
                }
                logger.warning("\(error); the boot flow runs again in \(DurationText.format(pause)) (round \(round + 1), within run-timeout)")
                clock.sleep(for: pause)
                round += 1
            }
        }
    }

    /// `12.3s: lock 0ms, check 1ms, …`
    public func summary(since started: ContinuousClock.Instant) -> String { steps.summary(since: started) }

    // MARK: - Running a step

    @discardableResult
    private func step<Value>(_ name: BootStep, _ body: () throws -> StepResult<Value>) throws -> Value? {
        try steps.run(name, body)
    }

    @discardableResult
    private func step<Input, Value>(_ name: BootStep, needs input: Input?, otherwise: String = notCheckedText,
                                    _ body: (Input) throws -> StepResult<Value>) throws -> Value? {
        try steps.run(name, needs: input, otherwise: otherwise, body)
    }

    // MARK: - The steps

    /// Step 0: one agent at a time. Check mode only looks.
    private func takeLock() throws -> StepResult<FileLock?> {
        let path = host.lockPath
        return try SharedSteps.lock(mode, path: path, holder: "snapmount") {
            let timeout = clock.capped(host.lockTimeout)
            guard let lock = try FileLock.acquire(path, timeout: timeout, clock: clock) else {
                throw HostError.lockTimeout(path, after: timeout)
            }
            return lock
        }
    }

    /// Step 1: the mount point is mounted already — from the release volume (done), or from
    /// something else (refused).
    private func inspectMountPoint() throws -> StepResult<MountPointState> {
        let mountPoint = configuration.mountPoint.text
        let here = try host.mounted(at: mountPoint)
        let content = here.flatMap { here in here.device == nil ? nil : try? host.prober.probe(here.devicePath) }
        let state = MountPointCheck.evaluate(here?.entry, device: here?.device, devDirectory: host.devices.devDirectory, content: content,
                                             label: configuration.label)
        switch state {
        case .notMounted:
            return .done(state, "\(mountPoint) is not mounted yet")
        case .release(let device):
            return .done(state, "\(mountPoint) is already mounted from \(device)" + (mode == .check ? ": a run would do nothing" : ""))
        case .other(let source):
            throw HostError.otherMounted(mountPoint: mountPoint, source: source)
        }
    }


    /// Step 4: the id the source names, checked strictly, then DescribeSnapshots: it must
    /// exist, be completed, and belong to an allowed owner. A malformed id never reaches EC2.
    private func resolveSnapshot(_ session: CloudSession) throws -> StepResult<EC2Snapshot> {
        if configuration.snapshotOwner == .any && configuration.source.isUnauthenticated {
            logger.warning("snapshot-owner is any and the source is \(configuration.source): anyone on the network path to it chooses the code this instance runs; use an https:// source or a snapshot owner")
        }
        let snapshot = try session.resolveSnapshot(configuration.source, owner: configuration.snapshotOwner)
        return .done(snapshot, "\(snapshot.id) is \(snapshot.state), \(snapshot.volumeSizeGiB) GiB, owner \(snapshot.ownerID)")
    }

    /// Step 5: this instance's volume for the snapshot, reused or created, available.
    private func ensureVolume(_ session: CloudSession, _ snapshot: EC2Snapshot) throws -> StepResult<VolumeOutcome> {
        let identity = session.identity
        let wanted = snapshot.releaseIdentity
        let mountPoint = configuration.mountPoint.text
        let request = VolumeRequest(availabilityZone: identity.availabilityZone, snapshot: snapshot.id, instance: identity.instanceID,
                                    settings: configuration.volume, mountPoint: mountPoint, release: wanted)
        // What each volume holds decides: its identity tag, which a push keeps true.
        let sourceVolume = snapshot.tags[SnapshotRequest.sourceVolumeTag].flatMap(VolumeID.init)
        var (reuse, retire) = VolumeDecisions.sort(try session.volumes.ourVolumes(mountPoint: mountPoint, device: configuration.device.text),
                                                   wanted: wanted, instance: identity.instanceID, sourceVolume: sourceVolume)
        // The volume the published snapshot was taken from is the release source even before a
        // publish tagged its role (a server upgraded from before roles): treated as one here.
        if reuse?.id == sourceVolume { reuse?.tags[ReleaseTags.role] = ReleaseTags.sourceRole }
        for old in retire where mode == .apply {
            try refuseIfMounted(old)
            try session.volumes.retire(old)
        }
        let retired = retire.isEmpty ? ""
            : (mode == .apply ? "retired " : "would retire ") + retire.map { "\($0.id) (\($0.heldRelease.map(\.text) ?? "no known release"))" }.joined(separator: ", ") + "; "
        let outcome = try session.volumes.ensureVolume(request, mode: mode, existing: reuse)
        let detail: String
        switch outcome {
        case .existing(let volume) where volume.isReleaseSource:
            detail = (mode == .check ? "would mount" : "mounting") + " \(volume.id) as it is (\(volume.state)): the release source, which publish snapshots; never retired"
        case .existing(let volume):
            detail = (mode == .check ? "would reuse" : "reusing") + " \(volume.id) (\(volume.state), holds \(wanted))"
        case .created(let volume):
            detail = "created \(volume.id) from \(snapshot.id) in \(identity.availabilityZone)"
        case .wouldCreate:
            detail = "would create a \(configuration.volume.type) volume from \(snapshot.id) in \(identity.availabilityZone) (DryRunOperation)"
        case .notChecked(let reason):
            return StepResult(value: outcome, mark: .notApplicable, detail: retired + reason)
        }
        return .done(outcome, retired + detail)
    }

    /// An earlier release's volume is detached only when nothing on this machine has it
    /// mounted: an administrator's mount of it is never pulled from under them.
    private func refuseIfMounted(_ volume: EC2Volume) throws {
        // Retired volumes are attached nowhere but here.
        let name = volume.attachments.first?.device ?? configuration.device.text
        guard let device = host.devices.find(volume.id, sizeGiB: volume.sizeGiB, attachedAs: name) else { return }
        if let entry = try host.mounter.mounts().first(where: { $0.device == device.device.number }) {
            throw HostError.retiringMounted(volume.id, mountPoint: entry.mountPoint)
        }
    }

    /// The unmount before moving to a newer release. A mount that is busy (EBUSY: a push's
    /// rsync, a service not ordered after snapmount) is tried again, with a growing pause,
    /// within the run's deadline; each try names the processes holding it. Still busy at the
    /// deadline: 75, the release mounted as it was.
    private func unmountBusyAware(_ path: String) throws {
        var pause = Duration.milliseconds(250)
        while true {
            do throws(MountError) {
                try host.mounter.unmount(path)
                return
            } catch {
                guard case .unmountFailed(_, EBUSY) = error else { throw error }
                let holders = mountHolders(path, proc: host.procDirectory)
                guard clock.allows(pause) else { throw HostError.mountBusy(path, holders: holders) }
                let held = holders.isEmpty ? "" : ", held by " + holders.map(\.description).joined(separator: ", ")
                logger.warning("\(path) is busy\(held); trying the unmount again in \(DurationText.format(pause))")
                clock.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }

    /// What the source names now, for the check after mounting; `nil` when it cannot be
    /// read now (the release mounted stays).
    private func publishedNow(_ session: CloudSession) -> SnapshotID? {
        do {
            return try session.publishedID(configuration.source, owner: configuration.snapshotOwner)
        } catch {
            logger.warning("cannot read \(configuration.source) again after mounting (\(error)); keeping the release mounted")
            return nil
        }
    }

    /// Step 6: attached to this instance, DeleteOnTermination set.
    private func ensureAttached(_ session: CloudSession, _ volume: VolumeOutcome) throws -> StepResult<AttachOutcome> {
        let device = configuration.device.text
        let outcome = try session.volumes.ensureAttached(volume, device: device, mode: mode, signal: attachSignal(volume))
        switch outcome {
        case .attached(let attachment):
            let deleteOnTermination = attachment.deleteOnTermination == true
                ? "DeleteOnTermination set" : "would set DeleteOnTermination (DryRunOperation)"
            return .done(outcome, "\(attachment.volumeID) is \(attachment.state) at \(attachment.device); \(deleteOnTermination)")
        case .wouldAttach:
            return .done(outcome, "would attach \(volume.volume.map(\.id.text) ?? "it") at \(device) and set DeleteOnTermination (DryRunOperation)")
        case .notChecked(let reason):
            return StepResult(value: outcome, mark: .notApplicable, detail: reason)
        }
    }

    /// The device appearing is the attach step's signal: the kernel shows it the moment the
    /// attachment completes. Watching `/dev` costs nothing; DescribeVolumes is the fallback.
    private func attachSignal(_ volume: VolumeOutcome) -> AttachSignal? {
        guard mode == .apply, let target = volume.volume else { return nil }
        let devices = host.devices
        let name = configuration.device.text
        let watch = try? devices.watch()
        let clock = clock
        return AttachSignal(
            deviceIsPresent: { devices.find(target.id, sizeGiB: target.sizeGiB, attachedAs: name) != nil },
            waitForChange: { timeout in
                if let watch { watch.wait(upTo: timeout) } else { clock.sleep(for: timeout) }
            })
    }

    /// Step 7: the block device that is the volume (DESIGN.md §4). Apply mode waits for it,
    /// bounded by `device-timeout`; check mode looks once.
    private func findDevice(_ volume: VolumeOutcome, _ attach: AttachOutcome) throws -> StepResult<ProvenDevice> {
        let timeout = configuration.deviceTimeout
        guard let volume = volume.volume, case .attached(let attachment) = attach else {
            return .skipped("nothing attached yet; a run would wait up to \(DurationText.format(timeout)) for it")
        }
        // Where EC2 says it is attached (a reused volume may be elsewhere than configured).
        let name = attachment.device.isEmpty ? configuration.device.text : attachment.device
        switch mode {
        case .check:
            guard let device = host.devices.find(volume.id, sizeGiB: volume.sizeGiB, attachedAs: name) else {
                throw HostError.deviceNotPresent(volume.id, seen: host.devices.scan().map(\.description))
            }
            return .done(device, "\(volume.id) is \(device)")
        case .apply:
            let device = try host.devices.wait(for: volume.id, sizeGiB: volume.sizeGiB, attachedAs: name, timeout: clock.capped(timeout),
                                               clock: clock)
            return .done(device, "\(volume.id) is \(device)")
        }
    }

    /// Step 8: fsck a filesystem with the expected type and label, mkfs a blank device,
    /// refuse anything else (DESIGN.md §5 rule 1).
    private func prepareFilesystem(_ device: ProvenDevice) throws -> StepResult<Filesystem> {
        let path = device.path
        let content = try host.prober.probe(path)
        let interrupted = fileExists(host.formatMarker(device.volume))
        let action = try FilesystemDecision.decide(content, expected: configuration.filesystem, label: configuration.label,
                                                   formatInterrupted: interrupted) { () throws(ProbeError) in try host.prober.isZeroed(path) }
        if interrupted { logger.warning("\(path): snapmount's earlier mkfs of \(device.volume) never finished; formatting it again") }
        switch action {
        case .refuse(let found):
            throw HostError.refusedContent(device: path, found: found,
                                           expected: "\(configuration.filesystem) labelled \(configuration.label.text.quotedForMessage())")
        case .check(let filesystem):
            guard mode == .apply else { return .done(filesystem, "\(content); would \(filesystem == .ext4 ? "fsck it" : "mount it (xfs checks its own log)")") }
            try check(path, filesystem)
            return .done(filesystem, "\(content), checked")
        case .format(let filesystem):
            guard mode == .apply else {
                return .done(filesystem, (interrupted ? "an interrupted mkfs of snapmount's" : "blank") + "; would format it \(filesystem) labelled \(configuration.label)")
            }
            try format(device, filesystem, again: interrupted)
            return .done(filesystem, "formatted \(filesystem) labelled \(configuration.label)")
        }
    }

    private func check(_ path: String, _ filesystem: Filesystem) throws {
        guard filesystem == .ext4 else {
            logger.info("\(path): xfs checks its own log when mounted; no fsck")
            return
        }
        let result = try host.runner.run("fsck.ext4", ["-p", path], timeout: clock.capped(Self.programLimit))
        switch FsckOutcome(status: result.status) {
        case .clean: return
        case .corrected: logger.notice("fsck corrected errors on \(path)")
        case .correctedRebootAdvised: logger.warning("fsck corrected errors on \(path) and advises a reboot")
        case .uncorrected: throw HostError.fsckFailed(device: path, status: result.status, output: result.output)
        case .notChecked, .fsckBroken: throw HostError.fsckNotFinished(device: path, status: result.status, output: result.output)
        }
    }

    /// mkfs and fsck may take this long, within what is left of the run.
    static let programLimit: Duration = .seconds(600)

    /// mkfs, with a marker around it in the record directory: a run that finds the marker
    /// knows the device holds only snapmount's own unfinished mkfs, and formats it again.
    private func format(_ device: ProvenDevice, _ filesystem: Filesystem, again: Bool) throws {
        let path = device.path
        // Probe again at the last moment: only a device with no signature at all is formatted.
        if !again {
            guard case .blank = try host.prober.probe(path), try host.prober.isZeroed(path) else {
                throw HostError.refusedContent(device: path, found: "a signature that appeared while checking", expected: "blank")
            }
        }
        let marker = host.formatMarker(device.volume)
        do {
            try makeDirectories(host.recordDirectory, mode: 0o755)
            try AtomicFile.replace(marker, with: Array("\(device.volume) \(path) \(clock.now().iso8601)\n".utf8))
        } catch {
            throw HostError.state("\(error)")
        }
        Failpoint.hit("after-format-marker")
        let label = configuration.label.text
        let result = try host.runner.run("mkfs.\(filesystem)", ["-q", "-L", label] + (again ? [filesystem == .xfs ? "-f" : "-F"] : []) + [path],
                                         timeout: clock.capped(Self.programLimit))
        guard result.status == 0 else { throw HostError.mkfsFailed(device: path, status: result.status, output: result.output) }
        removeFile(marker)
        logger.info("formatted \(again ? "again" : "blank") \(path) as \(filesystem) labelled \(label)")
    }

    public var fstabEntry: FstabEntry {
        // systemd waits for the device from the start of the boot: as long as the whole run may take.
        FstabEntry(label: configuration.label, mountPoint: configuration.mountPoint, filesystem: configuration.filesystem,
                   options: configuration.mountOptions, deviceWait: configuration.runTimeout + VolumeManager.rollBackGrace + .seconds(30))
    }

    /// Step 9: one entry, added atomically, if not there already.
    private func addFstabEntry() throws -> StepResult<Void> {
        // A symbolic link is edited at its target, and stays a link.
        let path = resolvedPath(configuration.fstab.text)
        var current: [UInt8] = []
        do throws(SystemCallError) {
            current = try readFile(path, limit: 1 << 20)
        } catch {
            guard error.errno == ENOENT else { throw error }
        }
        switch try FstabEditor.ensure(fstabEntry, in: current) {
        case .unchanged:
            return .done((), "\(path) already has: \(fstabEntry.line)")
        case .append(let bytes):
            guard mode == .apply else { return .done((), "would add to \(path): \(fstabEntry.line)") }
            try AtomicFile.replace(path, with: bytes)
            logger.info("added to \(path): \(fstabEntry.line)")
            return .done((), "added to \(path): \(fstabEntry.line)")
        case .replace(let lineNumber, let bytes):
            guard mode == .apply else { return .done((), "would update line \(lineNumber) of \(path), an earlier snapmount's, to: \(fstabEntry.line)") }
            try AtomicFile.replace(path, with: bytes)
            logger.info("updated line \(lineNumber) of \(path), an earlier snapmount's, to: \(fstabEntry.line)")
            return .done((), "updated line \(lineNumber) of \(path) to: \(fstabEntry.line)")
        }
    }

    /// Step 10: mkdir and mount(2), unless already mounted from this device.
    private func mount(_ device: ProvenDevice, _ filesystem: Filesystem) throws -> StepResult<Void> {
        let mountPoint = configuration.mountPoint.text
        guard mode == .apply else { return .skipped("would mount \(device) on \(mountPoint) (\(filesystem))") }
        if let entry = try host.mounted(at: mountPoint)?.entry {
            guard entry.device == device.device.number else { throw HostError.otherMounted(mountPoint: mountPoint, source: entry.source) }
            return .done((), "\(mountPoint) was mounted from \(device) already")
        }
        try host.mounter.mount(device: device.path, on: mountPoint, type: filesystem.rawValue, options: fstabEntry.options.split(separator: ",").map(String.init))
        return .done((), "mounted \(device) on \(mountPoint)")
    }

    /// Step 11: the record `snapmount status` reads.
    private func writeRecord(_ session: CloudSession, _ snapshot: EC2Snapshot, _ volume: EC2Volume,
                             _ device: ProvenDevice) throws -> StepResult<MountRecord> {
        // The release source holds what it holds (its last publish, and what was staged since).
        let held = volume.isReleaseSource ? volume.heldRelease : snapshot.releaseIdentity
        let record = MountRecord(instance: session.identity.instanceID.text, snapshot: held == snapshot.releaseIdentity ? snapshot.id.text : nil,
                                 volume: volume.id.text, device: device.path, mountPoint: configuration.mountPoint.text,
                                 completedAt: clock.now().iso8601, timings: timings, release: held?.text)
        do {
            try record.save(to: host.recordDirectory, path: host.recordPath)
        } catch {
            throw HostError.state("\(error)")
        }
        return .done(record, "wrote \(host.recordPath)")
    }

    /// The release is mounted already (a reboot: systemd mounted the fstab line): keep the
    /// record true — same volume, the snapshot it knew; another volume, what the machine
    /// tells (its NVMe serial), the snapshot left for `status` to ask EC2. No cloud call.
    private func refreshRecord(device: String) {
        let name = device.split(separator: "/").last.map(String.init) ?? device
        let serial = host.devices.scan().first { $0.name == name }?.serial
        let old = MountRecord.load(host.recordPath)
        guard let volume = serial.flatMap(VolumeID.fromNVMeSerial)?.text ?? (old?.device == device ? old?.volume : nil) else { return }
        let same = old?.volume == volume
        let record = MountRecord(instance: same ? old?.instance : nil, snapshot: same ? old?.snapshot : nil, volume: volume, device: device,
                                 mountPoint: configuration.mountPoint.text, completedAt: same ? old?.completedAt ?? "" : clock.now().iso8601,
                                 timings: same ? old?.timings ?? [] : [], release: same ? old?.release : nil)
        guard record != old else { return }
        do {
            try record.save(to: host.recordDirectory, path: host.recordPath)
        } catch {
            logger.warning("cannot refresh \(host.recordPath): \(error)")
        }
    }
}
