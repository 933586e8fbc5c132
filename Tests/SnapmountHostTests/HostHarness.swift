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
        case "vfat":
            try sh("mkfs.vfat", ["-n", "CODE_RELEAS", image])  // vfat labels have 11 characters at most
        case "mdraid-1.2":
            try writeBytes(mdraidSuperblock1(sizeBytes: 1 << 30), at: 4096, to: image)
        case "mdraid-0.90":
            try writeBytes(mdraidSuperblock0(sizeBytes: 1 << 30), at: ((1 << 30) & ~0xffff) - 0x10000, to: image)
        case "luks":
            let key = "\(directory)/luks.key"
            try "test-key".write(toFile: key, atomically: true, encoding: .utf8)
            try sh("cryptsetup", ["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, image])
        default: throw HarnessError.command("unknown image kind \(kind)")
        }
        return image
    }
}

/// An md RAID member with a version 1.2 superblock (mdadm's default), as `mdadm --create
/// --level=1 --raid-devices=2` writes it 4 KiB into the device. Built by hand because this
/// kernel has no md driver for mdadm to create an array with.
func mdraidSuperblock1(sizeBytes: Int) -> [UInt8] {
    var block = [UInt8](repeating: 0, count: 256 + 2 * 2)
    func put32(_ value: UInt32, _ offset: Int) { for i in 0..<4 { block[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
    func put64(_ value: UInt64, _ offset: Int) { for i in 0..<8 { block[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
    let sectors = UInt64(sizeBytes / 512)
    put32(0xa92b_4efc, 0)  // magic
    put32(1, 4)  // major version
    for i in 0..<16 { block[16 + i] = UInt8(i + 1) }  // array uuid
    for (i, byte) in "snapmount:0".utf8.enumerated() { block[32 + i] = byte }  // array name
    put64(1_700_000_000, 64)  // creation time
    put32(1, 72)  // level 1
    put64(sectors - 2048 - 8, 80)  // array size
    put32(2, 92)  // raid disks
    put64(2048, 128)  // data offset
    put64(sectors - 2048, 136)  // data size
    put64(8, 144)  // super offset: sector 8, 4 KiB
    for i in 0..<16 { block[168 + i] = UInt8(i + 17) }  // device uuid
    put64(1_700_000_000, 192)  // update time
    put64(1, 200)  // events
    put64(.max, 208)  // resync offset
    put32(2, 220)  // max devices
    block[258] = 0xfe  // role of the second device: spare ("missing")
    block[259] = 0xff
    // The checksum md computes: 32-bit little-endian words summed in 64 bits, folded.
    var sum: UInt64 = 0
    for offset in stride(from: 0, to: block.count, by: 4) {
        sum += (0..<4).reduce(UInt64(0)) { $0 | UInt64(block[offset + $1]) << (8 * $1) }
    }
    put32(UInt32(truncatingIfNeeded: (sum & 0xffff_ffff) + (sum >> 32)), 216)
    return block
}

/// An md RAID member with the old version 0.90 superblock, 64 KiB-aligned at the end.
func mdraidSuperblock0(sizeBytes: Int) -> [UInt8] {
    let words: [UInt32] = [0xa92b_4efc, 0, 90, 0, 0, 0x1234_5678, 1_700_000_000, 1, UInt32((sizeBytes - 0x10000) / 1024), 2, 2, 0, 0,
                           0x9abc_def0, 0x1111_1111, 0x2222_2222]
    return words.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
}

func writeBytes(_ bytes: [UInt8], at offset: Int, to path: String) throws {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw HarnessError.command("open \(path)") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard written == bytes.count else { throw HarnessError.command("pwrite \(path)") }
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
        await cloud.state.onSnapshot { volume, snapshot in await plane.snapshotImage(volumeID: volume, snapshotID: snapshot) }
        await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1, image: image))
        await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
    }

    func configuration(_ extra: [ConfigKey: String] = [:]) throws -> Configuration {
        var options: [ConfigKey: String] = [.source: cloud.sourceURL, .mountPoint: mountPoint, .fstab: fstab, .deviceTimeout: "5s"]
        options.merge(extra) { _, new in new }
        return try Configuration.resolve(file: nil, environment: [:], options: options)
    }

    func agentEnvironment() throws -> AgentEnvironment { try AgentEnvironment(environment) }

    func host() throws -> HostEdges {
        var host = HostEdges.system(try agentEnvironment())
        host.lockTimeout = .seconds(30)
        return host
    }

    /// Runs the boot flow in this process (on its own thread).
    func run(_ extra: [ConfigKey: String] = [:], logger: Logger = quietLogger) async throws -> FlowOutcome {
        try await runFlow(.apply, extra, logger: logger).outcome
    }

    /// Runs the boot flow in either mode, returning its checklist too.
    func runFlow(_ mode: FlowMode, _ extra: [ConfigKey: String] = [:],
                 logger: Logger = quietLogger) async throws -> (outcome: FlowOutcome, checklist: [ChecklistItem<BootStep>]) {
        let configuration = try configuration(extra)
        let environment = try agentEnvironment()
        let host = try host()
        return try await onThread {
            let flow = BootFlow(configuration: configuration, environment: environment, host: host, mode: mode, logger: logger,
                                tuning: fastTuning())
            return (try flow.run(), flow.checklist)
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

    /// A disk that is not the volume — a loop device on `image`, at the volume's size — shown
    /// as `<dev>/<name>` with its sysfs entry, to tempt a name match. Freed at cleanup.
    @discardableResult
    func presentDecoy(named name: String, image: String) throws -> String {
        let copy = root + "/decoy.img"
        try Images.sh("cp", ["--sparse=always", image, copy])
        let loop = try SystemCommandRunner().run("losetup", ["--find", "--show", copy]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        decoys.append(loop)
        var status = stat()
        guard stat(loop, &status) == 0 else { throw HarnessError.command("stat \(loop)") }
        let base = "\(root)/sys/block/\(name)"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let rdev = UInt64(status.st_rdev)
        let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)
        let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)
        try "\((1 << 30) / 512)\n".write(toFile: base + "/size", atomically: true, encoding: .utf8)
        try "\(major):\(minor)\n".write(toFile: base + "/dev", atomically: true, encoding: .utf8)
        guard mknod("\(root)/dev/\(name)", S_IFBLK | 0o600, status.st_rdev) == 0 else { throw HarnessError.command("mknod \(name)") }
        return copy
    }

    private(set) var decoys: [String] = []

    var isMounted: Bool {
        ((try? SystemMounter().mounts()) ?? []).contains { $0.mountPoint == mountPoint }
    }

    func unmount() {
        while isMounted { umount2(mountPoint, Int32(MNT_DETACH)) }
    }

    func cleanup() async {
        unmount()
        for loop in decoys { _ = try? SystemCommandRunner().run("losetup", ["-d", loop]) }
        await stopCloud(cloud)
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
