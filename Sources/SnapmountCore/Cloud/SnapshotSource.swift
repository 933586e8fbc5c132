/// What the release server's `snap.txt` said, when it was not one valid snapshot id.
public enum SnapshotSourceError: SnapmountError, Equatable {
    case empty(url: String)
    case notUTF8(url: String)
    case looksLikeHTML(url: String, excerpt: String)
    case severalLines(url: String, excerpt: String)
    case severalIDs(url: String, excerpt: String)
    case notASnapshotID(url: String, excerpt: String)

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

