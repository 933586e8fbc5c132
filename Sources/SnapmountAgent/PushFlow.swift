#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SnapmountCore
import SnapmountSystem
import Synchronization

/// Why `snapmount push` stopped, or what it reports at the end.
public enum PushError: SnapmountError, Equatable {
    case noSuchGroups([String])
    case sourceNotMounted(String)
    case publishedUnreadable(String, String)
    /// The release here has no manifest: not a release publish made.
    case noManifest(String)
    /// Host keys could not be pinned: ssh cannot write the known-hosts file.
    case knownHostsUnwritable(String, String)
    /// The release here is not the one `--published` names.
    case notThePublishedRelease(directory: String, holds: ReleaseID, published: ReleaseID, snapshot: SnapshotID)
    /// Some hosts did not get the release; the table names them too.
    case hostsFailed([(host: String, instance: InstanceID, reason: String)], of: Int)
    /// A deployment's failures passed `--max-failures` after a wave; the rest of the hosts
    /// were not reached, and with `--rollback-on-failure` the moved ones went back.
    case deploymentStopped(DeploymentStop)
    /// Instances kept appearing: the set never settled within the rounds allowed.
    case notStable(rounds: Int, pending: Int)
    case stopped(signal: Int32)

    public static func == (lhs: PushError, rhs: PushError) -> Bool { lhs.description == rhs.description }

    public var exitStatus: ExitStatus {
        switch self {
        case .noSuchGroups, .sourceNotMounted, .noManifest, .notThePublishedRelease, .knownHostsUnwritable: .configuration
        case .publishedUnreadable: .unavailable
        case .hostsFailed, .deploymentStopped: .unavailable
        case .notStable, .stopped: .timedOut
        }
    }

    public var description: String {
        switch self {
        case .noSuchGroups(let names):
            "Auto Scaling knows no group named \(names.map { $0.quotedForMessage() }.joined(separator: ", ")) in this region"
        case .sourceNotMounted(let directory):
            "\(directory) is not a mount point here: with rsync --delete, every instance's release would become a copy of that directory; mount the release volume there, or name its mount point with --mount-point"
        case .publishedUnreadable(let target, let reason):
            "cannot read the published snapshot id from \(target): \(reason) (run snapmount publish first: push sends only the published release)"
        case .noManifest(let directory):
            "\(directory) holds no release manifest (\(ReleaseManifest.relativePath)): it is not a release snapmount publish made, and pushing it with --delete would replace every instance's release with it; run snapmount publish first"
        case .notThePublishedRelease(let directory, let holds, let published, let snapshot):
            "\(directory) holds release \(holds), but the published release is \(published) (\(snapshot)); push sends only the published release: publish this one first, or — after a rollback — let the instances converge to \(snapshot) at their next boot"
        case .knownHostsUnwritable(let path, let reason):
            "cannot write the known-hosts file \(path) (\(reason)): without it no host key is pinned and every contact would count as a first one; name a writable file with --known-hosts"
        case .hostsFailed(let failures, let total):
            "push failed on \(failures.count) of \(total) hosts: "
                + failures.map { "\($0.host) (\($0.instance)): \($0.reason)" }.joined(separator: "; ")
        case .deploymentStopped(let stop):
            stop.description
        case .notStable(let rounds, let pending):
            "new instances kept joining the groups for \(rounds) rounds (\(pending) not pushed yet); run push again"
        case .stopped(let signal):
            "stopped by signal \(signal); hosts already pushed hold the new release, the others the old one (a sync stopped half way changed nothing in use), and a host stopped during its switch holds no known release until it is pushed again (or its next boot heals it)"
        }
    }
}

/// What `snapmount push` is asked to do.
public struct PushOptions: Sendable {
    /// The Auto Scaling groups whose instances get the release.
    public var groups: [String]
    /// The release's directory here, and where it is mounted on every instance.
    public var directory: AbsolutePath
    /// Where `snapmount publish` wrote the id: the release here must be that one.
    public var published: PublishTarget
    /// Hosts synced at once (within a wave).
    public var parallel = 8
    /// Hosts per wave (`snapmount deploy --wave`); `nil`: every host in one wave, as push does.
    public var wave: HostCount?
    /// Each wave within one availability zone, zone after zone.
    public var byZone = false
    /// The failures a deployment goes on with; past them it stops after the wave. `nil`: no
    /// bound (push reaches every host).
    public var maxFailures: HostCount?
    /// When the bound stops a deployment: the hosts it moved go back to the release they had,
    /// and the published id back to the previous one.
    public var rollbackOnFailure = false
    /// The ssh command and its options, as words.
    public var ssh: [String] = ["ssh"]
    public var user = "root"
    /// Host keys, known per instance id (ssh's `HostKeyAlias`): a new instance is accepted
    /// on first contact, a changed key for the same instance refused, and an address that
    /// another instance used before is no conflict.
    public var knownHosts = PushOptions.defaultKnownHosts.text
    public static let defaultKnownHosts = AbsolutePath.knownHosts
    /// Where the release-side lock lives (publish, push and rollback exclude each other).
    public var lockDirectory = "/run/snapmount"
    public var lockTimeout: Duration = .seconds(600)
    /// The instance's snapmount, as words for its shell: `switch` puts the staged release in use.
    public var remoteSnapmount = ["snapmount"]
    /// The longest a host's switch (activation and health check included) may take.
    public var switchTimeout = PushOptions.defaultSwitchTimeout
    /// Above a switch's own worst case: the host's lock (10m), then activate (5m) and the
    /// health check (1m) twice, forward and back.
    public static let defaultSwitchTimeout: Duration = .seconds(30 * 60)
    /// The longest one host's rsync may take.
    public var hostTimeout = PushOptions.defaultHostTimeout
    public static let defaultHostTimeout: Duration = .seconds(30 * 60)
    /// How long an instance still launching (or not yet known to EC2) may stay unreachable
    /// before it counts as failed.
    public var launchWait = PushOptions.defaultLaunchWait
    public static let defaultLaunchWait: Duration = .seconds(600)
    /// Listings of the groups that find new instances, at most.
    public var rounds = 10
    /// Connection attempts per host, and the pause between them.
    public var attempts = 3
    public var retryDelay: Duration = .seconds(2)
    /// Between rounds while instances are still launching.
    public var launchPoll: Duration = .seconds(5)

