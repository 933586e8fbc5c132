import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// Resolves the snapshot the way step 4 does and returns the error, if any.
func resolveError(_ cloud: DevCloud, tuning: CloudTuning = fastTuning(), owner: SnapshotOwner = .any,
                  environment extra: [String: String] = [:], logger: Logger = quietLogger) async throws -> (any Error)? {
    let environment = try AgentEnvironment(cloud.environment.merging(extra) { _, new in new })
    let source = try SnapshotSource(parsing: cloud.sourceURL)
    return try await onThread { () -> SendableError? in
        do {
            let session = try CloudSession.connect(environment: environment, logger: logger, tuning: tuning)
            _ = try session.resolveSnapshot(source, owner: owner)
            return nil
        } catch {
            return SendableError(error)
        }
    }?.error
}

struct SendableError: @unchecked Sendable {
    let error: any Error
    init(_ error: any Error) { self.error = error }
}

func label(_ error: (any Error)?) -> String {
    guard let error else { return "none" }
    var value: Any = error
    var labels: [String] = []
    while let child = Mirror(reflecting: value).children.first, let name = child.label {
        labels.append(name)
        value = child.value
    }
    return labels.joined(separator: ".")
}

@Suite("snap.txt and instance metadata against DevCloud")
struct SourceAndMetadataTests {
    @Test("every snap.txt shape gets its error, exit 69, and nothing reaches EC2", arguments: [
        (ReleaseResponse(status: 404, body: "<html>Not Found</html>", contentType: "text/html"), "http.status", 1),
        (ReleaseResponse(status: 500, body: "oops"), "http.status", 3),
        (ReleaseResponse(body: "snap-0123456789abcdef0\n", delayMilliseconds: 3000), "http.timeout", 3),
        (ReleaseResponse(body: String(repeating: "snap-0123456789abcdef0\n", count: 300)), "http.tooLarge", 1),
        (ReleaseResponse(body: "<!DOCTYPE html><html><body>It works!</body></html>", contentType: "text/html"), "content.looksLikeHTML", 1),
        (ReleaseResponse(body: "\u{0}\u{7f}\u{1b}garbage"), "content.notASnapshotID", 1),
        (ReleaseResponse(body: ""), "content.empty", 1),
        (ReleaseResponse(body: "snap-0123456789abcdef0\nsnap-0123456789abcdef1\n"), "content.severalIDs", 1),
        (ReleaseResponse(body: "snap-0123456789ABCDEF0\n"), "content.notASnapshotID", 1),
    ])
    func sourceShapes(response: ReleaseResponse, expected: String, fetches: Int) async throws {
        try await withCloud { cloud in
            await cloud.state.setRelease(response)
            // The delayed answer (3 s) comes long after this timeout (1 s), however busy the
            // machine: only the faulted server gets the short timeout.
            var tuning = fastTuning()
            if expected == "http.timeout" { tuning.sourceTimeout = .seconds(1) }
            let sink = CapturedLines()
            let error = try await resolveError(cloud, tuning: tuning, logger: capturingLogger(sink))
            #expect(label(error).hasPrefix(expected), "\(String(describing: error))")
            #expect(error.map { ExitStatus(for: $0) } == .unavailable)
            let calls = await cloud.state.callLog()
            if expected == "http.timeout" {
                // Counted where they are made: on a loaded machine an attempt can time out before
                // the server has even read it, so the server's count is only a bound.
                #expect(sink.lines.contains { $0.contains("giving up after \(fetches) attempts") }, "\(sink.lines)")
                #expect((1...fetches).contains(calls.count("snap.txt")))
            } else {
                #expect(calls.count("snap.txt") == fetches)
            }
            #expect(calls.ec2Calls().isEmpty)
        }
    }

    @Test("the error quotes what came back, safely")
    func quotesBody() async throws {
        try await withCloud { cloud in
            await cloud.state.setRelease(ReleaseResponse(body: "release 42 is \u{1b}[31mgreat\u{1b}[0m"))
            let error = try #require(try await resolveError(cloud))
            #expect(String(describing: error).contains("\"release 42 is \\u{1b}[31mgreat"))
        }
    }

