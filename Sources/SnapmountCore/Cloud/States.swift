/// The states EC2 defines for volumes, attachments and snapshots: one enum each, whose
/// `known` list is the one table between the enum and the text EC2 sends. A state EC2 adds
/// later is kept as `other`, never mistaken for a known one.
public protocol EC2State: Sendable, Hashable, CustomStringConvertible {
    /// Every state EC2 documents, with its text on the wire.
    static var known: [(state: Self, text: String)] { get }
    static func other(_ text: String) -> Self
    /// The text of an `other` state; `nil` for a known one.
    var unknownText: String? { get }
}

extension EC2State {
    public init(text: String) {
        self = Self.known.first { $0.text == text }?.state ?? .other(text)
    }

    /// The state as EC2 writes it.
    public var text: String {
        unknownText ?? Self.known.first { $0.state == self }?.text ?? ""
    }

    public var description: String { text }
}

/// A volume's `status` (DescribeVolumes, CreateVolume).
public enum VolumeState: EC2State {
    case creating, available, inUse, deleting, deleted, error
    case other(String)

    public static let known: [(state: VolumeState, text: String)] = [
        (.creating, "creating"), (.available, "available"), (.inUse, "in-use"), (.deleting, "deleting"),
        (.deleted, "deleted"), (.error, "error"),
    ]

    public var unknownText: String? {
        if case .other(let text) = self { return text }
        return nil
    }

    /// Deleted or on its way: never reused, never waited for.
    public var isGone: Bool { self == .deleting || self == .deleted }
}

/// An attachment's `status` (DescribeVolumes, AttachVolume, DetachVolume).
public enum AttachmentState: EC2State {
    case attaching, attached, detaching, detached, busy
    case other(String)

    public static let known: [(state: AttachmentState, text: String)] = [
        (.attaching, "attaching"), (.attached, "attached"), (.detaching, "detaching"), (.detached, "detached"), (.busy, "busy"),
    ]

    public var unknownText: String? {
        if case .other(let text) = self { return text }
        return nil
    }
}

/// A snapshot's `status` (DescribeSnapshots).
public enum SnapshotState: EC2State {
    case pending, completed, error, recoverable, recovering
    case other(String)

    public static let known: [(state: SnapshotState, text: String)] = [
        (.pending, "pending"), (.completed, "completed"), (.error, "error"), (.recoverable, "recoverable"),
        (.recovering, "recovering"),
    ]

    public var unknownText: String? {
        if case .other(let text) = self { return text }
        return nil
    }
}
