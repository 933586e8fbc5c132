import CCurl
import Foundation
import SnapmountCore
import SnapmountTestSupport
import Testing

@testable import SnapmountSystem

/// The libcurl client against real servers on 127.0.0.1. (Proxies from the environment are
/// tested through the binary, in a child process: setting `http_proxy` here would redirect
/// every other test's requests.)
@Suite("HTTP client over libcurl", .serialized)
struct HTTPClientTests {
    @Test("GET, POST and PUT carry headers and body both ways")
    func methods() async throws {
        try await withEchoServer { port in
            try await onThread {
                let client = try HTTPClient()
                let base = "http://127.0.0.1:\(port)/echo"
                let get = try client.send(HTTPRequest(.get, base, headers: [("X-Test", "one two")]))
                #expect(get.status == 200)
                #expect(get.text.hasPrefix("method=GET\n"))
                #expect(get.text.contains("x-test: one two\n"))
                #expect(get.text.contains("user-agent: snapmount/\(SnapmountVersion.current)\n"))
                #expect(get.header("content-type")?.hasPrefix("text/plain") == true)

                let form = "Action=DescribeVolumes&Version=2016-11-15"
                let post = try client.send(HTTPRequest(.post, base, headers: [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")], body: Array(form.utf8)))
                #expect(post.text.hasPrefix("method=POST\n"))
                #expect(post.text.contains("content-type: application/x-www-form-urlencoded; charset=utf-8\n"))
                #expect(post.text.hasSuffix("\n\n" + form))
                #expect(!post.text.contains("expect:"))

                let put = try client.send(HTTPRequest(.put, base, headers: [("X-aws-ec2-metadata-token-ttl-seconds", "21600")]))
                #expect(put.text.hasPrefix("method=PUT\n"))
                #expect(put.text.contains("x-aws-ec2-metadata-token-ttl-seconds: 21600\n"))
                #expect(put.text.contains("content-length: 0\n"))
                #expect(!put.text.contains("content-type"))  // no implicit form type on a bare PUT
            }
        }
    }

    @Test("an HTTP error status is a response; requireSuccess turns it into a typed error with an excerpt")
    func statuses() async throws {
        try await withEchoServer { port in
            try await onThread {
                let client = try HTTPClient()
                let url = "http://127.0.0.1:\(port)/status/503"
                let response = try client.send(HTTPRequest(.get, url))
                #expect(response.status == 503)
                #expect(throws: HTTPError.status(url: url, code: 503, excerpt: "failure body 503")) {
                    try response.requireSuccess(from: url)
                }
                #expect(HTTPError.status(url: url, code: 503, excerpt: "").isTransient)
                #expect(!HTTPError.status(url: url, code: 404, excerpt: "").isTransient)
                #expect(try client.send(HTTPRequest(.get, "http://127.0.0.1:\(port)/status/404")).status == 404)
            }
        }
    }

    @Test("the total timeout bounds a server that never answers")
    func timeout() async throws {
        try await withEchoServer { port in
            try await onThread {
                let client = try HTTPClient()
                let url = "http://127.0.0.1:\(port)/slow"
                let clock = ContinuousClock()
                let started = clock.now
                #expect(throws: HTTPError.timeout(url: url, after: .milliseconds(300))) {
                    try client.send(HTTPRequest(.get, url, timeout: .milliseconds(300)))
                }
                #expect(clock.now - started < .seconds(3))
                #expect(HTTPError.timeout(url: url, after: .seconds(1)).isTransient)
                // The same handle keeps working after an aborted transfer.
                #expect(try client.send(HTTPRequest(.get, "http://127.0.0.1:\(port)/bytes/3")).text == "xxx")
            }
        }
    }

    @Test("a response over the cap aborts the transfer, with or without Content-Length", arguments: ["bytes", "chunked"])
    func sizeCap(kind: String) async throws {
        try await withEchoServer { port in
            try await onThread {
                let client = try HTTPClient()
                let small = try client.send(HTTPRequest(.get, "http://127.0.0.1:\(port)/\(kind)/4096", maximumResponseBytes: 4096))
                #expect(small.body.count == 4096)
                let url = "http://127.0.0.1:\(port)/\(kind)/1000000"
                #expect(throws: HTTPError.tooLarge(url: url, limit: 4096)) {
                    try client.send(HTTPRequest(.get, url, maximumResponseBytes: 4096))
                }
            }
        }
    }

    @Test("a refused connection is a connect error")
    func refused() async throws {
        let closed = try ClosedPort()
        let url = "http://127.0.0.1:\(closed.port)/"
        try await onThread {
            let error = try #require(throws: HTTPError.self) { try HTTPClient().send(HTTPRequest(.get, url)) }
            guard case .connect(let failedURL, _) = error else {
                Issue.record("expected a connect error, got \(error)")
                return
            }
            #expect(failedURL == url)
            #expect(error.isTransient)
            #expect(error.exitStatus == .unavailable)
        }
    }

