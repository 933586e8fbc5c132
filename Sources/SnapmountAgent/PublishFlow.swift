#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SnapmountCore
import SnapmountSystem

/// Why `snapmount publish` stopped.
public enum PublishError: SnapmountError, Equatable {
    case notMounted(String)
    case noEBSVolume(mountPoint: String, device: String)
    case volumeNotFound(VolumeID)
    case notAttachedHere(VolumeID, instance: InstanceID, attachedTo: String)
    case freeze(SystemCallError)
    case thaw(SystemCallError)
    case snapshotFailed(SnapshotID, progress: String)
    case snapshotVanished(SnapshotID)
    case notCompleted(SnapshotID, progress: String, after: Duration)
    case output(path: String, SystemCallError)
    case manifest(path: String, SystemCallError)

    public var exitStatus: ExitStatus {
        switch self {
        case .notMounted, .noEBSVolume, .volumeNotFound, .notAttachedHere: .configuration
        case .freeze(let error), .output(_, let error):
            [EPERM, EACCES, EROFS].contains(error.errno) ? .permissionDenied : error.errno == EOPNOTSUPP ? .configuration : .internalError
        case .thaw: .internalError
        case .manifest(_, let error): [EPERM, EACCES, EROFS].contains(error.errno) ? .permissionDenied : .internalError
        case .snapshotFailed, .snapshotVanished: .unavailable
        case .notCompleted: .timedOut
        }
    }

    public var description: String {
        switch self {
        case .notMounted(let mountPoint):
            "\(mountPoint) is not a mount point; publish snapshots the EBS volume mounted there (or name it with --volume)"
        case .noEBSVolume(let mountPoint, let device):
            "\(mountPoint) is mounted from \(device), which is not an EBS NVMe device (no vol… serial); name the volume with --volume"
        case .volumeNotFound(let volume):
            "EC2 knows no volume \(volume) in this region"
        case .notAttachedHere(let volume, let instance, let attachedTo):
            "\(volume) is \(attachedTo), not attached to this instance (\(instance)); publish freezes the filesystem here, so it snapshots only a volume mounted here"
        case .freeze(let error):
            "cannot freeze the release filesystem: \(error)" + (error.errno == EPERM ? " (publish needs root: CAP_SYS_ADMIN)" : "")
        case .thaw(let error):
            "cannot thaw the release filesystem: \(error); writes to it stay blocked until `fsfreeze --unfreeze` succeeds"
        case .snapshotFailed(let id, let progress):
            "snapshot \(id) ended in state error at \(progress); the published id is unchanged"
        case .snapshotVanished(let id):
            "snapshot \(id) disappeared while publish waited for it; the published id is unchanged"
        case .notCompleted(let id, let progress, let after):
            "snapshot \(id) is still pending at \(progress) after \(DurationText.format(after)); the published id is unchanged (run publish again later, or raise --timeout)"
        case .output(let path, let error):
            "cannot write \(path): \(error); the published id is unchanged"
        case .manifest(let path, let error):
            "cannot write the release manifest \(path): \(error); nothing was snapshotted"
        }
    }
}

/// What `snapmount publish` is asked to do.
public struct PublishOptions: Sendable {
    public var mountPoint: AbsolutePath
    /// The release volume; `nil`: the EBS volume mounted at ``mountPoint``.
    public var volume: VolumeID?
    public var target: PublishTarget
    public var release: String
    /// Keep this many of the release's snapshots (the new one included); `nil` keeps all.
    public var keep: Int?
    /// The longest the filesystem stays frozen: CreateSnapshot's bound.
    public var freezeLimit = PublishOptions.defaultFreezeLimit
    public static let defaultFreezeLimit: Duration = .seconds(10)
    /// Freeze-and-snapshot rounds, when CreateSnapshot fails in a way worth another try.
    public var rounds = 3

    public init(mountPoint: AbsolutePath, volume: VolumeID?, target: PublishTarget, release: String, keep: Int?) {
        self.mountPoint = mountPoint
        self.volume = volume
        self.target = target
        self.release = release
        self.keep = keep
    }
}

