/// A value that does not have the form its key needs. `expected` completes the sentence
/// "… is not valid; expected …".
public struct InvalidValue: Error, Equatable, Sendable {
    public let problem: String
    public let expected: String

    public init(_ problem: String, expected: String) {
        self.problem = problem
        self.expected = expected
    }
}

extension String {
    /// The text in double quotes with control characters escaped and a cap on length, so
    /// that a hostile or binary value can be shown in a one-line message.
    public func quotedForMessage(limit: Int = 80) -> String {
        var out = "\""
        var count = 0
        for scalar in unicodeScalars {
            if count == limit {
                out += "…"
                break
            }
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f || (0x80..<0xa0).contains(scalar.value) {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
            count += 1
        }
        return out + "\""
    }

    /// True when the text holds a space, a tab, a line break or any other control character:
    /// such a value could split or inject an `/etc/fstab` line.
    var hasWhitespaceOrControl: Bool {
        unicodeScalars.contains { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7f || (0x80..<0xa0).contains($0.value) }
    }
}

/// Where the snapshot id is published: an `http://` or `https://` URL.
public struct SourceURL: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let isHTTPS: Bool
    public let host: String

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "an http:// or https:// URL such as http://releasesrvr/snap.txt"
        guard !text.hasWhitespaceOrControl else { throw InvalidValue("contains whitespace or a control character", expected: expected) }
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("https://") {
            isHTTPS = true
            rest = text.dropFirst(8)
        } else if lower.hasPrefix("http://") {
            isHTTPS = false
            rest = text.dropFirst(7)
        } else {
            throw InvalidValue("has no http:// or https:// scheme", expected: expected)
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.contains("@") else {
            throw InvalidValue("carries credentials (user@host), which would end up in logs", expected: expected)
        }
        var hostPart = authority
        if authority.hasPrefix("[") {  // [::1]:8080
            guard let close = authority.firstIndex(of: "]") else { throw InvalidValue("has an unclosed IPv6 bracket", expected: expected) }
            hostPart = authority[authority.startIndex...close]
            let after = authority[authority.index(after: close)...]
            guard after.isEmpty || Self.isPort(after.dropFirst()) && after.first == ":" else {
                throw InvalidValue("has an invalid port", expected: expected)
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            guard Self.isPort(authority[authority.index(after: colon)...]) else {
                throw InvalidValue("has an invalid port", expected: expected)
            }
        }
        guard !hostPart.isEmpty else { throw InvalidValue("has no host", expected: expected) }
        host = String(hostPart)
        self.text = text
    }

    private static func isPort(_ text: Substring) -> Bool {
        guard let port = Int(text), !text.isEmpty, text.allSatisfy(\.isASCII) else { return false }
        return (1...65535).contains(port)
    }

    public var description: String { text }
}

/// An absolute path that can stand in an `/etc/fstab` field: no whitespace, no control
/// characters, no `.` or `..` components, no empty components.
public struct AbsolutePath: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    public init(parsing text: String, allowRoot: Bool = false) throws(InvalidValue) {
        let expected = "an absolute path without spaces or control characters, such as /release"
        guard text.hasPrefix("/") else { throw InvalidValue("is not an absolute path", expected: expected) }
        guard !text.hasWhitespaceOrControl else {
            throw InvalidValue("contains whitespace or a control character, which cannot stand in /etc/fstab", expected: expected)
        }
        var trimmed = Substring(text)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        let components = trimmed.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if trimmed != "/" {
            guard !components.contains(where: { $0.isEmpty }) else { throw InvalidValue("contains an empty component (//)", expected: expected) }
            guard !components.contains(where: { $0 == "." || $0 == ".." }) else {
                throw InvalidValue("contains a . or .. component", expected: expected)
            }
        } else if !allowRoot {
            throw InvalidValue("is the root directory", expected: expected)
        }
        guard trimmed.utf8.count < 4096 else { throw InvalidValue("is longer than PATH_MAX", expected: expected) }
        self.text = String(trimmed)
    }

    public var description: String { text }

    /// `/release`, the release's mount point when none is named.
    public static let release = AbsolutePath(known: "/release")
    /// Where `snapmount push` keeps the instances' host keys when it is not told.
    public static let knownHosts = AbsolutePath(known: "/var/lib/snapmount/known_hosts")

