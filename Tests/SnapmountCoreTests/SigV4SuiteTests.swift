import Foundation
import SnapmountCore
import SnapmountTestSupport
import Testing

/// AWS's official SigV4 test suite, read from `../shared/aws-sig-v4-test-suite` (beside the
/// clone). Every case a Query client needs must reproduce `.creq`, `.sts` and `.authz` byte
/// for byte. Without the suite the test is skipped, saying why; under CI it fails.
@Suite("SigV4: AWS test suite")
struct SigV4SuiteTests {
    static let folder = "aws-sig-v4-test-suite"
    static let suiteDirectory = SharedData.url(folder)

    static let credentials = AWSCredentials(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))
    static let time = UTCTimestamp(amzDate: "20150830T123600Z")

    /// The cases the issue lists for a Query client, plus the header-folding cases, which
    /// the same canonicalisation covers. `normalize-path` (path dot-segments) is not used by
    /// a client that always posts to `/`.
    static func isQueryClientCase(_ name: String) -> Bool {
        name.hasPrefix("get-vanilla") || name == "get-unreserved" || name == "get-utf8"
            || name.hasPrefix("post-vanilla") || name.hasPrefix("post-x-www-form-urlencoded")
            || name.hasPrefix("post-header-") || name.hasPrefix("post-sts-header-") || name.hasPrefix("get-header-")
    }

    /// Every case folder below the suite (one level of nesting, as post-sts-token has).
    static func caseDirectories() -> [URL] {
        let manager = FileManager.default
        guard let top = try? manager.contentsOfDirectory(at: suiteDirectory, includingPropertiesForKeys: nil) else { return [] }
        var result: [URL] = []
        for directory in top.sorted(by: { $0.path < $1.path }) {
            let name = directory.lastPathComponent
            if manager.fileExists(atPath: directory.appendingPathComponent(name + ".req").path) {
                result.append(directory)
            } else if let nested = try? manager.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil) {
                result += nested.filter { manager.fileExists(atPath: $0.appendingPathComponent($0.lastPathComponent + ".req").path) }
                    .sorted(by: { $0.path < $1.path })
            }
        }
        return result
    }

    @Test("every Query-client case reproduces .creq, .sts and .authz", .enabled(if: SharedData.enabled(folder), SharedData.reason(folder)))
    func reproducesSuite() throws {
        _ = try SharedData.require(Self.folder)
        let time = try #require(Self.time)
        var ran: [String] = []
        var notApplicable: [String] = []
        for directory in Self.caseDirectories() {
            let name = directory.lastPathComponent
            guard Self.isQueryClientCase(name) else {
                notApplicable.append(name)
                continue
            }
            func file(_ ext: String) throws -> String {
                try String(contentsOf: directory.appendingPathComponent("\(name).\(ext)"), encoding: .utf8)
            }
            let request = try RawHTTPRequest.parse(try file("req"))
            let token = request.headers.first { $0.name.lowercased() == "x-amz-security-token" }?.value
            var credentials = Self.credentials
            credentials.sessionToken = token.map(Secret.init)
            let signer = SigV4Signer(region: "us-east-1", service: "service",
                                     sessionTokenPlacement: name == "post-sts-header-after" ? .addedAfterSigning : .signed)
            let signature = try signer.sign(request.sigV4Request, credentials: credentials, at: time)
            #expect(signature.canonicalRequest == (try file("creq")), "\(name): canonical request")
            #expect(signature.stringToSign == (try file("sts")), "\(name): string to sign")
            #expect(signature.authorization == (try file("authz")), "\(name): Authorization")
            ran.append(name)
        }
        print("SigV4 suite: \(ran.count) cases reproduced byte for byte (creq, sts, authz): \(ran.joined(separator: ", "))")
        print("SigV4 suite: \(notApplicable.count) cases not applicable to a Query client: \(notApplicable.joined(separator: ", "))")
        // The listed families hold 20 cases; fewer means the walker missed some.
        #expect(ran.filter { !$0.hasPrefix("get-header-") }.count >= 20)
    }
}

/// A request in the suite's `.req` form: request line, headers (continuation lines start
/// with white space), a blank line, the body. The path and query are raw text.
struct RawHTTPRequest {
    var method: String
    var path: String
    var query: [(name: String, value: String)]
    var headers: [(name: String, value: String)]
    var body: String

    static func parse(_ text: String) throws -> RawHTTPRequest {
        var lines = text.components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        guard let space = requestLine.firstIndex(of: " "), requestLine.hasSuffix(" HTTP/1.1") else {
            throw ParseError(line: requestLine)
        }
        let method = String(requestLine[..<space])
        let target = String(requestLine[requestLine.index(after: space)...].dropLast(" HTTP/1.1".count))
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [(String, String)] = []
        if parts.count > 1 {
            for item in parts[1].split(separator: "&") {
                let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((String(pair[0]), pair.count > 1 ? String(pair[1]) : ""))
            }
        }
        var headers: [(String, String)] = []
        while let line = lines.first, !line.isEmpty {
            lines.removeFirst()
            if line.first == " " || line.first == "\t", let last = headers.last {
                headers.append((last.0, line))
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            } else {
                throw ParseError(line: line)
            }
        }
        let body = lines.isEmpty ? "" : lines.dropFirst().joined(separator: "\n")
        return RawHTTPRequest(method: method, path: String(parts[0]), query: query, headers: headers, body: body)
    }

    var sigV4Request: SigV4Request {
        SigV4Request(method: method, path: path, query: query, headers: headers, body: Array(body.utf8))
    }

    struct ParseError: Error {
        let line: String
    }
}
