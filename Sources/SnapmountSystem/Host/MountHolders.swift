#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A process that keeps a mount busy: it has a file open there, or its working directory,
/// root or program is there.
public struct MountHolder: Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    /// The process's name (`comm`).
    public var name: String
    /// How it holds the mount: `cwd`, `root`, `exe`, or `fd N`.
    public var how: String

    public init(pid: Int32, name: String, how: String) {
        self.pid = pid
        self.name = name
        self.how = how
    }

    public var description: String { "\(name) (pid \(pid), \(how))" }
}

/// What holds `mountPoint`, from `/proc` (as `fuser -m` finds it, without the program):
/// every process whose working directory, root, program or an open file is at or under it.
/// Processes that vanish or cannot be read while it looks are skipped. The corresponding C
/// functions are `opendir` and `readlink`.
public func mountHolders(_ mountPoint: String, proc: String = "/proc") -> [MountHolder] {
    let prefix = mountPoint.hasSuffix("/") ? String(mountPoint.dropLast()) : mountPoint
    func isUnder(_ target: String) -> Bool { target == prefix || target.hasPrefix(prefix + "/") }
    var holders: [MountHolder] = []
    for entry in directoryEntries(proc) {
        guard let pid = Int32(entry), pid != getpid() else { continue }
        let base = proc + "/" + entry
        let name = ((try? readFile(base + "/comm", limit: 256)).map { String(decoding: $0, as: UTF8.self) } ?? "?").trimmingWhitespace()
        var how: [String] = []
        for link in ["cwd", "root", "exe"] where linkTarget(base + "/" + link).map(isUnder) == true { how.append(link) }
        for fd in directoryEntries(base + "/fd") where linkTarget(base + "/fd/" + fd).map(isUnder) == true { how.append("fd \(fd)") }
        if !how.isEmpty { holders.append(MountHolder(pid: pid, name: name, how: how.joined(separator: ", "))) }
    }
    return holders.sorted { $0.pid < $1.pid }
}

/// A directory's entries, `.` and `..` left out; none when it cannot be read.
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = entryName(entry)
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// A directory entry's name (`d_name`, a fixed-size C array).
func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
    withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Where a symbolic link points; `nil` when it is not one or cannot be read.
func linkTarget(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let count = readlink(path, &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
