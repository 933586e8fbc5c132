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

/// moto, the EC2 emulator people run in CI, as a second witness beside DevCloud: the
/// agent's whole flow against it, as a new user would try it. `make deps` installs it
/// (`moto[server]` from PyPI).
enum Moto {
    static var available: Bool {
        (try? Child.run("/usr/bin/env", ["python3", "-c", "import moto, flask, boto3"], environment: Child.inherited).status) == 0
    }

    static var enabled: Bool { available || ProcessInfo.processInfo.environment["CI"] == "true" }

    /// A moto server; `nil` (recorded as an issue: CI must run these) when moto is missing.
    static func server() throws -> MotoServer? {
        guard available else {
            Issue.record("moto is not installed, and CI must run this (make deps installs moto[server])")
            return nil
        }
        return try MotoServer()
    }

    /// Runs a boto3 script against moto's endpoint (its first argument); returns what it
    /// printed, or throws with that when it failed.
    static func python(_ script: String, endpoint: String) throws -> String {
        let result = try Child.run("/usr/bin/env", ["python3", "-c", script, endpoint], environment: Child.inherited, merged: true)
        guard result.status == 0 else { throw MotoSetupError(output: result.stdout) }
        return result.stdout
    }
}

struct MotoSetupError: Error, CustomStringConvertible {
    let output: String
    var description: String { "moto did not start: \(output)" }
}

/// A moto server on 127.0.0.1, with one running instance and one completed snapshot.
final class MotoServer: @unchecked Sendable {
    let endpoint: String
    let instanceID: String
    let snapshotID: String
    private let process: Child

    init() throws {
        let port = try ClosedPort().port
        process = try Child("/usr/bin/env", ["python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", String(port)],
                            environment: Child.inherited)
        endpoint = "http://127.0.0.1:\(port)"
        // The world the agent boots into: an instance in eu-west-1a, a release snapshot.
        let script = """
            import boto3, sys, time
            session = boto3.session.Session(aws_access_key_id="AKIAMOTO", aws_secret_access_key="moto", region_name="eu-west-1")
            ec2 = session.client("ec2", endpoint_url=sys.argv[1])
            for _ in range(100):
                try:
                    ec2.describe_regions(); break
                except Exception:
                    time.sleep(0.1)
            instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                         Placement={"AvailabilityZone": "eu-west-1a"})["Instances"][0]["InstanceId"]
            volume = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"]
            snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
            print(instance, snapshot)
            """
        let text: String
        do {
            text = try Moto.python(script, endpoint: endpoint)
        } catch {
            process.stop()
            throw error
        }
        let words = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard words.count == 2 else {
            process.stop()
            throw MotoSetupError(output: text)
        }
        instanceID = words[0]
        snapshotID = words[1]
    }

    deinit {
        process.stop()
    }
}

/// The device plane for an EC2 that cannot tell us when it attaches something: every scan
/// asks it which volumes are attached to the instance, and presents each as a Nitro
/// instance would — `nvme<N>n1`, serial = volume id without its dash — holding the release.
final class PollingDevicePlane: BlockDeviceSource, @unchecked Sendable {
    let devDirectory: String
    let hypervisor: String? = nil
    private let ec2: EC2Client
    private let instance: String
    private let prober: TableProber
    private let lock = NSLock()

    init(devDirectory: String, ec2: EC2Client, instance: String, prober: TableProber) {
        self.devDirectory = devDirectory
        self.ec2 = ec2
        self.instance = instance
        self.prober = prober
    }

    func scan() -> [BlockDevice] {
        lock.withLock {
            let volumes = (try? ec2.describeVolumes(filters: [("attachment.instance-id", [instance])])) ?? []
            return volumes.enumerated().map { index, volume in
                let name = "nvme\(index + 1)n1"
                if prober.content(of: "\(devDirectory)/\(name)") == nil {
                    prober.set("\(devDirectory)/\(name)", .filesystem(type: "ext4", label: "code_release"))
                }
                return BlockDevice(name: name, serial: volume.id.nvmeSerial, sizeBytes: UInt64(volume.sizeGiB) << 30, number: "259:\(index + 1)")
            }
        }
    }

    func watch() throws(DeviceError) -> any DeviceWatch { SlowPollingWatch() }