    public init(groups: [String], directory: AbsolutePath, published: PublishTarget) {
        self.groups = groups
        self.directory = directory
        self.published = published
    }

    /// A path rsync older than 3.2.4 (RHEL 9 ships 3.2.3) hands to the remote shell as it
    /// is: only characters no shell treats specially.
    public static func isSafeRemotePath(_ path: String) -> Bool {
        !path.isEmpty && path.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/._+@-".unicodeScalars.contains($0)) }
    }
}

/// One row of the table `snapmount push` and `deploy` print.
public struct HostReport: Sendable, Equatable {
    public var member: GroupMember
    public var address: String
    public var outcome: PushOutcome
    public var duration: Duration
    public var zone: String?
    /// Its wave; 0: not reached.
    public var wave = 0
    public var volume: VolumeID?
    /// The release it held, and holds now (`nil`: no known one).
    public var before: ReleaseID?
    public var after: ReleaseID?
    /// How far the new release got there.
    public var phase = HostPhase.listed
    /// The manifest of the tree the switch replaced: what going back must find.
    var replaced: ReleaseID?

    init(member: GroupMember, address: String, outcome: PushOutcome, duration: Duration, zone: String? = nil) {
        self.member = member
        self.address = address
        self.outcome = outcome
        self.duration = duration
        self.zone = zone
    }
}

/// `snapmount push`: the published release to every instance of the groups, over ssh, a
/// bounded number at a time, each only into a mounted release; the groups listed again after
/// each round until no new instance appears. On each host rsync fills the staged tree beside
/// the one in use (unchanged files hard-linked), the manifest last; then the host's own
/// `snapmount switch` puts it in use whole, activates it and checks its health, going back
/// to the release it had when either fails. The volume's identity tag says "unknown" from
/// just before the switch until the switch reports the release it left in use: a host is
/// never said to hold a release it does not hold.
public final class PushFlow: @unchecked Sendable {  // run() is called once; the workers share only `state`, under its lock
    public let options: PushOptions
    private let mode: FlowMode
    private let clock: any AgentClock
    private let logger: Logger
    private let runner: any CommandRunner
    private let mounter: any Mounter
    private let connect: () throws -> CloudSession
    private let terminal: (@Sendable (String) -> Void)?
    private let state = Mutex(Progress())

    private struct Progress {
        var total = 0
        var done = 0
        var failed = 0
        var bytes: Int64 = 0
    }

    /// The release being pushed: its manifest here, and the snapshot publish made of it.
    private struct Release {
        var manifest: ReleaseManifest
        var snapshot: SnapshotID
    }

    public init(options: PushOptions, mode: FlowMode, clock: any AgentClock, logger: Logger, runner: any CommandRunner,
                mounter: any Mounter, terminal: (@Sendable (String) -> Void)? = nil, connect: @escaping () throws -> CloudSession) {
        self.mounter = mounter
        self.options = options
        self.mode = mode
        self.clock = clock
        self.logger = logger
        self.runner = runner
        self.terminal = terminal
        self.connect = connect
    }

    /// Every host's row of the last run, however it ended (hosts failed, a signal, groups
    /// that never settled): the caller prints the table either way.
    public private(set) var lastReports: [HostReport] = []
    /// What the last run pushed, its waves, and where it stopped.
    public private(set) var lastSummary: DeploymentSummary?