/// How publish ended.
public enum PublishOutcome: Sendable, Equatable {
    case published(SnapshotID, previous: SnapshotID?, deleted: [SnapshotID])
    /// Check mode: the checklist is complete; the status is that of its first ✗.
    case checked(ExitStatus)

    /// The id published, when it was: `try #require(outcome.publishedID)`.
    public var publishedID: SnapshotID? { published?.id }

    /// The id published, the one it replaced and what `--keep` deleted, when it was published.
    public var published: (id: SnapshotID, previous: SnapshotID?, deleted: [SnapshotID])? {
        if case .published(let id, let previous, let deleted) = self { return (id, previous, deleted) }
        return nil
    }
}

/// `snapmount publish`: the release server's half of the article's workflow, as named steps
/// with a checklist like the boot flow's (and `--dry-run` is the same list in check mode).
/// The volume behind the release mount point is snapshotted while its filesystem is frozen
/// — thawed as soon as CreateSnapshot answers, and at the latest after `freezeLimit` —, the
/// snapshot is waited for until `completed`, then its id replaces the published one
/// atomically, the previous one kept beside it for a rollback.
public final class PublishFlow {
    public let options: PublishOptions
    public let mode: FlowMode
    private let environment: AgentEnvironment
    private let host: HostEdges
    private let freezer: any FilesystemFreezer
    private let clock: any AgentClock
    private let logger: Logger
    private let tuning: CloudTuning
    private let progress: SnapshotProgress
    private var steps: StepRecorder<PublishStep>
    public var checklist: [ChecklistItem<PublishStep>] { steps.checklist }

    public init(options: PublishOptions, environment: AgentEnvironment, host: HostEdges, freezer: any FilesystemFreezer,
                mode: FlowMode = .apply, clock: any AgentClock = SystemClock(), logger: Logger, tuning: CloudTuning = CloudTuning(),
                progress: SnapshotProgress? = nil) {
        self.options = options
        self.environment = environment
        self.host = host
        self.freezer = freezer
        self.mode = mode
        self.clock = clock
        self.logger = logger
        self.tuning = tuning
        self.progress = progress ?? SnapshotProgress(logger: logger)
        steps = StepRecorder(mode: mode, clock: clock, logger: logger)
    }

    public var lockPath: String { ReleaseLock.path(in: host.lockDirectory) }

    public func run() throws -> PublishOutcome {
        let started = clock.monotonic()
        steps = StepRecorder(mode: mode, clock: clock, logger: logger)
        let lock = try steps.run(.lock, takeLock)
        defer { withExtendedLifetime(lock) {} }
        let session = try steps.run(.identity) { try SharedSteps.identity(environment, clock: clock, logger: logger, tuning: tuning) }
        let credentials = try steps.run(.credentials, needs: session, SharedSteps.credentials)
        let volume = try steps.run(.volume, needs: both(session, credentials)) { session, _ in try findVolume(session) }
        let manifest = try steps.run(.manifest, needs: volume) { volume in try writeManifest(volume) }
        // Whatever ends the run from here, a failed round's snapshot that appears late is
        // looked for once more (and the next publish sweeps what is left).
        defer { if let session, let volume { sweepStrays(session, volume, keeping: nil, quiet: true) } }
        let snapshot = try steps.run(.snapshot, needs: both(session, both(volume, manifest))) { session, volumeAndManifest in
            try takeSnapshot(session, volumeAndManifest.0, volumeAndManifest.1)
        }
        let completed = try steps.run(.wait, needs: both(session, snapshot), otherwise: "no snapshot to wait for") { session, snapshot in
            try waitCompleted(session, snapshot)
        }
        try steps.run(.mark, needs: both(session, completed), otherwise: "no snapshot to mark") { session, completed in
            try mark(session, completed, volume: volume)
        }
        let previous = try steps.run(.publish, needs: session) { session in try publish(session, completed) }
        let deleted = try steps.run(.prune, needs: session) { session in
            try prune(session, current: completed?.id, previous: previous ?? nil)
        }
        guard mode == .apply, let completed else { return .checked(steps.checklist.exitStatus) }
        logger.info("published \(completed.id) in \(options.target) (\(steps.summary(since: started)))")
        return .published(completed.id, previous: previous ?? nil, deleted: deleted ?? [])
    }

