import Foundation
import SnapmountCore
import Testing

@Suite("Resource ids and snap.txt")
struct SnapshotSourceTests {
    @Test("resource ids: prefix, then 8 or 17 lower-case hex digits", arguments: [
        ("snap-0123456789abcdef0", true), ("snap-01234567", true), ("snap-0123456789ABCDEF0", false),
        ("snap-0123456789abcdef", false), ("snap-0123456789abcdef01", false), ("snap-", false), ("snap-0123456g", false),
        (" snap-01234567", false), ("vol-01234567", false), ("snap_01234567", false),
    ])
    func snapshotIDs(text: String, valid: Bool) {
        #expect((SnapshotID(text) != nil) == valid)
    }

    @Test("a volume id's NVMe serial drops the dash")
    func nvmeSerial() throws {
        let id = try #require(VolumeID("vol-0123456789abcdef0"))
        #expect(id.nvmeSerial == "vol0123456789abcdef0")
        #expect(InstanceID("i-0123456789abcdef0") != nil)
        #expect(InstanceID("i-012345") == nil)
    }

    @Test("accepted snap.txt bodies", arguments: [
        "snap-0123456789abcdef0", "snap-0123456789abcdef0\n", "snap-0123456789abcdef0\r\n", "  snap-0123456789abcdef0\t \n",
        "snap-01234567",
    ])
    func accepted(body: String) throws {
        let id = try SnapshotSourceBody.parse(Array(body.utf8), url: "http://r/snap.txt")
        #expect(id.text.hasPrefix("snap-0123456"))
    }

    @Test("refused snap.txt bodies, each with its own error that quotes what came back", arguments: [
        ("", "empty"), ("\n", "empty"), ("   \r\n", "empty"),
        ("<html><body>It works!</body></html>", "looksLikeHTML"), ("<!DOCTYPE html>\n<html>", "looksLikeHTML"),
        ("snap-0123456789abcdef0 snap-0123456789abcdef1", "severalIDs"), ("snap-01234567\nsnap-89abcdef\n", "severalIDs"),
        ("snap-0123456789abcdef0\n\n", "severalLines"), ("snap-0123456789abcdef0\nrelease 42\n", "severalLines"),
        ("snap-0123456789ABCDEF0", "notASnapshotID"), ("vol-0123456789abcdef0", "notASnapshotID"),
        ("snap-0123456789abcdef0 # latest", "notASnapshotID"), ("\u{1b}[31msnap-01234567", "notASnapshotID"),
        ("snap-0123456789abcdef0\r", "severalLines"),
    ])
    func refused(body: String, kind: String) {
        do {
            _ = try SnapshotSourceBody.parse(Array(body.utf8), url: "http://r/snap.txt")
            Issue.record("accepted \(body.quotedForMessage())")
        } catch {
            #expect(Mirror(reflecting: error).children.first?.label == kind, "\(error)")
            #expect(error.exitStatus == .unavailable)
            #expect(error.description.hasPrefix("http://r/snap.txt"))
            #expect(!error.description.contains("\u{1b}"))
        }
    }

    @Test("bytes that are not UTF-8")
    func notText() {
        #expect(throws: SnapshotSourceError.notUTF8(url: "u")) { try SnapshotSourceBody.parse([0xff, 0xfe, 0x00], url: "u") }
    }
}

