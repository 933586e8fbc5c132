import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// ssh and rsync as scripts: the guard's exit status per address (a queue, the last one
/// repeating), rsync's stats, the host's `snapmount switch` report. The real programs over a
/// real sshd: PushTests (root).
final class ScriptedRemote: CommandRunner, @unchecked Sendable {
    private let lock = NSLock()
    private var guards: [String: [Int32]]
    private let rsyncFailures: [String: Int32]
    /// Per address: the switch goes back to this release (its health check failed).
    private let rollBacks: [String: String]
    /// Per address: the switch changed nothing (its lock was held): exit 75 and an `unchanged` report.
    private let unchanged: Set<String>
    private var log: [(address: String, step: String)] = []
    /// The release every host had before the push: a switch back to the previous tree finds it.
    static let previous = "rel-20261130T100000Z-0c0c0c0c"
    private(set) var synced: [String] = []

    init(guards: [String: [Int32]] = [:], rsyncFailures: [String: Int32] = [:], rollBacks: [String: String] = [:], unchanged: Set<String> = []) {
        self.guards = guards
        self.rsyncFailures = rsyncFailures
        self.rollBacks = rollBacks
        self.unchanged = unchanged
    }

    /// What each host was sent, in order: `mountpoint`, `prepare`, `tree`, `manifest`, `switch`.
    func steps(for address: String) -> [String] { lock.withLock { log.filter { $0.address == address }.map(\.step) } }

    func run(_ program: String, _ arguments: [String], timeout: Duration?) throws(ProcessRunError) -> ProcessResult {
        lock.withLock {
            let destination = arguments.last { $0.contains("@") } ?? ""
            let address = String(destination.split(separator: "@").last?.split(separator: ":").first ?? "")
            if program == "rsync" {
                let manifest = arguments.contains("-R")
                log.append((address, manifest ? "manifest" : "tree"))
                if !manifest { synced.append(address) }
                if let status = rsyncFailures[address] {
                    return ProcessResult(status: status, output: "rsync: some files could not be transferred (code \(status))")
                }
                return ProcessResult(status: 0, output: manifest ? "Number of regular files transferred: 1\nTotal bytes sent: 0\n"
                                         : "Number of regular files transferred: 3\nTotal bytes sent: 1,234\n")
            }
            if let command = arguments.last, command.contains("'switch'") {
                guard command.contains("'--json'") else {
                    log.append((address, "prepare"))
                    return ProcessResult(status: 0, output: "")
                }
                log.append((address, "switch"))
                let words = command.split(separator: " ").map { String($0.dropFirst().dropLast()) }
                let expected = words.firstIndex(of: "--expect").map { words[$0 + 1] } ?? ""
                if unchanged.contains(address) {
                    return ProcessResult(status: 75, output: """
                        snapmount: error: /run/snapmount/lock is still held by another snapmount (a boot, or another switch); nothing was switched
                        {"switch":"unchanged","before":null,"after":null,"reached":null,"error":"/run/snapmount/lock is still held by another snapmount (a boot, or another switch); nothing was switched","timedOut":false,"milliseconds":0}
                        """)
                }
                if let back = rollBacks[address] {
                    return ProcessResult(status: 69, output: """
                        snapmount: health check failed
                        {"switch":"rolled-back","before":"\(back)","after":"\(back)","reached":"activate","error":"health check /bin/false did not pass within 2s; switched back to \(back)","timedOut":false,"milliseconds":2100}
                        """)
                }
                if words.contains("previous") {
                    log.append((address, "back"))
                    return ProcessResult(status: 0, output: """
                        {"switch":"switched","before":null,"after":"\(expected.isEmpty ? Self.previous : expected)","reached":"health","error":null,"timedOut":false,"milliseconds":40}
                        """)
                }
                return ProcessResult(status: 0, output: """
                    {"switch":"switched","before":"\(Self.previous)","after":"\(expected)","reached":"health","error":null,"timedOut":false,"milliseconds":40}
                    """)
            }
            if arguments.last?.hasPrefix("mountpoint") == true {
                log.append((address, "mountpoint"))
                var queue = guards[address] ?? [0]
                let status = queue.count > 1 ? queue.removeFirst() : queue[0]
                guards[address] = queue
                return ProcessResult(status: status, output: status == 255 ? "ssh: connect to host \(address) port 22: Connection refused" : "")
            }
            return ProcessResult(status: 0, output: "")
        }
    }
}

