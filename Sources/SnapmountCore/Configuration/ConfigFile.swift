/// Where a configuration value came from; error messages and `snapmount config` name it.
public enum ConfigOrigin: Sendable, Hashable, CustomStringConvertible {
    case option(String)
    case environment(String)
    case file(path: String, line: Int)
    case defaultValue

    public var description: String {
        switch self {
        case .option(let name): "option \(name)"
        case .environment(let name): "environment \(name)"
        case .file(let path, let line): "\(path):\(line)"
        case .defaultValue: "default"
        }
    }
}

/// One problem with the configuration, located as precisely as possible.
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    public let origin: ConfigOrigin?
    public let message: String

    public init(_ origin: ConfigOrigin?, _ message: String) {
        self.origin = origin
        self.message = message
    }

    public var description: String {
        origin.map { "\($0): \(message)" } ?? message
    }
}

/// Everything wrong with a configuration, all at once, so one edit fixes it.
public struct ConfigurationError: SnapmountError, Equatable {
    public let issues: [ConfigIssue]

    public init(_ issues: [ConfigIssue]) {
        self.issues = issues
    }

    public var exitStatus: ExitStatus { .configuration }
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// `/etc/snapmount.conf`: lines of `key = value`. A `#` at the start of a line or after
/// white space begins a comment (so `http://host/a#b` keeps its `#`). Blank lines are
/// ignored. Values are taken literally: no quotes, no escapes.
public struct ConfigFile: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let key: ConfigKey
        public let value: String
        public let line: Int
    }

    public let path: String
    public let entries: [Entry]

    /// Parses the file's bytes. Returns the entries that parsed and an issue for every line
    /// that did not: not UTF-8, no `=`, an unknown key, an empty value, a repeated key.
    public static func parse(_ bytes: [UInt8], path: String) -> (file: ConfigFile, issues: [ConfigIssue]) {
        var entries: [Entry] = []
        var issues: [ConfigIssue] = []
        var lineNumber = 0
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let origin = ConfigOrigin.file(path: path, line: lineNumber)
            guard let decoded = String(validating: rawLine, as: UTF8.self) else {
                issues.append(ConfigIssue(origin, "the line is not valid UTF-8 text"))
                continue
            }
            var line = Substring(decoded)
            if line.hasSuffix("\r") { line = line.dropLast() }
            let content = stripComment(line).trimmingASCIISpaces()
            if content.isEmpty { continue }

            guard let equals = content.firstIndex(of: "=") else {
                issues.append(ConfigIssue(origin, "expected `key = value`, found \(content.quotedForMessage())"))
                continue
            }
            let name = content[..<equals].trimmingASCIISpaces()
            let value = content[content.index(after: equals)...].trimmingASCIISpaces()
            guard let key = ConfigKey(rawValue: name) else {
                issues.append(ConfigIssue(origin, unknownKeyMessage(name)))
                continue
            }
            guard !value.isEmpty else {
                issues.append(ConfigIssue(origin, "\(key): empty value; expected \(key.valueName) — remove the line to use the default"))
                continue
            }
            if let earlier = entries.first(where: { $0.key == key }) {
                issues.append(ConfigIssue(origin, "\(key) is already set on line \(earlier.line); set each key once"))
                continue
            }
            entries.append(Entry(key: key, value: value, line: lineNumber))
        }
        return (ConfigFile(path: path, entries: entries), issues)
    }

    public func entry(for key: ConfigKey) -> Entry? {
        entries.first { $0.key == key }
    }

    static func unknownKeyMessage(_ name: String) -> String {
        if name.isEmpty { return "expected `key = value`, found no key before =" }
        var message = "unknown key \(name.quotedForMessage())"
        if let hint = ConfigKey.closest(to: name) { message += " (did you mean \(hint.rawValue)?)" }
        return message + "; valid keys: " + ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")
    }

    private static func stripComment(_ line: Substring) -> Substring {
        var previousIsSpace = true
        for index in line.indices {
            let character = line[index]
            if character == "#" && previousIsSpace { return line[..<index] }
            previousIsSpace = character == " " || character == "\t"
        }
        return line
    }
}