@Suite("EC2 XML")
struct EC2DecodingTests {
    @Test("volumes decode with or without the namespace, in any element order")
    func volumes() throws {
        let namespaced = """
            <?xml version="1.0" encoding="UTF-8"?>
            <DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
              <requestId>r</requestId>
              <volumeSet><item>
                <tagSet><item><key>snapmount:instance-id</key><value>i-0123456789abcdef0</value></item></tagSet>
                <status>in-use</status>
                <attachmentSet><item><deleteOnTermination>true</deleteOnTermination><status>attached</status>
                  <device>/dev/sdf</device><instanceId>i-0123456789abcdef0</instanceId><volumeId>vol-0123456789abcdef0</volumeId></item></attachmentSet>
                <volumeId>vol-0123456789abcdef0</volumeId><size>8</size><availabilityZone>eu-west-1a</availabilityZone>
                <snapshotId>snap-0123456789abcdef0</snapshotId><volumeType>gp3</volumeType><unknownNewField>x</unknownNewField>
              </item></volumeSet>
            </DescribeVolumesResponse>
            """
        let volumes = try EC2Decoder.volumes(Array(namespaced.utf8))
        #expect(volumes.count == 1)
        let volume = try #require(volumes.first)
        #expect(volume.id.text == "vol-0123456789abcdef0")
        #expect(volume.state == .inUse)
        #expect(volume.sizeGiB == 8)
        #expect(volume.snapshotID?.text == "snap-0123456789abcdef0")
        #expect(volume.tags["snapmount:instance-id"] == "i-0123456789abcdef0")
        #expect(volume.attachments == [EC2Attachment(volumeID: volume.id, instanceID: try #require(InstanceID("i-0123456789abcdef0")),
                                                     device: "/dev/sdf", state: .attached, deleteOnTermination: true)])
        let prefixed = namespaced.replacingOccurrences(of: "xmlns=", with: "xmlns:ec2=").replacingOccurrences(of: "<DescribeVolumesResponse", with: "<ec2:DescribeVolumesResponse").replacingOccurrences(of: "</DescribeVolumesResponse", with: "</ec2:DescribeVolumesResponse")
        #expect(try EC2Decoder.volumes(Array(prefixed.utf8)) == volumes)
    }

    @Test("snapshots, created volumes, attachments and return values")
    func otherActions() throws {
        let snapshots = try EC2Decoder.snapshots(Array("""
            <DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-0123456789abcdef0</snapshotId><status>pending</status>
            <progress>42%</progress><ownerId>111122223333</ownerId><volumeSize>40</volumeSize><encrypted>true</encrypted></item></snapshotSet></DescribeSnapshotsResponse>
            """.utf8))
        #expect(snapshots.first == EC2Snapshot(id: try #require(SnapshotID("snap-0123456789abcdef0")), state: .pending, ownerID: "111122223333",
                                                volumeSizeGiB: 40, encrypted: true, progress: "42%"))
        let created = try EC2Decoder.createdVolume(Array("""
            <CreateVolumeResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><volumeId>vol-01234567</volumeId><status>creating</status><size>8</size></CreateVolumeResponse>
            """.utf8))
        #expect(created.state == .creating)
        let attachment = try EC2Decoder.attachment(Array("""
            <AttachVolumeResponse><volumeId>vol-01234567</volumeId><instanceId>i-01234567</instanceId><device>/dev/sdf</device><status>attaching</status></AttachVolumeResponse>
            """.utf8), action: "AttachVolume")
        #expect(attachment.state == .attaching)
    }

    @Test("unreadable answers are decode errors, not crashes", arguments: [
        "", "<DescribeVolumesResponse><volumeSet><item><volumeId>vol-01", "<html><body>502</body></html>",
        "<DescribeVolumesResponse/>", "<OtherResponse><volumeSet/></OtherResponse>", "\u{0}\u{1}garbage",
        "<DescribeVolumesResponse><volumeSet><item><volumeId>not-an-id</volumeId><status>ok</status></item></volumeSet></DescribeVolumesResponse>",
    ])
    func unreadable(body: String) {
        #expect(throws: EC2DecodeError.self) { try EC2Decoder.volumes(Array(body.utf8)) }
    }

    @Test("error documents in both shapes; HTML and empty bodies are not errors documents")
    func errors() {
        let ec2 = EC2ErrorBody.parse(Array("""
            <?xml version="1.0" encoding="UTF-8"?>
            <Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>The instance ID 'i-1a2b3c4d' does not exist</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>
            """.utf8))
        #expect(ec2 == EC2ErrorBody(code: "InvalidInstanceID.NotFound", message: "The instance ID 'i-1a2b3c4d' does not exist",
                                    requestID: "ea966190-f9aa-478e-9ede-example"))
        let query = EC2ErrorBody.parse(Array("""
            <ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>abc</RequestId></ErrorResponse>
            """.utf8))
        #expect(query?.code == "Throttling")
        #expect(query?.requestID == "abc")
        #expect(EC2ErrorBody.parse(Array("<html><body>Bad Gateway</body></html>".utf8)) == nil)
        #expect(EC2ErrorBody.parse([]) == nil)
    }

    @Test("no external entity is ever expanded")
    func noXXE() {
        let body = """
            <?xml version="1.0"?>
            <!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
            <Response><Errors><Error><Code>&x;</Code><Message>m</Message></Error></Errors></Response>
            """
        let parsed = EC2ErrorBody.parse(Array(body.utf8))
        #expect(parsed?.code.contains("root:") != true)
    }

    @Test("error kinds", arguments: [
        ("RequestLimitExceeded", 503, EC2ErrorKind.throttling), ("Throttling", 400, .throttling),
        ("InternalError", 500, .transient), ("Unavailable", 503, .transient), ("Anything", 502, .transient),
        ("RequestExpired", 400, .clockSkew), ("UnauthorizedOperation", 403, .permission), ("AuthFailure", 401, .permission),
        ("InvalidSnapshot.NotFound", 400, .permanent), ("IncorrectState", 400, .permanent),
        ("IdempotentParameterMismatch", 400, .permanent), ("DryRunOperation", 412, .permanent),
    ])
    func kinds(code: String, status: Int, kind: EC2ErrorKind) {
        #expect(EC2ErrorKind(code: code, httpStatus: status) == kind)
    }

    @Test("exit codes of EC2 errors")
    func exitCodes() {
        func status(_ code: String, _ http: Int = 400) -> SnapmountCore.ExitStatus {
            EC2ServiceError(action: "A", code: code, message: "", requestID: "", httpStatus: http).exitStatus
        }
        #expect(status("UnauthorizedOperation", 403) == .permissionDenied)
        #expect(status("RequestLimitExceeded", 503) == .unavailable)
        #expect(status("InvalidParameterValue") == .configuration)
        #expect(status("IdempotentParameterMismatch") == .configuration)
        #expect(status("InvalidSnapshot.NotFound") == .unavailable)
    }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test("full jitter under a capped exponential ceiling")
    func backoff() {
        let policy = RetryPolicy()
        for retry in 1...12 {
            let ceiling = min(Duration.seconds(20), .seconds(1) * (1 << (retry - 1)))
            #expect(policy.backoff(retry: retry, random: 0) == .zero)
            #expect(policy.backoff(retry: retry, random: 0.999_999) <= ceiling)
            #expect(policy.backoff(retry: retry, random: 0.999_999) > ceiling * 0.99)
        }
        #expect(policy.backoff(retry: 40, random: 0.5) == .seconds(10))
    }

    @Test("a throttled call waits 2–6 s, uniformly, whatever the retry")
    func throttleWait() {
        let policy = RetryPolicy()
        #expect(policy.throttleBackoff(random: 0) == .seconds(2))
        #expect(policy.throttleBackoff(random: 0.5) == .seconds(4))
        #expect(policy.throttleBackoff(random: 0.999_999) <= .seconds(6))
        #expect(policy.throttleBackoff(random: 0.999_999) > .milliseconds(5_999))
        #expect(policy.throttleBackoff(random: 7) == .seconds(6))
    }

    @Test("clock skew: measured against the midpoint; no Date, an Age, a round trip over 15 minutes or a backwards one tell nothing")
    func skewMeasurement() {
        let sent = UTCTimestamp(secondsSinceEpoch: 1_767_225_600)  // 2026-01-01T00:00:00Z
        let date = "Thu, 01 Jan 2026 00:05:01 GMT"
        #expect(ClockSkew.measure(date: date, age: nil, sentAt: sent, receivedAt: sent.adding(seconds: 2)) == 300)
        #expect(ClockSkew.measure(date: nil, age: nil, sentAt: sent, receivedAt: sent.adding(seconds: 2)) == nil)
        #expect(ClockSkew.measure(date: date, age: "10", sentAt: sent, receivedAt: sent.adding(seconds: 2)) == nil)
        #expect(ClockSkew.measure(date: date, age: nil, sentAt: sent, receivedAt: sent.adding(seconds: 901)) == nil)
        #expect(ClockSkew.measure(date: date, age: nil, sentAt: sent, receivedAt: sent.adding(seconds: -30)) == nil)
        #expect(ClockSkew.isSkewError(code: "RequestExpired", measured: 10))
        #expect(!ClockSkew.isSkewError(code: "RequestExpired", measured: nil))
        #expect(!ClockSkew.isSkewError(code: "AuthFailure", measured: 240))
        #expect(ClockSkew.isSkewError(code: "AuthFailure", measured: -241))
        #expect(!ClockSkew.isSkewError(code: "UnauthorizedOperation", measured: 7200))
    }

    @Test("the retry quota pays for 100 retries, timeouts cost double, successes refill")
    func quota() {
        var quota = RetryQuota()
        var paid = 0
        while quota.acquire(afterTimeout: false) != nil { paid += 1 }
        #expect(paid == 100)
        quota.release(cost: 5)
        #expect(quota.acquire(afterTimeout: true) == nil)
        #expect(quota.acquire(afterTimeout: false) == 5)
    }
}