@Suite("Push: listing the groups, and what each host's answer means")
struct PushListingTests {
    struct Setup {
        let cloud: DevCloud
        let directory: String
        let published: String
    }

    static func withCloud(_ body: @escaping @Sendable (Setup) async throws -> Void) async throws {
        let cloud = try await DevCloud.start(fastSettings())
        let directory = NSTemporaryDirectory() + "snapmount-push-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/release", withIntermediateDirectories: true)
        try (releaseSnapshot + "\n").write(toFile: directory + "/snap.txt", atomically: true, encoding: .utf8)
        do {
            try await stageRelease(Self.release, in: directory + "/release", cloud: cloud)
            try await body(Setup(cloud: cloud, directory: directory, published: directory + "/snap.txt"))
        } catch {
            await stopCloud(cloud)
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        await stopCloud(cloud)
        try? FileManager.default.removeItem(atPath: directory)
    }

    static let release = "rel-20261201T100000Z-0a0a0a0a"

    /// An instance of the group, with the release volume its boot made.
    static func add(_ setup: Setup, _ last: Int, group: String = "web", lifecycle: String = "InService", zone: String = "eu-west-1a") async {
        let cloud = setup.cloud
        await cloud.state.addInstance(DevInstance(id: instanceID(last), availabilityZone: zone, roleName: nil,
                                                  privateAddress: "10.0.1.\(last)", group: group, lifecycleState: lifecycle))
        await cloud.state.addReleaseVolume(instance: instanceID(last), snapshot: "snap-0aaaaaaaaaaaaaaa1", mountPoint: setup.directory + "/release")
    }

    static func instanceID(_ last: Int) -> String { "i-" + String(repeating: "0", count: 17 - String(last).count) + String(last) }

    static func push(_ setup: Setup, groups: [String] = ["web"], remote: ScriptedRemote = ScriptedRemote(), logger: Logger = quietLogger,
                     configure: (inout PushOptions) -> Void = { _ in }) async throws -> (rows: [HostReport], error: (any Error)?) {
        var options = PushOptions(groups: groups, directory: try AbsolutePath(parsing: setup.directory + "/release"),
                                  published: try PublishTarget(parsing: setup.published))
        options.retryDelay = .milliseconds(10)
        options.launchPoll = .milliseconds(50)
        options.lockDirectory = setup.directory
        configure(&options)
        let frozen = options
        let environment = try AgentEnvironment(setup.cloud.environment)
        let mounter = TableMounter(devices: TableDevices(), mounted: [
            MountInfo(device: "259:1", mountPoint: resolvedPath(setup.directory + "/release"), type: "ext4", source: "/dev/nvme1n1"),
        ])
        return try await onThread { () -> ([HostReport], (any Error)?) in
            let flow = PushFlow(options: frozen, mode: .apply, clock: SystemClock(), logger: logger, runner: remote, mounter: mounter) {
                try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
            }
            do {
                return (try flow.run(), nil)
            } catch {
                return (flow.lastReports, error)
            }
        }
    }

