#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CLinux
import SnapmountCore

public enum ReleaseTreeError: SnapmountError, Equatable {
    /// Nothing is mounted at the mount point: there is no release volume to switch.
    case notMounted(String)
    /// The tree to switch to is not whole: no manifest (a sync that did not finish).
    case incomplete(String)
    /// A journal snapmount cannot read, or a tree an interrupted switch set aside that no
    /// journal accounts for: finishing or undoing it is a person's decision.
    case unaccounted(String)
    case system(SystemCallError)

    public var exitStatus: ExitStatus {
        switch self {
        case .notMounted: .configuration
        case .incomplete, .unaccounted: .dataRefused
        case .system: .internalError
        }
    }

    public var description: String {
        switch self {
        case .notMounted(let path):
            "\(path) is not a mount point: the release volume is not mounted here (see snapmount status)"
        case .incomplete(let path):
            "\(path) holds no manifest (\(ReleaseManifest.relativePath)): that tree is not a whole release, so nothing was switched"
        case .unaccounted(let path):
            "\(path) is left from an interrupted switch and no readable journal says how far it got: nothing was switched; look at it, then move its contents back to the mount point or remove it"
        case .system(let error):
            "switching the release tree: \(error)"
        }
    }
}

/// The release trees of one mounted volume (DESIGN.md §8; docs/releases.md, "Switching"): the
/// one in use at the volume's root and, beside it in `.snapmount/`, the staged tree a push
/// syncs into and the previous tree a switch back returns to.
///
/// A switch shows the other tree at the mount point whole, in one step — a bind mount of it
/// over the mount point — rebuilds the volume's root from it underneath (hard links: no file
/// is copied), and takes the bind mount away again, leaving the same files at the root. A
/// path looked up at any moment finds the old tree or the new one, never a mix. A journal
/// (`.snapmount/switch.json`) lets the next switch, or ``prepare()``, finish one that was
/// interrupted; the volume's identity tag says "unknown" meanwhile, so a boot replaces it.
public final class ReleaseTree {
    public enum Side: String, Sendable, CaseIterable {
        case staged = "staging"
        case previous
    }

    public let mountPoint: String
    /// How long lookups that began in the old tree have before it is emptied.
    public var grace: Duration = .seconds(2)
    private let mounter: SystemMounter
    private let clock: any AgentClock

    public init(mountPoint: String, clock: any AgentClock = SystemClock(), mounter: SystemMounter = SystemMounter()) {
        self.mountPoint = resolvedPath(mountPoint)
        self.clock = clock
        self.mounter = mounter
    }

    /// Entries of the volume's root that belong to the volume, not to a release.
    static let volumeEntries: Set<String> = [ReleaseManifest.directory, "lost+found"]
    static let journalName = "switch.json"
    static let outgoing = "outgoing"
    static let retired = "retired"

    /// Where `side` is, as seen through the mount point (before a switch shows it).
    public func path(of side: Side) -> String { metaPath(side.rawValue) }

    /// `name` in the volume's `.snapmount`, as seen through the mount point.
    private func metaPath(_ name: String) -> String { mountPoint + "/" + ReleaseManifest.directory + "/" + name }

    /// The manifest of the tree at `side`, if it holds one.
    public func manifest(of side: Side) -> ReleaseManifest? {
        readText(path(of: side) + "/" + ReleaseManifest.relativePath).flatMap { ReleaseManifest(parsing: Array($0.utf8)) }
    }

    /// Before a push syncs into the staged tree: finishes a switch that was interrupted, then
    /// empties the staged tree and what earlier switches retired. Returns what it finished.
    public func prepare() throws(ReleaseTreeError) -> Side? {
        let volume = try openVolume()
        defer { close(volume.root); close(volume.meta) }
        let finished = try resume(volume)
        do throws(SystemCallError) {
            try removeTree(volume.meta, Self.retired)
            // Emptied, not removed: only its contents matter, and the directory may be a mount point.
            try makeDirectory(volume.meta, Side.staged.rawValue)
            let staged = try openDirectory(volume.meta, Side.staged.rawValue)
            defer { close(staged) }
            for name in try entries(staged) { try removeTree(staged, name) }
        } catch {
            throw .system(error)
        }
        return finished
    }

