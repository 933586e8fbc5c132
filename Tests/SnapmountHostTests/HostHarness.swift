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

/// Root tests need loop devices, mknod and mount. Without root they skip and say so; under
/// CI (which runs as root) a missing capability is a failure, never a silent skip.
func requireRoot(_ test: String) -> Bool {
    if getuid() == 0 { return true }
    if ProcessInfo.processInfo.environment["CI"] == "true" {
        Issue.record("\(test) needs root (loop devices, mount), and CI must run it")
    } else {
        print("SKIPPED \(test): needs root (loop devices, mknod, mount); run `make test` as root")
    }
    return false
}

let releaseFiles: [String: String] = [
    "VERSION": "release 42\n",
    "app/main.py": "print('hello from release 42')\n",
    "app/config.json": "{\"feature\": true}\n",
]

/// Snapshot images, made once per test process in a temporary directory.
enum Images {
    static let directory: String = {
        let path = "/var/tmp/snapmount-test-images-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // Gone when the test process exits.
        atexit { try? FileManager.default.removeItem(atPath: "/var/tmp/snapmount-test-images-\(getpid())") }
        return path
    }()

    static func sh(_ program: String, _ arguments: [String]) throws {
        let result = try SystemCommandRunner().run(program, arguments)
        guard result.status == 0 else { throw HarnessError.command("\(program) \(arguments.joined(separator: " ")): \(result.output)") }
    }

    private static func sparse(_ name: String, gib: Int = 1) throws -> String {
        let path = "\(directory)/\(name).img"
        unlink(path)
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        guard truncate(path, off_t(gib) << 30) == 0 else { throw HarnessError.command("truncate \(path)") }
        return path
    }

    /// Suites run in parallel: an image is made once, under this lock.
    static let lock = NSLock()

    static func release(label: String = "code_release") throws -> String {
        lock.lock()
        defer { lock.unlock() }
        let name = "release-\(label)"
        let path = "\(directory)/\(name).img"
        if FileManager.default.fileExists(atPath: path) { return path }
        let root = "\(directory)/\(name)-tree"
        for (file, text) in releaseFiles {
            let full = "\(root)/\(file)"
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        let image = try sparse(name)
        try sh("mkfs.ext4", ["-q", "-F", "-L", label, "-d", root, image])
        return image
    }

    static func blank() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        let path = "\(directory)/blank.img"
        return FileManager.default.fileExists(atPath: path) ? path : try sparse("blank")
    }

    static func foreign(_ kind: String) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        let path = "\(directory)/foreign-\(kind).img"
        if FileManager.default.fileExists(atPath: path) { return path }
        let image = try sparse("foreign-\(kind)")
        switch kind {
        case "ext4-other-label": try sh("mkfs.ext4", ["-q", "-F", "-L", "other", image])
        case "xfs": try sh("mkfs.xfs", ["-q", "-f", "-L", "code_release", image])
        case "swap": try sh("mkswap", ["-L", "code_release", image])
        case "gpt":
            let script = "\(directory)/gpt.sfdisk"
            try "label: gpt\n,,L\n".write(toFile: script, atomically: true, encoding: .utf8)
            try sh("sh", ["-c", "sfdisk -q \"$0\" < \"$1\"", image, script])
        case "mbr":
            let script = "\(directory)/mbr.sfdisk"
            try "label: dos\n,,L\n".write(toFile: script, atomically: true, encoding: .utf8)
            try sh("sh", ["-c", "sfdisk -q \"$0\" < \"$1\"", image, script])
        case "random":
            // Random data with no header, as a raw encrypted device would be.
            try sh("dd", ["if=/dev/urandom", "of=\(image)", "bs=1M", "count=2", "conv=notrunc", "status=none"])
            try sh("dd", ["if=/dev/urandom", "of=\(image)", "bs=1M", "count=1", "seek=1023", "conv=notrunc", "status=none"])
        case "luks":
            let key = "\(directory)/luks.key"
            try "test-key".write(toFile: key, atomically: true, encoding: .utf8)
            try sh("cryptsetup", ["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, image])
        default: throw HarnessError.command("unknown image kind \(kind)")
        }
        return image
    }
}

enum HarnessError: Error {
    case command(String)
}

/// DevCloud with its device plane, a private /dev, /sys, state directory, fstab and mount
/// point under a temporary root — removed, unmounted and detached at the end.
final class HostHarness: @unchecked Sendable {
    let root: String
    let cloud: DevCloud
    let plane: DevicePlane
    var fstab: String { root + "/fstab" }
    var mountPoint: String { root + "/release" }
    var environment: [String: String] {
        cloud.environment.merging([
            "SNAPMOUNT_DEV_DIR": root + "/dev", "SNAPMOUNT_SYS_DIR": root + "/sys", "SNAPMOUNT_STATE_DIR": root + "/state",
        ]) { _, new in new }
    }

