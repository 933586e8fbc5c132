import ArgumentParser
import SnapmountCore

/// Checks of option values that several commands share, each failing with a message that
/// names the option and what it expects (a usage error: 64).
enum OptionCheck {
    /// A duration such as `10s` or `5m`, within `range`.
    static func duration(_ name: String, _ text: String, in range: ClosedRange<Duration>) throws -> Duration {
        guard let value = try? DurationText.parse(text), range.contains(value) else {
            throw ValidationError("\(name) \(text.quotedForMessage()) is not a duration from \(DurationText.format(range.lowerBound)) to \(DurationText.format(range.upperBound)), such as 30s or 5m")
        }
        return value
    }

    /// An absolute path other than `/`.
    static func absolutePath(_ name: String, _ text: String) throws {
        guard (try? AbsolutePath(parsing: text)) != nil else { throw ValidationError("\(name) must be an absolute path other than /") }
    }
}