    /// Makes the tree at `side` the one in use, whole; the one in use becomes the previous
    /// one. Switching to `.previous` twice returns to where it started.
    /// Returns the side of an interrupted switch it finished first, if any.
    @discardableResult
    public func switchTo(_ side: Side) throws(ReleaseTreeError) -> Side? {
        let volume = try openVolume()
        defer { close(volume.root); close(volume.meta) }
        let finished = try resume(volume)
        // A staged tree is whole once its manifest is there; the previous tree is the one
        // that was in use, whole, with or without one (a first release from an image).
        switch side {
        case .staged: guard manifest(of: side) != nil else { throw .incomplete(path(of: side)) }
        case .previous: guard (try? status(volume.meta, side.rawValue)) != nil else { throw .incomplete(path(of: side)) }
        }
        guard (try? status(volume.meta, Self.outgoing)) == nil else { throw .unaccounted(metaPath(Self.outgoing)) }
        try run(Journal(side: side, phase: .out), volume, fresh: true)
        return finished
    }

    /// Finishes a switch that was interrupted (a boot does this before its application
    /// starts); `nil` when there was none. Touches nothing when there is no journal.
    public func finishInterrupted() throws(ReleaseTreeError) -> Side? {
        guard fileExists(metaPath(Self.journalName)) else { return nil }
        let volume = try openVolume()
        defer { close(volume.root); close(volume.meta) }
        return try resume(volume)
    }

    // MARK: The steps

    private struct Volume {
        /// The volume's root and its `.snapmount` directory, as descriptors: reachable while
        /// a bind mount covers the mount point.
        var root: Int32
        var meta: Int32
    }

    private struct Journal: Equatable {
        enum Phase: String { case out, into = "in", cleanup }
        var side: Side
        var phase: Phase

        var bytes: [UInt8] {
            Array((JSONValue.object([("side", .string(side.rawValue)), ("phase", .string(phase.rawValue))]).pretty() + "\n").utf8)
        }

        init(side: Side, phase: Phase) {
            self.side = side
            self.phase = phase
        }

        init?(_ bytes: [UInt8]) {
            guard let json = try? parseJSON(bytes), let side = json["side"]?.string.flatMap(Side.init(rawValue:)),
                  let phase = json["phase"]?.string.flatMap(Phase.init(rawValue:)) else { return nil }
            self.init(side: side, phase: phase)
        }
    }

    private func resume(_ volume: Volume) throws(ReleaseTreeError) -> Side? {
        let path = metaPath(Self.journalName)
        let bytes: [UInt8]
        do throws(SystemCallError) {
            let fd = try systemCall("openat", path) { openat(volume.meta, Self.journalName, O_RDONLY | O_CLOEXEC) }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = try readSome(fd, into: &buffer, subject: path)
            bytes = Array(buffer.prefix(count))
        } catch where error.errno == ENOENT {
            return nil
        } catch {
            throw .system(error)
        }
        // Written whole and renamed into place: one that does not parse is not ours to guess at.
        guard let journal = Journal(bytes) else { throw .unaccounted(path) }
        try run(journal, volume, fresh: false)
        return journal.side
    }

    private func run(_ journal: Journal, _ volume: Volume, fresh: Bool) throws(ReleaseTreeError) {
        var journal = journal
        let side = journal.side.rawValue
        do throws(SystemCallError) {
            if journal.phase != .cleanup {
                try write(journal, volume)
                if try coveringMount() == nil {
                    try systemCall("mount", mountPoint) { Glibc.mount(path(of: journal.side), mountPoint, nil, Self.bindFlag, nil) }
                    if fresh { clock.sleep(for: grace) }
                }
            }
            if journal.phase == .out {
                // The old tree moves aside, its manifest first: from here the root holds no known release.
                try makeDirectory(volume.meta, Self.outgoing)
                let outgoing = try openDirectory(volume.meta, Self.outgoing)
                defer { close(outgoing) }
                try makeDirectory(outgoing, ReleaseManifest.directory)
                let outgoingMeta = try openDirectory(outgoing, ReleaseManifest.directory)
                defer { close(outgoingMeta) }
                try move(volume.meta, ReleaseManifest.fileName, to: outgoingMeta)
                for name in try entries(volume.root) where !Self.volumeEntries.contains(name) {
                    try move(volume.root, name, to: outgoing)
                }
                journal.phase = .into
                try write(journal, volume)
            }
            if journal.phase == .into {
                // What an interrupted attempt linked is linked again; the manifest comes last.
                for name in try entries(volume.root) where !Self.volumeEntries.contains(name) { try removeTree(volume.root, name) }
                try removeTree(volume.meta, ReleaseManifest.fileName)
                let source = try openDirectory(volume.meta, side)
                defer { close(source) }
                for name in try entries(source) where !Self.volumeEntries.contains(name) { try linkTree(source, name, into: volume.root) }
                if let sourceMeta = try? openDirectory(source, ReleaseManifest.directory) {
                    defer { close(sourceMeta) }
                    do {
                        try systemCall("linkat", path(of: journal.side) + "/" + ReleaseManifest.relativePath) {
                            linkat(sourceMeta, ReleaseManifest.fileName, volume.meta, ReleaseManifest.fileName, 0)
                        }
                    } catch where error.errno == ENOENT {
                        // A previous tree without a manifest (a release from an image): none.
                    }
                }
                journal.phase = .cleanup
                try write(journal, volume)
            }
            // The root now holds the new tree: the bind mount goes (lazily, for whoever still
            // has a file open through it: the same files), and the trees move into place.
            if try coveringMount() != nil {
                try systemCall("umount2", mountPoint) { umount2(mountPoint, Self.detachFlag) }
            }
            // The old tree becomes the previous one last: until then (outgoing still there)
            // these moves are what a resumed switch does again.
            if (try? status(volume.meta, Self.outgoing)) != nil {
                try removeTree(volume.meta, Self.retired)
                try makeDirectory(volume.meta, Self.retired)
                let retired = try openDirectory(volume.meta, Self.retired)
                defer { close(retired) }
                // Kept, not deleted, until the next push prepares: a process whose working
                // directory is in them keeps working.
                try move(volume.meta, side, to: retired, as: "tree")
                if journal.side == .staged { try move(volume.meta, Side.previous.rawValue, to: retired, as: Side.previous.rawValue) }
                try move(volume.meta, Self.outgoing, to: volume.meta, as: Side.previous.rawValue)
            }
            try systemCall("syncfs", mountPoint) { clinux_syncfs(volume.root) }
            try systemCall("unlinkat", Self.journalName) { unlinkat(volume.meta, Self.journalName, 0) }
        } catch {
            // Before the new tree is whole at the root (a full volume, out of inodes), the old
            // one goes back where it was; after, what is left is only moves a resume redoes.
            if journal.phase != .cleanup { try? undo(journal.phase, volume) }
            throw .system(error)
        }
    }

