import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// Device trust, source trust, deadlines and the other defects a review of the agent found
/// (issue #10), each shown on the real flow over DevCloud, on a simulated machine.
@Suite("Device trust, source trust and time")
struct TrustAndTimeTests {
    static let volumeSize: UInt64 = 1 << 30

    // MARK: - Device trust

    @Test("Nitro: a same-size disk named xvdf (or sdf) is never touched; the run times out with 75", arguments: ["xvdf", "sdf"])
    func nitroDecoy(name: String) async throws {
        try await withSimulatedHost { host in
            await host.plane.setPresentsDevices(false)
            host.devices.add(BlockDevice(name: name, serial: nil, sizeBytes: Self.volumeSize, number: "202:80"))
            let decoy = "\(host.devices.devDirectory)/\(name)"
            host.prober.set(decoy, .filesystem(type: "ext4", label: "code_release"))
            let error = try await host.runError([.deviceTimeout: "1s"])
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            #expect(!host.prober.probed.contains(decoy))
            #expect(host.runner.calls.isEmpty)
            #expect(!host.isMounted)
        }
    }

    @Test("Xen: the volume is found by its attachment's xvd name and size, and mounted")
    func xen() async throws {
        try await withSimulatedHost { host in
            await host.plane.setXen()
            guard case .mounted(let record) = try await host.run().outcome else {
                Issue.record("not mounted")
                return
            }
            #expect(record.device.hasSuffix("/xvdf"))
        }
    }

    @Test("a reused volume is looked for where EC2 says it is attached, not at the configured name")
    func reusedElsewhere() async throws {
        try await withSimulatedHost { host in
            await host.plane.setXen()
            let first = try #require(try await host.run(.apply, [.device: "/dev/sdg"]).outcome.mountedRecord)
            #expect(first.device.hasSuffix("/xvdg"))
            host.reboot()
            // The configuration now names /dev/sdf; the volume stays attached at /dev/sdg.
            guard case .mounted(let second) = try await host.run().outcome else {
                Issue.record("the reboot run did not find the volume at its real attachment")
                return
            }
            #expect(second.volume == first.volume)
            #expect(second.device == first.device)
        }
    }

    @Test("a device that vanishes between finding and probing it: 75 (another run looks again), not a refusal")
    func vanished() async throws {
        try await withSimulatedHost { host in
            let prober = host.prober
            let devices = host.devices
            // The device is listed, but opening it fails as a detached one does.
            await host.cloud.state.onAttachment { event in
                // Only attachments present a device; other events change nothing here.
                if case .attached(let volume, _, _) = event {
                    devices.add(BlockDevice(name: "nvme1n1", serial: volume.id.replacingOccurrences(of: "-", with: ""),
                                            sizeBytes: UInt64(volume.sizeGiB) << 30, number: "259:1"))
                }
            }
            _ = prober
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            #expect(String(describing: error).contains("vanished"))
            #expect(try host.fstabText() == SimulatedHost.initialFstab)
        }
    }

    // MARK: - Source trust