    // MARK: - The steps

    /// One publish, push or rollback at a time on this server.
    private func takeLock() throws -> StepResult<FileLock?> {
        try SharedSteps.lock(mode, path: lockPath, holder: "publish, push or rollback") {
            try ReleaseLock.take(in: host.lockDirectory, timeout: host.lockTimeout, clock: clock)
        }
    }

    /// The EBS volume behind the mount point, by its NVMe serial (as the boot side proves a
    /// device), or the one `--volume` names; either way attached to this instance.
    private func findVolume(_ session: CloudSession) throws -> StepResult<EC2Volume> {
        let mountPoint = options.mountPoint.text
        guard let here = try host.mounted(at: mountPoint) else { throw PublishError.notMounted(mountPoint) }
        let id: VolumeID
        if let given = options.volume {
            id = given
        } else {
            guard let fromSerial = here.volume else { throw PublishError.noEBSVolume(mountPoint: mountPoint, device: here.devicePath) }
            id = fromSerial
        }
        let found: [EC2Volume]
        do throws(EC2CallError) {
            found = try session.ec2.describeVolumes(ids: [id])
        } catch {
            guard error.code == "InvalidVolume.NotFound" else { throw error }
            found = []
        }
        guard let volume = found.first(where: { $0.id == id }) else { throw PublishError.volumeNotFound(id) }
        let instance = session.identity.instanceID
        guard volume.attachments.contains(where: { $0.instanceID == instance && $0.state == .attached }) else {
            let elsewhere = volume.attachments.first.map { "attached to \($0.instanceID)" } ?? String(describing: volume.state)
            throw PublishError.notAttachedHere(id, instance: instance, attachedTo: elsewhere)
        }
        // The volume publish snapshots is the release source: no boot anywhere retires it,
        // and this server's own boot (the same mount point) mounts it as it is.
        let roleTags = [VolumeTag(key: ReleaseTags.role, value: ReleaseTags.sourceRole),
                        VolumeTag(key: VolumeRequest.instanceTag, value: instance.text),
                        VolumeTag(key: ReleaseTags.mountPoint, value: mountPoint)]
        let tagged = roleTags.allSatisfy { volume.tags[$0.key] == $0.value }
        if !tagged {
            if mode == .apply {
                try session.ec2.createTags([volume.id.text], roleTags)
            } else if case .denied(let error) = try session.ec2.dryRun("CreateTags", session.ec2.createTagsParameters([volume.id.text], roleTags)) {
                throw EC2CallError.service(error)
            }
        }
        let role = tagged ? "the release source" : mode == .apply ? "tagged as the release source" : "would tag it as the release source (DryRunOperation)"
        return .done(volume, "\(mountPoint) is \(here.entry.type) on \(volume.id) (\(volume.sizeGiB) GiB); \(role)")
    }

    /// The release's identity, written into the filesystem before it is frozen: the snapshot
    /// carries it in its bytes, and in its tags.
    private func writeManifest(_ volume: EC2Volume) throws -> StepResult<ReleaseManifest> {
        let root = options.mountPoint.text
        let now = clock.now()
        let manifest = ReleaseManifest(id: ReleaseID.new(at: now, random: randomHexDigits(8)), release: options.release, createdAt: now.iso8601)
        let path = ReleaseManifest.path(in: root)
        guard mode == .apply else {
            guard access(root, W_OK) == 0 else { throw PublishError.manifest(path: path, SystemCallError("access", root, errno: errno)) }
            return .done(manifest, "would write \(path) naming a new release identity")
        }
        do throws(SystemCallError) { try manifest.save(in: root) } catch { throw PublishError.manifest(path: path, error) }
        return .done(manifest, "\(path) names \(manifest.id)")
    }