    @Test("groups over several pages (NextToken), three groups, every instance pushed once; a throttled listing is retried")
    func pagesAndGroups() async throws {
        try await Self.withCloud { setup in
            await setup.cloud.state.setGroupPageSize(1)
            for last in 1...3 { await Self.add(setup, last, group: "web") }
            await Self.add(setup, 4, group: "api")
            await Self.add(setup, 5, group: "batch")
            await setup.cloud.state.addFault(Fault(target: "autoscaling:DescribeAutoScalingGroups", kind: .throttle, trigger: .nthCall(1)))
            let remote = ScriptedRemote()
            let (rows, error) = try await Self.push(setup, groups: ["web", "api", "batch"], remote: remote)
            #expect(error == nil, "\(String(describing: error))")
            #expect(Set(rows.map(\.address)) == Set((1...5).map { "10.0.1.\($0)" }))
            #expect(remote.synced.sorted() == (1...5).map { "10.0.1.\($0)" })
            #expect(rows.allSatisfy { if case .pushed(let summary, _) = $0.outcome { summary.bytesSent == 1234 } else { false } })
            let calls = await setup.cloud.state.callLog().filter { $0.service == "autoscaling" }
            #expect(calls.contains { $0.outcome == "fault:throttle" })
            #expect(calls.contains { $0.parameters["NextToken"] != nil }, "the second page was asked for")
        }
    }

    @Test("a group Auto Scaling does not know is 78 naming it; a role without autoscaling:DescribeAutoScalingGroups is 77 saying so")
    func listingRefusals() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            let (_, unknown) = try await Self.push(setup, groups: ["web", "wbe"])
            #expect(unknown.map { ExitStatus(for: $0) } == .configuration)
            #expect("\(unknown.map { "\($0)" } ?? "")".contains("\"wbe\""))

