/// Durations as operators write them: `50s`, `2m`, `1m30s`, `500ms`, `1h`; a bare number is
/// seconds. The written form is the shortest that reads back to the same value.
public enum DurationText {
    public static func parse(_ text: String) throws(InvalidValue) -> Duration {
        let expected = "a duration such as 50s, 2m, 1m30s or 500ms"
        guard !text.isEmpty else { throw InvalidValue("is empty", expected: expected) }
        if text.allSatisfy({ $0.isASCII && $0.isNumber }) {
            guard text.count <= 9, let seconds = Int64(text) else { throw InvalidValue("is too long", expected: expected) }
            return .seconds(seconds)
        }
        var total: Int64 = 0  // milliseconds
        var rest = Substring(text)
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 9, let number = Int64(digits) else {
                throw InvalidValue("is not a duration", expected: expected)
            }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s", "sec": factor = 1000
            case "m", "min": factor = 60_000
            case "h": factor = 3_600_000
            case "" where rest.isEmpty: throw InvalidValue("has a number without a unit", expected: expected)
            case "": throw InvalidValue("is not a duration", expected: expected)
            default: throw InvalidValue("has an unknown unit \(String(unit).quotedForMessage())", expected: expected + " (units: ms, s, m, h)")
            }
            // No trap on input: a sum that does not fit is an invalid value.
            let (part, overflow) = number.multipliedReportingOverflow(by: factor)
            let (sum, sumOverflow) = total.addingReportingOverflow(part)
            guard !overflow, !sumOverflow, sum <= Self.maximumMilliseconds else { throw InvalidValue("is too long", expected: expected) }
            total = sum
        }
        return .milliseconds(total)
    }

    /// Far beyond any timeout, and far below where milliseconds overflow.
    static let maximumMilliseconds: Int64 = 1 << 50

    public static func format(_ duration: Duration) -> String {
        let totalMilliseconds = duration.wholeMilliseconds
        guard totalMilliseconds > 0 else { return "0s" }
        var parts: [String] = []
        var rest = totalMilliseconds
        for (unit, size) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1000), ("ms", 1)] where rest >= size {
            parts.append("\(rest / size)\(unit)")
            rest %= size
        }
        return parts.joined()
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
