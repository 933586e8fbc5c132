import SnapmountCore
import Testing

/// The SDKs' adaptive retry mode: the client slows its own sending after throttling.
@Suite("Adaptive rate limiting")
struct AdaptiveRateTests {
    @Test("off until the first throttle: nothing is held back")
    func offUntilThrottled() {
        var limiter = AdaptiveRateLimiter()
        for step in 0..<50 {
            let now = Double(step) * 0.01
            #expect(limiter.delayBeforeSending(at: now) == 0)
            limiter.record(throttled: false, at: now)
        }
        #expect(!limiter.enabled)
    }

    @Test("a throttle cuts the rate to 0.7 of what was being sent; sending faster than that waits")
    func throttleCuts() {
        var limiter = AdaptiveRateLimiter()
        // 20 requests a second for 3 seconds, then EC2 throttles.
        var now = 0.0
        for _ in 0..<60 {
            limiter.record(throttled: false, at: now)
            now += 0.05
        }
        let measured = limiter.measuredRate
        #expect(measured > 15 && measured < 25, "\(measured)")
        limiter.record(throttled: true, at: now)
        #expect(limiter.enabled)
        #expect(abs(limiter.fillRate - limiter.measuredRate * 0.7) < 1.5, "\(limiter.fillRate) vs \(limiter.measuredRate)")
        // Asking for 20 a second again: the bucket runs dry and each send waits.
        var waited = 0.0
        for _ in 0..<40 {
            let wait = limiter.delayBeforeSending(at: now)
            waited += wait
            now += max(wait, 0.05)
        }
        #expect(waited > 0.5, "\(waited)")
    }

    @Test("after the throttle, successes let the rate grow back on the cubic curve")
    func growsBack() {
        var limiter = AdaptiveRateLimiter()
        var now = 0.0
        for _ in 0..<40 {
            limiter.record(throttled: false, at: now)
            now += 0.1
        }
        limiter.record(throttled: true, at: now)
        let cut = limiter.fillRate
        var rates: [Double] = []
        for _ in 0..<30 {
            now += 0.2
            limiter.record(throttled: false, at: now)
            rates.append(limiter.fillRate)
        }
        #expect(rates.last ?? 0 > cut, "\(cut) → \(rates)")
        // Never below the SDKs' floor of half a request a second.
        #expect(rates.allSatisfy { $0 >= 0.5 })
    }
}
