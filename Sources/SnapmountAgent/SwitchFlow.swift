import Logging
import SnapmountCore
import SnapmountSystem

/// Why `snapmount switch` ended without the release it was asked for in use.
public enum SwitchError: SnapmountError, Equatable {
    /// The tree is another release than the one the release server sent.
    case notExpected(staged: ReleaseID?, expected: ReleaseID)
    /// Activation or the health check failed; the host is back on its previous release.
    case failed(SwitchReport)
    case lockTimeout(String)

    public var exitStatus: ExitStatus {
        switch self {
        case .notExpected: .dataRefused
        case .failed(let report): report.timedOut ? .timedOut : .unavailable
        case .lockTimeout: .timedOut
        }
    }

    public var description: String {
        switch self {
        case .notExpected(let staged, let expected):
            "the tree to switch to holds \(staged.map { "release \($0)" } ?? "no known release"), not \(expected): another push is staging here, or the sync did not finish; nothing was switched"
        case .failed(let report):
            report.error ?? "the switch failed"
        case .lockTimeout(let path):
            "\(path) is still held by another snapmount (a boot, or another switch); nothing was switched"
        }
    }
}

/// How far a switch got, for the release server's table.
public enum SwitchPhase: String, Sendable, CaseIterable {
    case switched = "switch", activated = "activate", healthy = "health"
}

/// What `snapmount switch --json` says: one line the release server reads back.
public struct SwitchReport: Sendable, Equatable {
    public enum Result: String, Sendable {
        /// The asked-for release is in use, activated and healthy.
        case switched
        /// It failed to activate or to pass its health check; the previous release is in use again.
        case rolledBack = "rolled-back"
        /// It failed, and going back failed too: the host's release is not known to work.
        case failed
        /// Nothing was switched (the lock, the tree, a failure undone): the release in use is as it was.
        case unchanged
    }

    public var before: ReleaseID?
    /// The release in use when it ended.
    public var after: ReleaseID?
    public var result: Result
    /// The last phase the asked-for release passed; `nil`: not even switched.
    public var reached: SwitchPhase?
    public var error: String?
    public var milliseconds: Int
    /// The failure was a timeout (activation or health), not an answer.
    public var timedOut = false

    public init(before: ReleaseID?, after: ReleaseID?, result: Result, reached: SwitchPhase?, error: String?, milliseconds: Int) {
        self.before = before
        self.after = after
        self.result = result
        self.reached = reached
        self.error = error
        self.milliseconds = milliseconds
    }

    public var json: JSONValue {
        func text(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
        return .object([
            ("switch", .string(result.rawValue)), ("before", text(before?.text)), ("after", text(after?.text)),
            ("reached", text(reached?.rawValue)), ("error", text(error)), ("timedOut", .bool(timedOut)),
            ("milliseconds", .number(String(milliseconds))),
        ])
    }

    /// The report in a command's output: the last line that is one.
    public init?(output: String) {
        for line in output.split(separator: "\n").reversed() {
            let trimmed = String(line).trimmingWhitespace()
            guard trimmed.hasPrefix("{"), let json = try? parseJSON(Array(trimmed.utf8)),
                  let result = json["switch"]?.string.flatMap(Result.init(rawValue:)) else { continue }
            self.init(before: json["before"]?.string.flatMap(ReleaseID.init), after: json["after"]?.string.flatMap(ReleaseID.init),
                      result: result, reached: json["reached"]?.string.flatMap(SwitchPhase.init(rawValue:)),
                      error: json["error"]?.string, milliseconds: json["milliseconds"].flatMap { value -> Int? in
                          if case .number(let text) = value { return Int(text) }
                          return nil
                      } ?? 0)
            timedOut = json["timedOut"] == .bool(true)
            return
        }
        return nil
    }
}

/// `snapmount switch` on an instance: puts the staged tree (or the previous one) in use whole,
/// activates it as the host's configuration declares, and checks its health; when either
/// fails, switches back and activates the previous release again. Holds the boot's lock, so a
/// boot's converge and a switch never overlap.
public final class SwitchFlow {
    public let side: ReleaseTree.Side
    /// The release the caller staged; the staged tree must be that one.
    public var expected: ReleaseID?
    private let tree: ReleaseTree
    private let activation: Activation
    private let host: HostEdges
    private let clock: any AgentClock
    private let logger: Logger
    private let health: HealthProbe

