import Logging
import SnapmountCore
import Synchronization

/// AWS's time as this run knows it: the local clock plus the skew that signed answers
/// measure (``ClockSkew``). One per run, shared by EC2, Auto Scaling, SSM and the expiry
/// check of the role's credentials: a clock that is off is off for all of them, so the first
/// answer that tells it corrects the others before AWS refuses them.
public final class AWSTime: Sendable {
    public let clock: any AgentClock
    private let skew = Mutex(ClockSkew())

    public init(clock: any AgentClock, correction: Int64 = 0) {
        self.clock = clock
        skew.withLock { $0.record(correction) }
    }

    /// Seconds to add to the local clock.
    public var correction: Int64 { skew.withLock { $0.seconds } }

    /// The local time, corrected.
    public func now() -> UTCTimestamp { corrected(clock.now()) }

    public func corrected(_ local: UTCTimestamp) -> UTCTimestamp { local.adding(seconds: correction) }

    /// Takes what an answer of `service` measured; says so in the journal when the
    /// correction appears, changes by more than a minute, or goes away.
    func record(_ measured: Int64, service: String, logger: Logger) {
        let old = skew.withLock { skew in
            let old = skew.seconds
            skew.record(measured)
            return old
        }
        guard ClockSkew.isNotable(from: old, to: measured) else { return }
        if abs(measured) > ClockSkew.threshold {
            logger.warning("the local clock is \(abs(measured)) s \(measured > 0 ? "behind" : "ahead of") AWS's (\(service)'s Date header); signing with AWS's time")
        } else {
            logger.info("the local clock is within \(ClockSkew.threshold / 60) minutes of AWS's again (\(service)'s Date header, \(measured) s)")
        }
    }
}

/// How the retry loop treats a failed attempt.
public enum RetryClass: Sendable, Equatable {
    /// The service said to slow down: a throttle wait (``RetryPolicy/throttleWait``), and the
    /// call was not carried out.
    case throttling
    /// A fault worth another try after a backoff: 5xx, a reset, an unreadable answer.
    case transient
    /// No answer in time: transient, at the quota's higher price.
    case timeout
    /// Retrying cannot help (unless the answer proves it was the clock: ``ClockSkew``).
    case final
}

/// One attempt as the loop sees it.
public struct AttemptContext {
    /// 1 for the first.
    public let number: Int
    private let clock: any AgentClock
    private let time: AWSTime?
    /// The local clock when the request was signed — its send, for the skew measurement.
    public private(set) var sentAt: UTCTimestamp?
    /// What the server answered, if it answered: its `Date` and `Age` headers.
    public var answer: (date: String?, age: String?)?

    init(number: Int, clock: any AgentClock, time: AWSTime?) {
        self.number = number
        self.clock = clock
        self.time = time
    }

    /// The time to sign the request with, read just before signing (after the credentials,
    /// which may take a while): the local clock now, corrected. It marks the send.
    public mutating func signingTime() -> UTCTimestamp {
        let now = clock.now()
        sentAt = now
        return time?.corrected(now) ?? now
    }

    /// Keeps the answer's headers for the clock-skew measurement.
    public mutating func answered(_ response: HTTPResponse) {
        answer = (response.header("Date"), response.header("Age"))
    }
}

/// An attempt's result.
public enum Attempt<T, E: Error> {
    case success(T)
    /// `code`: the error code the service answered with, for the clock-skew rule.
    case failure(E, RetryClass, code: String? = nil)
}

/// The one retry loop every client uses (EC2, Auto Scaling, SSM, IMDS, the snapshot source,
/// and publish's freeze rounds on top of EC2's): the SDKs' standard mode — capped, jittered
/// exponential backoff, a throttle wait of its own, a bounded number of attempts, a retry
/// quota — their adaptive mode's client-side rate limit when ``limiter`` is set, and, for a
/// signed client (``time``), the clock-skew correction: every answer's `Date` measured, a skew
/// error retried on the corrected time. Every wait is one the run's clock allows.
public final class RetryLoop {
    public let policy: RetryPolicy
    public let clock: any AgentClock
    /// The service's name in messages ("EC2", "SSM", "instance metadata").
    public let service: String
    /// Signed clients: the run's corrected time, which answers teach.
    public let time: AWSTime?
    private let logger: Logger
    /// Retry lines at this level (IMDS's are debug: the flow's own message says enough).
    public var retryLogLevel: Logger.Level = .warning
    private var quota = RetryQuota()
    /// `AWS_RETRY_MODE=adaptive`: after throttling, slow the sending itself.
    public var limiter: AdaptiveRateLimiter?
    private let started: ContinuousClock.Instant

