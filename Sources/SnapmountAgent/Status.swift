import Logging
import SnapmountCore
import SnapmountSystem

/// How the published snapshot compares with the mounted one.
public enum ReleaseComparison: String, Sendable, Equatable {
    case same
    /// The source names a snapshot taken after the mounted one.
    case newer
    /// The source names a snapshot taken before it (a rollback was published).
    case older
    /// Another snapshot; which is newer could not be told (EC2 unreachable, no start times).
    case different
}

/// `snapmount status`: what is mounted, from which volume and snapshot, and whether the
/// source now names another one. The record is read first (it survives a reboot); when it
/// does not know the snapshot, the volume's own `SnapshotId` is asked of EC2.
public struct StatusReport: Sendable, Equatable {
    public var mountPoint: String
    public var mounted: Bool
    public var device: String?
    public var volume: String?
    public var snapshot: String?
    /// Where `snapshot` came from: `record`, or `EC2` (the volume's SnapshotId).
    public var snapshotOrigin: String?
    public var mountedAt: String?
    public var sourceSnapshot: String?
    public var sourceError: String?
    public var comparison: ReleaseComparison?
    /// What EC2 could not tell, when it was asked.
    public var cloudError: String?

    /// `true` only when the source names a snapshot known to be newer; `nil` when unknown.
    public var newerPublished: Bool? {
        switch comparison {
        case .newer?: true
        case .same?, .older?: false
        case .different?, nil: nil
        }
    }

    /// Status is read by people and scripts at any time: short timeouts, few retries.
    public static func statusTuning() -> CloudTuning {
        var tuning = CloudTuning()
        tuning.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(200), maxBackoff: .seconds(1))
        tuning.ec2Timeout = .seconds(5)
        tuning.sourceTimeout = .seconds(5)
        tuning.imdsRetry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(100), maxBackoff: .milliseconds(500))
        tuning.imdsTimeout = .seconds(1)
        return tuning
    }

    public static func collect(configuration: Configuration, environment: AgentEnvironment, host: HostEdges,
                               clock: any AgentClock = SystemClock(), logger: Logger, tuning: CloudTuning = statusTuning()) -> StatusReport {
        var report = StatusReport(mountPoint: configuration.mountPoint.text, mounted: false)
        let mountPoint = resolvedPath(configuration.mountPoint.text)
        if let entry = (try? host.mounter.mounts())?.last(where: { $0.mountPoint == mountPoint }) {
            report.mounted = true
            let device = host.devices.scan().first { $0.number == entry.device }
            report.device = device.map { "\(host.devices.devDirectory)/\($0.name)" } ?? entry.source
            report.volume = device?.serial.flatMap(VolumeID.fromNVMeSerial)?.text
        }
        if report.mounted, let record = MountRecord.load(host.recordPath), record.mountPoint == configuration.mountPoint.text,
           report.volume == nil ? record.device == report.device : record.volume == report.volume {
            report.volume = record.volume
            report.snapshot = record.snapshot
            report.snapshotOrigin = record.snapshot == nil ? nil : "record"
            report.mountedAt = record.completedAt.isEmpty ? nil : record.completedAt
        }

        let http: HTTPClient
        do {
            http = try HTTPClient(trustedCertificatesFile: environment.caBundle, proxy: environment.proxy)
        } catch {
            report.sourceError = "\(error)"
            return report
        }
        var source = SnapshotSourceClient(http: http, retry: tuning.retry ?? RetryPolicy(maxAttempts: 2), clock: clock, logger: logger)
        source.timeout = tuning.sourceTimeout
        // An ssm: or tag: source is read through the cloud session, made once.
        var session: CloudSession?
        func connected() throws -> CloudSession {
            if let session { return session }
            let made = try CloudSession.connect(environment: environment, clock: clock, logger: logger, tuning: tuning)
            session = made
            return made
        }
        do {
            if case .url(let url) = configuration.source {
                report.sourceSnapshot = try source.fetch(url).text
            } else {
                report.sourceSnapshot = try connected().publishedID(configuration.source, owner: configuration.snapshotOwner).text
            }
        } catch {
            report.sourceError = "\(error)"
        }
        if let snapshot = report.snapshot, let published = report.sourceSnapshot {
            report.comparison = snapshot == published ? .same : .different
        }
        // EC2 tells what the machine cannot: the volume's snapshot, and which snapshot is newer.
        let needsSnapshot = report.mounted && report.snapshot == nil && report.volume != nil
        guard needsSnapshot || report.comparison == .different else { return report }
        do {
            let session = try connected()
            if needsSnapshot, let volume = report.volume.flatMap(VolumeID.init) {
                report.snapshot = try session.ec2.describeVolumes(ids: [volume]).first?.snapshotID?.text
                report.snapshotOrigin = report.snapshot == nil ? nil : "EC2"
            }
            guard let snapshot = report.snapshot.flatMap(SnapshotID.init), let published = report.sourceSnapshot.flatMap(SnapshotID.init) else {
                return report
            }
            guard snapshot != published else {
                report.comparison = .same
                return report
            }
            report.comparison = .different
            if let mine = try session.ec2.describeSnapshot(snapshot)?.startTime, let theirs = try session.ec2.describeSnapshot(published)?.startTime,
               mine != theirs {
                report.comparison = theirs > mine ? .newer : .older
            }
        } catch {
            report.cloudError = "\(error)"
        }
        return report
    }

    public var text: String {
        var lines: [String] = []
        if mounted {
            lines.append("mounted:   \(mountPoint) from \(device ?? "?")" + (volume.map { " (\($0))" } ?? ""))
        } else {
            lines.append("mounted:   no — \(mountPoint) is not mounted")
        }
        if let snapshot {
            let origin = snapshotOrigin == "EC2" ? " (the volume's snapshot, from EC2; no record of this mount)" : ""
            lines.append("snapshot:  \(snapshot)" + (mountedAt.map { ", mounted \($0)" } ?? "") + origin)
        } else if mounted {
            lines.append("snapshot:  unknown (no record of this mount, and EC2 could not tell\(cloudError.map { ": \($0)" } ?? ""))")
        }
        if let sourceSnapshot {
            switch comparison {
            case .same?: lines.append("source:    \(sourceSnapshot) — up to date")
            case .newer?: lines.append("source:    \(sourceSnapshot) — a newer release is published")
            case .older?: lines.append("source:    \(sourceSnapshot) — an older release is published (a rollback)")
            case .different?: lines.append("source:    \(sourceSnapshot) — a different release is published")
            case nil: lines.append("source:    \(sourceSnapshot)")
            }
        } else {
            lines.append("source:    unavailable: \(sourceError ?? "?")")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public var json: JSONValue {
        func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return .object([
            ("mountPoint", .string(mountPoint)), ("mounted", .bool(mounted)), ("device", optional(device)),
            ("volume", optional(volume)), ("snapshot", optional(snapshot)), ("snapshotOrigin", optional(snapshotOrigin)),
            ("mountedAt", optional(mountedAt)), ("sourceSnapshot", optional(sourceSnapshot)), ("sourceError", optional(sourceError)),
            ("comparison", optional(comparison?.rawValue)), ("newerPublished", newerPublished.map(JSONValue.bool) ?? .null),
            ("cloudError", optional(cloudError)),
        ])
    }
}