    /// The old tree back at the root, the bind mount and the journal gone: as before the switch.
    private func undo(_ phase: Journal.Phase, _ volume: Volume) throws(SystemCallError) {
        if phase == .into {
            // What was linked in so far: links to the staged tree's files, and new directories.
            for name in try entries(volume.root) where !Self.volumeEntries.contains(name) { try removeTree(volume.root, name) }
            try removeTree(volume.meta, ReleaseManifest.fileName)
        }
        if let outgoing = try? openDirectory(volume.meta, Self.outgoing) {
            defer { close(outgoing) }
            for name in try entries(outgoing) where name != ReleaseManifest.directory { try move(outgoing, name, to: volume.root) }
            if let outgoingMeta = try? openDirectory(outgoing, ReleaseManifest.directory) {
                defer { close(outgoingMeta) }
                try move(outgoingMeta, ReleaseManifest.fileName, to: volume.meta)
                guard try entries(outgoingMeta).isEmpty else { return }
            }
            // Empty now, or it is kept (and the journal with it) for a person to look at.
            guard try entries(outgoing).allSatisfy({ $0 == ReleaseManifest.directory }) else { return }
            try removeTree(volume.meta, Self.outgoing)
        }
        if try coveringMount() != nil {
            try systemCall("umount2", mountPoint) { umount2(mountPoint, Self.detachFlag) }
        }
        try systemCall("syncfs", mountPoint) { clinux_syncfs(volume.root) }
        try systemCall("unlinkat", Self.journalName) { unlinkat(volume.meta, Self.journalName, 0) }
    }

    // MARK: Mounts

    private static let bindFlag: UInt = 4096  // MS_BIND
    private static let detachFlag: Int32 = 2  // MNT_DETACH

    /// The volume's root and `.snapmount`: a bind mount a killed switch left over the mount
    /// point is taken away first (its journal finishes the switch).
    private func openVolume() throws(ReleaseTreeError) -> Volume {
        do throws(SystemCallError) {
            guard try !stack().isEmpty else { throw SystemCallError("mountpoint", mountPoint, errno: ENOENT) }
            if try coveringMount() != nil {
                try systemCall("umount2", mountPoint) { umount2(mountPoint, Self.detachFlag) }
            }
            let root = try systemCall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            do {
                try makeDirectory(root, ReleaseManifest.directory)
                return Volume(root: root, meta: try openDirectory(root, ReleaseManifest.directory))
            } catch {
                close(root)
                throw error
            }
        } catch where error.call == "mountpoint" {
            throw .notMounted(mountPoint)
        } catch {
            throw .system(error)
        }
    }

    /// The mounts at the mount point, bottom first; the release volume must be one.
    private func stack() throws(SystemCallError) -> [MountInfo] {
        let table: [MountInfo]
        do { table = try mounter.mounts() } catch { throw SystemCallError("read", mounter.mountInfoPath, errno: EIO) }
        return table.filter { $0.mountPoint == mountPoint }
    }

