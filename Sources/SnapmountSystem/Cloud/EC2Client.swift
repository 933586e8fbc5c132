import Logging
import SnapmountCore

/// Why an EC2 call failed, once retries are spent or were pointless.
public enum EC2CallError: SnapmountError, Equatable {
    case service(EC2ServiceError)
    case http(action: String, HTTPError)
    case decode(EC2DecodeError)
    /// A mutating call answered HTTP 200 with a body that is not its answer: it was most
    /// likely carried out. Never retried blindly; the caller checks the effect.
    case unreadableSuccess(EC2DecodeError)
    /// An action with an empty output answered `<return>false</return>`: not carried out.
    case returnedFalse(action: String)
    case credentials(CredentialsError)
    case signing(SigV4Error)

    public var exitStatus: ExitStatus {
        switch self {
        case .service(let error): error.exitStatus
        case .http(_, let error): error.exitStatus
        case .decode, .unreadableSuccess, .returnedFalse: .unavailable
        case .credentials(let error): error.exitStatus
        case .signing(let error): error.exitStatus
        }
    }

    public var description: String {
        switch self {
        case .service(let error): error.description
        case .http(let action, let error): "\(queryServiceName(of: action)) \(action): \(error)"
        case .decode(let error): "\(queryServiceName(of: error.action)) \(error)"
        case .unreadableSuccess(let error):
            "\(queryServiceName(of: error.action)) \(error.action) answered HTTP 200 with a body that is not its answer (\(error.problem)), and its effect could not be confirmed"
        case .returnedFalse(let action): "EC2 \(action) answered <return>false</return>: it was not carried out"
        case .credentials(let error): error.description
        case .signing(let error): error.description
        }
    }

    /// The EC2 error code, when EC2 answered with one.
    public var code: String? {
        if case .service(let error) = self { return error.code }
        return nil
    }
}

/// What EC2 said to a `DryRun=true` call.
public enum DryRunVerdict: Sendable, Equatable {
    /// `DryRunOperation`: the call would have succeeded.
    case permitted
    /// `UnauthorizedOperation`: the IAM policy lacks this action.
    case denied(EC2ServiceError)
}

/// A Query API service the client speaks to: EC2, or Auto Scaling for `snapmount push`.
public struct QueryService: Sendable, Equatable {
    /// SigV4's service name.
    public let signingName: String
    public let apiVersion: String

    public static let ec2 = QueryService(signingName: "ec2", apiVersion: "2016-11-15")
    public static let autoScaling = QueryService(signingName: "autoscaling", apiVersion: AutoScalingDecoder.apiVersion)
}

/// Signed EC2 (and Auto Scaling) Query API calls (form POSTs, SigV4) with the SDKs' standard retry behaviour:
/// 5xx, timeouts, resets and unreadable answers are retried with capped, jittered exponential
/// backoff under a retry quota, throttling after a jittered wait of its own
/// (``RetryPolicy/throttleWait``); permission and parameter errors are not. A clock-skew error corrects the signing time from the server's `Date` header.
public final class EC2Client {
    public static let apiVersion = QueryService.ec2.apiVersion

    public let service: QueryService
    public let endpoint: EC2Endpoint
    public let region: String
    private let credentials: CredentialsProvider
    private let http: HTTPClient
    private let retry: RetryPolicy
    private let clock: any AgentClock
    private let logger: Logger
    private let signer: SigV4Signer
    public var retryPolicy: RetryPolicy { retry }
    /// Per attempt.
    public var timeout: Duration = .seconds(20)
    private var quota = RetryQuota()
    /// `AWS_RETRY_MODE=adaptive`: after throttling, slow the sending itself.
    public var limiter: AdaptiveRateLimiter?
    private let started = ContinuousClock.now
    /// Seconds to add to the local clock, learnt from a clock-skew error.
    public var clockCorrection: Int64 { skew.seconds }
    private var skew = ClockSkew()
    /// The last answer taught a new clock correction: that request is worth signing again
    /// (EC2 answers a request signed more than 5 minutes off with AuthFailure too).
    private var correctedNow = false

