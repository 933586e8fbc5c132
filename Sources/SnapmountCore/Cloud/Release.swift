/// What a release is, wherever its bytes are (DESIGN.md §8): one identity, written by
/// `snapmount publish` into the release filesystem (the manifest) before it freezes it, and
/// copied into the tags of the snapshot and of every volume that holds those bytes. Whatever
/// changes a volume's contents changes its identity tag, and only once the change is whole.

/// The identity of one published release: `rel-20261202T043319Z-3f9a1c7e`, made by publish;
/// or, for a snapshot publish did not make (no identity tag), the snapshot id itself.
public struct ReleaseID: Sendable, Hashable, CustomStringConvertible {
    public let text: String

    /// A publish's identity, or a snapshot id; anything else (including ``unknownTag``) is not one.
    public init?(_ text: String) {
        let isPublished = text.hasPrefix("rel-") && (5...64).contains(text.utf8.count)
            && text.utf8.dropFirst(4).allSatisfy { $0 == UInt8(ascii: "-") || (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }
        guard isPublished || SnapshotID(text) != nil else { return nil }
        self.text = text
    }

    /// The identity of a snapshot that carries none: its own id.
    public init(snapshot: SnapshotID) { text = snapshot.text }

    /// A new identity for a publish at `time`: unique by its random part.
    public static func new(at time: UTCTimestamp, random: String) -> ReleaseID {
        ReleaseID(text: "rel-" + time.amzDate + "-" + random)
    }

    private init(text: String) { self.text = text }

    public var description: String { text }

    /// The value of a volume's identity tag while its contents are changing, or after a
    /// change that did not finish: it holds no known release.
    public static let unknownTag = "unknown"
}

/// The tags that carry the identity and the roles of snapshots and volumes.
public enum ReleaseTags {
    /// On a snapshot: the release its bytes are. On a volume: the release it holds now
    /// (``ReleaseID/unknownTag`` while a push changes it, or after one failed).
    public static let releaseID = "snapmount:release-id"
    /// On a volume: `source` for the release server's volume that publish snapshots. No
    /// boot anywhere detaches or deletes it.
    public static let role = "snapmount:role"
    public static let sourceRole = "source"
    /// On a volume: the mount point of the configuration that made it; only that
    /// configuration retires it.
    public static let mountPoint = "snapmount:mount-point"
    /// On a published snapshot: where publish put its id (`snap.txt`'s path, `ssm:/NAME`).
    /// Prune reads every output a release's snapshots name before it deletes anything.
    public static let output = "snapmount:output"
    /// On a volume: how the last push or deployment to it ended — `switched`, `rolled-back`, `failed` or
    /// `unchanged`, the release it brought, and when (`switched rel-… 20261203T120102Z`).
    public static let lastDeployment = "snapmount:last-deployment"
}

/// The manifest: `<mount point>/.snapmount/release.json`, written by publish before it
/// freezes, sent last by push (after every other file), read by `status` and push.
public struct ReleaseManifest: Sendable, Equatable {
    public var id: ReleaseID
    /// The release's name (`--release`).
    public var release: String
    public var createdAt: String

    public init(id: ReleaseID, release: String, createdAt: String) {
        self.id = id
        self.release = release
        self.createdAt = createdAt
    }

    public static let directory = ".snapmount"
    public static let fileName = "release.json"
    /// Relative to the release's root.
    public static var relativePath: String { directory + "/" + fileName }

    public static func path(in root: String) -> String {
        (root.hasSuffix("/") ? root : root + "/") + relativePath
    }

    public var json: JSONValue {
        .object([("id", .string(id.text)), ("release", .string(release)), ("createdAt", .string(createdAt))])
    }

    public var bytes: [UInt8] { Array((json.pretty() + "\n").utf8) }

    /// `nil` for anything that is not a manifest with a valid identity.
    public init?(parsing bytes: [UInt8]) {
        guard let json = try? parseJSON(bytes), let id = json["id"]?.string.flatMap(ReleaseID.init) else { return nil }
        self.init(id: id, release: json["release"]?.string ?? "", createdAt: json["createdAt"]?.string ?? "")
    }
}

extension EC2Snapshot {
    /// The release these bytes are: the identity publish gave them, or the snapshot itself.
    public var releaseIdentity: ReleaseID {
        tags[ReleaseTags.releaseID].flatMap(ReleaseID.init) ?? ReleaseID(snapshot: id)
    }

    /// Publish made it (it has an attempt tag) but never marked it as a release: a stray of
    /// a round that failed, or of a publish that died. Never a source's answer, never kept.
    public var isUnpublishedAttempt: Bool {
        tags[SnapshotRequest.attemptTag] != nil && tags[SnapshotRequest.releaseTag] == nil
    }
}

extension EC2Volume {
    /// The release this volume holds, as its tags say: the identity tag; for a volume made
    /// before identities (no identity tag), the snapshot it was made from. `nil`: no known
    /// release (a push changed it and did not finish).
    public var heldRelease: ReleaseID? {
        if let tag = tags[ReleaseTags.releaseID] { return ReleaseID(tag) }
        return (tags[VolumeRequest.snapshotTag].flatMap(SnapshotID.init) ?? snapshotID).map(ReleaseID.init(snapshot:))
    }

    /// The release server's volume that publish snapshots.
    public var isReleaseSource: Bool { tags[ReleaseTags.role] == ReleaseTags.sourceRole }

    /// Made by (or adopted for) the configuration of `mountPoint`. A volume made before the
    /// mount-point tag belongs to the default mount point — and, when `device` is given, only
    /// if it is detached or attached at that device (another configuration's is elsewhere).
    public func belongs(to mountPoint: String, device: String? = nil) -> Bool {
        if let tagged = tags[ReleaseTags.mountPoint] { return tagged == mountPoint }
        guard mountPoint == AbsolutePath.defaultMountPoint else { return false }
        guard let device, let attached = attachments.first?.device else { return true }
        return attached == device
    }
}

extension AbsolutePath {
    /// `mount-point`'s default.
    public static let defaultMountPoint = "/release"
}