@Suite("Volume requests and IMDS documents")
struct VolumeRequestTests {
    static let instance = InstanceID("i-0123456789abcdef0")!
    static let snapshot = SnapshotID("snap-0123456789abcdef0")!

    @Test("the ClientToken depends on instance and snapshot only, and fits EC2's 64 characters")
    func clientToken() {
        var settings = VolumeSettings()
        let a = VolumeRequest(availabilityZone: "eu-west-1a", snapshot: Self.snapshot, instance: Self.instance, settings: settings)
        settings.sizeGiB = 100
        let b = VolumeRequest(availabilityZone: "eu-west-1a", snapshot: Self.snapshot, instance: Self.instance, settings: settings)
        let c = VolumeRequest(availabilityZone: "eu-west-1a", snapshot: SnapshotID("snap-0123456789abcdef1")!, instance: Self.instance, settings: settings)
        #expect(a.clientToken == b.clientToken)
        #expect(a.clientToken != c.clientToken)
        #expect(a.clientToken.count <= 64)
        var next = a
        next.generation = VolumeRequest.maximumGeneration
        #expect(next.clientToken == a.clientToken + "-g\(VolumeRequest.maximumGeneration)")
        #expect(next.clientToken.count <= 64)
    }

    @Test("the role name: the first line, if it is an IAM role name; nil when there is none", arguments: [
        ("snapmount-release-role", "snapmount-release-role"), ("snapmount-release-role\n", "snapmount-release-role"),
        ("a+b=c,d.e@f_g-h\r\nsecond\n", "a+b=c,d.e@f_g-h"), ("", nil), ("\n\n", nil),
    ] as [(String, String?)])
    func roleName(body: String, expected: String?) throws {
        #expect(try IMDSDocuments.roleName(Array(body.utf8)) == expected)
    }

