import Logging
import SnapmountCore
import SnapmountSystem
import Synchronization

/// Why `snapmount push` stopped, or what it reports at the end.
public enum PushError: SnapmountError, Equatable {
    case noSuchGroups([String])
    case sourceNotMounted(String)
    case publishedUnreadable(String, String)
    /// Some hosts did not get the release; the table names them too.
    case hostsFailed([(host: String, instance: InstanceID, reason: String)], of: Int)
    /// Instances kept appearing: the set never settled within the rounds allowed.
    case notStable(rounds: Int, pending: Int)
    case stopped(signal: Int32)

    public static func == (lhs: PushError, rhs: PushError) -> Bool { lhs.description == rhs.description }

    public var exitStatus: ExitStatus {
        switch self {
        case .noSuchGroups, .sourceNotMounted: .configuration
        case .publishedUnreadable: .unavailable
        case .hostsFailed: .unavailable
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
            "cannot read the published snapshot id from \(target): \(reason) (run snapmount publish first; push records which release it pushed)"
        case .hostsFailed(let failures, let total):
            "push failed on \(failures.count) of \(total) hosts: "
                + failures.map { "\($0.host) (\($0.instance)): \($0.reason)" }.joined(separator: "; ")
        case .notStable(let rounds, let pending):
            "the groups' instances did not settle after \(rounds) rounds (\(pending) still new or still booting); run push again"
        case .stopped(let signal):
            "stopped by signal \(signal); hosts already pushed keep the new files, the others the old ones"
        }
    }
}

/// What `snapmount push` is asked to do.
public struct PushOptions: Sendable {
    /// The Auto Scaling groups whose instances get the release.
    public var groups: [String]
    /// The release's directory here, and where it is mounted on every instance.
    public var directory: AbsolutePath
    /// Where `snapmount publish` wrote the id: recorded on each host as what it now holds.
    public var published: PublishTarget
    /// Hosts synced at once.
    public var parallel = 8
    /// The ssh command and its options, as words (rsync's `-e`, without quoting).
    public var ssh: [String] = ["ssh"]
    public var user = "root"
    /// Where snapmount keeps its state on the instances: pushed.json goes there.
    public var remoteStateDirectory = "/var/lib/snapmount"
    /// The longest one host's rsync may take.
    public var hostTimeout: Duration = .seconds(30 * 60)
    /// How long an instance still launching may stay unreachable before it counts as failed.
    public var launchWait: Duration = .seconds(600)
    /// Listings of the groups, at most: each one after the last host of the one before.
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
}

/// One row of the table `snapmount push` prints.
public struct HostReport: Sendable, Equatable {
    public var member: GroupMember
    public var address: String
    public var outcome: PushOutcome
    public var duration: Duration
}

