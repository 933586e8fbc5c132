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

    static var binary: URL { snapmountBinary }

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

/// The expected --help texts, one file a command in Tests/SnapmountCLITests/Help: a change to
/// a help text is a change to these files, read in review like any other.
enum Help {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Help")

    static func text(_ command: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent("\(command).txt"), encoding: .utf8)
    }
}

/// Whole texts compared; a difference is shown at its first line, with both versions.
func expectSameText(_ actual: String, _ expected: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    guard actual != expected else { return }
    let got = actual.split(separator: "\n", omittingEmptySubsequences: false)
    let want = expected.split(separator: "\n", omittingEmptySubsequences: false)
    let line = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, want.count)
    Issue.record("""
        \(what): the text differs from line \(line + 1) on
        expected: \(line < want.count ? String(want[line]) : "(end)")
        actual:   \(line < got.count ? String(got[line]) : "(end)")
        --- whole actual text ---
        \(actual)
        """, sourceLocation: sourceLocation)
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

    @Test("--help of snapmount and of each command is the whole expected text (Tests/SnapmountCLITests/Help)",
          arguments: ["snapmount", "run", "status", "config", "publish", "push", "deploy", "rollback", "switch", "fleet"])
    func help(command: String) throws {
        let result = try Snapmount.run(command == "snapmount" ? ["--help"] : [command, "--help"])
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty, "\(result.stderr)")
        try expectSameText(result.stdout, try Help.text(command), "snapmount \(command == "snapmount" ? "" : command + " ")--help")
    }

    @Test("snapmount(8) EXIT STATUS lists every status of the one list --help is made from, and no other")
    func exitStatusesInManPage() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("man/snapmount.8")
        let text = try String(contentsOf: page, encoding: .utf8)
        let section = try #require(text.components(separatedBy: ".Sh EXIT STATUS\n").dropFirst().first?.components(separatedBy: "\n.Sh ").first)
        let codes = section.split(separator: "\n").filter { $0.hasPrefix(".It ") }.compactMap { Int32($0.dropFirst(4)) }
        #expect(codes == ExitStatus.allCases.map(\.rawValue))
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

    @Test("usage errors exit 64, and the whole message is the parser's")
    func usage() throws {
        let result = try Snapmount.run(["config", "--no-such-option"])
        #expect(result.status == 64)
        #expect(result.stdout.isEmpty)
        try expectSameText(result.stderr, """
            Error: Unknown option '--no-such-option'
            Usage: snapmount config <options>
              See 'snapmount config --help' for more information.

            """, "config --no-such-option")
    }

    /// A bad option's whole message: the error, the option's help line when the value was
    /// refused, then the command's usage line (the same as in its --help) and the pointer.
    static func usageMessage(_ command: String, _ error: String, help: String?) throws -> String {
        let usage = try #require(try Help.text(command).split(separator: "\n").first { $0.hasPrefix("USAGE: ") }).dropFirst("USAGE: ".count)
        return "Error: \(error)\n" + (help.map { "Help:  \($0)\n" } ?? "") + "Usage: \(usage)\n  See 'snapmount \(command) --help' for more information.\n"
    }

    static let output = "--output <path|ssm:/name>  Where instances read the id: the file the source URL serves, or ssm:/NAME (an SSM parameter)."
    static let published = "--published <path|ssm:/name>  Where publish wrote the id (its --output): the release here must be that one."
    static let pushMountPoint = "--mount-point <path>  The release's directory here, and where it is mounted on the instances. (default: /release)"
    static let notAbsolute = "it is not an absolute path; expected an absolute path without spaces or control characters, such as /release"

    @Test("publish: each bad option exits 64 with the whole message, naming the option, the value and what is expected", arguments: [
        (["--output", "snap.txt"], "The value 'snap.txt' is invalid for '--output <path|ssm:/name>': \(notAbsolute)", output),
        (["--output", "/w/snap.txt", "--volume", "vol-1"],
         "The value 'vol-1' is invalid for '--volume <vol-id>': it is not a volume id; expected vol- and 8 or 17 hex digits, such as vol-0123456789abcdef0",
         "--volume <vol-id>  The release volume (default: the EBS volume mounted at --mount-point)."),
        (["--output", "/w/snap.txt", "--keep", "1"], "--keep must be at least 2: the published snapshot and the previous one are always kept", nil),
        (["--output", "/w/snap.txt", "--freeze-limit", "5m"],
         "The value '5m' is invalid for '--freeze-limit <duration>': it is not a duration from 1s to 1m; expected such as 30s or 5m",
         "--freeze-limit <duration>  The longest the filesystem stays frozen while CreateSnapshot runs. (default: 10s)"),
        (["--output", "/w/snap.txt", "--release", "a;b"],
         "--release is not a release name: \"a;b\"; expected 1 to 128 letters, digits, spaces and _ . : / = + - @", nil),
        (["--output", "/w/snap.txt", "--mount-point", "/"],
         "The value '/' is invalid for '--mount-point <path>': it is the root directory; expected an absolute path without spaces or control characters, such as /release",
         "--mount-point <path>  Where the release volume is mounted. (default: /release)"),
        ([], "Missing expected argument '--output <path|ssm:/name>'", output),
    ] as [([String], String, String?)])
    func publishUsage(arguments: [String], error: String, help: String?) throws {
        let result = try Snapmount.run(["publish"] + arguments)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        try expectSameText(result.stderr, try Self.usageMessage("publish", error, help: help), "publish \(arguments)")
    }

    @Test("push: each bad option exits 64 with the whole message, naming the option, the value and what is expected", arguments: [
        (["--published", "/w/snap.txt"], "name at least one Auto Scaling group with --group", nil),
        (["--group", "web"], "Missing expected argument '--published <path|ssm:/name>'", published),
        (["--group", "web", "--published", "snap.txt"], "The value 'snap.txt' is invalid for '--published <path|ssm:/name>': \(notAbsolute)", published),
        (["--group", "", "--published", "/w/snap.txt"], "--group \"\" is not an Auto Scaling group name (1 to 255 characters, no control characters)", nil),
        (["--group", "web", "--published", "/w/snap.txt", "--parallel", "0"], "--parallel must be from 1 to 64", nil),
        (["--group", "web", "--published", "/w/snap.txt", "--user", "-oProxyCommand=x"], "Missing value for '--user <name>'",
         "--user <name>  The user to log in as on the instances."),
        (["--group", "web", "--published", "/w/snap.txt", "--user", "a;b"], "--user \"a;b\" is not a user name (letters, digits, . _ -)", nil),
        (["--group", "web", "--published", "/w/snap.txt", "--user=-oProxyCommand=x"],
         "--user \"-oProxyCommand=x\" is not a user name (letters, digits, . _ -)", nil),
        (["--group", "web", "--published", "/w/snap.txt", "--ssh", " "],
         "The value ' ' is invalid for '--ssh <command>': it names no command; expected a command and its options, such as \"ssh -i /root/.ssh/deploy\"",
         "--ssh <command>  The ssh command and its options, quoted as for a shell. (default: ssh)"),
        (["--group", "web", "--published", "/w/snap.txt", "--mount-point", "release"],
         "The value 'release' is invalid for '--mount-point <path>': \(notAbsolute)",
         pushMountPoint),
        (["--group", "web", "--published", "/w/snap.txt", "--mount-point", "/rel$ease"],
         "The value '/rel$ease' is invalid for '--mount-point <path>': it has characters a remote shell would read (rsync before 3.2.4 passes the path through it); expected letters, digits and / . _ + @ -",
         pushMountPoint),
        (["--group", "web", "--published", "/w/snap.txt", "--launch-wait", "2h"],
         "The value '2h' is invalid for '--launch-wait <duration>': it is not a duration from 0s to 1h; expected such as 30s or 5m",
         "--launch-wait <duration>  How long an instance still launching may stay unreachable. (default: 10m)"),
    ] as [([String], String, String?)])
    func pushUsage(arguments: [String], error: String, help: String?) throws {
        let result = try Snapmount.run(["push"] + arguments)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        try expectSameText(result.stderr, try Self.usageMessage("push", error, help: help), "push \(arguments)")
    }

    @Test("rollback: a bad --output exits 64 with the whole message")
    func rollbackUsage() throws {
        let result = try Snapmount.run(["rollback", "--output", "snap.txt"])
        #expect(result.status == 64, "\(result.stderr)")
        try expectSameText(result.stderr, try Self.usageMessage(
            "rollback", "The value 'snap.txt' is invalid for '--output <path|ssm:/name>': \(Self.notAbsolute)",
            help: "--output <path|ssm:/name>  The output publish writes: the file the source URL serves, or ssm:/NAME."), "rollback --output snap.txt")
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
