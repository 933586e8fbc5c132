/// What `snapmount publish` asks CreateSnapshot for: the release volume, a description a
/// person can read in the console, and the tags by which publish finds its own snapshots
/// again (a lost answer, `--keep`).
public struct SnapshotRequest: Sendable, Equatable {
    public var volume: VolumeID
    /// The release's name (`--release`): which series of snapshots this one belongs to.
    public var release: String
    public var mountPoint: String
    public var time: UTCTimestamp
    /// Unique to this attempt: finds the snapshot when CreateSnapshot's answer was lost.
    public var attemptID: String
    /// The identity the manifest in the filesystem names.
    public var identity: ReleaseID

    public init(volume: VolumeID, release: String, mountPoint: String, time: UTCTimestamp, attemptID: String, identity: ReleaseID) {
        self.volume = volume
        self.release = release
        self.mountPoint = mountPoint
        self.time = time
        self.attemptID = attemptID
        self.identity = identity
    }

    public static let releaseTag = "snapmount:release"
    public static let publishedAtTag = "snapmount:published-at"
    public static let sourceVolumeTag = "snapmount:source-volume"
    public static let attemptTag = "snapmount:publish-attempt"

    public var description: String {
        "snapmount publish of \(release) (\(mountPoint) on \(volume)) at \(time.iso8601)"
    }

    /// The tags a snapshot is made with. Not the release tag: that is the mark publish adds
    /// once the snapshot is completed and about to be published, so that a snapshot of a
    /// round that failed (or of a publish that died) is never taken for a release.
    public var tags: [VolumeTag] {
        [VolumeTag(key: Self.publishedAtTag, value: time.iso8601), VolumeTag(key: Self.sourceVolumeTag, value: volume.text),
         VolumeTag(key: Self.attemptTag, value: attemptID), VolumeTag(key: ReleaseTags.releaseID, value: identity.text)]
    }

    public var parameters: QueryParameters {
        var parameters = QueryParameters()
        parameters.append("VolumeId", volume.text)
        parameters.append("Description", description)
        parameters.append(contentsOf: tagSpecification("snapshot", tags))
        return parameters
    }

    /// A release name goes into tags and the description: a tag value's characters, short.
    public static func checkRelease(_ name: String) throws(InvalidValue) {
        let expected = "1 to 128 letters, digits, spaces and _ . : / = + - @"
        guard !name.isEmpty, name.count <= 128,
              name.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || " _.:/=+-@".unicodeScalars.contains($0) })
        else { throw InvalidValue("is not a release name: \(name.quotedForMessage())", expected: expected) }
    }
}

/// Which of publish's earlier snapshots `--keep N` deletes: of this release's snapshots,
/// newest first, all but the N newest — never one that is protected (the one just published
/// and the previous one, which `snap.txt.prev` names for a rollback), never one still pending
/// (another publish may be waiting for it).
public enum SnapshotRetention {
    public static func toDelete(_ snapshots: [EC2Snapshot], keep: Int, release: String, protected: Set<SnapshotID>) -> [EC2Snapshot] {
        let ours = snapshots.filter { $0.tags[SnapshotRequest.releaseTag] == release }
            .sorted { ($0.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $0.id.text) > ($1.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $1.id.text) }
        return ours.dropFirst(max(keep, 0)).filter { !protected.contains($0.id) && $0.state != .pending }
    }
}

/// A snapshot's `progress` (`"42%"`) as a number from 0 to 100; `nil` when unreadable.
public func snapshotPercent(_ progress: String) -> Int? {
    let digits = progress.trimmingASCIISpaces().prefix { $0 != "%" }
    guard let value = Int(digits), (0...100).contains(value) else { return nil }
    return value
}

/// Where publish puts the id: a file that a web server serves (`snap.txt`), or an SSM
/// parameter (`ssm:/NAME`) that instances read with an `ssm:` source.
public enum PublishTarget: Sendable, Equatable, CustomStringConvertible {
    case file(AbsolutePath)
    case ssm(name: String)

    public init(parsing text: String) throws(InvalidValue) {
        if text.hasPrefix("ssm:") {
            guard SnapshotSource.isParameterName(String(text.dropFirst(4))) else {
                throw InvalidValue("is not an SSM parameter name: \(text.quotedForMessage())",
                                   expected: "ssm:/NAME, the name being letters, digits and _ . - /")
            }
            self = .ssm(name: String(text.dropFirst(4)))
            return
        }
        self = .file(try AbsolutePath(parsing: text))
    }

    public var description: String {
        switch self {
        case .file(let path): path.text
        case .ssm(let name): "ssm:" + name
        }
    }
}

/// What goes in `snap.txt`: the id and a newline, as the boot side reads it.
public func snapshotFileBody(_ id: SnapshotID) -> [UInt8] { Array((id.text + "\n").utf8) }
