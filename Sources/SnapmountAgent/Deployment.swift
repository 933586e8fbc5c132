import SnapmountCore

/// How far the new release got on a host: the last phase it passed.
public enum HostPhase: String, Sendable {
    /// Listed; not reached (or not reachable).
    case listed
    /// Its release is mounted there (the guard passed).
    case checked
    /// The staged tree holds the whole release, its manifest last.
    case staged
    /// In use, whole.
    case switched = "switch"
    /// The host's activate command succeeded.
    case activated = "activate"
    /// The host's health check passed.
    case healthy = "health"

    init(_ phase: SwitchPhase) {
        switch phase {
        case .switched: self = .switched
        case .activated: self = .activated
        case .healthy: self = .healthy
        }
    }
}

/// Why a deployment stopped after a wave: its failures passed `--max-failures`.
public struct DeploymentStop: Sendable {
    public var failures: [(host: String, instance: InstanceID, reason: String)]
    /// The wave after which it stopped, of those planned.
    public var wave: Int
    public var waves: Int
    public var maxFailures: HostCount
    public var bound: Int
    public var rollback: Bool
    /// Hosts the release had reached that went back to the release they had.
    public var reverted = 0
    /// Hosts that still hold the new release (no rollback asked for, or going back failed).
    public var stillOnRelease = 0
    public var notReached = 0
    /// With `--rollback-on-failure`: what became of the published id.
    public var published: String?

    public var description: String {
        var text = "the deployment stopped after wave \(wave) of \(waves): \(failures.count) host\(failures.count == 1 ? "" : "s") failed, "
            + "more than --max-failures \(maxFailures) allows (\(bound)): "
            + failures.map { "\($0.host.isEmpty ? "-" : $0.host) (\($0.instance)): \($0.reason)" }.joined(separator: "; ")
        text += "; \(notReached) host\(notReached == 1 ? "" : "s") not reached"
        if rollback {
            text += "; \(reverted) moved host\(reverted == 1 ? "" : "s") put back on the release \(reverted == 1 ? "it" : "they") had"
            if stillOnRelease > 0 { text += ", \(stillOnRelease) could not be (see the table)" }
        } else if stillOnRelease > 0 {
            text += "; \(stillOnRelease) host\(stillOnRelease == 1 ? "" : "s") hold\(stillOnRelease == 1 ? "s" : "") the new release (--rollback-on-failure puts them back)"
        }
        if let published { text += "; " + published }
        return text
    }
}

/// What a push or deployment was of, and how it ended: the head of `--json`.
public struct DeploymentSummary: Sendable, Equatable {
    public var release: ReleaseID
    public var snapshot: SnapshotID
    /// Waves started; 0 before the first.
    public var waves = 0
    /// The wave after which it stopped, when the failure bound stopped it.
    public var stoppedAfter: Int?
    /// With a rollback: what became of the published id.
    public var published: String?

    public init(release: ReleaseID, snapshot: SnapshotID) {
        self.release = release
        self.snapshot = snapshot
    }
}

extension PushFlow {
    /// `--json`: the release, how the deployment ended, and one object per host.
    public static func json(_ rows: [HostReport], summary: DeploymentSummary?, succeeded: Bool) -> JSONValue {
        func text(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
        let result = succeeded ? "succeeded" : summary?.stoppedAfter != nil ? "stopped" : "failed"
        return .object([
            ("release", text(summary?.release.text)), ("snapshot", text(summary?.snapshot.text)), ("result", .string(result)),
            ("waves", .number(String(summary?.waves ?? 0))), ("stoppedAfterWave", summary?.stoppedAfter.map { .number(String($0)) } ?? .null),
            ("published", text(summary?.published)),
            ("hosts", .array(rows.map { row in
                let bytes: JSONValue = switch row.outcome {
                case .pushed(let sent, _), .wouldPush(let sent), .reverted(let sent, _): .number(String(sent.bytesSent))
                default: .null
                }
                return .object([
                    ("host", text(row.address.isEmpty ? nil : row.address)), ("instance", .string(row.member.instance.text)),
                    ("group", .string(row.member.group)), ("zone", text(row.zone)), ("wave", row.wave > 0 ? .number(String(row.wave)) : .null),
                    ("volume", text(row.volume?.text)), ("before", text(row.before?.text)), ("after", text(row.after?.text)),
                    ("phase", .string(row.phase.rawValue)), ("result", .string(row.outcome.key)),
                    ("seconds", .number(secondsText(row.duration))), ("bytesSent", bytes), ("error", text(row.outcome.failure)),
                ])
            })),
        ])
    }

    /// A duration in seconds with milliseconds: `12.345`.
    private static func secondsText(_ duration: Duration) -> String {
        let milliseconds = max(0, duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        let rest = String(milliseconds % 1000)
        return "\(milliseconds / 1000)." + String(repeating: "0", count: 3 - rest.count) + rest
    }
}