    /// Pushes until the groups' set of instances is stable, and returns every host's row
    /// (sorted by group and address).
    public func run() throws -> [HostReport] {
        // The release here must be the mounted volume: an empty directory under it would be
        // pushed with --delete to every instance.
        let directory = resolvedPath(options.directory.text)
        guard try mounter.mounts().contains(where: { $0.mountPoint == directory }) else {
            throw PushError.sourceNotMounted(options.directory.text)
        }
        // Publish, push and rollback exclude each other: the tree does not change under a push.
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        try prepareKnownHosts()
        let session = try connect()
        let release = try publishedRelease(session)
        var summary = DeploymentSummary(release: release.manifest.id, snapshot: release.snapshot)
        logger.notice("\(options.wave == nil ? "pushing" : "deploying") \(options.directory.text) (release \(release.manifest.id), \(release.snapshot)) to the instances of \(options.groups.joined(separator: ", "))\(options.wave.map { " in waves of \($0)\(options.byZone ? ", one zone at a time" : "")" } ?? "")\(mode == .check ? " (dry run: rsync -n, nothing changed)" : "")")
        var reports: [InstanceID: HostReport] = [:]
        var listed: [GroupMember] = []
        var zones: [InstanceID: String] = [:]
        var unreached = "not pushed: the push ended first"
        // However the push ends, the table shows every instance listed: those not reached
        // as not pushed.
        defer {
            lastSummary = summary
            lastReports = Self.sorted(Array(reports.values) + listed.filter { reports[$0.instance] == nil && $0.phase != .leaving }.map {
                HostReport(member: $0, address: "", outcome: summary.stoppedAfter == nil ? .failed(unreached) : .notReached(unreached),
                           duration: .zero, zone: zones[$0.instance])
            })
        }
        var firstSeen: [InstanceID: ContinuousClock.Instant] = [:]
        var members: [GroupMember] = []
        var newRounds = 0
        var round = 0
        var waveSize: Int?
        var planned = 0
        var stop: DeploymentStop?
        rounds: while true {
            if let signal = StopSignal.received { throw PushError.stopped(signal: signal) }
            members = try GroupQueries(session: session).members(options.groups)
            listed = members
            let todo = members.filter { reports[$0.instance] == nil && $0.phase != .leaving }
            if todo.isEmpty { break }
            round += 1
            // Only listings that find new instances count against --rounds; instances still
            // launching are waited for up to --launch-wait instead.
            if todo.contains(where: { firstSeen[$0.instance] == nil }) {
                newRounds += 1
                guard newRounds <= options.rounds else { throw PushError.notStable(rounds: options.rounds, pending: todo.count) }
            }
            if round > 1 { logger.notice("round \(round): \(todo.count) instance(s) to \(options.wave == nil ? "push" : "deploy") to") }
            let instances = try GroupQueries(session: session).instances(todo.map(\.instance))
            for (id, instance) in instances { zones[id] = instance.availabilityZone }
            let now = clock.monotonic()
            for member in todo where firstSeen[member.instance] == nil { firstSeen[member.instance] = now }
            // Not reachable yet is not a failure for an instance still launching, or one Auto
            // Scaling lists and EC2 does not know yet: each is tried again until --launch-wait.
            let waitable = Set(todo.filter { member in
                (member.phase == .launching || instances[member.instance] == nil)
                    && firstSeen[member.instance].map { now - $0 < options.launchWait } ?? false
            }.map(\.instance))
            // A wave's size is a share of the hosts the first listing found; later rounds
            // (instances that joined, or were still launching) go in waves of the same size.
            // Without waves (push), each round is one wave.
            var size = todo.count
            if let wave = options.wave {
                size = waveSize ?? wave.wave(of: todo.count)
                waveSize = size
            }
            let waves = WavePlan.waves(todo, size: size, byZone: options.byZone) { zones[$0.instance] ?? "" }
            planned += waves.count
            var waiting = 0
            for wave in waves {
                summary.waves += 1
                let started = clock.monotonic()
                let rows = pushRound(wave, number: summary.waves, instances: instances, release: release, session: session, waitable: waitable)
                for row in rows {
                    if Self.isWaiting(row, waitable) {
                        waiting += 1
                    } else {
                        reports[row.member.instance] = row
                    }
                }
                if let signal = StopSignal.received { throw PushError.stopped(signal: signal) }
                let failures = reports.values.filter(\.outcome.isFailure)
                let hosts = listed.filter { $0.phase != .leaving }.count
                if let wavePlan = options.wave {
                    let waveZones = Set(wave.map { zones[$0.instance] ?? "-" }).sorted().joined(separator: ", ")
                    let failed = rows.filter(\.outcome.isFailure).count
                    let bound = options.maxFailures.map { " of \($0.bound(of: hosts)) allowed" } ?? ""
                    terminal?("\r\u{1b}[K")
                    logger.notice("wave \(summary.waves) of \(planned) (\(wave.count) host\(wave.count == 1 ? "" : "s") of \(wavePlan) each, \(waveZones)): \(rows.count - failed) done, \(failed) failed in \(DurationText.format(clock.monotonic() - started)); \(failures.count) failure\(failures.count == 1 ? "" : "s") so far\(bound)")
                }
                if let maxFailures = options.maxFailures, failures.count > maxFailures.bound(of: hosts) {
                    summary.stoppedAfter = summary.waves
                    stop = DeploymentStop(failures: Self.sorted(failures).map { (host: $0.address, instance: $0.member.instance, reason: $0.outcome.failure ?? "") },
                                          wave: summary.waves, waves: planned, maxFailures: maxFailures, bound: maxFailures.bound(of: hosts),
                                          rollback: options.rollbackOnFailure && mode == .apply)
                    unreached = "not reached: the deployment stopped after wave \(summary.waves)"
                    break rounds
                }
            }
            if waiting > 0 {
                logger.notice("\(waiting) instance(s) launching or not known to EC2 yet, not reachable yet; trying again in \(DurationText.format(options.launchPoll))")
                clock.sleep(for: options.launchPoll)
            }
        }
        // An instance that failed and has left the group since was pushed to while it went away.
        let current = Set(members.filter { $0.phase != .leaving }.map(\.instance))
        for (id, row) in reports where row.outcome.isFailure && !current.contains(id) {
            reports[id]?.outcome = .gone
        }
        terminal?("\r\u{1b}[K")
        if var stop {
            stop.notReached = listed.filter { reports[$0.instance] == nil && $0.phase != .leaving }.count
            if stop.rollback {
                let moved = reports.values.filter { if case .pushed = $0.outcome { true } else { false } }
                logger.notice("rolling back: \(moved.count) host\(moved.count == 1 ? "" : "s") the release reached go back to the release \(moved.count == 1 ? "it" : "they") had")
                for row in revert(moved, release: release, session: session) { reports[row.member.instance] = row }
                stop.reverted = reports.values.filter { if case .reverted = $0.outcome { true } else { false } }.count
                stop.published = republishPrevious(release, session: session)
                summary.published = stop.published
            }
            stop.stillOnRelease = reports.values.filter { $0.after == release.manifest.id }.count
            throw PushError.deploymentStopped(stop)
        }
        let rows = Self.sorted(Array(reports.values))
        let failures = rows.compactMap { row in
            row.outcome.failure.map { (host: row.address, instance: row.member.instance, reason: $0) }
        }
        if !failures.isEmpty { throw PushError.hostsFailed(failures, of: rows.count) }
        return rows
    }