    public init(mountPoint: String, side: ReleaseTree.Side, activation: Activation, host: HostEdges, clock: any AgentClock,
                logger: Logger, tree: ReleaseTree? = nil, health: HealthProbe? = nil) {
        self.side = side
        self.tree = tree ?? ReleaseTree(mountPoint: mountPoint, clock: clock)
        self.activation = activation
        self.host = host
        self.clock = clock
        self.logger = logger
        self.health = health ?? HealthProbe(runner: host.runner, clock: clock)
    }

    /// Before a push stages: finishes an interrupted switch, empties the staged tree.
    public func prepare() throws {
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        if let finished = try tree.prepare() {
            logger.warning("finished a switch to the \(finished.rawValue) tree that was interrupted")
        }
    }

    /// Switches, activates, checks; the report says how it ended, the release in use read
    /// from the volume. Throws when nothing was switched: the lock, a missing, incomplete or
    /// unexpected tree, or a switch that failed and was undone (``unchanged(_:)`` reports those).
    public func run() throws -> SwitchReport {
        let started = clock.monotonic()
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        // An interrupted switch first: what is in use, and what is staged, are known only after.
        if let finished = try tree.finishInterrupted() {
            logger.warning("finished a switch to the \(finished.rawValue) tree that was interrupted")
        }
        let before = inUse()
        let target = tree.manifest(of: side)?.id
        if side == .staged && target == nil { throw ReleaseTreeError.incomplete(tree.path(of: side)) }
        if let expected, target != expected { throw SwitchError.notExpected(staged: target, expected: expected) }
        try tree.switchTo(side)
        let name = target?.text ?? "the previous tree"
        logger.notice("\(tree.mountPoint): \(name) in use (was \(before?.text ?? "no known release"))")
        func report(_ result: SwitchReport.Result, _ reached: SwitchPhase?, error: String? = nil) -> SwitchReport {
            SwitchReport(before: before, after: inUse(), result: result, reached: reached, error: error,
                         milliseconds: Int((clock.monotonic() - started) / .milliseconds(1)))
        }
        var reached = SwitchPhase.switched
        let failure: ActivationFailure
        do {
            try activate(target)
            reached = .activated
            try check(target)
            return report(.switched, .healthy)
        } catch {
            failure = error
        }
        // Back to what was in use: the tree it left is the previous one now.
        let old = before?.text ?? "the previous tree"
        logger.error("\(name): \(failure.message); switching back to \(old)")
        var outcome = SwitchReport.Result.rolledBack
        var message = "\(failure.message); switched back to \(old)"
        do {
            try tree.switchTo(.previous)
            try activate(before)
            try check(before)
        } catch let error as ActivationFailure {
            outcome = .failed
            message = "\(failure.message); switched back to \(old), which failed too: \(error.message)"
        } catch {
            outcome = .failed
            message = "\(failure.message); switching back failed: \(error)"
        }
        var back = report(outcome, reached, error: message)
        back.timedOut = failure.timedOut
        return back
    }

    /// The release in use, as the volume's root says.
    private func inUse() -> ReleaseID? { ReleaseManifest.load(in: tree.mountPoint)?.id }

    /// What `switch --json` says when nothing was switched: the release in use, unchanged.
    public func unchanged(_ error: any Error) -> SwitchReport {
        let held = inUse()
        return SwitchReport(before: held, after: held, result: .unchanged, reached: nil, error: "\(error)", milliseconds: 0)
    }

