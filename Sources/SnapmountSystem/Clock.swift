#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// Wall-clock time and sleeping, behind a protocol so that tests can see what the agent
/// waited for. The product uses ``SystemClock``.
public protocol AgentClock: Sendable {
    /// Wall-clock time, for signatures and credential expiry.
    func now() -> UTCTimestamp
    /// A monotonic reading, for deadlines and measurements.
    func monotonic() -> ContinuousClock.Instant
    func sleep(for duration: Duration)
    /// A number in [0, 1) for jitter.
    func random() -> Double
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
