import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The whole boot flow on real loop devices, mounts and an fstab (root only).
@Suite("Boot flow on real devices", .serialized)
struct BootFlowTests {
    @Test("mounts the release; files read back byte for byte; a second run is a no-op")
    func fullFlow() async throws {
        guard requireRoot("fullFlow") else { return }
        try await withHost(image: try Images.release()) { host in
            let started = ContinuousClock.now
            guard case .mounted(let record) = try await host.run() else {
                Issue.record("the first run did not mount")
                return
            }
            print("boot flow at test delays (create 150ms, attach 300ms): \(ContinuousClock.now - started); steps: \(record.timings.map { "\($0.step) \($0.milliseconds)ms" }.joined(separator: ", "))")
            #expect(host.isMounted)
            for (file, text) in releaseFiles {
                #expect(try String(contentsOfFile: "\(host.mountPoint)/\(file)", encoding: .utf8) == text, "\(file)")
            }
            let fstab = try host.fstabText()
            #expect(fstab == HostHarness.initialFstab + "\nLABEL=code_release \(host.mountPoint) ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2\n")
            let state = try #require(MountRecord.load(host.root + "/state/state.json"))
            #expect(state.volume == record.volume)
            #expect(state.snapshot == releaseSnapshot)

            await host.cloud.state.clearCallLog()
            guard case .alreadyMounted = try await host.run() else {
                Issue.record("the second run did something")
                return
            }
            let calls = await host.cloud.state.callLog()
            #expect(calls.filter(\.isMutating).isEmpty)
            #expect(try host.fstabText() == fstab)
        }
    }

    @Test("reboot: unmounted, still attached, fstab kept → mounted again from the same volume")
    func reboot() async throws {
        guard requireRoot("reboot") else { return }
        try await withHost(image: try Images.release()) { host in
            guard case .mounted(let first) = try await host.run() else { return }
            let fstab = try host.fstabText()
            host.unmount()
            try? FileManager.default.removeItem(atPath: host.root + "/state")  // /run is a tmpfs
            await host.cloud.state.clearCallLog()
            guard case .mounted(let second) = try await host.run() else {
                Issue.record("not mounted after the reboot run")
                return
            }
            #expect(second.volume == first.volume)
            let calls = await host.cloud.state.callLog()
            #expect(calls.count("CreateVolume") == 0)
            #expect(calls.count("AttachVolume") == 0)
            #expect(await host.cloud.state.volumeTable().count == 1)
            #expect(try host.fstabText() == fstab)
            #expect(try String(contentsOfFile: host.mountPoint + "/VERSION", encoding: .utf8) == "release 42\n")
        }
    }

    @Test("a blank snapshot is formatted with the label and mounted")
    func blankSnapshot() async throws {
        guard requireRoot("blankSnapshot") else { return }
        try await withHost(image: try Images.blank()) { host in
            _ = try await host.run()
            #expect(host.isMounted)
            let volumes = await host.cloud.state.volumeTable()
            let id = try #require(volumes.first.flatMap { VolumeID($0.id) })
            let device = try #require(host.host().devices.find(id, requestedName: "/dev/sdf", sizeGiB: 1))
            #expect(try BlkidProber().probe(device) == .filesystem(type: "ext4", label: "code_release"))
        }
    }

