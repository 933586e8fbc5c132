import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// `snapmount publish` on a simulated release server: its release volume mounted by the boot
/// flow, the filesystem freeze recorded, EC2 and the published file real.
@Suite("Publish: freeze, snapshot, wait, publish, prune")
struct PublishTests {
    /// The release server as it is before a publish: its release mounted, `snap.txt` naming
    /// the release it runs.
    static func releaseServer(hang: Duration? = nil, _ body: @escaping @Sendable (SimulatedHost) async throws -> Void) async throws {
        var settings = fastSettings()
        settings.delays.snapshot = .milliseconds(400)
        if let hang { settings.hangDuration = hang }
        try await withSimulatedHost(settings) { host in
            guard case .mounted = try await host.run().outcome else {
                Issue.record("the boot flow did not mount the release")
                return
            }
            try FileManager.default.createDirectory(atPath: host.root + "/www", withIntermediateDirectories: true)
            try (releaseSnapshot + "\n").write(toFile: host.publishedFile, atomically: true, encoding: .utf8)
            await host.cloud.state.clearCallLog()
            try await body(host)
        }
    }

    static func text(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// How a publish that must fail failed (`nil`, recorded as an issue, if it succeeded).
    static func failure(_ publish: () async throws -> Void) async throws -> PublishRunError? {
        do {
            try await publish()
            Issue.record("publish succeeded")
            return nil
        } catch let failure as PublishRunError {
            return failure
        }
    }

    static func calls(_ host: SimulatedHost, _ action: String) async -> [CallRecord] {
        await host.cloud.state.callLog().filter { $0.action == action && !$0.dryRun }
    }

    @Test("publish: CreateSnapshot while frozen, thawed as soon as it answers; completed; snap.txt replaced, the previous id in snap.txt.prev")
    func happyPath() async throws {
        try await Self.releaseServer { host in
            let freezer = RecordingFreezer()
            let (outcome, checklist) = try await host.publish(freezer: freezer)
            guard case .published(let id, let previous, let deleted) = outcome else {
                Issue.record("\(outcome)")
                return
            }
            #expect(checklist.map(\.step) == [.lock, .identity, .credentials, .volume, .manifest, .snapshot, .wait, .mark, .publish, .prune])
            #expect(checklist.allSatisfy { $0.mark != .failed })
            #expect(previous?.text == releaseSnapshot)
            #expect(deleted.isEmpty)
            #expect(Self.text(host.publishedFile) == id.text + "\n")
            #expect(Self.text(host.publishedFile + ".prev") == releaseSnapshot + "\n")

            // One freeze, thawed; CreateSnapshot inside it.
            let spans = freezer.spans
            #expect(spans.count == 1)
            #expect(!freezer.isFrozen)
            let create = await Self.calls(host, "CreateSnapshot")
            #expect(create.count == 1)
            if let span = spans.first, let end = span.to, let call = create.first {
                let at = host.cloud.state.started + .milliseconds(Int64(call.time * 1000))
                #expect(span.from <= at + .milliseconds(5) && at <= end + .milliseconds(5), "CreateSnapshot outside the freeze")
                // Thawed when the call returned, not at the freeze limit (10 s).
                #expect(end - span.from < .seconds(5), "frozen for \(end - span.from)")
            }

            // The snapshot: of the mounted volume, tagged, completed.
            let snapshot = try #require(await host.cloud.state.snapshot(id.text))
            let volume = try #require(await host.cloud.state.volumeTable().first { $0.attachment != nil })
            #expect(snapshot.state == "completed")
            #expect(snapshot.volumeID == volume.id)
            #expect(snapshot.tags?[SnapshotRequest.releaseTag] == "release")
            #expect(snapshot.tags?[SnapshotRequest.sourceVolumeTag] == volume.id)
            // The identity: in the filesystem (written before the freeze), on the snapshot, on the source volume.
            let manifest = try #require(ReleaseManifest.load(in: host.mountPoint))
            #expect(snapshot.tags?[ReleaseTags.releaseID] == manifest.id.text)
            #expect(snapshot.tags?[ReleaseTags.output] == host.publishedFile)
            #expect(volume.tags[ReleaseTags.releaseID] == manifest.id.text)
            #expect(volume.tags[ReleaseTags.role] == ReleaseTags.sourceRole)
            #expect(snapshot.description?.hasPrefix("snapmount publish of release (\(host.mountPoint) on \(volume.id)) at ") == true)
            // The wait polled, then stopped.
            #expect(await Self.calls(host, "DescribeSnapshots").count >= 1)
        }
    }

    @Test("a snapshot that ends in error: exit 69, snap.txt and snap.txt.prev untouched")
    func snapshotError() async throws {
        try await Self.releaseServer { host in
            await host.cloud.state.setSnapshotsFail(true)
            let failure = try await Self.failure { _ = try await host.publish(freezer: RecordingFreezer()) }
            #expect(failure?.status == .unavailable)
            #expect(failure?.message.contains("ended in state error") == true, "\(failure?.message ?? "")")
            #expect(failure?.message.contains("the published id is unchanged") == true)
            #expect(failure?.checklist.last?.step == .snapshot, "the run ended in the wait step")
            #expect(Self.text(host.publishedFile) == releaseSnapshot + "\n")
            #expect(!FileManager.default.fileExists(atPath: host.publishedFile + ".prev"))
        }
    }

    @Test("CreateSnapshot's answer lost: the snapshot it made anyway is deleted, the freeze is made again, one snapshot published")
    func lostAnswer() async throws {
        try await Self.releaseServer { host in
            await host.cloud.state.addFault(Fault(target: "CreateSnapshot", kind: .lostResponse, trigger: .nthCall(1)))
            let freezer = RecordingFreezer()
            let id = try #require(try await host.publish(freezer: freezer).outcome.publishedID)
            #expect(freezer.spans.count == 2)
            #expect(!freezer.isFrozen)
            #expect(await Self.calls(host, "DeleteSnapshot").count == 1)
            let made = await host.cloud.state.snapshotTable().filter { $0.id != releaseSnapshot }
            #expect(made.map(\.id) == [id.text], "only the published snapshot is left")
            #expect(Self.text(host.publishedFile) == id.text + "\n")
        }
    }

    @Test("CreateSnapshot never answers: thawed at the freeze limit every round; after the rounds, exit 69 with the id unchanged")
    func hangingCall() async throws {
        // The hang (60 s) is far longer than the freeze limit (1 s): a thaw in seconds is the limit's.
        try await Self.releaseServer(hang: .seconds(60)) { host in
            await host.cloud.state.addFault(Fault(target: "CreateSnapshot", kind: .noResponse, trigger: .always))
            let freezer = RecordingFreezer()
            let started = ContinuousClock.now
            let failure = try await Self.failure { _ = try await host.publish(freezeLimit: .seconds(1), freezer: freezer) }
            #expect([.unavailable, .timedOut].contains(failure?.status), "\(failure?.message ?? "")")
            #expect(freezer.spans.count == 3)
            #expect(!freezer.isFrozen)
            for span in freezer.spans {
                let held = (span.to ?? ContinuousClock.now) - span.from
                #expect(held >= .milliseconds(900) && held < .seconds(10), "frozen for \(held)")
            }
            #expect(ContinuousClock.now - started < .seconds(15))
            #expect(Self.text(host.publishedFile) == releaseSnapshot + "\n")
        }
    }

    @Test("throttled CreateSnapshot: thawed before the wait, frozen again, published")
    func throttled() async throws {
        try await Self.releaseServer { host in
            await host.cloud.state.addFault(Fault(target: "CreateSnapshot", kind: .throttle, trigger: .nthCall(1)))
            let freezer = RecordingFreezer()
            _ = try #require(try await host.publish(freezer: freezer).outcome.publishedID)
            #expect(freezer.spans.count == 2)
            if freezer.spans.count == 2, let firstEnd = freezer.spans[0].to {
                #expect(freezer.spans[1].from - firstEnd >= .milliseconds(15), "the throttle wait is spent thawed")
            }
        }
    }

    @Test("not root: the freeze is refused with 77 before anything is created")
    func freezeRefused() async throws {
        try await Self.releaseServer { host in
            let freezer = RecordingFreezer()
            freezer.refuse(EPERM)
            let failure = try await Self.failure { _ = try await host.publish(freezer: freezer) }
            #expect(failure?.status == .permissionDenied)
            #expect(failure?.message.contains("publish needs root") == true)
            #expect(await Self.calls(host, "CreateSnapshot").isEmpty)
        }
    }

    @Test("dry run: a checklist, CreateSnapshot with DryRun, no freeze, nothing written")
    func dryRun() async throws {
        try await Self.releaseServer { host in
            let freezer = RecordingFreezer()
            let (outcome, checklist) = try await host.publish(.check, keep: 3, freezer: freezer)
            #expect(outcome == .checked(.success), "\(checklist.map(\.line))")
            // lock, identity, credentials, volume, manifest, snapshot, wait —, mark —, publish, prune
            #expect(checklist.map(\.mark) == [.ok, .ok, .ok, .ok, .ok, .ok, .notApplicable, .notApplicable, .ok, .ok], "\(checklist.map(\.line))")
            #expect(checklist.first { $0.step == .snapshot }?.detail.contains("(DryRunOperation)") == true)
            #expect(freezer.spans.isEmpty)
            let calls = await host.cloud.state.callLog()
            #expect(calls.filter { $0.isMutating && !$0.dryRun }.isEmpty)
            // Tagging the volume as the release source is checked too.
            #expect(calls.filter(\.dryRun).map(\.action) == ["CreateTags", "CreateSnapshot"])
            #expect(Self.text(host.publishedFile) == releaseSnapshot + "\n")
            #expect(await host.cloud.state.snapshotTable().count == 1)
        }
    }

    @Test("dry run where IAM denies CreateSnapshot: ✗ snapshot, exit 77")
    func dryRunDenied() async throws {
        try await Self.releaseServer { host in
            await host.cloud.state.setPermissions(["DescribeVolumes", "DescribeSnapshots", "CreateTags"])
            let (outcome, checklist) = try await host.publish(.check, freezer: RecordingFreezer())
            #expect(outcome == .checked(.permissionDenied), "\(checklist.map(\.line))")
            #expect(checklist.first { $0.step == .snapshot }?.mark == .failed)
        }
    }

    @Test("--keep 3: the oldest snapshots of this release that publish made go; the previous one, other releases and others' snapshots stay")
    func keep() async throws {
        try await Self.releaseServer { host in
            let state = host.cloud.state
            // As publish marks them: the release, and the output they were published to.
            func old(_ id: String, _ day: Int, release: String? = "release") async {
                await state.addSnapshot(DevSnapshot(id: id, startTime: "2026-11-0\(day)T10:00:00.000Z",
                                                    tags: release.map { [SnapshotRequest.releaseTag: $0, ReleaseTags.output: host.publishedFile] }))
            }
            await old("snap-00000000000000001", 1)  // the oldest, but snap.txt names it: the previous one
            await old("snap-00000000000000002", 2)
            await old("snap-00000000000000003", 3)
            await old("snap-00000000000000004", 4)
            await old("snap-00000000000000005", 5, release: "other")
            await old("snap-00000000000000006", 6, release: nil)
            // Marked by a publish from before outputs were tagged: what it was published to is unknown, so it stays.
            await state.addSnapshot(DevSnapshot(id: "snap-00000000000000007", startTime: "2026-11-01T09:00:00.000Z",
                                                tags: [SnapshotRequest.releaseTag: "release"]))
            try "snap-00000000000000001\n".write(toFile: host.publishedFile, atomically: true, encoding: .utf8)
            let (id, previous, deleted) = try #require(try await host.publish(keep: 3, freezer: RecordingFreezer()).outcome.published)
            #expect(previous?.text == "snap-00000000000000001")
            // Kept: the new one, 4 and 3 (the three newest), and 1 (the previous one).
            #expect(Set(deleted.map(\.text)) == ["snap-00000000000000002"])
            let left = Set(await state.snapshotTable().map(\.id))
            #expect(left.isSuperset(of: [id.text, "snap-00000000000000001", "snap-00000000000000003", "snap-00000000000000004",
                                         "snap-00000000000000005", "snap-00000000000000006", "snap-00000000000000007", releaseSnapshot]))
            #expect(!left.contains("snap-00000000000000002"))
        }
    }

    @Test("--keep never deletes what another output publishes: one prod publish, three staging publishes with --keep 2 — prod's snapshot stays")
    func keepSparesOtherOutputs() async throws {
        try await Self.releaseServer { host in
            let prod = host.root + "/www/prod-snap.txt"
            try (releaseSnapshot + "\n").write(toFile: prod, atomically: true, encoding: .utf8)
            let prodID = try #require(try await host.publish(output: prod, freezer: RecordingFreezer()).outcome.publishedID)
            var staging: [SnapshotID] = []
            for _ in 0..<3 {
                staging.append(try #require(try await host.publish(keep: 2, freezer: RecordingFreezer()).outcome.publishedID))
            }
            let left = Set(await host.cloud.state.snapshotTable().map(\.id))
            #expect(left.contains(prodID.text), "the snapshot prod's snap.txt names")
            #expect(left.contains(staging[2].text) && left.contains(staging[1].text), "staging's current and previous")
            #expect(!left.contains(staging[0].text), "staging's oldest, beyond --keep 2")
        }
    }

    @Test("--keep: an output another publish of the release writes cannot be read — nothing is deleted, and the step says why")
    func keepUnreadableOutput() async throws {
        try await Self.releaseServer { host in
            let prod = host.root + "/www/prod-snap.txt"
            try (releaseSnapshot + "\n").write(toFile: prod, atomically: true, encoding: .utf8)
            _ = try #require(try await host.publish(output: prod, freezer: RecordingFreezer()).outcome.publishedID)
            try FileManager.default.removeItem(atPath: prod)
            for _ in 0..<3 { _ = try await host.publish(keep: 2, freezer: RecordingFreezer()) }
            let (_, checklist) = try await host.publish(keep: 2, freezer: RecordingFreezer())
            let prune = try #require(checklist.first { $0.step == .prune })
            #expect(prune.detail.hasPrefix("kept every snapshot: cannot read \(prod)"), "\(prune.detail)")
            #expect(await Self.calls(host, "DeleteSnapshot").isEmpty)
        }
    }

    @Test("strays: a snapshot publish made and never marked (a round that failed late, a publish that died) is deleted by the next publish, never chosen by a tag: source")
    func straysSweptAndNeverChosen() async throws {
        try await Self.releaseServer { host in
            let volume = try #require(await host.cloud.state.volumeTable().first { $0.attachment != nil })
            // What a dead publish left: completed, tagged by its attempt, never marked.
            await host.cloud.state.addSnapshot(DevSnapshot(id: "snap-0000000000000aaa1", startTime: "2026-12-02T10:00:00.000Z", volumeID: volume.id,
                                                           tags: [SnapshotRequest.attemptTag: "dead", SnapshotRequest.sourceVolumeTag: volume.id,
                                                                  ReleaseTags.releaseID: "rel-20261202T100000Z-deaddead"]))
            // A tag: source never takes it, although it is the only one with the tag.
            let environment = try AgentEnvironment(host.cloud.environment)
            let error = await #expect(throws: SnapshotSourceError.self) {
                try await onThread {
                    try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                        .publishedID(.tag(key: ReleaseTags.releaseID, value: "rel-20261202T100000Z-deaddead"), owner: .selfAccount)
                }
            }
            #expect(error != nil)
            // The next publish deletes it before it snapshots, and says so.
            let (outcome, checklist) = try await host.publish(freezer: RecordingFreezer())
            _ = try #require(outcome.publishedID)
            #expect(await host.cloud.state.snapshot("snap-0000000000000aaa1") == nil)
            let line = try #require(checklist.first { $0.step == .snapshot })
            #expect(line.detail.contains("deleted 1 unpublished snapshot(s) an earlier publish left (snap-0000000000000aaa1)"), "\(line.detail)")
        }
    }

    @Test("the volume: not a mount point, or not an EBS device → 78 naming what to do; --volume attached elsewhere → 78")
    func volumeRefusals() async throws {
        try await Self.releaseServer { host in
            host.mounter.unmountAll()
            let notMounted = try await Self.failure { _ = try await host.publish(freezer: RecordingFreezer()) }
            #expect(notMounted?.status == .configuration)
            #expect(notMounted?.message.contains("is not a mount point") == true)
            try host.mounter.mount(device: "/dev/xvdz", on: host.mountPoint, type: "ext4", options: [])
            let notEBS = try await Self.failure { _ = try await host.publish(freezer: RecordingFreezer()) }
            #expect(notEBS?.status == .configuration)
            #expect(notEBS?.message.contains("--volume") == true, "\(notEBS?.message ?? "")")
            let other = try #require(VolumeID("vol-0fffffffffffffff1"))
            let unknown = try await Self.failure { _ = try await host.publish(volume: other, freezer: RecordingFreezer()) }
            #expect(unknown?.status == .configuration)
            #expect(unknown?.message.contains("knows no volume") == true, "\(unknown?.message ?? "")")
            #expect(await Self.calls(host, "CreateSnapshot").isEmpty)
        }
    }
}
