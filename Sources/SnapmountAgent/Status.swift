import Logging
import SnapmountCore
import SnapmountSystem

/// `snapmount status`: what is mounted, from which volume and snapshot, and whether the
/// source now names a newer snapshot.
public struct StatusReport: Sendable, Equatable {
    public var mountPoint: String
    public var mounted: Bool
    public var device: String?
    public var volume: String?
    public var snapshot: String?
    public var mountedAt: String?
    public var sourceSnapshot: String?
    public var sourceError: String?

    /// `nil` when either side is unknown.
    public var newerPublished: Bool? {
        guard let snapshot, let sourceSnapshot else { return nil }
        return snapshot != sourceSnapshot
    }

    public static func collect(configuration: Configuration, host: HostEdges, http: HTTPClient, logger: Logger) -> StatusReport {
        var report = StatusReport(mountPoint: configuration.mountPoint.text, mounted: false)
        let record = MountRecord.load(host.statePath)
        if let entry = host.mounter.mounts().last(where: { $0.mountPoint == configuration.mountPoint.text }) {
            report.mounted = true
            let device = host.devices.scan().first { $0.number == entry.device }
            report.device = device.map { "\(host.devices.devDirectory)/\($0.name)" } ?? entry.source
            if let serial = device?.serial, serial.hasPrefix("vol") {
                report.volume = "vol-" + serial.dropFirst(3)
            }
        }
        if let record, record.mountPoint == configuration.mountPoint.text {
            report.volume = report.volume ?? record.volume
            if report.volume == record.volume {
                report.snapshot = record.snapshot
                report.mountedAt = record.completedAt
            }
        }
        var source = SnapshotSourceClient(http: http, retry: RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(200)), logger: logger)
        source.timeout = .seconds(5)
        do {
            report.sourceSnapshot = try source.fetch(configuration.source).text
        } catch {
            report.sourceError = error.description
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
        lines.append("snapshot:  " + (snapshot.map { $0 + (mountedAt.map { ", mounted \($0)" } ?? "") } ?? "unknown (no state file for this mount)"))
        if let sourceSnapshot {
            switch newerPublished {
            case true?: lines.append("source:    \(sourceSnapshot) — a newer release is published")
            case false?: lines.append("source:    \(sourceSnapshot) — up to date")
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
            ("volume", optional(volume)), ("snapshot", optional(snapshot)), ("mountedAt", optional(mountedAt)),
            ("sourceSnapshot", optional(sourceSnapshot)), ("sourceError", optional(sourceError)),
            ("newerPublished", newerPublished.map(JSONValue.bool) ?? .null),
        ])
    }
}
