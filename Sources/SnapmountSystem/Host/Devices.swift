#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// A block device the kernel shows under `<sys>/block`.
public struct BlockDevice: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    /// The NVMe controller serial (EBS: the volume id without its dash); `nil` for others.
    public let serial: String?
    public let sizeBytes: UInt64
    /// `major:minor`
    public let number: String

    public var isNVMe: Bool { name.hasPrefix("nvme") }

    public var description: String {
        "\(name) (\(serial.map { "serial \($0), " } ?? "")\(sizeBytes / 1_048_576) MiB)"
    }
}

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

/// Finds the block device that is a given EBS volume (DESIGN.md §4): by NVMe serial on
/// Nitro; else, for non-NVMe devices only, by the requested name or its `xvd` form — and
/// in every case only when the size equals the volume's.
public struct DeviceFinder: Sendable {
    public let devDirectory: String
    public let sysDirectory: String

    public init(devDirectory: String = "/dev", sysDirectory: String = "/sys") {
        self.devDirectory = devDirectory
        self.sysDirectory = sysDirectory
    }

    public init(environment: [String: String]) {
        self.init(devDirectory: environment["SNAPMOUNT_DEV_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/dev",
                  sysDirectory: environment["SNAPMOUNT_SYS_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/sys")
    }

    /// Every block device under `<sys>/block`.
    public func scan() -> [BlockDevice] {
        guard let directory = opendir(sysDirectory + "/block") else { return [] }
        defer { closedir(directory) }
        var devices: [BlockDevice] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard !name.hasPrefix(".") else { continue }
            let base = "\(sysDirectory)/block/\(name)"
            let sectors = readText(base + "/size").flatMap { UInt64($0.trimmingWhitespace()) } ?? 0
            let serial = readText(base + "/device/serial").map { $0.trimmingWhitespace() }
            devices.append(BlockDevice(name: name, serial: serial.flatMap { $0.isEmpty ? nil : $0 },
                                       sizeBytes: sectors * 512, number: readText(base + "/dev")?.trimmingWhitespace() ?? ""))
        }
        return devices.sorted { $0.name < $1.name }
    }

    /// The device node for the volume, if it is present now.
    public func find(_ volume: VolumeID, requestedName: String, sizeGiB: Int) -> String? {
        let size = UInt64(sizeGiB) << 30
        let devices = scan()
        if let nvme = devices.first(where: { $0.serial == volume.nvmeSerial && $0.sizeBytes == size }), isBlockDevice(nvme.name) {
            return "\(devDirectory)/\(nvme.name)"
        }
        let requested = requestedName.split(separator: "/").last.map(String.init) ?? requestedName
        let xen = requested.hasPrefix("sd") ? "xvd" + requested.dropFirst(2) : requested
        for name in [requested, xen] {
            if let device = devices.first(where: { $0.name == name && !$0.isNVMe && $0.sizeBytes == size }), isBlockDevice(device.name) {
                return "\(devDirectory)/\(device.name)"
            }
        }
        return nil
    }

    private func isBlockDevice(_ name: String) -> Bool {
        var status = stat()
        return stat("\(devDirectory)/\(name)", &status) == 0 && (status.st_mode & S_IFMT) == S_IFBLK
    }

    /// Waits for the volume's device: wakes on inotify events in `<dev>` and on a short
    /// timer as a backstop, never longer than `timeout`.
    /// The corresponding C functions are `inotify_init1`, `inotify_add_watch` and `poll`.
    public func wait(for volume: VolumeID, requestedName: String, sizeGiB: Int, timeout: Duration,
                     clock: any AgentClock = SystemClock()) throws(DeviceError) -> String {
        if let path = find(volume, requestedName: requestedName, sizeGiB: sizeGiB) { return path }
        let fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw .watch(devDirectory, errno: errno) }
        defer { close(fd) }
        let mask = UInt32(IN_CREATE | IN_ATTRIB | IN_MOVED_TO)
        guard inotify_add_watch(fd, devDirectory, mask) >= 0 else { throw .watch(devDirectory, errno: errno) }
        let deadline = clock.monotonic() + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let path = find(volume, requestedName: requestedName, sizeGiB: sizeGiB) { return path }
            let remaining = deadline - clock.monotonic()
            guard remaining > .zero else {
                throw .timedOut(volume: volume, after: timeout, seen: scan().map(\.description))
            }
            // The backstop: sysfs attributes can change without an event in <dev>.
            let wait = min(remaining, .milliseconds(250))
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, Int32(max(1, wait.wholeMilliseconds)))
            while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}  // drain
        }
    }
}
