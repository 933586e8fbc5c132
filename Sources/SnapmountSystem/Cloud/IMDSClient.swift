import Logging
import SnapmountCore

public enum IMDSError: SnapmountError, Equatable {
    case disabled(path: String)
    case notFound(path: String)
    case unavailable(path: String, detail: String)
    case tokenRefused(status: Int)

    public var exitStatus: ExitStatus {
        switch self {
        case .disabled: .configuration
        case .notFound, .unavailable, .tokenRefused: .unavailable
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
        case .tokenRefused(let status):
            "the instance metadata service refused an IMDSv2 session token (HTTP \(status)); check the instance's metadata options (HttpTokens, HttpPutResponseHopLimit)"
        }
    }
}

/// An IMDSv2 client: a session token cached until shortly before its TTL, a 401 answered by
/// one fresh token, bounded retries with backoff for everything transient.
public final class IMDSClient {
    public let settings: IMDSSettings
    private let http: HTTPClient
    private let clock: any AgentClock
    private let logger: Logger
    private var token: (value: Secret, expires: ContinuousClock.Instant)?

    public init(settings: IMDSSettings, http: HTTPClient, clock: any AgentClock = SystemClock(), logger: Logger) {
        self.settings = settings
        self.http = http
        self.clock = clock
        self.logger = logger
    }

    /// GET `/latest/<path>`: the body of a 200 answer.
    public func get(_ path: String) throws(IMDSError) -> [UInt8] {
        guard !settings.disabled else { throw .disabled(path: path) }
        var refreshedAfter401 = false
        var attempt = 1
        while true {
            let outcome: Result<HTTPResponse, HTTPError>
            do {
                let token = try sessionToken(path: path)
                outcome = .success(try http.send(HTTPRequest(
                    .get, "\(settings.endpoint)/latest/\(path)", headers: [("X-aws-ec2-metadata-token", token.exposedValue())],
                    connectTimeout: clock.capped(settings.timeout), timeout: clock.capped(settings.timeout), maximumResponseBytes: 64 * 1024,
                    useProxy: false)))
            } catch let error as IMDSError {
                throw error
            } catch let error as HTTPError {
                outcome = .failure(error)
            } catch {
                throw .unavailable(path: path, detail: "\(error)")
            }
            switch outcome {
            case .success(let response) where response.status == 200:
                return response.body
            case .success(let response) where response.status == 401:
                // The token expired or IMDS restarted: a fresh token, at once the first time,
                // after a backoff when it is refused again.
                token = nil
                if refreshedAfter401 {
                    try retryOrThrow(transient: true, attempt: &attempt, path: path, detail: "HTTP 401")
                }
                refreshedAfter401 = true
            case .success(let response) where response.status == 404:
                throw .notFound(path: path)
            case .success(let response):
                let transient = response.status >= 500 || response.status == 429
                try retryOrThrow(transient: transient, attempt: &attempt, path: path, detail: "HTTP \(response.status)")
            case .failure(let error):
                try retryOrThrow(transient: error.isTransient, attempt: &attempt, path: path, detail: error.description)
            }
        }
    }

    /// A JSON document: one that does not decode (cut short, garbled) is fetched again,
    /// within the same retry budget as any transient failure.
    public func document<T>(_ path: String, decode: ([UInt8]) throws(IMDSDocumentError) -> T) throws(IMDSError) -> T {
        var attempt = 1
        while true {
            let body = try get(path)
            do {
                return try decode(body)
            } catch {
                try retryOrThrow(transient: true, attempt: &attempt, path: path, detail: error.problem)
            }
        }
    }

    private func retryOrThrow(transient: Bool, attempt: inout Int, path: String, detail: String) throws(IMDSError) {
        let delay = settings.retry.backoff(retry: attempt, random: clock.random())
        guard transient, attempt < settings.retry.maxAttempts, clock.allows(delay) else {
            throw .unavailable(path: path, detail: attempt > 1 ? "\(detail), after \(attempt) attempts" : detail)
        }
        logger.debug("instance metadata \(path): \(detail); retrying in \(DurationText.format(delay))")
        clock.sleep(for: delay)
        attempt += 1
    }

    /// The cached token, or a new one (PUT /latest/api/token). Retried like any request.
    private func sessionToken(path: String) throws(IMDSError) -> Secret {
        let now = clock.monotonic()
        if let token, now < token.expires { return token.value }
        var attempt = 1
        while true {
            do {
                let response = try http.send(HTTPRequest(
                    .put, "\(settings.endpoint)/latest/api/token",
                    headers: [("X-aws-ec2-metadata-token-ttl-seconds", String(settings.tokenTTLSeconds))],
                    connectTimeout: clock.capped(settings.timeout), timeout: clock.capped(settings.timeout), maximumResponseBytes: 4096,
                    useProxy: false))
                if response.status == 200 {
                    let value: Secret
                    do {
                        value = try IMDSDocuments.sessionToken(response.body)
                    } catch {
                        try retryOrThrow(transient: true, attempt: &attempt, path: "api/token", detail: error.problem)
                        continue
                    }
                    // Renew a minute before the TTL runs out (or at half of a short TTL).
                    let margin = min(60, settings.tokenTTLSeconds / 2)
                    token = (value, now + .seconds(settings.tokenTTLSeconds - margin))
                    return value
                }
                if response.status == 403 || response.status == 400 || response.status == 405 { throw IMDSError.tokenRefused(status: response.status) }
                try retryOrThrow(transient: true, attempt: &attempt, path: "api/token", detail: "HTTP \(response.status)")
            } catch let error as IMDSError {
                throw error
            } catch let error as HTTPError {
                try retryOrThrow(transient: error.isTransient, attempt: &attempt, path: "api/token", detail: error.description)
            } catch {
                throw .unavailable(path: "api/token", detail: "\(error)")
            }
        }
    }
}
