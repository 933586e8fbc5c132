/// How the process ends: the sysexits(3) values that DESIGN.md §3 promises to scripts and
/// to systemd. Every error the agent can raise maps to exactly one of these.
public enum ExitStatus: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// Done, or already done.
    case success = 0
    /// The command line was wrong (EX_USAGE).
    case usage = 64
    /// A data-safety refusal: the device holds something unexpected (EX_DATAERR).
    case dataRefused = 65
    /// A remote service stayed unavailable after retries (EX_UNAVAILABLE).
    case unavailable = 69
    /// A bug or an impossible state (EX_SOFTWARE).
    case internalError = 70
    /// Timed out waiting for a device or a volume state (EX_TEMPFAIL).
    case timedOut = 75
    /// IAM denied a call (EX_NOPERM).
    case permissionDenied = 77
    /// The configuration is missing or invalid (EX_CONFIG).
    case configuration = 78

    /// The exit status for any error: a ``SnapmountError`` names its own; anything else is a bug.
    public init(for error: any Error) {
        self = (error as? any SnapmountError)?.exitStatus ?? .internalError
    }

    /// The help's words for it: `64 usage`.
    public var helpWords: String {
        switch self {
        case .success: "done"
        case .usage: "usage"
        default: description
        }
    }

    /// Every status with its words, for the help: "0 done, 64 usage, …, 78 configuration error".
    public static var helpSummary: String {
        allCases.map { "\($0.rawValue) \($0.helpWords)" }.joined(separator: ", ")
    }

    public var description: String {
        switch self {
        case .success: "done"
        case .usage: "usage error"
        case .dataRefused: "refused to touch unexpected data"
        case .unavailable: "remote service unavailable"
        case .internalError: "internal error"
        case .timedOut: "timed out"
        case .permissionDenied: "permission denied"
        case .configuration: "configuration error"
        }
    }
}

/// An error that knows which exit status it ends the process with. Its `description` is the
/// message an operator reads: it names what was wrong and, where it can, what to do.
public protocol SnapmountError: Error, CustomStringConvertible, Sendable {
    var exitStatus: ExitStatus { get }
}
