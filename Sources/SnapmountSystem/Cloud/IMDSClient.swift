import Logging
import SnapmountCore

public enum IMDSError: SnapmountError, Equatable {
    case disabled(path: String)
    case notFound(path: String)
    case unavailable(path: String, detail: String)
    case tokenRefused(status: Int)
    /// No answer: the transport failed (while retries last, the loop's).
    case transport(path: String, HTTPError)

    public var exitStatus: ExitStatus {
        switch self {
        case .disabled: .configuration
        case .notFound, .unavailable, .tokenRefused, .transport: .unavailable
        }
    }

    public var description: String {
        switch self {
        case .disabled(let path):
            "instance metadata \(path) is needed, but AWS_EC2_METADATA_DISABLED=true"
        case .notFound(let path):
            "instance metadata \(path) does not exist (HTTP 404)"
        case .unavailable(let path, let detail):
            "instance metadata \(path) is unavailable: \(detail)"
        case .transport(let path, let error):
            "instance metadata \(path) is unavailable: \(error)"
        case .tokenRefused(let status):
            "the instance metadata service refused an IMDSv2 session token (HTTP \(status)); check the instance's metadata options (HttpTokens, HttpPutResponseHopLimit)"
        }
    }
}

/// An IMDSv2 client on the one ``RetryLoop``: a session token cached until shortly before
/// its TTL, a 401 answered at once by one fresh token, bounded retries with backoff for
/// everything transient — an answer that does not decode included.
public final class IMDSClient {
    public let settings: IMDSSettings
    private let http: HTTPClient
    private let clock: any AgentClock
    private let logger: Logger
    private let retry: RetryLoop
    private var token: (value: Secret, expires: ContinuousClock.Instant)?

    public init(settings: IMDSSettings, http: HTTPClient, clock: any AgentClock = SystemClock(), logger: Logger) {
        self.settings = settings
        self.http = http
        self.clock = clock
        self.logger = logger
        retry = RetryLoop(policy: settings.retry, clock: clock, service: "instance metadata", logger: logger)
        retry.retryLogLevel = .debug
    }

    /// GET `/latest/<path>`: the body of a 200 answer.
    public func get(_ path: String) throws(IMDSError) -> [UInt8] {
        try document(path) { (body: [UInt8]) throws(IMDSDocumentError) in body }
    }

    /// A JSON document: one that does not decode (cut short, garbled) is fetched again,
    /// within the same retry budget as any transient failure.
    public func document<T>(_ path: String, decode: ([UInt8]) throws(IMDSDocumentError) -> T) throws(IMDSError) -> T {
        guard !settings.disabled else { throw .disabled(path: path) }
        return try retry.run("instance metadata \(path)", reason: Self.detail, exhausted: Self.afterAttempts) { _ in
            let response: HTTPResponse
            switch fetch(path) {
            case .success(let answer): response = answer
            // The token's own attempts are spent (or it was refused): not tried again here.
            case .failure(.token(let error)): return .failure(error, .final)
            case .failure(.get(let error)): return .failure(error, Self.retryClass(of: error))
            }
            switch response.status {
            case 200:
                do throws(IMDSDocumentError) {
                    return .success(try decode(response.body))
                } catch {
                    return .failure(.unavailable(path: path, detail: error.problem), .transient)
                }
            case 404: return .failure(.notFound(path: path), .final)
            case 401: return .failure(.unavailable(path: path, detail: "HTTP 401"), .transient)
            case let status: return .failure(.unavailable(path: path, detail: "HTTP \(status)"), status >= 500 || status == 429 ? .transient : .final)
            }
        }
    }

    /// Why a GET did not get an answer: the session token could not be had (its own retries
    /// are spent), or the GET itself failed.
    private enum FetchFailure: Error {
        case token(IMDSError)
        case get(IMDSError)
    }

    /// One GET with the session token. A 401 means the token expired or IMDS restarted: it
    /// is fetched again and the GET repeated at once, the once; a second 401 is the loop's
    /// (and its token is dropped too).
    private func fetch(_ path: String) -> Result<HTTPResponse, FetchFailure> {
        var refreshed = false
        while true {
            let token: Secret
            do throws(IMDSError) { token = try sessionToken() } catch { return .failure(.token(error)) }
            let response: HTTPResponse
            do throws(HTTPError) {
                response = try http.send(HTTPRequest(
                    .get, "\(settings.endpoint)/latest/\(path)", headers: [("X-aws-ec2-metadata-token", token.exposedValue())],
                    connectTimeout: clock.capped(settings.timeout), timeout: clock.capped(settings.timeout), maximumResponseBytes: 64 * 1024,
                    useProxy: false))
            } catch {
                return .failure(.get(.transport(path: path, error)))
            }
            guard response.status == 401 else { return .success(response) }
            self.token = nil
            guard !refreshed else { return .success(response) }
            refreshed = true
        }
    }

    /// The cached token, or a new one (PUT /latest/api/token), on the same loop.
    private func sessionToken() throws(IMDSError) -> Secret {
        let now = clock.monotonic()
        if let token, now < token.expires { return token.value }
        let value = try retry.run("instance metadata api/token", reason: Self.detail, exhausted: Self.afterAttempts) { _ -> Attempt<Secret, IMDSError> in
            let response: HTTPResponse
            do throws(HTTPError) {
                response = try http.send(HTTPRequest(
                    .put, "\(settings.endpoint)/latest/api/token",
                    headers: [("X-aws-ec2-metadata-token-ttl-seconds", String(settings.tokenTTLSeconds))],
                    connectTimeout: clock.capped(settings.timeout), timeout: clock.capped(settings.timeout), maximumResponseBytes: 4096,
                    useProxy: false))
            } catch {
                let failure = IMDSError.transport(path: "api/token", error)
                return .failure(failure, Self.retryClass(of: failure))
            }
            switch response.status {
            case 200:
                do throws(IMDSDocumentError) {
                    return .success(try IMDSDocuments.sessionToken(response.body))
                } catch {
                    return .failure(.unavailable(path: "api/token", detail: error.problem), .transient)
                }
            case 400, 403, 405: return .failure(.tokenRefused(status: response.status), .final)
            case let status: return .failure(.unavailable(path: "api/token", detail: "HTTP \(status)"), .transient)
            }
        }
        // Renew a minute before the TTL runs out (or at half of a short TTL).
        let margin = min(60, settings.tokenTTLSeconds / 2)
        token = (value, now + .seconds(settings.tokenTTLSeconds - margin))
        return value
    }

    private static func retryClass(of error: IMDSError) -> RetryClass {
        switch error {
        case .transport(_, let http): http.retryClass
        case .disabled, .notFound, .tokenRefused: .final
        case .unavailable: .transient
        }
    }

    private static func afterAttempts(_ error: IMDSError, _ attempts: Int) -> IMDSError {
        switch error {
        case .unavailable(let path, let detail): .unavailable(path: path, detail: "\(detail), after \(attempts) attempts")
        case .transport(let path, let http): .unavailable(path: path, detail: "\(http), after \(attempts) attempts")
        default: error
        }
    }

    private static func detail(_ error: IMDSError) -> String {
        switch error {
        case .unavailable(_, let detail): detail
        case .transport(_, let http): http.description
        default: error.description
        }
    }
}