    private static func sorted(_ rows: [HostReport]) -> [HostReport] {
        rows.sorted { ($0.member.group, $0.address, $0.member.instance.text) < ($1.member.group, $1.address, $1.member.instance.text) }
    }

    /// The table at the end: one line per host; with `waves`, each host's zone, wave and the
    /// release it holds now.
    public static func table(_ rows: [HostReport], waves: Bool = false) -> String {
        var lines = [waves ? ["HOST", "INSTANCE", "GROUP", "ZONE", "WAVE", "RESULT", "RELEASE", "BYTES", "TIME"]
                     : ["HOST", "INSTANCE", "GROUP", "RESULT", "BYTES", "TIME"]]
        for row in rows {
            let bytes: String = switch row.outcome {
            case .pushed(let summary, _), .wouldPush(let summary), .reverted(let summary, _): formatBytes(summary.bytesSent)
            default: "-"
            }
            let place = waves ? [row.zone ?? "-", row.wave > 0 ? String(row.wave) : "-"] : []
            let holds = waves ? [row.after?.text ?? (row.phase == .listed ? "-" : "(unknown)")] : []
            lines.append([row.address.isEmpty ? "-" : row.address, row.member.instance.text, row.member.group] + place + [row.outcome.label]
                         + holds + [bytes, DurationText.format(row.duration)])
        }
        return textTable(lines)
    }

    /// The host keys are pinned only if ssh can write them: the directory is made (0700) and
    /// the file must be writable, else 78 — with accept-new, every contact would be a first one.
    private func prepareKnownHosts() throws {
        let path = options.knownHosts
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        do throws(SystemCallError) {
            if !directory.isEmpty { try makeDirectories(directory, mode: 0o700) }
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open", path, errno: errno) }
            close(fd)
        } catch {
            throw PushError.knownHostsUnwritable(path, "\(error)")
        }
    }

    private func takeLock() throws -> FileLock? {
        guard mode == .apply else { return nil }
        return try ReleaseLock.take(in: options.lockDirectory, timeout: options.lockTimeout, clock: clock)
    }

    // MARK: Cloud

    /// The release here, which must be the published one: its manifest's identity is the
    /// identity of the snapshot `--published` names.
    private func publishedRelease(_ session: CloudSession) throws -> Release {
        let queries = GroupQueries(session: session)
        guard let manifest = ReleaseManifest.load(in: options.directory.text) else { throw PushError.noManifest(options.directory.text) }
        let snapshot = try queries.publishedSnapshot(options.published)
        guard snapshot.releaseIdentity == manifest.id else {
            throw PushError.notThePublishedRelease(directory: options.directory.text, holds: manifest.id, published: snapshot.releaseIdentity,
                                                   snapshot: snapshot.id)
        }
        return Release(manifest: manifest, snapshot: snapshot.id)
    }

