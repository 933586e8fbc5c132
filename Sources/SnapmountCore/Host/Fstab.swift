/// One `/etc/fstab` line: `LABEL=code_release /release ext4 defaults,nofail,… 0 2`.
public struct FstabEntry: Sendable, Equatable, CustomStringConvertible {
    public let spec: String
    public let mountPoint: String
    public let type: String
    public let options: String
    public let dump: Int
    public let pass: Int

    /// The unit that attaches the volume; the mount waits for it.
    public static let agentUnit = "snapmount.service"

    /// The entry snapmount adds: by label; `nofail`, so that the boot never waits for it;
    /// `x-systemd.requires=snapmount.service`, so that systemd mounts it only after the agent
    /// has run — on an instance made from an image baked where the line was written, the
    /// volume exists only once the agent has made and attached it; and an
    /// `x-systemd.device-timeout` as long as the agent may take (`deviceWait`: its run
    /// timeout and more), because systemd starts waiting for the device when the boot starts,
    /// not when the agent is done. The agent checks the filesystem itself before mounting:
    /// no boot-time fsck (pass 0).
    public init(label: FilesystemLabel, mountPoint: AbsolutePath, filesystem: Filesystem, options: MountOptions,
                deviceWait: Duration = .seconds(360)) {
        var list = options.options
        if !list.contains("nofail") { list.append("nofail") }
        if !list.contains(where: { $0.hasPrefix("x-systemd.device-timeout=") }) {
            list.append("x-systemd.device-timeout=\(DurationText.format(deviceWait))")
        }
        if !list.contains(where: { $0.hasPrefix("x-systemd.requires=") }) { list.append("x-systemd.requires=\(Self.agentUnit)") }
        spec = "LABEL=\(label.text)"
        self.mountPoint = mountPoint.text
        type = filesystem.rawValue
        self.options = list.joined(separator: ",")
        dump = 0
        pass = 0
    }

    /// The options without those only systemd reads.
    var optionsWithoutSystemd: [String] {
        options.split(separator: ",").map(String.init).filter { !$0.hasPrefix("x-systemd.") }
    }

    /// Whether `self` is an entry snapmount wrote for `wanted` in an earlier version: the same
    /// device, mount point, type and options, but for systemd's options and the fsck pass.
    func isEarlierForm(of wanted: FstabEntry) -> Bool {
        spec == wanted.spec && type == wanted.type && dump == wanted.dump && optionsWithoutSystemd == wanted.optionsWithoutSystemd
            && options.split(separator: ",").contains { $0.hasPrefix("x-systemd.device-timeout=") }
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
    /// The new file: an entry an earlier snapmount wrote, replaced in place by today's form.
    case replace(lineNumber: Int, [UInt8])
}

/// Pure fstab editing: every byte of the file is kept; at most one line is added.
public enum FstabEditor {
    public static func ensure(_ entry: FstabEntry, in bytes: [UInt8]) throws(FstabError) -> FstabChange {
        for field in [entry.spec, entry.mountPoint, entry.type, entry.options] where field.isEmpty || field.hasWhitespaceOrControl {
            throw .unsafeField(field)
        }
        var lineNumber = 0
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for raw in lines {
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
            if samePoint && existing.isEarlierForm(of: entry) {
                var out: [UInt8] = []
                for (index, other) in lines.enumerated() {
                    if index > 0 { out.append(UInt8(ascii: "\n")) }
                    out.append(contentsOf: index == lineNumber - 1 ? Array(entry.line.utf8) : Array(other))
                }
                return .replace(lineNumber: lineNumber, out)
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
