#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

public enum DeviceError: SnapmountError, Equatable {
    case timedOut(volume: VolumeID, after: Duration, seen: [String])
    case watch(String, errno: Int32)

    public var exitStatus: ExitStatus {
        switch self {
        case .timedOut: .timedOut
        case .watch: .internalError
        }
    }

    public var description: String {
        switch self {
        case .timedOut(let volume, let after, let seen):
            "no block device for \(volume) appeared within \(DurationText.format(after)); devices seen: "
                + (seen.isEmpty ? "none" : seen.joined(separator: ", "))
        case .watch(let path, let code):
            "cannot watch \(path) for new devices: \(String(cString: strerror(code)))"
        }
    }
}

/// The machine's block devices: sysfs and `/dev` in the product (``SysfsBlockDevices``), a
/// table in tests. Which one of them is the volume is decided by ``DeviceIdentification``.
public protocol BlockDeviceSource: Sendable {
    /// Where device nodes are: `/dev`.
    var devDirectory: String { get }
    /// `/sys/hypervisor/type`: `xen` on a Xen instance; nothing on Nitro.
    var hypervisor: String? { get }
    /// Every block device now.
    func scan() -> [BlockDevice]
    /// Starts watching for devices that come and go.
    func watch() throws(DeviceError) -> any DeviceWatch
}

/// A watch on the device directory.
public protocol DeviceWatch: AnyObject {
    /// Returns once something may have changed, or after `timeout` at the latest.
    func wait(upTo timeout: Duration)
}

extension BlockDeviceSource {
    /// The device that is the volume, if it is present now.
    public func find(_ volume: VolumeID, sizeGiB: Int, attachedAs name: String) -> ProvenDevice? {
        let devices = scan()
        return DeviceIdentification.identify(volume, sizeGiB: sizeGiB, attachedAs: name,
                                             byName: DeviceIdentification.namesIdentify(hypervisor: hypervisor, among: devices),
                                             devDirectory: devDirectory, among: devices)
    }

    /// Waits for the volume's device: wakes on every change the watch reports, and on a
    /// short timer as a backstop (sysfs attributes change without an event in `<dev>`);
    /// never longer than `timeout`.
    public func wait(for volume: VolumeID, sizeGiB: Int, attachedAs name: String, timeout: Duration,
                     clock: any AgentClock = SystemClock()) throws(DeviceError) -> ProvenDevice {
        if let device = find(volume, sizeGiB: sizeGiB, attachedAs: name) { return device }
        let watch = try self.watch()
        let deadline = clock.monotonic() + timeout
        while true {
            if let device = find(volume, sizeGiB: sizeGiB, attachedAs: name) { return device }
            let remaining = deadline - clock.monotonic()
            guard remaining > .zero else {
                throw .timedOut(volume: volume, after: timeout, seen: scan().map(\.description))
            }
            watch.wait(upTo: min(remaining, .milliseconds(250)))
        }
    }
}

/// Block devices as the kernel shows them: `<sys>/block/*` for names, sizes, numbers and
/// NVMe serials, `<dev>/<name>` for the nodes.
public struct SysfsBlockDevices: BlockDeviceSource {
    public let devDirectory: String
    public let sysDirectory: String

    public init(devDirectory: String = "/dev", sysDirectory: String = "/sys") {
        self.devDirectory = devDirectory
        self.sysDirectory = sysDirectory
    }

    /// The corresponding C functions are `opendir`, `readdir` and `stat`.
    public func scan() -> [BlockDevice] {
        guard let directory = try? systemCall("opendir", sysDirectory + "/block", { opendir(sysDirectory + "/block") }) else { return [] }
        defer { closedir(directory) }
        var devices: [BlockDevice] = []
        while let entry = readdir(directory) {
            let name = entryName(entry)
            guard !name.hasPrefix(".") else { continue }
            let base = "\(sysDirectory)/block/\(name)"
            let sectors = readText(base + "/size").flatMap { UInt64($0.trimmingWhitespace()) } ?? 0
            let serial = readText(base + "/device/serial").map { $0.trimmingWhitespace() }
            devices.append(BlockDevice(
                name: name, serial: serial.flatMap { $0.isEmpty ? nil : $0 }, sizeBytes: sectors * 512,
                number: readText(base + "/dev")?.trimmingWhitespace() ?? "", hasNode: isBlockDevice("\(devDirectory)/\(name)")))
        }
        return devices.sorted { $0.name < $1.name }
    }

    public var hypervisor: String? {
        readText(sysDirectory + "/hypervisor/type")?.trimmingWhitespace()
    }

    public func watch() throws(DeviceError) -> any DeviceWatch {
        try InotifyWatch(devDirectory)
    }
}

/// Whether `path` is a block device node. The corresponding C function is `stat`.
public func isBlockDevice(_ path: String) -> Bool {
    var status = stat()
    guard (try? systemCall("stat", path, { stat(path, &status) })) != nil else { return false }
    return (status.st_mode & S_IFMT) == S_IFBLK
}

/// inotify on a directory: nodes created, renamed in, or changed.
/// The corresponding C functions are `inotify_init1`, `inotify_add_watch`, `poll` and `read`.
final class InotifyWatch: DeviceWatch {
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 4096)

    init(_ directory: String) throws(DeviceError) {
        // The descriptor is the object's only once the watch is set: a class whose init throws
        // after its properties are set is deinitialised, and its deinit would close the
        // descriptor a second time — by then perhaps another thread's newly opened file.
        let watching: Int32
        do {
            watching = try systemCall("inotify_init1", directory) { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) }
        } catch {
            throw .watch(directory, errno: error.errno)
        }
        do {
            try systemCall("inotify_add_watch", directory) { inotify_add_watch(watching, directory, UInt32(IN_CREATE | IN_ATTRIB | IN_MOVED_TO)) }
        } catch {
            close(watching)
            throw .watch(directory, errno: error.errno)
        }
        fd = watching
    }

    func wait(upTo timeout: Duration) {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = try? systemCall("poll", "inotify") { poll(&descriptor, 1, Int32(clamping: max(1, timeout.wholeMilliseconds))) }
        // Drain what arrived; the caller looks at the devices themselves, not the events.
        while let count = try? readSome(fd, into: &buffer, subject: "inotify"), count > 0 {}
    }

    deinit { close(fd) }
}
