import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// The other sources: an SSM parameter (`ssm:/NAME`) and the newest snapshot with a tag
/// (`tag:KEY=VALUE`), for the boot, the dry run, status and publish.
@Suite("Sources: ssm:/NAME and tag:KEY=VALUE")
struct SourcesTests {
    static let parameter = "/releases/web"
    static let newer = "snap-0123456789abcdef1"

    static func failure(_ host: SimulatedHost, _ extra: [ConfigKey: String]) async throws -> (any Error)? {
        try await host.runError(extra)
    }

    @Test("ssm:/NAME: the boot reads the parameter (GetParameter, signed for ssm) and mounts the snapshot it names")
    func ssmSource() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.setParameter(Self.parameter, releaseSnapshot + "\n")
            let record = try #require(try await host.run(.apply, [.source: "ssm:" + Self.parameter]).outcome.mountedRecord)
            #expect(record.snapshot == releaseSnapshot)
            let calls = await host.cloud.state.callLog()
            // Read twice: once to choose, once after mounting; snap.txt never.
            #expect(calls.filter { $0.service == "ssm" && $0.action == "GetParameter" && $0.outcome == "ok" }.count == 2)
            #expect(calls.filter { $0.service == "release" }.isEmpty)
        }
    }

    @Test("a clock two hours off: the ssm: source corrects it from SSM's Date (one InvalidSignatureException), EC2 signs on the corrected time from its first call, one warning line, mounted", arguments: [Int64(-7200), 7200])
    func ssmClockSkew(offset: Int64) async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.setParameter(Self.parameter, releaseSnapshot + "\n")
            let lines = CapturedLines()
            let (outcome, _) = try await host.run(.apply, [.source: "ssm:" + Self.parameter], clock: RecordingClock(offsetSeconds: offset),
                                                  logger: capturingLogger(lines, level: .warning))
            let record = try #require(outcome.mountedRecord)
            #expect(record.snapshot == releaseSnapshot)
            let calls = await host.cloud.state.callLog()
            #expect(calls.filter { $0.service == "ssm" && $0.outcome == "InvalidSignatureException" }.count == 1, "\(calls.map { "\($0.service) \($0.action) \($0.outcome)" })")
            #expect(calls.filter { $0.service == "ec2" && $0.outcome != "ok" }.isEmpty, "\(calls.map { "\($0.service) \($0.action) \($0.outcome)" })")
            #expect(lines.lines.filter { $0.contains("the local clock is") }.count == 1, "\(lines.lines)")
            #expect(lines.lines.count == 1, "one warning line in all: \(lines.lines)")
        }
    }

    @Test("ssm: a missing parameter is 69, a value that is not one id is 69 naming it, a role without ssm:GetParameter is 77")
    func ssmFailures() async throws {
        try await withSimulatedHost { host in
            let source: [ConfigKey: String] = [.source: "ssm:" + Self.parameter]
            let missing = try await Self.failure(host, source)
            #expect(missing.map { ExitStatus(for: $0) } == .unavailable)
            #expect("\(missing.map { "\($0)" } ?? "")".contains("ParameterNotFound"))

            await host.cloud.state.setParameter(Self.parameter, "<html>not an id</html>")
            let garbage = try await Self.failure(host, source)
            #expect(garbage.map { ExitStatus(for: $0) } == .unavailable)
            #expect("\(garbage.map { "\($0)" } ?? "")".contains("ssm:\(Self.parameter)"))

            await host.cloud.state.setParameter(Self.parameter, releaseSnapshot)
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes"])
            let denied = try await Self.failure(host, source)
            #expect(denied.map { ExitStatus(for: $0) } == .permissionDenied)
            #expect(await host.cloud.state.volumeTable().isEmpty)
        }
    }

    @Test("tag:KEY=VALUE: the newest completed snapshot of the allowed owner with the tag; pending, untagged and others' are passed over")
    func tagSource() async throws {
        try await withSimulatedHost { host in
            let state = host.cloud.state
            await state.addSnapshot(DevSnapshot(id: "snap-00000000000000001", startTime: "2026-11-01T10:00:00.000Z", tags: ["release": "web"]))
            await state.addSnapshot(DevSnapshot(id: Self.newer, startTime: "2026-11-02T10:00:00.000Z", tags: ["release": "web"]))
            await state.addSnapshot(DevSnapshot(id: "snap-00000000000000003", state: "pending", startTime: "2026-11-03T10:00:00.000Z",
                                                tags: ["release": "web"]))
            await state.addSnapshot(DevSnapshot(id: "snap-00000000000000004", ownerID: "999999999999",
                                                startTime: "2026-11-04T10:00:00.000Z", tags: ["release": "web"]))
            await state.addSnapshot(DevSnapshot(id: "snap-00000000000000005", startTime: "2026-11-05T10:00:00.000Z", tags: ["release": "api"]))
            let record = try #require(try await host.run(.apply, [.source: "tag:release=web"]).outcome.mountedRecord)
            #expect(record.snapshot == Self.newer)
            let describes = await state.callLog().filter { $0.action == "DescribeSnapshots" }
            #expect(describes.first?.parameters["Owner.1"] == "self")
        }
    }

    @Test("tag: nothing tagged is 69 saying nothing is published; snapshot-owner any with a tag source is a configuration error")
    func tagFailures() async throws {
        try await withSimulatedHost { host in
            let none = try await Self.failure(host, [.source: "tag:release=nothing"])
            #expect(none.map { ExitStatus(for: $0) } == .unavailable)
            #expect("\(none.map { "\($0)" } ?? "")".contains("no completed snapshot"))
            #expect(throws: ConfigurationError.self) { try host.configuration([.source: "tag:release=web", .snapshotOwner: "any"]) }
        }
    }

    @Test("publish --output ssm:/NAME puts the new id in the parameter (PutParameter) and returns the one it replaced")
    func publishToSSM() async throws {
        var settings = fastSettings()
        settings.delays.snapshot = .milliseconds(300)
        try await withSimulatedHost(settings) { host in
            _ = try #require(try await host.run().outcome.mountedRecord)
            await host.cloud.state.setParameter(Self.parameter, releaseSnapshot)
            let (id, previous, _) = try #require(try await host.publish(output: "ssm:" + Self.parameter, freezer: RecordingFreezer()).outcome.published)
            #expect(previous?.text == releaseSnapshot)
            #expect(await host.cloud.state.parameter(Self.parameter) == id.text)
            #expect(await host.cloud.state.callLog().contains { $0.service == "ssm" && $0.action == "PutParameter" && $0.outcome == "ok" })
        }
    }

    @Test("status with an ssm: source says what the parameter names")
    func statusSSM() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.setParameter(Self.parameter, releaseSnapshot)
            let configuration = try host.configuration([.source: "ssm:" + Self.parameter])
            let environment = try AgentEnvironment(host.cloud.environment)
            let edges = host.edges
            let report = try await onThread {
                StatusReport.collect(configuration: configuration, environment: environment, host: edges, logger: quietLogger,
                                     tuning: fastTuning(attempts: 2))
            }
            #expect(report.sourceSnapshot == releaseSnapshot, "\(report.sourceError ?? "")")
        }
    }
}