    @Test("each foreign image is refused with exit 65; the device is byte-identical; fstab untouched",
          arguments: ["ext4-other-label", "xfs", "swap", "gpt", "mbr", "luks", "random"])
    func foreignImages(kind: String) async throws {
        guard requireRoot("foreignImages(\(kind))") else { return }
        try await withHost(image: try Images.foreign(kind)) { host in
            // The volume does not exist before the run: hash the image it is copied from.
            let before = try sparseDigest(try Images.foreign(kind))
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused, "\(String(describing: error))")
            #expect(try await host.volumeDigest() == before)
            #expect(try host.fstabText() == HostHarness.initialFstab)
            #expect(!host.isMounted)
        }
    }

    @Test("the device never appears: exit 75 within device-timeout + 1 s, naming what was seen")
    func deviceNeverAppears() async throws {
        guard requireRoot("deviceNeverAppears") else { return }
        try await withHost(image: try Images.release()) { host in
            await host.plane.setPresentsDevices(false)
            let started = ContinuousClock.now
            let error = try await host.runError([.deviceTimeout: "2s"])
            let elapsed = ContinuousClock.now - started
            #expect(error.map { ExitStatus(for: $0) } == .timedOut)
            #expect(String(describing: error).contains("within 2s; devices seen:"))
            // The device wait itself is bounded by the timeout; the whole run adds the cloud steps.
            #expect(elapsed < .seconds(2) + .seconds(1) + .seconds(2))
            #expect(try host.fstabText() == HostHarness.initialFstab)
        }
    }

    @Test("Xen: a device with the right name but the wrong size is never used")
    func xenWrongSize() async throws {
        guard requireRoot("xenWrongSize") else { return }
        try await withHost(image: try Images.release()) { host in
            await host.plane.setMode(.xen)
            await host.plane.setSizeError(1 << 20)
            let error = try await host.runError([.deviceTimeout: "2s"])
            #expect(error.map { ExitStatus(for: $0) } == .timedOut)
            #expect(String(describing: error).contains("xvdf"))
            #expect(!host.isMounted)
        }
    }

    @Test("Xen: the right name and size is used")
    func xenRightSize() async throws {
        guard requireRoot("xenRightSize") else { return }
        try await withHost(image: try Images.release()) { host in
            await host.plane.setMode(.xen)
            _ = try await host.run()
            #expect(host.isMounted)
        }
    }

    @Test("a conflicting fstab entry: an error that shows both lines, and no write")
    func fstabConflict() async throws {
        guard requireRoot("fstabConflict") else { return }
        try await withHost(image: try Images.release()) { host in
            let conflicting = HostHarness.initialFstab + "\n/dev/sdz \(host.mountPoint) xfs defaults 0 0\n"
            try conflicting.write(toFile: host.fstab, atomically: true, encoding: .utf8)
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused)
            #expect(String(describing: error).contains("existing: /dev/sdz"))
            #expect(String(describing: error).contains("wanted:   LABEL=code_release"))
            #expect(try host.fstabText() == conflicting)
            #expect(!host.isMounted)
        }
    }

    @Test("two agents at once: one does the work, the other finds it done; one volume")
    func twoAgents() async throws {
        guard requireRoot("twoAgents") else { return }
        try await withHost(image: try Images.release()) { host in
            async let first = host.run()
            async let second = host.run()
            let outcomes = try await [first, second]
            let mounted = outcomes.filter { if case .mounted = $0 { return true } else { return false } }
            #expect(mounted.count == 1)
            #expect(await host.cloud.state.volumeTable().count == 1)
            #expect(try host.fstabText().components(separatedBy: "LABEL=code_release").count == 2)
        }
    }

    @Test("no log line at any level carries a secret key or session token DevCloud handed out")
    func noSecretsInLogs() async throws {
        guard requireRoot("noSecretsInLogs") else { return }
        try await withHost(image: try Images.release()) { host in
            // Faults and a clock error make the agent log its retries and corrections too.
            await host.cloud.state.addFault(Fault(target: "CreateVolume", kind: .http503, trigger: .nthCall(1)))
            await host.cloud.state.addFault(Fault(target: "imds:meta-data/iam/security-credentials/snapmount-release-role", kind: .truncated, trigger: .nthCall(1)))
            let sink = CapturedLines()
            _ = try await host.run(logger: capturingLogger(sink, level: .trace))
            _ = try await host.run(logger: capturingLogger(sink, level: .trace))
            let secrets = await host.cloud.state.issuedSecrets()
            #expect(secrets.count >= 3)
            #expect(sink.lines.count >= 5)
            for line in sink.lines {
                for secret in secrets { #expect(!line.contains(secret), "a secret in: \(line)") }
            }
        }
    }

    @Test("ten agents at once on one instance: one volume, one mount, one fstab line, all succeed")
    func tenAgents() async throws {
        guard requireRoot("tenAgents") else { return }
        try await withHost(image: try Images.release()) { host in
            let outcomes = try await withThrowingTaskGroup(of: FlowOutcome.self) { group in
                for _ in 0..<10 { group.addTask { try await host.run() } }
                var outcomes: [FlowOutcome] = []
                for try await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            let mounted = outcomes.filter { if case .mounted = $0 { return true } else { return false } }
            #expect(outcomes.count == 10)
            #expect(mounted.count == 1)
            #expect(await host.cloud.state.volumeTable().count == 1)
            #expect(await host.cloud.state.callLog().count("CreateVolume") == 1)
            #expect(try host.fstabText().components(separatedBy: "LABEL=code_release").count == 2)
            #expect(SystemMounter().mounts().filter { $0.mountPoint == host.mountPoint }.count == 1)
        }
    }

    @Test("--dry-run changes nothing: DryRun on every mutating call, fstab and device identical, no mount")
    func dryRunChangesNothing() async throws {
        guard requireRoot("dryRunChangesNothing") else { return }
        try await withHost(image: try Images.release()) { host in
            // A volume already attached (but not mounted), so the dry run probes a real device.
            _ = try await host.run()
            host.unmount()
            try HostHarness.initialFstab.write(toFile: host.fstab, atomically: true, encoding: .utf8)
            let digest = try await host.volumeDigest()
            await host.cloud.state.clearCallLog()
            let configuration = try host.configuration()
            let environment = host.environment
            let edges = host.host()
            let items = try await onThread {
                DryRun(configuration: configuration, environment: environment, host: edges, logger: quietLogger, tuning: fastTuning()).run()
            }
            let lines = items.map(\.line)
            #expect(items.allSatisfy { $0.mark != .failed }, "\(lines)")
            #expect(lines.contains { $0.contains("fstab") && $0.contains("would add") && $0.contains("LABEL=code_release") })
            #expect(lines.contains { $0.contains("filesystem") && $0.contains("would fsck") })
            let calls = await host.cloud.state.callLog()
            #expect(calls.filter { $0.isMutating && !$0.dryRun }.isEmpty)
            #expect(try host.fstabText() == HostHarness.initialFstab)
            #expect(try await host.volumeDigest() == digest)
            #expect(!host.isMounted)
        }
    }

    @Test("--dry-run reports the IAM gap when the role lacks ec2:AttachVolume")
    func dryRunIAMGap() async throws {
        guard requireRoot("dryRunIAMGap") else { return }
        try await withHost(image: try Images.release()) { host in
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "CreateVolume", "CreateTags", "ModifyInstanceAttribute", "DeleteVolume"])
            let configuration = try host.configuration()
            let environment = host.environment
            let edges = host.host()
            let (items, status) = try await onThread {
                let check = DryRun(configuration: configuration, environment: environment, host: edges, logger: quietLogger, tuning: fastTuning())
                return (check.run(), check.exitStatus)
            }
            let attach = try #require(items.first { $0.step == "attach" })
            #expect(attach.mark == .failed)
            #expect(attach.detail.contains("ec2:AttachVolume"))
            #expect(status == .permissionDenied)
            #expect(await host.cloud.state.callLog().filter { $0.isMutating && !$0.dryRun }.isEmpty)
            #expect(await host.cloud.state.volumeTable().isEmpty)
        }
    }
}

extension [CallRecord] {
    func count(_ action: String) -> Int { filter { $0.action == action }.count }
}
