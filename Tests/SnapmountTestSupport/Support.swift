import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import Logging
import SnapmountCore
import SnapmountSystem
import SnapmountAgent
import Testing
import DevCloud

/// Runs a synchronous, blocking body (libcurl) on its own thread, so it never occupies the
/// cooperative pool that the in-process test server needs to answer it.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// Collects lines instead of writing them to stderr.
public final class CapturedLines: LogSink, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []

    public init() {}

    public func write(_ line: String) {
        lock.withLock { stored.append(line) }
        TestLog.write(line)
    }

    public var lines: [String] { lock.withLock { stored } }
}


/// A logger that keeps its lines, at every level.
public func capturingLogger(_ sink: CapturedLines, level: Logger.Level = .trace) -> Logger {
    Logger(label: "test") { _ in SnapmountLogHandler(style: .plain, level: level, sink: sink) }
}

/// The system clock, running off by an offset (a machine whose clock is not yet synchronised).
public final class RecordingClock: AgentClock, @unchecked Sendable {
    private let offset: Int64

    public init(offsetSeconds: Int64 = 0) {
        self.offset = offsetSeconds
    }

    public func now() -> UTCTimestamp { SystemClock().now().adding(seconds: offset) }
    public func monotonic() -> ContinuousClock.Instant { ContinuousClock.now }
    public func random() -> Double { Double.random(in: 0..<1) }

    public func sleep(for duration: Duration) {
        SystemClock().sleep(for: duration)
    }
}

/// A real HTTP server (Hummingbird) on 127.0.0.1 and an ephemeral port, for the length of
/// `body`.
public func withHTTPServer<T: Sendable>(
    _ router: Router<BasicRequestContext>, _ body: @escaping @Sendable (_ port: Int) async throws -> T
) async throws -> T {
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    var quiet = Logger(label: "test-server")
    quiet.logLevel = .critical
    let app = Application(
        router: router,
        configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) },
        logger: quiet)
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await app.run()
            return nil
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw HTTPServerStartError() }
        let result = try await body(port)
        group.cancelAll()
        return result
    }
}


public struct HTTPServerStartError: Error {}

/// A port on 127.0.0.1 that is bound but not listening: connecting to it is refused.
public final class ClosedPort: @unchecked Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw HTTPServerStartError() }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}


/// DevCloud with short state delays and hangs, for tests.
public func fastSettings(_ dialect: Dialect = .ec2) -> DevCloudSettings {
    var settings = DevCloudSettings()
    settings.dialect = dialect
    settings.delays.volumeCreate = .milliseconds(150)
    settings.delays.attach = .milliseconds(300)
    settings.delays.detach = .milliseconds(100)
    settings.delays.delete = .milliseconds(100)
    // A `noResponse` fault holds the request this long, then drops the connection: the
    // agent sees a hang that ends, whatever its own timeouts and the machine's load.
    settings.hangDuration = .seconds(1)
    return settings
}

/// Agent settings scaled to the fast cloud: short backoff and polls. The per-request
/// timeouts stay long: they end a hung test, they do not measure the machine. A test that
/// needs the agent's timeout sets a short one where only the faulted call meets it, against a
/// fault far longer (a 60 s hang, a `snap.txt` delayed 3 s).
public func fastTuning(attempts: Int = 3) -> CloudTuning {
    var tuning = CloudTuning()
    tuning.retry = RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200),
                               throttleWait: .milliseconds(20) ... .milliseconds(60))
    tuning.ec2Timeout = .seconds(20)
    tuning.sourceTimeout = .seconds(20)
    tuning.imdsRetry = RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200))
    tuning.imdsTimeout = .seconds(20)
    tuning.poll = .fast()
    return tuning
}

public let releaseSnapshot = "snap-0123456789abcdef0"

/// Tests that need root: loop devices, mknod, mount. Without root they are reported as
/// skipped, with the reason; under CI (`CI=true`), which runs as root, they run anyway and
/// fail at ``requireRoot(_:)`` — a missing capability is never a silent skip there.
/// `make check` sets `SNAPMOUNT_TESTS=unprivileged`: the root tests are skipped, with the
/// reason, even as root — it is the quick run; `make test` is the whole one.
public enum RootTests {
    static var unprivilegedRun: Bool { ProcessInfo.processInfo.environment["SNAPMOUNT_TESTS"] == "unprivileged" }
    public static var available: Bool { getuid() == 0 && !unprivilegedRun }
    public static var enabled: Bool { !unprivilegedRun && (available || ProcessInfo.processInfo.environment["CI"] == "true") }
    public static var reason: Comment {
        unprivilegedRun ? "a root test (loop devices, mknod, mount, sshd); make check runs none, make test runs them all"
            : "needs root (loop devices, mknod, mount); run `make test` as root"
    }
}

/// Inside a root test: true as root; otherwise (only under CI) records the failure.
public func requireRoot(_ test: String) -> Bool {
    if RootTests.available { return true }
    Issue.record("\(test) needs root (loop devices, mount), and CI must run it")
    return false
}

/// The `snapmount` binary `swift build` put beside this test bundle.
public let snapmountBinary: URL = {
    let bundle = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    return bundle.deletingLastPathComponent().appendingPathComponent("snapmount")
}()

/// A release as publish leaves it: the manifest naming `identity` in `root`, and the
/// snapshot in DevCloud with that identity, marked as a release.
public func stageRelease(_ identity: String, in root: String, snapshot: String = releaseSnapshot, cloud: DevCloud) async throws {
    let id = try #require(ReleaseID(identity))
    try ReleaseManifest(id: id, release: "release", createdAt: "2026-12-01T10:00:00Z").save(in: root)
    await cloud.state.addSnapshot(DevSnapshot(id: snapshot, sizeGiB: 1, tags: [ReleaseTags.releaseID: identity, SnapshotRequest.releaseTag: "release"]))
}

/// Test data that lives beside the clone, in `../shared`: AWS's SigV4 test suite, the SDKs'
/// clock-skew cases. Missing outside CI, a test that needs it is skipped — visibly, with the
/// reason (`.enabled(if: SharedData.enabled(…))`); under CI (`CI=true`) it runs and fails at
/// ``require(_:)``: CI always has `../shared` beside the clone.
public enum SharedData {
    public static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared")

    public static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    public static func present(_ relative: String) -> Bool { FileManager.default.fileExists(atPath: url(relative).path) }

    /// Whether a test reading `relative` should run: the data is there, or CI must have it.
    public static func enabled(_ relative: String) -> Bool {
        present(relative) || ProcessInfo.processInfo.environment["CI"] == "true"
    }

    public static func reason(_ relative: String) -> Comment {
        "needs \(url(relative).standardizedFileURL.path) (../shared beside the clone)"
    }

    /// The data's URL; a recorded failure when it is missing (only under CI does a test get here without it).
    public static func require(_ relative: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> URL {
        guard present(relative) else {
            Issue.record("\(url(relative).path) is missing: CI runs with ../shared beside the clone", sourceLocation: sourceLocation)
            throw SharedDataMissing(path: url(relative).path)
        }
        return url(relative)
    }
}

public struct SharedDataMissing: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "\(path) is missing" }
}
