#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import SnapmountCore

/// How log lines look: plain text for a terminal or a file, or with the `<N>` syslog
/// priority prefix that journald reads when stderr is connected to the journal.
public enum LogStyle: Sendable, Equatable {
    case plain
    case journal

    /// `.journal` when `JOURNAL_STREAM` names the device and inode that stderr really is
    /// (systemd.exec(5)); a variable merely inherited by a redirected child does not count.
    public static func detect(journalStream: String?, fileDescriptor: Int32 = STDERR_FILENO) -> LogStyle {
        guard let stream = journalStream else { return .plain }
        let parts = stream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return .plain }
        var status = stat()
        guard (try? systemCall("fstat", "stderr", { fstat(fileDescriptor, &status) })) != nil else { return .plain }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode ? .journal : .plain
    }
}

/// Formats one event as one line: never a line break inside, metadata as `key=value`, and
/// values under secret-looking keys shown as `<redacted>` even if a caller forgot to wrap
/// them in ``Secret``.
public enum LogLine {
    public static func format(level: Logger.Level, message: String, metadata: Logger.Metadata,
                              style: LogStyle) -> String {
        var line: String
        switch style {
        case .journal:
            line = "<\(priority(level))>"
        case .plain:
            line = "snapmount: "
            if level >= .warning { line += "\(level == .critical ? "critical" : level == .error ? "error" : "warning"): " }
        }
        line += escaped(message)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let text = isSecretKey(key) ? "<redacted>" : "\(value)"
            let needsQuotes = text.isEmpty || text.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" })
            line += " \(key)=" + (needsQuotes ? text.quotedForMessage(limit: 200) : escaped(text))
        }
        return line + "\n"
    }

    /// syslog(3) priorities: debug 7 … critical 2.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func isSecretKey(_ key: String) -> Bool {
        let lower = key.lowercased()
        return ["secret", "token", "password", "authorization", "signature", "credential"].contains { lower.contains($0) }
    }

    /// The longest message a line carries: text from the network (an error body, a header)
    /// is quoted short where it is used, and no line grows past this whatever it holds.
    public static let messageLimit = 2048

    /// Control characters — C0, DEL, C1 — and the Unicode line and paragraph separators,
    /// which some terminals and log viewers break lines at, are written as escapes.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static func escaped(_ text: String) -> String {
        let capped = text.utf8.count > messageLimit
            ? String(decoding: text.utf8.prefix(messageLimit), as: UTF8.self) + "… (\(text.utf8.count - messageLimit) more bytes)"
            : text
        guard capped.unicodeScalars.contains(where: needsEscape) else { return capped }
        var out = ""
        for scalar in capped.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if needsEscape(scalar) {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}

/// Where formatted lines go. Standard error in the product; a buffer in tests.
public protocol LogSink: Sendable {
    func write(_ line: String)
}

/// Writes each line with one write(2), so lines from concurrent processes never interleave.
public struct StandardErrorSink: LogSink {
    public init() {}

    public func write(_ line: String) {
        try? writeAll(STDERR_FILENO, Array(line.utf8), subject: "stderr")
    }
}

/// A swift-log handler: one line per event on standard error, plain or journald-style.
public struct SnapmountLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let style: LogStyle
    private let sink: any LogSink

    public init(style: LogStyle, level: Logger.Level = .info, sink: any LogSink = StandardErrorSink()) {
        self.style = style
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        sink.write(LogLine.format(level: event.level, message: event.message.description, metadata: merged, style: style))
    }
}
