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
          arguments: [FlowStep.lock, .check, .identity, .credentials, .snapshot, .volume, .attach, .device, .filesystem, .fstab, .mount])
    func publishedDuringBoot(step: FlowStep) async throws {
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
            guard case .mounted(let first) = try await host.run().outcome else { return }
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

    @Test("a reboot after a push brought the files up to the published release: no swap, no CreateVolume")
    func pushedWhileRunning() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            guard case .mounted(let first) = try await host.run().outcome else { return }
            try FileManager.default.createDirectory(atPath: host.root + "/state", withIntermediateDirectories: true)
            try PushedRecord(volume: first.volume, snapshot: Self.newer, pushedAt: "2026-11-28T12:00:00Z").json.pretty()
                .write(toFile: host.edges.pushedPath, atomically: true, encoding: .utf8)
            host.reboot()
            await Self.publishNewer(host)
            await host.cloud.state.clearCallLog()
            guard case .mounted(let second) = try await host.run().outcome else { return }
            #expect(second.volume == first.volume)
            let mutating = await host.cloud.state.callLog().filter { $0.service == "ec2" && $0.isMutating }
            #expect(mutating.isEmpty, "\(mutating.map(\.action))")
        }
    }

    @Test("dry run after a release was published while stopped: the volume line says which volume would be retired")
    func dryRunSaysRetire() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: Self.newer, sizeGiB: 1))
            guard case .mounted(let first) = try await host.run().outcome else { return }
            host.reboot()
            await Self.publishNewer(host)
            let (_, checklist) = try await host.run(.check)
            let volume = try #require(checklist.first { $0.step == .volume })
            #expect(volume.detail.hasPrefix("would retire \(first.volume) (\(releaseSnapshot)); would create"), "\(volume.detail)")
            #expect(await Self.alive(host).map(\.id) == [first.volume])
        }
    }
}