            await setup.cloud.state.setPermissions(Set(CloudState.actions))
            let (_, denied) = try await Self.push(setup)
            #expect(denied.map { ExitStatus(for: $0) } == .permissionDenied)
            #expect("\(denied.map { "\($0)" } ?? "")".contains("autoscaling:DescribeAutoScalingGroups"), "\(String(describing: denied))")
        }
    }

    @Test("a launching instance not reachable yet is tried again in the next round and pushed; past --launch-wait it fails")
    func launching() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1, lifecycle: "Pending:Wait")
            let lines = CapturedLines()
            let (rows, error) = try await Self.push(setup, remote: ScriptedRemote(guards: ["10.0.1.1": [255, 255, 0]]),
                                                    logger: capturingLogger(lines, level: .info))
            #expect(error == nil)
            // Waiting for it is not failing it: no error line, two "not reachable yet" notices.
            #expect(!lines.lines.contains { $0.contains("FAILED") }, "\(lines.lines)")
            #expect(lines.lines.filter { $0.contains("not reachable yet; tried again") }.count == 2, "\(lines.lines)")
            guard case .pushed? = rows.first?.outcome else {
                Issue.record("\(rows)")
                return
            }
            let (late, failure) = try await Self.push(setup, remote: ScriptedRemote(guards: ["10.0.1.1": [255]])) { $0.launchWait = .milliseconds(200) }
            #expect(failure.map { ExitStatus(for: $0) } == .unavailable)
            #expect(late.first?.outcome.isFailure == true)
            #expect("\(failure.map { "\($0)" } ?? "")".contains("10.0.1.1") && "\(failure.map { "\($0)" } ?? "")".contains("Connection refused"))
        }
    }

    @Test("a host that failed and left its group meanwhile is gone, not failed; a terminated instance is gone; a stopped one converges at its start")
    func leaving() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            await Self.add(setup, 2)
            await setup.cloud.state.addInstance(DevInstance(id: Self.instanceID(3), availabilityZone: "eu-west-1a", roleName: nil,
                                                            privateAddress: "10.0.1.3", group: "web", state: "terminated"))
            await setup.cloud.state.addInstance(DevInstance(id: Self.instanceID(4), availabilityZone: "eu-west-1a", roleName: nil,
                                                            privateAddress: "10.0.1.4", group: "web", state: "stopped"))
            let state = setup.cloud.state
            // 10.0.1.2 is scaled in while it is pushed to: its ssh fails, and the next listing shows it terminating.
            let remote = ScriptedRemote(guards: ["10.0.1.2": [255]])
            let scaleIn = Task {
                while await state.callLog().filter({ $0.action == "DescribeAutoScalingGroups" }).count < 1 {
                    try await Task.sleep(for: .milliseconds(10))
                }
                await state.setLifecycleState(Self.instanceID(2), "Terminating")
            }
            let (rows, error) = try await Self.push(setup, remote: remote)
            _ = await scaleIn.result
            #expect(error == nil, "\(String(describing: error))")
            let outcomes = Dictionary(uniqueKeysWithValues: rows.map { ($0.address, $0.outcome) })
            #expect(outcomes["10.0.1.2"] == .gone)
            #expect(outcomes["10.0.1.3"] == .gone)
            #expect(outcomes["10.0.1.4"] == .booting)
            #expect(remote.synced == ["10.0.1.1"])
        }
    }

    @Test("a launching instance unreachable for more listings than --rounds is still waited for (--launch-wait bounds it, not --rounds), then pushed")
    func launchWaitHonoured() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            await Self.add(setup, 2, lifecycle: "Pending")
            // Unreachable for four rounds, reachable in the fifth: more rounds than --rounds 2 allows.
            let remote = ScriptedRemote(guards: ["10.0.1.2": [255, 255, 255, 255, 0]])
            let (rows, error) = try await Self.push(setup, remote: remote) { $0.rounds = 2 }
            #expect(error == nil, "\(String(describing: error))")
            let listings = await setup.cloud.state.callLog().filter { $0.action == "DescribeAutoScalingGroups" }.count
            #expect(listings >= 5, "waiting rounds are not settle rounds: \(listings) listings")
            #expect(rows.count == 2 && rows.allSatisfy { if case .pushed = $0.outcome { true } else { false } }, "\(rows)")
        }
    }

    @Test("new instances joining every round: 75 after --rounds listings that found new ones, and the table still shows every host")
    func neverSettles() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            let state = setup.cloud.state
            let joining = Task {
                var added = 1
                while added < 8 {
                    let listings = await state.callLog().filter { $0.action == "DescribeAutoScalingGroups" }.count
                    if listings >= added {
                        added += 1
                        await Self.add(setup, added)
                    }
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            let (rows, error) = try await Self.push(setup) { $0.rounds = 3 }
            joining.cancel()
            #expect(error.map { ExitStatus(for: $0) } == .timedOut, "\(String(describing: error))")
            #expect("\(error.map { "\($0)" } ?? "")".contains("for 3 rounds"))
            #expect(rows.count >= 4, "\(rows)")
            #expect(rows.contains { if case .pushed = $0.outcome { true } else { false } })
        }
    }

    @Test("an instance Auto Scaling lists before EC2 knows it: waited for, then pushed; the others are not held up or failed")
    func notKnownToEC2Yet() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            await Self.add(setup, 2)
            await setup.cloud.state.setKnownToEC2(Self.instanceID(2), false)
            let state = setup.cloud.state
            let known = Task {
                while await state.callLog().filter({ $0.action == "DescribeInstances" }).count < 2 {
                    try await Task.sleep(for: .milliseconds(10))
                }
                await state.setKnownToEC2(Self.instanceID(2), true)
            }
            let remote = ScriptedRemote()
            let (rows, error) = try await Self.push(setup, remote: remote)
            _ = await known.result
            #expect(error == nil, "\(String(describing: error))")
            #expect(rows.count == 2 && rows.allSatisfy { if case .pushed = $0.outcome { true } else { false } }, "\(rows)")
            let calls = await state.callLog().filter { $0.action == "DescribeInstances" }
            #expect(!calls.contains { $0.outcome == "InvalidInstanceID.NotFound" }, "asked by filter, never by an id EC2 does not know")
        }
    }

    @Test("no published id: 69 naming where it looked")
    func unpublished() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            try FileManager.default.removeItem(atPath: setup.published)
            let (_, unpublished) = try await Self.push(setup)
            #expect(unpublished.map { ExitStatus(for: $0) } == .unavailable)
            #expect("\(unpublished.map { "\($0)" } ?? "")".contains(setup.published))
        }
    }

    @Test("the release here is not the published one: no manifest (an empty tree) or another release — 78 naming both, nothing sent")
    func onlyThePublishedRelease() async throws {
        try await Self.withCloud { setup in
            await Self.add(setup, 1)
            try FileManager.default.removeItem(atPath: setup.directory + "/release/.snapmount")
            let remote = ScriptedRemote()
            let (_, empty) = try await Self.push(setup, remote: remote)
            let emptyError = try #require(empty as? PushError)
            #expect(emptyError.exitStatus == .configuration)
            #expect(emptyError.description.contains("holds no release manifest"), "\(emptyError)")

            let other = "rel-20261202T100000Z-0b0b0b0b"
            try ReleaseManifest(id: try #require(ReleaseID(other)), release: "release", createdAt: "").save(in: setup.directory + "/release")
            let (_, mismatch) = try await Self.push(setup, remote: remote)
            let mismatchError = try #require(mismatch as? PushError)
            #expect(mismatchError.exitStatus == .configuration)
            #expect(mismatchError.description.contains(other) && mismatchError.description.contains(Self.release)
                    && mismatchError.description.contains(releaseSnapshot), "\(mismatchError)")
            #expect(remote.synced.isEmpty)
        }
    }

    @Test("each host's volume: marked unknown just before its switch, then the release the switch reports; a sync that fails changes nothing in use and no tag; a host that went back is tagged with the release it went back to")
    func identityTagsFollowTheBytes() async throws {
        try await Self.withCloud { setup in
            for last in 1...5 { await Self.add(setup, last) }
            let old = "rel-20261130T100000Z-0b0b0b0b"
            // 23: some files not transferred; 24: files vanished here while it ran (the tree changed).
            let remote = ScriptedRemote(rsyncFailures: ["10.0.1.2": 23, "10.0.1.3": 24], rollBacks: ["10.0.1.4": old], unchanged: ["10.0.1.5"])
            let (rows, error) = try await Self.push(setup, remote: remote)
            #expect(error.map { ExitStatus(for: $0) } == .unavailable)
            let volumes = await setup.cloud.state.volumeTable()
            let held = Dictionary(uniqueKeysWithValues: volumes.compactMap { volume in volume.attachment.map { ($0.instanceID, volume.tags[ReleaseTags.releaseID]) } })
            #expect(held[Self.instanceID(1)] == Self.release)
            #expect(held[Self.instanceID(2)] == .some(nil), "nothing in use changed: no tag")
            #expect(held[Self.instanceID(3)] == .some(nil), "a tree that changed under the push was never switched to")
            #expect(held[Self.instanceID(4)] == old, "back on the release it had")
            #expect(held[Self.instanceID(5)] == "snap-0aaaaaaaaaaaaaaa1", "nothing switched: what its tags said before (the snapshot it was made from)")
            let kept = try #require(rows.first { $0.address == "10.0.1.5" }?.outcome.failure)
            #expect(kept.contains("exited 75") && kept.contains("still held") && kept.contains("nothing in use changed"), "\(kept)")
            let failed = try #require(rows.first { $0.address == "10.0.1.2" }?.outcome.failure)
            #expect(failed.contains("rsync exit 23") && failed.contains("the release in use there is unchanged"), "\(failed)")
            let back = try #require(rows.first { $0.address == "10.0.1.4" })
            #expect(back.outcome.label == "ROLLED BACK" && back.outcome.failure?.contains("switched back to \(old)") == true, "\(back)")
            // The order on the pushed host: ready, the tree, the manifest, the switch.
            #expect(remote.steps(for: "10.0.1.1") == ["mountpoint", "prepare", "tree", "manifest", "switch"], "\(remote.steps(for: "10.0.1.1"))")
            #expect(remote.steps(for: "10.0.1.2") == ["mountpoint", "prepare", "tree"], "\(remote.steps(for: "10.0.1.2"))")
            let tags = await setup.cloud.state.callLog().filter { $0.action == "CreateTags" }.map { $0.parameters["Tag.1.Value"] ?? "" }
            #expect(tags.filter { $0 == ReleaseID.unknownTag }.count == 3 && tags.filter { $0 == Self.release }.count == 1
                    && tags.filter { $0 == old }.count == 1, "\(tags)")
        }
    }
}

