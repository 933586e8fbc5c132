/// Percent-encoding as AWS defines it for SigV4 and the Query API: every byte of the UTF-8
/// form except the unreserved characters `A–Z a–z 0–9 - _ . ~` becomes `%XX` with upper-case
/// hex digits. A space is `%20`, never `+`.
public enum AWSPercentEncoding {
    public static func encode(_ text: String, keepingSlashes: Bool = false) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) || (keepingSlashes && byte == UInt8(ascii: "/")) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes `%XX` sequences; `nil` for a malformed escape or bytes that are not UTF-8.
    /// With `plusIsSpace`, `+` decodes to a space, as in form bodies written by browsers.
    public static func decode(_ text: String, plusIsSpace: Bool = false) -> String? {
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        var bytes = text.utf8.makeIterator()
        while let byte = bytes.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue)
                else { return nil }
                out.append(high << 4 | low)
            case UInt8(ascii: "+") where plusIsSpace:
                out.append(UInt8(ascii: " "))
            default:
                out.append(byte)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// The parameters of an EC2 Query request, in the order they were added; duplicates are allowed.
public struct QueryParameters: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var items: [(name: String, value: String)]

    public init(_ items: [(name: String, value: String)] = []) {
        self.items = items
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.items = elements.map { (name: $0.0, value: $0.1) }
    }

    public mutating func append(_ name: String, _ value: String) {
        items.append((name: name, value: value))
    }

    public subscript(name: String) -> String? {
        items.first { $0.name == name }?.value
    }

    /// `application/x-www-form-urlencoded` with AWS's encoding, sorted by name so the same
    /// parameters always give the same bytes.
    public var formEncoded: String {
        items
            .map { (AWSPercentEncoding.encode($0.name), AWSPercentEncoding.encode($0.value)) }
            .sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Parses a form body or query string; `nil` when an escape is malformed.
    public static func parse(formEncoded text: String) -> QueryParameters? {
        var result = QueryParameters()
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = AWSPercentEncoding.decode(String(parts[0]), plusIsSpace: true) else { return nil }
            let rawValue = parts.count > 1 ? String(parts[1]) : ""
            guard let value = AWSPercentEncoding.decode(rawValue, plusIsSpace: true) else { return nil }
            result.append(name, value)
        }
        return result
    }

    public static func == (lhs: QueryParameters, rhs: QueryParameters) -> Bool {
        lhs.items.elementsEqual(rhs.items) { $0.name == $1.name && $0.value == $1.value }
    }
}
