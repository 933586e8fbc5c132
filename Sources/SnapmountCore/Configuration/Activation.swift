/// What a new release needs on this host (DESIGN.md §8), as its configuration declares it:
/// a command that makes the application use it, and a check that it serves. Run after every
/// switch of the tree — forward, and back after a failure.
public struct Activation: Sendable, Equatable {
    /// `activate`: the program and its arguments; `nil` when the host declares none.
    public var command: HostCommand?
    public var commandTimeout: Duration = .seconds(300)
    /// `health-check`; `nil`: the release counts as healthy once activated.
    public var healthCheck: HealthCheck?
    public var healthTimeout: Duration = .seconds(60)

    public init() {}
}

/// A command line from the configuration, read once into words as a shell would split it
/// (quotes, backslashes; no expansions) and run as an argument vector.
public struct HostCommand: Sendable, Hashable, CustomStringConvertible {
    public let words: [String]

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "a program and its arguments, such as systemctl restart app.service"
        let words = try ShellWords.split(text)
        guard let program = words.first, !program.isEmpty else { throw InvalidValue("names no program", expected: expected) }
        guard !program.hasPrefix("-") else { throw InvalidValue("starts with an option, not a program", expected: expected) }
        self.words = words
    }

    public var program: String { words[0] }
    public var arguments: [String] { Array(words.dropFirst()) }

    /// The words as an operator would type them: quoted only where a shell needs it.
    public var description: String {
        words.map { word in
            !word.isEmpty && word.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/._+@=:,%-".unicodeScalars.contains($0)) }
                ? word : ShellWords.shellQuoted(word)
        }.joined(separator: " ")
    }
}

/// `health-check`: an `http://` or `https://` URL that must answer 2xx, or a command that must
/// exit 0. Either is tried again until it passes or `health-timeout` ends.
public enum HealthCheck: Sendable, Hashable, CustomStringConvertible {
    case url(SourceURL)
    case command(HostCommand)

    public init(parsing text: String) throws(InvalidValue) {
        let lower = text.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            self = .url(try SourceURL(parsing: text))
        } else if text.contains("://") {
            throw InvalidValue("is a URL snapmount cannot fetch", expected: "an http:// or https:// URL, or a command such as /usr/local/bin/check-app")
        } else {
            self = .command(try HostCommand(parsing: text))
        }
    }

    public var description: String {
        switch self {
        case .url(let url): url.description
        case .command(let command): command.description
        }
    }
}
