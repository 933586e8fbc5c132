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
@Suite("Boot flow on real devices", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
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
            #expect(fstab == HostHarness.initialFstab + "\nLABEL=code_release \(host.mountPoint) ext4 defaults,nofail,x-systemd.device-timeout=6m,x-systemd.requires=snapmount.service 0 0\n")
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
            let first = try #require(try await host.run().mountedRecord)
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
            let device = try #require(try host.host().devices.find(id, sizeGiB: 1, attachedAs: "/dev/sdf"))
            #expect(try BlkidProber().probe(device.path) == .filesystem(type: "ext4", label: "code_release"))
        }
    }

    @Test("each foreign image is refused with exit 65; the device is byte-identical; fstab untouched",
          arguments: ["ext4-other-label", "xfs", "vfat", "swap", "luks", "mbr", "gpt", "mdraid-1.2", "mdraid-0.90", "random"])
    func foreignImages(kind: String) async throws {
        guard requireRoot("foreignImages(\(kind))") else { return }
        try await withHost(image: try Images.foreign(kind)) { host in
            // The volume does not exist before the run: hash the image it is copied from.
            let before = try sparseDigest(try Images.foreign(kind))
            let lines = CapturedLines()
            var error: (any Error)?
            do { _ = try await host.run(logger: capturingLogger(lines, level: .debug)) } catch let caught { error = caught }
            let status = error.map { ExitStatus(for: $0) }
            let after = try await host.volumeDigest()
            let fstab = try host.fstabText()
            #expect(status == .dataRefused, "\(String(describing: error))")
            #expect(after == before)
            #expect(fstab == HostHarness.initialFstab)
            #expect(!host.isMounted)
            ReliabilityReport.record("refusal-matrix", [
                "device": kind, "outcome": status.map { "exit \($0.rawValue)" } ?? "mounted",
                "digest": after == before ? "unchanged" : "CHANGED", "fstab": fstab == HostHarness.initialFstab ? "unchanged" : "CHANGED",
                "mounted": host.isMounted ? "yes" : "no", "message": error.map { "\($0)" } ?? "",
                "pass": status == .dataRefused && after == before && fstab == HostHarness.initialFstab && !host.isMounted ? "yes" : "no",
            ])
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
            #expect(elapsed < .seconds(15), "never longer than device-timeout plus the cloud steps, with room for a loaded machine")
            #expect(try host.fstabText() == HostHarness.initialFstab)
        }
    }

    @Test("Xen: a device with the right name but the wrong size is never used")
    func xenWrongSize() async throws {
        guard requireRoot("xenWrongSize") else { return }
        try await withHost(image: try Images.release()) { host in
            try await host.plane.setMode(.xen)
            await host.plane.setSizeError(1 << 20)
            let error = try await host.runError([.deviceTimeout: "2s"])
            #expect(error.map { ExitStatus(for: $0) } == .timedOut)
            #expect(String(describing: error).contains("xvdf"))
            #expect(!host.isMounted)
        }
    }

    @Test("Nitro: a same-size disk named xvdf is never touched; the run times out with 75 and the disk is byte-identical")
    func nitroDecoy() async throws {
        guard requireRoot("nitroDecoy") else { return }
        try await withHost(image: try Images.release()) { host in
            await host.plane.setPresentsDevices(false)
            let decoy = try host.presentDecoy(named: "xvdf", image: try Images.release())
            let before = try sparseDigest(decoy)
            let error = try await host.runError([.deviceTimeout: "2s"])
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            #expect(try sparseDigest(decoy) == before)
            #expect(!host.isMounted)
            #expect(try host.fstabText() == HostHarness.initialFstab)
        }
    }

    @Test("Xen: the right name and size is used")
    func xenRightSize() async throws {
        guard requireRoot("xenRightSize") else { return }
        try await withHost(image: try Images.release()) { host in
            try await host.plane.setMode(.xen)
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

    @Test("a run that rolled back its volume, then a rerun: EC2 answers the old ClientToken with the deleted volume, so the next token makes a new one")
    func tokenAfterRollBack() async throws {
        guard requireRoot("tokenAfterRollBack") else { return }
        try await withHost(image: try Images.release()) { host in
            // The first run attaches, is denied DeleteOnTermination, and deletes its volume.
            await host.cloud.state.setPermissions(FaultMatrixTests.everyAction.subtracting(["ModifyInstanceAttribute"]))
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .permissionDenied)
            let deleted = await host.cloud.state.callLog().first { $0.action == "DeleteVolume" }?.parameters["VolumeId"]
            #expect(deleted != nil)
            #expect(try host.fstabText() == HostHarness.initialFstab)

            await host.cloud.state.setPermissions(nil)
            await host.cloud.state.clearCallLog()
            guard case .mounted(let record) = try await host.run() else {
                Issue.record("the rerun did not mount")
                return
            }
            let creates = await host.cloud.state.callLog().filter { $0.action == "CreateVolume" && !$0.dryRun }
            let tokens = creates.compactMap { $0.parameters["ClientToken"] }
            #expect(tokens.count == 2)
            #expect(tokens.count == 2 && tokens[1] == tokens[0] + "-g2")
            #expect(record.volume != deleted)
            #expect(host.isMounted)
            ReliabilityReport.record("regressions", [
                "case": "rerun after a roll-back: the first ClientToken names the deleted volume",
                "outcome": "CreateVolume ×\(creates.count) (tokens …\(tokens.map { String($0.suffix(6)) }.joined(separator: ", …"))); mounted \(record.volume), not \(deleted ?? "?")",
                "pass": tokens.count == 2 && record.volume != deleted ? "yes" : "no",
            ])
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
            let volumes = await host.cloud.state.volumeTable().count
            let creates = await host.cloud.state.callLog().count("CreateVolume")
            let entries = try host.fstabText().components(separatedBy: "LABEL=code_release").count - 1
            let mounts = try SystemMounter().mounts().filter { $0.mountPoint == host.mountPoint }.count
            #expect(outcomes.count == 10)
            #expect(mounted.count == 1)
            #expect(volumes == 1)
            #expect(creates == 1)
            #expect(entries == 1)
            #expect(mounts == 1)
            ReliabilityReport.record("concurrency", [
                "agents": "10", "succeeded": String(outcomes.count), "mounted": String(mounted.count),
                "alreadyMounted": String(outcomes.count - mounted.count), "volumes": String(volumes), "createVolume": String(creates),
                "fstabEntries": String(entries), "mounts": String(mounts),
                "pass": outcomes.count == 10 && mounted.count == 1 && volumes == 1 && creates == 1 && entries == 1 && mounts == 1 ? "yes" : "no",
            ])
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
            let (outcome, items) = try await host.runFlow(.check)
            #expect(outcome == .checked(.success))
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

    @Test("--dry-run on an instance whose volume exists but is not attached: the IAM gap for ec2:AttachVolume, exit 77")
    func dryRunIAMGap() async throws {
        guard requireRoot("dryRunIAMGap") else { return }
        try await withHost(image: try Images.release()) { host in
            // A crash right after CreateVolume left this instance's volume, available.
            let environment = try host.agentEnvironment()
            let volume = try await onThread { () -> String in
                let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: session.identity.instanceID, settings: VolumeSettings(), mountPoint: host.mountPoint)
                let created = try session.ec2.createVolume(request)
                return try session.volumes.waitAvailable(created.id).id.text
            }
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "CreateVolume", "ModifyInstanceAttribute", "DetachVolume", "DeleteVolume"])
            await host.cloud.state.clearCallLog()
            let (outcome, items) = try await host.runFlow(.check)
            let volumeLine = try #require(items.first { $0.step == .volume })
            #expect(volumeLine.detail == "would reuse \(volume) (available, holds \(releaseSnapshot))")
            let attach = try #require(items.first { $0.step == .attach })
            #expect(attach.mark == .failed)
            #expect(attach.detail.hasSuffix("lacks ec2:AttachVolume"), "\(attach.detail)")
            #expect(outcome == .checked(.permissionDenied))
            let dry = await host.cloud.state.callLog().filter(\.dryRun)
            #expect(dry.map(\.action) == ["AttachVolume", "ModifyInstanceAttribute"])
            #expect(dry.allSatisfy { $0.parameters["VolumeId"] == nil || $0.parameters["VolumeId"] == volume })
            #expect(await host.cloud.state.callLog().filter { $0.isMutating && !$0.dryRun }.isEmpty)
            #expect(await host.cloud.state.volumeTable().map(\.state) == ["available"])
        }
    }
}

extension [CallRecord] {
    func count(_ action: String) -> Int { filter { $0.action == action }.count }
}