/// `snapmount push`: the release's files to every instance of the groups, over ssh with
/// rsync, a bounded number at a time, each only into a mounted release; the groups listed
/// again after each round until no new instance appears; `pushed.json` written on each host
/// with the snapshot it now matches, so that its next boot keeps its volume.
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

    /// Every host's row of the last run, also when it threw ``PushError/hostsFailed(_:of:)``:
    /// the caller prints the table either way.
    public private(set) var lastReports: [HostReport] = []

    /// Pushes until the groups' set of instances is stable, and returns every host's row
    /// (sorted by group and address).
    public func run() throws -> [HostReport] {
        // The release here must be the mounted volume: an empty directory under it would be
        // pushed with --delete to every instance.
        let directory = resolvedPath(options.directory.text)
        guard try mounter.mounts().contains(where: { $0.mountPoint == directory }) else {
            throw PushError.sourceNotMounted(options.directory.text)
        }
        let session = try connect()
        let snapshot = try publishedSnapshot(session)
        logger.notice("pushing \(options.directory.text) (\(snapshot)) to the instances of \(options.groups.joined(separator: ", "))\(mode == .check ? " (dry run: rsync -n, nothing recorded)" : "")")
        var reports: [InstanceID: HostReport] = [:]
        var launchingSince: [InstanceID: ContinuousClock.Instant] = [:]
        var members: [GroupMember] = []
        var round = 0
        while true {
            if let signal = StopSignal.received { throw PushError.stopped(signal: signal) }
            members = try list(session)
            let todo = members.filter { reports[$0.instance] == nil && $0.phase != .leaving }
            if todo.isEmpty { break }
            round += 1
            guard round <= options.rounds else { throw PushError.notStable(rounds: options.rounds, pending: todo.count) }
            if round > 1 { logger.notice("round \(round): \(todo.count) instance(s) to push to") }
            let instances = try describe(session, todo.map(\.instance))
            // Launching instances that may still be waited for: not reachable yet is not a failure.
            let now = ContinuousClock.now
            for member in todo where member.phase == .launching && launchingSince[member.instance] == nil {
                launchingSince[member.instance] = now
            }
            let waitable = Set(todo.filter { member in
                launchingSince[member.instance].map { now - $0 < options.launchWait } ?? false
            }.map(\.instance))
            let rows = pushRound(todo, instances: instances, snapshot: snapshot, session: session, waitable: waitable)
            if let signal = StopSignal.received {
                lastReports = Array(reports.values) + rows
                throw PushError.stopped(signal: signal)
            }
            var waiting = 0
            for row in rows {
                if Self.isWaiting(row, waitable) {
                    waiting += 1
                } else {
                    reports[row.member.instance] = row
                }
            }
            if waiting > 0 {
                logger.notice("\(waiting) launching instance(s) not reachable yet; trying again in \(DurationText.format(options.launchPoll))")
                clock.sleep(for: options.launchPoll)
            }
        }
        // An instance that failed and has left the group since was pushed to while it went away.
        let current = Set(members.filter { $0.phase != .leaving }.map(\.instance))
        for (id, row) in reports where row.outcome.isFailure && !current.contains(id) {
            reports[id]?.outcome = .gone
        }
        let rows = reports.values.sorted { ($0.member.group, $0.address, $0.member.instance.text) < ($1.member.group, $1.address, $1.member.instance.text) }
        lastReports = rows
        terminal?("\r\u{1b}[K")
        let failures = rows.compactMap { row in
            row.outcome.failure.map { (host: row.address, instance: row.member.instance, reason: $0) }
        }
        if !failures.isEmpty { throw PushError.hostsFailed(failures, of: rows.count) }
        return rows
    }

    /// The table at the end: one line per host.
    public static func table(_ rows: [HostReport]) -> String {
        var lines = [["HOST", "INSTANCE", "GROUP", "RESULT", "BYTES", "TIME"]]
        for row in rows {
            let bytes: String = switch row.outcome {
            case .pushed(let summary, _), .wouldPush(let summary): formatBytes(summary.bytesSent)
            default: "-"
            }
            lines.append([row.address.isEmpty ? "-" : row.address, row.member.instance.text, row.member.group, row.outcome.label, bytes,
                          DurationText.format(row.duration)])
        }
        let widths = (0..<6).map { column in lines.map { $0[column].count }.max() ?? 0 }
        return lines.map { line in
            zip(line, widths).enumerated().map { index, pair in
                index == 5 ? pair.0 : pair.0 + String(repeating: " ", count: pair.1 - pair.0.count)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    // MARK: Cloud

    private func publishedSnapshot(_ session: CloudSession) throws -> SnapshotID {
        switch options.published {
        case .file(let path):
            do {
                return try SnapshotSourceBody.parse(try readFile(path.text, limit: 4096), url: path.text)
            } catch {
                throw PushError.publishedUnreadable(path.text, "\(error)")
            }
        case .ssm(let name):
            // Read as the boot side reads an ssm: source (the owner plays no part for SSM).
            return try session.publishedID(.ssm(name: name), owner: .selfAccount)
        }
    }

    private func list(_ session: CloudSession) throws -> [GroupMember] {
        let groups = try session.autoScaling.describeGroups(options.groups)
        let missing = options.groups.filter { groups[$0] == nil }
        guard missing.isEmpty else { throw PushError.noSuchGroups(missing) }
        var seen = Set<InstanceID>()
        return options.groups.flatMap { groups[$0] ?? [] }.filter { seen.insert($0.instance).inserted }
    }

    private func describe(_ session: CloudSession, _ ids: [InstanceID]) throws -> [InstanceID: EC2Instance] {
        var byID: [InstanceID: EC2Instance] = [:]
        for instance in try session.ec2.describeInstances(ids) { byID[instance.id] = instance }
        return byID
    }

    /// This round's instances' release volumes: the one snapmount volume attached to each.
    private func releaseVolumes(_ session: CloudSession, _ ids: [InstanceID]) -> [InstanceID: VolumeID] {
        guard mode == .apply, !ids.isEmpty else { return [:] }
        let volumes: [EC2Volume]
        do {
            volumes = try session.ec2.describeVolumes(filters: [("tag:\(VolumeRequest.instanceTag)", ids.map(\.text))])
        } catch {
            logger.warning("cannot list the instances' release volumes (\(error)); pushed.json is not written this round")
            return [:]
        }
        var result: [InstanceID: VolumeID] = [:]
        for id in ids {
            let attached = volumes.filter { $0.attachments.contains { $0.instanceID == id && $0.state == .attached } }
            if attached.count == 1 { result[id] = attached[0].id }
        }
        return result
    }

    // MARK: Hosts

    private static let notMountedStatus: Int32 = 99

    /// A launching instance not reachable yet, still within `--launch-wait`: tried again in
    /// the next round rather than counted.
    private static func isWaiting(_ row: HostReport, _ waitable: Set<InstanceID>) -> Bool {
        guard case .unreachable = row.outcome else { return false }
        return waitable.contains(row.member.instance)
    }

    private func pushRound(_ members: [GroupMember], instances: [InstanceID: EC2Instance], snapshot: SnapshotID,
                           session: CloudSession, waitable: Set<InstanceID>) -> [HostReport] {
        let volumes = releaseVolumes(session, members.map(\.instance))
        state.withLock { $0.total += members.count }
        let rows = Mutex<[HostReport]>([])
        forEachConcurrently(members.count, limit: options.parallel) { index in
            let member = members[index]
            let started = ContinuousClock.now
            let instance = instances[member.instance]
            let address = instance?.privateAddress ?? ""
            let outcome = self.push(member, instance: instance, volume: volumes[member.instance], snapshot: snapshot)
            let row = HostReport(member: member, address: address, outcome: outcome, duration: ContinuousClock.now - started)
            rows.withLock { $0.append(row) }
            if Self.isWaiting(row, waitable) {
                self.state.withLock { $0.total -= 1 }
                self.logger.notice("\(address) (\(member.instance)): \(member.lifecycleState), not reachable yet; tried again in the next round")
            } else {
                self.report(row)
            }
        }
        return rows.withLock { $0 }
    }

    private func push(_ member: GroupMember, instance: EC2Instance?, volume: VolumeID?, snapshot: SnapshotID) -> PushOutcome {
        guard let instance else { return .gone }
        switch instance.state {
        case "terminated", "shutting-down": return .gone
        case "stopped", "stopping": return .booting
        default: break
        }
        guard let address = instance.privateAddress else { return .unreachable("the instance has no private address yet") }
        let destination = options.user + "@" + address
        let directory = options.directory.text

        // The guard: only into a mounted release, never into the directory it is mounted on.
        if let ended = checkMount(member, destination, directory) { return ended }

        // The sync; the remote side checks the mount again itself, as it starts.
        var arguments = ["-az", "--delete", "--stats", "-e", ([sshProgram] + sshWords).joined(separator: " "),
                         "--rsync-path", "mountpoint -q \(shellQuoted(directory)) && rsync"]
        if mode == .check { arguments.append("--dry-run") }
        arguments += [directory + "/", destination + ":" + directory + "/"]
        let result: ProcessResult
        do {
            result = try runner.run("rsync", arguments, timeout: options.hostTimeout)
        } catch {
            return .failed("rsync: \(error)")
        }
        // 24: files vanished on the sending side while it ran; the rest arrived.
        guard result.status == 0 || result.status == 24 else {
            let what = result.status == 255 || result.status == 12 || result.status == 10 ? "the connection failed" : "rsync failed"
            return .failed("\(what) (rsync exit \(result.status)): " + lastLine(result.output, or: "no output"))
        }
        let summary = RsyncSummary.parse(result.output) ?? RsyncSummary(bytesSent: 0, filesTransferred: 0)
        if mode == .check { return .wouldPush(summary) }
        return .pushed(summary, recorded: record(destination, volume: volume, snapshot: snapshot))
    }

    /// `mountpoint -q` over ssh: `nil` when the destination is a mounted release, otherwise
    /// how this host's push ends. A connection failure (ssh's 255) is tried `attempts` times,
    /// except on a launching instance, which is tried again in the next round instead.
    private func checkMount(_ member: GroupMember, _ destination: String, _ directory: String) -> PushOutcome? {
        var attempt = 1
        while true {
            if StopSignal.received != nil { return .failed("stopped before it was pushed to") }
            let result: ProcessResult
            do {
                result = try runner.run(sshProgram, sshWords + [destination, "mountpoint -q \(shellQuoted(directory)) || exit \(Self.notMountedStatus)"],
                                        timeout: .seconds(60))
            } catch {
                return .failed("ssh: \(error)")
            }
            switch result.status {
            case 0:
                return nil
            case 255 where member.phase != .launching && attempt < options.attempts:
                clock.sleep(for: options.retryDelay)
                attempt += 1
            case 255:
                return .unreachable(lastLine(result.output, or: "ssh could not connect"))
            case Self.notMountedStatus:
                // Its boot has not mounted the release yet, so it will mount the published one.
                if member.phase == .launching { return .booting }
                return .failed("\(directory) is not a mount point there (the release is not mounted: see snapmount status on the host)")
            default:
                return .failed("the mount check failed (exit \(result.status)): " + lastLine(result.output, or: "no output"))
            }
        }
    }

    /// Writes pushed.json on the host (temporary file, then rename): its volume now holds
    /// the files of `snapshot`. Without one known release volume nothing is written, and its
    /// next boot swaps the volume for one made from the snapshot (same files, more time).
    private func record(_ destination: String, volume: VolumeID?, snapshot: SnapshotID) -> Bool {
        guard let volume else {
            logger.warning("\(destination): no single release volume attached, so pushed.json is not written")
            return false
        }
        let record = PushedRecord(volume: volume.text, snapshot: snapshot.text, pushedAt: clock.now().iso8601)
        let directory = shellQuoted(options.remoteStateDirectory)
        let temporary = shellQuoted(options.remoteStateDirectory + "/.pushed.json.tmp")
        let script = "umask 022 && mkdir -p \(directory) && printf '%s\\n' \(shellQuoted(record.json.pretty())) > \(temporary)"
            + " && mv -f \(temporary) \(shellQuoted(options.remoteStateDirectory + "/pushed.json"))"
        do {
            let result = try runner.run(sshProgram, sshWords + [destination, script], timeout: .seconds(60))
            guard result.status == 0 else {
                logger.warning("\(destination): pushed, but pushed.json was not written: \(lastLine(result.output, or: "exit \(result.status)"))")
                return false
            }
            return true
        } catch {
            logger.warning("\(destination): pushed, but pushed.json was not written: \(error)")
            return false
        }
    }

    private var sshProgram: String { options.ssh.first ?? "ssh" }

    /// The ssh options: the operator's, then batch mode (never a password prompt) and a
    /// connection bound.
    private var sshWords: [String] {
        Array(options.ssh.dropFirst()) + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    }

    private func report(_ row: HostReport) {
        let line: String = switch row.outcome {
        case .pushed(let summary, let recorded):
            "\(row.address) (\(row.member.instance)): pushed \(formatBytes(summary.bytesSent)), \(summary.filesTransferred) files in \(DurationText.format(row.duration))\(recorded ? "" : ", pushed.json not written")"
        case .wouldPush(let summary):
            "\(row.address) (\(row.member.instance)): would push \(formatBytes(summary.bytesSent)), \(summary.filesTransferred) files"
        case .booting: "\(row.address) (\(row.member.instance)): \(row.member.lifecycleState), release not mounted yet: it mounts the published one at boot"
        case .gone: "\(row.address) (\(row.member.instance)): gone"
        case .unreachable, .failed: "\(row.address.isEmpty ? "-" : row.address) (\(row.member.instance)): FAILED: \(row.outcome.failure ?? "")"
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

/// `'text'` for a POSIX shell: the remote commands run through the login shell.
func shellQuoted(_ text: String) -> String {
    "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}

private func lastLine(_ output: String, or fallback: String) -> String {
    let lines = output.split(separator: "\n").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
    return lines.last.map { $0.quotedForMessage(limit: 200) } ?? fallback
}
