import Logging
import SnapmountCore

public enum SnapshotSourceFetchError: SnapmountError, Equatable {
    case http(HTTPError)
    case content(SnapshotSourceError)

    public var exitStatus: ExitStatus {
        switch self {
        case .http(let error): error.exitStatus
        case .content(let error): error.exitStatus
        }
    }

    public var description: String {
        switch self {
        case .http(.tooLarge(let url, let limit)):
            "\(url) is larger than \(limit) bytes, far more than a snapshot id; is the source URL right?"
        case .http(let error): "cannot read the snapshot id: \(error)"
        case .content(let error): error.description
        }
    }
}

/// Reads `snap.txt` from the release server: bounded in size and time, retried on the one
/// ``RetryLoop`` while the server or the network is down, strict about what it holds.
public struct SnapshotSourceClient {
    /// A snapshot id is 22 bytes; a few KiB leaves room for nothing else.
    public static let bodyLimit = 4096

    private let http: HTTPClient
    private let clock: any AgentClock
    private let retry: RetryLoop
    public var timeout: Duration = .seconds(10)

    public init(http: HTTPClient, retry: RetryPolicy, clock: any AgentClock = SystemClock(), logger: Logger) {
        self.http = http
        self.clock = clock
        self.retry = RetryLoop(policy: retry, clock: clock, service: "snapshot source", logger: logger)
    }

    public func fetch(_ source: SourceURL) throws(SnapshotSourceFetchError) -> SnapshotID {
        try retry.run("the snapshot source", reason: Self.reason) { _ in
            let response: HTTPResponse
            do throws(HTTPError) {
                response = try http.send(HTTPRequest(
                    .get, source.text, connectTimeout: clock.capped(.seconds(5)), timeout: clock.capped(timeout),
                    maximumResponseBytes: Self.bodyLimit, followRedirects: true))
            } catch {
                return .failure(.http(error), error.retryClass)
            }
            guard (200..<300).contains(response.status) else {
                let error = HTTPError.status(url: source.text, code: response.status, excerpt: String(response.text.prefix(64)))
                return .failure(.http(error), error.retryClass)
            }
            do throws(SnapshotSourceError) {
                return .success(try SnapshotSourceBody.parse(response.body, url: source.text))
            } catch {
                return .failure(.content(error), .final)
            }
        }
    }

    private static func reason(_ error: SnapshotSourceFetchError) -> String {
        if case .http(let http) = error { return "\(http)" }
        return error.description
    }
}
