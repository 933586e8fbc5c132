import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// The real boot flow against DevCloud, on a simulated machine (no root): what it asks the
/// cloud, how it retries, what it leaves behind.
@Suite("Boot flow against DevCloud")
struct CloudFlowTests {
    @Test("happy path at DevCloud's default delays, in both dialects: each action once, plus the polls", arguments: Dialect.allCases)
    func happyPath(dialect: Dialect) async throws {
        var settings = DevCloudSettings()
        settings.dialect = dialect
        try await withSimulatedHost(settings) { host in
            var tuning = CloudTuning()
            tuning.retry = RetryPolicy()
            let started = ContinuousClock.now
            guard case .mounted(let record) = try await host.run(tuning: tuning).outcome else {
                Issue.record("not mounted")
                return
            }
            let wall = ContinuousClock.now - started
            let cloud = host.cloud
            let calls = await cloud.state.callLog()
            #expect(calls.allSatisfy { $0.outcome == "ok" || $0.outcome == "200" }, "\(calls.map(\.outcome))")
            #expect(calls.count("api/token") == 1)
            #expect(calls.count("dynamic/instance-identity/document") == 1)
            #expect(calls.count("meta-data/iam/security-credentials/") == 1)
            // Read twice: the second time after mounting, for a release published meanwhile.
            #expect(calls.count("snap.txt") == 2)
            for action in ["DescribeSnapshots", "CreateVolume", "AttachVolume", "ModifyInstanceAttribute"] {
                #expect(calls.count(action) == 1, "\(action)")
            }
            let polls = calls.count("DescribeVolumes")
            // The lookup by tag, then (EC2) one look for `available`; `attached` is the device appearing.
            #expect(polls == (dialect == .ec2 ? 2 : 1), "\(polls)")
            // At most 7 EC2 calls on the happy path (issue #12): DescribeSnapshots, DescribeVolumes
            // (lookup), CreateVolume, DescribeVolumes (available), AttachVolume, ModifyInstanceAttribute.
            #expect(calls.ec2Calls().count <= 7)
            let volumes = await cloud.state.volumeTable()
            #expect(volumes.count == 1)
            let volume = try #require(volumes.first)
            #expect(volume.id == record.volume)
            #expect(volume.attachment?.state == "attached")
            // The emulator never reports it, but it was set (once).
            #expect(volume.attachment?.deleteOnTermination == true)
            #expect(volume.tags[VolumeRequest.instanceTag] == cloud.state.settings.instanceID)
            #expect(volume.tags[VolumeRequest.snapshotTag] == releaseSnapshot)
            #expect(host.runner.calls.map { $0[0] } == ["fsck.ext4"])
            #expect(host.isMounted)
            let ec2 = calls.ec2Calls().count
            print("boot flow happy path (\(dialect)) steps: \(record.timings.map { "\($0.step) \($0.milliseconds)ms" }.joined(separator: ", "))")
            print("boot flow happy path (\(dialect)): \(calls.count) calls (\(ec2) EC2, of which \(polls) DescribeVolumes), wall time \(wall) at default delays (create 1s, attach 1s)")
        }
    }

    @Test("a reboot reuses the volume, in both dialects: no CreateVolume, no AttachVolume, fstab unchanged", arguments: Dialect.allCases)
    func rebootReuses(dialect: Dialect) async throws {
        try await withSimulatedHost(fastSettings(dialect)) { host in
            let first = try #require(try await host.run().outcome.mountedRecord)
            let fstab = try host.fstabText()
            host.reboot()
            await host.cloud.state.clearCallLog()
            guard case .mounted(let second) = try await host.run().outcome else {
                Issue.record("the second run did not mount")
                return
            }
            #expect(second.volume == first.volume)
            let calls = await host.cloud.state.callLog()
            #expect(calls.count("CreateVolume") == 0)
            #expect(calls.count("AttachVolume") == 0)
            // At most 2 DescribeVolumes on the reboot path (issue #12): here the lookup by tag finds
            // the volume attached, and nothing else needs asking.
            #expect(calls.count("DescribeVolumes") == 1, "\(calls.count("DescribeVolumes"))")
            // Where DescribeVolumes does not say whether DeleteOnTermination is set, it is set again (once).
            #expect(calls.count("ModifyInstanceAttribute") == (dialect == .ec2 ? 0 : 1))
            #expect(await host.cloud.state.volumeTable().count == 1)
            #expect(try host.fstabText() == fstab)
        }
    }