    /// Freeze, CreateSnapshot, thaw — the thaw as soon as the call returns, whatever it
    /// returned, and the call bounded by `freezeLimit`. A round that failed gives back any
    /// snapshot it made after all (its answer lost: it may hold writes made after the thaw)
    /// and, when the failure is worth it, freezes again.
    private func takeSnapshot(_ session: CloudSession, _ volume: EC2Volume, _ manifest: ReleaseManifest) throws -> StepResult<EC2Snapshot> {
        let mountPoint = options.mountPoint.text
        guard mode == .apply else {
            do throws(SystemCallError) { try freezer.check(mountPoint) } catch { throw PublishError.freeze(error) }
            let request = SnapshotRequest(volume: volume.id, release: options.release, mountPoint: mountPoint, time: clock.now(), attemptID: "dry-run",
                                          identity: manifest.id)
            switch try session.ec2.dryRun("CreateSnapshot", request.parameters) {
            case .permitted:
                return StepResult(value: nil, mark: .ok,
                                  detail: "would freeze \(mountPoint) (at most \(DurationText.format(options.freezeLimit))) and snapshot \(volume.id) (DryRunOperation)")
            case .denied(let error): throw EC2CallError.service(error)
            }
        }
        // What an earlier publish of this volume left unmarked (a round's late snapshot, a
        // publish that died) is no release: deleted before this one begins.
        let swept = sweepStrays(session, volume, keeping: nil, quiet: false)
        // The rounds are the one retry loop's attempts, on top of EC2's: each round a single
        // CreateSnapshot bounded by the freeze limit, and a failed one given back first.
        let rounds = RetryLoop(policy: session.ec2.retryPolicy, clock: clock, service: "EC2", logger: logger)
        var round = 0
        return try rounds.run("CreateSnapshot", maxAttempts: options.rounds, reason: { (error: Error) in
            guard let error = error as? EC2CallError else { return "\(error)" }
            return "\(error.shortReason) (\(mountPoint) thawed); freezing again"
        }) { _ -> Attempt<StepResult<EC2Snapshot>, Error> in
            round += 1
            let request = SnapshotRequest(volume: volume.id, release: options.release, mountPoint: mountPoint, time: clock.now(),
                                          attemptID: randomHexDigits(16), identity: manifest.id)
            let frozen = clock.monotonic()
            do throws(SystemCallError) { try freezer.freeze(mountPoint) } catch { return .failure(PublishError.freeze(error), .final) }
            if round == 1, let warning = freezer.guardWarning(mountPoint) { logger.warning("\(warning)") }
            let result: Result<EC2Snapshot, EC2CallError>
            do throws(EC2CallError) {
                result = .success(try session.ec2.createSnapshot(request, timeout: clock.capped(options.freezeLimit)))
            } catch {
                result = .failure(error)
            }
            do throws(SystemCallError) { try freezer.thaw(mountPoint) } catch {
                logger.critical("\(PublishError.thaw(error))")
                return .failure(PublishError.thaw(error), .final)
            }
            let held = clock.monotonic() - frozen
            switch result {
            case .success(let snapshot):
                current = snapshot.id
                logger.info("\(mountPoint) was frozen for \(DurationText.format(.milliseconds(held.wholeMilliseconds))) while EC2 took \(snapshot.id)")
                let sweep = swept.isEmpty ? "" : "; deleted \(swept.count) unpublished snapshot(s) an earlier publish left (\(swept.map(\.text).joined(separator: ", ")))"
                return .success(.done(snapshot, "\(snapshot.id) of \(volume.id), \(mountPoint) frozen for \(DurationText.format(.milliseconds(held.wholeMilliseconds)))" + sweep))
            case .failure(let error):
                do { try giveBackStray(session, request) } catch { return .failure(error, .final) }
                return .failure(error, EC2Client.retryClass(of: error))
            }
        }
    }

