import SnapmountCore

/// Whether the boot flow acts, or only checks what it would do (`--dry-run`).
public enum FlowMode: Sendable, Equatable {
    /// Every step for real.
    case apply
    /// Every read-only step for real; the mutating edges report instead of acting: EC2
    /// mutations go with `DryRun=true`, mkfs, the fstab write and the mount are described.
    case check
}

/// The steps of DESIGN.md §2, in order.
public enum FlowStep: String, Sendable, CaseIterable {
    case lock, check, identity, credentials, snapshot, volume, attach, device, filesystem, fstab, mount, report
}

/// One line of the checklist: what a step found or did, or why it was not done.
public struct ChecklistItem: Sendable, Equatable {
    public enum Mark: String, Sendable {
        case ok = "✓"
        case failed = "✗"
        case notApplicable = "—"
    }

    public let mark: Mark
    public let step: FlowStep
    public let detail: String
    /// For a ✗: the exit status the step ends a run with.
    public let exitStatus: ExitStatus?

    public init(mark: Mark, step: FlowStep, detail: String, exitStatus: ExitStatus? = nil) {
        self.mark = mark
        self.step = step
        self.detail = detail
        self.exitStatus = exitStatus
    }

    public var line: String {
        let name = step.rawValue
        return "\(mark.rawValue) \(name)\(String(repeating: " ", count: max(1, 13 - name.count)))\(detail)"
    }
}

extension [ChecklistItem] {
    /// The exit status the checklist predicts: that of the first ✗, else 0.
    public var exitStatus: ExitStatus {
        first { $0.mark == .failed }?.exitStatus ?? .success
    }
}

/// What a step produced: its value for the steps after it, and its checklist line.
struct StepResult<Value> {
    var value: Value?
    var mark: ChecklistItem.Mark
    var detail: String

    /// ✓: done (apply), or checked and possible (check).
    static func done(_ value: Value, _ detail: String) -> StepResult {
        StepResult(value: value, mark: .ok, detail: detail)
    }

    /// —: nothing to do or to check here; the steps that need this one's value say so too.
    static func skipped(_ detail: String) -> StepResult {
        StepResult(value: nil, mark: .notApplicable, detail: detail)
    }
}
