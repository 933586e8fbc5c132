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

    /// How the retry loop treats it: throttling, 5xx and transport errors are retried; a
    /// clock-skew code when the answer's `Date` proves it.
    var retryClass: RetryClass {
        switch self {
        case .service(_, "ThrottlingException", _, _): .throttling
        case .service(_, let code, _, let status): code == "InternalServerError" || status >= 500 || status == 429 ? .transient : .final
        case .http(_, let error): error.retryClass
        case .unreadable, .credentials, .signing: .final
        }
    }
}

/// The two SSM Parameter Store calls snapmount makes (the JSON 1.1 protocol, SigV4 service
/// `ssm`): GetParameter for an `ssm:/NAME` source, PutParameter for `publish --output ssm:/NAME`.
/// On the one ``RetryLoop``, with the run's ``AWSTime``.
public final class SSMClient {
    public let endpoint: EC2Endpoint
    private let credentials: CredentialsProvider
    private let http: HTTPClient
    private let clock: any AgentClock
    private let signer: SigV4Signer
    public let retry: RetryLoop
    public var timeout: Duration = .seconds(20)
    /// Seconds added to the local clock, learnt from AWS's answers.
    public var clockCorrection: Int64 { retry.time?.correction ?? 0 }

    public init(endpoint: EC2Endpoint, region: String, credentials: CredentialsProvider, http: HTTPClient, retry: RetryPolicy,
                clock: any AgentClock = SystemClock(), time: AWSTime? = nil, logger: Logger) {
        self.endpoint = endpoint
        self.credentials = credentials
        self.http = http
        self.clock = clock
        signer = SigV4Signer(region: region, service: "ssm")
        self.retry = RetryLoop(policy: retry, clock: clock, service: "SSM", time: time ?? AWSTime(clock: clock), logger: logger)
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
        let bytes = Array(body.pretty().utf8)
        return try retry.run("SSM \(action)", reason: { (error: SSMCallError) in error.code ?? error.description }) { context in
            do throws(SSMCallError) {
                return .success(try attemptOnce(action, bytes, context: &context))
            } catch {
                return .failure(error, error.retryClass, code: error.code)
            }
        }
    }

    private func attemptOnce(_ action: String, _ body: [UInt8], context: inout AttemptContext) throws(SSMCallError) -> JSONValue {
        let current: AWSCredentials
        do { current = try credentials.current() } catch { throw .credentials(error) }
        let headers = [(name: "Host", value: endpoint.host), (name: "Content-Type", value: "application/x-amz-json-1.1"),
                       (name: "X-Amz-Target", value: "AmazonSSM.\(action)")]
        let signature: SigV4Signature
        do {
            signature = try signer.sign(SigV4Request(method: "POST", path: "/", headers: headers, body: body), credentials: current, at: context.signingTime())
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
        context.answered(response)
        let json = try? parseJSON(response.body)
        guard response.status == 200 else {
            // `__type` may carry a namespace: `com.amazonaws.ssm#ParameterNotFound`.
            let type = json?["__type"]?.string.map { String($0.split(separator: "#").last ?? "") } ?? "HTTP\(response.status)"
            let message = json?["message"]?.string ?? json?["Message"]?.string ?? String(response.text.prefix(80))
            throw .service(action: action, code: type, message: message, httpStatus: response.status)
        }
        guard let json else { throw .unreadable(action: action, detail: String(response.text.prefix(80)).quotedForMessage()) }
        return json
    }
}

extension SSMCallError {
    /// The SSM error code, when SSM answered with one.
    public var code: String? {
        if case .service(_, let code, _, _) = self { return code }
        return nil
    }
}
