/// One `/etc/fstab` line: `LABEL=code_release /release ext4 defaults,nofail,… 0 2`.
public struct FstabEntry: Sendable, Equatable, CustomStringConvertible {
    public let spec: String
    public let mountPoint: String
    public let type: String
    public let options: String
    public let dump: Int
    public let pass: Int

    /// The entry snapmount adds: by label, `nofail` and a short `x-systemd.device-timeout`
    /// so that a later boot never hangs if the volume is gone.
    public init(label: FilesystemLabel, mountPoint: AbsolutePath, filesystem: Filesystem, options: MountOptions) {
        var list = options.options
        if !list.contains("nofail") { list.append("nofail") }
        if !list.contains(where: { $0.hasPrefix("x-systemd.device-timeout=") }) { list.append("x-systemd.device-timeout=10s") }
        spec = "LABEL=\(label.text)"
        self.mountPoint = mountPoint.text
        type = filesystem.rawValue
        self.options = list.joined(separator: ",")
        dump = 0
        // ext4 is checked at boot after the root filesystem; fsck.xfs does nothing.
        pass = filesystem == .ext4 ? 2 : 0
    }

    init(fields: [String]) {
        spec = fields[0]
        mountPoint = fields[1]
        type = fields.count > 2 ? fields[2] : ""
        options = fields.count > 3 ? fields[3] : "defaults"
        dump = fields.count > 4 ? Int(fields[4]) ?? 0 : 0
        pass = fields.count > 5 ? Int(fields[5]) ?? 0 : 0
    }

    public var line: String { "\(spec) \(mountPoint) \(type) \(options) \(dump) \(pass)" }
    public var description: String { line }
}

public enum FstabError: SnapmountError, Equatable {
    /// Another entry already mounts something at this mount point, or mounts this label elsewhere.
    case conflict(lineNumber: Int, existing: String, wanted: String)
    case unsafeField(String)

    /// A conflicting entry is data an administrator wrote: never overwritten.
    public var exitStatus: ExitStatus {
        switch self {
        case .conflict: .dataRefused
        case .unsafeField: .configuration
        }
    }

    public var description: String {
        switch self {
        case .conflict(let line, let existing, let wanted):
            "fstab line \(line) already mounts differently:\n  existing: \(existing)\n  wanted:   \(wanted)\nleaving the file unchanged; remove or fix that line"
        case .unsafeField(let field):
            "refusing to write the fstab field \(field.quotedForMessage()): it holds white space or a control character"
        }
    }
}

/// What adding the entry does to the file.
public enum FstabChange: Sendable, Equatable {
    /// An identical entry is there already.
    case unchanged
    /// The new file: the old bytes, a newline if the last line lacked one, the entry.
    case append([UInt8])
}

/// Pure fstab editing: every byte of the file is kept; at most one line is added.
public enum FstabEditor {
    public static func ensure(_ entry: FstabEntry, in bytes: [UInt8]) throws(FstabError) -> FstabChange {
        for field in [entry.spec, entry.mountPoint, entry.type, entry.options] where field.isEmpty || field.hasWhitespaceOrControl {
            throw .unsafeField(field)
        }
        var lineNumber = 0
        for raw in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = String(decoding: raw, as: UTF8.self)
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard fields.count >= 2, !fields[0].hasPrefix("#") else { continue }
            let existing = FstabEntry(fields: fields)
            let samePoint = normalize(unescape(existing.mountPoint)) == normalize(entry.mountPoint)
            let sameSpec = unescape(existing.spec) == entry.spec
            guard samePoint || sameSpec else { continue }
            if samePoint && sameSpec && existing.type == entry.type && existing.options == entry.options
                && existing.dump == entry.dump && existing.pass == entry.pass
            {
                return .unchanged
            }
            throw .conflict(lineNumber: lineNumber, existing: line.trimmingASCIISpaces(), wanted: entry.line)
        }
        var out = bytes
        if let last = out.last, last != UInt8(ascii: "\n") { out.append(UInt8(ascii: "\n")) }
        out.append(contentsOf: Array((entry.line + "\n").utf8))
        return .append(out)
    }

    /// fstab and mountinfo write a space as `\040`, a tab as `\011` (octal escapes).
    public static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        let bytes = Array(field.utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\\"), index + 4 <= bytes.count,
               let value = UInt8(String(decoding: bytes[(index + 1)..<(index + 4)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                index += 4
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func normalize(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }
}
