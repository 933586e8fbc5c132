import Foundation
import SnapmountCore
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    @Test("snapmount.conf(5) is the one table of keys: each key the parser knows, in its order, and no other")
    func manPageKeys() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("man/snapmount.conf.5")
        let text = try String(contentsOf: page, encoding: .utf8)
        let keys = text.split(separator: "\n").filter { $0.hasPrefix(".It Cm ") }.compactMap { $0.split(separator: " ").dropFirst(2).first.map(String.init) }
        #expect(keys == ConfigKey.allCases.map(\.rawValue))
    }

    static let path = "/etc/snapmount.conf"

    static func parse(_ text: String) -> (ConfigFile, [ConfigIssue]) {
        ConfigFile.parse(Array(text.utf8), path: path)
    }

    static func resolve(_ text: String, environment: [String: String] = [:], options: [ConfigKey: String] = [:])
        throws(ConfigurationError) -> Configuration
    {
        let (file, issues) = parse(text)
        return try Configuration.resolve(file: file, fileIssues: issues, environment: environment, options: options)
    }

    static func issues(_ text: String, environment: [String: String] = [:], options: [ConfigKey: String] = [:]) -> [ConfigIssue] {
        do {
            _ = try resolve(text, environment: environment, options: options)
            return []
        } catch {
            return error.issues
        }
    }

    @Test("an unknown key, a bad duration and a mount point with a space: three errors, each with file and line")
    func threeErrors() {
        let found = Self.issues("""
            # snapmount configuration
            source = http://releasesrvr/snap.txt
            mount_pont = /release
            device-timeout = 5 parsecs
            mount-point = /my release
            """)
        #expect(found.count == 3)
        #expect(found.map(\.origin) == [3, 4, 5].map { ConfigOrigin.file(path: Self.path, line: $0) })
        #expect(found[0].description.hasPrefix("/etc/snapmount.conf:3: unknown key \"mount_pont\" (did you mean mount-point?)"))
        #expect(found[1].description.hasPrefix("/etc/snapmount.conf:4: device-timeout: \"5 parsecs\""))
        #expect(found[1].description.contains("expected a duration such as 50s"))
        #expect(found[2].description.hasPrefix("/etc/snapmount.conf:5: mount-point: \"/my release\" contains whitespace"))
    }

    @Test("defaults are DESIGN.md §3's table")
    func defaults() throws {
        let configuration = try Self.resolve("source = http://releasesrvr/snap.txt")
        #expect(configuration.mountPoint.text == "/release")
        #expect(configuration.label.text == "code_release")
        #expect(configuration.filesystem == .ext4)
        #expect(configuration.device.text == "/dev/sdf")
        #expect(configuration.volume == VolumeSettings())
        #expect(configuration.volume.type == .gp3)
        #expect(configuration.deviceTimeout == .seconds(50))
        #expect(configuration.snapshotOwner == .selfAccount)
        #expect(configuration.fstab.text == "/etc/fstab")
        #expect(configuration.mountOptions.options == ["defaults", "nofail"])
        #expect(configuration.settings[.label]?.origin == .defaultValue)
    }

    @Test("precedence: option > environment > file > default, with each origin recorded")
    func precedence() throws {
        let configuration = try Self.resolve(
            """
            source = http://file/snap.txt
            label = fromfile
            device = /dev/sdg
            """,
            environment: ["SNAPMOUNT_LABEL": "fromenv", "SNAPMOUNT_DEVICE": "/dev/sdh", "SNAPMOUNT_SOURCE": "http://env/snap.txt"],
            options: [.device: "/dev/sdi"])
        #expect(configuration.source.description == "http://env/snap.txt")
        #expect(configuration.label.text == "fromenv")
        #expect(configuration.device.text == "/dev/sdi")
        #expect(configuration.settings[.source]?.origin == .environment("SNAPMOUNT_SOURCE"))
        #expect(configuration.settings[.device]?.origin == .option("--device"))
        #expect(configuration.settings[.mountPoint]?.origin == .defaultValue)
        let fileOnly = try Self.resolve("source = http://file/snap.txt\nlabel = fromfile")
        #expect(fileOnly.settings[.label]?.origin == .file(path: Self.path, line: 2))
    }

    @Test("activation and health: a command read once into words, a URL or a command for the check, their timeouts; bad values named with their line")
    func activationKeys() throws {
        let configuration = try Self.resolve("""
            source = http://file/snap.txt
            activate = /bin/sh -c 'systemctl restart app && systemctl reload nginx'
            health-check = http://127.0.0.1:8080/health
            health-timeout = 90s
            """)
        let activation = configuration.activation
        #expect(activation.command?.words == ["/bin/sh", "-c", "systemctl restart app && systemctl reload nginx"])
        #expect(activation.command?.description == "/bin/sh -c 'systemctl restart app && systemctl reload nginx'")
        #expect(activation.commandTimeout == .seconds(300))
        #expect(activation.healthCheck == .url(try SourceURL(parsing: "http://127.0.0.1:8080/health")))
        #expect(activation.healthTimeout == .seconds(90))
        let command = try Self.resolve("source = http://file/snap.txt\nhealth-check = /usr/local/bin/check-app --quick")
        #expect(command.activation.healthCheck == .command(try HostCommand(parsing: "/usr/local/bin/check-app --quick")))
        #expect(command.activation.command == nil && command.activation.healthCheck != nil)

        let problems = Self.issues("source = http://file/snap.txt\nactivate = 'unclosed\nhealth-check = ftp://host/health\nhealth-timeout = 2h\nactivate-timeout = --x")
        let text = problems.map(\.description)
        #expect(text.count == 4, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(Self.path):2: activate:") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(Self.path):3: health-check:") && $0.contains("cannot fetch") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(Self.path):4: health-timeout:") && $0.contains("1s to 1h") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("\(Self.path):5: activate-timeout:") }, "\(text)")
        #expect(throws: InvalidValue.self) { try HostCommand(parsing: "--restart app") }
    }

    @Test("every key has its option and variable name")
    func names() {
        #expect(ConfigKey.mountPoint.optionName == "--mount-point")
        #expect(ConfigKey.mountPoint.environmentVariable == "SNAPMOUNT_MOUNT_POINT")
        #expect(ConfigKey.kmsKeyID.environmentVariable == "SNAPMOUNT_KMS_KEY_ID")
        #expect(ConfigKey.allCases.count == 22)
        for key in ConfigKey.allCases {
            #expect(key.environmentVariable.allSatisfy { $0.isUppercase || $0 == "_" })
        }
    }

    @Test("a bad value in a lower layer is reported even when an option overrides it")
    func overriddenBadValue() {
        let found = Self.issues("source = http://h/snap.txt\nlabel = has space", options: [.label: "fine"])
        #expect(found.map(\.origin) == [.file(path: Self.path, line: 2)])
    }

    @Test("a bad environment variable and a bad option are located")
    func locatedEnvironmentAndOption() {
        let found = Self.issues("source = http://h/snap.txt", environment: ["SNAPMOUNT_IOPS": "lots"], options: [.filesystem: "btrfs"])
        #expect(found.map(\.origin) == [.environment("SNAPMOUNT_IOPS"), .option("--filesystem")])
        #expect(found[1].description == "option --filesystem: filesystem: \"btrfs\" is not a supported filesystem; expected ext4 or xfs")
    }

    @Test("unknown SNAPMOUNT_ variables are errors; the device and state directories are not keys but are allowed; empty means unset")
    func environmentNames() throws {
        let found = Self.issues("source = http://h/snap.txt", environment: ["SNAPMOUNT_MOUNTPOINT": "/x", "SNAPMOUNT_DEV_DIR": "/tmp/dev", "OTHER": "x"])
        #expect(found.count == 1)
        #expect(found.first?.description == "environment SNAPMOUNT_MOUNTPOINT: unknown variable SNAPMOUNT_MOUNTPOINT (did you mean SNAPMOUNT_MOUNT_POINT?)")
        let configuration = try Self.resolve("source = http://h/snap.txt", environment: ["SNAPMOUNT_LABEL": ""])
        #expect(configuration.label.text == "code_release")
    }

    @Test("source is required")
    func sourceRequired() {
        let found = Self.issues("label = x")
        #expect(found.count == 1)
        #expect(found.first?.message.hasPrefix("source is required") == true)
    }

    @Test("file syntax: comments, blank lines, CRLF, a # inside a URL")
    func syntax() throws {
        let configuration = try Self.resolve(
            "# comment\r\n\r\n   source   =   http://h/snap.txt#frag   # trailing comment\r\n\tlabel=rel\t\r\nmount-point = /srv/release/\n")
        #expect(configuration.source.description == "http://h/snap.txt#frag")
        #expect(configuration.label.text == "rel")
        #expect(configuration.mountPoint.text == "/srv/release")
    }

    @Test("malformed lines", arguments: [
        ("just words", "expected `key = value`, found \"just words\""),
        ("= value", "expected `key = value`, found no key before ="),
        ("label =", "label: empty value; expected label — remove the line to use the default"),
        ("label = a\nlabel = b", "label is already set on line 1; set each key once"),
    ])
    func malformedLines(text: String, message: String) {
        let (_, found) = Self.parse(text)
        #expect(found.count == 1)
        #expect(found.first?.message == message)
    }

    @Test("a line that is not UTF-8 names its line")
    func notUTF8() {
        let (file, found) = ConfigFile.parse(Array("source = http://h/x\n".utf8) + [0x6c, 0x3d, 0xff, 0x0a], path: "/c")
        #expect(file.entries.count == 1)
        #expect(found == [ConfigIssue(.file(path: "/c", line: 2), "the line is not valid UTF-8 text")])
    }

    @Test("values that are accepted", arguments: [
        (ConfigKey.source, "https://releases.example.com:8443/path/snap.txt?x=1"),
        (.source, "http://[::1]:8080/snap.txt"),
        (.mountPoint, "/srv/release"), (.label, "code_release"), (.label, "A.b-c_9"),
        (.filesystem, "xfs"), (.device, "/dev/xvdf"), (.device, "/dev/sdp"),
        (.volumeType, "io2"), (.volumeSize, "40"), (.volumeSize, "100GiB"), (.volumeSize, "2T"),
        (.iops, "3000"), (.throughput, "125"), (.encrypted, "yes"), (.encrypted, "FALSE"),
        (.kmsKeyID, "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
        (.kmsKeyID, "alias/release"), (.tags, "team=web,env=prod"), (.tags, "Name=release server,x="),
        (.deviceTimeout, "50s"), (.deviceTimeout, "2m"), (.deviceTimeout, "1m30s"), (.deviceTimeout, "90"),
        (.deviceTimeout, "1500ms"), (.snapshotOwner, "self"), (.snapshotOwner, "123456789012"), (.snapshotOwner, "any"),
        (.initializationRate, "100"), (.initializationRate, "300"),
        (.fstab, "/etc/fstab"), (.mountOptions, "defaults,nofail,x-systemd.device-timeout=10s"),
    ])
    func accepted(key: ConfigKey, value: String) {
        var options: [ConfigKey: String] = [key: value]
        if key == .iops { options[.volumeType] = "gp3" }
        if key == .kmsKeyID { options[.encrypted] = "true" }
        if key == .volumeType && value.hasPrefix("io") { options[.iops] = "1000" }
        if key != .source { options[.source] = "http://h/snap.txt" }
        #expect(Self.issues("", options: options) == [])
    }

    @Test("values that are refused, each with what was expected", arguments: [
        (ConfigKey.source, "ftp://h/snap.txt", "an http:// or https:// URL"),
        (.source, "http:///snap.txt", "has no host"),
        (.source, "http://user:pw@h/snap.txt", "carries credentials"),
        (.source, "http://h:99999/snap.txt", "has an invalid port"),
        (.source, "http://h/snap .txt", "contains whitespace"),
        (.mountPoint, "release", "is not an absolute path"),
        (.mountPoint, "/", "is the root directory"),
        (.mountPoint, "/a/../b", "contains a . or .. component"),
        (.mountPoint, "/a//b", "contains an empty component"),
        (.mountPoint, "/a\tb", "contains whitespace"),
        (.mountPoint, "/a\u{7}b", "contains whitespace or a control character"),
        (.label, "seventeen-chars-x", "is 17 bytes long"),
        (.label, "a b", "has a character a label cannot carry safely"),
        (.label, "LABEL=x", "has a character"),
        (.filesystem, "ext3", "expected ext4 or xfs"),
        (.device, "/dev/sda", "is not an EBS device name"),
        (.device, "/dev/nvme1n1", "is not an EBS device name"),
        (.volumeType, "gp4", "one of gp3"),
        (.volumeSize, "0", "out of range"), (.volumeSize, "70000", "out of range"), (.volumeSize, "40MB", "not a size"),
        (.iops, "99", "out of range"), (.iops, "1e3", "not a whole number"),
        (.throughput, "3000", "out of range"),
        (.encrypted, "maybe", "is not a boolean"),
        (.kmsKeyID, "key with space", "not a KMS key identifier"),
        (.tags, "novalue", "without ="), (.tags, "aws:x=1", "reserved"), (.tags, "snapmount:instance-id=i", "reserved"),
        (.tags, "a=1,a=2", "repeats"), (.tags, "=x", "empty or over-long tag key"),
        (.deviceTimeout, "0s", "from 1s to 1h"), (.deviceTimeout, "2h", "from 1s to 1h"),
        (.deviceTimeout, "5 parsecs", "is not a duration"), (.deviceTimeout, "10x", "unknown unit"),
        (.deviceTimeout, "s", "is not a duration"),
        // No integer trap: sums and bare numbers that do not fit are invalid values (78).
        (.deviceTimeout, String(repeating: "999999999h", count: 3000), "is too long"),
        (.deviceTimeout, "99999999999999999999", "is too long"), (.runTimeout, "999999999h", "is too long"),
        (.runTimeout, "5s", "from 10s to 2h"), (.runTimeout, "3h", "from 10s to 2h"),
        (.initializationRate, "99", "from 100 to 300"), (.initializationRate, "301", "from 100 to 300"), (.initializationRate, "fast", "whole number"),
        (.snapshotOwner, "amazon", "self, a 12-digit"), (.snapshotOwner, "12345", "self, a 12-digit"), (.snapshotOwner, "Any", "self, a 12-digit"),
        (.fstab, "fstab", "not an absolute path"),
        (.mountOptions, "defaults, nofail", "contains whitespace"), (.mountOptions, "a,,b", "empty option"),
        (.mountOptions, "defaults\nUUID=x / ext4 defaults 0 0", "control character"),
    ])
    func refused(key: ConfigKey, value: String, fragment: String) {
        var options: [ConfigKey: String] = [key: value]
        if key != .source { options[.source] = "http://h/snap.txt" }
        let found = Self.issues("", options: options)
        #expect(found.count == 1, "\(key)=\(value)")
        #expect(found.first?.description.contains(fragment) == true, "\(found)")
        #expect(found.first?.origin == .option(key.optionName))
    }

    @Test("rules between keys", arguments: [
        ([ConfigKey.filesystem: "xfs", .label: "thirteen_char"], "xfs labels hold at most 12"),
        ([.volumeType: "gp2", .iops: "3000"], "does not take provisioned IOPS"),
        ([.volumeType: "io1"], "io1 needs iops"),
        ([.volumeType: "io2", .iops: "1000", .throughput: "500"], "only gp3 volumes take a throughput"),
        ([.kmsKeyID: "alias/x"], "needs encrypted = true"),
        ([.kmsKeyID: "alias/x", .encrypted: "false"], "needs encrypted = true"),
    ])
    func crossField(options: [ConfigKey: String], fragment: String) {
        var all = options
        all[.source] = "http://h/snap.txt"
        let found = Self.issues("", options: all)
        #expect(found.count == 1)
        #expect(found.first?.description.contains(fragment) == true, "\(found)")
    }

    @Test("typed values come through")
    func typedValues() throws {
        let configuration = try Self.resolve(
            """
            source = https://h/snap.txt
            volume-type = io2
            iops = 4000
            volume-size = 1T
            encrypted = on
            kms-key-id = alias/rel
            tags = team=web, env = prod
            snapshot-owner = 123456789012
            device-timeout = 1m30s
            """)
        #expect(configuration.source.description.hasPrefix("https://") && !configuration.source.isUnauthenticated)
        #expect(configuration.volume.type == .io2)
        #expect(configuration.volume.iops == 4000)
        #expect(configuration.volume.sizeGiB == 1024)
        #expect(configuration.volume.encrypted == true)
        #expect(configuration.volume.kmsKeyID?.text == "alias/rel")
        #expect(configuration.volume.tags == [VolumeTag(key: "team", value: "web"), VolumeTag(key: "env", value: "prod")])
        #expect(configuration.snapshotOwner == .account("123456789012"))
        #expect(configuration.deviceTimeout == .seconds(90))
    }

    @Test("durations read and write", arguments: [
        ("50s", Duration.seconds(50), "50s"), ("2m", .seconds(120), "2m"), ("1m30s", .seconds(90), "1m30s"),
        ("500ms", .milliseconds(500), "500ms"), ("1h", .seconds(3600), "1h"), ("90", .seconds(90), "1m30s"),
        ("2min", .seconds(120), "2m"), ("1s500ms", .milliseconds(1500), "1s500ms"),
    ])
    func durations(text: String, value: Duration, formatted: String) throws {
        #expect(try DurationText.parse(text) == value)
        #expect(DurationText.format(value) == formatted)
    }

    @Test("hostile values are quoted safely in messages")
    func quoting() {
        #expect("a\"b\\c\nd\u{1b}[31m".quotedForMessage() == "\"a\\\"b\\\\c\\nd\\u{1b}[31m\"")
        #expect(String(repeating: "x", count: 100).quotedForMessage(limit: 5) == "\"xxxxx…\"")
    }
}