    @Test("a run while the release is mounted is a no-op: no cloud call at all")
    func alreadyMounted() async throws {
        try await withSimulatedHost { host in
            _ = try await host.run()
            await host.cloud.state.clearCallLog()
            guard case .alreadyMounted = try await host.run().outcome else {
                Issue.record("the second run did something")
                return
            }
            #expect(await host.cloud.state.callLog().isEmpty)
        }
    }

    static let faultActions = ["DescribeSnapshots", "CreateVolume", "DescribeVolumes", "AttachVolume", "ModifyInstanceAttribute"]
    static let faultKinds: [FaultKind] = [.http500, .http503, .throttle, .reset, .noResponse, .truncated, .malformed, .html]

    /// A 200 whose body does not read, to a call that changes something: EC2 did it, so the
    /// agent checks the effect once and goes on — never a retry with backoff.
    static func answeredAndCarriedOut(_ action: String, _ kind: FaultKind) -> Bool {
        !action.hasPrefix("Describe") && (kind == .truncated || kind == .malformed)
    }

    @Test("each fault once in each action, in both dialects: still succeeds, with exactly one extra call (or none, when a 200 was carried out)",
          arguments: faultActions, faultKinds)
    func faultOnce(action: String, kind: FaultKind) async throws {
        for dialect in Dialect.allCases {
            try await withSimulatedHost(fastSettings(dialect)) { host in
                await host.cloud.state.addFault(Fault(target: action, kind: kind, trigger: .nthCall(1)))
                guard case .mounted = try await host.run().outcome else {
                    Issue.record("\(dialect): not mounted")
                    return
                }
                let calls = await host.cloud.state.callLog().filter { $0.action == action }
                #expect(calls.filter { $0.outcome.hasPrefix("fault:") }.count == 1)
                if Self.answeredAndCarriedOut(action, kind) {
                    #expect(calls.count == 1, "\(dialect): \(calls.map(\.outcome))")
                } else {
                    #expect(calls.count >= 2)
                    #expect(calls.count >= 2 && calls[1].outcome == "ok", "\(dialect): \(calls.map(\.outcome))")
                    if action != "DescribeVolumes" { #expect(calls.count == 2, "\(dialect)") }
                }
                #expect(await host.cloud.state.volumeTable().count == 1, "\(dialect)")
            }
        }
    }

    @Test("each fault persistent in each action, in both dialects: exit 69 in bounded time and no volume left — or, when every 200 was carried out, mounted",
          arguments: faultActions, faultKinds)
    func faultPersistent(action: String, kind: FaultKind) async throws {
        for dialect in Dialect.allCases {
            try await withSimulatedHost(fastSettings(dialect)) { host in
                await host.cloud.state.addFault(Fault(target: action, kind: kind, trigger: .always))
                let started = ContinuousClock.now
                let error = try await host.runError()
                let calls = await host.cloud.state.callLog().filter { $0.action == action }
                let alive = await host.cloud.state.volumeTable().filter { ["creating", "available", "in-use"].contains($0.state) }
                if Self.answeredAndCarriedOut(action, kind) {
                    #expect(error == nil, "\(dialect): \(String(describing: error))")
                    #expect(calls.count == 1, "\(dialect): \(calls.map(\.outcome))")
                    #expect(alive.count == 1 && host.isMounted, "\(dialect)")
                    return
                }
                #expect(error.map { ExitStatus(for: $0) } == .unavailable, "\(dialect): \(String(describing: error))")
                #expect(String(describing: error).contains(action), "\(dialect): \(String(describing: error))")
                // Three attempts, each at most the one-second hang, plus short backoffs and a
                // roll-back; the bound catches a run that does not end.
                #expect(ContinuousClock.now - started < .seconds(20))
                // Three attempts. libcurl itself retries once, silently, a request whose reused
                // keep-alive connection dies before any answer: so a reset of a read — or a hang,
                // which DevCloud ends with a reset — may show one more. Calls that change
                // something go over a fresh connection: never resent.
                let silentRetry = (kind == .reset || kind == .noResponse) && action.hasPrefix("Describe")
                #expect(silentRetry ? (3...4).contains(calls.count) : calls.count == 3, "\(dialect): \(calls.map(\.outcome))")
                #expect(alive.isEmpty, "\(dialect): \(alive.map(\.id))")
                #expect(!host.isMounted)
                #expect(try host.fstabText() == SimulatedHost.initialFstab)
            }
        }
    }

    @Test("an EC2 call that never answers ends at the per-attempt timeout: three timeouts, exit 69 naming it, no volume")
    func callTimesOut() async throws {
        var settings = fastSettings()
        // Far past the timeout: only the agent's timeout can end an attempt, however loaded the machine.
        settings.hangDuration = .seconds(60)
        try await withSimulatedHost(settings) { host in
            await host.cloud.state.addFault(Fault(target: "DescribeSnapshots", kind: .noResponse, trigger: .always))
            // DescribeSnapshots is the run's first EC2 call and the run ends there: only the hung call meets this timeout.
            var tuning = fastTuning()
            tuning.ec2Timeout = .seconds(1)
            let error = try await host.runError(tuning: tuning)
            #expect(error.map { ExitStatus(for: $0) } == .unavailable, "\(String(describing: error))")
            #expect(String(describing: error).contains("DescribeSnapshots") && String(describing: error).contains("no complete answer within 1s"),
                    "\(String(describing: error))")
            let calls = await host.cloud.state.callLog().filter { $0.action == "DescribeSnapshots" }
            #expect(calls.count == 3 && calls.allSatisfy { $0.outcome == "fault:noResponse" }, "\(calls.map(\.outcome))")
            #expect(await host.cloud.state.volumeTable().isEmpty)
        }
    }