    /// Snapmount's own bind mount over the volume (one of its trees), if that is on top.
    private func coveringMount() throws(SystemCallError) -> MountInfo? {
        let mounts = try stack()
        guard let top = mounts.last else { throw SystemCallError("mountpoint", mountPoint, errno: ENOENT) }
        guard mounts.count > 1 else { return nil }
        let below = mounts[mounts.count - 2]
        let base = below.root == "/" ? "" : below.root
        let ours = Side.allCases.map { base + "/" + ReleaseManifest.directory + "/" + $0.rawValue }
        return ours.contains(top.root) && top.device == below.device ? top : nil
    }

    // MARK: Files, by descriptor

    private func write(_ journal: Journal, _ volume: Volume) throws(SystemCallError) {
        // Everything before this phase is on the device before the journal says so.
        try systemCall("syncfs", mountPoint) { clinux_syncfs(volume.root) }
        let name = Self.journalName
        let temporary = "." + name + ".new"
        let fd = try systemCall("openat", temporary) { openat(volume.meta, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        do {
            defer { close(fd) }
            try writeAll(fd, journal.bytes, subject: temporary)
            try systemCall("fsync", temporary) { fsync(fd) }
        }
        try systemCall("renameat", name) { renameat(volume.meta, temporary, volume.meta, name) }
        try systemCall("fsync", ReleaseManifest.directory) { fsync(volume.meta) }
    }

    private func openDirectory(_ parent: Int32, _ name: String) throws(SystemCallError) -> Int32 {
        try systemCall("openat", name) { openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    }

    private func makeDirectory(_ parent: Int32, _ name: String, mode: mode_t = 0o755) throws(SystemCallError) {
        do {
            try systemCall("mkdirat", name) { mkdirat(parent, name, mode) }
        } catch where error.errno == EEXIST {
            return
        }
    }

    /// Moves `name` (if it is there) into `target` — where it must not be already.
    private func move(_ parent: Int32, _ name: String, to target: Int32, as newName: String? = nil) throws(SystemCallError) {
        do {
            try systemCall("renameat", name) { renameat(parent, name, target, newName ?? name) }
        } catch where error.errno == ENOENT {
            return
        }
    }

    /// The names in a directory, `.` and `..` left out. The corresponding C functions are
    /// `fdopendir` and `readdir`.
    private func entries(_ directory: Int32) throws(SystemCallError) -> [String] {
        let copy = try systemCall("dup", "directory") { fcntl(directory, F_DUPFD_CLOEXEC, 0) }
        guard let stream = fdopendir(copy) else {
            let error = errno
            close(copy)
            throw SystemCallError("fdopendir", "directory", errno: error)
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = entryName(entry)
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    private func status(_ parent: Int32, _ name: String) throws(SystemCallError) -> stat {
        var info = stat()
        try systemCall("fstatat", name) { fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) }
        return info
    }

    private static func isDirectory(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFDIR }

    /// rm -r, without following symbolic links; gone already is fine.
    private func removeTree(_ parent: Int32, _ name: String) throws(SystemCallError) {
        let info: stat
        do { info = try status(parent, name) } catch where error.errno == ENOENT { return }
        if Self.isDirectory(info) {
            let directory = try openDirectory(parent, name)
            do {
                defer { close(directory) }
                for entry in try entries(directory) { try removeTree(directory, entry) }
            }
            try systemCall("unlinkat", name) { unlinkat(parent, name, AT_REMOVEDIR) }
        } else {
            try systemCall("unlinkat", name) { unlinkat(parent, name, 0) }
        }
    }

    /// The tree at `name` again under `target`: directories made with the same owner, mode
    /// and times, everything else (files, symbolic links, devices) hard-linked.
    private func linkTree(_ parent: Int32, _ name: String, into target: Int32) throws(SystemCallError) {
        let info = try status(parent, name)
        guard Self.isDirectory(info) else {
            try systemCall("linkat", name) { linkat(parent, name, target, name, 0) }
            return
        }
        try systemCall("mkdirat", name) { mkdirat(target, name, 0o700) }
        let source = try openDirectory(parent, name)
        defer { close(source) }
        let copy = try openDirectory(target, name)
        defer { close(copy) }
        for entry in try entries(source) { try linkTree(source, entry, into: copy) }
        // Owner before mode (chown clears set-id bits), times last.
        try systemCall("fchown", name) { fchown(copy, info.st_uid, info.st_gid) }
        try systemCall("fchmod", name) { fchmod(copy, info.st_mode & 0o7777) }
        var times = [info.st_atim, info.st_mtim]
        try systemCall("futimens", name) { futimens(copy, &times) }
    }
}
