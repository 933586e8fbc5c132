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

/// Signed EC2 (and Auto Scaling) Query API calls (form POSTs, SigV4) on the one
/// ``RetryLoop``: 5xx, timeouts, resets and unreadable answers are retried with capped,
/// jittered exponential backoff under a retry quota, throttling after a jittered wait of its
/// own (``RetryPolicy/throttleWait``); permission and parameter errors are not. Every answer's
/// `Date` keeps the run's ``AWSTime``; a clock-skew error is signed again on it.
public final class EC2Client {
    public static let apiVersion = QueryService.ec2.apiVersion

    public let service: QueryService
    public let endpoint: EC2Endpoint
    public let region: String
    private let credentials: CredentialsProvider
    private let http: HTTPClient
    private let clock: any AgentClock
    private let signer: SigV4Signer
    /// The client's retry loop: its quota, and the adaptive limiter (`AWS_RETRY_MODE=adaptive`).
    public let retry: RetryLoop
    public var retryPolicy: RetryPolicy { retry.policy }
    /// Per attempt.
    public var timeout: Duration = .seconds(20)
    /// Seconds added to the local clock, learnt from AWS's answers.
    public var clockCorrection: Int64 { retry.time?.correction ?? 0 }

    public init(endpoint: EC2Endpoint, region: String, credentials: CredentialsProvider, http: HTTPClient,
                retry: RetryPolicy, clock: any AgentClock = SystemClock(), time: AWSTime? = nil, logger: Logger,
                service: QueryService = .ec2) {
        self.service = service
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.http = http
        self.clock = clock
        self.signer = SigV4Signer(region: region, service: service.signingName)
        self.retry = RetryLoop(policy: retry, clock: clock, service: service == .ec2 ? "EC2" : "Auto Scaling",
                               time: time ?? AWSTime(clock: clock), logger: logger)
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
        let readOnly = action.hasPrefix("Describe") || parameters["DryRun"] == "true"
        return try retry.run("\(queryServiceName(of: action)) \(action)", maxAttempts: once == nil ? nil : 1, reason: \.shortReason,
                             beforeRetry: { (_: EC2CallError) throws(EC2CallError) in try beforeRetry() }) { context in
            let body: [UInt8]
            switch attemptOnce(action, parameters, timeout: once ?? timeout, context: &context) {
            case .success(let answer): body = answer
            case .failure(let error): return .failure(error, Self.retryClass(of: error), code: error.code)
            }
            do throws(EC2DecodeError) {
                return .success(try decode(body))
            } catch {
                // A 200 that does not read: a mutating call was most likely carried out.
                guard readOnly else { return .failure(.unreadableSuccess(error), .final) }
                return .failure(.decode(error), .transient)
            }
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

    /// How the SDKs' standard mode treats this failure. A clock-skew code is final here: the
    /// loop retries it when the answer's `Date` proves the skew.
    public static func retryClass(of error: EC2CallError) -> RetryClass {
        switch error {
        case .service(let service):
            switch service.kind {
            case .throttling: .throttling
            case .transient: .transient
            case .clockSkew, .permission, .permanent: .final
            }
        case .http(_, let http): http.retryClass
        case .decode: .transient
        case .unreadableSuccess, .returnedFalse, .credentials, .signing: .final
        }
    }

    /// Whether the SDKs' standard mode retries this failure (clock skew aside).
    public static func isRetryable(_ error: EC2CallError) -> Bool { retryClass(of: error) != .final }

    /// One signed request.
    private func attemptOnce(_ action: String, _ parameters: QueryParameters, timeout: Duration,
                             context: inout AttemptContext) -> Result<[UInt8], EC2CallError> {
        let credentials: AWSCredentials
        do { credentials = try self.credentials.current() } catch { return .failure(.credentials(error)) }
        var all = QueryParameters([("Action", action), ("Version", service.apiVersion)])
        all.append(contentsOf: parameters)
        let body = Array(all.formEncoded.utf8)
        let headers = [(name: "Host", value: endpoint.host), (name: "Content-Type", value: "application/x-www-form-urlencoded; charset=utf-8")]
        let signature: SigV4Signature
        do {
            signature = try signer.sign(SigV4Request(method: "POST", path: "/", headers: headers, body: body),
                                        credentials: credentials, at: context.signingTime())
        } catch {
            return .failure(.signing(error))
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
        context.answered(response)
        if response.status == 200 { return .success(response.body) }
        if let parsed = EC2ErrorBody.parse(response.body) {
            return .failure(.service(EC2ServiceError(action: action, code: parsed.code, message: parsed.message, requestID: parsed.requestID,
                                                     httpStatus: response.status)))
        }
        let excerpt = String(response.text.prefix(80)).quotedForMessage()
        return .failure(.service(EC2ServiceError(
            action: action, code: "HTTP\(response.status)",
            message: (response.body.isEmpty ? "empty body" : "not an EC2 error document: \(excerpt)")
                + (response.header("Server").map { " from server \($0.quotedForMessage(limit: 60))" } ?? ""),
            requestID: "", httpStatus: response.status)))
    }
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