    @Test("IAM denies AttachVolume: exit 77 at once, no retries, the new volume given back; DryRun reports the gap")
    func permissionDenied() async throws {
        try await withSimulatedHost { host in
            let cloud = host.cloud
            await cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "CreateVolume", "ModifyInstanceAttribute", "DeleteVolume"])
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .permissionDenied)
            #expect(String(describing: error).contains("ec2:AttachVolume"))
            #expect(await cloud.state.callLog().count("AttachVolume") == 1)
            #expect(await cloud.state.volumeTable().allSatisfy { $0.state == "deleting" })
            let verdicts = try await withSession(cloud) { session in
                let volume = try #require(VolumeID("vol-0123456789abcdef0"))
                return [
                    try session.ec2.dryRun("AttachVolume", session.ec2.attachParameters(volume, session.identity.instanceID, "/dev/sdf")),
                    try session.ec2.dryRun("CreateVolume", ["AvailabilityZone": session.identity.availabilityZone, "SnapshotId": releaseSnapshot]),
                ]
            }
            guard case .denied(let denied) = verdicts[0] else {
                Issue.record("AttachVolume dry run was not denied: \(verdicts[0])")
                return
            }
            #expect(denied.code == "UnauthorizedOperation")
            #expect(verdicts[1] == .permitted)
            let dry = await cloud.state.callLog().filter(\.dryRun)
            #expect(dry.map(\.outcome) == ["UnauthorizedOperation", "DryRunOperation"])
        }
    }

    @Test("a lost CreateVolume answer, in both dialects: the volume is found by its tags before any retry — one call, one volume",
          arguments: Dialect.allCases)
    func lostCreateVolumeAnswer(dialect: Dialect) async throws {
        try await withSimulatedHost(fastSettings(dialect)) { host in
            await host.cloud.state.addFault(Fault(target: "CreateVolume", kind: .lostResponse, trigger: .nthCall(1)))
            _ = try await host.run()
            let calls = await host.cloud.state.callLog()
            #expect(calls.count("CreateVolume") == 1)
            #expect(await host.cloud.state.volumeTable().count == 1)
        }
    }

    @Test("a crash after CreateVolume: a new client repeating the same call gets the same volume")
    func crashAfterCreateVolume() async throws {
        try await withCloud { cloud in
            let environment = try AgentEnvironment(cloud.environment)
            let ids = try await onThread {
                var ids: [String] = []
                for _ in 0..<2 {  // two "processes": nothing carried over but the environment
                    let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                    let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                                instance: session.identity.instanceID, settings: VolumeSettings())
                    ids.append(try session.ec2.createVolume(request).id.text)
                }
                return ids
            }
            #expect(ids[0] == ids[1])
            #expect(await cloud.state.volumeTable().count == 1)
        }
    }

    @Test("the same token with other parameters: IdempotentParameterMismatch, exit 78")
    func idempotentMismatch() async throws {
        try await withCloud { cloud in
            try await withSession(cloud) { session in
                var settings = VolumeSettings()
                let snapshot = try #require(SnapshotID(releaseSnapshot))
                _ = try session.ec2.createVolume(VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: snapshot,
                                                               instance: session.identity.instanceID, settings: settings))
                settings.sizeGiB = 20
                let error = try #require(throws: EC2CallError.self) {
                    try session.ec2.createVolume(VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: snapshot,
                                                               instance: session.identity.instanceID, settings: settings))
                }
                #expect(error.code == "IdempotentParameterMismatch")
                #expect(error.exitStatus == .configuration)
            }
        }
    }

    @Test("throttling with a tiny bucket: calls succeed, each throttled call waits a jittered time from the throttle range")
    func throttling() async throws {
        try await withCloud { cloud in
            var buckets = ThrottleBuckets()
            // One token a second: six calls need four seconds of refill, far more than six calls
            // take however busy the machine, so throttling is certain (a refill as fast as the
            // calls measured the machine: on a loaded one the bucket kept up).
            buckets.describe = BucketSize(capacity: 2, refillPerSecond: 1)
            await cloud.state.setBuckets(buckets)
            let environment = try AgentEnvironment(cloud.environment)
            let sink = CapturedLines()
            let logger = capturingLogger(sink, level: .warning)
            var throttledTuning = fastTuning(attempts: 20)
            throttledTuning.retry = RetryPolicy(maxAttempts: 20, baseDelay: .milliseconds(1), maxBackoff: .milliseconds(1),
                                                throttleWait: .milliseconds(100) ... .milliseconds(400))
            let tuning = throttledTuning
            try await onThread {
                let session = try CloudSession.connect(environment: environment, logger: logger, tuning: tuning)
                for _ in 0..<6 { _ = try session.ec2.describeVolumes() }
            }
            let throttled = await cloud.state.callLog().filter { $0.outcome == "RequestLimitExceeded" }
            #expect(throttled.count >= 3)
            // "EC2 DescribeVolumes: RequestLimitExceeded; retry N of 19 in Xms"
            var delays: [(retry: Int, milliseconds: Int64)] = []
            for line in sink.lines where line.contains("RequestLimitExceeded; retry") {
                let words = line.split(separator: " ")
                guard let retryIndex = words.firstIndex(of: "retry"), let retry = Int(words[retryIndex + 1]),
                      let delay = try? DurationText.parse(String(words.last ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
                else { continue }
                delays.append((retry, delay.wholeMilliseconds))
            }
            #expect(delays.count == throttled.count)
            // Not the exponential backoff (1 ms here): the throttle range, at every retry.
            for (retry, milliseconds) in delays {
                #expect((100...400).contains(milliseconds), "retry \(retry) waited \(milliseconds) ms")
            }
            #expect(Set(delays.map(\.milliseconds)).count > 1, "no jitter")
        }
    }

    @Test("AWS_RETRY_MODE=adaptive: after a throttled answer the client holds its own sends back; standard mode never does")
    func adaptive() async throws {
        // How many answers were throttled depends on how fast this machine sends (a loaded one
        // is slower than the bucket refills): that is printed, not judged. What the mode itself
        // does is judged: the hold before sending, which only a throttle starts.
        func run(_ mode: String) async throws -> (throttled: Int, holds: Int) {
            try await withCloud { cloud in
                var buckets = ThrottleBuckets()
                buckets.describe = BucketSize(capacity: 3, refillPerSecond: 1)
                await cloud.state.setBuckets(buckets)
                var tuning = fastTuning(attempts: 10)
                tuning.retry = RetryPolicy(maxAttempts: 10, baseDelay: .milliseconds(50), maxBackoff: .milliseconds(400),
                                           throttleWait: .milliseconds(100) ... .milliseconds(400))
                let lines = CapturedLines()
                try await withSession(cloud, tuning: tuning, environment: ["AWS_RETRY_MODE": mode], logger: capturingLogger(lines, level: .debug)) { session in
                    for _ in 0..<15 { _ = try session.ec2.describeVolumes() }
                }
                let throttled = await cloud.state.callLog().filter { $0.outcome == "RequestLimitExceeded" }.count
                return (throttled, lines.lines.filter { $0.contains("by the adaptive rate limit") }.count)
            }
        }
        let standard = try await run("standard")
        let adaptive = try await run("adaptive")
        print("15 DescribeVolumes against a 1/s bucket: \(standard.throttled) throttled answers in standard mode, \(adaptive.throttled) in adaptive mode (\(adaptive.holds) sends held back)")
        #expect(standard.throttled > 0 && adaptive.throttled > 0, "the bucket throttled neither mode: \(standard), \(adaptive)")
        #expect(standard.holds == 0)
        #expect(adaptive.holds > 0, "throttled \(adaptive.throttled) times, never held back")
    }

    @Test("credentials that expire mid-run are refreshed; no request is signed with expired ones")
    func credentialRotation() async throws {
        var settings = fastSettings()
        settings.roleCredentialLifetime = .seconds(4)
        settings.roleCredentialRotateBefore = .seconds(2)
        try await withCloud(settings) { cloud in
            var tuning = fastTuning()
            tuning.credentialRefreshWindow = .seconds(1)
            try await withSession(cloud, tuning: tuning) { session in
                let until = ContinuousClock.now + .seconds(6)
                while ContinuousClock.now < until {
                    _ = try session.ec2.describeVolumes()
                    SystemClock().sleep(for: .milliseconds(200))
                }
            }
            let calls = await cloud.state.callLog().ec2Calls()
            #expect(Set(calls.compactMap(\.accessKeyID)).count >= 2, "credentials were never rotated")
            #expect(calls.allSatisfy { $0.outcome == "ok" }, "\(Set(calls.map(\.outcome)))")
        }
    }

    @Test("credentials' expiry is judged on AWS's time: the same role credentials are usable on the local clock and too close to expiry on the corrected one")
    func expiryOnCorrectedClock() async throws {
        var settings = fastSettings()
        settings.roleCredentialLifetime = .seconds(3600)
        try await withCloud(settings) { cloud in
            let environment = try AgentEnvironment(cloud.environment)
            let outcomes = try await onThread { () -> [String] in
                // AWS's clock 20 minutes ahead of this one: the hour left is 40 minutes, less than the 50-minute window.
                try [0, 1200].map { (correction: Int64) -> String in
                    let imds = IMDSClient(settings: environment.imds, http: try HTTPClient(), logger: quietLogger)
                    let provider = CredentialsProvider(fixed: nil, imds: imds, time: AWSTime(clock: SystemClock(), correction: correction),
                                                       logger: quietLogger, refreshWindow: .seconds(50 * 60))
                    do {
                        _ = try provider.current()
                        return "usable"
                    } catch {
                        return "\(error)".contains("too soon to use") ? "expiring" : "\(error)"
                    }
                }
            }
            #expect(outcomes == ["usable", "expiring"])
        }
    }

    @Test("a local clock 15 minutes slow: one RequestExpired (or EC2's other answer, AuthFailure 401), then signing with EC2's time",
          arguments: [false, true])
    func clockSkew(authFailure: Bool) async throws {
        var settings = fastSettings()
        settings.skewIsAuthFailure = authFailure
        try await withCloud(settings) { cloud in
            let environment = try AgentEnvironment(cloud.environment)
            let lines = CapturedLines()
            let correction = try await onThread {
                let session = try CloudSession.connect(environment: environment, clock: RecordingClock(offsetSeconds: -900),
                                                       logger: capturingLogger(lines, level: .warning), tuning: fastTuning())
                _ = try session.ec2.describeVolumes()
                _ = try session.ec2.describeVolumes()
                return session.ec2.clockCorrection
            }
            #expect(abs(correction - 900) <= 2)
            let outcomes = await cloud.state.callLog().ec2Calls().map(\.outcome)
            #expect(outcomes == [authFailure ? "AuthFailure" : "RequestExpired", "ok", "ok"])
            #expect(lines.lines.filter { $0.contains("the local clock is") }.count == 1, "\(lines.lines)")
        }
    }

    @Test("a wrong secret key: SignatureDoesNotMatch, exit 77, not retried")
    func wrongSecret() async throws {
        try await withCloud { cloud in
            let environment = try AgentEnvironment(cloud.environment.merging([
                "AWS_ACCESS_KEY_ID": cloud.state.settings.staticAccessKeyID, "AWS_SECRET_ACCESS_KEY": "not-the-secret",
            ]) { _, new in new })
            let error = try await onThread { () -> EC2CallError? in
                let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                do {
                    _ = try session.ec2.describeVolumes()
                    return nil
                } catch {
                    return error as? EC2CallError
                }
            }
            #expect(error?.code == "SignatureDoesNotMatch")
            #expect(error?.exitStatus == .permissionDenied)
            #expect(await cloud.state.callLog().ec2Calls().count == 1)
        }
    }

    @Test("long-term keys from the environment are used instead of the role")
    func environmentCredentials() async throws {
        try await withSimulatedHost { host in
            let cloud = host.cloud
            let key = cloud.state.settings.staticAccessKeyID
            _ = try await host.run(environment: [
                "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": cloud.state.settings.staticSecretAccessKey,
            ])
            let calls = await cloud.state.callLog()
            #expect(calls.ec2Calls().allSatisfy { $0.accessKeyID == key })
            #expect(calls.count("meta-data/iam/security-credentials/") == 0)
        }
    }
}
