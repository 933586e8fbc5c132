import Foundation
import Hummingbird
import Logging
import NIOCore
import SnapmountTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The routes the HTTP client tests use: echo, status codes, slow, large, chunked.
func echoRouter() -> Router<BasicRequestContext> {
    let router = Router()
    let echo: @Sendable (Request, BasicRequestContext) async throws -> String = { request, _ in
        var text = "method=\(request.method.rawValue)\n"
        for field in request.headers { text += "\(field.name.canonicalName.lowercased()): \(field.value)\n" }
        let body = try await request.body.collect(upTo: 1 << 20)
        return text + "\n" + String(buffer: body)
    }
    router.get("/echo", use: echo)
    router.post("/echo", use: echo)
    router.put("/echo", use: echo)
    router.get("/status/{code}") { _, context -> Response in
        let code = context.parameters.get("code", as: Int.self) ?? 500
        return Response(status: .init(code: code), body: .init(byteBuffer: ByteBuffer(string: "failure body \(code)")))
    }
    router.get("/slow") { _, _ -> String in
        try await Task.sleep(for: .seconds(5))
        return "late"
    }
    router.get("/bytes/{count}") { _, context -> Response in
        let count = context.parameters.get("count", as: Int.self) ?? 0
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(repeating: UInt8(ascii: "x"), count: count)))
    }
    router.get("/chunked/{count}") { _, context -> Response in
        let count = context.parameters.get("count", as: Int.self) ?? 0
        return Response(status: .ok, body: ResponseBody { writer in
            var left = count
            while left > 0 {
                let n = min(left, 8192)
                try await writer.write(ByteBuffer(repeating: UInt8(ascii: "y"), count: n))
                left -= n
            }
            try await writer.finish(nil)
        })
    }
    return router
}


/// ``withHTTPServer(_:_:)`` with ``echoRouter()``.
func withEchoServer<T: Sendable>(_ body: @escaping @Sendable (_ port: Int) async throws -> T) async throws -> T {
    try await withHTTPServer(echoRouter(), body)
}

enum TestServerError: Error {
    case noPort
    case socket(String)
    case openssl(String)
}

/// A TCP listener on 127.0.0.1 that answers each connection with canned bytes and then
/// closes it — or resets it — to produce the broken exchanges a real server never would.
final class RawTCPServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32

    init(reply: [UInt8], reset: Bool) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        guard fd >= 0 else { throw TestServerError.socket("socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw TestServerError.socket("bind/listen") }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let listener = fd
        let thread = Thread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = read(client, &buffer, buffer.count)
                _ = reply.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
                if reset {
                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                    _ = setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                }
                close(client)
            }
        }
        thread.start()
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// `openssl s_server -www` on 127.0.0.1 with a throwaway self-signed certificate.
final class TLSTestServer: @unchecked Sendable {
    let port: Int
    let certificate: String
    let directory: URL
    private let process: Child

    /// - Parameters:
    ///   - subjectAltName: what the certificate vouches for, e.g. `IP:127.0.0.1`.
    ///   - redirectTo: answer every GET with `302 Found` to this URL (a Python server) instead
    ///     of `openssl s_server -www`'s status page.
    init(subjectAltName: String, redirectTo: String? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("snapmount-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let request = try Child.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate,
                                                         "-days", "1", "-subj", "/CN=snapmount-test", "-addext", "subjectAltName=\(subjectAltName)"],
                                    environment: Child.inherited)
        guard request.status == 0 else { throw TestServerError.openssl("req failed: \(request.stderr)") }

        if let redirectTo {
            let script = """
                import http.server, ssl, sys
                class Redirect(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        self.send_response(302); self.send_header("Location", sys.argv[3]); self.send_header("Content-Length", "0"); self.end_headers()
                    def log_message(self, *args): pass
                server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(sys.argv[1], sys.argv[2])
                server.socket = context.wrap_socket(server.socket, server_side=True)
                print(f"ACCEPT 127.0.0.1:{server.server_address[1]}", flush=True)
                server.serve_forever()
                """
            process = try Child("/usr/bin/python3", ["-c", script, certificate, key, redirectTo], environment: Child.inherited, capture: .outputOnly)
        } else {
            process = try Child("/usr/bin/openssl", ["s_server", "-accept", "127.0.0.1:0", "-cert", certificate, "-key", key, "-www"],
                                environment: Child.inherited, capture: .outputOnly)
        }
        var text = ""
        var found: Int?
        while found == nil {
            guard let data = process.readSome() else { throw TestServerError.openssl("s_server exited: \(text)") }
            text += String(decoding: data, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ACCEPT ") }),
               let colon = line.lastIndex(of: ":") {
                found = Int(line[line.index(after: colon)...])
            }
        }
        port = found ?? 0
    }

    deinit {
        process.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