    public init(policy: RetryPolicy, clock: any AgentClock, service: String, time: AWSTime? = nil, logger: Logger) {
        self.policy = policy
        self.clock = clock
        self.service = service
        self.time = time
        self.logger = logger
        started = clock.monotonic()
    }

    /// What the retry quota holds now.
    public var quotaAvailable: Int { quota.available }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts, the quota or the
    /// run's time are spent; throws the last failure. Before each retry but one after
    /// throttling (refused before it was carried out), `beforeRetry` may find the call was
    /// carried out after all (a lost answer) and return its result instead.
    /// - Parameters:
    ///   - label: what is tried, for the retry lines ("EC2 CreateVolume").
    ///   - maxAttempts: other than the policy's (1: a single attempt).
    ///   - reason: a few words for a failure, for the retry lines.
    ///   - exhausted: the error to throw when retries were made and are spent (it may say how many).
    public func run<T, E: Error>(_ label: String, maxAttempts: Int? = nil, reason: (E) -> String = { "\($0)" },
                                 exhausted: (E, Int) -> E = { error, _ in error },
                                 beforeRetry: (E) throws(E) -> T? = { _ in nil },
                                 _ attempt: (inout AttemptContext) -> Attempt<T, E>) throws(E) -> T {
        let limit = maxAttempts ?? policy.maxAttempts
        var number = 1
        var retryCost: Int?
        while true {
            holdBack(label)
            var context = AttemptContext(number: number, clock: clock, time: time)
            let outcome = attempt(&context)
            var measured: Int64?
            if let time, let sent = context.sentAt, let answer = context.answer {
                measured = ClockSkew.measure(date: answer.date, age: answer.age, sentAt: sent, receivedAt: clock.now())
                if let measured { time.record(measured, service: service, logger: logger) }
            }
            let error: E
            var kind: RetryClass
            var skewed = false
            switch outcome {
            case .success(let value):
                limiter?.record(throttled: false, at: elapsed())
                quota.release(cost: retryCost)
                return value
            case .failure(let failure, let retry, let code):
                limiter?.record(throttled: retry == .throttling, at: elapsed())
                error = failure
                kind = retry
                if kind == .final, let code, time != nil, ClockSkew.isSkewError(code: code, measured: measured) {
                    kind = .transient
                    skewed = true
                }
            }
            let delay = kind == .throttling ? policy.throttleBackoff(random: clock.random()) : policy.backoff(retry: number, random: clock.random())
            guard kind != .final, number < limit, clock.allows(delay), let cost = quota.acquire(afterTimeout: kind == .timeout) else {
                guard number > 1 else { throw error }
                logger.debug("\(label): giving up after \(number) attempts")
                throw exhausted(error, number)
            }
            retryCost = cost
            // A retry on the corrected clock: the correction's own line has said why.
            logger.log(level: skewed ? .debug : retryLogLevel, "\(label): \(reason(error)); retry \(number) of \(limit - 1) in \(DurationText.format(delay))")
            clock.sleep(for: delay)
            if kind != .throttling, let done = try beforeRetry(error) { return done }
            number += 1
        }
    }

    /// The adaptive mode's hold before sending.
    private func holdBack(_ label: String) {
        guard var limiter else { return }
        let wait = limiter.delayBeforeSending(at: elapsed())
        self.limiter = limiter
        guard wait > 0 else { return }
        logger.debug("\(label): held back \(Int(wait * 1000)) ms by the adaptive rate limit")
        clock.sleep(for: clock.capped(.milliseconds(Int64(wait * 1000))))
    }

    private func elapsed() -> Double {
        let elapsed = clock.monotonic() - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}

extension HTTPError {
    /// A transport failure as the retry loop treats it.
    public var retryClass: RetryClass {
        if case .timeout = self { return .timeout }
        return isTransient ? .transient : .final
    }
}
