#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SnapmountCore
import SnapmountSystem

/// Why `snapmount rollback` stopped.
public enum RollbackError: SnapmountError, Equatable {
    case nothingPublished(String)
    case noPrevious(String)
    case previousUnusable(SnapshotID, String)

    public var exitStatus: ExitStatus {
        switch self {
        case .nothingPublished, .noPrevious: .configuration
        case .previousUnusable: .unavailable
        }
    }

    public var description: String {
        switch self {
        case .nothingPublished(let output):
            "\(output) names no release yet: there is nothing to roll back"
        case .noPrevious(let output):
            "\(output) has no earlier release to go back to (no .prev, or no earlier version of the parameter)"
        case .previousUnusable(let id, let why):
            "the previous release \(id) cannot be published again: \(why); the published id is unchanged"
        }
    }
}

/// What a rollback did (or, in check mode, would do).
public struct RollbackOutcome: Sendable, Equatable {
    /// The release published now.
    public var published: SnapshotID
    public var identity: ReleaseID
    /// The one it replaced (kept as the previous one: a second rollback goes forward again).
    public var replaced: SnapshotID
}

/// `snapmount rollback`: the previous release published again — `<file>.prev`, or the
/// SSM parameter's value before the current one — after checking that its snapshot is still
/// there, completed and a release publish marked. The current one becomes the previous one.
/// Every instance then converges to it: booting instances at once, running ones at their
/// next boot (their volumes' identity tags say which release they hold).
public struct RollbackFlow {
    public var target: PublishTarget
    public var mode: FlowMode
    public var lockDirectory: String
    public var lockTimeout: Duration = .seconds(600)

    public init(target: PublishTarget, mode: FlowMode, lockDirectory: String) {
        self.target = target
        self.mode = mode
        self.lockDirectory = lockDirectory
    }

    public func run(session: CloudSession, clock: any AgentClock, logger: Logger) throws -> RollbackOutcome {
        // Publish, push and rollback exclude each other.
        let lock = mode == .apply ? try ReleaseLock.take(in: lockDirectory, timeout: lockTimeout, clock: clock) : nil
        defer { withExtendedLifetime(lock) {} }
        return try publishPrevious(session: session, logger: logger)
    }

    /// The rollback, for a caller that holds the release-side lock already (a deployment
    /// that rolls back).
    public func publishPrevious(session: CloudSession, logger: Logger) throws -> RollbackOutcome {
        let (current, previous) = try publishedPair(session)
        guard let current else { throw RollbackError.nothingPublished(target.description) }
        guard let previous, previous != current else { throw RollbackError.noPrevious(target.description) }
        let snapshot: EC2Snapshot
        do {
            guard let found = try session.ec2.describeSnapshot(previous) else { throw RollbackError.previousUnusable(previous, "EC2 knows no such snapshot") }
            snapshot = found
        } catch let error as EC2CallError where error.code == "InvalidSnapshot.NotFound" {
            throw RollbackError.previousUnusable(previous, "EC2 knows no such snapshot (deleted?)")
        }
        guard snapshot.state == .completed else { throw RollbackError.previousUnusable(previous, "it is \(snapshot.state)") }
        guard !snapshot.isUnpublishedAttempt else { throw RollbackError.previousUnusable(previous, "publish never marked it as a release") }
        let outcome = RollbackOutcome(published: previous, identity: snapshot.releaseIdentity, replaced: current)
        guard mode == .apply else { return outcome }
        switch target {
        case .file(let path):
            do throws(SystemCallError) {
                // The rollback itself first: a crash between the two leaves it done.
                try AtomicFile.replace(path.text, with: snapshotFileBody(previous))
                try AtomicFile.replace(path.text + ".prev", with: snapshotFileBody(current))
            } catch {
                throw PublishError.output(path: path.text, error)
            }
        case .ssm(let name):
            try session.ssm.putParameter(name, value: previous.text, description: "snapmount rollback from \(current)")
        }
        logger.notice("\(target) names \(previous) (release \(snapshot.releaseIdentity)) again; it named \(current), now the previous one")
        return outcome
    }

    /// What the output names now, and the release before it.
    private func publishedPair(_ session: CloudSession) throws -> (current: SnapshotID?, previous: SnapshotID?) {
        switch target {
        case .file(let path):
            func read(_ file: String) throws -> SnapshotID? {
                let bytes: [UInt8]
                do throws(SystemCallError) {
                    bytes = try readFile(file, limit: 4096)
                } catch {
                    if error.errno == ENOENT { return nil }
                    throw error
                }
                return try SnapshotSourceBody.parse(bytes, url: file)
            }
            return (try read(path.text), try read(path.text + ".prev"))
        case .ssm(let name):
            let values: [SnapshotID]
            do throws(SSMCallError) {
                values = try session.ssm.history(name).compactMap { SnapshotID($0.value.trimmingWhitespace()) }
            } catch {
                if error.code == "ParameterNotFound" { return (nil, nil) }
                throw error
            }
            guard let current = values.last else { return (nil, nil) }
            return (current, values.last { $0 != current })
        }
    }
}
