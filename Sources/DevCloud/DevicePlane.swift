import Foundation
import SnapmountCore
import SnapmountSystem

#if canImport(Glibc)
import Glibc
#endif

/// Makes attached volumes appear as block devices, as a Nitro (or Xen) instance would show
/// them: each volume is a file (a sparse copy of its snapshot's image), attached to a real
/// loop device, presented under a private `<dev>` as `nvme<N>n1` (mknod with the loop's
/// numbers) with `<sys>/block/nvme<N>n1/device/serial` holding the volume id without its
/// dash. Needs root. Detach removes the device and frees the loop; delete removes the file.
public actor DevicePlane {
    public enum Mode: Sendable {
        case nitro
        case xen
    }

    public let devDirectory: String
    public let sysDirectory: String
    public let storageDirectory: String
    public var mode: Mode = .nitro
    /// `false`: attachments complete, but no device ever appears.
    public var presentsDevices = true
    /// Present the device this many bytes short of the volume's size (a wrong-size device).
    public var sizeError: UInt64 = 0
    private let state: CloudState
    private let runner = SystemCommandRunner()
    private var presented: [String: (loop: String, name: String)] = [:]

    public init(state: CloudState, root: String) throws {
        self.state = state
        devDirectory = root + "/dev"
        sysDirectory = root + "/sys"
        storageDirectory = root + "/volumes"
        for directory in [devDirectory, sysDirectory + "/block", storageDirectory] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try Self.presentRoot(mode, sys: sysDirectory)
    }

    /// The instance's root disk, in sysfs only (nothing here ever touches it): on Nitro an
    /// EBS NVMe namespace with its serial, on Xen `xvda`, with `hypervisor/type` saying xen.
    private static func presentRoot(_ mode: Mode, sys: String) throws {
        let files = FileManager.default
        for name in ["nvme0n1", "xvda"] { try? files.removeItem(atPath: "\(sys)/block/\(name)") }
        try? files.removeItem(atPath: sys + "/hypervisor")
        let name = mode == .nitro ? "nvme0n1" : "xvda"
        try files.createDirectory(atPath: "\(sys)/block/\(name)/device", withIntermediateDirectories: true)
        try "16777216\n".write(toFile: "\(sys)/block/\(name)/size", atomically: true, encoding: .utf8)
        try (mode == .nitro ? "259:0\n" : "202:0\n").write(toFile: "\(sys)/block/\(name)/dev", atomically: true, encoding: .utf8)
        if mode == .nitro {
            try "vol0aaaaaaaaaaaaaaa0        \n".write(toFile: "\(sys)/block/\(name)/device/serial", atomically: true, encoding: .utf8)
        } else {
            try files.createDirectory(atPath: sys + "/hypervisor", withIntermediateDirectories: true)
            try "xen\n".write(toFile: sys + "/hypervisor/type", atomically: true, encoding: .utf8)
        }
    }

    public func setMode(_ mode: Mode) throws {
        self.mode = mode
        try Self.presentRoot(mode, sys: sysDirectory)
    }
    public func setPresentsDevices(_ value: Bool) { presentsDevices = value }
    public func setSizeError(_ bytes: UInt64) { sizeError = bytes }

    /// The loop devices in use, for tests that check nothing is left behind.
    public var loopDevices: [String] { presented.values.map(\.loop) }

    public func handle(_ event: AttachmentEvent) async {
        do {
            switch event {
            case .attached(let volume, _, let device): try await attach(volume, device: device)
            case .detached(let volume, _, _): try detach(volume.id)
            case .deleted(let id):
                try? detach(id)
                try? FileManager.default.removeItem(atPath: backingFile(id))
            }
        } catch {
            FileHandle.standardError.write(Data("devcloud device plane: \(error)\n".utf8))
        }
    }

    /// Detaches every loop device and removes every node, file and directory it made.
    public func shutdown() {
        for id in presented.keys { try? detach(id) }
        try? FileManager.default.removeItem(atPath: storageDirectory)
    }

    private func backingFile(_ id: String) -> String { "\(storageDirectory)/\(id).img" }

    /// CreateSnapshot: a sparse copy of the volume's file as it is now, the snapshot's image
    /// (`nil` for a volume this plane does not hold). Wire it with ``CloudState/onSnapshot(_:)``.
    public func snapshotImage(volumeID: String, snapshotID: String) -> String? {
        let source = backingFile(volumeID)
        guard FileManager.default.fileExists(atPath: source) else { return nil }
        let image = "\(storageDirectory)/\(snapshotID).snapshot.img"
        do {
            try run("cp", ["--sparse=always", source, image])
            return image
        } catch {
            FileHandle.standardError.write(Data("devcloud device plane: \(error)\n".utf8))
            return nil
        }
    }

    private func attach(_ volume: DevVolume, device: String) async throws {
        guard presentsDevices, presented[volume.id] == nil else { return }
        let file = backingFile(volume.id)
        let size = UInt64(volume.sizeGiB) << 30
        if !FileManager.default.fileExists(atPath: file) {
            if let id = volume.snapshotID, let image = await state.snapshot(id)?.image {
                try run("cp", ["--sparse=always", image, file])
            } else {
                _ = FileManager.default.createFile(atPath: file, contents: nil)
            }
            guard truncate(file, off_t(size)) == 0 else { throw PlaneError.system("truncate \(file)", errno) }
        }
        let loop = try run("losetup", ["--find", "--show", file]).trimmingCharacters(in: .whitespacesAndNewlines)
        var status = stat()
        guard stat(loop, &status) == 0 else { throw PlaneError.system("stat \(loop)", errno) }
        let name: String
        switch mode {
        case .nitro:
            var index = 1
            while FileManager.default.fileExists(atPath: "\(devDirectory)/nvme\(index)n1") { index += 1 }
            name = "nvme\(index)n1"
        case .xen:
            name = "xvd" + (device.split(separator: "/").last.map { $0.hasPrefix("sd") ? String($0.dropFirst(2)) : String($0.dropFirst(3)) } ?? "f")
        }
        let base = "\(sysDirectory)/block/\(name)"
        try FileManager.default.createDirectory(atPath: base + "/device", withIntermediateDirectories: true)
        let rdev = UInt64(status.st_rdev)
        let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)
        let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)
        try "\((size - sizeError) / 512)\n".write(toFile: base + "/size", atomically: true, encoding: .utf8)
        try "\(major):\(minor)\n".write(toFile: base + "/dev", atomically: true, encoding: .utf8)
        if mode == .nitro {
            // Real controllers pad the serial with spaces.
            try "\(volume.id.replacingOccurrences(of: "-", with: ""))        \n".write(toFile: base + "/device/serial", atomically: true, encoding: .utf8)
        }
        presented[volume.id] = (loop, name)
        // The node last: a watcher woken by it finds everything else in place.
        guard mknod("\(devDirectory)/\(name)", S_IFBLK | 0o600, status.st_rdev) == 0 else {
            throw PlaneError.system("mknod \(devDirectory)/\(name)", errno)
        }
    }

    private func detach(_ id: String) throws {
        guard let entry = presented.removeValue(forKey: id) else { return }
        unlink("\(devDirectory)/\(entry.name)")
        try? FileManager.default.removeItem(atPath: "\(sysDirectory)/block/\(entry.name)")
        try run("losetup", ["-d", entry.loop])
    }

    @discardableResult
    private func run(_ program: String, _ arguments: [String]) throws -> String {
        let result = try runner.run(program, arguments)
        guard result.status == 0 else { throw PlaneError.command("\(program) \(arguments.joined(separator: " "))", result.output) }
        return result.output
    }

    enum PlaneError: Error, CustomStringConvertible {
        case system(String, Int32)
        case command(String, String)

        var description: String {
            switch self {
            case .system(let what, let code): "\(what): \(String(cString: strerror(code)))"
            case .command(let what, let output): "\(what) failed: \(output)"
            }
        }
    }
}