extension PushListingTests {
    @Test("a deployment in waves of 2 over two zones: a health check that fails in the third wave stops it (--max-failures 0); the moved hosts go back to the release they had, the rest are not reached, the published id names the previous release again; 69")
    func wavesStopAndRollBack() async throws {
        try await Self.withCloud { setup in
            for last in 1...8 { await Self.add(setup, last, zone: last % 2 == 0 ? "eu-west-1b" : "eu-west-1a") }
            // The id before this release's, as publish leaves it: rollback finds it in .prev.
            try ("snap-0aaaaaaaaaaaaaaa1\n").write(toFile: setup.published + ".prev", atomically: true, encoding: .utf8)
            await setup.cloud.state.addSnapshot(DevSnapshot(id: "snap-0aaaaaaaaaaaaaaa1", sizeGiB: 1,
                                                            tags: [ReleaseTags.releaseID: ScriptedRemote.previous, SnapshotRequest.releaseTag: "release"]))
            // Waves (a1 b1) (a2 b2) (a3 b3) (a4 b4), zones taken in turn: 10.0.1.5 is in the third.
            let remote = ScriptedRemote(rollBacks: ["10.0.1.5": ScriptedRemote.previous])
            let (rows, error) = try await Self.push(setup, remote: remote) { options in
                options.wave = .hosts(2)
                options.maxFailures = .hosts(0)
                options.rollbackOnFailure = true
            }
            print(PushFlow.table(rows, waves: true))
            let stop = try #require(error as? PushError)
            #expect(stop.exitStatus == .unavailable)
            #expect(stop.description.contains("stopped after wave 3 of 4") && stop.description.contains("10.0.1.5")
                    && stop.description.contains("2 hosts not reached") && stop.description.contains("5 moved hosts put back"), "\(stop)")
            let byAddress = Dictionary(uniqueKeysWithValues: rows.map { ($0.address.isEmpty ? $0.member.instance.text : $0.address, $0) })
            for moved in [1, 2, 3, 4, 6] {
                let row = try #require(byAddress["10.0.1.\(moved)"])
                #expect(row.outcome.label == "REVERTED" && row.after?.text == ScriptedRemote.previous, "\(row)")
                #expect(remote.steps(for: "10.0.1.\(moved)").last == "back")
            }
            #expect(byAddress["10.0.1.5"]?.outcome.label == "ROLLED BACK")
            #expect(remote.steps(for: "10.0.1.5").last == "switch", "a host that went back by itself is not switched again")
            for untouched in [7, 8] {
                let row = try #require(byAddress[Self.instanceID(untouched)])
                #expect(row.outcome.label == "not reached", "\(row)")
                #expect(remote.steps(for: "10.0.1.\(untouched)").isEmpty)
            }
            #expect(Set(rows.compactMap { $0.wave > 0 ? $0.wave : nil }) == [1, 2, 3])
            // Every reached volume's tag says the release it had; the others were never tagged.
            let held = Dictionary(uniqueKeysWithValues: await setup.cloud.state.volumeTable().compactMap { volume in
                volume.attachment.map { ($0.instanceID, volume.tags[ReleaseTags.releaseID]) }
            })
            for last in 1...6 { #expect(held[Self.instanceID(last)] == .some(ScriptedRemote.previous), "\(last): \(held)") }
            for last in 7...8 { #expect(held[Self.instanceID(last)] == .some(nil), "\(last): \(held)") }
            #expect(stop.description.contains("names snap-0aaaaaaaaaaaaaaa1 (release \(ScriptedRemote.previous)) again"), "\(stop)")
            #expect(try String(contentsOfFile: setup.published, encoding: .utf8) == "snap-0aaaaaaaaaaaaaaa1\n", "the previous release is published again")
            let json = PushFlow.json(rows, summary: nil, succeeded: false)
            guard case .array(let hosts) = try #require(json["hosts"]) else {
                Issue.record("hosts is not an array: \(json.text)")
                return
            }
            #expect(hosts.count == 8)
        }
    }
}

