/// Retries as the AWS SDKs' standard mode does: capped exponential backoff with full
/// jitter, a bounded number of attempts, and a retry quota that stops a broken dependency
/// from being hammered.
public struct RetryPolicy: Sendable, Equatable {
    /// Ten attempts: at a scale-out storm hundreds of instances share one account's EC2
    /// token buckets (CreateVolume refills at 5 a second), so a boot agent must outlast
    /// a burst of throttling rather than give up after the SDKs' default of three. With
    /// the 20 s cap the last retry comes after about a minute on average, two at most.
    public static let defaultMaxAttempts = 10

    /// Attempts in all, the first included.
    public var maxAttempts: Int
    /// The scale of the first retry's delay (the SDKs use one second).
    public var baseDelay: Duration
    /// No single delay is longer than this.
    public var maxBackoff: Duration
    /// After a throttling answer the wait is drawn uniformly from this range, the same range at
    /// every retry. A throttle says the account's bucket is empty, and EC2 refills it at a fixed
    /// rate (Describe* 20, mutating actions 5 a second): what is scarce is the refill, shared
    /// by every instance of the scale-out. Waits that start near zero spend calls on an empty
    /// bucket; waits that double make the instance throttled longest wait longest, so the last
    /// boot ends well after the buckets would have let it. 2–6 s is the range that, against
    /// EC2's bucket sizes, keeps a 200-instance storm within 1.15× of the least time the buckets
    /// allow with 8 calls per boot at the median (`make bench-storm`, docs/PERFORMANCE.md).
    public var throttleWait: ClosedRange<Duration>

    public static let defaultThrottleWait: ClosedRange<Duration> = .seconds(2) ... .seconds(6)

    public init(maxAttempts: Int = defaultMaxAttempts, baseDelay: Duration = .seconds(1), maxBackoff: Duration = .seconds(20),
                throttleWait: ClosedRange<Duration> = defaultThrottleWait) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxBackoff = maxBackoff
        self.throttleWait = throttleWait
    }

    /// The wait before retrying a throttled call: uniform over ``throttleWait``.
    /// - Parameter random: a number in [0, 1).
    public func throttleBackoff(random: Double) -> Duration {
        let fraction = min(max(random, 0), 1)
        let span = throttleWait.upperBound - throttleWait.lowerBound
        return throttleWait.lowerBound + .nanoseconds(Int64(Double(span.wholeNanoseconds) * fraction))
    }

    /// The delay before retry number `retry` (1 for the first retry): a uniformly random
    /// fraction of `min(maxBackoff, baseDelay × 2^(retry-1))`.
    /// - Parameter random: a number in [0, 1).
    public func backoff(retry: Int, random: Double) -> Duration {
        let exponent = min(max(retry - 1, 0), 30)
        let ceiling = min(maxBackoff, baseDelay * (1 << exponent))
        let fraction = min(max(random, 0), 1)
        return .nanoseconds(Int64(Double(ceiling.wholeNanoseconds) * fraction))
    }
}

/// The SDKs' retry quota: each retry spends tokens (more for a timeout), each success gives
/// some back. When it is empty, errors are not retried.
public struct RetryQuota: Sendable, Equatable {
    public static let capacity = 500
    public static let retryCost = 5
    public static let timeoutCost = 10

    public private(set) var available = RetryQuota.capacity

    public init() {}

    /// Takes the cost of one retry; `nil` when the quota cannot pay for it.
    public mutating func acquire(afterTimeout: Bool) -> Int? {
        let cost = afterTimeout ? Self.timeoutCost : Self.retryCost
        guard available >= cost else { return nil }
        available -= cost
        return cost
    }

    /// A request succeeded: return what its retries cost, or one token if it had none.
    public mutating func release(cost: Int?) {
        available = min(Self.capacity, available + (cost ?? 1))
    }
}

extension Duration {
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// What an EC2 error code means for the agent (DESIGN.md §5 rule 5).
public enum EC2ErrorKind: Sendable, Equatable {
    /// Slow down and retry.
    case throttling
    /// A server-side fault; retry.
    case transient
    /// The request's time is off; correct the clock from the server's `Date` and retry.
    case clockSkew
    /// IAM or the credentials say no.
    case permission
    /// Anything else the caller did: retrying cannot help.
    case permanent

    public static let throttlingCodes: Set<String> = [
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
        "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
        "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
    ]
    public static let transientCodes: Set<String> = [
        "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure", "ServiceUnavailable",
        "Unavailable",
    ]
    /// The definite ones; a possible one is retried only when ``ClockSkew`` learns from it.
    public static var clockSkewCodes: Set<String> { ClockSkew.definiteCodes }
    public static let permissionCodes: Set<String> = [
        "UnauthorizedOperation", "AuthFailure", "OptInRequired", "Blocked", "PendingVerification",
        "InvalidClientTokenId", "MissingAuthenticationToken", "SignatureDoesNotMatch", "IncompleteSignature",
        "ExpiredToken", "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidAccessKeyId",
        "InvalidSignatureException",
    ]

    public init(code: String, httpStatus: Int) {
        if Self.throttlingCodes.contains(code) {
            self = .throttling
        } else if Self.transientCodes.contains(code) {
            self = .transient
        } else if Self.clockSkewCodes.contains(code) {
            self = .clockSkew
        } else if Self.permissionCodes.contains(code) || code.hasSuffix(".Unauthorized") {
            self = .permission
        } else if httpStatus >= 500 || httpStatus == 429 {
            self = .transient
        } else {
            self = .permanent
        }
    }