    @Test("a pending snapshot: the release is not published yet (exit 69)")
    func pendingSnapshot() async throws {
        try await withCloud { cloud in
            await cloud.state.setSnapshotState(releaseSnapshot, "pending")
            let error = try await resolveError(cloud)
            #expect(label(error).hasPrefix("snapshotPending"))
            #expect(String(describing: error).contains("not published yet"))
            #expect(error.map { ExitStatus(for: $0) } == .unavailable)
            #expect(await cloud.state.callLog().count("CreateVolume") == 0)
        }
    }

    @Test("a snapshot that does not exist: InvalidSnapshot.NotFound, not retried")
    func missingSnapshot() async throws {
        try await withCloud { cloud in
            await cloud.state.setRelease(ReleaseResponse(body: "snap-0123456789abcdef9\n"))
            let error = try await resolveError(cloud)
            #expect(label(error).hasPrefix("snapshotNotFound"))
            #expect(await cloud.state.callLog().count("DescribeSnapshots") == 1)
        }
    }

    @Test("snapshot-owner: a snapshot from another account is refused")
    func foreignOwner() async throws {
        try await withCloud { cloud in
            await cloud.state.addSnapshot(DevSnapshot(id: "snap-0123456789abcdef7", ownerID: "999999999999"))
            await cloud.state.setRelease(ReleaseResponse(body: "snap-0123456789abcdef7"))
            let outcome1 = label(try await resolveError(cloud, owner: .selfAccount))
            #expect(outcome1.hasPrefix("snapshotOwner"))
            let outcome2 = label(try await resolveError(cloud, owner: .account("999999999999")))
            #expect(outcome2 == "none")
            let outcome3 = label(try await resolveError(cloud, owner: .any))
            #expect(outcome3 == "none")
        }
    }

    @Test("IMDS, credentials and snap.txt survive each transport fault once", arguments: [
        "imds:token", "imds:dynamic/instance-identity/document", "imds:meta-data/iam/security-credentials/",
        "imds:meta-data/iam/security-credentials/snapmount-release-role", "release",
    ], [FaultKind.http500, .http503, .reset, .noResponse, .html])
    func metadataFaultsOnce(target: String, kind: FaultKind) async throws {
        try await withCloud { cloud in
            await cloud.state.addFault(Fault(target: target, kind: kind, trigger: .nthCall(1)))
            let outcome4 = label(try await resolveError(cloud))
            #expect(outcome4 == "none")
            let faulted = await cloud.state.callLog().filter { $0.outcome.hasPrefix("fault:") }
            #expect(faulted.count == 1)
        }
    }

    @Test("a garbled credentials document is fetched again")
    func garbledCredentials() async throws {
        try await withCloud { cloud in
            await cloud.state.addFault(Fault(target: "imds:meta-data/iam/security-credentials/snapmount-release-role", kind: .truncated, trigger: .nthCall(1)))
            let outcome5 = label(try await resolveError(cloud))
            #expect(outcome5 == "none")
        }
    }

    @Test("one IMDS token serves every request; a 401 fetches a new one once")
    func tokenReuseAndRefresh() async throws {
        try await withCloud { cloud in
            let state = cloud.state
            try await withSession(cloud) { session in
                _ = try session.imds.get("meta-data/instance-id")
                _ = try session.imds.get("meta-data/placement/region")
                let forgotten = DispatchSemaphore(value: 0)
                Task {
                    await state.forgetIMDSTokens()
                    forgotten.signal()
                }
                forgotten.wait()
                let zone = String(decoding: try session.imds.get("meta-data/placement/availability-zone"), as: UTF8.self)
                #expect(zone == "eu-west-1a")
            }
            let calls = await cloud.state.callLog().filter { $0.service == "imds" }
            #expect(calls.count("api/token") == 2)
            #expect(calls.filter { $0.outcome == "401" }.count == 1)
        }
    }

    @Test("a token request that always fails is tried the loop's attempts, once — not again for each GET attempt — and said once")
    func tokenNeverIssued() async throws {
        try await withCloud { cloud in
            await cloud.state.addFault(Fault(target: "imds:token", kind: .http500, trigger: .always))
            let error = try await resolveError(cloud)
            let text = String(describing: error)
            #expect(error.map { ExitStatus(for: $0) } == .unavailable, "\(text)")
            #expect(text.components(separatedBy: "after 3 attempts").count == 2, "\(text)")
            let calls = await cloud.state.callLog().filter { $0.service == "imds" }
            #expect(calls.count("api/token") == 3, "\(calls.map(\.action))")
            #expect(calls.count == 3, "no GET without a token: \(calls.map(\.action))")
        }
    }

