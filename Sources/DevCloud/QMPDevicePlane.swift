import Foundation
import SnapmountCore
import SnapmountSystem

#if canImport(Glibc)
import Glibc
#endif

/// The device plane for a real boot: an attached volume is hot-plugged into a QEMU guest as
/// an NVMe controller whose serial is the volume id without its dash — what a Nitro
/// instance's kernel sees — over QMP (`blockdev-add`, `device_add nvme`); a detach unplugs
/// it (`device_del`, then `blockdev-del` once the guest let go). Each volume is a sparse
/// copy of its snapshot's image in `storageDirectory`.
public actor QMPDevicePlane {
    public let socketPath: String
    public let storageDirectory: String
    private let state: CloudState
    private var client: QMPClient?
    private var plugged: Set<String> = []
    /// What the plane did, for the test's report.
    public private(set) var log: [String] = []

    public init(state: CloudState, socketPath: String, storageDirectory: String) throws {
        self.state = state
        self.socketPath = socketPath
        self.storageDirectory = storageDirectory
        try FileManager.default.createDirectory(atPath: storageDirectory, withIntermediateDirectories: true)
    }

    public func handle(_ event: AttachmentEvent) async {
        do {
            switch event {
            case .attached(let volume, _, _): try await plug(volume)
            case .detached(let volume, _, _): try unplug(volume.id)
            case .deleted(let id):
                if plugged.contains(id) { try unplug(id) }
                try? FileManager.default.removeItem(atPath: backingFile(id))
            }
        } catch {
            log.append("error: \(error)")
            FileHandle.standardError.write(Data("devcloud qmp plane: \(error)\n".utf8))
        }
    }

    private func backingFile(_ id: String) -> String { "\(storageDirectory)/\(id).img" }

    private func connected() throws -> QMPClient {
        if let client { return client }
        let fresh = try QMPClient(socketPath: socketPath)
        client = fresh
        return fresh
    }

    private func plug(_ volume: DevVolume) async throws {
        guard !plugged.contains(volume.id) else { return }
        let file = backingFile(volume.id)
        if !FileManager.default.fileExists(atPath: file) {
            if let id = volume.snapshotID, let image = await state.snapshot(id)?.image {
                let copy = Process()
                copy.executableURL = URL(fileURLWithPath: "/bin/cp")
                copy.arguments = ["--sparse=always", image, file]
                try copy.run()
                copy.waitUntilExit()
            } else {
                _ = FileManager.default.createFile(atPath: file, contents: nil)
            }
            guard truncate(file, off_t(volume.sizeGiB) << 30) == 0 else { throw QMPError.system("truncate \(file)") }
        }
        let node = Self.node(volume.id)
        let serial = volume.id.replacingOccurrences(of: "-", with: "")
        let qmp = try connected()
        try qmp.execute("blockdev-add", [
            "node-name": node, "driver": "raw", "file": ["driver": "file", "filename": file] as [String: Any],
        ])
        try qmp.execute("device_add", ["driver": "nvme", "id": "dev-\(node)", "drive": node, "serial": serial])
        plugged.insert(volume.id)
        log.append("plugged \(volume.id) as nvme serial \(serial)")
    }

    private func unplug(_ id: String) throws {
        guard plugged.contains(id) else { return }
        let node = Self.node(id)
        let qmp = try connected()
        try qmp.execute("device_del", ["id": "dev-\(node)"])
        // The guest acknowledges the removal (ACPI eject); only then is the drive free.
        qmp.waitForEvent("DEVICE_DELETED", device: "dev-\(node)", timeout: 20)
        try qmp.execute("blockdev-del", ["node-name": node])
        plugged.remove(id)
        log.append("unplugged \(id)")
    }

    /// A node name QEMU accepts: letters, digits, `-`, `_`; starting with a letter.
    static func node(_ id: String) -> String { id.replacingOccurrences(of: "-", with: "_") }
}

enum QMPError: Error, CustomStringConvertible {
    case system(String)
    case protocolError(String)
    case command(String, String)

    var description: String {
        switch self {
        case .system(let what): "\(what): \(String(cString: strerror(errno)))"
        case .protocolError(let what): "QMP: \(what)"
        case .command(let name, let error): "QMP \(name): \(error)"
        }
    }
}

/// A blocking QMP client on a Unix socket: one JSON object per line each way.
final class QMPClient: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var events: [[String: Any]] = []

    init(socketPath: String) throws {
        // The socket is the object's only once connected (a thrown init after that closes it
        // in deinit, once).
        let socketFD = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard socketFD >= 0 else { throw QMPError.system("socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8.prefix(107))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socketFD, $0, length) }
        }
        guard connected == 0 else {
            close(socketFD)
            throw QMPError.system("connect \(socketPath)")
        }
        fd = socketFD
        guard let greeting = try readMessage(), greeting["QMP"] != nil else { throw QMPError.protocolError("no greeting") }
        try execute("qmp_capabilities", nil)
    }

    deinit { close(fd) }

    /// Sends a command and waits for its answer; events that arrive meanwhile are kept.
    func execute(_ name: String, _ arguments: [String: Any]?) throws {
        var command: [String: Any] = ["execute": name]
        if let arguments { command["arguments"] = arguments }
        var line = try JSONSerialization.data(withJSONObject: command)
        line.append(UInt8(ascii: "\n"))
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == line.count else { throw QMPError.system("write") }
        while let message = try readMessage() {
            if message["event"] != nil {
                events.append(message)
                continue
            }
            if let error = message["error"] as? [String: Any] {
                throw QMPError.command(name, "\(error["desc"] ?? error)")
            }
            if message["return"] != nil { return }
        }
        throw QMPError.protocolError("the connection closed during \(name)")
    }

    /// Waits (bounded) for an event about a device.
    func waitForEvent(_ name: String, device: String, timeout: Double) {
        let until = Date().addingTimeInterval(timeout)
        func matches(_ event: [String: Any]) -> Bool {
            event["event"] as? String == name && (event["data"] as? [String: Any])?["device"] as? String == device
        }
        while Date() < until {
            if let index = events.firstIndex(where: matches) {
                events.remove(at: index)
                return
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 200) > 0 else { continue }
            guard let message = try? readMessage() else { return }
            if message["event"] != nil { events.append(message) }
        }
    }

    private func readMessage() throws -> [String: Any]? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                guard !line.isEmpty else { continue }
                guard let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                    throw QMPError.protocolError("not a JSON object")
                }
                return object
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return nil }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }
}