    static let initialFstab = "# /etc/fstab: static file system information.\nUUID=1234-ABCD / ext4 errors=remount-ro 0 1\n/swapfile none swap sw 0 0"

    init(image: String?, settings: DevCloudSettings = fastSettings()) async throws {
        root = "/var/tmp/snapmount-host-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        // An fstab without a final newline, as real ones sometimes are.
        try Self.initialFstab.write(toFile: root + "/fstab", atomically: true, encoding: .utf8)
        cloud = try await DevCloud.start(settings)
        plane = try DevicePlane(state: cloud.state, root: root)
        let plane = self.plane
        await cloud.state.onAttachment { event in await plane.handle(event) }
        await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1, image: image))
        await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
    }

    func configuration(_ extra: [ConfigKey: String] = [:]) throws -> Configuration {
        var options: [ConfigKey: String] = [.source: cloud.sourceURL, .mountPoint: mountPoint, .fstab: fstab, .deviceTimeout: "5s"]
        options.merge(extra) { _, new in new }
        return try Configuration.resolve(file: nil, environment: [:], options: options)
    }

    func host() -> HostEdges {
        var host = HostEdges.system(environment: environment)
        host.lockTimeout = .seconds(30)
        return host
    }

    /// Runs the boot flow in this process (on its own thread).
    func run(_ extra: [ConfigKey: String] = [:], logger: Logger = quietLogger) async throws -> FlowOutcome {
        let configuration = try configuration(extra)
        let environment = environment
        let host = host()
        return try await onThread {
            try BootFlow(configuration: configuration, environment: environment, host: host, logger: logger, tuning: fastTuning()).run()
        }
    }

    /// Runs the flow and returns its error, if any.
    func runError(_ extra: [ConfigKey: String] = [:]) async throws -> (any Error)? {
        do {
            _ = try await run(extra)
            return nil
        } catch {
            return error
        }
    }

    var isMounted: Bool {
        SystemMounter().mounts().contains { $0.mountPoint == mountPoint }
    }

    func unmount() {
        while isMounted { umount2(mountPoint, Int32(MNT_DETACH)) }
    }

    func cleanup() async {
        unmount()
        await cloud.stop()
        await plane.shutdown()
        try? FileManager.default.removeItem(atPath: root)
    }

    func fstabText() throws -> String { try String(contentsOfFile: fstab, encoding: .utf8) }

    /// A digest of the first volume's bytes (its backing file).
    func volumeDigest() async throws -> String {
        let volumes = await cloud.state.volumeTable()
        guard let id = volumes.first?.id else { return "no volume" }
        return try sparseDigest("\(root)/volumes/\(id).img")
    }
}

/// SHA-256 over a sparse file's non-zero 4 KiB blocks, each with its offset, and its size:
/// equal digests mean equal bytes, whatever holes or written zeros a copy has, without
/// reading a gigabyte of holes.
func sparseDigest(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw HarnessError.command("open \(path)") }
    defer { close(fd) }
    var status = stat()
    fstat(fd, &status)
    var material = Array("size \(status.st_size)\n".utf8)
    var offset: off_t = 0
    var block = [UInt8](repeating: 0, count: 4096)
    while offset < status.st_size {
        let data = lseek(fd, offset, 3)  // SEEK_DATA
        if data < 0 { break }
        let hole = lseek(fd, data, 4)  // SEEK_HOLE
        var position = data - data % 4096
        while position < hole {
            let count = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, position) }
            if count <= 0 { break }
            if block[0..<count].contains(where: { $0 != 0 }) {
                material += Array("block \(position)\n".utf8) + (try SHA256.hash(Array(block[0..<count])))
            }
            position += off_t(count)
        }
        offset = max(hole, position)
    }
    return try SHA256.hash(material).hexString
}

let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }

func withHost<T: Sendable>(image: String?, settings: DevCloudSettings = fastSettings(),
                           _ body: @escaping @Sendable (HostHarness) async throws -> T) async throws -> T {
    let harness = try await HostHarness(image: image, settings: settings)
    do {
        let result = try await body(harness)
        await harness.cleanup()
        return result
    } catch {
        await harness.cleanup()
        throw error
    }
}
