/// `prefix-` followed by 8 or 17 lower-case hex digits: the form of every EC2 resource id.
func isAWSResourceID(_ text: String, prefix: String) -> Bool {
    guard text.hasPrefix(prefix + "-") else { return false }
    let digits = text.utf8.dropFirst(prefix.utf8.count + 1)
    return (digits.count == 8 || digits.count == 17)
        && digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
}

/// An EBS snapshot id, `snap-0123456789abcdef0`. Only a valid id can exist.
public struct SnapshotID: Sendable, Hashable, Codable, CustomStringConvertible {
    public let text: String

    public init?(_ text: String) {
        guard isAWSResourceID(text, prefix: "snap") else { return nil }
        self.text = text
    }

    public var description: String { text }
}

/// An EBS volume id, `vol-0123456789abcdef0`.
public struct VolumeID: Sendable, Hashable, Codable, CustomStringConvertible {
    public let text: String

    public init?(_ text: String) {
        guard isAWSResourceID(text, prefix: "vol") else { return nil }
        self.text = text
    }

    /// The NVMe controller serial number of this volume on a Nitro instance: the id
    /// without its dash (`vol0123456789abcdef0`).
    public var nvmeSerial: String { text.replacingFirstDash() }

    /// The volume an EBS NVMe serial names; `nil` for any other serial.
    public static func fromNVMeSerial(_ serial: String) -> VolumeID? {
        guard serial.hasPrefix("vol") else { return nil }
        return VolumeID("vol-" + serial.dropFirst(3))
    }

    public var description: String { text }
}

/// An EC2 instance id, `i-0123456789abcdef0`.
public struct InstanceID: Sendable, Hashable, Codable, CustomStringConvertible {
    public let text: String

    public init?(_ text: String) {
        guard isAWSResourceID(text, prefix: "i") else { return nil }
        self.text = text
    }

    public var description: String { text }
}

extension String {
    fileprivate func replacingFirstDash() -> String {
        guard let dash = firstIndex(of: "-") else { return self }
        return String(self[..<dash]) + String(self[index(after: dash)...])
    }
}
