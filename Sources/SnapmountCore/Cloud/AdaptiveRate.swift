/// The client-side rate limiter of the AWS SDKs' `adaptive` retry mode
/// (`AWS_RETRY_MODE=adaptive`): after a throttling answer the client slows its own sending —
/// a token bucket whose rate is cut by a factor of 0.7 at each throttle and grows back on a
/// cubic curve (CUBIC, as in TCP) — instead of only backing off the one retry. Pure: the
/// caller passes the time and sleeps for what ``delayBeforeSending(at:)`` says.
public struct AdaptiveRateLimiter: Sendable, Equatable {
    /// The SDKs' constants.
    static let beta = 0.7
    static let scaleConstant = 0.4
    static let minimumRate = 0.5
    static let smoothing = 0.8
    static let bucketSeconds = 0.5
    static let maxRateAdjustScale = 2.0

    /// Off until the first throttle: until then, nothing is held back.
    public private(set) var enabled = false
    /// Sends per second the bucket refills at.
    public private(set) var fillRate = 0.0
    private var capacity = 0.0
    private var tokens = 0.0
    private var lastRefill: Double?
    /// CUBIC's state: the rate at the last throttle, when it was, and the curve's zero point.
    private var lastMaxRate = 0.0
    private var lastThrottle = 0.0
    private var timeWindow = 0.0
    /// The measured sending rate (smoothed over half-second buckets).
    public private(set) var measuredRate = 0.0
    private var lastTimeBucket = 0.0
    private var requestCount = 0

    public init() {}

    /// How long to wait before sending a request at time `now` (seconds on a monotonic clock),
    /// and takes its token.
    public mutating func delayBeforeSending(at now: Double) -> Double {
        guard enabled else { return 0 }
        refill(at: now)
        if tokens >= 1 {
            tokens -= 1
            return 0
        }
        let wait = (1 - tokens) / max(fillRate, Self.minimumRate)
        tokens -= 1
        return wait
    }

    /// Records an answer received at `now`: `throttled` when EC2 said to slow down.
    public mutating func record(throttled: Bool, at now: Double) {
        updateMeasuredRate(at: now)
        let newRate: Double
        if throttled {
            let rateToUse = enabled ? min(measuredRate, fillRate) : measuredRate
            lastMaxRate = rateToUse
            timeWindow = ((lastMaxRate * (1 - Self.beta)) / Self.scaleConstant).cubeRoot
            lastThrottle = now
            newRate = rateToUse * Self.beta
            enabled = true
        } else {
            let elapsed = now - lastThrottle - timeWindow
            newRate = Self.scaleConstant * elapsed * elapsed * elapsed + lastMaxRate
        }
        setRate(min(newRate, Self.maxRateAdjustScale * measuredRate), at: now)
    }

    private mutating func setRate(_ rate: Double, at now: Double) {
        refill(at: now)
        fillRate = max(rate, Self.minimumRate)
        capacity = max(rate, 1)
        tokens = min(tokens, capacity)
    }

    private mutating func refill(at now: Double) {
        if let last = lastRefill { tokens = min(capacity, tokens + (now - last) * fillRate) }
        lastRefill = now
    }

    private mutating func updateMeasuredRate(at now: Double) {
        let bucket = (now * 2).rounded(.down) / 2
        requestCount += 1
        if bucket > lastTimeBucket {
            let current = Double(requestCount) / (bucket - lastTimeBucket)
            measuredRate = current * Self.smoothing + measuredRate * (1 - Self.smoothing)
            requestCount = 0
            lastTimeBucket = bucket
        }
    }
}

extension Double {
    /// The cube root (CUBIC's zero point).
    fileprivate var cubeRoot: Double {
        guard self > 0 else { return 0 }
        var root = self
        for _ in 0..<60 { root -= (root * root * root - self) / (3 * root * root) }
        return root
    }
}
