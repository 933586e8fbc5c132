internal import CCurl
import SnapmountCore

public enum HTTPMethod: String, Sendable {
    case get = "GET"
    case put = "PUT"
    case post = "POST"
}

/// One HTTP exchange to make. Timeouts and the response cap are per request, because IMDS,
/// `snap.txt` and EC2 need different bounds.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// How long to wait for the TCP (and TLS) connection.
    public var connectTimeout: Duration
    /// How long the whole exchange may take, connection included.
    public var timeout: Duration
    /// The largest body accepted; a longer one aborts the transfer with ``HTTPError/tooLarge(url:limit:)``.
    public var maximumResponseBytes: Int
    /// Follow up to three redirects, to http or https only — from an https URL, to https only.
    public var followRedirects: Bool
    /// Open a new connection rather than reuse a kept-alive one. libcurl silently sends a
    /// request again when a reused connection dies before any answer; for a call that
    /// changes something, that second send must be the caller's decision, never libcurl's.
    public var freshConnection = false
    /// Go through the client's proxy (``ProxySettings``: `https_proxy`, `http_proxy`,
    /// `NO_PROXY`, …). Off for link-local services such as IMDS, which a proxy cannot reach.
    public var useProxy: Bool

    public init(
        _ method: HTTPMethod, _ url: String, headers: [(name: String, value: String)] = [], body: [UInt8] = [],
        connectTimeout: Duration = .seconds(5), timeout: Duration = .seconds(30),
        maximumResponseBytes: Int = 1 << 20, followRedirects: Bool = false, useProxy: Bool = true
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.maximumResponseBytes = maximumResponseBytes
        self.followRedirects = followRedirects
        self.useProxy = useProxy
    }
}

public struct HTTPResponse: Sendable {
    public let status: Int
    /// In the order received; names as the server wrote them.
    public let headers: [(name: String, value: String)]
    public let body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first header with this name, compared case-insensitively.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }

    /// The body as text; invalid UTF-8 is replaced, never trusted.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// This response if its status is 2xx, else ``HTTPError/status(url:code:excerpt:)``.
    public func requireSuccess(from url: String) throws(HTTPError) -> HTTPResponse {
        guard (200..<300).contains(status) else {
            throw .status(url: url, code: status, excerpt: String(text.prefix(200)))
        }
        return self
    }
}

/// Why an exchange failed, in the terms the retry policy and an operator need.
public enum HTTPError: SnapmountError, Equatable {
    case invalidRequest(String)
    case invalidURL(url: String, detail: String)
    case resolve(url: String, detail: String)
    case connect(url: String, detail: String)
    case timeout(url: String, after: Duration)
    case tls(url: String, detail: String)
    /// Reset, closed early, or an empty reply.
    case connectionLost(url: String, detail: String)
    case tooLarge(url: String, limit: Int)
    /// An https URL redirected to plain http: never followed.
    case insecureRedirect(url: String)
    case status(url: String, code: Int, excerpt: String)
    case transport(url: String, code: Int, detail: String)

    public var exitStatus: ExitStatus {
        switch self {
        case .invalidRequest: .internalError
        case .invalidURL: .configuration
        default: .unavailable
        }
    }

    /// Worth another attempt: the network or the server may recover (DESIGN.md §5 rule 5).
    public var isTransient: Bool {
        switch self {
        case .resolve, .connect, .timeout, .connectionLost: true
        case .status(_, let code, _): code >= 500 || code == 429
        case .transport: true
        case .invalidRequest, .invalidURL, .tls, .tooLarge, .insecureRedirect: false
        }
    }

    public var description: String {
        switch self {
        case .invalidRequest(let detail): "invalid HTTP request: \(detail)"
        case .invalidURL(let url, let detail): "invalid URL \(url.quotedForMessage()): \(detail)"
        case .resolve(let url, let detail): "\(url): cannot resolve the host name (\(detail))"
        case .connect(let url, let detail): "\(url): cannot connect (\(detail))"
        case .timeout(let url, let after): "\(url): no complete answer within \(DurationText.format(after))"
        case .tls(let url, let detail): "\(url): TLS failed, the certificate was not accepted or the handshake broke (\(detail))"
        case .connectionLost(let url, let detail): "\(url): the connection broke before a complete answer (\(detail))"
        case .tooLarge(let url, let limit): "\(url): the answer is larger than \(limit) bytes; transfer aborted"
        case .insecureRedirect(let url): "\(url) redirected to a plain http:// URL; what came over https is never fetched over http"
        case .status(let url, let code, let excerpt):
            "\(url): HTTP \(code)" + (excerpt.isEmpty ? "" : ", body starts \(excerpt.quotedForMessage())")
        case .transport(let url, let code, let detail): "\(url): transfer failed (libcurl error \(code): \(detail))"
        }
    }
}