    /// A failed round's snapshot, if EC2 made one after all: deleted, never published.
    private func giveBackStray(_ session: CloudSession, _ request: SnapshotRequest) throws {
        let strays = (try? session.ec2.describeSnapshots(filters: [("tag:\(SnapshotRequest.attemptTag)", [request.attemptID])])) ?? []
        for stray in strays where stray.tags[SnapshotRequest.attemptTag] == request.attemptID {
            logger.warning("CreateSnapshot made \(stray.id) although its answer failed; deleting it: it may hold writes made after the thaw")
            do {
                try session.ec2.deleteSnapshot(stray.id)
            } catch {
                // Unmarked, it is no release; the next publish deletes it.
                logger.warning("cannot delete \(stray.id) now (\(error)); it is never published, and the next publish deletes it")
            }
        }
    }

    /// The snapshots publish made of this volume and never marked as a release: deleted
    /// (best effort; the next publish looks again). `keeping`: the one this run is still
    /// waiting for or marking. Returns those deleted.
    @discardableResult
    private func sweepStrays(_ session: CloudSession, _ volume: EC2Volume, keeping: SnapshotID?, quiet: Bool) -> [SnapshotID] {
        guard mode == .apply else { return [] }
        let found: [EC2Snapshot]
        do {
            found = try session.ec2.describeSnapshots(filters: [("tag:\(SnapshotRequest.sourceVolumeTag)", [volume.id.text]),
                                                                ("tag-key", [SnapshotRequest.attemptTag])])
        } catch {
            if !quiet { logger.warning("cannot look for unpublished snapshots of \(volume.id) (\(error)); the next publish looks again") }
            return []
        }
        var deleted: [SnapshotID] = []
        for stray in found where stray.isUnpublishedAttempt && stray.id != keeping && stray.id != current {
            do {
                try session.ec2.deleteSnapshot(stray.id)
                logger.warning("deleted \(stray.id): a snapshot publish made of \(volume.id) and never published (a failed round's late snapshot, or a publish that died)")
                deleted.append(stray.id)
            } catch {
                logger.warning("cannot delete the unpublished snapshot \(stray.id) (\(error)); the next publish tries again")
            }
        }
        return deleted
    }

    /// The snapshot of this run, once taken: never swept.
    private var current: SnapshotID?

    /// Completed: now it is a release. The mark (the release tag, and the output it is
    /// published to) is what `tag:` sources, `--keep` and the strays' sweep read; the
    /// release server's volume records which release it last published.
    private func mark(_ session: CloudSession, _ snapshot: EC2Snapshot, volume: EC2Volume?) throws -> StepResult<Void> {
        let tags = [VolumeTag(key: SnapshotRequest.releaseTag, value: options.release), VolumeTag(key: ReleaseTags.output, value: options.target.description)]
        try session.ec2.createTags([snapshot.id.text], tags)
        if let volume {
            do {
                try session.ec2.createTags([volume.id.text], [VolumeTag(key: ReleaseTags.releaseID, value: snapshot.releaseIdentity.text)])
            } catch {
                logger.warning("cannot record on \(volume.id) that it was published as \(snapshot.releaseIdentity): \(error)")
            }
        }
        return .done((), "\(snapshot.id) marked as release \(options.release) (\(snapshot.releaseIdentity)), published to \(options.target)")
    }

