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

/// Reads `snap.txt` from the release server: bounded in size and time, retried while the
/// server or the network is down, strict about what it holds.
public struct SnapshotSourceClient {
    /// A snapshot id is 22 bytes; a few KiB leaves room for nothing else.
    public static let bodyLimit = 4096

    private let http: HTTPClient
    private let retry: RetryPolicy
    private let clock: any AgentClock
    private let logger: Logger
    public var timeout: Duration = .seconds(10)

    public init(http: HTTPClient, retry: RetryPolicy, clock: any AgentClock = SystemClock(), logger: Logger) {
        self.http = http
        self.retry = retry
        self.clock = clock
        self.logger = logger
    }

    public func fetch(_ source: SourceURL) throws(SnapshotSourceFetchError) -> SnapshotID {
        var attempt = 1
        while true {
            do {
                let response = try http.send(HTTPRequest(
                    .get, source.text, connectTimeout: clock.capped(.seconds(5)), timeout: clock.capped(timeout),
                    maximumResponseBytes: Self.bodyLimit, followRedirects: true))
                guard (200..<300).contains(response.status) else {
                    throw HTTPError.status(url: source.text, code: response.status, excerpt: String(response.text.prefix(64)))
                }
                do {
                    return try SnapshotSourceBody.parse(response.body, url: source.text)
                } catch {
                    throw SnapshotSourceFetchError.content(error)
                }
            } catch let error as HTTPError {
                let delay = retry.backoff(retry: attempt, random: clock.random())
                guard error.isTransient, attempt < retry.maxAttempts, clock.allows(delay) else { throw .http(error) }
                logger.warning("\(error); retrying in \(DurationText.format(delay))")
                clock.sleep(for: delay)
                attempt += 1
            } catch let error as SnapshotSourceFetchError {
                throw error
            } catch {
                throw .http(.transport(url: source.text, code: -1, detail: "\(error)"))
            }
        }
    }
}