    @Test("snapshot-owner defaults to self: another account's snapshot is refused (65) without saying anything")
    func ownerDefaultsToSelf() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: "snap-0123456789abcdef7", ownerID: "999999999999"))
            await host.cloud.state.setRelease(ReleaseResponse(body: "snap-0123456789abcdef7\n"))
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused)
            #expect(String(describing: error).contains("owned by account 999999999999, but snapshot-owner allows only self (123456789012)"))
            #expect(await host.cloud.state.callLog().count("CreateVolume") == 0)
        }
    }

    @Test("snapshot-owner = any must be said, and with an http:// source it logs who chooses the code")
    func ownerAny() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addSnapshot(DevSnapshot(id: "snap-0123456789abcdef7", ownerID: "999999999999"))
            await host.cloud.state.setRelease(ReleaseResponse(body: "snap-0123456789abcdef7\n"))
            let lines = CapturedLines()
            guard case .mounted = try await host.run(.apply, [.snapshotOwner: "any"], logger: capturingLogger(lines, level: .warning)).outcome else {
                Issue.record("not mounted")
                return
            }
            #expect(lines.lines.contains { $0.contains("snapshot-owner is any") && $0.contains("anyone on the network path") })
        }
    }

    // MARK: - Time

    @Test("the run's deadline bounds every retry: an EC2 that never recovers ends the run at run-timeout with 75, naming it")
    func deadlineBoundsRetries() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addFault(Fault(target: "DescribeSnapshots", kind: .http503, trigger: .always))
            var tuning = fastTuning(attempts: 100)
            tuning.retry = RetryPolicy(maxAttempts: 100, baseDelay: .seconds(1), maxBackoff: .seconds(2))
            let started = ContinuousClock.now
            let error: (any Error)?
            do {
                _ = try await host.run(.apply, [.runTimeout: "10s"], tuning: tuning, clock: RunClock(limit: .seconds(10)))
                error = nil
            } catch let caught {
                error = caught
            }
            let elapsed = ContinuousClock.now - started
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            #expect(String(describing: error).contains("run-timeout 10s"))
            #expect(elapsed >= .seconds(8) && elapsed < .seconds(25), "\(elapsed)")
        }
    }

    @Test("the deadline also cuts the device wait, and a volume being created when it passes is given back")
    func deadlineGivesBack() async throws {
        var settings = fastSettings()
        settings.delays.volumeCreate = .seconds(12)
        try await withSimulatedHost(settings) { host in
            let started = ContinuousClock.now
            let error: (any Error)?
            do {
                _ = try await host.run(.apply, [.runTimeout: "10s"], clock: RunClock(limit: .seconds(10)))
                error = nil
            } catch let caught {
                error = caught
            }
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            // CreateVolume was answered; waiting for `available` hit the deadline; the volume
            // went back within the grace period, once EC2 let it be deleted.
            #expect(ContinuousClock.now - started < .seconds(30))
            let deletes = await host.cloud.state.callLog().filter { $0.action == "DeleteVolume" }
            #expect(deletes.last?.outcome == "ok", "\(deletes.map(\.outcome))")
        }
    }

    @Test("a format snapmount started and never finished is formatted again, not refused forever")
    func interruptedFormat() async throws {
        try await withSimulatedHost { host in
            // What a killed mkfs leaves: a half-written superblock the probe cannot place.
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .other("an unknown signature"))
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .dataRefused)
            let volume = try #require(await host.cloud.state.volumeTable().first?.id)
            host.reboot()
            // The marker a run writes before mkfs and removes after it.
            try FileManager.default.createDirectory(atPath: host.root + "/state", withIntermediateDirectories: true)
            try "\(volume)\n".write(toFile: host.root + "/state/formatting-\(volume)", atomically: true, encoding: .utf8)
            guard case .mounted(let record) = try await host.run().outcome else {
                Issue.record("not mounted after the interrupted format")
                return
            }
            #expect(host.runner.calls == [["mkfs.ext4", "-q", "-L", "code_release", "-F", record.device]])
            #expect(!FileManager.default.fileExists(atPath: host.root + "/state/formatting-\(volume)"))
        }
    }

    @Test("mkfs writes its marker first and removes it after")
    func formatMarker() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .blank, zeroed: true)
            host.runner.script("mkfs.ext4", status: 1)
            _ = try await host.runError()
            let volume = try #require(await host.cloud.state.volumeTable().first?.id)
            // mkfs failed: the marker stays, so the next run may format again.
            #expect(FileManager.default.fileExists(atPath: host.root + "/state/formatting-\(volume)"))
            host.runner.script("mkfs.ext4", status: 0)
            host.reboot()
            _ = try #require(try await host.run().outcome.mountedRecord)
            #expect(!FileManager.default.fileExists(atPath: host.root + "/state/formatting-\(volume)"))
        }
    }

    // MARK: - Volumes from earlier runs

    @Test("a volume an earlier run made for this instance, which this run gives up on, is given back too")
    func earlierRunVolume() async throws {
        try await withSimulatedHost { host in
            // What a run killed right after CreateVolume leaves: the volume, tagged for us.
            let environment = try AgentEnvironment(host.cloud.environment)
            _ = try await onThread {
                let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: session.identity.instanceID, settings: VolumeSettings(), mountPoint: host.mountPoint)
                return try session.ec2.createVolume(request).id
            }
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "CreateVolume", "ModifyInstanceAttribute",
                                                   "DetachVolume", "DeleteVolume"])
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .permissionDenied)
            #expect(await host.cloud.state.callLog().count("DeleteVolume") == 1)
            let alive = await host.cloud.state.volumeTable().filter { ["creating", "available", "in-use"].contains($0.state) }
            #expect(alive.isEmpty)
        }
    }

    @Test("a volume left behind is named with what to do for its real state: detach first, and whether DeleteOnTermination is set")
    func leftBehindAdvice() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.setPermissions(["DescribeSnapshots", "DescribeVolumes", "CreateVolume", "AttachVolume"])
            let lines = CapturedLines()
            _ = try? await host.run(.apply, logger: capturingLogger(lines, level: .error))
            let line = try #require(lines.lines.first { $0.contains("is left behind") })
            #expect(line.contains("still attached to i-0123456789abcdef0 at /dev/sdf"))
            #expect(line.contains("DeleteOnTermination is not set, so it would outlive the instance"))
            #expect(line.contains("aws ec2 detach-volume --volume-id vol-"))
            #expect(line.contains("aws ec2 delete-volume --volume-id vol-"))
        }
    }

    // MARK: - The dry run

    @Test("--dry-run: an answer that is neither DryRunOperation nor UnauthorizedOperation is 'could not check', not exit 77")
    func dryRunCouldNotCheck() async throws {
        try await withSimulatedHost { host in
            // A volume exists (a run was interrupted after CreateVolume), so AttachVolume is checked against it.
            let environment = try AgentEnvironment(host.cloud.environment)
            _ = try await onThread {
                let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: session.identity.instanceID, settings: VolumeSettings(), mountPoint: host.mountPoint)
                return try session.volumes.waitAvailable(try session.ec2.createVolume(request).id).id
            }
            await host.cloud.state.addFault(Fault(target: "AttachVolume", kind: .http500, trigger: .always))
            let (outcome, checklist) = try await host.run(.check)
            let attach = try #require(checklist.first { $0.step == .attach })
            #expect(attach.mark == .notApplicable)
            #expect(attach.detail.hasPrefix("could not check: ec2:AttachVolume"), "\(attach.detail)")
            #expect(outcome == .checked(.success))
        }
    }

    @Test("--dry-run in the emulator dialect: DryRun answered 412 in the generic form is 'permitted'")
    func dryRunEmulator() async throws {
        try await withSimulatedHost(fastSettings(.emulator)) { host in
            let (outcome, checklist) = try await host.run(.check)
            #expect(outcome == .checked(.success), "\(checklist.map(\.line))")
            #expect(checklist.first { $0.step == .volume }?.detail.hasSuffix("(DryRunOperation)") == true)
        }
    }

    // MARK: - The machine

    @Test("an unreadable mount table is an error (70), not 'nothing mounted'")
    func unreadableMountTable() async throws {
        try await withSimulatedHost { host in
            host.mounter.unreadable = SystemCallError("open", "/proc/self/mountinfo", errno: EACCES)
            let error = try await host.runError()
            #expect(error.map { ExitStatus(for: $0) } == .internalError)
            #expect(String(describing: error).contains("cannot read the mount table"))
            #expect(await host.cloud.state.callLog().isEmpty)
        }
    }

    @Test("a mount point given through a symbolic link is resolved: a second run finds the release mounted")
    func symlinkedMountPoint() async throws {
        try await withSimulatedHost { host in
            try FileManager.default.createDirectory(atPath: host.mountPoint, withIntermediateDirectories: true)
            let link = host.root + "/current"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: host.mountPoint)
            _ = try #require(try await host.run(.apply, [.mountPoint: link]).outcome.mountedRecord)
            await host.cloud.state.clearCallLog()
            guard case .alreadyMounted = try await host.run(.apply, [.mountPoint: link]).outcome else {
                Issue.record("the second run did not see the release mounted through the link")
                return
            }
            #expect(await host.cloud.state.callLog().isEmpty)
        }
    }

    @Test("a symlinked fstab is edited at its target; the link stays a link")
    func symlinkedFstab() async throws {
        try await withSimulatedHost { host in
            let target = host.root + "/etc-fstab"
            try FileManager.default.moveItem(atPath: host.fstab, toPath: target)
            try FileManager.default.createSymbolicLink(atPath: host.fstab, withDestinationPath: target)
            _ = try await host.run()
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: host.fstab) == target)
            #expect(try String(contentsOfFile: target, encoding: .utf8).contains("LABEL=code_release"))
        }
    }
}

