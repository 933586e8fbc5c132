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

    func validate() throws {
        guard Dialect(rawValue: dialect) != nil else { throw ValidationError("--dialect must be ec2 or emulator") }
        if let instanceID, InstanceID(instanceID) == nil { throw ValidationError("--instance-id \(instanceID) is not an instance id") }
    }

    func run() async throws {
        var settings = DevCloudSettings()
        if let instanceID { settings.instanceID = instanceID }
        settings.dialect = Dialect(rawValue: dialect) ?? .ec2
        let cloud = try await DevCloud.start(settings)
        var plane: DevicePlane?
        if let deviceRoot {
            let devices = try DevicePlane(state: cloud.state, root: deviceRoot)
            await cloud.state.onAttachment { event in await devices.handle(event) }
            plane = devices
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
        if let text = release ?? snapshot.first.map({ String($0.prefix { $0 != ":" }) + "\n" }) {
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
        await cloud.stop()
        await plane?.shutdown()
    }
}
