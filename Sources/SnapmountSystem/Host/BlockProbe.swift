#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CBlkid
import SnapmountCore

public enum ProbeError: SnapmountError, Equatable {
    case open(String, errno: Int32)
    case failed(String)

    /// A device that is gone (detached between finding and probing it) is worth another run;
    /// anything else about the device is a refusal.
    public var exitStatus: ExitStatus {
        switch self {
        case .open(_, let code) where Self.vanished.contains(code): .timedOut
        case .open, .failed: .dataRefused
        }
    }

    static let vanished: Set<Int32> = [ENOENT, ENXIO, ENODEV]

    public var description: String {
        switch self {
        case .open(let path, let code) where Self.vanished.contains(code):
            "\(path) vanished before it could be probed (\(String(cString: strerror(code)))); a later run looks for it again"
        case .open(let path, let code): "cannot open \(path) to probe it: \(String(cString: strerror(code)))"
        case .failed(let path): "libblkid could not probe \(path); refusing to touch it"
        }
    }
}

/// Reads a device's signatures; never writes. Behind a protocol for the dry-run and tests.
public protocol BlockProber: Sendable {
    func probe(_ path: String) throws(ProbeError) -> DeviceContent
    /// Whether the first and last MiB of the device are all zero bytes: a volume from a blank
    /// snapshot is; random or encrypted data without a header is not, though libblkid finds
    /// no signature in it.
    func isZeroed(_ path: String) throws(ProbeError) -> Bool
}

/// libblkid's low-level probe, with superblocks and partition tables on.
public struct BlkidProber: BlockProber {
    public init() {}

    /// The corresponding C functions are `blkid_new_probe_from_filename` and `blkid_do_safeprobe`.
    public func probe(_ path: String) throws(ProbeError) -> DeviceContent {
        guard let probe = blkid_new_probe_from_filename(path) else { throw .open(path, errno: errno) }
        defer { blkid_free_probe(probe) }
        guard cblkid_configure_probe(probe) == 0 else { throw .failed(path) }
        switch blkid_do_safeprobe(probe) {
        case 1:
            return .blank
        case 0:
            func value(_ name: String) -> String? { cblkid_value(probe, name).map { String(cString: $0) } }
            if let table = value("PTTYPE") { return .other("a \(table) partition table") }
            guard let type = value("TYPE") else { return .other("an unknown signature") }
            switch value("USAGE") {
            case "filesystem":
                return .filesystem(type: type, label: value("LABEL"))
            case "raid":
                return .other("a RAID member (\(type))")
            case "crypto":
                return .other("an encrypted container (\(type))")
            default:
                return type == "swap" ? .other("swap space") : .other("a \(type) signature")
            }
        case -2:
            return .other("several conflicting signatures")
        default:
            throw .failed(path)
        }
    }

    /// The corresponding C functions are `open`, `lseek` and `pread`.
    public func isZeroed(_ path: String) throws(ProbeError) -> Bool {
        let fd: Int32
        do { fd = try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC) } } catch { throw .open(path, errno: error.errno) }
        defer { close(fd) }
        guard let zeroed = try? Self.zeroedAtBothEnds(fd, path) else { throw .failed(path) }
        return zeroed
    }

    /// `nil` when the device is empty or ends before a window is read.
    private static func zeroedAtBothEnds(_ fd: Int32, _ path: String) throws(SystemCallError) -> Bool? {
        let size = try systemCall("lseek", path) { lseek(fd, 0, SEEK_END) }
        guard size > 0 else { return nil }
        let window = min(off_t(1 << 20), size)
        var buffer = [UInt8](repeating: 0, count: Int(window))
        for offset in [0, max(0, size - window)] {
            var done = 0
            while done < buffer.count {
                let count = try readSome(fd, into: &buffer, from: done, at: offset + off_t(done), subject: path)
                guard count > 0 else { return nil }
                done += count
            }
            if buffer.contains(where: { $0 != 0 }) { return false }
        }
        return true
    }
}
