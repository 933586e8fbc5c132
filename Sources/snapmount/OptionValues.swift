import ArgumentParser
import SnapmountAgent
import SnapmountCore

/// Option values parsed once, into the types the flows take, by the option's `transform`:
/// a bad value is a usage error (64) that names the option, the value and what is expected.
/// (`ExpressibleByArgument` cannot say why a value is wrong; a throwing transform can.)
enum OptionValue {
    /// An absolute path other than `/`.
    static func path(_ text: String) throws -> AbsolutePath {
        do throws(InvalidValue) { return try AbsolutePath(parsing: text) } catch { throw OptionValueError(error) }
    }

    /// A path that a remote shell reads as it is (push's `--mount-point`; rsync before 3.2.4
    /// passes it through the remote shell).
    static func remotePath(_ text: String) throws -> AbsolutePath {
        let path = try self.path(text)
        guard PushOptions.isSafeRemotePath(path.text) else {
            throw OptionValueError("has characters a remote shell would read (rsync before 3.2.4 passes the path through it)",
                                   expected: "letters, digits and / . _ + @ -")
        }
        return path
    }

    /// Where publish writes the id: a file, or `ssm:/NAME`.
    static func target(_ text: String) throws -> PublishTarget {
        do throws(InvalidValue) { return try PublishTarget(parsing: text) } catch { throw OptionValueError(error) }
    }

    static func volume(_ text: String) throws -> VolumeID {
        guard let volume = VolumeID(text) else { throw OptionValueError("is not a volume id", expected: "vol- and 8 or 17 hex digits, such as vol-0123456789abcdef0") }
        return volume
    }

    /// A command and its arguments, split as a shell would split them (no expansions).
    static func command(_ text: String) throws -> CommandWords {
        let words: [String]
        do throws(InvalidValue) { words = try ShellWords.split(text) } catch { throw OptionValueError(error) }
        guard !words.isEmpty else { throw OptionValueError("names no command", expected: "a command and its options, such as \"ssh -i /root/.ssh/deploy\"") }
        return CommandWords(words: words)
    }

    /// `--group`, repeated: at least one, each a name Auto Scaling allows.
    static func checkGroups(_ groups: [String]) throws {
        guard !groups.isEmpty else { throw ValidationError("name at least one Auto Scaling group with --group") }
        for group in groups where !isAutoScalingGroupName(group) {
            throw ValidationError("--group \(group.quotedForMessage()) is not an Auto Scaling group name (1 to 255 characters, no control characters)")
        }
    }

    /// A duration such as `10s` or `5m`, within `range`.
    static func duration(in range: ClosedRange<Duration>) -> @Sendable (String) throws -> DurationValue {
        { text in
            guard let value = try? DurationText.parse(text), range.contains(value) else {
                throw OptionValueError("is not a duration from \(DurationText.format(range.lowerBound)) to \(DurationText.format(range.upperBound))",
                                       expected: "such as 30s or 5m")
            }
            return DurationValue(value)
        }
    }
}

extension ArgumentHelp {
    /// An option's help with its default shown as the parser shows defaults: a transformed
    /// option's default is not shown by the parser itself.
    init(_ abstract: String, valueName: String, default value: some CustomStringConvertible) {
        self.init("\(abstract) (default: \(value))", valueName: valueName)
    }
}

/// A duration option's value, shown in the help as it is written (`10s`, `30m`).
struct DurationValue: Sendable, CustomStringConvertible {
    let duration: Duration

    init(_ duration: Duration) { self.duration = duration }

    var description: String { DurationText.format(duration) }
}

/// Why an option's value is refused: what is wrong with it, and what is expected instead.
struct OptionValueError: Error, CustomStringConvertible {
    let description: String

    init(_ problem: String, expected: String) {
        description = "it \(problem); expected \(expected)"
    }

    init(_ invalid: InvalidValue) {
        self.init(invalid.problem, expected: invalid.expected)
    }
}
