import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// Runs an async body from a plain thread (a flow's step hook) and waits for it.
func blocking(_ body: @escaping @Sendable () async -> Void) {
    let done = DispatchSemaphore(value: 0)
    Task {
        await body()
        done.signal()
    }
    done.wait()
}

final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    /// True the first time only.
    func claim() -> Bool { lock.withLock { defer { done = true }; return !done } }
}

/// The race the article left open: a release published while an instance boots, or while
/// it was stopped. Every boot ends on the release the source names, with one volume.
@Suite("The race closed: every boot ends on the published release")
struct ConvergeTests {
    static let newer = "snap-0123456789abcdef1"

    static func publishNewer(_ host: SimulatedHost) async {
        await host.cloud.state.setRelease(ReleaseResponse(body: newer + "\n"))
    }

    /// The volumes still alive (a deleted one stays `deleting` for a moment).
    static func alive(_ host: SimulatedHost) async -> [DevVolume] {
        await host.cloud.state.volumeTable().filter { $0.state != "deleting" }
    }

    @Test("a release published at any step boundary of a first boot: mounted from the newest snapshot, one volume, one fstab line",
          arguments: [BootStep.lock, .check, .identity, .credentials, .snapshot, .volume, .attach, .device, .filesystem, .fstab, .mount])
    func publishedDuringBoot(step: BootStep) async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let once = Once()
            let (outcome, _) = try await host.run(afterStep: { done in
                guard done == step, once.claim() else { return }
                blocking { await Self.publishNewer(host) }
            })
            guard case .mounted(let record) = outcome else {
                Issue.record("\(outcome)")
                return
            }
            #expect(record.snapshot == Self.newer)
            let volumes = await Self.alive(host)
            #expect(volumes.count == 1, "\(volumes.map { "\($0.id) \($0.snapshotID ?? "") \($0.state)" })")
            #expect(volumes.first?.snapshotID == Self.newer)
            #expect(volumes.first?.id == record.volume)
            #expect(volumes.first?.attachment?.deleteOnTermination == true)
            #expect(try host.mounter.mounts().filter { $0.mountPoint == resolvedPath(host.mountPoint) }.count == 1)
            #expect(try host.fstabText().components(separatedBy: "LABEL=code_release").count == 2)
            let creates = await host.cloud.state.callLog().filter { $0.action == "CreateVolume" && !$0.dryRun }
            // Published before the snapshot step: the first read already names it.
            #expect(creates.count == ([.lock, .check, .identity, .credentials].contains(step) ? 1 : 2))
        }
    }

    @Test("a reboot after a release was published: the old volume is detached and deleted before the new one is attached")
    func publishedWhileStopped() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let first = try #require(try await host.run().outcome.mountedRecord)
            host.reboot()
            await Self.publishNewer(host)
            await host.cloud.state.clearCallLog()
            guard case .mounted(let second) = try await host.run().outcome else {
                Issue.record("not mounted after the reboot")
                return
            }
            #expect(second.snapshot == Self.newer)
            #expect(second.volume != first.volume)
            let volumes = await Self.alive(host)
            #expect(volumes.map(\.id) == [second.volume])
            let actions = await host.cloud.state.callLog().filter { $0.service == "ec2" && $0.isMutating }.map(\.action)
            // The old one goes before the new one is attached: never two with one label.
            let detach = actions.firstIndex(of: "DetachVolume")
            let attach = actions.firstIndex(of: "AttachVolume")
            #expect(detach != nil && attach != nil && detach! < attach!, "\(actions)")
            #expect(actions.contains("DeleteVolume"))
        }
    }

    @Test("a reboot after a push brought the volume to the published release (its identity tag): no swap, no CreateVolume")
    func pushedWhileRunning() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let first = try #require(try await host.run().outcome.mountedRecord)
            await host.cloud.state.tagVolume(first.volume, ReleaseTags.releaseID, Self.newer)
            host.reboot()
            await Self.publishNewer(host)
            await host.cloud.state.clearCallLog()
            let second = try #require(try await host.run().outcome.mountedRecord)
            #expect(second.volume == first.volume)
            #expect(second.snapshot == Self.newer && second.release == Self.newer)
            let mutating = await host.cloud.state.callLog().filter { $0.service == "ec2" && $0.isMutating }
            #expect(mutating.isEmpty, "\(mutating.map(\.action))")
        }
    }

    @Test("a rollback reaches a pushed host: booted on S1, pushed to S2, S1 published again — the reboot swaps the volume for one of S1")
    func rollbackAfterPush() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let first = try #require(try await host.run().outcome.mountedRecord)
            // The push of S2 made the volume hold S2; then S1 (releaseSnapshot) is published again.
            await host.cloud.state.tagVolume(first.volume, ReleaseTags.releaseID, Self.newer)
            host.reboot()
            let second = try #require(try await host.run().outcome.mountedRecord)
            #expect(second.volume != first.volume, "the S1 creation tag no longer decides")
            #expect(second.snapshot == releaseSnapshot && second.release == releaseSnapshot)
            #expect(await Self.alive(host).map(\.id) == [second.volume])
        }
    }

    @Test("a push that failed half way (the volume holds no known release): the next boot heals it from the published snapshot")
    func halfPushedHeals() async throws {
        try await withSimulatedHost { host in
            let first = try #require(try await host.run().outcome.mountedRecord)
            await host.cloud.state.tagVolume(first.volume, ReleaseTags.releaseID, ReleaseID.unknownTag)
            host.reboot()
            let second = try #require(try await host.run().outcome.mountedRecord)
            #expect(second.volume != first.volume)
            #expect(await Self.alive(host).map(\.id) == [second.volume])
        }
    }

    @Test("the release server reboots after a publish: its source volume is mounted as it is — no DetachVolume, no DeleteVolume, no CreateVolume")
    func releaseServerReboot() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let first = try #require(try await host.run().outcome.mountedRecord)
            // publish tagged it as the source, and published a snapshot of it.
            await host.cloud.state.tagVolume(first.volume, ReleaseTags.role, ReleaseTags.sourceRole)
            host.reboot()
            await Self.publishNewer(host)
            let (_, checklist) = try await host.run(.check)
            let line = try #require(checklist.first { $0.step == .volume })
            #expect(line.detail.hasPrefix("would mount \(first.volume) as it is"), "\(line.detail)")
            await host.cloud.state.clearCallLog()
            let second = try #require(try await host.run().outcome.mountedRecord)
            #expect(second.volume == first.volume)
            let mutating = await host.cloud.state.callLog().filter { $0.service == "ec2" && $0.isMutating }.map(\.action)
            #expect(!mutating.contains("DetachVolume") && !mutating.contains("DeleteVolume") && !mutating.contains("CreateVolume"), "\(mutating)")
            #expect(await Self.alive(host).map(\.id) == [first.volume])
        }
    }

    @Test("a release server upgraded from before roles: the volume the published snapshot was taken from is kept as it is, DeleteOnTermination untouched")
    func sourceBySnapshotTag() async throws {
        try await withSimulatedHost { host in
            let first = try #require(try await host.run().outcome.mountedRecord)
            // What an older publish left: a snapshot of this volume, tagged with it; the volume has no role tag.
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1, tags: [SnapshotRequest.sourceVolumeTag: first.volume]))
            host.reboot()
            await Self.publishNewer(host)
            await host.cloud.state.clearCallLog()
            let second = try #require(try await host.run().outcome.mountedRecord)
            #expect(second.volume == first.volume)
            let mutating = await host.cloud.state.callLog().filter { $0.service == "ec2" && $0.isMutating }.map(\.action)
            #expect(mutating.isEmpty, "\(mutating)")
        }
    }

    @Test("two configurations on one instance (two mount points, one snapshot): two volumes, and neither retires the other's")
    func twoMountPoints() async throws {
        try await withSimulatedHost { host in
            let data = "snap-0123456789abcdef7"
            await host.cloud.state.addSnapshot(DevSnapshot(id: data, sizeGiB: 1, tags: ["dataset": "2026-12"]))
            await host.plane.setContent(ofSnapshot: data, .filesystem(type: "ext4", label: "data_release"))
            let first = try #require(try await host.run().outcome.mountedRecord)
            let other: [ConfigKey: String] = [.mountPoint: host.root + "/data", .device: "/dev/sdg", .label: "data_release",
                                              .source: "tag:dataset=2026-12"]
            let second = try #require(try await host.run(.apply, other).outcome.mountedRecord)
            #expect(second.volume != first.volume)
            host.reboot()
            _ = try #require(try await host.run().outcome.mountedRecord)
            _ = try #require(try await host.run(.apply, other).outcome.mountedRecord)
            #expect(Set(await Self.alive(host).map(\.id)) == [first.volume, second.volume])
        }
    }

    @Test("dry run after a release was published while stopped: the volume line says which volume would be retired")
    func dryRunSaysRetire() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            let first = try #require(try await host.run().outcome.mountedRecord)
            host.reboot()
            await Self.publishNewer(host)
            let (_, checklist) = try await host.run(.check)
            let volume = try #require(checklist.first { $0.step == .volume })
            #expect(volume.detail.hasPrefix("would retire \(first.volume) (\(releaseSnapshot)); would create"), "\(volume.detail)")
            #expect(await Self.alive(host).map(\.id) == [first.volume])
        }
    }

    /// A process list with one process whose working directory is in the release.
    static func fakeHolder(_ host: SimulatedHost) throws {
        let process = host.root + "/proc/4242"
        try FileManager.default.createDirectory(atPath: process + "/fd", withIntermediateDirectories: true)
        try "myapp\n".write(toFile: process + "/comm", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: process + "/cwd", withDestinationPath: host.mountPoint + "/app")
        try FileManager.default.createSymbolicLink(atPath: process + "/fd/3", withDestinationPath: "/dev/null")
    }

    @Test("a busy release when a boot moves to a newer one (EBUSY): retried, naming the process that holds it, then moved")
    func busyThenFree() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            try Self.fakeHolder(host)
            let busy = Countdown(3)
            host.mounter.unmountFault = { _ in busy.next() ? EBUSY : nil }
            let once = Once()
            let lines = CapturedLines()
            let (outcome, _) = try await host.run(logger: capturingLogger(lines, level: .warning), afterStep: { done in
                guard done == .mount, once.claim() else { return }
                blocking { await Self.publishNewer(host) }
            })
            let record = try #require(outcome.mountedRecord)
            #expect(record.snapshot == Self.newer)
            let warnings = lines.lines.filter { $0.contains("is busy") }
            #expect(warnings.count == 3, "\(lines.lines)")
            #expect(warnings.first?.contains("myapp (pid 4242, cwd)") == true, "\(warnings)")
        }
    }

    @Test("a release that stays busy until the run's deadline: 75 naming the holder, the release it had stays mounted")
    func staysBusy() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            try Self.fakeHolder(host)
            // The deadline comes from the fault: after the second EBUSY the run has no time left.
            let clock = DeadlineClock()
            let attempts = Countdown(Int.max)
            host.mounter.unmountFault = { _ in
                if attempts.count() >= 2 { clock.expire() }
                return EBUSY
            }
            let once = Once()
            let error = await #expect(throws: HostError.self) {
                _ = try await host.run(clock: clock, afterStep: { done in
                    guard done == .mount, once.claim() else { return }
                    blocking { await Self.publishNewer(host) }
                })
            }
            let failure = try #require(error)
            #expect(failure.exitStatus == .timedOut)
            #expect("\(failure)".contains("myapp (pid 4242, cwd)") && "\(failure)".contains("the one mounted stays"), "\(failure)")
            #expect(host.isMounted, "the release it had is still mounted")
        }
    }
}

/// True for the first `n` calls of ``next()``; ``count()`` counts calls.
final class Countdown: @unchecked Sendable {
    private let lock = NSLock()
    private var left: Int
    private var calls = 0
    init(_ n: Int) { left = n }
    func next() -> Bool { lock.withLock { calls += 1; defer { left -= 1 }; return left > 0 } }
    @discardableResult
    func count() -> Int { lock.withLock { calls += 1; return calls } }
}

/// The system clock, until a test says the run's deadline has passed.
final class DeadlineClock: AgentClock, @unchecked Sendable {
    private let lock = NSLock()
    private var expired = false
    func expire() { lock.withLock { expired = true } }
    func now() -> UTCTimestamp { SystemClock().now() }
    func monotonic() -> ContinuousClock.Instant { ContinuousClock.now }
    func random() -> Double { Double.random(in: 0..<1) }
    func sleep(for duration: Duration) { SystemClock().sleep(for: duration) }
    func allows(_ duration: Duration) -> Bool { lock.withLock { !expired } }
    func interruption() -> Interruption? { lock.withLock { expired ? .deadline(.zero) : nil } }
}
