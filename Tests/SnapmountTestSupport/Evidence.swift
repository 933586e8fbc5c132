import DevCloud
import Foundation
import Logging
import SnapmountSystem

#if canImport(Glibc)
import Glibc
#endif

/// Appends lines to files in a directory named by an environment variable — nothing when it
/// is unset. Several test processes and threads may write at once: each line is one
/// `write(2)` on an `O_APPEND` descriptor.
final class AppendOnlyDirectory: @unchecked Sendable {
    private let directory: String?
    private let lock = NSLock()
    private var descriptors: [String: Int32] = [:]

    init(variable: String) {
        directory = ProcessInfo.processInfo.environment[variable].flatMap { $0.isEmpty ? nil : $0 }
    }

    var isEnabled: Bool { directory != nil }

    func append(_ text: String, to name: String) {
        guard let directory else { return }
        lock.withLock {
            let fd: Int32
            if let existing = descriptors[name] {
                fd = existing
            } else {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                fd = open("\(directory)/\(name)", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
                guard fd >= 0 else { return }
                descriptors[name] = fd
            }
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }
}

/// Every log line the suite produces, and every secret DevCloud hands out, go to
/// `SNAPMOUNT_TEST_LOG_DIR` when it is set (`make test` sets it); `scripts/check-secrets`
/// then looks for each secret in each line (issue #5: secrets never reach a log).
public enum TestLog {
    static let files = AppendOnlyDirectory(variable: "SNAPMOUNT_TEST_LOG_DIR")

    /// One or more lines the product wrote (a logger's line, a subprocess's output).
    public static func write(_ text: String) {
        guard files.isEnabled, !text.isEmpty else { return }
        files.append(text.hasSuffix("\n") ? text : text + "\n", to: "lines-\(getpid()).log")
    }

    /// The secret keys and tokens a DevCloud issued, recorded when it stops.
    public static func recordSecrets(of cloud: DevCloud) async {
        guard files.isEnabled else { return }
        let secrets = await cloud.state.issuedSecrets()
        guard !secrets.isEmpty else { return }
        files.append(secrets.joined(separator: "\n") + "\n", to: "secrets-\(getpid()).txt")
    }
}

/// A log sink that keeps nothing but the suite's log (see ``TestLog``).
public struct TestLogSink: LogSink {
    public init() {}
    public func write(_ line: String) { TestLog.write(line) }
}

/// A logger for tests that look at outcomes, not lines: every level still reaches the
/// suite's log, so that the secrets check sees what the product would have printed.
public let quietLogger = Logger(label: "test") { _ in SnapmountLogHandler(style: .plain, level: .trace, sink: TestLogSink()) }

/// Stops a DevCloud, first recording the secrets it issued.
public func stopCloud(_ cloud: DevCloud) async {
    await TestLog.recordSecrets(of: cloud)
    await cloud.stop()
}

/// Rows of the reliability matrices, one JSON object per line in
/// `$SNAPMOUNT_RELIABILITY_REPORT/<matrix>.jsonl`; `scripts/reliability-report` turns them
/// into docs/RELIABILITY.md.
public enum ReliabilityReport {
    static let files = AppendOnlyDirectory(variable: "SNAPMOUNT_RELIABILITY_REPORT")

    public static func record(_ matrix: String, _ row: [String: String]) {
        guard files.isEnabled,
              let data = try? JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]) else { return }
        files.append(String(decoding: data, as: UTF8.self) + "\n", to: "\(matrix).jsonl")
    }
}