    /// This round's instances' release volumes (``GroupQueries/releaseVolumes(_:mountPoint:)``);
    /// none when EC2 cannot list them: no host is pushed to this round.
    private func releaseVolumes(_ session: CloudSession, _ ids: [InstanceID]) -> [InstanceID: EC2Volume] {
        do {
            return try GroupQueries(session: session).releaseVolumes(ids, mountPoint: options.directory.text)
        } catch {
            logger.warning("cannot list the instances' release volumes (\(error)); no host can be pushed to this round")
            return [:]
        }
    }

    // MARK: Hosts

    private static let notMountedStatus: Int32 = 99

    /// An instance not reachable yet, still within `--launch-wait`: tried again in the next
    /// round rather than counted.
    private static func isWaiting(_ row: HostReport, _ waitable: Set<InstanceID>) -> Bool {
        guard case .unreachable = row.outcome else { return false }
        return waitable.contains(row.member.instance)
    }

    private func pushRound(_ members: [GroupMember], number wave: Int, instances: [InstanceID: EC2Instance], release: Release,
                           session: CloudSession, waitable: Set<InstanceID>) -> [HostReport] {
        let volumes = releaseVolumes(session, members.map(\.instance))
        let tagger = VolumeTagger(ec2: session.ec2)
        state.withLock { $0.total += members.count }
        let rows = Mutex<[HostReport]>([])
        forEachConcurrently(members.count, limit: options.parallel) { index in
            let member = members[index]
            let started = self.clock.monotonic()
            let instance = instances[member.instance]
            let address = instance?.privateAddress ?? ""
            var row = HostReport(member: member, address: address, outcome: .failed(""), duration: .zero, zone: instance?.availabilityZone)
            row.wave = wave
            row.outcome = self.push(member, instance: instance, volume: volumes[member.instance], release: release, tagger: tagger, row: &row)
            row.duration = self.clock.monotonic() - started
            rows.withLock { $0.append(row) }
            if Self.isWaiting(row, waitable) {
                self.state.withLock { $0.total -= 1 }
                self.logger.notice("\(address.isEmpty ? "-" : address) (\(member.instance)): \(member.lifecycleState), not reachable yet; tried again in the next round (\(row.outcome.failure ?? ""))")
            } else {
                self.report(row)
            }
        }
        return rows.withLock { $0 }
    }

    /// One host's push; `row` records how far the release got and what the host holds.
    private func push(_ member: GroupMember, instance: EC2Instance?, volume releaseVolume: EC2Volume?, release: Release, tagger: VolumeTagger,
                      row: inout HostReport) -> PushOutcome {
        guard let instance else { return .unreachable("EC2 does not list the instance (yet)") }
        switch instance.state {
        case .terminated, .shuttingDown: return .gone
        case .stopped, .stopping: return .booting
        case .pending, .running, .other: break
        }
        guard let address = instance.privateAddress else { return .unreachable("the instance has no private address yet") }
        let host = RemoteHost(destination: options.user + "@" + address, instance: member.instance)
        let directory = options.directory.text

        // The guard: only into a mounted release, never into the directory it is mounted on.
        if let ended = checkMount(member, host, directory) { return ended }
        row.phase = .checked
        guard let releaseVolume else {
            return .failed("cannot tell which volume holds its release (none, or more than one, attached with snapmount's tags for \(directory)); nothing sent")
        }
        let volume = releaseVolume.id
        row.volume = volume
        row.before = releaseVolume.heldRelease
        row.after = row.before
        let excluded = ["--exclude", "/" + ReleaseManifest.directory + "/", "--exclude", "/lost+found/"]
        if mode == .check {
            // The host's snapmount must know `switch` (an older one runs its boot's help instead);
            // rsync -n against the tree in use says what a push would send.
            let help = remoteSnapmount(host, ["switch", "--help"], timeout: .seconds(60))
            if let failure = help.failure(of: "switch --help") { return .failed(failure) }
            if help.result?.output.contains("USAGE: snapmount switch") != true { return .failed(RemoteResult.upgrade(help.result?.status ?? 0)) }
            let tree = rsync(host, ["--delete"] + excluded + [directory + "/", host.destination + ":" + directory + "/"])
            guard case .success(let summary) = tree else { return tree.failure }
            return .wouldPush(summary)
        }
        // The host's snapmount gets the staged tree ready, finishing a switch that was interrupted.
        let ready = remoteSnapmount(host, ["switch", "--prepare", "--mount-point", directory], timeout: .seconds(12 * 60))
        if let failure = ready.failure(of: "switch --prepare") { return .failed(failure + "; nothing sent") }

        // Into the staged tree beside the one in use (unchanged files hard-linked to it), the
        // manifest last: the application never sees these files until the switch.
        let staged = directory + "/" + ReleaseManifest.directory + "/" + ReleaseTree.Side.staged.rawValue + "/"
        let tree = rsync(host, ["--delete", "--link-dest=../.."] + excluded + [directory + "/", host.destination + ":" + staged])
        guard case .success(let summary) = tree else { return tree.failure }
        let manifest = rsync(host, ["-R", directory + "/./" + ReleaseManifest.relativePath, host.destination + ":" + staged])
        guard case .success(let last) = manifest else { return manifest.failure }
        let sent = RsyncSummary(bytesSent: summary.bytesSent + last.bytesSent, filesTransferred: summary.filesTransferred + last.filesTransferred)
        row.phase = .staged

        // Before the tree in use changes, the volume holds no known release until the switch says which.
        do {
            try tagger.mark(volume, holding: ReleaseID.unknownTag)
        } catch {
            return .failed("cannot mark \(volume) as changing (\(error)); the staged release was not put in use")
        }
        row.after = nil
        let switched = remoteSnapmount(host, ["switch", "--mount-point", directory, "--expect", release.manifest.id.text, "--json"],
                                       timeout: options.switchTimeout)
        let report = switched.result.flatMap { SwitchReport(output: $0.output) }
        if let reached = report?.reached { row.phase = HostPhase(reached) }
        if let before = report?.before { row.before = before }
        row.replaced = report?.before
        let (holding, recorded) = recordSwitch(report, volume: volume, heldBefore: releaseVolume.heldRelease, release: release, host: host, tagger: tagger)
        row.after = ReleaseID(holding)
        guard let report else {
            return .failed((switched.failure(of: "switch") ?? "switch printed no report") + "; the host holds no known release until it is pushed again or boots")
        }
        switch report.result {
        case .switched:
            return .pushed(sent, recorded: recorded)
        case .rolledBack:
            return .rolledBack(report.error ?? "activation or health check failed; back on \(holding)")
        case .failed:
            return .failed(report.error ?? "the switch failed")
        case .unchanged:
            return .failed("snapmount switch exited \(switched.result?.status ?? 0) there: \(report.error ?? "nothing was switched"); nothing in use changed")
        }
    }