    public init(endpoint: EC2Endpoint, region: String, credentials: CredentialsProvider, http: HTTPClient,
                retry: RetryPolicy, clock: any AgentClock = SystemClock(), logger: Logger, service: QueryService = .ec2) {
        self.service = service
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.http = http
        self.retry = retry
        self.clock = clock
        self.logger = logger
        self.signer = SigV4Signer(region: region, service: service.signingName)
    }

    /// Calls `action` and decodes its answer, retrying what is worth retrying. Before each
    /// retry (but one after throttling, which EC2 refuses before carrying out the call)
    /// `beforeRetry` may find that the call was carried out after all (a lost answer) and
    /// return its result instead. A mutating call whose 200 answer does not decode is
    /// not retried: ``EC2CallError/unreadableSuccess(_:)``.
    /// `once`: a single attempt with this timeout, for a call that must not outlast a bound
    /// (CreateSnapshot while the filesystem is frozen); its caller decides what comes next.
    public func perform<T>(_ action: String, _ parameters: QueryParameters, once: Duration? = nil,
                           beforeRetry: () throws(EC2CallError) -> T? = { nil },
                           decode: ([UInt8]) throws(EC2DecodeError) -> T) throws(EC2CallError) -> T {
        var attempt = 1
        var retryCost: Int?
        let maxAttempts = once == nil ? retry.maxAttempts : 1
        while true {
            let failure: EC2CallError
            let afterTimeout: Bool
            switch try attemptOnce(action, parameters, timeout: once ?? timeout) {
            case .success(let body):
                do {
                    let value = try decode(body)
                    quota.release(cost: retryCost)
                    return value
                } catch {
                    guard action.hasPrefix("Describe") || parameters["DryRun"] == "true" else { throw .unreadableSuccess(error) }
                    failure = .decode(error)
                    afterTimeout = false
                }
            case .failure(let error):
                failure = error
                afterTimeout = { if case .http(_, .timeout) = error { return true } else { return false } }()
            }
            let delay = failure.isThrottling ? retry.throttleBackoff(random: clock.random()) : retry.backoff(retry: attempt, random: clock.random())
            let corrected = correctedNow
            correctedNow = false
            guard Self.isRetryable(failure) || corrected, attempt < maxAttempts, clock.allows(delay),
                  let cost = quota.acquire(afterTimeout: afterTimeout)
            else {
                if attempt > 1 { logger.debug("EC2 \(action): giving up after \(attempt) attempts") }
                throw failure
            }
            retryCost = cost
            logger.warning("\(queryServiceName(of: action)) \(action): \(failure.shortReason); retry \(attempt) of \(retry.maxAttempts - 1) in \(DurationText.format(delay))")
            clock.sleep(for: delay)
            // A throttled call was refused before EC2 carried it out: nothing to look for.
            if !failure.isThrottling, let done = try beforeRetry() { return done }
            attempt += 1
        }
    }

    /// Sends `action` with `DryRun=true`: EC2 checks the caller's permission and changes nothing.
    public func dryRun(_ action: String, _ parameters: QueryParameters) throws(EC2CallError) -> DryRunVerdict {
        var dry = parameters
        dry.append("DryRun", "true")
        do throws(EC2CallError) {
            // EC2 never answers a dry run with success; a 200 is as unreadable as garbage.
            _ = try perform(action, dry) { (_: [UInt8]) throws(EC2DecodeError) -> Bool in
                throw EC2DecodeError(action: action, problem: "a DryRun call answered without DryRunOperation")
            }
            return .permitted
        } catch {
            switch error {
            case .service(let service) where service.code == "DryRunOperation": return .permitted
            // 412 Precondition Failed is how a dry run says "would have succeeded", whatever the body.
            case .service(let service) where service.httpStatus == 412 && service.code.hasPrefix("HTTP"): return .permitted
            case .service(let service) where service.kind == .permission: return .denied(service)
            default: throw error
            }
        }
    }

