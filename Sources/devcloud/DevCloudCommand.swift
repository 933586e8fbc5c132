import ArgumentParser
import DevCloud
import SnapmountCore
import Foundation

/// `devcloud`: runs the local cloud until interrupted, printing its endpoints as
/// environment assignments a shell can `export`.
@main
struct DevCloudCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devcloud",
        abstract: "Run snapmount's local cloud (IMDSv2, EC2, release server) on 127.0.0.1.")

    @Option(help: ArgumentHelp("A completed snapshot to offer, id[:GiB[:image-file]].", valueName: "snapshot"))
    var snapshot: [String] = []

    @Option(help: ArgumentHelp("What snap.txt serves (default: the first snapshot's id).", valueName: "text"))
    var release: String?

    @Option(help: ArgumentHelp("Serve snap.txt from this file as it is at each request, as a web server would (404 while it is missing).", valueName: "path"))
    var releaseFile: String?

    @Option(help: ArgumentHelp("Also write the endpoints to this file once ready.", valueName: "path"))
    var readyFile: String?

    @Option(help: ArgumentHelp("Present attached volumes as block devices (loop devices, needs root) under PATH/dev and PATH/sys.", valueName: "path"))
    var deviceRoot: String?

    @Option(help: ArgumentHelp("Hot-plug attached volumes into the QEMU guest whose QMP socket this is, as NVMe disks with the volume's serial.", valueName: "socket"))
    var qmp: String?

    @Option(help: ArgumentHelp("Where the QMP mode keeps each volume's image (default: beside the socket).", valueName: "dir"))
    var storage: String?

    @Option(help: ArgumentHelp("The instance this cloud serves (default i-0123456789abcdef0).", valueName: "id"))
    var instanceID: String?

    @Option(help: ArgumentHelp("Answer EC2 as EC2 does (ec2) or as EC2-compatible emulators do (emulator).", valueName: "dialect"))
    var dialect: String = "ec2"

    @Option(help: ArgumentHelp("How long CreateVolume takes to make a volume available.", valueName: "duration"))
    var createDelay: String?

    @Option(help: ArgumentHelp("How long AttachVolume takes to attach it.", valueName: "duration"))
    var attachDelay: String?

    @Option(help: ArgumentHelp("How long a new snapshot stays pending before it is completed.", valueName: "duration"))
    var snapshotDelay: String?

    @Option(help: ArgumentHelp("Serve this many more instances, each with its identity, role and (with --device-root) devices under PATH/<id>; listed in --instances-file.", valueName: "n"))
    var instances: Int = 0

    @Option(help: ArgumentHelp("Where to write the extra instances as JSON: id, IMDS endpoint, device and sys directories.", valueName: "path"))
    var instancesFile: String?

    func validate() throws {
        guard Dialect(rawValue: dialect) != nil else { throw ValidationError("--dialect must be ec2 or emulator") }
        if let instanceID, InstanceID(instanceID) == nil { throw ValidationError("--instance-id \(instanceID) is not an instance id") }
        for delay in [createDelay, attachDelay, snapshotDelay].compactMap({ $0 }) where (try? DurationText.parse(delay)) == nil {
            throw ValidationError("\(delay) is not a duration")
        }
        guard (0...1000).contains(instances) else { throw ValidationError("--instances must be 0 to 1000") }
    }

    func run() async throws {
        var settings = DevCloudSettings()
        if let instanceID { settings.instanceID = instanceID }
        settings.dialect = Dialect(rawValue: dialect) ?? .ec2
        if let createDelay, let delay = try? DurationText.parse(createDelay) { settings.delays.volumeCreate = delay }
        if let attachDelay, let delay = try? DurationText.parse(attachDelay) { settings.delays.attach = delay }
        if let snapshotDelay, let delay = try? DurationText.parse(snapshotDelay) { settings.delays.snapshot = delay }
        let cloud = try await DevCloud.start(settings)
        var planes: [String: DevicePlane] = [:]
        var extra: [(instance: DevInstance, root: String?)] = []
        for index in 0..<instances {
            let hex = String(0x1_0000_0000 + index, radix: 16)
            let id = "i-" + String(repeating: "0", count: 17 - hex.count) + hex
            let instance = DevInstance(id: id, availabilityZone: settings.availabilityZone, roleName: "snapmount-role-\(index + 1)",
                                       privateAddress: "10.0.\(1 + index / 250).\(1 + index % 250)")
            await cloud.state.addInstance(instance)
            extra.append((instance, deviceRoot.map { "\($0)/\(id)" }))
        }
        if let deviceRoot {
            planes[settings.instanceID] = try DevicePlane(state: cloud.state, root: deviceRoot)
            for (instance, root) in extra { if let root { planes[instance.id] = try DevicePlane(state: cloud.state, root: root) } }
            let byInstance = planes
            await cloud.state.onAttachment { event in
                let instance: String? = switch event {
                case .attached(_, let id, _), .detached(_, let id, _): id
                case .deleted: nil
                }
                if let instance {
                    await byInstance[instance]?.handle(event)
                } else {
                    for plane in byInstance.values { await plane.handle(event) }
                }
            }
            await cloud.state.onSnapshot { volume, snapshot in
                for plane in byInstance.values {
                    if let image = await plane.snapshotImage(volumeID: volume, snapshotID: snapshot) { return image }
                }
                return nil
            }
        }
        if let instancesFile {
            let rows = extra.map { instance, root -> [String: String] in
                var row = ["id": instance.id, "imds": "\(cloud.imdsEndpoint)/\(instance.id)", "privateAddress": instance.privateAddress]
                if let root { row["dev"] = root + "/dev"; row["sys"] = root + "/sys" }
                return row
            }
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: instancesFile))
        }
        if let qmp {
            let storage = storage ?? ((qmp as NSString).deletingLastPathComponent + "/volumes")
            let hotplug = try QMPDevicePlane(state: cloud.state, socketPath: qmp, storageDirectory: storage)
            await cloud.state.onAttachment { event in await hotplug.handle(event) }
        }
        for spec in snapshot {
            let parts = spec.split(separator: ":", maxSplits: 2).map(String.init)
            await cloud.state.addSnapshot(DevSnapshot(id: parts[0], sizeGiB: parts.count > 1 ? Int(parts[1]) ?? 1 : 1,
                                                      image: parts.count > 2 ? parts[2] : nil))
        }
        if let releaseFile {
            await cloud.state.setRelease(ReleaseResponse(body: "", file: releaseFile))
        } else if let text = release ?? snapshot.first.map({ String($0.prefix { $0 != ":" }) + "\n" }) {
            await cloud.state.setRelease(ReleaseResponse(body: text))
        }
        var environment = cloud.environment
        if let deviceRoot {
            environment["SNAPMOUNT_DEV_DIR"] = deviceRoot + "/dev"
            environment["SNAPMOUNT_SYS_DIR"] = deviceRoot + "/sys"
        }
        var lines = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        lines.append("DEVCLOUD_CONTROL=\(cloud.controlEndpoint)")
        let text = lines.joined(separator: "\n") + "\n"
        print(text, terminator: "")
        fflush(nil)
        if let readyFile { try text.write(toFile: readyFile, atomically: true, encoding: .utf8) }
        // Serve until SIGINT or SIGTERM.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let signals = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = NSLock()
            var resumed = false
            for source in signals {
                source.setEventHandler {
                    once.withLock {
                        if !resumed {
                            resumed = true
                            continuation.resume()
                        }
                    }
                }
                source.resume()
            }
        }
        // Used after the wait, so that they live until a signal came: an optimised build
        // releases a value after its last use, and sources released early never fire (SIGTERM
        // was then ignored, and the caller's SIGKILL left every loop device attached).
        for source in signals { source.cancel() }
        await cloud.stop()
        for plane in planes.values { await plane.shutdown() }
    }
}