// curl_global_init is not thread-safe; a global's lazy initializer runs exactly once.
private let curlGlobalInitResult: CURLcode = ccurl_global_init_default()

/// A synchronous HTTP client over one libcurl easy handle, reused so that connections are
/// kept alive between calls. TLS peer and host verification are always on; there is no
/// switch to turn them off. Not thread-safe: one client per thread.
public final class HTTPClient {
    private var handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>
    /// Extra CA certificates to trust (PEM file), in place of the system bundle; for a
    /// private release server or a test's own CA. This adds trust; it never removes checks.
    public let trustedCertificatesFile: String?
    /// The proxies the environment names; libcurl is never left to read the environment itself.
    public let proxy: ProxySettings
    public let userAgent: String

    public init(trustedCertificatesFile: String? = nil, proxy: ProxySettings = ProxySettings()) throws(HTTPError) {
        guard curlGlobalInitResult == CURLE_OK else { throw .invalidRequest("libcurl failed to initialise") }
        guard let handle = curl_easy_init() else { throw .invalidRequest("libcurl could not create a handle") }
        self.handle = handle
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        self.errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        self.trustedCertificatesFile = trustedCertificatesFile
        self.proxy = proxy
        self.userAgent = "snapmount/\(SnapmountVersion.current)"
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// Performs the exchange. Any HTTP status is a response; transport failures throw.
    /// The corresponding C function is `curl_easy_perform`.
    public func send(_ request: HTTPRequest) throws(HTTPError) -> HTTPResponse {
        for (name, value) in request.headers {
            guard !name.isEmpty, !(name + value).unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }),
                !name.contains(":")
            else { throw .invalidRequest("header \(name.quotedForMessage()) holds a line break or colon") }
        }
        guard !request.url.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }) else {
            throw .invalidURL(url: request.url, detail: "it contains white space or a control character")
        }

        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let transfer = Transfer(limit: request.maximumResponseBytes)
        let context = Unmanaged.passUnretained(transfer).toOpaque()

        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        var lines = request.headers.map { "\($0.name): \($0.value)" }
        let names = Set(request.headers.map { $0.name.lowercased() })
        if !names.contains("expect") { lines.append("Expect:") }  // no 100-continue round trip
        if !names.contains("content-type") { lines.append("Content-Type:") }  // no implicit form type
        for line in lines {
            guard let appended = curl_slist_append(headerList, line) else {
                throw .invalidRequest("libcurl could not allocate a header list")
            }
            headerList = appended
        }

        var status = CURLE_OK
        func set(_ code: CURLcode) { if status == CURLE_OK { status = code } }
        set(ccurl_setopt_string(handle, CURLOPT_URL, request.url))
        set(ccurl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        if request.freshConnection { set(ccurl_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1)) }
        set(ccurl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        set(ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(request.connectTimeout)))
        set(ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Self.milliseconds(request.timeout)))
        set(ccurl_setopt_off_t(handle, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(request.maximumResponseBytes)))
        set(ccurl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1))
        set(ccurl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2))
        if let file = trustedCertificatesFile { set(ccurl_setopt_string(handle, CURLOPT_CAINFO, file)) }
        if request.useProxy, let proxy = proxy.proxy(forURL: request.url) {
            set(ccurl_setopt_string(handle, CURLOPT_PROXY, proxy))
            if let noProxy = self.proxy.noProxy { set(ccurl_setopt_string(handle, CURLOPT_NOPROXY, noProxy)) }
        } else {
            // An empty proxy also keeps libcurl from reading the environment's.
            set(ccurl_setopt_string(handle, CURLOPT_PROXY, ""))
        }
        if request.followRedirects {
            set(ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1))
            set(ccurl_setopt_long(handle, CURLOPT_MAXREDIRS, 3))
            // What TLS protects is never handed to a plain-text server by a redirect.
            let secure = request.url.lowercased().hasPrefix("https://")
            set(ccurl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, secure ? "https" : "http,https"))
        }
        set(ccurl_setopt_string(handle, CURLOPT_USERAGENT, userAgent))
        set(ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
        set(ccurl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, receiveBody))
        set(ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        set(ccurl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, receiveHeader))
        set(ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
        switch request.method {
        case .get:
            set(ccurl_setopt_long(handle, CURLOPT_HTTPGET, 1))
        case .post, .put:
            set(ccurl_setopt_long(handle, CURLOPT_POST, 1))
            set(ccurl_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)))
            // COPYPOSTFIELDS copies the bytes, so they need not outlive this call.
            if request.body.isEmpty {
                set(ccurl_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, ""))
            } else {
                request.body.withUnsafeBytes { body in
                    set(ccurl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: body.baseAddress)))
                }
            }
            if request.method == .put { set(ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, "PUT")) }
        }
        guard status == CURLE_OK else {
            throw .invalidRequest("libcurl rejected an option: \(String(cString: curl_easy_strerror(status)))")
        }

        let result = withExtendedLifetime(transfer) { curl_easy_perform(handle) }
        guard result == CURLE_OK else {
            let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(result))
            // A connection that timed out or broke may still carry a late answer: never reuse
            // it. A new handle starts with no connection cache at all.
            if let fresh = curl_easy_init() {
                curl_easy_cleanup(handle)
                handle = fresh
            }
            throw Self.classify(result, url: request.url, detail: detail, request: request,
                                bodyLimitExceeded: transfer.limitExceeded)
        }
        var code = 0
        _ = ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return HTTPResponse(status: code, headers: transfer.headers, body: transfer.body)
    }

    /// Maps a libcurl result to the error an operator and the retry policy understand.
    static func classify(_ code: CURLcode, url: String, detail: String, request: HTTPRequest,
                         bodyLimitExceeded: Bool) -> HTTPError {
        switch code {
        case CURLE_WRITE_ERROR where bodyLimitExceeded, CURLE_FILESIZE_EXCEEDED:
            return .tooLarge(url: url, limit: request.maximumResponseBytes)
        case CURLE_UNSUPPORTED_PROTOCOL where request.followRedirects && url.lowercased().hasPrefix("https://"):
            return .insecureRedirect(url: url)
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL:
            return .invalidURL(url: url, detail: detail)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .resolve(url: url, detail: detail)
        case CURLE_COULDNT_CONNECT:
            return .connect(url: url, detail: detail)
        case CURLE_OPERATION_TIMEDOUT:
            return .timeout(url: url, after: request.timeout)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
            CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
            CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CRL_BADFILE,
            CURLE_USE_SSL_FAILED, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_ENGINE_INITFAILED, CURLE_SSL_SHUTDOWN_FAILED:
            return .tls(url: url, detail: detail)
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_HTTP2,
            CURLE_HTTP2_STREAM:
            return .connectionLost(url: url, detail: detail)
        default:
            return .transport(url: url, code: Int(code.rawValue), detail: detail)
        }
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        Int(clamping: max(1, duration.wholeMilliseconds))
    }
}

