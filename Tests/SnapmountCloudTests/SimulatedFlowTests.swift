import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// The same boot flow in check mode (`--dry-run`), and its host decisions in apply mode,
/// on a simulated machine: no root, yet the real steps in the real order.
@Suite("Dry run and host steps on a simulated machine")
struct SimulatedFlowTests {
    static func lines(_ checklist: [ChecklistItem<BootStep>]) -> [String] { checklist.map(\.line) }

    @Test("dry run on a fresh instance: every step has its line, nothing changes, exit 0")
    func dryRunFresh() async throws {
        try await withSimulatedHost { host in
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.success), "\(Self.lines(checklist))")
            #expect(checklist.map(\.step) == [.lock, .check, .identity, .credentials, .snapshot, .volume, .attach, .device, .filesystem,
                                              .fstab, .mount])
            #expect(checklist.map(\.mark) == [.ok, .ok, .ok, .ok, .ok, .ok, .notApplicable, .notApplicable, .notApplicable, .ok,
                                              .notApplicable])
            let volume = try #require(checklist.first { $0.step == .volume })
            #expect(volume.detail == "would create a gp3 volume from \(releaseSnapshot) in eu-west-1a (DryRunOperation)")
            let fstab = try #require(checklist.first { $0.step == .fstab })
            #expect(fstab.detail == "would add to \(host.fstab): LABEL=code_release \(host.mountPoint) ext4 defaults,nofail,x-systemd.device-timeout=6m,x-systemd.requires=snapmount.service 0 0")
            let calls = await host.cloud.state.callLog()
            #expect(calls.filter { $0.isMutating && !$0.dryRun }.isEmpty)
            #expect(calls.filter(\.dryRun).map(\.action) == ["CreateVolume"])
            // No made-up volume id is ever sent.
            #expect(calls.allSatisfy { $0.parameters["VolumeId"] == nil })
            #expect(await host.cloud.state.volumeTable().isEmpty)
            #expect(try host.fstabText() == SimulatedHost.initialFstab)
            #expect(host.runner.calls.isEmpty)
            #expect(!host.isMounted)
        }
    }

    @Test("dry run after a reboot: it checks against the attached volume and probes its device read-only")
    func dryRunAfterReboot() async throws {
        try await withSimulatedHost { host in
            let record = try #require(try await host.run().outcome.mountedRecord)
            host.reboot()
            await host.cloud.state.clearCallLog()
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.success), "\(Self.lines(checklist))")
            #expect(checklist.allSatisfy { $0.mark != .failed })
            let detail = { (step: BootStep) in checklist.first { $0.step == step }?.detail ?? "" }
            #expect(detail(.volume) == "would reuse \(record.volume) (in-use, holds \(releaseSnapshot))")
            #expect(detail(.attach) == "\(record.volume) is attached at /dev/sdf; DeleteOnTermination set")
            #expect(detail(.device) == "\(record.volume) is \(record.device)")
            #expect(detail(.filesystem) == "ext4 filesystem labelled \"code_release\"; would fsck it")
            #expect(detail(.fstab).hasPrefix("\(host.fstab) already has: LABEL=code_release"))
            #expect(detail(.mount) == "would mount \(record.device) on \(host.mountPoint) (ext4)")
            #expect(await host.cloud.state.callLog().filter(\.isMutating).isEmpty)
            #expect(host.runner.calls == [["fsck.ext4", "-p", record.device]])  // the first run's only
            #expect(!host.isMounted)
        }
    }

    @Test("dry run with the release mounted: two lines, exit 0, no cloud call")
    func dryRunMounted() async throws {
        try await withSimulatedHost { host in
            _ = try await host.run()
            await host.cloud.state.clearCallLog()
            let (outcome, checklist) = try await host.run(.check)
            guard case .alreadyMounted = outcome else {
                Issue.record("\(outcome)")
                return
            }
            #expect(checklist.map(\.step) == [.lock, .check])
            #expect(checklist.last?.detail.hasSuffix(": a run would do nothing") == true)
            #expect(await host.cloud.state.callLog().isEmpty)
        }
    }

    @Test("dry run where IAM denies CreateVolume: ✗ volume, exit 77, the later steps say why they were not checked")
    func dryRunDenied() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "AttachVolume", "ModifyInstanceAttribute"])
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.permissionDenied))
            let volume = try #require(checklist.first { $0.step == .volume })
            #expect(volume.mark == .failed)
            #expect(volume.detail.contains("UnauthorizedOperation") && volume.detail.contains("ec2:CreateVolume"))
            #expect(checklist.first { $0.step == .attach }?.detail == "not checked: an earlier step did not succeed")
            #expect(checklist.first { $0.step == .fstab }?.mark == .ok)
        }
    }

    @Test("dry run on a volume with a foreign filesystem: ✗ filesystem, exit 65, as the run would refuse")
    func dryRunRefuses() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .filesystem(type: "ext4", label: "data"))
            _ = try await host.runError()
            host.reboot()
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.dataRefused))
            #expect(checklist.first { $0.step == .filesystem }?.mark == .failed)
        }
    }

    @Test("dry run keeps the run's blank rule: no signature but data is refused, not 'would format'")
    func dryRunBlankWithData() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .blank, zeroed: false)
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused)
            host.reboot()
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.dataRefused))
            #expect(checklist.first { $0.step == .filesystem }?.detail.contains("data without any known signature (not zeros)") == true)
        }
    }

    // MARK: - The host steps of a run, without root

    @Test("a blank volume is formatted with the label, then mounted; the format is probed twice first")
    func blankFormatted() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .blank, zeroed: true)
            let record = try #require(try await host.run().outcome.mountedRecord)
            #expect(host.runner.calls == [["mkfs.ext4", "-q", "-L", "code_release", record.device]])
            #expect(host.prober.content(of: record.device) == .filesystem(type: "ext4", label: "code_release"))
            #expect(host.prober.probed.filter { $0 == record.device }.count == 2)
            #expect(host.isMounted)
        }
    }

    @Test("xfs expected and found: no fsck (xfs checks its log), mounted as xfs")
    func xfsNoFsck() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .filesystem(type: "xfs", label: "code_release"))
            _ = try await host.run(.apply, [.filesystem: "xfs", .label: "code_release"])
            #expect(host.runner.calls.isEmpty)
            #expect(try host.mounter.mounts().first?.type == "xfs")
            #expect(try host.fstabText().hasSuffix(" xfs defaults,nofail,x-systemd.device-timeout=6m,x-systemd.requires=snapmount.service 0 0\n"))
        }
    }

    @Test("each content that is not the release is refused: exit 65, no mkfs, fstab untouched, not mounted", arguments: [
        DeviceContent.filesystem(type: "ext4", label: "other"), .filesystem(type: "xfs", label: "code_release"),
        .filesystem(type: "ext4", label: nil), .other("a gpt partition table"), .other("swap space"),
        .other("an encrypted container (crypto_LUKS)"),
    ])
    func refused(content: DeviceContent) async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, content)
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused, "\(String(describing: error))")
            #expect(String(describing: error).contains("refusing to format or mount it"))
            #expect(host.runner.calls.isEmpty)
            #expect(try host.fstabText() == SimulatedHost.initialFstab)
            #expect(!host.isMounted)
        }
    }

    @Test("fsck's exit status decides: corrected goes on, uncorrected refuses (65), unfinished is retried (75), fsck broken is 70", arguments: [
        (Int32(0), SnapmountCore.ExitStatus.success), (1, .success), (2, .success), (4, .dataRefused), (8, .timedOut), (32, .timedOut),
        (16, .internalError), (128, .internalError),
    ])
    func fsckStatus(status: Int32, expected: SnapmountCore.ExitStatus) async throws {
        try await withSimulatedHost { host in
            host.runner.script("fsck.ext4", status: status)
            let error = try await host.runError()
            #expect((error.map { SnapmountCore.ExitStatus(for: $0) } ?? .success) == expected, "\(String(describing: error))")
            #expect(host.isMounted == (expected == .success))
            if expected != .success { #expect(try host.fstabText() == SimulatedHost.initialFstab) }
        }
    }

    @Test("mkfs fails: exit 70, nothing mounted, fstab untouched")
    func mkfsFails() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .blank, zeroed: true)
            host.runner.script("mkfs.ext4", status: 1)
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .internalError)
            #expect(!host.isMounted)
            #expect(try host.fstabText() == SimulatedHost.initialFstab)
        }
    }

    @Test("something else mounted at the mount point: exit 65 before any cloud call")
    func otherMounted() async throws {
        try await withSimulatedHost { host in
            try host.mounter.mount(device: "tmpfs", on: host.mountPoint, type: "tmpfs", options: [])
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused)
            #expect(String(describing: error).contains("is already mounted from tmpfs"))
            #expect(await host.cloud.state.callLog().isEmpty)
        }
    }

    @Test("the device never appears: exit 75 after device-timeout, naming what was seen")
    func deviceNeverAppears() async throws {
        try await withSimulatedHost { host in
            await host.plane.setPresentsDevices(false)
            let started = ContinuousClock.now
            let error = try await host.runError([.deviceTimeout: "1s"])
            #expect(error.map { ExitStatus(for: $0) } == .timedOut)
            #expect(String(describing: error).contains("within 1s; devices seen: nvme0n1 (serial vol0aaaaaaaaaaaaaaa0, 8192 MiB)"))
            #expect(ContinuousClock.now - started < .seconds(15))
            #expect(try host.fstabText() == SimulatedHost.initialFstab)
        }
    }
}