    @Test("a reset, an empty reply and a truncated body are connection-lost errors", arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", false),
        ("", false),
        ("", true),
    ])
    func brokenExchanges(reply: String, reset: Bool) async throws {
        let server = try RawTCPServer(reply: Array(reply.utf8), reset: reset)
        let url = "http://127.0.0.1:\(server.port)/"
        try await onThread {
            let error = try #require(throws: HTTPError.self) { try HTTPClient().send(HTTPRequest(.get, url)) }
            guard case .connectionLost = error else {
                Issue.record("expected connection lost, got \(error)")
                return
            }
            #expect(error.isTransient)
        }
        withExtendedLifetime(server) {}
    }

    @Test("an https URL redirected to http is refused, not followed; an https redirect to https is followed")
    func noDowngrade() async throws {
        try await withEchoServer { port in
            let plain = "http://127.0.0.1:\(port)/snap.txt"
            let downgrade = try TLSTestServer(subjectAltName: "IP:127.0.0.1", redirectTo: plain)
            let upgrade = try TLSTestServer(subjectAltName: "IP:127.0.0.1", redirectTo: "https://127.0.0.1:\(downgrade.port)/x")
            let (certificate, downgradePort, upgradePort) = (downgrade.certificate, downgrade.port, upgrade.port)
            let upgradeCertificate = upgrade.certificate
            try await onThread {
                let error = try #require(throws: HTTPError.self) {
                    try HTTPClient(trustedCertificatesFile: certificate)
                        .send(HTTPRequest(.get, "https://127.0.0.1:\(downgradePort)/snap.txt", followRedirects: true))
                }
                #expect(error == .insecureRedirect(url: "https://127.0.0.1:\(downgradePort)/snap.txt"))
                #expect(!error.isTransient)
                #expect(error.exitStatus == .unavailable)
                // Without following, the 302 is an answer like any other.
                let unfollowed = try HTTPClient(trustedCertificatesFile: certificate)
                    .send(HTTPRequest(.get, "https://127.0.0.1:\(downgradePort)/snap.txt"))
                #expect(unfollowed.status == 302)
                // https → https is followed (then refused at the second hop's downgrade).
                let chain = try #require(throws: HTTPError.self) {
                    try HTTPClient(trustedCertificatesFile: upgradeCertificate)
                        .send(HTTPRequest(.get, "https://127.0.0.1:\(upgradePort)/", followRedirects: true))
                }
                guard case .tls = chain else {
                    // Each server has its own throwaway CA: the second hop is untrusted.
                    Issue.record("expected the followed https hop to be checked, got \(chain)")
                    return
                }
            }
            withExtendedLifetime((downgrade, upgrade)) {}
        }
    }

    @Test("TLS: an untrusted certificate is refused; a trusted CA is accepted; a wrong host name is refused")
    func tls() async throws {
        let server = try TLSTestServer(subjectAltName: "IP:127.0.0.1")
        let other = try TLSTestServer(subjectAltName: "DNS:release.example.com")
        let url = "https://127.0.0.1:\(server.port)/"
        let otherURL = "https://127.0.0.1:\(other.port)/"
        let certificate = server.certificate
        let otherCertificate = other.certificate
        try await onThread {
            let untrusted = try #require(throws: HTTPError.self) { try HTTPClient().send(HTTPRequest(.get, url)) }
            guard case .tls = untrusted else {
                Issue.record("expected a TLS error, got \(untrusted)")
                return
            }
            #expect(!untrusted.isTransient)

            let trusted = try HTTPClient(trustedCertificatesFile: certificate).send(HTTPRequest(.get, url))
            #expect(trusted.status == 200)
            #expect(trusted.text.contains("s_server"))

            // Trusted issuer, but the certificate names another host: host verification holds.
            let mismatch = try #require(throws: HTTPError.self) {
                try HTTPClient(trustedCertificatesFile: otherCertificate).send(HTTPRequest(.get, otherURL))
            }
            guard case .tls = mismatch else {
                Issue.record("expected a TLS error for a host mismatch, got \(mismatch)")
                return
            }
        }
        withExtendedLifetime((server, other)) {}
    }

    @Test("header injection and bad URLs are refused before anything is sent")
    func refusesBadRequests() throws {
        let client = try HTTPClient()
        #expect(throws: HTTPError.self) {
            try client.send(HTTPRequest(.get, "http://127.0.0.1:1/", headers: [("X-A", "b\r\nInjected: yes")]))
        }
        #expect(throws: HTTPError.self) { try client.send(HTTPRequest(.get, "http://127.0.0.1:1/a b")) }
        let scheme = try #require(throws: HTTPError.self) { try client.send(HTTPRequest(.get, "file:///etc/passwd")) }
        guard case .invalidURL = scheme else {
            Issue.record("expected an invalid URL error, got \(scheme)")
            return
        }
        #expect(scheme.exitStatus == .configuration)
    }

    @Test("libcurl results map to typed errors", arguments: [
        (CURLE_COULDNT_RESOLVE_HOST, "resolve"), (CURLE_COULDNT_RESOLVE_PROXY, "resolve"),
        (CURLE_COULDNT_CONNECT, "connect"), (CURLE_OPERATION_TIMEDOUT, "timeout"),
        (CURLE_PEER_FAILED_VERIFICATION, "tls"), (CURLE_SSL_CONNECT_ERROR, "tls"),
        (CURLE_FILESIZE_EXCEEDED, "tooLarge"), (CURLE_GOT_NOTHING, "connectionLost"),
        (CURLE_RECV_ERROR, "connectionLost"), (CURLE_PARTIAL_FILE, "connectionLost"),
        (CURLE_UNSUPPORTED_PROTOCOL, "invalidURL"), (CURLE_OUT_OF_MEMORY, "transport"),
    ])
    func classification(code: CURLcode, kind: String) {
        let error = HTTPClient.classify(code, url: "http://h/", detail: "d", request: HTTPRequest(.get, "http://h/"),
                                        bodyLimitExceeded: false)
        let name = Mirror(reflecting: error).children.first?.label
        #expect(name == kind, "\(error)")
        if kind == "resolve" { #expect(error.isTransient) }
    }
}