    @Test("what is not a role name is an error", arguments: [
        "{\"Code\" : \"Succ", "role with spaces", "role/../../x", String(repeating: "r", count: 65), "\u{0}\u{1}garbage",
    ])
    func notARoleName(body: String) {
        #expect(throws: IMDSDocumentError.self) { try IMDSDocuments.roleName(Array(body.utf8)) }
    }

    @Test("a session token is printable ASCII without spaces; anything else is an error that does not quote it")
    func sessionToken() throws {
        #expect(try IMDSDocuments.sessionToken(Array("AQAEabc==".utf8)).exposedValue() == "AQAEabc==")
        for bad in ["", "AQAE abc", "AQAE\nabc", "\u{0}\u{1}garbage", String(repeating: "A", count: 4097)] {
            #expect(throws: IMDSDocumentError.self) { try IMDSDocuments.sessionToken(Array(bad.utf8)) }
            do { _ = try IMDSDocuments.sessionToken(Array(bad.utf8)) } catch { #expect(!bad.isEmpty ? !error.description.contains(bad) : true) }
        }
    }

    @Test("CreateVolume parameters carry the settings and the tags at creation")
    func parameters() throws {
        var settings = VolumeSettings()
        settings.type = .io2
        settings.iops = 4000
        settings.encrypted = true
        settings.kmsKeyID = try KMSKeyID(parsing: "alias/rel")
        settings.tags = [VolumeTag(key: "team", value: "web")]
        let parameters = VolumeRequest(availabilityZone: "eu-west-1a", snapshot: Self.snapshot, instance: Self.instance, settings: settings).parameters
        #expect(parameters["VolumeType"] == "io2")
        #expect(parameters["Iops"] == "4000")
        #expect(parameters["Encrypted"] == "true")
        #expect(parameters["KmsKeyId"] == "alias/rel")
        #expect(parameters["Size"] == nil)
        #expect(parameters["TagSpecification.1.ResourceType"] == "volume")
        #expect(parameters["TagSpecification.1.Tag.1.Key"] == "snapmount:instance-id")
        #expect(parameters["TagSpecification.1.Tag.2.Value"] == "snap-0123456789abcdef0")
        #expect(parameters["TagSpecification.1.Tag.3.Key"] == "snapmount:mount-point")
        #expect(parameters["TagSpecification.1.Tag.3.Value"] == "/release")
        #expect(parameters["TagSpecification.1.Tag.4.Key"] == "snapmount:release-id")
        #expect(parameters["TagSpecification.1.Tag.4.Value"] == "snap-0123456789abcdef0", "a snapshot without an identity: its id")
        #expect(parameters["TagSpecification.1.Tag.5.Key"] == "team")
    }

    @Test("identity document")
    func identity() throws {
        let identity = try IMDSDocuments.identity(Array("""
            {"accountId":"123456789012","availabilityZone":"eu-west-1a","instanceId":"i-0123456789abcdef0","region":"eu-west-1","billingProducts":null}
            """.utf8))
        #expect(identity == InstanceIdentity(instanceID: Self.instance, region: "eu-west-1", availabilityZone: "eu-west-1a", accountID: "123456789012"))
        #expect(throws: IMDSDocumentError.self) { try IMDSDocuments.identity(Array("{\"instanceId\":\"x\"}".utf8)) }
        #expect(throws: IMDSDocumentError.self) {
            try IMDSDocuments.identity(Array("{\"accountId\":\"1\",\"availabilityZone\":\"us-east-1a\",\"instanceId\":\"i-0123456789abcdef0\",\"region\":\"eu-west-1\"}".utf8))
        }
    }