/// A transient failure at boot is retried inside the one activation: the units ordered after
/// snapmount wait for the release instead of failing (issue #11, boot 3).
@Suite("One activation, retried until the deadline")
struct RetriedActivationTests {
    @Test("IMDS answers 503 for its first seconds: the whole flow runs again until it mounts")
    func imdsDownAtBoot() async throws {
        try await withSimulatedHost { host in
            await host.cloud.state.addFault(Fault(target: "imds:token", kind: .http503, trigger: .during(seconds: 3)))
            let configuration = try host.configuration([.runTimeout: "30s"])
            let environment = try AgentEnvironment(host.cloud.environment)
            let edges = host.edges
            let lines = CapturedLines()
            let logger = capturingLogger(lines, level: .warning)
            let outcome = try await onThread {
                try BootFlow(configuration: configuration, environment: environment, host: edges, clock: RunClock(limit: .seconds(30)),
                             logger: logger, tuning: fastTuning()).runUntilDeadline()
            }
            guard case .mounted = outcome else {
                Issue.record("\(outcome)")
                return
            }
            #expect(lines.lines.contains { $0.contains("the boot flow runs again in") })
            #expect(await host.cloud.state.volumeTable().count == 1)
        }
    }

    @Test("a refusal is not retried: it fails at once")
    func refusalNotRetried() async throws {
        try await withSimulatedHost { host in
            await host.plane.setContent(ofSnapshot: releaseSnapshot, .filesystem(type: "ext4", label: "other"))
            let configuration = try host.configuration([.runTimeout: "30s"])
            let environment = try AgentEnvironment(host.cloud.environment)
            let edges = host.edges
            let lines = CapturedLines()
            let logger = capturingLogger(lines, level: .warning)
            let error = try await onThread { () -> SendableError? in
                do {
                    _ = try BootFlow(configuration: configuration, environment: environment, host: edges, clock: RunClock(limit: .seconds(30)),
                                     logger: logger, tuning: fastTuning()).runUntilDeadline()
                    return nil
                } catch {
                    return SendableError(error)
                }
            }
            #expect(error.map { ExitStatus(for: $0.error) } == .dataRefused)
            #expect(!lines.lines.contains { $0.contains("runs again") }, "\(lines.lines)")
            #expect(host.prober.probed.count == 1)  // one probe of the device, no second round
        }
    }
}