    public var isRetryable: Bool {
        self == .throttling || self == .transient || self == .clockSkew
    }
}

/// Which Query API an action belongs to, for messages: EC2's, or Auto Scaling's (`snapmount
/// push` lists groups through the same client).
public func queryServiceName(of action: String) -> String {
    action.hasSuffix("AutoScalingGroups") ? "Auto Scaling" : "EC2"
}

/// An error EC2 (or Auto Scaling) answered with.
public struct EC2ServiceError: SnapmountError, Equatable {
    public let action: String
    public let code: String
    public let message: String
    public let requestID: String
    public let httpStatus: Int

    public init(action: String, code: String, message: String, requestID: String, httpStatus: Int) {
        self.action = action
        self.code = code
        self.message = message
        self.requestID = requestID
        self.httpStatus = httpStatus
    }

    public var kind: EC2ErrorKind { EC2ErrorKind(code: code, httpStatus: httpStatus) }

    public var exitStatus: ExitStatus {
        switch kind {
        case .permission: return .permissionDenied
        case .throttling, .transient, .clockSkew: return .unavailable
        case .permanent:
            if code == "IdempotentParameterMismatch" || code.hasPrefix("InvalidParameter") || code == "MissingParameter"
                || code == "InvalidZone.NotFound" || code == "VolumeTypeNotAvailableInZone" || code.hasPrefix("InvalidKmsKey")
                || code == "KMSKeyNotAccessibleFault"
            {
                return .configuration
            }
            return .unavailable
        }
    }

    public var description: String {
        var text = "\(queryServiceName(of: action)) \(action): \(code)"
        if !message.isEmpty { text += ": \(message)" }
        switch code {
        case "UnauthorizedOperation":
            text += " — the instance role needs ec2:\(action) (see snapmount(8), IAM POLICY)"
        case "AccessDenied" where queryServiceName(of: action) == "Auto Scaling":
            text += " — the release server's role needs autoscaling:\(action) (see snapmount(8), PUSH)"
        case "IdempotentParameterMismatch":
            text += " — a volume was already requested for this instance and snapshot with other settings; restore them, or delete that volume"
        default:
            break
        }
        if !requestID.isEmpty { text += " (request \(requestID))" }
        return text
    }
}

/// The correction to the local clock that AWS's answers teach, as the AWS SDKs specify it
/// (the cross-SDK data in `aws-clock-skew-test-cases`): every answer with a `Date` and no
/// `Age` — an error or a success — measures the skew as its `Date` minus the midpoint of
/// send and receive, unless the round trip took over 15 minutes; the last measurement is the
/// correction, and requests are signed at the local time plus it. A definite skew error
/// (`RequestExpired`, …) is retried on the corrected time; a possible one
/// (`AuthFailure`, `InvalidSignatureException`, …) only when the answer measured more than
/// four minutes. An answer without a `Date` is no evidence: its error is not skew.
public struct ClockSkew: Sendable, Equatable {
    public private(set) var seconds: Int64

    public init(seconds: Int64 = 0) {
        self.seconds = seconds
    }

    public static let definiteCodes: Set<String> = ["RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture"]
    /// EC2 answers a request signed more than five minutes off with `AuthFailure` (HTTP 401)
    /// as well as `RequestExpired`; SSM with `InvalidSignatureException`.
    public static let possibleCodes: Set<String> = ["InvalidSignatureException", "SignatureDoesNotMatch", "AuthFailure"]
    /// Beyond this, a possible skew error is taken for one.
    public static let threshold: Int64 = 240
    /// An answer that took longer than this to arrive says too little about the server's clock.
    public static let trustedRoundTrip: Int64 = 900

    /// What an answer says of the skew: its `Date` minus the midpoint of `sentAt` and
    /// `receivedAt` (the local clock's readings); `nil` when it has no readable `Date`, has an
    /// `Age` (a cache served it, its `Date` is old), or the round trip took over 15 minutes
    /// (or less than nothing: the local clock was stepped back meanwhile).
    public static func measure(date: String?, age: String?, sentAt: UTCTimestamp, receivedAt: UTCTimestamp) -> Int64? {
        guard age == nil, let date, let server = UTCTimestamp(httpDate: date) else { return nil }
        let sent = sentAt.secondsSinceEpoch
        let received = receivedAt.secondsSinceEpoch
        // A round trip that went backwards (the clock was stepped meanwhile) tells nothing either.
        guard (0...trustedRoundTrip).contains(received - sent) else { return nil }
        return server.secondsSinceEpoch - (sent + (received - sent) / 2)
    }

    /// Takes a measurement as the correction.
    public mutating func record(_ measured: Int64) {
        seconds = measured
    }

    /// Whether an error answered with `code` is the clock's doing, and worth signing again,
    /// given what its answer measured.
    public static func isSkewError(code: String, measured: Int64?) -> Bool {
        guard let measured else { return false }
        if definiteCodes.contains(code) { return true }
        return possibleCodes.contains(code) && abs(measured) > threshold
    }

    /// Whether going from `old` to `new` is worth a line in the journal: a correction beyond
    /// the threshold appears, moves by more than a minute, or goes away.
    public static func isNotable(from old: Int64, to new: Int64) -> Bool {
        abs(new - old) > 60 && (abs(new) > threshold || abs(old) > threshold)
    }
}