    /// A path written in this source, known to be one.
    private init(known text: String) {
        self.text = text
    }
}

/// Which filesystem mkfs creates on a blank volume.
public enum Filesystem: String, Sendable, CaseIterable, CustomStringConvertible {
    case ext4
    case xfs

    public init(parsing text: String) throws(InvalidValue) {
        guard let value = Filesystem(rawValue: text) else { throw InvalidValue("is not a supported filesystem", expected: "ext4 or xfs") }
        self = value
    }

    /// The longest label each filesystem stores, in bytes.
    public var maximumLabelLength: Int {
        switch self {
        case .ext4: 16
        case .xfs: 12
        }
    }

    public var description: String { rawValue }
}

/// A filesystem label: what mkfs sets and `LABEL=` in `/etc/fstab` names.
public struct FilesystemLabel: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "1 to 16 characters from A-Z a-z 0-9 _ . -"
        guard !text.isEmpty, text.utf8.count <= 16 else { throw InvalidValue("is \(text.utf8.count) bytes long", expected: expected) }
        guard text.utf8.allSatisfy({ AWSPercentEncoding.isUnreserved($0) && $0 != UInt8(ascii: "~") }) else {
            throw InvalidValue("has a character a label cannot carry safely", expected: expected)
        }
        self.text = text
    }

    public var description: String { text }
}

/// The device name given to AttachVolume (`/dev/sdf`); the kernel's name differs (§4).
public struct AttachmentDeviceName: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "/dev/sd[b-z] or /dev/xvd[b-z], such as /dev/sdf"
        let letter: Substring
        if text.hasPrefix("/dev/sd") {
            letter = text.dropFirst(7)
        } else if text.hasPrefix("/dev/xvd") {
            letter = text.dropFirst(8)
        } else {
            throw InvalidValue("is not an EBS device name", expected: expected)
        }
        guard letter.count == 1, let c = letter.first, ("b"..."z").contains(c) else {
            throw InvalidValue("is not an EBS device name", expected: expected)
        }
        self.text = text
    }

    public var description: String { text }
}

public enum VolumeType: String, Sendable, CaseIterable, CustomStringConvertible {
    case gp3, gp2, io1, io2, st1, sc1, standard

    public init(parsing text: String) throws(InvalidValue) {
        guard let value = VolumeType(rawValue: text) else {
            throw InvalidValue("is not an EBS volume type", expected: "one of gp3, gp2, io1, io2, st1, sc1, standard")
        }
        self = value
    }

    public var supportsIOPS: Bool { [.gp3, .io1, .io2].contains(self) }
    public var requiresIOPS: Bool { [.io1, .io2].contains(self) }
    public var supportsThroughput: Bool { self == .gp3 }
    public var description: String { rawValue }
}

/// A tag put on the volume at creation.
public struct VolumeTag: Sendable, Hashable, CustomStringConvertible {
    public let key: String
    public let value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }

    /// Parses `Key=Value,Key2=Value2`. Keys starting with `aws:` or `snapmount:` are reserved.
    public static func parseList(_ text: String) throws(InvalidValue) -> [VolumeTag] {
        let expected = "Key=Value pairs separated by commas, such as team=web,env=prod"
        var tags: [VolumeTag] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw InvalidValue("has an item without =: \(String(item).quotedForMessage())", expected: expected) }
            let key = parts[0].trimmingASCIISpaces()
            let value = parts[1].trimmingASCIISpaces()
            guard !key.isEmpty, key.count <= 128 else { throw InvalidValue("has an empty or over-long tag key", expected: expected + " (keys are 1 to 128 characters)") }
            guard value.count <= 256 else { throw InvalidValue("has a tag value over 256 characters", expected: expected) }
            let isControl: (Unicode.Scalar) -> Bool = { $0.value < 0x20 || $0.value == 0x7f }
            guard !key.unicodeScalars.contains(where: isControl), !value.unicodeScalars.contains(where: isControl) else {
                throw InvalidValue("has a control character", expected: expected)
            }
            let lower = key.lowercased()
            guard !lower.hasPrefix("aws:"), !lower.hasPrefix("snapmount:") else {
                throw InvalidValue("uses the reserved tag key \(key.quotedForMessage())", expected: expected + " (aws: and snapmount: keys are reserved)")
            }
            guard !tags.contains(where: { $0.key == key }) else { throw InvalidValue("repeats the tag key \(key.quotedForMessage())", expected: expected) }
            tags.append(VolumeTag(key: key, value: value))
        }
        // EC2 allows 50 tags per resource; snapmount adds two of its own.
        guard tags.count <= 48 else { throw InvalidValue("has \(tags.count) tags", expected: "at most 48 tags") }
        return tags
    }

    public var description: String { "\(key)=\(value)" }
}

