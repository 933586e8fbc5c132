import SnapmountCore
import SnapmountSystem

/// The release side's lock: `publish`, `push` and `rollback` exclude each other, so that the
/// tree does not change under a push and the published id does not change under either.
public enum ReleaseLock {
    public static func path(in directory: String) -> String { directory + "/publish.lock" }

    /// Takes it, waiting (bounded, within the run's deadline) for whichever holds it.
    public static func take(in directory: String, timeout: Duration, clock: any AgentClock) throws -> FileLock {
        let path = path(in: directory)
        try makeDirectories(directory, mode: 0o755)
        guard let lock = try FileLock.acquire(path, timeout: clock.capped(timeout), clock: clock) else {
            throw HostError.lockTimeout(path, after: timeout)
        }
        return lock
    }
}
