/// What the release server's `snap.txt` said, when it was not one valid snapshot id.
public enum SnapshotSourceError: SnapmountError, Equatable {
    case empty(url: String)
    case notUTF8(url: String)
    case looksLikeHTML(url: String, excerpt: String)
    case severalLines(url: String, excerpt: String)
    case severalIDs(url: String, excerpt: String)
    case notASnapshotID(url: String, excerpt: String)
    case noneTagged(source: String, owner: String)

    /// The release server is not serving a usable release: nothing on this machine is wrong.
    public var exitStatus: ExitStatus { .unavailable }

    public var description: String {
        let expected = "expected one snapshot id such as snap-0123456789abcdef0"
        switch self {
        case .empty(let url): return "\(url) is empty; \(expected) (is a release being published right now?)"
        case .notUTF8(let url): return "\(url) is not text; \(expected)"
        case .looksLikeHTML(let url, let excerpt): return "\(url) returned an HTML page, not a snapshot id: \(excerpt); \(expected)"
        case .severalLines(let url, let excerpt): return "\(url) has more than one line: \(excerpt); \(expected)"
        case .severalIDs(let url, let excerpt): return "\(url) names more than one snapshot: \(excerpt); \(expected)"
        case .notASnapshotID(let url, let excerpt): return "\(url) does not hold a snapshot id: \(excerpt); \(expected)"
        case .noneTagged(let source, let owner):
            return "no completed snapshot of owner \(owner) matches \(source): nothing is published yet (is the tag right, and is the snapshot completed?)"
        }
    }
}

/// The strict reading of `snap.txt`: one line holding exactly one snapshot id. Spaces and tabs
/// around it are accepted, and one trailing LF or CRLF; nothing else.
public enum SnapshotSourceBody {
    public static func parse(_ bytes: [UInt8], url: String) throws(SnapshotSourceError) -> SnapshotID {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8(url: url) }
        let excerpt = text.quotedForMessage(limit: 64)
        guard !text.allSatisfy(\.isWhitespace) else { throw .empty(url: url) }
        let lower = text.lowercased()
        if lower.trimmingASCIISpaces().hasPrefix("<") || lower.contains("<html") || lower.contains("<!doctype") {
            throw .looksLikeHTML(url: url, excerpt: excerpt)
        }
        let words = text.split(whereSeparator: { $0.isWhitespace || $0 == "," })
        if words.filter({ $0.hasPrefix("snap-") }).count > 1 { throw .severalIDs(url: url, excerpt: excerpt) }

        var line = Substring(text)
        if line.hasSuffix("\n") || line.hasSuffix("\r\n") { line = line.dropLast() }  // "\r\n" is one Character
        guard !line.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) else {
            throw .severalLines(url: url, excerpt: excerpt)
        }
        guard let id = SnapshotID(line.trimmingASCIISpaces()) else { throw .notASnapshotID(url: url, excerpt: excerpt) }
        return id
    }
}


/// Where the current release's snapshot id is published (`source`): a file on a release
/// server (`http://`, `https://`), an SSM parameter (`ssm:/NAME`), or the newest completed
/// snapshot that carries a tag (`tag:KEY=VALUE`).
public enum SnapshotSource: Sendable, Hashable, CustomStringConvertible {
    case url(SourceURL)
    case ssm(name: String)
    case tag(key: String, value: String)

    public init(parsing text: String) throws(InvalidValue) {
        let expected = "an http:// or https:// URL such as http://releasesrvr/snap.txt, ssm:/NAME or tag:KEY=VALUE"
        if text.hasPrefix("ssm:") {
            let name = String(text.dropFirst(4))
            guard Self.isParameterName(name) else {
                throw InvalidValue("is not an SSM parameter name: \(text.quotedForMessage())",
                                   expected: "ssm:/NAME, the name being letters, digits and _ . - / (at most 1011 characters)")
            }
            self = .ssm(name: name)
        } else if text.hasPrefix("tag:") {
            let pair = text.dropFirst(4).split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, !pair[0].isEmpty, pair[0].count <= 128, pair[1].count <= 256,
                  !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }),
                  !pair[0].lowercased().hasPrefix("aws:")
            else { throw InvalidValue("is not a tag source: \(text.quotedForMessage())", expected: "tag:KEY=VALUE, such as tag:release=web") }
            self = .tag(key: String(pair[0]), value: String(pair[1]))
        } else {
            do {
                self = .url(try SourceURL(parsing: text))
            } catch {
                throw InvalidValue(error.problem, expected: expected)
            }
        }
    }

    /// SSM's rule: letters, digits, `_ . - /`; a path starts with `/`; not `aws`/`ssm` first.
    static func isParameterName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 1011 else { return false }
        let lower = name.lowercased().drop { $0 == "/" }
        guard !lower.hasPrefix("aws"), !lower.hasPrefix("ssm") else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "_.-/".unicodeScalars.contains($0)) }
    }

    /// Whether whoever can change what the network carries can choose the release: only an
    /// `http://` URL. SSM and EC2 answers are signed API calls over TLS.
    public var isUnauthenticated: Bool {
        if case .url(let url) = self { return !url.isHTTPS }
        return false
    }

    public var description: String {
        switch self {
        case .url(let url): url.text
        case .ssm(let name): "ssm:" + name
        case .tag(let key, let value): "tag:\(key)=\(value)"
        }
    }
}