    @Test("role credentials: parsed, checked, and never quoted in an error")
    func roleCredentials() throws {
        let body = """
            {"Code":"Success","LastUpdated":"2026-11-28T10:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE",
             "SecretAccessKey":"SECRET-VALUE","Token":"TOKEN-VALUE","Expiration":"2026-11-28T16:00:00Z"}
            """
        let credentials = try IMDSDocuments.roleCredentials(Array(body.utf8), role: "r")
        #expect(credentials.accessKeyID == "ASIAEXAMPLE")
        #expect(credentials.secretAccessKey.exposedValue() == "SECRET-VALUE")
        #expect(credentials.expiration == UTCTimestamp(iso8601: "2026-11-28T16:00:00Z"))
        let broken = body.replacingOccurrences(of: "\"Code\":\"Success\"", with: "\"Code\":\"Success\"}{")
        do {
            _ = try IMDSDocuments.roleCredentials(Array(broken.utf8), role: "r")
            Issue.record("accepted a broken document")
        } catch {
            #expect(!error.description.contains("SECRET-VALUE"))
            #expect(!error.description.contains("TOKEN-VALUE"))
        }
        let failed = body.replacingOccurrences(of: "Success", with: "AssumeRoleUnauthorizedAccess")
        #expect(throws: IMDSDocumentError.self) { try IMDSDocuments.roleCredentials(Array(failed.utf8), role: "r") }
    }

    @Test("HTTP Date headers read")
    func httpDates() {
        let time = UTCTimestamp(secondsSinceEpoch: 1_440_938_160)
        #expect(UTCTimestamp(httpDate: "Sun, 30 Aug 2015 12:36:00 GMT") == time)
        #expect(UTCTimestamp(httpDate: "Thu, 01 Jan 1970 00:00:00 GMT") == UTCTimestamp(secondsSinceEpoch: 0))
        #expect(UTCTimestamp(httpDate: "Sun, 30 Aug 2015 12:36:00") == nil)
    }
}

