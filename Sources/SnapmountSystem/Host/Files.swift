#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// Replaces a file atomically (DESIGN.md §5 rule 3): a temporary file in the same directory,
/// the original's mode and owner, fsync, rename over the original, fsync of the directory.
/// A crash leaves either the old file or the new one, never a half-written one.
public enum AtomicFile {
    /// The corresponding C functions are `mkstemp`, `fsync`, `rename`.
    public static func replace(_ path: String, with bytes: [UInt8], defaultMode: mode_t = 0o644) throws(SystemCallError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var existing = stat()
        let exists = (try? systemCall("stat", path) { stat(path, &existing) }) != nil
        removeStaleTemporaries(directory: directory, prefix: ".\(name).snapmount-")
        var template = Array("\(directory)/.\(name).snapmount-XXXXXX".utf8CString)
        let fd = try systemCall("mkstemp", "\(directory)/.\(name).snapmount-XXXXXX") {
            template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
        }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var renamed = false
        defer {
            if !renamed { _ = try? systemCall("unlink", temporary) { unlink(temporary) } }
        }
        do {
            defer { close(fd) }
            try writeAll(fd, bytes, subject: temporary)
            try systemCall("fchmod", temporary) { fchmod(fd, exists ? existing.st_mode & 0o7777 : defaultMode) }
            if exists { try systemCall("fchown", temporary) { fchown(fd, existing.st_uid, existing.st_gid) } }
            try systemCall("fsync", temporary) { fsync(fd) }
        }
        Failpoint.hit("fstab-before-rename")
        try systemCall("rename", "\(temporary) → \(path)") { rename(temporary, path) }
        renamed = true
        let directoryFD = try systemCall("open", directory) { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(directoryFD) }
        try systemCall("fsync", directory) { fsync(directoryFD) }
    }
}

/// Removes temporary files a killed run left beside the file (callers hold the agent's lock,
/// so no other snapmount is writing one).
private func removeStaleTemporaries(directory: String, prefix: String) {
    guard let handle = try? systemCall("opendir", directory, { opendir(directory) }) else { return }
    defer { closedir(handle) }
    while let entry = readdir(handle) {
        let name = entryName(entry)
        if name.hasPrefix(prefix) { _ = try? systemCall("unlink", "\(directory)/\(name)") { unlink("\(directory)/\(name)") } }
    }
}

/// Crash-test hooks: with `SNAPMOUNT_FAILPOINT=<name>` in the environment (armed by the
/// command, from ``AgentEnvironment/failpoint``), the process kills itself with SIGKILL at
/// that point. Compiled out of release builds.
public enum Failpoint {
    /// Set once, by the command, before anything runs.
    nonisolated(unsafe) private static var armed: String?

    public static func arm(_ name: String?) {
        #if DEBUG
        armed = name
        #endif
    }

    public static func hit(_ name: String) {
        #if DEBUG
        if armed == name { _ = try? systemCall("kill", name) { kill(getpid(), SIGKILL) } }
        #endif
    }

    /// `during-mkfs`: 20 ms into mkfs, kill it and the agent, leaving whatever mkfs had
    /// written by then — the interrupted format a later run must recover from.
    public static func hitDuring(_ program: String, child: pid_t) {
        #if DEBUG
        guard armed == "during-\(program.split(separator: ".").first ?? "")" else { return }
        usleep(20_000)
        _ = try? systemCall("kill", program) { kill(child, SIGKILL) }
        _ = try? systemCall("kill", "self") { kill(getpid(), SIGKILL) }
        #endif
    }
}

/// An exclusive flock(2) on a lock file, waited for with a bound.
public final class FileLock {
    private let fd: Int32

    /// - Returns: `nil` when the lock is still held by another process after `timeout`.
    /// The corresponding C function is `flock`.
    public static func acquire(_ path: String, timeout: Duration, clock: any AgentClock = SystemClock()) throws(SystemCallError) -> FileLock? {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        try makeDirectories(directory, mode: 0o755)
        let fd = try systemCall("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        let deadline = clock.monotonic() + timeout
        while true {
            do {
                try systemCall("flock", path) { flock(fd, LOCK_EX | LOCK_NB) }
                return FileLock(fd: fd)
            } catch where error.errno == EWOULDBLOCK {
                guard clock.monotonic() < deadline else {
                    close(fd)
                    return nil
                }
            } catch {
                close(fd)
                throw error
            }
            clock.sleep(for: .milliseconds(100))
        }
    }

    private init(fd: Int32) {
        self.fd = fd
    }

    /// Whether another process holds the lock, without creating the file or taking it.
    public static func isHeld(_ path: String) -> Bool {
        guard let fd = try? systemCall("open", path, { open(path, O_RDONLY | O_CLOEXEC) }) else { return false }
        defer { close(fd) }
        guard (try? systemCall("flock", path, { flock(fd, LOCK_EX | LOCK_NB) })) != nil else { return true }
        _ = try? systemCall("flock", path) { flock(fd, LOCK_UN) }
        return false
    }

    deinit {
        _ = try? systemCall("flock", "lock") { flock(fd, LOCK_UN) }
        close(fd)
    }
}

/// mkdir -p. The corresponding C function is `mkdir`.
public func makeDirectories(_ path: String, mode: mode_t) throws(SystemCallError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        do {
            try systemCall("mkdir", current) { mkdir(current, mode) }
        } catch where error.errno == EEXIST {
            continue
        }
    }
}

/// `path` with every symbolic link resolved, as the kernel sees it (what mountinfo shows for
/// a mount point, what a rename replaces); the path itself when it does not exist yet.
/// The corresponding C function is `realpath`.
public func resolvedPath(_ path: String) -> String {
    guard let resolved = try? systemCall("realpath", path, { realpath(path, nil) }) else { return path }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// Whether anything exists at `path`. The corresponding C function is `access`.
public func fileExists(_ path: String) -> Bool {
    (try? systemCall("access", path) { access(path, F_OK) }) != nil
}

/// Removes a file, and makes that durable; a file already gone is fine.
/// The corresponding C functions are `unlink` and `fsync` (of the directory).
public func removeFile(_ path: String) {
    _ = try? systemCall("unlink", path) { unlink(path) }
    let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
    if let fd = try? systemCall("open", directory, { open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }) {
        _ = try? systemCall("fsync", directory) { fsync(fd) }
        close(fd)
    }
}

/// Reads a small text file, or `nil` when it cannot be read.
public func readText(_ path: String, limit: Int = 64 * 1024) -> String? {
    (try? readFile(path, limit: limit)).map { String(decoding: $0, as: UTF8.self) }
}