    /// Until `completed`, with a progress line; `error` ends publish with the published id
    /// unchanged.
    private func waitCompleted(_ session: CloudSession, _ snapshot: EC2Snapshot) throws -> StepResult<EC2Snapshot> {
        let started = clock.monotonic()
        var current = snapshot
        var poll = 0
        while current.state == .pending {
            let delay = tuning.snapshotPoll.delay(beforePoll: poll)
            guard clock.allows(delay) else {
                throw PublishError.notCompleted(current.id, progress: current.progress, after: clock.monotonic() - started)
            }
            clock.sleep(for: delay)
            poll += 1
            guard let next = try session.ec2.describeSnapshot(current.id) else { throw PublishError.snapshotVanished(current.id) }
            current = next
            progress.report(current, after: clock.monotonic() - started)
        }
        progress.finish()
        switch current.state {
        case .completed:
            return .done(current, "\(current.id) completed in \(DurationText.format(.milliseconds((clock.monotonic() - started).wholeMilliseconds)))")
        default:
            throw PublishError.snapshotFailed(current.id, progress: current.progress.isEmpty ? String(describing: current.state) : current.progress)
        }
    }

    /// The new id replaces the published one atomically; the previous one goes to
    /// `<file>.prev` first, for a rollback.
    private func publish(_ session: CloudSession, _ snapshot: EC2Snapshot?) throws -> StepResult<SnapshotID?> {
        switch options.target {
        case .ssm(let name):
            // SSM keeps every version of the parameter: the previous id stays in its history.
            var previous: SnapshotID?
            do throws(SSMCallError) {
                previous = SnapshotID(try session.ssm.parameter(name).trimmingWhitespace())
            } catch {
                guard error.code == "ParameterNotFound" else { throw error }
            }
            guard mode == .apply, let snapshot else {
                return .done(previous, "would put the new id in ssm:\(name)" + (previous.map { " (now \($0))" } ?? " (not there yet)"))
            }
            let version = try session.ssm.putParameter(name, value: snapshot.id.text, description: "snapmount publish of \(options.release)")
            let detail = "ssm:\(name) now names \(snapshot.id) (version \(version))" + (previous.map { $0 == snapshot.id ? "" : "; it named \($0)" } ?? "")
            logger.info("\(detail)")
            return .done(previous, detail)
        case .file(let path):
            let file = path.text
            let previous = try? SnapshotSourceBody.parse(readFile(file, limit: 4096), url: file)
            guard mode == .apply, let snapshot else {
                let directory = String(file[..<(file.lastIndex(of: "/") ?? file.startIndex)])
                guard access(directory.isEmpty ? "/" : directory, W_OK) == 0 else {
                    throw PublishError.output(path: file, SystemCallError("access", directory, errno: errno))
                }
                return .done(previous, "would write the new id to \(file)" + (previous.map { " (now \($0))" } ?? " (now absent or not an id)"))
            }
            do throws(SystemCallError) {
                if let previous, previous != snapshot.id {
                    try AtomicFile.replace(file + ".prev", with: snapshotFileBody(previous))
                }
                try AtomicFile.replace(file, with: snapshotFileBody(snapshot.id))
            } catch {
                throw PublishError.output(path: file, error)
            }
            let detail = "\(file) now names \(snapshot.id)" + (previous.map { $0 == snapshot.id ? "" : "; \(file).prev names \($0)" } ?? "")
            logger.info("\(detail)")
            return .done(previous, detail)
        }
    }

