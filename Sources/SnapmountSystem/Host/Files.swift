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
        let exists = stat(path, &existing) == 0
        removeStaleTemporaries(directory: directory, prefix: ".\(name).snapmount-")
        var template = Array("\(directory)/.\(name).snapmount-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard fd >= 0 else { throw SystemCallError("mkstemp", temporary, errno: errno) }
        var renamed = false
        defer {
            if !renamed { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { buffer in
                    buffer.baseAddress.map { write(fd, $0 + offset, bytes.count - offset) } ?? -1
                }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw SystemCallError("write", temporary, errno: errno)
                }
                offset += written
            }
            try systemCall("fchmod", temporary) { fchmod(fd, exists ? existing.st_mode & 0o7777 : defaultMode) }
            if exists { try systemCall("fchown", temporary) { fchown(fd, existing.st_uid, existing.st_gid) } }
            try systemCall("fsync", temporary) { fsync(fd) }
        }
        Failpoint.hit("fstab-before-rename")
        try systemCall("rename", "\(temporary) → \(path)") { rename(temporary, path) }
        renamed = true
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            defer { close(directoryFD) }
            try systemCall("fsync", directory) { fsync(directoryFD) }
        }
    }
}

/// Removes temporary files a killed run left beside the file (callers hold the agent's lock,
/// so no other snapmount is writing one).
private func removeStaleTemporaries(directory: String, prefix: String) {
    guard let handle = opendir(directory) else { return }
    defer { closedir(handle) }
    while let entry = readdir(handle) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name.hasPrefix(prefix) { unlink("\(directory)/\(name)") }
    }
}

/// Crash-test hooks: with `SNAPMOUNT_FAILPOINT=<name>` in the environment, the process kills
/// itself with SIGKILL at that point. Compiled out of release builds.
public enum Failpoint {
    public static func hit(_ name: String) {
        #if DEBUG
        if let wanted = getenv("SNAPMOUNT_FAILPOINT"), String(cString: wanted) == name {
            kill(getpid(), SIGKILL)
        }
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
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return FileLock(fd: fd) }
            let error = errno
            guard error == EWOULDBLOCK || error == EINTR else {
                close(fd)
                throw SystemCallError("flock", path, errno: error)
            }
            guard clock.monotonic() < deadline else {
                close(fd)
                return nil
            }
            clock.sleep(for: .milliseconds(100))
        }
    }

    private init(fd: Int32) {
        self.fd = fd
    }

    /// Whether another process holds the lock, without creating the file or taking it.
    public static func isHeld(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return true
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// mkdir -p. The corresponding C function is `mkdir`.
public func makeDirectories(_ path: String, mode: mode_t) throws(SystemCallError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, mode) != 0 && errno != EEXIST { throw SystemCallError("mkdir", current, errno: errno) }
    }
}

/// Reads a small text file, or `nil` when it cannot be read.
public func readText(_ path: String, limit: Int = 64 * 1024) -> String? {
    (try? readFile(path, limit: limit)).map { String(decoding: $0, as: UTF8.self) }
}
