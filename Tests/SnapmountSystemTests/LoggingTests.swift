import Foundation
import Logging
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

@Suite("Logging")
struct LoggingTests {
    @Test("plain lines name the program and, from warnings up, the level")
    func plain() {
        #expect(LogLine.format(level: .info, message: "mounted /release", metadata: [:], style: .plain) == "snapmount: mounted /release\n")
        #expect(LogLine.format(level: .error, message: "no device", metadata: [:], style: .plain) == "snapmount: error: no device\n")
        #expect(LogLine.format(level: .warning, message: "slow", metadata: [:], style: .plain) == "snapmount: warning: slow\n")
    }

    @Test("journal lines carry the syslog priority", arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func journal(level: Logger.Level, priority: Int) {
        #expect(LogLine.format(level: level, message: "m", metadata: [:], style: .journal) == "<\(priority)>m\n")
    }

    @Test("one line per event: line breaks are escaped, metadata is sorted and quoted when needed")
    func oneLine() {
        let line = LogLine.format(level: .info, message: "a\nb\r\u{1b}", metadata: ["volume": "vol-1", "step": "attach volume"], style: .plain)
        #expect(line == "snapmount: a\\nb\\r\\u{1b} step=\"attach volume\" volume=vol-1\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }

    @Test("C1 controls and the Unicode line and paragraph separators are escaped too; a long message is capped")
    func escapes() {
        let line = LogLine.format(level: .info, message: "a\u{85}b\u{9b}c\u{2028}d\u{2029}e\u{7f}", metadata: [:], style: .plain)
        #expect(line == "snapmount: a\\u{85}b\\u{9b}c\\u{2028}d\\u{2029}e\\u{7f}\n")
        let long = LogLine.format(level: .error, message: String(repeating: "x", count: 100_000) + "\nEND", metadata: [:], style: .plain)
        #expect(long.utf8.count < LogLine.messageLimit + 100)
        #expect(long.hasSuffix("… (97956 more bytes)\n"))
        #expect(!long.contains("END"))
    }

    @Test("secrets never reach a line: the Secret type and secret-looking metadata keys")
    func noSecrets() {
        let sink = CapturedLines()
        let logger = Logger(label: "t") { _ in SnapmountLogHandler(style: .plain, level: .trace, sink: sink) }
        let secret = Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: secret, sessionToken: Secret("SESSION-TOKEN"))
        logger.info("credentials \(credentials) secret \(secret)")
        logger.debug("signed", metadata: ["x-amz-security-token": "SESSION-TOKEN", "secretAccessKey": "\(secret.exposedValue())", "credentials": "\(credentials)"])
        #expect(sink.lines.count == 2)
        for line in sink.lines {
            #expect(!line.contains("wJalrXUtnFEMI"), "\(line)")
            #expect(!line.contains("SESSION-TOKEN"), "\(line)")
        }
        #expect(sink.lines[0].contains("<redacted>"))
    }

    @Test("the level filters events")
    func levels() {
        let sink = CapturedLines()
        let logger = Logger(label: "t") { _ in SnapmountLogHandler(style: .journal, level: .notice, sink: sink) }
        logger.info("hidden")
        logger.notice("shown")
        #expect(sink.lines == ["<5>shown\n"])
    }

    @Test("JOURNAL_STREAM counts only when it names the very file stderr is")
    func journalDetection() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("snapmount-journal-\(UUID().uuidString)").path
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        #expect(fd >= 0)
        defer {
            close(fd)
            unlink(path)
        }
        var status = stat()
        #expect(fstat(fd, &status) == 0)
        let matching = "\(status.st_dev):\(status.st_ino)"
        #expect(LogStyle.detect(journalStream: matching, fileDescriptor: fd) == .journal)
        #expect(LogStyle.detect(journalStream: "\(status.st_dev):\(status.st_ino + 1)", fileDescriptor: fd) == .plain)
        #expect(LogStyle.detect(journalStream: "garbage", fileDescriptor: fd) == .plain)
        #expect(LogStyle.detect(journalStream: nil, fileDescriptor: fd) == .plain)
    }
}

@Suite("Configuration loading")
struct ConfigLoaderTests {
    static func temporaryFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("snapmount-\(UUID().uuidString).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("reads the named file and layers it")
    func readsFile() throws {
        let path = try Self.temporaryFile("source = http://releasesrvr/snap.txt\nlabel = rel\n")
        defer { unlink(path) }
        let configuration = try ConfigLoader.load(configPath: path, environment: try AgentEnvironment(["SNAPMOUNT_LABEL": "env"]), options: [:])
        #expect(configuration.source.description == "http://releasesrvr/snap.txt")
        #expect(configuration.label.text == "env")
        #expect(configuration.settings[.source]?.origin == .file(path: path, line: 1))
    }

    @Test("SNAPMOUNT_CONFIG names the file when --config does not")
    func environmentPath() throws {
        let path = try Self.temporaryFile("source = http://h/snap.txt\n")
        defer { unlink(path) }
        let configuration = try ConfigLoader.load(configPath: nil, environment: try AgentEnvironment(["SNAPMOUNT_CONFIG": path]), options: [:])
        #expect(configuration.settings[.source]?.origin == .file(path: path, line: 1))
    }

    @Test("a named file that is missing is an error; the default file may be absent")
    func missing() throws {
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigLoader.load(configPath: "/nonexistent/snapmount.conf", environment: AgentEnvironment(), options: [.source: "http://h/x"])
        }
        #expect(error.description.contains("/nonexistent/snapmount.conf"))
        #expect(error.exitStatus == .configuration)
        let configuration = try ConfigLoader.load(configPath: nil, environment: AgentEnvironment(), options: [.source: "http://h/x"],
                                                  defaultPath: "/nonexistent/snapmount.conf")
        #expect(configuration.source.description == "http://h/x")
    }

    @Test("file problems and value problems are all reported, with the file's path")
    func allProblems() throws {
        let path = try Self.temporaryFile("source = http://h/x\nbogus = 1\nlabel = a b\n")
        defer { unlink(path) }
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigLoader.load(configPath: path, environment: AgentEnvironment(), options: [:])
        }
        #expect(error.issues.map(\.origin) == [.file(path: path, line: 2), .file(path: path, line: 3)])
    }

    @Test("a file larger than any configuration is refused, not read into memory")
    func tooLarge() throws {
        let path = try Self.temporaryFile(String(repeating: "# padding\n", count: 40_000))
        defer { unlink(path) }
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigLoader.load(configPath: path, environment: AgentEnvironment(), options: [.source: "http://h/x"])
        }
        #expect(error.description.contains("larger than"))
    }
}
