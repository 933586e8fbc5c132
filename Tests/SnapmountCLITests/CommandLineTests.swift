import Foundation
import Hummingbird
import SnapmountCore
import SnapmountTestSupport
import Testing

/// Runs the real `snapmount` binary that `swift build` put beside this test bundle.
struct Snapmount {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static let binary: URL = {
        let bundle = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        return bundle.deletingLastPathComponent().appendingPathComponent("snapmount")
    }()

    /// An empty configuration file, so that no /etc/snapmount.conf on the machine is read.
    static let emptyConfig: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("snapmount-cli-empty.conf").path
        _ = FileManager.default.createFile(atPath: path, contents: Data())
        return path
    }()

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        // A clean environment: only what the test gives, so the machine's own variables
        // and /etc/snapmount.conf never leak in.
        let result = try Child.run(binary.path, arguments, environment: ["PATH": "/usr/bin:/bin", "SNAPMOUNT_CONFIG": emptyConfig]
            .merging(environment) { _, new in new })
        TestLog.write(result.stdout + result.stderr)
        return Result(status: result.status, stdout: result.stdout, stderr: result.stderr)
    }

    static func temporaryConfig(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("snapmount-cli-\(UUID().uuidString).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

@Suite("snapmount command line")
struct CommandLineTests {
    @Test("--version names snapmount and the C libraries it runs with")
    func version() throws {
        let result = try Snapmount.run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("snapmount \(SnapmountVersion.current) (libcurl "))
        #expect(result.stdout.contains("OpenSSL"))
        #expect(result.stdout.contains("libblkid"))
        #expect(result.stdout.contains("libxml2"))
    }

    @Test("--help describes the tool, its precedence rule and its exit codes")
    func help() throws {
        let result = try Snapmount.run(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("OVERVIEW: Mount the current release's EBS snapshot"))
        #expect(result.stdout.contains("config"))
        #expect(result.stdout.contains("78"))
    }

    @Test("every configuration key is a long option, with its environment variable in the help")
    func everyKeyIsAnOption() throws {
        let result = try Snapmount.run(["config", "--help"])
        #expect(result.status == 0)
        for key in ConfigKey.allCases {
            #expect(result.stdout.contains(key.optionName + " <"), "\(key.optionName)")
            #expect(result.stdout.contains(key.environmentVariable), "\(key.environmentVariable)")
        }
        #expect(result.stdout.contains("--config <path>"))
    }

    @Test("a broken configuration file: exit 78 and one line per problem, each with file and line")
    func brokenFile() throws {
        let path = try Snapmount.temporaryConfig("""
            source = http://releasesrvr/snap.txt
            mount_pont = /release
            device-timeout = 5 parsecs
            mount-point = /my release
            """)
        defer { unlink(path) }
        let result = try Snapmount.run(["config", "--config", path])
        #expect(result.status == 78)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.count == 3 && lines[0].hasPrefix("snapmount: error: \(path):2: unknown key \"mount_pont\""))
        #expect(lines.count == 3 && lines[1].hasPrefix("snapmount: error: \(path):3: device-timeout: \"5 parsecs\""))
        #expect(lines.count == 3 && lines[2].hasPrefix("snapmount: error: \(path):4: mount-point: \"/my release\""))
    }

    @Test("option > environment > file > default, as the binary sees them")
    func precedence() throws {
        let path = try Snapmount.temporaryConfig("source = http://file/snap.txt\nlabel = fromfile\ndevice = /dev/sdg\n")
        defer { unlink(path) }
        let result = try Snapmount.run(["config", "--config", path, "--device", "/dev/sdh"],
                                       environment: ["SNAPMOUNT_LABEL": "fromenv", "SNAPMOUNT_DEVICE": "/dev/sdj"])
        #expect(result.status == 0, "\(result.stderr)")
        // Keys are padded to the longest key's width.
        let width = ConfigKey.allCases.map(\.rawValue.count).max() ?? 0
        func line(_ key: String, _ rest: String) -> String { key + String(repeating: " ", count: width - key.count) + " = " + rest + "\n" }
        #expect(result.stdout.contains(line("source", "http://file/snap.txt   # \(path):1")))
        #expect(result.stdout.contains(line("label", "fromenv   # environment SNAPMOUNT_LABEL")))
        #expect(result.stdout.contains(line("device", "/dev/sdh   # option --device")))
        #expect(result.stdout.contains(line("mount-point", "/release   # default")))
    }

    @Test("the output of `snapmount config` is itself a valid configuration file")
    func outputIsAConfigFile() throws {
        let result = try Snapmount.run(["config", "--source", "http://releasesrvr/snap.txt", "--tags", "team=web"])
        #expect(result.status == 0, "\(result.stderr)")
        let path = try Snapmount.temporaryConfig(result.stdout)
        defer { unlink(path) }
        let again = try Snapmount.run(["config", "--config", path])
        #expect(again.status == 0, "\(again.stderr)\n\(result.stdout)")
        let values = { (text: String) in text.split(separator: "\n").map { $0.split(separator: "#").first ?? "" } }
        #expect(values(again.stdout) == values(result.stdout))
    }

    @Test("an explicitly named file that is missing is a configuration error")
    func missingFile() throws {
        let result = try Snapmount.run(["config", "--config", "/nonexistent/snapmount.conf"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("/nonexistent/snapmount.conf"))
    }

    @Test("usage errors exit 64")
    func usage() throws {
        let result = try Snapmount.run(["config", "--no-such-option"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--no-such-option"))
    }

    @Test("publish: each bad option exits 64 and names itself and what is expected", arguments: [
        (["--output", "snap.txt"], "--output"), (["--output", "/w/snap.txt", "--volume", "vol-1"], "--volume"),
        (["--output", "/w/snap.txt", "--keep", "1"], "--keep must be at least 2"),
        (["--output", "/w/snap.txt", "--freeze-limit", "5m"], "--freeze-limit"),
        (["--output", "/w/snap.txt", "--release", "a;b"], "--release"), (["--output", "/w/snap.txt", "--mount-point", "/"], "--mount-point"),
        ([], "--output"),
    ])
    func publishUsage(arguments: [String], named: String) throws {
        let result = try Snapmount.run(["publish"] + arguments)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains(named), "\(result.stderr)")
    }

    @Test("push: each bad option exits 64 and names itself and what is expected", arguments: [
        (["--published", "/w/snap.txt"], "--group"), (["--group", "web"], "--published"),
        (["--group", "web", "--published", "snap.txt"], "--published"), (["--group", "", "--published", "/w/snap.txt"], "--group"),
        (["--group", "web", "--published", "/w/snap.txt", "--parallel", "0"], "--parallel must be from 1 to 64"),
        (["--group", "web", "--published", "/w/snap.txt", "--user", "-oProxyCommand=x"], "--user"),
        (["--group", "web", "--published", "/w/snap.txt", "--ssh", " "], "--ssh"),
        (["--group", "web", "--published", "/w/snap.txt", "--mount-point", "release"], "--mount-point"),
        (["--group", "web", "--published", "/w/snap.txt", "--launch-wait", "2h"], "--launch-wait"),
    ])
    func pushUsage(arguments: [String], named: String) throws {
        let result = try Snapmount.run(["push"] + arguments)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains(named), "\(result.stderr)")
    }

    @Test("an inherited JOURNAL_STREAM that is not stderr gives plain lines")
    func plainWhenNotJournal() throws {
        let result = try Snapmount.run(["config", "--source", "ftp://x"], environment: ["JOURNAL_STREAM": "1:1"])
        #expect(result.status == 78)
        #expect(result.stderr.hasPrefix("snapmount: error: option --source: source: \"ftp://x\""))
    }
}

@Suite("snapmount status through a proxy")
struct ProxyTests {
    @Test("HTTP proxies come from the environment, as libcurl reads them; NO_PROXY is honoured")
    func proxyFromEnvironment() async throws {
        let closed = try ClosedPort()
        let router = Router()
        router.get("/snap.txt") { request, _ -> String in
            // Only a proxy sees an absolute request target for another host.
            request.head.authority == "127.0.0.1:\(closed.port)" ? "snap-0123456789abcdef0\n" : "snap-ffffffffffffffff0\n"
        }
        let source = "http://127.0.0.1:\(closed.port)/snap.txt"
        let (proxied, direct) = try await withHTTPServer(router) { port in
            try await onThread {
                let proxied = try Snapmount.run(["status", "--source", source], environment: ["http_proxy": "http://127.0.0.1:\(port)"])
                let direct = try Snapmount.run(["status", "--source", source],
                                               environment: ["http_proxy": "http://127.0.0.1:\(port)", "NO_PROXY": "127.0.0.1"])
                return (proxied, direct)
            }
        }
        #expect(proxied.status == 0, "\(proxied.stderr)")
        #expect(proxied.stdout.contains("source:    snap-0123456789abcdef0"), "\(proxied.stdout)")
        #expect(direct.stdout.contains("source:    unavailable"), "\(direct.stdout)")
        withExtendedLifetime(closed) {}
    }
}