    /// Tags the volume with what a switch left in use, and how it ended: what the host's tree
    /// in use says is what its volume's tag says; back on (or never off) a tree without a
    /// manifest, what the tag said before; without an answer, unknown. Returns what the tag
    /// says, and whether it could be set.
    private func recordSwitch(_ report: SwitchReport?, volume: VolumeID, heldBefore: ReleaseID?, release: Release, host: RemoteHost,
                              tagger: VolumeTagger, reverting: Bool = false) -> (holding: String, recorded: Bool) {
        let onOld = report?.result == .unchanged || report?.result == .rolledBack
        let holding = report?.after?.text ?? (onOld ? heldBefore?.text : nil) ?? ReleaseID.unknownTag
        let result = reverting && report?.result == .switched ? "reverted" : report?.result.rawValue ?? SwitchReport.Result.failed.rawValue
        do {
            try tagger.mark(volume, holding: holding, deployment: "\(result) \(release.manifest.id) \(clock.now().amzDate)")
            return (holding, true)
        } catch {
            logger.warning("\(host.destination): \(volume)'s identity tag still says \(ReleaseID.unknownTag) (\(error)); its next boot replaces the volume with one from \(release.snapshot)")
            return (holding, false)
        }
    }

    // MARK: Rollback

    /// Puts the hosts a stopped deployment moved back on the release each had (`switch --to
    /// previous`), their volumes' tags following as they do for a push's switch.
    private func revert(_ rows: [HostReport], release: Release, session: CloudSession) -> [HostReport] {
        let tagger = VolumeTagger(ec2: session.ec2)
        let results = Mutex<[HostReport]>([])
        forEachConcurrently(rows.count, limit: options.parallel) { index in
            var row = rows[index]
            let started = self.clock.monotonic()
            row.outcome = self.revert(&row, release: release, tagger: tagger)
            row.duration += self.clock.monotonic() - started
            results.withLock { $0.append(row) }
            let line = "\(row.address) (\(row.member.instance)): \(row.outcome.label): \(row.outcome.failure ?? row.after.map { "back on \($0)" } ?? "")"
            if row.outcome.isFailure { self.logger.error("\(line)") } else { self.logger.notice("\(line)") }
        }
        return results.withLock { $0 }
    }

    private func revert(_ row: inout HostReport, release: Release, tagger: VolumeTagger) -> PushOutcome {
        guard case .pushed(let sent, _) = row.outcome, let volume = row.volume else { return row.outcome }
        let host = RemoteHost(destination: options.user + "@" + row.address, instance: row.member.instance)
        do {
            try tagger.mark(volume, holding: ReleaseID.unknownTag)
        } catch {
            return .failed("not rolled back: cannot mark \(volume) as changing (\(error)); it still holds \(release.manifest.id)")
        }
        // The tree the switch replaced must still be there as it was: --expect its manifest.
        var words = ["switch", "--to", "previous", "--mount-point", options.directory.text, "--json"]
        if let replaced = row.replaced { words += ["--expect", replaced.text] }
        let switched = remoteSnapmount(host, words, timeout: options.switchTimeout)
        let report = switched.result.flatMap { SwitchReport(output: $0.output) }
        let (holding, _) = recordSwitch(report, volume: volume, heldBefore: release.manifest.id, release: release, host: host, tagger: tagger,
                                        reverting: true)
        row.after = ReleaseID(holding)
        guard let report else {
            return .failed((switched.failure(of: "switch --to previous") ?? "switch printed no report")
                           + "; going back failed: the host holds no known release until it is deployed to again or boots")
        }
        switch report.result {
        case .switched:
            return .reverted(sent, "back on \(holding): the deployment stopped")
        case .rolledBack:
            return .failed("going back failed: the release it had failed its activation or health check there (\(report.error ?? "no reason given")); on \(holding) again")
        case .failed:
            return .failed("going back failed: \(report.error ?? "the switch failed"); the host's release is not known to work")
        case .unchanged:
            return .failed("not rolled back (snapmount switch --to previous exited \(switched.result?.status ?? 0): \(report.error ?? "nothing was switched")); it still holds \(release.manifest.id)")
        }
    }