@Suite("JSON")
struct JSONTests {
    @Test("documents parse; strings unescape; the text form reads back")
    func parses() throws {
        let value = try parseJSON(Array(#"{"a": [1, -2.5e3, true, null], "b": "x\"\\\/\n\u00e9\ud83d\ude00", "c": {}}"#.utf8))
        #expect(value["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .null]))
        #expect(value["b"]?.string == "x\"\\/\né😀")
        #expect(value["c"] == .object([]))
        #expect(try parseJSON(Array(value.text.utf8)) == value)
        #expect(try parseJSON(Array(value.pretty().utf8)) == value)
    }

    @Test("malformed documents are refused", arguments: [
        "", "{", "{\"a\":}", "{\"a\":1,}", "[1,]", "01", "1.", "-", "1e", "\"\u{1}\"", "\"\\x\"", "\"\\ud800\"",
        "{\"a\":1} x", "[" + String(repeating: "[", count: 40) + String(repeating: "]", count: 41), "tru", "{'a':1}", "nul",
    ])
    func refuses(text: String) {
        #expect(throws: JSONError.self) { try parseJSON(Array(text.utf8)) }
    }

    @Test("bytes that are not UTF-8 inside a string are refused")
    func notUTF8() {
        #expect(throws: JSONError.self) { try parseJSON([0x22, 0xff, 0x22]) }
    }
}

/// Answers read as the AWS SDKs read them, whichever EC2 implementation wrote them.
@Suite("EC2 answers from any implementation")
struct InteropDecodingTests {
    @Test("an empty output: HTTP 200 is success; only a <return> that is there and not true refuses", arguments: [
        ("<DeleteVolumeResponse><requestId>r</requestId><return>true</return></DeleteVolumeResponse>", true),
        ("<DeleteVolumeResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15\"><requestId>request-id</requestId></DeleteVolumeResponse>", true),
        ("<DeleteVolumeResponse/>", true),
        ("", true),
        ("\n", true),
        ("<DeleteVolumeResponse><return>false</return></DeleteVolumeResponse>", false),
    ])
    func emptyOutput(body: String, done: Bool) throws {
        #expect(try EC2Decoder.emptyOutput(Array(body.utf8), action: "DeleteVolume") == done)
    }

    @Test("an empty output whose body is another document or garbage is unreadable", arguments: [
        "<DeleteVolumeRespo", "\u{0}\u{1}garbage <<< not xml", "<AttachVolumeResponse/>", "<html><body>ok</body></html>",
    ])
    func emptyOutputUnreadable(body: String) {
        #expect(throws: EC2DecodeError.self) { try EC2Decoder.emptyOutput(Array(body.utf8), action: "DeleteVolume") }
    }

    @Test("an attachment without deleteOnTermination is unknown, not false")
    func deleteOnTerminationUnknown() throws {
        let body = """
            <DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><volumeSet><item><volumeId>vol-992cd1fc0f503ee3a</volumeId>\
            <size>1</size><status>in-use</status><attachmentSet><item><volumeId>vol-992cd1fc0f503ee3a</volumeId><instanceId>i-3d84c1f70dc2d97dd</instanceId>\
            <device>/dev/sdf</device><status>attached</status></item></attachmentSet></item></volumeSet></DescribeVolumesResponse>
            """
        let volume = try #require(try EC2Decoder.volumes(Array(body.utf8)).first)
        #expect(volume.attachments.first?.deleteOnTermination == nil)
        let set = body.replacingOccurrences(of: "<status>attached</status>", with: "<status>attached</status><deleteOnTermination>false</deleteOnTermination>")
        #expect(try EC2Decoder.volumes(Array(set.utf8)).first?.attachments.first?.deleteOnTermination == false)
    }

    @Test("a size that is not a volume size is an unreadable answer, never a number to compute with", arguments: [
        "-1", "0", "65537", "99999999999999999999999", "1e3", "8 GiB",
    ])
    func sizes(size: String) {
        let body = "<CreateVolumeResponse><volumeId>vol-01234567</volumeId><status>creating</status><size>\(size)</size></CreateVolumeResponse>"
        #expect(throws: EC2DecodeError.self) { try EC2Decoder.createdVolume(Array(body.utf8)) }
        let snapshot = "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-01234567</snapshotId><status>completed</status><volumeSize>\(size)</volumeSize></item></snapshotSet></DescribeSnapshotsResponse>"
        #expect(throws: EC2DecodeError.self) { try EC2Decoder.snapshots(Array(snapshot.utf8)) }
    }

    @Test("auth errors in either document shape map to the same exit code", arguments: [
        "AuthFailure", "SignatureDoesNotMatch", "AccessDenied", "UnauthorizedOperation", "MissingAuthenticationToken", "InvalidClientTokenId",
    ])
    func errorShapes(code: String) throws {
        let ec2 = "<Response><Errors><Error><Code>\(code)</Code><Message>m</Message></Error></Errors><RequestID>1</RequestID></Response>"
        let generic = "<ErrorResponse><Error><Type>Sender</Type><Code>\(code)</Code><Message>m</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        for body in [ec2, generic] {
            let parsed = try #require(EC2ErrorBody.parse(Array(body.utf8)))
            #expect(parsed.code == code)
            let error = EC2ServiceError(action: "AttachVolume", code: parsed.code, message: parsed.message, requestID: parsed.requestID, httpStatus: 403)
            #expect(error.exitStatus == .permissionDenied, "\(code)")
            #expect(!error.kind.isRetryable)
        }
    }
}
