#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CLinux
import SnapmountCore
import Synchronization

/// Wall-clock time, sleeping and the run's time budget, behind a protocol so that tests can
/// see what the agent waited for. The product uses ``RunClock``.
public protocol AgentClock: Sendable {
    /// Wall-clock time, for signatures and credential expiry.
    func now() -> UTCTimestamp
    /// A monotonic reading, for deadlines and measurements.
    func monotonic() -> ContinuousClock.Instant
    func sleep(for duration: Duration)
    /// A number in [0, 1) for jitter.
    func random() -> Double
    /// What is left of the run's time: `nil` when the run is unbounded; zero once its
    /// deadline has passed or a stop was asked for (outside ``withGrace(_:_:)``).
    func remaining() -> Duration?
    /// Why the run must end now: its deadline passed (or a wait no longer fit in it), or a
    /// signal asked it to stop.
    func interruption() -> Interruption?
    /// Whether a wait of `duration` still fits in the run. A retry loop that is told no gives
    /// up, and the run then counts as out of time.
    func allows(_ duration: Duration) -> Bool
    /// Runs `body` with up to `extra` more time even after the deadline or a stop: for giving
    /// back a volume the run made.
    func withGrace<T, E: Error>(_ extra: Duration, _ body: () throws(E) -> T) throws(E) -> T
}

extension AgentClock {
    public func remaining() -> Duration? { nil }
    public func interruption() -> Interruption? { nil }
    public func withGrace<T, E: Error>(_ extra: Duration, _ body: () throws(E) -> T) throws(E) -> T { try body() }

    /// `duration`, or what is left of the run when that is less.
    public func capped(_ duration: Duration) -> Duration {
        guard let left = remaining() else { return duration }
        return max(.zero, min(duration, left))
    }

    public func allows(_ duration: Duration) -> Bool {
        guard let left = remaining() else { return true }
        return duration < left
    }
}

/// Why a run was cut short.
public enum Interruption: Sendable, Equatable, CustomStringConvertible {
    case deadline(Duration)
    case signal(Int32)

    public var description: String {
        switch self {
        case .deadline(let limit): "the run's deadline (run-timeout \(DurationText.format(limit))) passed"
        case .signal(let number): "stopped by \(number == SIGTERM ? "SIGTERM" : number == SIGINT ? "SIGINT" : "signal \(number)")"
        }
    }
}

/// A run cut short at a step: exit 75, so that systemd (or the operator) runs it again.
public struct InterruptedError: SnapmountError, Equatable {
    public let interruption: Interruption
    public let step: String
    public let cause: String

    public init(_ interruption: Interruption, step: String, cause: String) {
        self.interruption = interruption
        self.step = step
        self.cause = cause
    }

    public var exitStatus: ExitStatus { .timedOut }
    public var description: String { "\(interruption) during \(step): \(cause)" }
}

public struct SystemClock: AgentClock {
    public init() {}

    public func now() -> UTCTimestamp {
        var spec = timespec()
        _ = try? systemCall("clock_gettime", "CLOCK_REALTIME") { clock_gettime(CLOCK_REALTIME, &spec) }
        return UTCTimestamp(secondsSinceEpoch: Int64(spec.tv_sec))
    }

    public func monotonic() -> ContinuousClock.Instant {
        ContinuousClock.now
    }

    /// The corresponding C function is `nanosleep`; interrupted sleeps resume.
    public func sleep(for duration: Duration) {
        guard duration > .zero else { return }
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        // After a signal, sleep on for the time that remained: the wrapper retries EINTR.
        _ = try? systemCall("nanosleep", "") { () -> Int32 in
            let result = nanosleep(&request, &remaining)
            request = remaining
            return result
        }
    }

    public func random() -> Double {
        Double.random(in: 0..<1)
    }
}

/// The product's clock: the system's, bounded by the run's deadline (`run-timeout`) and by
/// SIGTERM/SIGINT (``StopSignal``). Every wait sleeps in short slices and ends as soon as
/// a stop is asked for or the time is up; ``remaining()`` tells each retry loop what is left.
public final class RunClock: AgentClock {
    public let limit: Duration
    private let end: ContinuousClock.Instant
    private let system = SystemClock()
    /// While a grace period runs, its end replaces the deadline, and a stop is ignored.
    private let grace = Mutex<ContinuousClock.Instant?>(nil)
    /// A wait was refused because it did not fit in what was left: the deadline has, in
    /// effect, passed.
    private let exhausted = Mutex(false)

    public init(limit: Duration) {
        self.limit = limit
        end = ContinuousClock.now + limit
    }

    public func now() -> UTCTimestamp { system.now() }
    public func monotonic() -> ContinuousClock.Instant { system.monotonic() }
    public func random() -> Double { system.random() }

    public func remaining() -> Duration? {
        if let graceEnd = grace.withLock({ $0 }) { return max(.zero, graceEnd - ContinuousClock.now) }
        if StopSignal.received != nil { return .zero }
        return max(.zero, end - ContinuousClock.now)
    }

    public func interruption() -> Interruption? {
        if let signal = StopSignal.received { return .signal(signal) }
        return ContinuousClock.now >= end || exhausted.withLock({ $0 }) ? .deadline(limit) : nil
    }

    public func allows(_ duration: Duration) -> Bool {
        guard let left = remaining() else { return true }
        if duration < left { return true }
        if grace.withLock({ $0 }) == nil { exhausted.withLock { $0 = true } }
        return false
    }

    public func sleep(for duration: Duration) {
        let until = ContinuousClock.now + capped(duration)
        while true {
            let left = until - ContinuousClock.now
            guard left > .zero, remaining() != .zero else { return }
            system.sleep(for: min(left, .milliseconds(100)))
        }
    }

    public func withGrace<T, E: Error>(_ extra: Duration, _ body: () throws(E) -> T) throws(E) -> T {
        let previous = grace.withLock { current in
            let old = current
            current = ContinuousClock.now + extra
            return old
        }
        defer { grace.withLock { $0 = previous } }
        return try body()
    }
}

/// SIGTERM and SIGINT (systemd stopping the unit, an operator's Ctrl-C) do not kill the
/// agent mid-step: they are recorded, and the run stops at its next safe point — a step
/// boundary, a wait, a retry — gives back a volume it made and did not attach, and exits 75.
public enum StopSignal {
    /// Installs the handler. The corresponding C function is `sigaction`.
    public static func catchSignals() {
        _ = try? systemCall("sigaction", "SIGTERM, SIGINT") { clinux_catch_stop_signals() }
    }

    /// The signal that asked for a stop, if one did.
    public static var received: Int32? {
        let signal = clinux_stop_requested()
        return signal == 0 ? nil : signal
    }
}

/// Credentials live in this process's memory: no core file, no ptrace by another user.
/// The corresponding C function is `prctl(PR_SET_DUMPABLE, 0)`.
public func forbidCoreDumps() throws(SystemCallError) {
    try systemCall("prctl", "PR_SET_DUMPABLE") { clinux_forbid_core_dumps() }
}

/// `count` random lowercase hex digits (the system's generator): attempt ids, release identities.
public func randomHexDigits(_ count: Int) -> String {
    String((0..<count).map { _ in "0123456789abcdef".randomElement() ?? "0" })
}
