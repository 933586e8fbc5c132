import Logging
import SnapmountCore
import SnapmountSystem

/// Whether the boot flow acts, or only checks what it would do (`--dry-run`).
public enum FlowMode: Sendable, Equatable {
    /// Every step for real.
    case apply
    /// Every read-only step for real; the mutating edges report instead of acting: EC2
    /// mutations go with `DryRun=true`, mkfs, the fstab write and the mount are described.
    case check
}

/// A flow's step names: each flow has its own, on the one ``StepRecorder``.
public protocol StepName: RawRepresentable<String>, Sendable, Hashable, CaseIterable {}

/// The boot flow's steps, DESIGN.md §2, in order.
public enum BootStep: String, StepName {
    case lock, check, identity, credentials, snapshot, volume, attach, device, filesystem, fstab, mount, report
}

/// `snapmount publish`'s steps, in order. Its `snapshot` takes one; the boot's finds one.
public enum PublishStep: String, StepName {
    case lock, identity, credentials, volume, manifest, snapshot, wait, mark, publish, prune
}

/// A checklist line's mark.
public enum ChecklistMark: String, Sendable {
    case ok = "✓"
    case failed = "✗"
    case notApplicable = "—"
}

/// One line of the checklist: what a step found or did, or why it was not done.
public struct ChecklistItem<Step: StepName>: Sendable, Equatable {
    public typealias Mark = ChecklistMark

    public let mark: Mark
    public let step: Step
    public let detail: String
    /// For a ✗: the exit status the step ends a run with.
    public let exitStatus: ExitStatus?

    public init(mark: Mark, step: Step, detail: String, exitStatus: ExitStatus? = nil) {
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

/// A checklist line of any flow.
public protocol ChecklistLine {
    var mark: ChecklistMark { get }
    var exitStatus: ExitStatus? { get }
}

extension ChecklistItem: ChecklistLine {}

extension Array where Element: ChecklistLine {
    /// The exit status the checklist predicts: that of the first ✗, else 0.
    public var exitStatus: ExitStatus {
        first { $0.mark == .failed }?.exitStatus ?? .success
    }
}

/// What a step produced: its value for the steps after it, and its checklist line.
struct StepResult<Value> {
    var value: Value?
    var mark: ChecklistMark
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

/// The line of a step whose input an earlier step did not give.
let notCheckedText = "not checked: an earlier step did not succeed"

/// Runs a flow's named steps: times each and puts its line on the checklist. In apply mode a
/// failure ends the run; in check mode it becomes a ✗ line, and the step yields nothing.
final class StepRecorder<Step: StepName> {
    let mode: FlowMode
    private let clock: any AgentClock
    private let logger: Logger
    private(set) var checklist: [ChecklistItem<Step>] = []
    private(set) var timings: [(step: String, milliseconds: Int64)] = []
    /// Called at each step boundary, after a step succeeded: a seam for tests that change
    /// the world between two steps.
    var afterStep: ((Step) -> Void)?

    init(mode: FlowMode, clock: any AgentClock, logger: Logger, afterStep: ((Step) -> Void)? = nil) {
        self.mode = mode
        self.clock = clock
        self.logger = logger
        self.afterStep = afterStep
    }

    @discardableResult
    func run<Value>(_ name: Step, _ body: () throws -> StepResult<Value>) throws -> Value? {
        let started = clock.monotonic()
        defer { timings.append((name.rawValue, (clock.monotonic() - started).wholeMilliseconds)) }
        logger.debug("step \(name.rawValue)")
        do {
            // A step boundary is a safe point: past the deadline, or asked to stop, go no further.
            if mode == .apply, let interruption = clock.interruption() {
                throw InterruptedError(interruption, step: name.rawValue, cause: "not started")
            }
            let result = try body()
            checklist.append(ChecklistItem(mark: result.mark, step: name, detail: result.detail))
            if mode == .apply { logger.debug("\(name.rawValue): \(result.detail)") }
            afterStep?(name)
            return result.value
        } catch {
            // A failure that came from running out of time (or from a stop) says so: 75.
            // A refusal stays a refusal.
            if let interruption = clock.interruption(), !(error is InterruptedError),
               [.unavailable, .timedOut, .internalError].contains(ExitStatus(for: error)) {
                throw InterruptedError(interruption, step: name.rawValue, cause: "\(error)")
            }
            guard mode == .check else { throw error }
            checklist.append(ChecklistItem(mark: .failed, step: name, detail: "\(error)", exitStatus: ExitStatus(for: error)))
            return nil
        }
    }

    /// A step that needs an earlier one's value: without it (check mode, after a ✗ or a —)
    /// it is not run, and its line says so.
    @discardableResult
    func run<Input, Value>(_ name: Step, needs input: Input?, otherwise: String = notCheckedText,
                           _ body: (Input) throws -> StepResult<Value>) throws -> Value? {
        guard let input else {
            checklist.append(ChecklistItem(mark: .notApplicable, step: name, detail: otherwise))
            return nil
        }
        return try run(name) { try body(input) }
    }

    /// `12.3s: lock 0ms, check 1ms, …`
    func summary(since started: ContinuousClock.Instant) -> String {
        let total = clock.monotonic() - started
        return DurationText.format(.milliseconds(total.wholeMilliseconds)) + ": "
            + timings.map { "\($0.step) \(DurationText.format(.milliseconds($0.milliseconds)))" }.joined(separator: ", ")
    }
}

func both<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}

/// The steps every flow takes the same way: the lock, who this instance is, its credentials.
enum SharedSteps {
    /// The flow's lock, taken in apply mode; check mode only looks whether another run holds it.
    static func lock(_ mode: FlowMode, path: String, holder: String, take: () throws -> FileLock) throws -> StepResult<FileLock?> {
        guard mode == .apply else {
            return .done(nil, FileLock.isHeld(path) ? "\(path) is held by another \(holder); a run would wait for it" : "\(path) is free")
        }
        let lock = try take()
        return .done(lock, "\(path) taken")
    }

    /// Who and where this instance is (IMDSv2), and the session every later step calls AWS with.
    static func identity(_ environment: AgentEnvironment, clock: any AgentClock, logger: Logger, tuning: CloudTuning) throws -> StepResult<CloudSession> {
        let session = try CloudSession.connect(environment: environment, clock: clock, logger: logger, tuning: tuning)
        let identity = session.identity
        return .done(session, "\(identity.instanceID) in \(identity.availabilityZone) (account \(identity.accountID))")
    }

    /// Credentials, from the environment or the instance role, and how long they last.
    static func credentials(_ session: CloudSession) throws -> StepResult<AWSCredentials> {
        let credentials = try session.credentials.current()
        return .done(credentials, session.credentials.sourceDescription + (credentials.expiration.map { ", valid until \($0)" } ?? ""))
    }
}