    /// The volumes EC2 lists with these filters.
    func volumes(_ filters: [(name: String, values: [String])]) throws -> [EC2Volume] {
        try lock.withLock { try ec2.describeVolumes(filters: filters) }
    }
}

/// Each look costs moto a DescribeVolumes: look every 100 ms.
final class SlowPollingWatch: DeviceWatch {
    func wait(upTo timeout: Duration) { SystemClock().sleep(for: min(timeout, .milliseconds(100))) }
}

@Suite("Interoperability: the agent against moto", .serialized, .enabled(if: Moto.enabled, "needs moto[server] (make deps installs it)"))
struct MotoInteropTests {
    @Test("boot, reboot and dry run against moto: mounted, one volume, no retries of answers moto writes its own way")
    func againstMoto() async throws {
        guard let moto = try Moto.server() else { return }
        var settings = fastSettings()
        settings.instanceID = moto.instanceID
        let cloud = try await DevCloud.start(settings)
        await cloud.state.setRelease(ReleaseResponse(body: moto.snapshotID + "\n"))
        let root = NSTemporaryDirectory() + "snapmount-moto-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try SimulatedHost.initialFstab.write(toFile: root + "/fstab", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: root) }

        // IMDS and the release server from DevCloud; EC2 is moto's.
        let environment = try AgentEnvironment(cloud.environment.merging([
            "AWS_ENDPOINT_URL_EC2": moto.endpoint, "AWS_ACCESS_KEY_ID": "AKIAMOTO", "AWS_SECRET_ACCESS_KEY": "moto",
        ]) { _, new in new })
        let lines = CapturedLines()
        let logger = capturingLogger(lines, level: .debug)
        let prober = TableProber()
        let watcher = EC2Client(endpoint: try EC2Endpoint(url: moto.endpoint), region: "eu-west-1",
                                credentials: CredentialsProvider(fixed: environment.credentials,
                                                                 imds: IMDSClient(settings: environment.imds, http: try HTTPClient(), logger: quietLogger),
                                                                 logger: quietLogger),
                                http: try HTTPClient(), retry: RetryPolicy(maxAttempts: 2), logger: quietLogger)
        let devices = PollingDevicePlane(devDirectory: root + "/dev", ec2: watcher, instance: moto.instanceID, prober: prober)
        let mounter = TableMounter(devices: TableDevices(devDirectory: root + "/dev"))
        var edges = HostEdges(devices: devices, prober: prober, runner: RecordingRunner(prober: prober), mounter: mounter,
                              lockDirectory: root + "/run", recordDirectory: root + "/state")
        edges.lockTimeout = .seconds(10)
        let host = edges
        let configuration = try Configuration.resolve(file: nil, environment: [:], options: [
            .source: cloud.sourceURL, .mountPoint: root + "/release", .fstab: root + "/fstab", .deviceTimeout: "10s",
        ])
        func run(_ mode: FlowMode) async throws -> (FlowOutcome, [ChecklistItem<BootStep>]) {
            try await onThread {
                let flow = BootFlow(configuration: configuration, environment: environment, host: host, mode: mode, logger: logger,
                                    tuning: fastTuning())
                return (try flow.run(), flow.checklist)
            }
        }

        let (dry, checklist) = try await run(.check)
        #expect(dry == .checked(.success), "\(checklist.map(\.line))")

        guard case .mounted(let record) = try await run(.apply).0 else {
            Issue.record("not mounted against moto: \(lines.lines.suffix(5))")
            await stopCloud(cloud)
            return
        }
        #expect(record.snapshot == moto.snapshotID)
        #expect(!lines.lines.contains { $0.contains("retry") }, "\(lines.lines.filter { $0.contains("retry") })")
        let attached = try await onThread { try devices.volumes([("attachment.instance-id", [moto.instanceID])]) }
        // moto's instance has its root volume attached too.
        #expect(attached.map(\.id.text).contains(record.volume) && attached.count == 2, "\(attached.map(\.id))")

        // A reboot: moto keeps the volume attached; nothing is created or attached again.
        mounter.unmountAll()
        guard case .mounted(let second) = try await run(.apply).0 else {
            Issue.record("not mounted after the reboot")
            await stopCloud(cloud)
            return
        }
        #expect(second.volume == record.volume)
        let all = try await onThread { try devices.volumes([("tag:\(VolumeRequest.instanceTag)", [moto.instanceID])]) }
        #expect(all.count == 1)
        await stopCloud(cloud)
        withExtendedLifetime(moto) {}
    }
}

