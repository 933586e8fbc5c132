#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CLinux
import SnapmountCore

/// A finished program: its exit status and the start of what it printed.
public struct ProcessResult: Sendable, Equatable {
    public let status: Int32
    /// Standard output and standard error together, at most the runner's limit.
    public let output: String

    public init(status: Int32, output: String) {
        self.status = status
        self.output = output
    }
}

public enum ProcessRunError: SnapmountError, Equatable {
    case notFound(String)
    case spawn(String, errno: Int32)
    case signaled(String, signal: Int32)
    /// Stopped after its time limit (or the agent's own stop): worth another run.
    case timedOut(String, after: Duration)
    case stopped(String, signal: Int32)

    public var exitStatus: ExitStatus {
        switch self {
        case .timedOut, .stopped: .timedOut
        case .notFound, .spawn, .signaled: .internalError
        }
    }

    public var description: String {
        switch self {
        case .notFound(let program): "\(program) is not installed (not found in /usr/sbin, /sbin, /usr/bin, /bin)"
        case .spawn(let program, let code): "cannot run \(program): \(String(cString: strerror(code)))"
        case .signaled(let program, let signal): "\(program) was killed by signal \(signal)"
        case .timedOut(let program, let after): "\(program) did not finish within \(DurationText.format(after)); stopped it"
        case .stopped(let program, let signal): "stopped \(program): the agent was asked to stop (signal \(signal))"
        }
    }
}

/// Runs programs such as mkfs and fsck: an argument vector, never a shell; output captured
/// up to a limit; a time limit. Behind a protocol so the flow can run against a recording fake.
public protocol CommandRunner: Sendable {
    /// - Parameter timeout: stop the program (SIGTERM, then SIGKILL) when it runs longer.
    func run(_ program: String, _ arguments: [String], timeout: Duration?) throws(ProcessRunError) -> ProcessResult
}

extension CommandRunner {
    public func run(_ program: String, _ arguments: [String]) throws(ProcessRunError) -> ProcessResult {
        try run(program, arguments, timeout: nil)
    }
}

public struct SystemCommandRunner: CommandRunner {
    public static let searchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    public var outputLimit = 64 * 1024
    /// How long a program has to end after SIGTERM before SIGKILL.
    public var killAfter: Duration = .seconds(5)
    /// `NAME=value` entries added to the fixed environment: ssh's agent socket and home for
    /// `snapmount push`; nothing for mkfs and fsck.
    public var environment: [String] = []

    public init() {}

    /// The child gets no descriptor but 0–2 (stdin from /dev/null, stdout and stderr into
    /// one pipe), default signal dispositions and an empty signal mask, and a fixed
    /// environment. The corresponding C functions are `posix_spawn`, `poll` and `waitpid`.
    public func run(_ program: String, _ arguments: [String], timeout: Duration?) throws(ProcessRunError) -> ProcessResult {
        guard let path = program.hasPrefix("/") ? program : Self.searchPath.map({ "\($0)/\(program)" }).first(where: { path in (try? systemCall("access", path, { access(path, X_OK) })) != nil }) else {
            throw .notFound(program)
        }
        var pipeFDs: [Int32] = [0, 0]
        do {
            try systemCall("pipe2", program) { clinux_pipe2(&pipeFDs, O_CLOEXEC) }
        } catch {
            throw .spawn(program, errno: error.errno)
        }
        let (pid, spawned) = spawnChild(path, arguments, input: nil, output: pipeFDs[1], environment: environment)
        close(pipeFDs[1])
        guard spawned == 0 else {
            close(pipeFDs[0])
            throw .spawn(program, errno: spawned)
        }
        Failpoint.hitDuring(program, child: pid)

        let started = ContinuousClock.now
        var stopReason: ProcessRunError?
        var killedAt: ContinuousClock.Instant?
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if killedAt == nil {
                if let signal = StopSignal.received {
                    stopReason = .stopped(program, signal: signal)
                } else if let timeout, ContinuousClock.now - started >= timeout {
                    stopReason = .timedOut(program, after: timeout)
                }
                if stopReason != nil {
                    // The whole group: mkfs and anything it started.
                    _ = try? systemCall("kill", program) { kill(-pid, SIGTERM) }
                    killedAt = ContinuousClock.now
                }
            } else if let killedAt, ContinuousClock.now - killedAt >= killAfter {
                _ = try? systemCall("kill", program) { kill(-pid, SIGKILL) }
            }
            var descriptor = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
            let ready = (try? systemCall("poll", program) { poll(&descriptor, 1, 100) }) ?? 0
            guard ready > 0 else { continue }
            // Keep reading past the limit so the child never blocks on a full pipe; a read
            // error ends the output as the end of file would.
            guard let count = try? readSome(pipeFDs[0], into: &buffer, subject: program), count > 0 else { break }
            if output.count < outputLimit { output.append(contentsOf: buffer[0..<min(count, outputLimit - output.count)]) }
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        do {
            try systemCall("waitpid", program) { waitpid(pid, &status, 0) }
        } catch {
            throw .spawn(program, errno: error.errno)
        }
        if let stopReason { throw stopReason }
        let text = String(decoding: output, as: UTF8.self)
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros.
        if status & 0x7f == 0 { return ProcessResult(status: (status >> 8) & 0xff, output: text) }
        throw .signaled(program, signal: status & 0x7f)
    }
}

/// posix_spawn as snapmount starts every child (mkfs, fsck, the thaw guard): standard input
/// from `input` (else /dev/null), standard output and error into `output` (else /dev/null),
/// no other descriptor (not a socket, not the lock, not a device), default signal
/// dispositions and an empty mask, a process group of its own (stopping it reaches what it
/// started; a terminal's Ctrl-C does not), and a fixed environment without locale surprises.
/// Returns the child and posix_spawn's result (0, or an errno).
func spawnChild(_ path: String, _ arguments: [String], input: Int32?, output: Int32?, environment extra: [String] = []) -> (pid: pid_t, result: Int32) {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let input {
        posix_spawn_file_actions_adddup2(&actions, input, 0)
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
    for fd: Int32 in [1, 2] {
        if let output {
            posix_spawn_file_actions_adddup2(&actions, output, fd)
        } else {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
        }
    }
    clinux_spawn_close_from(&actions, 3)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    clinux_spawnattr_default_signals(&attributes)
    clinux_spawnattr_own_group(&attributes)

    let argv = [path] + arguments
    var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for pointer in cArguments { free(pointer) } }
    let environment = ["PATH=/usr/sbin:/sbin:/usr/bin:/bin", "LC_ALL=C"] + extra
    var cEnvironment: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer { for pointer in cEnvironment { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, path, &actions, &attributes, &cArguments, &cEnvironment)
    return (pid, result)
}
