import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// `snapmount status` and `status --json`: a fresh boot, after a reboot, not mounted, the
/// source unreachable, and a newer (or older) release published.
@Suite("snapmount status")
struct StatusTests {
    static func status(_ host: SimulatedHost) async throws -> StatusReport {
        let configuration = try host.configuration()
        let environment = try AgentEnvironment(host.cloud.environment)
        let edges = host.edges
        return try await onThread {
            StatusReport.collect(configuration: configuration, environment: environment, host: edges, logger: quietLogger, tuning: fastTuning(attempts: 2))
        }
    }

    @Test("a fresh boot: mounted from the volume, the snapshot from the record, up to date")
    func freshBoot() async throws {
        try await withSimulatedHost { host in
            let record = try #require(try await host.run().outcome.mountedRecord)
            await host.cloud.state.clearCallLog()
            let report = try await Self.status(host)
            #expect(report.mounted && report.volume == record.volume && report.device == record.device)
            #expect(report.snapshot == releaseSnapshot && report.snapshotOrigin == "record")
            #expect(report.comparison == .same && report.newerPublished == false)
            #expect(report.text.contains("source:    \(releaseSnapshot) — up to date"))
            // Up to date is known without EC2.
            #expect(await host.cloud.state.callLog().filter { $0.service == "ec2" }.isEmpty)
            let json = report.json
            #expect(json["snapshot"]?.string == releaseSnapshot && json["comparison"]?.string == "same")
            #expect(json["newerPublished"] == .bool(false))
        }
    }

    @Test("after a reboot whose record is gone: the run refreshes it, and status asks EC2 for the volume's snapshot")
    func afterReboot() async throws {
        try await withSimulatedHost { host in
            let record = try #require(try await host.run().outcome.mountedRecord)
            // An older agent kept its record in /run; systemd mounted the fstab line at boot.
            try FileManager.default.removeItem(atPath: host.root + "/state/state.json")
            let outcome = try await host.run().outcome
            guard case .alreadyMounted = outcome else { Issue.record("\(outcome)"); return }
            let refreshed = try #require(MountRecord.load(host.root + "/state/state.json"))
            #expect(refreshed.volume == record.volume && refreshed.snapshot == nil)
            let report = try await Self.status(host)
            #expect(report.snapshot == releaseSnapshot && report.snapshotOrigin == "EC2")
            #expect(report.comparison == .same)
            #expect(report.text.contains("(the volume's snapshot, from EC2; no record of this mount)"))
            // The next run keeps what the record knew.
            host.reboot()
            _ = try await host.run()
            #expect(MountRecord.load(host.root + "/state/state.json")?.volume == record.volume)
        }
    }

    @Test("not mounted: says so, and still shows the source")
    func notMounted() async throws {
        try await withSimulatedHost { host in
            let report = try await Self.status(host)
            #expect(!report.mounted && report.snapshot == nil && report.comparison == nil)
            #expect(report.text.hasPrefix("mounted:   no — \(host.mountPoint) is not mounted\n"))
            #expect(report.text.contains("source:    \(releaseSnapshot)\n"))
            #expect(report.json["mounted"] == .bool(false))
        }
    }

    @Test("the source unreachable: the mount is still reported, the source's error said")
    func sourceUnreachable() async throws {
        try await withSimulatedHost { host in
            _ = try await host.run()
            await host.cloud.state.setRelease(ReleaseResponse(status: 503, body: "down"))
            let report = try await Self.status(host)
            #expect(report.mounted && report.snapshot == releaseSnapshot)
            #expect(report.sourceSnapshot == nil && report.comparison == nil && report.newerPublished == nil)
            #expect(report.text.contains("source:    unavailable: "))
            #expect(report.json["sourceError"]?.string?.contains("503") == true)
        }
    }

    @Test("another snapshot published: newer or older by its start time, 'different' when that cannot be told", arguments: [
        ("2026-11-28T10:00:00.000Z", ReleaseComparison.newer, "a newer release is published"),
        ("2026-11-27T10:00:00.000Z", .older, "an older release is published (a rollback)"),
        ("2026-11-28T09:00:00.000Z", .different, "a different release is published"),
    ])
    func published(startTime: String, comparison: ReleaseComparison, words: String) async throws {
        try await withSimulatedHost { host in
            _ = try await host.run()
            await host.cloud.state.addSnapshot(DevSnapshot(id: "snap-0123456789abcdef9", sizeGiB: 1, startTime: startTime))
            await host.cloud.state.setRelease(ReleaseResponse(body: "snap-0123456789abcdef9\n"))
            let report = try await Self.status(host)
            #expect(report.comparison == comparison)
            #expect(report.newerPublished == (comparison == .newer ? true : comparison == .older ? false : nil))
            #expect(report.text.contains("source:    snap-0123456789abcdef9 — \(words)"), "\(report.text)")
        }
    }

    @Test("the truth travels with the bytes: a pushed host's status reads the manifest; after a push that failed half way it says no known release")
    func pushedAndHalfPushed() async throws {
        try await withSimulatedHost { host in
            let s1 = "rel-20261201T100000Z-11111111", s2 = "rel-20261202T100000Z-22222222"
            await host.cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1, tags: [ReleaseTags.releaseID: s1, SnapshotRequest.releaseTag: "release"]))
            let record = try #require(try await host.run().outcome.mountedRecord)
            #expect(record.release == s1)
            // A push brought S2: its manifest, and the volume's tag.
            try ReleaseManifest(id: try #require(ReleaseID(s2)), release: "release", createdAt: "").save(in: host.mountPoint)
            await host.cloud.state.tagVolume(record.volume, ReleaseTags.releaseID, s2)
            let pushed = try await Self.status(host)
            #expect(pushed.release == s2 && pushed.releaseOrigin == "manifest")
            #expect(pushed.snapshot == nil || pushed.snapshot != releaseSnapshot, "the boot's snapshot is not what it holds now")
            #expect(pushed.comparison != .same, "\(pushed.text)")
            // The next push failed half way: the manifest went first, the tag says unknown.
            try FileManager.default.removeItem(atPath: ReleaseManifest.path(in: host.mountPoint))
            await host.cloud.state.tagVolume(record.volume, ReleaseTags.releaseID, ReleaseID.unknownTag)
            let half = try await Self.status(host)
            #expect(half.release == nil, "\(half.text)")
            #expect(half.text.contains("release:   no known release"), "\(half.text)")
        }
    }
}
