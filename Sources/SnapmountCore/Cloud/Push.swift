/// What `snapmount push` reads from Auto Scaling and EC2, and the decisions it makes from it,
/// without any I/O: which instances to push to, what rsync said, how a host's outcome reads.

/// Where an instance is in its Auto Scaling group's life cycle, as far as a push cares.
public enum LifecyclePhase: Sendable, Equatable {
    /// `Pending`, `Pending:Wait`, `Pending:Proceed`: still booting. Its boot reads the
    /// published id after mounting, so a release not yet mounted there needs no push.
    case launching
    /// `InService`, `EnteringStandby`, `Standby` (and any state Auto Scaling adds later):
    /// running the application, so it gets the files.
    case serving
    /// `Terminating…`, `Terminated`, `Detaching`, `Detached`, `Warmed:…`: on its way out.
    case leaving

    public init(_ state: String) {
        if state.hasPrefix("Pending") {
            self = .launching
        } else if state.hasPrefix("Terminat") || state.hasPrefix("Detach") || state.hasPrefix("Warmed") {
            self = .leaving
        } else {
            self = .serving
        }
    }
}

/// One instance of a group, as DescribeAutoScalingGroups lists it.
public struct GroupMember: Sendable, Equatable {
    public var instance: InstanceID
    public var group: String
    /// Auto Scaling's `LifecycleState`, as it says it.
    public var lifecycleState: String

    public init(instance: InstanceID, group: String, lifecycleState: String) {
        self.instance = instance
        self.group = group
        self.lifecycleState = lifecycleState
    }

    public var phase: LifecyclePhase { LifecyclePhase(lifecycleState) }
}

/// One page of DescribeAutoScalingGroups.
public struct GroupPage: Sendable, Equatable {
    /// The groups found, by name, each with its instances.
    public var groups: [String: [GroupMember]]
    public var nextToken: String?
}

/// Auto Scaling's Query API (version 2011-01-01) answers: `<member>` lists, capitalised names.
public enum AutoScalingDecoder {
    public static let apiVersion = "2011-01-01"

    public static func groups(_ bytes: [UInt8]) throws(EC2DecodeError) -> GroupPage {
        let action = "DescribeAutoScalingGroups"
        let root = try EC2Decoder.document(bytes, action: action)
        guard let result = root.child("\(action)Result"), let list = result.child("AutoScalingGroups") else {
            throw EC2DecodeError(action: action, problem: "no DescribeAutoScalingGroupsResult/AutoScalingGroups")
        }
        var groups: [String: [GroupMember]] = [:]
        for group in list.children where group.name == "member" {
            guard let name = group.value("AutoScalingGroupName"), !name.isEmpty else {
                throw EC2DecodeError(action: action, problem: "a group without AutoScalingGroupName")
            }
            var members: [GroupMember] = []
            for instance in group.child("Instances")?.children ?? [] where instance.name == "member" {
                guard let id = instance.value("InstanceId").flatMap(InstanceID.init) else {
                    throw EC2DecodeError(action: action, problem: "an instance of \(name) without a valid InstanceId")
                }
                members.append(GroupMember(instance: id, group: name, lifecycleState: instance.value("LifecycleState") ?? "InService"))
            }
            groups[name] = members
        }
        let token = result.value("NextToken").flatMap { $0.isEmpty ? nil : $0 }
        return GroupPage(groups: groups, nextToken: token)
    }
}

/// EC2's instance states (`instanceState/name`).
public enum InstanceState: Sendable, Equatable, CustomStringConvertible {
    case pending, running, stopping, stopped, shuttingDown, terminated
    case other(String)

    public init(_ text: String) {
        switch text {
        case "pending": self = .pending
        case "running": self = .running
        case "stopping": self = .stopping
        case "stopped": self = .stopped
        case "shutting-down": self = .shuttingDown
        case "terminated": self = .terminated
        default: self = .other(text)
        }
    }

    public var description: String {
        switch self {
        case .pending: "pending"
        case .running: "running"
        case .stopping: "stopping"
        case .stopped: "stopped"
        case .shuttingDown: "shutting-down"
        case .terminated: "terminated"
        case .other(let text): text
        }
    }
}

/// An instance as DescribeInstances describes it: enough to reach it.
public struct EC2Instance: Sendable, Equatable {
    public var id: InstanceID
    public var state: InstanceState
    public var privateAddress: String?
    /// `placement/availabilityZone`.
    public var availabilityZone: String?

    public init(id: InstanceID, state: InstanceState, privateAddress: String?, availabilityZone: String? = nil) {
        self.id = id
        self.state = state
        self.privateAddress = privateAddress
        self.availabilityZone = availabilityZone
    }
}

extension EC2Decoder {
    /// DescribeInstances: `reservationSet/item/instancesSet/item`, paged by `nextToken`.
    public static func instances(_ bytes: [UInt8]) throws(EC2DecodeError) -> (instances: [EC2Instance], nextToken: String?) {
        let action = "DescribeInstances"
        let root = try document(bytes, action: action)
        guard root.child("reservationSet") != nil else { throw EC2DecodeError(action: action, problem: "no reservationSet") }
        var result: [EC2Instance] = []
        for reservation in root.items("reservationSet") {
            for item in reservation.items("instancesSet") {
                guard let id = item.value("instanceId").flatMap(InstanceID.init) else {
                    throw EC2DecodeError(action: action, problem: "an instance without a valid instanceId")
                }
                let address = item.value("privateIpAddress").flatMap { $0.isEmpty ? nil : $0 }
                let zone = item.child("placement")?.value("availabilityZone").flatMap { $0.isEmpty ? nil : $0 }
                result.append(EC2Instance(id: id, state: InstanceState(item.child("instanceState")?.value("name") ?? ""), privateAddress: address,
                                          availabilityZone: zone))
            }
        }
        return (result, root.value("nextToken").flatMap { $0.isEmpty ? nil : $0 })
    }
}

