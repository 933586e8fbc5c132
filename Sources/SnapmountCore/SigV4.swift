/// Credentials that sign requests. The secret parts are ``Secret``s, so a credentials value
/// can be logged or dumped without leaking anything.
public struct AWSCredentials: Sendable, Hashable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: Secret
    public var sessionToken: Secret?
    /// When temporary credentials stop working; `nil` for long-term keys.
    public var expiration: UTCTimestamp?

    public init(accessKeyID: String, secretAccessKey: Secret, sessionToken: Secret? = nil,
                expiration: UTCTimestamp? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String {
        "AWSCredentials(\(accessKeyID), secret: <redacted>\(sessionToken == nil ? "" : ", token: <redacted>"))"
    }
}

/// The parts of an HTTP request that SigV4 covers. `path` and the query items are the
/// decoded text; the signer encodes them as AWS specifies.
public struct SigV4Request: Sendable {
    public var method: String
    public var path: String
    public var query: [(name: String, value: String)]
    /// In the order they are sent; a name may repeat. Must include `Host`.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, path: String = "/", query: [(name: String, value: String)] = [],
                headers: [(name: String, value: String)], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }
}

/// Everything a signature was computed from, so tests and a verifying server can compare
/// each stage, and the headers to send.
public struct SigV4Signature: Sendable {
    public let canonicalRequest: String
    public let stringToSign: String
    /// Lower-case hex HMAC-SHA256 of the string to sign.
    public let signature: String
    /// The `Authorization` header value.
    public let authorization: String
    /// Headers to add to the request as sent: `X-Amz-Date`, `X-Amz-Security-Token` when the
    /// credentials have a session token, and `Authorization`.
    public let headers: [(name: String, value: String)]
}

public enum SigV4Error: SnapmountError, Equatable {
    case missingHost
    case invalidHeader(String)
    case crypto(String)

    public var exitStatus: ExitStatus { .internalError }

    public var description: String {
        switch self {
        case .missingHost: "cannot sign a request without a Host header"
        case .invalidHeader(let name): "cannot sign header \(name): names and values must not contain line breaks"
        case .crypto(let operation): "libcrypto failed to compute \(operation)"
        }
    }
}

/// AWS Signature Version 4 (HMAC-SHA256), for one region and service.
public struct SigV4Signer: Sendable {
    public static let algorithm = "AWS4-HMAC-SHA256"

    /// Where the session token goes. EC2 expects it signed; a few services (and one case
    /// of AWS's test suite) add it after signing.
    public enum SessionTokenPlacement: Sendable {
        case signed
        case addedAfterSigning
    }

    public var region: String
    public var service: String
    public var sessionTokenPlacement: SessionTokenPlacement

    public init(region: String, service: String, sessionTokenPlacement: SessionTokenPlacement = .signed) {
        self.region = region
        self.service = service
        self.sessionTokenPlacement = sessionTokenPlacement
    }

    public func sign(_ request: SigV4Request, credentials: AWSCredentials, at time: UTCTimestamp)
        throws(SigV4Error) -> SigV4Signature
    {
        var headers = request.headers.filter {
            !["x-amz-date", "x-amz-security-token", "authorization"].contains($0.name.lowercased())
        }
        guard headers.contains(where: { $0.name.lowercased() == "host" }) else { throw .missingHost }
        headers.append((name: "X-Amz-Date", value: time.amzDate))
        var added = [(name: "X-Amz-Date", value: time.amzDate)]
        if let token = credentials.sessionToken {
            let header = (name: "X-Amz-Security-Token", value: token.exposedValue())
            added.append(header)
            if sessionTokenPlacement == .signed { headers.append(header) }
        }

        var signable = request
        signable.headers = headers
        let (canonicalRequest, signedHeaders) = try Self.canonicalRequest(signable)
        let scope = credentialScope(time)
        let stringToSign = try stringToSign(canonicalRequest: canonicalRequest, at: time)
        let signature = try self.signature(stringToSign: stringToSign, secret: credentials.secretAccessKey, at: time)
        let authorization =
            "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        added.append((name: "Authorization", value: authorization))
        return SigV4Signature(canonicalRequest: canonicalRequest, stringToSign: stringToSign,
                              signature: signature, authorization: authorization, headers: added)
    }