@Suite("Volume warm-up")
struct InitializationRateTests {
    @Test("initialization-rate goes to CreateVolume as VolumeInitializationRate; DevCloud checks the range as EC2 does")
    func initializationRate() async throws {
        try await withSimulatedHost { host in
            _ = try #require(try await host.run(.apply, [.initializationRate: "200"]).outcome.mountedRecord)
            let create = await host.cloud.state.callLog().first { $0.action == "CreateVolume" }
            #expect(create?.parameters["VolumeInitializationRate"] == "200")
        }
        try await withCloud { cloud in
            let outcome = try await withSession(cloud) { session -> String in
                var settings = VolumeSettings()
                settings.initializationRate = 50
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: session.identity.instanceID, settings: settings)
                do throws(EC2CallError) {
                    _ = try session.ec2.createVolume(request)
                    return "created"
                } catch {
                    return "\(error.code ?? "?") \(error.exitStatus.rawValue)"
                }
            }
            #expect(outcome == "InvalidParameterValue 78")
        }
    }
}

@Suite("Poll schedule")
struct PollScheduleTests {
    /// The times of the looks, from CreateVolume's answer, until `until`.
    static func looks(_ schedule: PollSchedule, until: Duration) -> [Duration] {
        var times: [Duration] = []
        var elapsed = Duration.zero
        for poll in 0... {
            elapsed += schedule.delay(beforePoll: poll)
            times.append(elapsed)
            if elapsed >= until { return times }
        }
        return times
    }

    @Test("available: first at 1.5 s, then gaps from 0.5 s growing 1.3× to 5 s; a ten times slower cloud costs about twice the looks")
    func available() {
        let schedule = PollSchedule()
        let times = Self.looks(schedule, until: .seconds(60)).map { Double($0.wholeMilliseconds) / 1000 }
        #expect(Array(times.prefix(5)) == [1.5, 2.0, 2.65, 3.495, 4.593])  // whole milliseconds
        // EC2's median (1.5 s): one look. Its 99th percentile (4 s): five, the last 0.6 s late at most.
        #expect(Self.looks(schedule, until: .milliseconds(1500)).count == 1)
        #expect(Self.looks(schedule, until: .seconds(4)).count == 5)
        // Ten times slower (15 s): about twice as many looks as at EC2's 99th percentile, not ten times.
        #expect(Self.looks(schedule, until: .seconds(15)).count <= 10)
        // Never more than 5 s between looks.
        #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 <= 5.000_1 })
    }
}