@Suite("Interoperability: push's listing against moto", .serialized, .enabled(if: Moto.enabled, "needs moto[server] (make deps installs it)"))
struct MotoPushTests {
    @Test("push lists an Auto Scaling group moto made (DescribeAutoScalingGroups, DescribeInstances by filter) and reaches every instance at its private address; moto takes its CreateTags")
    func listsMotoGroup() async throws {
        guard let moto = try Moto.server() else { return }
        let root = NSTemporaryDirectory() + "snapmount-moto-push-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/release", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A group of three, as boto3 sees it: instance id → private address.
        let script = """
            import boto3, sys
            session = boto3.session.Session(aws_access_key_id="AKIAMOTO", aws_secret_access_key="moto", region_name="eu-west-1")
            ec2 = session.client("ec2", endpoint_url=sys.argv[1])
            autoscaling = session.client("autoscaling", endpoint_url=sys.argv[1])
            ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
            autoscaling.create_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateName": "web"},
                                                  MinSize=3, MaxSize=3, DesiredCapacity=3, AvailabilityZones=["eu-west-1a"])
            ids = [i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]["Instances"]]
            for reservation in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
                for instance in reservation["Instances"]:
                    print(instance["InstanceId"], instance["PrivateIpAddress"])
                    # The release volume its boot made, tagged as snapmount tags it.
                    tags = [{"Key": "snapmount:instance-id", "Value": instance["InstanceId"]}, {"Key": "snapmount:mount-point", "Value": "\(root)/release"}]
                    volume = ec2.create_volume(Size=1, AvailabilityZone="eu-west-1a", TagSpecifications=[{"ResourceType": "volume", "Tags": tags}])
                    ec2.attach_volume(VolumeId=volume["VolumeId"], InstanceId=instance["InstanceId"], Device="/dev/sdf")
            """
        let text = try Moto.python(script, endpoint: moto.endpoint)
        let expected = Dictionary(uniqueKeysWithValues: text.split(separator: "\n").map { line in
            let words = line.split(separator: " ").map(String.init)
            return (words[0], words[1])
        })
        try #require(expected.count == 3, "\(text)")

        var settings = fastSettings()
        settings.instanceID = moto.instanceID
        let cloud = try await DevCloud.start(settings)
        try (moto.snapshotID + "\n").write(toFile: root + "/snap.txt", atomically: true, encoding: .utf8)
        // A snapshot without an identity tag is its own release.
        try ReleaseManifest(id: ReleaseID(snapshot: try #require(SnapshotID(moto.snapshotID))), release: "web", createdAt: "").save(in: root + "/release")
        // IMDS from DevCloud; EC2 and Auto Scaling are moto's.
        let environment = try AgentEnvironment(cloud.environment.merging([
            "AWS_ENDPOINT_URL_EC2": moto.endpoint, "AWS_ENDPOINT_URL_AUTO_SCALING": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "AKIAMOTO", "AWS_SECRET_ACCESS_KEY": "moto",
        ]) { _, new in new })
        var options = PushOptions(groups: ["web"], directory: try AbsolutePath(parsing: root + "/release"),
                                  published: try PublishTarget(parsing: root + "/snap.txt"))
        options.lockDirectory = root
        let frozen = options
        let remote = ScriptedRemote()
        let mounter = TableMounter(devices: TableDevices(), mounted: [
            MountInfo(device: "259:1", mountPoint: resolvedPath(root + "/release"), type: "ext4", source: "/dev/nvme1n1"),
        ])
        let rows = try await onThread {
            try PushFlow(options: frozen, mode: .apply, clock: SystemClock(), logger: quietLogger, runner: remote, mounter: mounter) {
                try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
            }.run()
        }
        #expect(Dictionary(uniqueKeysWithValues: rows.map { ($0.member.instance.text, $0.address) }) == expected)
        #expect(Set(remote.synced) == Set(expected.values))
        #expect(rows.allSatisfy { $0.outcome == .pushed(RsyncSummary(bytesSent: 1234, filesTransferred: 4), recorded: true) }, "\(rows)")
        await stopCloud(cloud)
        withExtendedLifetime(moto) {}
    }
}