    /// The canonical request over exactly the given headers, and the signed-headers list.
    public static func canonicalRequest(_ request: SigV4Request) throws(SigV4Error) -> (text: String, signedHeaders: String) {
        let (canonicalHeaders, signedHeaders) = try canonicalHeaders(request.headers)
        let payloadHash = try hex(SHA256.hash(request.body), "SHA-256")
        let text = [
            request.method.uppercased(),
            canonicalURI(request.path),
            canonicalQuery(request.query),
            canonicalHeaders,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        return (text, signedHeaders)
    }

    /// `20150830/us-east-1/service/aws4_request`
    public func credentialScope(_ time: UTCTimestamp) -> String {
        "\(time.dateStamp)/\(region)/\(service)/aws4_request"
    }

    public func stringToSign(canonicalRequest: String, at time: UTCTimestamp) throws(SigV4Error) -> String {
        [Self.algorithm, time.amzDate, credentialScope(time), try Self.hex(SHA256.hash(canonicalRequest), "SHA-256")]
            .joined(separator: "\n")
    }

    /// Lower-case hex HMAC of the string to sign under the derived signing key.
    public func signature(stringToSign: String, secret: Secret, at time: UTCTimestamp) throws(SigV4Error) -> String {
        do {
            let key = try signingKey(secret: secret, dateStamp: time.dateStamp)
            return try HMACSHA256.authenticationCode(key: key, message: stringToSign).hexString
        } catch {
            throw .crypto("HMAC-SHA256")
        }
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")
    public func signingKey(secret: Secret, dateStamp: String) throws(CryptoError) -> [UInt8] {
        var key = Array(("AWS4" + secret.exposedValue()).utf8)
        for part in [dateStamp, region, service, "aws4_request"] {
            key = try HMACSHA256.authenticationCode(key: key, message: part)
        }
        return key
    }

    // MARK: - Canonical forms

    /// Each path segment percent-encoded once; `/` kept. An empty path is `/`.
    static func canonicalURI(_ path: String) -> String {
        path.isEmpty ? "/" : AWSPercentEncoding.encode(path, keepingSlashes: true)
    }

    /// Names and values encoded, then sorted by name and, for equal names, by value.
    static func canonicalQuery(_ items: [(name: String, value: String)]) -> String {
        items
            .map { (AWSPercentEncoding.encode($0.name), AWSPercentEncoding.encode($0.value)) }
            .sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Lower-case names, sorted; values trimmed with inner runs of spaces folded to one;
    /// repeated names joined with commas in the order sent.
    static func canonicalHeaders(_ headers: [(name: String, value: String)])
        throws(SigV4Error) -> (canonical: String, signed: String)
    {
        var order: [String] = []
        var values: [String: [String]] = [:]
        for (name, value) in headers {
            let isLineBreak: (Unicode.Scalar) -> Bool = { $0 == "\r" || $0 == "\n" }
            guard !name.unicodeScalars.contains(where: isLineBreak), !value.unicodeScalars.contains(where: isLineBreak) else {
                throw .invalidHeader(name)
            }
            let key = name.lowercased().trimmingASCIISpaces()
            if values[key] == nil { order.append(key) }
            values[key, default: []].append(value.foldingASCIISpaces())
        }
        let names = order.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        var canonical = ""
        for name in names {
            canonical += name + ":" + (values[name] ?? []).joined(separator: ",") + "\n"
        }
        return (canonical, names.joined(separator: ";"))
    }

    private static func hex(_ compute: @autoclosure () throws(CryptoError) -> [UInt8], _ what: String)
        throws(SigV4Error) -> String
    {
        do { return try compute().hexString } catch { throw .crypto(what) }
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    func trimmingASCIISpaces() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }

    /// Without leading and trailing white space of any kind (spaces, tabs, line breaks, NULs),
    /// as sysfs files, HTTP header lines and XML text carry it.
    public func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0.isWhitespace || $0 == "\0" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }

    /// Trimmed, with every inner run of spaces and tabs folded to one space.
    func foldingASCIISpaces() -> String {
        var out = ""
        var pendingSpace = false
        for character in trimmingASCIISpaces() {
            if character == " " || character == "\t" {
                pendingSpace = true
            } else {
                if pendingSpace { out.append(" ") }
                pendingSpace = false
                out.append(character)
            }
        }
        return out
    }
}