    private func takeLock() throws -> FileLock {
        guard let lock = try FileLock.acquire(host.lockPath, timeout: host.lockTimeout, clock: clock) else {
            throw SwitchError.lockTimeout(host.lockPath)
        }
        return lock
    }

    /// A failed activation or health check: what to tell the operator.
    struct ActivationFailure: Error {
        var message: String
        var timedOut = false
    }

    private func activate(_ release: ReleaseID?) throws(ActivationFailure) {
        guard let command = activation.command else { return }
        let name = release?.text ?? "the previous tree"
        do {
            let result = try host.runner.run(command.program, command.arguments, timeout: activation.commandTimeout)
            guard result.status == 0 else {
                throw ActivationFailure(message: "activate (\(command)) exited \(result.status) for \(name): " + lastOutputLine(result.output))
            }
            logger.notice("activated \(name): \(command)")
        } catch let error as ProcessRunError {
            if case .timedOut = error { throw ActivationFailure(message: "activate (\(command)) for \(name): \(error)", timedOut: true) }
            throw ActivationFailure(message: "activate (\(command)) for \(name): \(error)")
        } catch let error as ActivationFailure {
            throw error
        } catch {
            throw ActivationFailure(message: "activate (\(command)) for \(name): \(error)")
        }
    }

    private func check(_ release: ReleaseID?) throws(ActivationFailure) {
        guard let check = activation.healthCheck else { return }
        let name = release?.text ?? "the previous tree"
        switch health.wait(for: check, within: activation.healthTimeout) {
        case .passed(let attempts, let after):
            logger.notice("\(name) is healthy (\(check), \(attempts) attempt\(attempts == 1 ? "" : "s"), \(DurationText.format(after)))")
        case .failed(let last, let attempts):
            throw ActivationFailure(message: "health check \(check) did not pass within \(DurationText.format(activation.healthTimeout)) for \(name) (\(attempts) attempts; last: \(last))")
        }
    }
}

/// The health check, tried until it passes or its time is up: a URL must answer 2xx, a
/// command must exit 0. A pause of a second between attempts.
public struct HealthProbe: Sendable {
    public enum Outcome: Equatable {
        case passed(attempts: Int, after: Duration)
        case failed(last: String, attempts: Int)
    }

    let runner: any CommandRunner
    let clock: any AgentClock
    public var pause: Duration = .seconds(1)

    public init(runner: any CommandRunner, clock: any AgentClock) {
        self.runner = runner
        self.clock = clock
    }

    public func wait(for check: HealthCheck, within limit: Duration) -> Outcome {
        let started = clock.monotonic()
        var attempts = 0
        var last = "not tried"
        while true {
            attempts += 1
            let left = limit - (clock.monotonic() - started)
            let attempt = max(.seconds(1), min(left, .seconds(10)))
            switch check {
            case .url(let url):
                do {
                    let client = try HTTPClient()
                    let response = try client.send(HTTPRequest(.get, url.text, connectTimeout: min(attempt, .seconds(5)), timeout: attempt,
                                                               maximumResponseBytes: 64 * 1024, useProxy: false))
                    if (200..<300).contains(response.status) { return .passed(attempts: attempts, after: clock.monotonic() - started) }
                    last = "HTTP \(response.status)"
                } catch {
                    last = "\(error)"
                }
            case .command(let command):
                do {
                    let result = try runner.run(command.program, command.arguments, timeout: attempt)
                    if result.status == 0 { return .passed(attempts: attempts, after: clock.monotonic() - started) }
                    last = "exit \(result.status): " + lastOutputLine(result.output)
                } catch {
                    last = "\(error)"
                }
            }
            guard clock.monotonic() - started + pause < limit else { return .failed(last: last, attempts: attempts) }
            clock.sleep(for: pause)
        }
    }
}

/// A program's last line of output, for a one-line message.
func lastOutputLine(_ output: String, or fallback: String = "no output") -> String {
    let lines = output.split(separator: "\n").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
    return lines.last.map { $0.quotedForMessage(limit: 200) } ?? fallback
}