@Suite("Fleet: every instance and the release its volume holds, from the tags")
struct FleetTests {
    @Test("after a push: each instance's zone, state and release from its volume's tags, how the push ended, and how many are on the published release — three EC2 and Auto Scaling calls, no ssh")
    func fleetAfterPush() async throws {
        try await PushListingTests.withCloud { setup in
            for last in 1...3 { await PushListingTests.add(setup, last) }
            let old = "rel-20261130T100000Z-0b0b0b0b"
            let remote = ScriptedRemote(rsyncFailures: ["10.0.1.2": 23], rollBacks: ["10.0.1.3": old])
            _ = try await PushListingTests.push(setup, remote: remote)
            // Launched since: Auto Scaling lists it, EC2 does not know it yet.
            await PushListingTests.add(setup, 4, lifecycle: "Pending")
            await setup.cloud.state.setKnownToEC2(PushListingTests.instanceID(4), false)
            let environment = try AgentEnvironment(setup.cloud.environment)
            let before = await setup.cloud.state.callLog().count
            let report = try await onThread {
                let session = try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
                return try FleetReport.collect(groups: ["web"], mountPoint: setup.directory + "/release",
                                               published: try PublishTarget(parsing: setup.published), session: session)
            }
            print(report.table)
            let calls = await setup.cloud.state.callLog().dropFirst(before).filter { $0.service == "ec2" || $0.service == "autoscaling" }.map(\.action)
            #expect(calls.filter { $0 != "DescribeSnapshots" } == ["DescribeAutoScalingGroups", "DescribeInstances", "DescribeVolumes"], "\(calls)")
            let rows = Dictionary(uniqueKeysWithValues: report.rows.map { ($0.member.instance.text, $0) })
            let one = try #require(rows[PushListingTests.instanceID(1)])
            #expect(one.release?.text == PushListingTests.release)
            #expect(one.instance?.availabilityZone == "eu-west-1a" && one.instance?.state == .running)
            #expect(one.lastDeployment?.hasPrefix("switched \(PushListingTests.release) ") == true, "\(one.lastDeployment ?? "")")
            // The failed sync changed nothing: the volume still says what it was made from.
            #expect(rows[PushListingTests.instanceID(2)]?.release?.text == "snap-0aaaaaaaaaaaaaaa1")
            #expect(rows[PushListingTests.instanceID(2)]?.lastDeployment == nil)
            let three = try #require(rows[PushListingTests.instanceID(3)])
            #expect(three.release?.text == old && three.lastDeployment?.hasPrefix("rolled-back \(PushListingTests.release) ") == true)
            let four = try #require(rows[PushListingTests.instanceID(4)])
            #expect(four.instance == nil && four.member.lifecycleState == "Pending")
            #expect(report.onPublished == 1)
            #expect(report.table.contains("1 of 4 on the published release \(PushListingTests.release) (\(releaseSnapshot))"), "\(report.table)")
            let json = report.json
            #expect(json["published"]?["instances"] == .number("1"))
            guard case .array(let instances) = try #require(json["instances"]) else {
                Issue.record("instances is not an array: \(json.text)")
                return
            }
            #expect(instances.count == 4)
        }
    }
}
