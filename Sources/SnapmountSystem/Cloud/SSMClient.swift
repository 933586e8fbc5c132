import Logging
import SnapmountCore

/// Why an SSM call failed, once retries are spent or were pointless.
public enum SSMCallError: SnapmountError, Equatable {
    case service(action: String, code: String, message: String, httpStatus: Int)
    case http(action: String, HTTPError)
    case unreadable(action: String, detail: String)
    case credentials(CredentialsError)
    case signing(SigV4Error)

    public var exitStatus: ExitStatus {
        switch self {
        case .service(_, let code, _, let status):
            if ["AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"].contains(code) {
                return .permissionDenied
            }
            if code == "ValidationException" || code == "InvalidKeyId" { return .configuration }
            return status == 400 && code != "ThrottlingException" && code != "ParameterNotFound" ? .configuration : .unavailable
        case .http(_, let error): return error.exitStatus
        case .unreadable: return .unavailable
        case .credentials(let error): return error.exitStatus
        case .signing(let error): return error.exitStatus
        }
    }

    public var description: String {
        switch self {
        case .service(let action, let code, let message, _): "SSM \(action): \(code): \(message.quotedForMessage(limit: 200))"
        case .http(let action, let error): "SSM \(action): \(error)"
        case .unreadable(let action, let detail): "SSM \(action) answered with something unreadable: \(detail)"
        case .credentials(let error): error.description
        case .signing(let error): error.description
        }
    }

    var isRetryable: Bool {
        switch self {
        case .service(_, let code, _, let status): code == "ThrottlingException" || code == "InternalServerError" || status >= 500 || status == 429
        case .http(_, let error): error.isTransient
        case .unreadable, .credentials, .signing: false
        }
    }
}

/// The two SSM Parameter Store calls snapmount makes (the JSON 1.1 protocol, SigV4 service
/// `ssm`): GetParameter for an `ssm:/NAME` source, PutParameter for `publish --output ssm:/NAME`.
/// Retries as the SDKs' standard mode: throttling, 5xx and transport errors.
public final class SSMClient {
    public let endpoint: EC2Endpoint
    private let credentials: CredentialsProvider
    private let http: HTTPClient
    private let retry: RetryPolicy
    private let clock: any AgentClock
    private let logger: Logger
    private let signer: SigV4Signer
    public var timeout: Duration = .seconds(20)
    /// Seconds to add to the local clock, learnt from SSM's `Date` after a clock-skew error.
    public var clockCorrection: Int64 { skew.seconds }
    private var skew = ClockSkew()
    /// The last answer taught a new clock correction: that request is worth signing again.
    private var correctedNow = false

    public init(endpoint: EC2Endpoint, region: String, credentials: CredentialsProvider, http: HTTPClient, retry: RetryPolicy,
                clock: any AgentClock = SystemClock(), logger: Logger) {
        self.endpoint = endpoint
        self.credentials = credentials
        self.http = http
        self.retry = retry
        self.clock = clock
        self.logger = logger
        signer = SigV4Signer(region: region, service: "ssm")
    }

    /// The parameter's value.
    public func parameter(_ name: String) throws(SSMCallError) -> String {
        let answer = try call("GetParameter", .object([("Name", .string(name))]))
        guard let value = answer["Parameter"]?["Value"]?.string else {
            throw .unreadable(action: "GetParameter", detail: "no Parameter.Value")
        }
        return value
    }

