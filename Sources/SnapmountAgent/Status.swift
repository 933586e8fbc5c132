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

/// `snapmount status`: what is mounted, which release it holds, from which snapshot, and
/// whether the source now names another one. What the mounted filesystem holds is read from
/// its manifest (a push may have changed it since the boot); the record (it survives a
/// reboot) tells the rest; what neither knows is asked of EC2 (the volume's identity tag and
/// its own `SnapshotId`).
public struct StatusReport: Sendable, Equatable {
    public var mountPoint: String
    public var mounted: Bool
    public var device: String?
    public var volume: String?
    public var snapshot: String?
    /// Where `snapshot` came from: `record`, or `EC2` (the volume's SnapshotId, or the
    /// snapshot of the release it holds).
    public var snapshotOrigin: String?
    /// The release the mounted filesystem holds (its identity), and where that was read:
    /// `manifest` (on the filesystem), `record`, or `EC2` (the volume's identity tag).
    public var release: String?
    public var releaseOrigin: String?
    /// The identity of the release the source names, when it had to be asked.
    public var sourceRelease: String?
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
        if let here = try? host.mounted(at: configuration.mountPoint.text) {
            report.mounted = true
            report.device = here.devicePath
            report.volume = here.volume?.text
        }
        let manifest = report.mounted ? ReleaseManifest.load(in: configuration.mountPoint.text) : nil
        if let manifest {
            report.release = manifest.id.text
            report.releaseOrigin = "manifest"
        }
        if report.mounted, let record = MountRecord.load(host.recordPath), record.mountPoint == configuration.mountPoint.text,
           report.volume == nil ? record.device == report.device : record.volume == report.volume {
            report.volume = record.volume
            report.mountedAt = record.completedAt.isEmpty ? nil : record.completedAt
            // The record's snapshot is what the volume held at boot; a push may have changed it
            // since. It still holds: the manifest names the recorded release, or there is no
            // manifest and the release never had one (a snapshot publish did not make). A
            // manifest gone since the boot is a push under way or one that failed: EC2's tag says.
            let recordedRelease = record.release.flatMap(ReleaseID.init)
            let stillHolds = manifest.map { $0.id == recordedRelease }
                ?? (recordedRelease == nil || recordedRelease.map { SnapshotID($0.text) != nil } == true)
            if stillHolds {
                report.snapshot = record.snapshot
                report.snapshotOrigin = record.snapshot == nil ? nil : "record"
                // A record from before identities: the snapshot is the release.
                if report.release == nil, let release = record.release ?? record.snapshot {
                    report.release = release
                    report.releaseOrigin = "record"
                }
            }
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
        // EC2 tells what the machine cannot: the release the volume holds and its snapshot,
        // the published release's identity, and which of two is newer.
        let needsSnapshot = report.mounted && report.snapshot == nil && report.volume != nil
        guard needsSnapshot || report.comparison == .different else { return report }
        do {
            let session = try connected()
            if needsSnapshot, let id = report.volume.flatMap(VolumeID.init), let volume = try session.ec2.describeVolumes(ids: [id]).first {
                if report.release == nil {
                    report.release = volume.heldRelease?.text
                    report.releaseOrigin = report.release == nil ? nil : "EC2"
                }
                let held = report.release.flatMap(ReleaseID.init)
                if held == nil || held == volume.snapshotID.map(ReleaseID.init(snapshot:)) || volume.tags[VolumeRequest.snapshotTag] == nil {
                    report.snapshot = held == nil ? nil : volume.snapshotID?.text
                } else if let held {
                    report.snapshot = try session.snapshot(holding: held)?.id.text
                }
                report.snapshotOrigin = report.snapshot == nil ? nil : "EC2"
            }
            guard let published = report.sourceSnapshot.flatMap(SnapshotID.init) else { return report }
            let publishedSnapshot = try session.ec2.describeSnapshot(published)
            if let publishedSnapshot { report.sourceRelease = publishedSnapshot.releaseIdentity.text }
            let heldRelease = report.release.flatMap(ReleaseID.init) ?? report.snapshot.flatMap(SnapshotID.init).map(ReleaseID.init(snapshot:))
            guard let heldRelease else { return report }
            if let publishedSnapshot, publishedSnapshot.releaseIdentity == heldRelease {
                report.comparison = .same
                return report
            }
            report.comparison = .different
            let mine = try report.snapshot.flatMap(SnapshotID.init).flatMap { try session.ec2.describeSnapshot($0) }
            if let mine = mine?.startTime, let theirs = publishedSnapshot?.startTime, mine != theirs {
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
        if mounted {
            switch (release, releaseOrigin) {
            case (let release?, "manifest"?): lines.append("release:   \(release)")
            case (let release?, "EC2"?): lines.append("release:   \(release) (the volume's identity tag, from EC2; no manifest on the filesystem)")
            case (let release?, _): lines.append("release:   \(release) (from the record; no manifest on the filesystem)")
            case (nil, _) where cloudError != nil: lines.append("release:   unknown (no manifest, and EC2 could not tell)")
            case (nil, _): lines.append("release:   no known release (no manifest, and the volume's identity tag says none: a push that did not finish; the next boot heals it)")
            }
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
            ("volume", optional(volume)), ("release", optional(release)), ("releaseOrigin", optional(releaseOrigin)),
            ("snapshot", optional(snapshot)), ("snapshotOrigin", optional(snapshotOrigin)), ("sourceRelease", optional(sourceRelease)),
            ("mountedAt", optional(mountedAt)), ("sourceSnapshot", optional(sourceSnapshot)), ("sourceError", optional(sourceError)),
            ("comparison", optional(comparison?.rawValue)), ("newerPublished", newerPublished.map(JSONValue.bool) ?? .null),
            ("cloudError", optional(cloudError)),
        ])
    }
}