    /// `--keep N`: of the release's snapshots published to this output, those beyond the N
    /// newest — never one that any output of the release names now or as its previous id
    /// (every output its snapshots were published to is read first; one that cannot be read
    /// keeps everything), never one still pending.
    private func prune(_ session: CloudSession, current: SnapshotID?, previous: SnapshotID?) throws -> StepResult<[SnapshotID]> {
        guard let keep = options.keep else { return .skipped("keeping every snapshot (no --keep)") }
        let ours = try session.ec2.describeSnapshots(filters: [("tag:\(SnapshotRequest.releaseTag)", [options.release])])
        let outputs = Set(ours.compactMap { $0.tags[ReleaseTags.output] }).subtracting([options.target.description])
        var named = Set([current, previous].compactMap { $0 })
        for output in outputs.sorted() {
            guard let target = try? PublishTarget(parsing: output) else {
                return .done([], "kept every snapshot: a snapshot of \(options.release) names the output \(output.quotedForMessage()), which is not one")
            }
            do {
                named.formUnion(try namedIDs(session, target))
            } catch {
                logger.warning("--keep: cannot read \(output), where \(options.release) is published too (\(error)); keeping every snapshot")
                return .done([], "kept every snapshot: cannot read \(output), which another publish of \(options.release) writes (\(error))")
            }
        }
        // Only snapshots marked as published here: one from before outputs were tagged may be
        // what another output names, which cannot be read from its tags.
        let candidates = ours.filter { $0.tags[ReleaseTags.output] == options.target.description }
        let doomed = SnapshotRetention.toDelete(candidates, keep: keep, release: options.release, protected: named)
        let others = outputs.isEmpty ? "" : ", none that \(outputs.sorted().joined(separator: ", ")) names"
        guard mode == .apply else {
            guard let first = doomed.first else { return .done([], "nothing to delete: \(candidates.count) snapshots of \(options.release) published to \(options.target), keeping \(keep)\(others)") }
            switch try session.ec2.dryRun("DeleteSnapshot", ["SnapshotId": first.id.text]) {
            case .permitted: return .done([], "would delete \(doomed.count) (\(doomed.map(\.id.text).joined(separator: ", "))) (DryRunOperation)")
            case .denied(let error): throw EC2CallError.service(error)
            }
        }
        for snapshot in doomed { try session.ec2.deleteSnapshot(snapshot.id) }
        let detail = doomed.isEmpty ? "nothing to delete (keeping \(keep)\(others))" : "deleted \(doomed.map(\.id.text).joined(separator: ", ")) (keeping \(keep)\(others))"
        if !doomed.isEmpty { logger.info("\(detail)") }
        return .done(doomed.map(\.id), detail)
    }

    /// The ids an output names: a file's id and its `.prev`; an SSM parameter's value and the
    /// value before it.
    private func namedIDs(_ session: CloudSession, _ target: PublishTarget) throws -> Set<SnapshotID> {
        switch target {
        case .file(let path):
            var ids: Set<SnapshotID> = []
            for file in [path.text, path.text + ".prev"] {
                let bytes: [UInt8]
                do throws(SystemCallError) {
                    bytes = try readFile(file, limit: 4096)
                } catch {
                    // No .prev yet is fine; no file at all is not.
                    if file == path.text || error.errno != ENOENT { throw error }
                    continue
                }
                ids.insert(try SnapshotSourceBody.parse(bytes, url: file))
            }
            return ids
        case .ssm(let name):
            return Set(try session.ssm.history(name).compactMap { SnapshotID($0.value.trimmingWhitespace()) }.suffix(2))
        }
    }
}

/// The wait for a snapshot, shown as it goes: on a terminal a bar redrawn in place, in the
/// journal a line every few seconds.
public final class SnapshotProgress {
    private let logger: Logger
    private let terminal: ((String) -> Void)?
    private let every: Duration
    private var lastLine: Duration?
    private var drawn = false

    /// `terminal`: writes to a terminal (a bar); `nil`: log lines, one per `every`.
    public init(logger: Logger, terminal: ((String) -> Void)? = nil, every: Duration = .seconds(5)) {
        self.logger = logger
        self.terminal = terminal
        self.every = every
    }

    func report(_ snapshot: EC2Snapshot, after elapsed: Duration) {
        let percent = snapshotPercent(snapshot.progress)
        if let terminal {
            let filled = (percent ?? 0) * 30 / 100
            terminal("\r\(snapshot.id) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: 30 - filled))] \(percent.map { "\($0)%" } ?? "?")  \(DurationText.format(.seconds(elapsed.components.seconds)))")
            drawn = true
            return
        }
        guard lastLine.map({ elapsed - $0 >= every }) ?? true else { return }
        lastLine = elapsed
        logger.info("\(snapshot.id) is \(snapshot.state) at \(snapshot.progress.isEmpty ? "?" : snapshot.progress) after \(DurationText.format(.seconds(elapsed.components.seconds)))")
    }

    func finish() {
        if drawn { terminal?("\n") }
        drawn = false
    }
}