    /// The parameter's versions, oldest first (GetParameterHistory, every page).
    public func history(_ name: String) throws(SSMCallError) -> [(version: String, value: String)] {
        var versions: [(version: String, value: String)] = []
        var token: String?
        repeat {
            var body: [(key: String, value: JSONValue)] = [("Name", .string(name)), ("MaxResults", .number("50"))]
            if let token { body.append(("NextToken", .string(token))) }
            let answer = try call("GetParameterHistory", .object(body))
            guard case .array(let items)? = answer["Parameters"] else { throw .unreadable(action: "GetParameterHistory", detail: "no Parameters") }
            for item in items {
                guard let value = item["Value"]?.string else { continue }
                let version: String = if case .number(let number)? = item["Version"] { number } else { "" }
                versions.append((version, value))
            }
            token = answer["NextToken"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        return versions.sorted { (Int($0.version) ?? 0) < (Int($1.version) ?? 0) }
    }

    /// Sets the parameter (a `String`, overwritten); returns its new version.
    @discardableResult
    public func putParameter(_ name: String, value: String, description: String) throws(SSMCallError) -> String {
        let answer = try call("PutParameter", .object([
            ("Name", .string(name)), ("Value", .string(value)), ("Type", .string("String")), ("Overwrite", .bool(true)),
            ("Description", .string(description)),
        ]))
        guard case .number(let version)? = answer["Version"] else { throw .unreadable(action: "PutParameter", detail: "no Version") }
        return version
    }

    private func call(_ action: String, _ body: JSONValue) throws(SSMCallError) -> JSONValue {
        var attempt = 1
        while true {
            let failure: SSMCallError
            do throws(SSMCallError) {
                return try attemptOnce(action, Array(body.pretty().utf8))
            } catch {
                failure = error
            }
            let delay = failure.isThrottling ? retry.throttleBackoff(random: clock.random()) : retry.backoff(retry: attempt, random: clock.random())
            let corrected = correctedNow
            correctedNow = false
            guard failure.isRetryable || corrected, attempt < retry.maxAttempts, clock.allows(delay) else { throw failure }
            logger.warning("SSM \(action): \(failure); retry \(attempt) of \(retry.maxAttempts - 1) in \(DurationText.format(delay))")
            clock.sleep(for: delay)
            attempt += 1
        }
    }

    private func attemptOnce(_ action: String, _ body: [UInt8]) throws(SSMCallError) -> JSONValue {
        let current: AWSCredentials
        do { current = try credentials.current() } catch { throw .credentials(error) }
        let headers = [(name: "Host", value: endpoint.host), (name: "Content-Type", value: "application/x-amz-json-1.1"),
                       (name: "X-Amz-Target", value: "AmazonSSM.\(action)")]
        let signature: SigV4Signature
        do {
            signature = try signer.sign(SigV4Request(method: "POST", path: "/", headers: headers, body: body), credentials: current, at: clock.now().adding(seconds: skew.seconds))
        } catch {
            throw .signing(error)
        }
        let response: HTTPResponse
        do {
            response = try http.send(HTTPRequest(.post, endpoint.url + "/", headers: headers + signature.headers, body: body,
                                                 connectTimeout: clock.capped(.seconds(5)), timeout: clock.capped(timeout),
                                                 maximumResponseBytes: 1 << 20))
        } catch {
            throw .http(action: action, error)
        }
        let json = try? parseJSON(response.body)
        guard response.status == 200 else {
            // `__type` may carry a namespace: `com.amazonaws.ssm#ParameterNotFound`.
            let type = json?["__type"]?.string.map { String($0.split(separator: "#").last ?? "") } ?? "HTTP\(response.status)"
            let message = json?["message"]?.string ?? json?["Message"]?.string ?? String(response.text.prefix(80))
            if skew.learn(code: type, serverDate: response.header("Date").flatMap(UTCTimestamp.init(httpDate:)), now: clock.now()) {
                logger.warning("the local clock is \(skew.seconds) s off SSM's; signing with SSM's time")
                correctedNow = true
            }
            throw .service(action: action, code: type, message: message, httpStatus: response.status)
        }
        guard let json else { throw .unreadable(action: action, detail: String(response.text.prefix(80)).quotedForMessage()) }
        return json
    }
}

extension SSMCallError {
    var isThrottling: Bool {
        if case .service(_, "ThrottlingException", _, _) = self { return true }
        return false
    }

    /// The SSM error code, when SSM answered with one.
    public var code: String? {
        if case .service(_, let code, _, _) = self { return code }
        return nil
    }
}