/// What one transfer has received so far; libcurl's callbacks reach it through their
/// context pointer.
private final class Transfer {
    let limit: Int
    var body: [UInt8] = []
    var headers: [(name: String, value: String)] = []
    var limitExceeded = false

    init(limit: Int) {
        self.limit = limit
    }
}

/// CURLOPT_WRITEFUNCTION: returning less than offered aborts with CURLE_WRITE_ERROR.
private func receiveBody(_ data: UnsafeMutablePointer<CChar>, _ size: Int, _ count: Int,
                         _ context: UnsafeMutableRawPointer?) -> Int {
    guard let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    guard transfer.body.count + length <= transfer.limit else {
        transfer.limitExceeded = true
        return 0
    }
    data.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
        transfer.body.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
    }
    return length
}

/// CURLOPT_HEADERFUNCTION: one call per header line, the status line included.
private func receiveHeader(_ data: UnsafeMutablePointer<CChar>, _ size: Int, _ count: Int,
                           _ context: UnsafeMutableRawPointer?) -> Int {
    guard let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    let line = data.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
        String(decoding: UnsafeBufferPointer(start: bytes, count: length), as: UTF8.self)
    }
    if line.hasPrefix("HTTP/") {
        transfer.headers = []  // a new response: after a redirect, a 100 or a proxy's CONNECT
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].trimmingWhitespace()
        let value = line[line.index(after: colon)...].trimmingWhitespace()
        transfer.headers.append((name: name, value: value))
    }
    return length
}