/// What `rsync --stats` printed that the table shows: bytes sent and files transferred.
public struct RsyncSummary: Sendable, Equatable {
    public var bytesSent: Int64
    public var filesTransferred: Int

    public init(bytesSent: Int64, filesTransferred: Int) {
        self.bytesSent = bytesSent
        self.filesTransferred = filesTransferred
    }

    /// Reads `Total bytes sent: 1,234` and `Number of regular files transferred: 5` (rsync
    /// 3.1+ groups digits with `,` or `.` by locale; older ones print `files transferred`).
    public static func parse(_ output: String) -> RsyncSummary? {
        var sent: Int64?
        var files: Int?
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            // The number's digits, without its grouping separators.
            let number = String(parts[1].drop { $0 == " " }.prefix { $0.isASCII && ($0.isNumber || $0 == "," || $0 == ".") }
                .filter { $0.isNumber })
            switch String(parts[0]).trimmingWhitespace() {
            case "Total bytes sent": sent = Int64(number)
            case "Number of regular files transferred", "Number of files transferred": files = Int(number)
            default: break
            }
        }
        guard let sent else { return nil }
        return RsyncSummary(bytesSent: sent, filesTransferred: files ?? 0)
    }
}

/// How one host's push ended.
public enum PushOutcome: Sendable, Equatable {
    /// Synced, switched, activated and healthy; `recorded`: its volume's identity tag says so.
    case pushed(RsyncSummary, recorded: Bool)
    /// `--dry-run`: the guard passed; rsync -n says this much would be sent.
    case wouldPush(RsyncSummary)
    /// A launching instance whose release is not mounted yet: its boot mounts the published
    /// release (it reads the id after mounting), so there is nothing to push.
    case booting
    /// The instance left its group (or was terminated) while being pushed to.
    case gone
    /// ssh could not reach it (or it has no address yet): a failure, unless it is still
    /// launching and may be waited for.
    case unreachable(String)
    /// Its activation or health check failed: the host is back on the release it had.
    case rolledBack(String)
    /// Switched to the release and healthy, then put back on the release it had because the
    /// deployment stopped (`--rollback-on-failure`); the reason says which release.
    case reverted(RsyncSummary, String)
    /// The deployment stopped before this host's wave: it holds what it held.
    case notReached(String)
    case failed(String)

    public var isFailure: Bool {
        switch self {
        case .unreachable, .failed, .rolledBack: true
        case .pushed, .wouldPush, .booting, .gone, .reverted, .notReached: false
        }
    }

    /// Why it failed, for the message that names the failed hosts.
    public var failure: String? {
        switch self {
        case .unreachable(let reason): "unreachable: " + reason
        case .failed(let reason), .rolledBack(let reason): reason
        case .pushed, .wouldPush, .booting, .gone, .reverted, .notReached: nil
        }
    }

    /// The table's RESULT column.
    public var label: String {
        switch self {
        case .pushed(_, let recorded): recorded ? "pushed" : "pushed (not recorded)"
        case .wouldPush: "would push"
        case .booting: "booting"
        case .gone: "gone"
        case .unreachable, .failed: "FAILED"
        case .rolledBack: "ROLLED BACK"
        case .reverted: "REVERTED"
        case .notReached: "not reached"
        }
    }

    /// The `result` of `--json`.
    public var key: String {
        switch self {
        case .pushed: "deployed"
        case .wouldPush: "would-deploy"
        case .booting: "booting"
        case .gone: "gone"
        case .unreachable: "unreachable"
        case .rolledBack: "rolled-back"
        case .reverted: "reverted"
        case .notReached: "not-reached"
        case .failed: "failed"
        }
    }
}

/// Byte counts as a person reads them: `0 B`, `812 B`, `14.2 kB`, `3.1 MB` (powers of 1000).
public func formatBytes(_ bytes: Int64) -> String {
    if bytes < 1000 { return "\(bytes) B" }
    let units = ["kB", "MB", "GB", "TB"]
    var value = Double(bytes) / 1000
    var unit = 0
    while value >= 999.95 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) \(units[unit])"
}

/// A group name as Auto Scaling allows it: 1–255 characters, no control characters.
public func isAutoScalingGroupName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 255 && !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
}

/// Rows of words as a table a person reads: each column as wide as its widest word, two
/// spaces between columns, no space after the last.
public func textTable(_ lines: [[String]]) -> String {
    let widths = (lines.first ?? []).indices.map { column in lines.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
    return lines.map { line in
        line.enumerated().map { index, word in
            index == line.count - 1 ? word : word + String(repeating: " ", count: max(0, widths[index] - word.count))
        }.joined(separator: "  ")
    }.joined(separator: "\n") + "\n"
}
