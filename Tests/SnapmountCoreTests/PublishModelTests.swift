import SnapmountCore
import Testing

@Suite("Publish: the request, retention, progress")
struct PublishModelTests {
    static func snapshot(_ id: String, day: Int?, release: String? = "web", state: SnapshotState = .completed) -> EC2Snapshot {
        EC2Snapshot(id: SnapshotID(id)!, state: state, ownerID: "123456789012", volumeSizeGiB: 1, encrypted: false,
                    startTime: day.flatMap { UTCTimestamp(year: 2026, month: 11, day: $0) },
                    tags: release.map { [SnapshotRequest.releaseTag: $0] } ?? [:])
    }

    @Test("CreateSnapshot's parameters: the volume, a description, four tags on the snapshot — never the release mark, which comes once it is completed")
    func request() throws {
        let request = SnapshotRequest(volume: try #require(VolumeID("vol-0123456789abcdef0")), release: "web", mountPoint: "/release",
                                      time: try #require(UTCTimestamp(year: 2026, month: 11, day: 28, hour: 12)), attemptID: "abc",
                                      identity: try #require(ReleaseID("rel-20261128T120000Z-0123abcd")))
        let parameters = request.parameters
        #expect(parameters["VolumeId"] == "vol-0123456789abcdef0")
        #expect(parameters["Description"] == "snapmount publish of web (/release on vol-0123456789abcdef0) at 2026-11-28T12:00:00Z")
        #expect(parameters["TagSpecification.1.ResourceType"] == "snapshot")
        let keys = (1...4).compactMap { parameters["TagSpecification.1.Tag.\($0).Key"] }
        #expect(keys == ["snapmount:published-at", "snapmount:source-volume", "snapmount:publish-attempt", "snapmount:release-id"])
        #expect(parameters["TagSpecification.1.Tag.3.Value"] == "abc")
        #expect(parameters["TagSpecification.1.Tag.4.Value"] == "rel-20261128T120000Z-0123abcd")
        #expect(parameters["TagSpecification.1.Tag.5.Key"] == nil)
        #expect(!keys.contains(SnapshotRequest.releaseTag), "the release tag is the mark publish adds after completion")
    }

    @Test("release names", arguments: [("web", true), ("web-2026.11 / blue", true), ("", false), ("a\nb", false), ("x;y", false),
                                       (String(repeating: "a", count: 129), false)])
    func releaseNames(name: String, valid: Bool) {
        #expect(((try? SnapshotRequest.checkRelease(name)) != nil) == valid)
    }

    @Test("--keep: the N newest of the release stay; protected, pending and other releases' snapshots never go")
    func retention() {
        let all = [
            Self.snapshot("snap-00000000000000001", day: 1), Self.snapshot("snap-00000000000000002", day: 2),
            Self.snapshot("snap-00000000000000003", day: 3), Self.snapshot("snap-00000000000000004", day: 4),
            Self.snapshot("snap-00000000000000005", day: 5), Self.snapshot("snap-00000000000000009", day: 9, release: "api"),
            Self.snapshot("snap-00000000000000000", day: nil, state: .pending),
        ]
        let names = { (list: [EC2Snapshot]) in list.map(\.id.text) }
        #expect(names(SnapshotRetention.toDelete(all, keep: 3, release: "web", protected: [])) == ["snap-00000000000000002", "snap-00000000000000001"])
        #expect(names(SnapshotRetention.toDelete(all, keep: 3, release: "web", protected: [SnapshotID("snap-00000000000000001")!]))
                == ["snap-00000000000000002"])
        #expect(names(SnapshotRetention.toDelete(all, keep: 10, release: "web", protected: [])).isEmpty)
        #expect(names(SnapshotRetention.toDelete(all, keep: 1, release: "api", protected: [])).isEmpty)
        // The pending one (no start time sorts last) is never deleted.
        #expect(!names(SnapshotRetention.toDelete(all, keep: 0, release: "web", protected: [])).contains("snap-00000000000000000"))
    }

    @Test("progress", arguments: [("42%", 42), ("100%", 100), ("0%", 0), (" 7% ", 7), ("", nil), ("101%", nil), ("abc", nil)])
    func progress(text: String, value: Int?) {
        #expect(snapshotPercent(text) == value)
    }

    @Test("CreateSnapshot's answer decodes with its tags; DescribeSnapshots' items too")
    func decode() throws {
        let body = """
            <CreateSnapshotResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>1</requestId>
            <snapshotId>snap-0123456789abcdef1</snapshotId><volumeId>vol-0123456789abcdef0</volumeId><status>pending</status>
            <startTime>2026-11-28T12:00:00.000Z</startTime><progress></progress><ownerId>123456789012</ownerId><volumeSize>8</volumeSize>
            <description>x</description><encrypted>false</encrypted>
            <tagSet><item><key>snapmount:release</key><value>web</value></item></tagSet></CreateSnapshotResponse>
            """
        let snapshot = try EC2Decoder.createdSnapshot(Array(body.utf8))
        #expect(snapshot.id.text == "snap-0123456789abcdef1")
        #expect(snapshot.state == .pending)
        #expect(snapshot.volumeID?.text == "vol-0123456789abcdef0")
        #expect(snapshot.volumeSizeGiB == 8)
        #expect(snapshot.tags == ["snapmount:release": "web"])
        #expect(throws: EC2DecodeError.self) { try EC2Decoder.createdSnapshot(Array("<CreateVolumeResponse/>".utf8)) }
    }

    @Test("the published file: the id and one newline; an absolute path")
    func target() throws {
        #expect(snapshotFileBody(try #require(SnapshotID("snap-0123456789abcdef0"))) == Array("snap-0123456789abcdef0\n".utf8))
        #expect(try PublishTarget(parsing: "/var/www/html/snap.txt") == .file(try AbsolutePath(parsing: "/var/www/html/snap.txt")))
        #expect(throws: InvalidValue.self) { try PublishTarget(parsing: "snap.txt") }
        #expect(throws: InvalidValue.self) { try PublishTarget(parsing: "/var/www/../snap.txt") }
    }

    @Test("sources: a URL, ssm:/NAME, tag:KEY=VALUE; each wrong one refused with what was expected", arguments: [
        ("http://releasesrvr/snap.txt", "http://releasesrvr/snap.txt"), ("ssm:/releases/web", "ssm:/releases/web"),
        ("ssm:web-current", "ssm:web-current"), ("tag:release=web", "tag:release=web"), ("tag:release=", "tag:release="),
        ("ssm:", nil), ("ssm:/aws/x", nil), ("ssm:/a b", nil), ("tag:=x", nil), ("tag:k", nil), ("tag:aws:x=1", nil),
        ("ftp://r/snap.txt", nil), ("snap.txt", nil),
    ] as [(String, String?)])
    func sources(text: String, parsed: String?) {
        let source = try? SnapshotSource(parsing: text)
        #expect(source?.description == parsed)
        #expect(source.map { $0.isUnauthenticated } != true || text.hasPrefix("http://"))
    }

    @Test("publish targets: a file or ssm:/NAME")
    func ssmTarget() throws {
        #expect(try PublishTarget(parsing: "ssm:/releases/web") == .ssm(name: "/releases/web"))
        #expect(throws: InvalidValue.self) { try PublishTarget(parsing: "ssm:/releases/we b") }
    }
}