    /// After a rollback, the published id back on the release before this one, so that an
    /// instance that boots now mounts what the fleet holds; a sentence for the message.
    private func republishPrevious(_ release: Release, session: CloudSession) -> String {
        do {
            let published = try GroupQueries(session: session).publishedSnapshot(options.published)
            guard published.id == release.snapshot else {
                return "\(options.published) names \(published.id) now, not \(release.snapshot): left as it is"
            }
            let outcome = try RollbackFlow(target: options.published, mode: .apply, lockDirectory: options.lockDirectory)
                .publishPrevious(session: session, logger: logger)
            return "\(options.published) names \(outcome.published) (release \(outcome.identity)) again: instances that boot now mount it"
        } catch {
            return "\(options.published) still names \(release.snapshot) (\(error)): instances that boot now mount it; run snapmount rollback --output \(options.published)"
        }
    }

    /// The instance's own snapmount (``PushOptions/remoteSnapmount``) over ssh.
    private func remoteSnapmount(_ host: RemoteHost, _ arguments: [String], timeout: Duration) -> RemoteResult {
        let command = (options.remoteSnapmount + arguments).map(ShellWords.shellQuoted).joined(separator: " ")
        do {
            return RemoteResult(result: try runner.run(sshProgram, sshWords(host) + [host.destination, command], timeout: timeout), error: nil)
        } catch {
            return RemoteResult(result: nil, error: "ssh: \(error)")
        }
    }

    private struct RemoteResult {
        var result: ProcessResult?
        var error: String?

        static func upgrade(_ status: Int32) -> String {
            "the host's snapmount has no switch command (exit \(status)): upgrade snapmount on the instances to this release server's version (or name it with --remote-snapmount)"
        }

        /// `nil` when it exited 0; otherwise what to say.
        func failure(of what: String) -> String? {
            guard let result else { return error ?? "ssh failed" }
            switch result.status {
            case 0: return nil
            // 64: an older snapmount's usage error for `switch`; 127: no snapmount there at all.
            case 64, 127: return Self.upgrade(result.status)
            case 255: return "the connection failed (ssh exit 255): " + lastOutputLine(result.output)
            default: return "snapmount \(what) exited \(result.status) there: " + lastOutputLine(result.output)
            }
        }
    }

    private enum SyncResult {
        case success(RsyncSummary)
        case failure(PushOutcome)

        var failure: PushOutcome {
            if case .failure(let outcome) = self { return outcome }
            return .failed("rsync")
        }
    }

    private func rsync(_ host: RemoteHost, _ arguments: [String]) -> SyncResult {
        var arguments = ["-az", "--stats", "-e", ShellWords.rsyncCommand([sshProgram] + sshWords(host)),
                         "--rsync-path", "mountpoint -q \(ShellWords.shellQuoted(options.directory.text)) && rsync"] + arguments
        if mode == .check { arguments.insert("--dry-run", at: 0) }
        let result: ProcessResult
        do {
            result = try runner.run("rsync", arguments, timeout: options.hostTimeout)
        } catch {
            return .failure(.failed("rsync: \(error); the release in use there is unchanged"))
        }
        // 24: files vanished on the sending side while it ran — the tree changed under the
        // push, so the host cannot be said to hold the release (a dry run only reports).
        guard result.status == 0 || (result.status == 24 && mode == .check) else {
            let what = result.status == 255 || result.status == 12 || result.status == 10 ? "the connection failed" : "rsync failed"
            let after = mode == .apply ? "; the release in use there is unchanged" : ""
            return .failure(.failed("\(what) (rsync exit \(result.status)): " + lastOutputLine(result.output) + after))
        }
        return .success(RsyncSummary.parse(result.output) ?? RsyncSummary(bytesSent: 0, filesTransferred: 0))
    }