    /// Whether the SDKs' standard mode retries this failure.
    public static func isRetryable(_ error: EC2CallError) -> Bool {
        switch error {
        case .service(let service): service.kind.isRetryable
        case .http(_, let http): http.isTransient
        case .decode: true
        case .unreadableSuccess, .returnedFalse, .credentials, .signing: false
        }
    }

    /// One signed request. Throws only for what no retry can fix (credentials, signing);
    /// everything else comes back as the attempt's result.
    private func attemptOnce(_ action: String, _ parameters: QueryParameters, timeout: Duration) throws(EC2CallError) -> Result<[UInt8], EC2CallError> {
        let credentials: AWSCredentials
        do { credentials = try self.credentials.current() } catch { throw .credentials(error) }
        var all = QueryParameters([("Action", action), ("Version", service.apiVersion)])
        all.append(contentsOf: parameters)
        let body = Array(all.formEncoded.utf8)
        let headers = [(name: "Host", value: endpoint.host), (name: "Content-Type", value: "application/x-www-form-urlencoded; charset=utf-8")]
        let signature: SigV4Signature
        do {
            signature = try signer.sign(SigV4Request(method: "POST", path: "/", headers: headers, body: body),
                                        credentials: credentials, at: clock.now().adding(seconds: clockCorrection))
        } catch {
            throw .signing(error)
        }
        if var limiter {
            let wait = limiter.delayBeforeSending(at: seconds(since: started))
            self.limiter = limiter
            if wait > 0 {
                logger.debug("EC2 \(action): held back \(Int(wait * 1000)) ms by the adaptive rate limit")
                clock.sleep(for: clock.capped(.milliseconds(Int64(wait * 1000))))
            }
        }
        let response: HTTPResponse
        do {
            var request = HTTPRequest(.post, endpoint.url + "/", headers: headers + signature.headers, body: body,
                                      connectTimeout: clock.capped(min(.seconds(5), timeout)), timeout: clock.capped(timeout),
                                      maximumResponseBytes: 4 << 20)
            // A call that changes something is sent again only by the retry loop, which looks first.
            request.freshConnection = !action.hasPrefix("Describe") && parameters["DryRun"] != "true"
            response = try http.send(request)
        } catch {
            return .failure(.http(action: action, error))
        }
        if response.status == 200 {
            limiter?.record(throttled: false, at: seconds(since: started))
            return .success(response.body)
        }

        let service: EC2ServiceError
        if let parsed = EC2ErrorBody.parse(response.body) {
            service = EC2ServiceError(action: action, code: parsed.code, message: parsed.message, requestID: parsed.requestID,
                                      httpStatus: response.status)
        } else {
            let excerpt = String(response.text.prefix(80)).quotedForMessage()
            service = EC2ServiceError(action: action, code: "HTTP\(response.status)",
                                      message: (response.body.isEmpty ? "empty body" : "not an EC2 error document: \(excerpt)")
                                          + (response.header("Server").map { " from server \($0.quotedForMessage(limit: 60))" } ?? ""),
                                      requestID: "", httpStatus: response.status)
        }
        limiter?.record(throttled: service.kind == .throttling, at: seconds(since: started))
        if skew.learn(code: service.code, serverDate: response.header("Date").flatMap(UTCTimestamp.init(httpDate:)), now: clock.now()) {
            logger.warning("the local clock is \(skew.seconds) s off EC2's; signing with EC2's time")
            correctedNow = true
        }
        return .failure(.service(service))
    }
}

/// Seconds since `start`, for the rate limiter.
private func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

extension EC2CallError {
    /// EC2 said to slow down.
    public var isThrottling: Bool {
        if case .service(let error) = self { error.kind == .throttling } else { false }
    }

    /// A few words for a retry log line.
    public var shortReason: String {
        switch self {
        case .service(let error): error.code
        case .http(_, let error): "\(Mirror(reflecting: error).children.first?.label ?? "transport")"
        case .decode(let error), .unreadableSuccess(let error): "unreadable answer (\(error.problem.prefix(40)))"
        case .returnedFalse: "return false"
        case .credentials: "credentials"
        case .signing: "signing"
        }
    }
}
