import CLinux
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with posix_spawn, for the tests. Foundation's `Process.run()` on
/// Linux over-reads a `dirent` while it closes descriptors
/// (swiftlang/swift-corelibs-foundation#5472) and crashed the test process now and then
/// when it had many descriptors open; this never lists /proc/self/fd.
public final class Child: @unchecked Sendable {
    public enum Capture: Sendable {
        /// Standard output and error to /dev/null.
        case none
        /// Both into one pipe: ``output``.
        case merged
        /// Each into its own pipe: ``output`` and ``errors``.
        case separate
        /// Standard output into ``output``, standard error to /dev/null (a server whose
        /// error output nobody reads must never block on it).
        case outputOnly
    }

    public let pid: pid_t
    /// The read end of the captured standard output (and error, when merged); -1 if none.
    public let output: Int32
    /// The read end of the captured standard error when separate; -1 otherwise.
    public let errors: Int32
    private let lock = NSLock()
    private var waitStatus: Int32?

    /// Starts `path` with `arguments` and exactly `environment`.
    public init(_ path: String, _ arguments: [String], environment: [String: String], capture: Capture = .none) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        switch capture {
        case .none:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        case .merged:
            guard clinux_pipe2(&outPipe, O_CLOEXEC) == 0 else { throw ChildError.spawn(path, errno) }
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 2)
        case .separate:
            guard clinux_pipe2(&outPipe, O_CLOEXEC) == 0, clinux_pipe2(&errPipe, O_CLOEXEC) == 0 else { throw ChildError.spawn(path, errno) }
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        case .outputOnly:
            guard clinux_pipe2(&outPipe, O_CLOEXEC) == 0 else { throw ChildError.spawn(path, errno) }
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        // Nothing else of this process reaches the child: a pipe of another test held open by
        // a daemon would never see its end.
        clinux_spawn_close_from(&actions, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        let variables = environment.map { "\($0.key)=\($0.value)" }
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        for fd in [outPipe[1], errPipe[1]] where fd >= 0 { close(fd) }
        guard result == 0 else {
            for fd in [outPipe[0], errPipe[0]] where fd >= 0 { close(fd) }
            throw ChildError.spawn(path, result)
        }
        self.pid = pid
        output = outPipe[0]
        errors = errPipe[0]
    }

    deinit {
        for fd in [output, errors] where fd >= 0 { close(fd) }
    }

    /// Runs a program to its end; what it printed, and how it ended.
    public static func run(_ path: String, _ arguments: [String], environment: [String: String],
                           merged: Bool = false) throws -> (status: Int32, signaled: Bool, stdout: String, stderr: String) {
        let child = try Child(path, arguments, environment: environment, capture: merged ? .merged : .separate)
        let (out, err) = child.readToEnd()
        let (status, signaled) = child.wait()
        return (status, signaled, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// The environment of this test process, for children that need the machine's own.
    public static var inherited: [String: String] { ProcessInfo.processInfo.environment }

    /// Everything the captured pipes carry until the child closes them.
    public func readToEnd() -> (output: [UInt8], errors: [UInt8]) {
        var buffers: [Int32: [UInt8]] = [:]
        var open = [output, errors].filter { $0 >= 0 }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&fds, nfds_t(fds.count), -1) >= 0 || errno == EINTR else { break }
            for entry in fds where entry.revents != 0 {
                let count = read(entry.fd, &chunk, chunk.count)
                if count > 0 {
                    buffers[entry.fd, default: []] += chunk[0..<count]
                } else if count == 0 || errno != EINTR {
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
        return (buffers[output] ?? [], errors >= 0 ? buffers[errors] ?? [] : [])
    }

    /// Some of the output as it comes; `nil` at its end.
    public func readSome() -> [UInt8]? {
        guard output >= 0 else { return nil }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(output, &chunk, chunk.count)
            if count > 0 { return Array(chunk[0..<count]) }
            if count < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// Waits for the end: the exit status, or the signal that ended it.
    @discardableResult
    public func wait() -> (status: Int32, signaled: Bool) {
        while lock.withLock({ waitStatus }) == nil {
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, 0)
            if result == pid {
                lock.withLock { waitStatus = raw }
            } else if result < 0 && errno != EINTR {
                lock.withLock { waitStatus = 0 }
            }
        }
        return Self.decode(lock.withLock { waitStatus } ?? 0)
    }

    /// Whether it still runs (reaps it if it ended).
    public var isRunning: Bool {
        if lock.withLock({ waitStatus }) != nil { return false }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, WNOHANG)
        if result == pid { lock.withLock { waitStatus = raw } }
        return result == 0
    }

    /// The exit status (or the signal) once it ended.
    public var terminationStatus: Int32 { Self.decode(lock.withLock { waitStatus } ?? 0).status }

    /// Waits up to `limit`; the exit status, or nil while it still runs.
    public func wait(upTo limit: Duration) -> Int32? {
        let until = ContinuousClock.now + limit
        while isRunning && ContinuousClock.now < until { usleep(20_000) }
        return isRunning ? nil : terminationStatus
    }

    public func signal(_ number: Int32) { kill(pid, number) }

    /// SIGKILL, then reaped.
    public func stop() {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        wait()
    }

    private static func decode(_ raw: Int32) -> (status: Int32, signaled: Bool) {
        raw & 0x7f == 0 ? ((raw >> 8) & 0xff, false) : (raw & 0x7f, true)
    }
}

public enum ChildError: Error, CustomStringConvertible {
    case spawn(String, Int32)

    public var description: String {
        switch self {
        case .spawn(let path, let code): "cannot start \(path): \(String(cString: strerror(code)))"
        }
    }
}