/// Whose snapshots are acceptable: the snapshot decides what code every instance runs.
public enum SnapshotOwner: Sendable, Hashable, CustomStringConvertible {
    /// The account in the instance identity document (the default).
    case selfAccount
    case account(String)
    /// Anyone's: must be said explicitly.
    case any

    public init(parsing text: String) throws(InvalidValue) {
        if text == "self" {
            self = .selfAccount
        } else if text == "any" {
            self = .any
        } else if text.count == 12, text.allSatisfy({ $0.isASCII && $0.isNumber }) {
            self = .account(text)
        } else {
            throw InvalidValue("is not an owner", expected: "self, a 12-digit AWS account id, or any")
        }
    }

    public var description: String {
        switch self {
        case .selfAccount: "self"
        case .account(let id): id
        case .any: "any"
        }
    }
}

/// Comma-separated mount options, as they stand in the fourth field of `/etc/fstab`.
public struct MountOptions: Sendable, Hashable, CustomStringConvertible {
    public let options: [String]

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "comma-separated options without spaces, such as defaults,nofail"
        guard !text.hasWhitespaceOrControl else {
            throw InvalidValue("contains whitespace or a control character, which cannot stand in /etc/fstab", expected: expected)
        }
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !items.isEmpty, !items.contains(where: \.isEmpty) else { throw InvalidValue("has an empty option", expected: expected) }
        guard !text.hasPrefix("#") else { throw InvalidValue("starts with #", expected: expected) }
        options = items
    }

    public var description: String { options.joined(separator: ",") }
}

/// An AWS KMS key id, alias or ARN.
public struct KMSKeyID: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "a KMS key id, alias/NAME or key ARN"
        guard !text.isEmpty, text.utf8.count <= 2048,
            text.utf8.allSatisfy({ AWSPercentEncoding.isUnreserved($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "/") })
        else { throw InvalidValue("is not a KMS key identifier", expected: expected) }
        self.text = text
    }

    public var description: String { text }
}

/// Booleans as operators write them: true/false, yes/no, on/off, 1/0.
public func parseBoolean(_ text: String) throws(InvalidValue) -> Bool {
    switch text.lowercased() {
    case "true", "yes", "on", "1": return true
    case "false", "no", "off", "0": return false
    default: throw InvalidValue("is not a boolean", expected: "true or false (also yes/no, on/off, 1/0)")
    }
}

/// A whole number in a range, for IOPS and throughput.
public func parseInteger(_ text: String, in range: ClosedRange<Int>, unit: String) throws(InvalidValue) -> Int {
    guard let value = Int(text), text.allSatisfy(\.isASCII) else {
        throw InvalidValue("is not a whole number", expected: "a whole number of \(unit) from \(range.lowerBound) to \(range.upperBound)")
    }
    guard range.contains(value) else {
        throw InvalidValue("is out of range", expected: "a whole number of \(unit) from \(range.lowerBound) to \(range.upperBound)")
    }
    return value
}

/// A volume size in GiB: `100`, `100G`, `100GiB`, `2T` or `2TiB`; 1 GiB to 64 TiB.
public func parseVolumeSize(_ text: String) throws(InvalidValue) -> Int {
    let expected = "a size in GiB from 1 to 65536, such as 40, 40G or 1T"
    var digits = Substring(text)
    var multiplier = 1
    for (suffix, factor) in [("GiB", 1), ("G", 1), ("TiB", 1024), ("T", 1024)] where digits.hasSuffix(suffix) {
        digits = digits.dropLast(suffix.count)
        multiplier = factor
        break
    }
    guard let number = Int(digits), digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
        throw InvalidValue("is not a size", expected: expected)
    }
    let (gib, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow, (1...65536).contains(gib) else { throw InvalidValue("is out of range", expected: expected) }
    return gib
}