@Suite("Errors, exit codes and secrets")
struct ErrorModelTests {
    @Test("exit codes are sysexits as DESIGN.md §3 lists them")
    func exitCodes() {
        #expect(ExitStatus.allCases.map(\.rawValue) == [0, 64, 65, 69, 70, 75, 77, 78])
        #expect(ExitStatus(for: ConfigurationError([])) == .configuration)
        struct Unexpected: Error {}
        #expect(ExitStatus(for: Unexpected()) == .internalError)
        #expect(ExitStatus(for: SigV4Error.missingHost) == .internalError)
    }

    @Test("a secret never shows through any text conversion")
    func secretRedaction() {
        let value = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        let secret = Secret(value)
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: secret, sessionToken: Secret("TOKEN-VALUE"))
        var dumped = ""
        dump(credentials, to: &dumped)
        var dumpedSecret = ""
        dump(secret, to: &dumpedSecret)
        let renderings = [
            "\(secret)", String(describing: secret), String(reflecting: secret), "\(credentials)",
            String(reflecting: credentials), dumped, dumpedSecret, "\([secret])", "\(Optional(secret) as Any)",
        ]
        for text in renderings {
            #expect(!text.contains(value), "\(text)")
            #expect(!text.contains("TOKEN-VALUE"), "\(text)")
        }
        #expect(secret.exposedValue() == value)
    }
}
