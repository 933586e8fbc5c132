#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// A failed system call: the call, what it was applied to, and errno captured at once.
public struct SystemCallError: SnapmountError, Equatable {
    public let call: String
    public let subject: String
    public let errno: Int32

    public init(_ call: String, _ subject: String, errno: Int32) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    public var exitStatus: ExitStatus { .internalError }

    public var description: String {
        "\(call) \(subject): \(String(cString: strerror(errno)))"
    }
}

/// The one place a system call is made: retries `EINTR` and captures errno before anything
/// else can overwrite it.
@discardableResult
func systemCall<T: BinaryInteger>(_ name: String, _ subject: String, _ body: () -> T) throws(SystemCallError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = errno
        if error == EINTR { continue }
        throw SystemCallError(name, subject, errno: error)
    }
}

/// Reads a whole file, refusing one longer than `limit` bytes.
/// The corresponding C functions are `open`, `read` and `close`.
public func readFile(_ path: String, limit: Int) throws(SystemCallError) -> [UInt8] {
    let fd = try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    while true {
        let count = chunk.withUnsafeMutableBytes { buffer in read(fd, buffer.baseAddress, buffer.count) }
        if count < 0 {
            let error = errno
            if error == EINTR { continue }
            throw SystemCallError("read", path, errno: error)
        }
        if count == 0 { return bytes }
        bytes.append(contentsOf: chunk[0..<count])
        if bytes.count > limit { throw SystemCallError("read", "\(path) (larger than \(limit) bytes)", errno: EFBIG) }
    }
}

/// The process environment as a dictionary. The corresponding C variable is `environ`.
public func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}
