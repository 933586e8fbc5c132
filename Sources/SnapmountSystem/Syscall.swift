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
/// else can overwrite it. `body` returns the call's result, -1 meaning failure.
/// (`close` is the exception, called directly: after EINTR the descriptor is gone on Linux,
/// so it is never retried, and there is nothing to do about its failure.)
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

/// The same for calls that return a pointer, `NULL` meaning failure (`opendir`).
func systemCall<T>(_ name: String, _ subject: String, _ body: () -> T?) throws(SystemCallError) -> T {
    while true {
        if let result = body() { return result }
        let error = errno
        if error == EINTR { continue }
        throw SystemCallError(name, subject, errno: error)
    }
}

/// Reads into `buffer[start...]`, from `offset` (or the file position when `nil`); 0 at
/// the end of the file. The corresponding C functions are `read` and `pread`.
func readSome(_ fd: Int32, into buffer: inout [UInt8], from start: Int = 0, at offset: off_t? = nil,
              subject: String) throws(SystemCallError) -> Int {
    let result = buffer.withUnsafeMutableBytes { raw in
        Result { () throws(SystemCallError) -> Int in
            guard let base = raw.baseAddress, start < raw.count else { return 0 }
            return try systemCall(offset == nil ? "read" : "pread", subject) {
                offset.map { pread(fd, base + start, raw.count - start, $0) } ?? read(fd, base + start, raw.count - start)
            }
        }
    }
    return try result.get()
}

/// Writes all of `bytes`. The corresponding C function is `write`.
func writeAll(_ fd: Int32, _ bytes: [UInt8], subject: String) throws(SystemCallError) {
    let result = bytes.withUnsafeBytes { buffer in
        Result { () throws(SystemCallError) in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                offset += try systemCall("write", subject) { write(fd, base + offset, buffer.count - offset) }
            }
        }
    }
    try result.get()
}

/// Reads a whole file, refusing one longer than `limit` bytes.
/// The corresponding C functions are `open`, `read` and `close`.
public func readFile(_ path: String, limit: Int) throws(SystemCallError) -> [UInt8] {
    let fd = try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    while true {
        let count = try readSome(fd, into: &chunk, subject: path)
        if count == 0 { return bytes }
        bytes.append(contentsOf: chunk[0..<count])
        if bytes.count > limit { throw SystemCallError("read", "\(path) (larger than \(limit) bytes)", errno: EFBIG) }
    }
}

/// The process environment as a dictionary, for the command to parse once
/// (``AgentEnvironment``). The corresponding C variable is `environ`.
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