    @Test("AWS_EC2_METADATA_DISABLED=true: IMDS is never contacted, exit 78")
    func metadataDisabled() async throws {
        try await withCloud { cloud in
            let error = try await resolveError(cloud, environment: ["AWS_EC2_METADATA_DISABLED": "true"])
            #expect(label(error).hasPrefix("disabled"))
            #expect(error.map { ExitStatus(for: $0) } == .configuration)
            #expect(await cloud.state.callLog().isEmpty)
        }
    }

    @Test("an instance without a role and no keys in the environment: exit 77")
    func noRole() async throws {
        var settings = fastSettings()
        settings.roleName = nil
        try await withCloud(settings) { cloud in
            let error = try await resolveError(cloud)
            #expect(String(describing: error).contains("no IAM role"), "\(String(describing: error))")
            #expect(error.map { ExitStatus(for: $0) } == .permissionDenied)
        }
    }

    @Test("IMDS itself is strict: token TTL bounds, no token, a forged token")
    func imdsStrict() async throws {
        try await withCloud { cloud in
            let base = cloud.imdsEndpoint
            let statuses = try await onThread {
                let http = try HTTPClient()
                func put(_ ttl: String) throws -> Int {
                    try http.send(HTTPRequest(.put, "\(base)/latest/api/token", headers: [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])).status
                }
                return [
                    try put("0"), try put("21601"), try put("abc"), try put("1"),
                    try http.send(HTTPRequest(.get, "\(base)/latest/meta-data/instance-id")).status,
                    try http.send(HTTPRequest(.get, "\(base)/latest/meta-data/instance-id", headers: [("X-aws-ec2-metadata-token", "forged")])).status,
                ]
            }
            #expect(statuses == [400, 400, 400, 200, 401, 401])
        }
    }
}

@Suite("DevCloud's EC2 is as strict as EC2")
struct DevCloudStrictnessTests {
    /// Calls `action` with `parameters` through a signed client and returns the error code, or "ok".
    static func call(_ cloud: DevCloud, _ action: String, _ parameters: QueryParameters) async throws -> String {
        return try await withSession(cloud, tuning: fastTuning(attempts: 1)) { session in
            do {
                _ = try session.ec2.perform(action, parameters) { (_: [UInt8]) throws(EC2DecodeError) in true }
                return "ok"
            } catch {
                return (error as? EC2CallError)?.code ?? "\(error)"
            }
        }
    }

    @Test("AttachVolume refuses another zone, a used device name, a bad device name, a volume in use")
    func attachRules() async throws {
        try await withCloud { cloud in
            let instance = cloud.state.settings.instanceID
            func create(_ zone: String) async throws -> String {
                return try await withSession(cloud) { session in
                    let volume = try session.ec2.perform("CreateVolume", ["AvailabilityZone": zone, "Size": "1", "VolumeType": "gp3"],
                                                         decode: EC2Decoder.createdVolume)
                    return try session.volumes.waitAvailable(volume.id).id.text
                }
            }
            let other = try await create("eu-west-1b")
            let result6 = try await Self.call(cloud, "AttachVolume", ["VolumeId": other, "InstanceId": instance, "Device": "/dev/sdf"])
            #expect(result6 == "InvalidVolume.ZoneMismatch")
            let first = try await create("eu-west-1a")
            let second = try await create("eu-west-1a")
            let result7 = try await Self.call(cloud, "AttachVolume", ["VolumeId": first, "InstanceId": instance, "Device": "/dev/sdf"])
            #expect(result7 == "ok")
            let result8 = try await Self.call(cloud, "AttachVolume", ["VolumeId": second, "InstanceId": instance, "Device": "/dev/sdf"])
            #expect(result8 == "InvalidParameterValue")
            let result9 = try await Self.call(cloud, "AttachVolume", ["VolumeId": second, "InstanceId": instance, "Device": "/dev/nvme1n1"])
            #expect(result9 == "InvalidParameterValue")
            let result10 = try await Self.call(cloud, "AttachVolume", ["VolumeId": first, "InstanceId": instance, "Device": "/dev/sdg"])
            #expect(result10 == "VolumeInUse")
            let result11 = try await Self.call(cloud, "DeleteVolume", ["VolumeId": first])
            #expect(result11 == "VolumeInUse")
            let result12 = try await Self.call(cloud, "AttachVolume", ["VolumeId": "vol-0123456789abcdef9", "InstanceId": instance, "Device": "/dev/sdh"])
            #expect(result12 == "InvalidVolume.NotFound")
        }
    }

