import SnapmountCore
import SnapmountSystem

extension ReleaseManifest {
    /// The manifest of the release mounted at `root`; `nil` when there is none (a release
    /// publish did not make, or a push that did not finish) or it does not read.
    public static func load(in root: String) -> ReleaseManifest? {
        guard let bytes = try? readFile(path(in: root), limit: 64 * 1024) else { return nil }
        return ReleaseManifest(parsing: bytes)
    }

    /// Writes the manifest into the release at `root`, atomically (publish, before it freezes).
    public func save(in root: String) throws(SystemCallError) {
        try makeDirectories((root.hasSuffix("/") ? root : root + "/") + Self.directory, mode: 0o755)
        try AtomicFile.replace(Self.path(in: root), with: bytes)
    }
}

extension CloudSession {
    /// The published snapshot whose bytes are `release`: its own id for a snapshot without
    /// an identity, else the newest completed one with that identity tag that publish marked.
    public func snapshot(holding release: ReleaseID) throws -> EC2Snapshot? {
        if let id = SnapshotID(release.text) { return try ec2.describeSnapshot(id) }
        return try ec2.describeSnapshots(filters: [("tag:\(ReleaseTags.releaseID)", [release.text])])
            .filter { $0.state == .completed && !$0.isUnpublishedAttempt && $0.releaseIdentity == release }
            .max { ($0.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $0.id.text) < ($1.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $1.id.text) }
    }
}