    /// `mountpoint -q` over ssh: `nil` when the destination is a mounted release, otherwise
    /// how this host's push ends. A connection failure (ssh's 255) is tried `attempts` times,
    /// except on a launching instance, which is tried again in the next round instead.
    private func checkMount(_ member: GroupMember, _ host: RemoteHost, _ directory: String) -> PushOutcome? {
        var attempt = 1
        while true {
            if StopSignal.received != nil { return .failed("stopped before it was pushed to") }
            let result: ProcessResult
            do {
                result = try runner.run(sshProgram, sshWords(host) + [host.destination, "mountpoint -q \(ShellWords.shellQuoted(directory)) || exit \(Self.notMountedStatus)"],
                                        timeout: .seconds(60))
            } catch {
                return .failed("ssh: \(error)")
            }
            switch result.status {
            case 0:
                return nil
            case 255 where Self.isHostKeyRefusal(result.output):
                return .failed("ssh refused the host key: " + lastOutputLine(result.output, or: "host key verification failed")
                               + " (a changed key for \(member.instance) in \(options.knownHosts): if the instance was rebuilt, remove its line with ssh-keygen -R \(member.instance) -f \(options.knownHosts))")
            case 255 where member.phase != .launching && attempt < options.attempts:
                clock.sleep(for: options.retryDelay)
                attempt += 1
            case 255:
                return .unreachable(lastOutputLine(result.output, or: "ssh could not connect"))
            case Self.notMountedStatus:
                // Its boot has not mounted the release yet, so it will mount the published one.
                if member.phase == .launching { return .booting }
                return .failed("\(directory) is not a mount point there (the release is not mounted: see snapmount status on the host)")
            default:
                return .failed("the mount check failed (exit \(result.status)): " + lastOutputLine(result.output, or: "no output"))
            }
        }
    }

    static func isHostKeyRefusal(_ output: String) -> Bool {
        output.contains("Host key verification failed") || output.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    }

    private var sshProgram: String { options.ssh.first ?? "ssh" }

    /// The ssh options: the operator's (ssh takes the first value it is given, so these
    /// win), then batch mode (never a password prompt), a connection bound, and the host-key
    /// policy: keys known per instance id in ``PushOptions/knownHosts``, new ones accepted.
    private func sshWords(_ host: RemoteHost) -> [String] {
        Array(options.ssh.dropFirst()) + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                          "-o", "HostKeyAlias=\(host.instance)", "-o", "StrictHostKeyChecking=accept-new",
                                          "-o", "UserKnownHostsFile=\(options.knownHosts)", "-o", "CheckHostIP=no"]
    }

    private func report(_ row: HostReport) {
        let line: String = switch row.outcome {
        case .pushed(let summary, let recorded):
            "\(row.address) (\(row.member.instance)): pushed \(formatBytes(summary.bytesSent)), \(summary.filesTransferred) files in \(DurationText.format(row.duration))\(recorded ? "" : ", its volume's identity not recorded")"
        case .wouldPush(let summary):
            "\(row.address) (\(row.member.instance)): would push \(formatBytes(summary.bytesSent)), \(summary.filesTransferred) files"
        case .booting: "\(row.address) (\(row.member.instance)): \(row.member.lifecycleState), release not mounted yet: it mounts the published one at boot"
        case .gone: "\(row.address) (\(row.member.instance)): gone"
        case .unreachable, .failed: "\(row.address.isEmpty ? "-" : row.address) (\(row.member.instance)): FAILED: \(row.outcome.failure ?? "")"
        case .rolledBack(let reason): "\(row.address) (\(row.member.instance)): ROLLED BACK: \(reason)"
        case .reverted(_, let reason), .notReached(let reason): "\(row.address) (\(row.member.instance)): \(row.outcome.label): \(reason)"
        }
        let progress = state.withLock { progress -> Progress in
            progress.done += 1
            if row.outcome.isFailure { progress.failed += 1 }
            if case .pushed(let summary, _) = row.outcome { progress.bytes += summary.bytesSent }
            return progress
        }
        if row.outcome.isFailure { logger.error("\(line)") } else { logger.notice("\(line)") }
        terminal?("\r\u{1b}[Kpush: \(progress.done) of \(progress.total) hosts done, \(progress.failed) failed, \(formatBytes(progress.bytes)) sent")
    }
}

/// Sets a volume's identity tag from the push's worker threads, one call at a time: the EC2
/// client (its retry quota, its clock-skew estimate) is not made to be shared between threads.
private final class VolumeTagger: @unchecked Sendable {
    private let ec2: EC2Client
    private let lock = Mutex(())

    init(ec2: EC2Client) { self.ec2 = ec2 }

    /// The volume's identity tag, and with `deployment` how the push to it ended, in one call.
    func mark(_ volume: VolumeID, holding release: String, deployment: String? = nil) throws(EC2CallError) {
        let tags = [VolumeTag(key: ReleaseTags.releaseID, value: release)] + (deployment.map { [VolumeTag(key: ReleaseTags.lastDeployment, value: $0)] } ?? [])
        try lock.withLock { _ throws(EC2CallError) in
            try ec2.createTags([volume.text], tags)
        }
    }
}

/// One instance as push reaches it: the ssh destination, and the instance whose host key it must present.
private struct RemoteHost {
    var destination: String
    var instance: InstanceID
}