    @Test("CreateVolume refuses a pending snapshot, a size below the snapshot's, an unknown zone; DescribeVolumes an unknown filter")
    func createRules() async throws {
        try await withCloud { cloud in
            await cloud.state.addSnapshot(DevSnapshot(id: "snap-0123456789abcdef5", state: "pending", sizeGiB: 8))
            let result13 = try await Self.call(cloud, "CreateVolume", ["AvailabilityZone": "eu-west-1a", "SnapshotId": "snap-0123456789abcdef5"])
            #expect(result13 == "IncorrectState")
            await cloud.state.setSnapshotState("snap-0123456789abcdef5", "completed")
            let result14 = try await Self.call(cloud, "CreateVolume", ["AvailabilityZone": "eu-west-1a", "SnapshotId": "snap-0123456789abcdef5", "Size": "4"])
            #expect(result14 == "InvalidParameterValue")
            let result15 = try await Self.call(cloud, "CreateVolume", ["AvailabilityZone": "mars-1a", "Size": "4"])
            #expect(result15 == "InvalidZone.NotFound")
            let result16 = try await Self.call(cloud, "CreateVolume", ["AvailabilityZone": "eu-west-1a", "SnapshotId": "snap-01"])
            #expect(result16 == "InvalidSnapshotID.Malformed")
            let result17 = try await Self.call(cloud, "DescribeVolumes", ["Filter.1.Name": "colour", "Filter.1.Value.1": "blue"])
            #expect(result17 == "InvalidParameterValue")
            let result18 = try await Self.call(cloud, "TerminateInstances", ["InstanceId.1": "i-0123456789abcdef0"])
            #expect(result18 == "InvalidAction")
        }
    }

    @Test("unsigned, expired and forged requests are refused")
    func authentication() async throws {
        try await withCloud { cloud in
            let url = cloud.ec2Endpoint + "/"
            let outcomes = try await onThread {
                let http = try HTTPClient()
                let body = Array("Action=DescribeVolumes&Version=2016-11-15".utf8)
                let host = String(url.dropFirst("http://".count).dropLast())
                func send(_ headers: [(name: String, value: String)]) throws -> String {
                    let response = try http.send(HTTPRequest(.post, url, headers: [("Content-Type", "application/x-www-form-urlencoded")] + headers, body: body))
                    return EC2ErrorBody.parse(response.body)?.code ?? "HTTP \(response.status)"
                }
                let credentials = AWSCredentials(accessKeyID: "AKIADEVCLOUDSTATIC01", secretAccessKey: Secret("devcloud/static/secret/key/0000000000000"))
                func signed(at time: UTCTimestamp, credentials: AWSCredentials = credentials, region: String = "eu-west-1") throws -> [(name: String, value: String)] {
                    let headers = [(name: "Host", value: host), (name: "Content-Type", value: "application/x-www-form-urlencoded")]
                    return try SigV4Signer(region: region, service: "ec2").sign(SigV4Request(method: "POST", headers: headers, body: body), credentials: credentials, at: time).headers
                }
                let now = SystemClock().now()
                var unknown = credentials
                unknown.accessKeyID = "AKIAUNKNOWNKEY000000"
                return [
                    try send([]),
                    try send(try signed(at: now.adding(seconds: -600))),
                    try send(try signed(at: now, credentials: AWSCredentials(accessKeyID: "AKIADEVCLOUDSTATIC01", secretAccessKey: Secret("wrong")))),
                    try send(try signed(at: now, credentials: unknown)),
                    try send(try signed(at: now, region: "us-east-1")),
                    try send(try signed(at: now)).isEmpty ? "?" : "ok-or-code",
                ]
            }
            #expect(outcomes == ["MissingAuthenticationToken", "RequestExpired", "SignatureDoesNotMatch", "AuthFailure", "SignatureDoesNotMatch", "ok-or-code"])
            let last = await cloud.state.callLog().last
            #expect(last?.outcome == "ok")
        }
    }
}
