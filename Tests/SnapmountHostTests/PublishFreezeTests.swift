import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Closed until a test opens it.
final class Gate: @unchecked Sendable {
    private let lock = NSLock()
    private var opened = false
    func open() { lock.withLock { opened = true } }
    var isOpen: Bool { lock.withLock { opened } }
}

/// A writer that appends a line every 20 ms and records when each write(2) returned.
final class TimedWriter: @unchecked Sendable {
    private let lock = NSLock()
    private var returned: [ContinuousClock.Instant] = []
    private var stopping = false
    private let fd: Int32

    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HarnessError.command("open \(path)") }
        Thread.detachNewThread { [self] in
            while !lock.withLock({ stopping }) {
                let line = Array("written\n".utf8)
                _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                lock.withLock { returned.append(ContinuousClock.now) }
                usleep(20_000)
            }
            close(fd)
        }
    }

    func stop() { lock.withLock { stopping = true } }

    /// The longest time between two writes returning, and when it ended.
    var longestGap: (gap: Duration, endedAt: ContinuousClock.Instant)? {
        lock.withLock {
            zip(returned, returned.dropFirst()).map { ($1 - $0, $1) }.max { $0.0 < $1.0 }
        }
    }

    var count: Int { lock.withLock { returned.count } }
}

@Suite("Publish on a real filesystem", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
struct PublishFreezeTests {
    @Test("FIFREEZE: a writer waits while CreateSnapshot runs and writes again after the thaw; the snapshot is clean and holds the new release")
    func realFreeze() async throws {
        guard requireRoot("realFreeze") else { return }
        try await withHost(image: try Images.release()) { host in
            guard case .mounted = try await host.run() else {
                Issue.record("the release server's release was not mounted")
                return
            }
            try "release 43\n".write(toFile: host.mountPoint + "/VERSION", atomically: true, encoding: .utf8)
            // EC2 takes 1.5 s to accept the snapshot: all of it inside the freeze.
            let plane = host.plane
            await host.cloud.state.onSnapshot { volume, snapshot in
                try? await Task.sleep(for: .milliseconds(1500))
                return await plane.snapshotImage(volumeID: volume, snapshotID: snapshot)
            }
            try FileManager.default.createDirectory(atPath: host.root + "/www", withIntermediateDirectories: true)
            let output = host.root + "/www/snap.txt"
            var options = PublishOptions(mountPoint: try AbsolutePath(parsing: host.mountPoint), volume: nil,
                                         target: try PublishTarget(parsing: output), release: "release", keep: nil)
            options.freezeLimit = .seconds(5)
            let frozenOptions = options
            let environment = try host.agentEnvironment()
            let edges = try host.host()
            let writer = try TimedWriter(path: host.mountPoint + "/writes.log")
            try await Task.sleep(for: .milliseconds(200))
            let outcome = try await onThread {
                try PublishFlow(options: frozenOptions, environment: environment, host: edges, freezer: SystemFreezer(), logger: quietLogger,
                                tuning: fastTuning()).run()
            }
            let afterPublish = writer.count
            try await Task.sleep(for: .milliseconds(300))
            writer.stop()
            guard case .published(let id, _, _) = outcome else {
                Issue.record("\(outcome)")
                return
            }
            let gap = try #require(writer.longestGap)
            #expect(gap.gap >= .milliseconds(1300), "the writer was held for \(gap.gap) only")
            #expect(gap.gap < .seconds(5))
            #expect(writer.count > afterPublish, "the writer runs again after the thaw")

            let image = try #require(await host.cloud.state.snapshot(id.text)?.image)
            let fsck = try SystemCommandRunner().run("fsck.ext4", ["-n", "-f", image])
            #expect(fsck.status == 0, "fsck of the snapshot: \(fsck.output)")
            let version = try SystemCommandRunner().run("debugfs", ["-R", "cat /VERSION", image])
            #expect(version.output.contains("release 43"), "\(version.output)")
            #expect(try String(contentsOfFile: output, encoding: .utf8) == id.text + "\n")
        }
    }

    /// Whether the filesystem is frozen now: a second freeze is refused (EBUSY) only then.
    static func isFrozen(_ mountPoint: String) throws -> Bool {
        let result = try SystemCommandRunner().run("fsfreeze", ["--freeze", mountPoint])
        if result.status == 0 { _ = try SystemCommandRunner().run("fsfreeze", ["--unfreeze", mountPoint]) }
        return result.status != 0
    }

    @Test("the thaw guard: when the process that froze the filesystem dies (its pipe closes), the filesystem is thawed; once released, the guard leaves it alone")
    func thawGuard() async throws {
        guard requireRoot("thawGuard") else { return }
        let root = "/var/tmp/snapmount-guard-\(UUID().uuidString.prefix(8))"
        let image = root + "/fs.img"
        let mountPoint = root + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        #expect(truncate(image, 64 << 20) == 0)
        try Images.sh("mkfs.ext4", ["-q", "-F", image])
        try Images.sh("mount", ["-o", "loop", image, mountPoint])
        defer {
            _ = try? SystemCommandRunner().run("fsfreeze", ["--unfreeze", mountPoint])
            _ = try? SystemCommandRunner().run("umount", [mountPoint])
        }

        // Died while frozen: the kernel closes the pipe, the guard thaws.
        try Images.sh("fsfreeze", ["--freeze", mountPoint])
        let dying = try ThawGuard(mountPoint: mountPoint)
        #expect(try Self.isFrozen(mountPoint))
        dying.abandon()
        #expect(try !Self.isFrozen(mountPoint), "the guard did not thaw the filesystem")

        // Released (the process says it thawed): the guard ends and touches nothing — here the
        // filesystem is in fact still frozen, and must stay so.
        try Images.sh("fsfreeze", ["--freeze", mountPoint])
        let released = try ThawGuard(mountPoint: mountPoint)
        released.release()
        try await Task.sleep(for: .milliseconds(300))
        #expect(try Self.isFrozen(mountPoint), "the guard thawed after being released")
        try Images.sh("fsfreeze", ["--unfreeze", mountPoint])
    }

    /// A cgroup of the `name=systemd` hierarchy, as a service manager makes one per unit.
    static func unitCgroup() throws -> String {
        let hierarchy = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"].first {
            FileManager.default.fileExists(atPath: $0 + "/cgroup.procs")
        }
        let base = try #require(hierarchy, "no cgroup hierarchy to make a unit's cgroup in")
        let path = base + "/snapmount-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    static func members(_ cgroup: String) -> [pid_t] {
        ((try? String(contentsOfFile: cgroup + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    @Test("publish killed with its whole cgroup while frozen (a unit's stop, an OOM group kill): the guard, outside that cgroup, thaws; SIGTERM to all of them: publish thaws and exits 75 with a message, never by SIGPIPE",
          arguments: [SIGKILL, SIGTERM])
    func cgroupKill(signal number: Int32) async throws {
        guard requireRoot("cgroupKill") else { return }
        try await withHost(image: try Images.release()) { host in
            _ = try #require(try await host.run().mountedRecord)
            // EC2 does not answer CreateSnapshot (until the test is done: DevCloud must not stop
            // with a request in flight): the filesystem stays frozen up to --freeze-limit.
            let answered = Gate()
            await host.cloud.state.onSnapshot { _, _ in
                for _ in 0..<2400 where !answered.isOpen { try? await Task.sleep(for: .milliseconds(50)) }
                return nil
            }
            defer {
                answered.open()
                usleep(300_000)  // the held request answers before the cloud stops
            }
            try FileManager.default.createDirectory(atPath: host.root + "/www", withIntermediateDirectories: true)
            let cgroup = try Self.unitCgroup()
            defer { try? FileManager.default.removeItem(atPath: cgroup) }
            var environment = host.environment
            environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
            let command = "echo $$ > \(cgroup)/cgroup.procs && exec \(debugBinary) publish --mount-point \(host.mountPoint) --output \(host.root)/www/snap.txt --freeze-limit 10s"
            let publish = try Child("/bin/sh", ["-c", command], environment: environment, capture: .merged)
            // Frozen: a write blocks. (Probing with a freeze of our own would race with publish's.)
            var writers: [Child] = []
            defer {
                // Never left frozen by a failing test: the blocked writers end with the thaw.
                _ = try? SystemCommandRunner().run("fsfreeze", ["--unfreeze", host.mountPoint])
                for writer in writers { writer.wait() }
            }
            var frozen = false
            for _ in 0..<600 where !frozen {  // ends a hung test; the freeze comes within a second or two
                try await Task.sleep(for: .milliseconds(50))
                let writer = try Child("/bin/sh", ["-c", "echo probe >> \(host.mountPoint)/probe"], environment: ["PATH": "/usr/bin:/bin"])
                frozen = writer.wait(upTo: .milliseconds(500)) == nil
                if frozen { writers.append(writer) }
            }
            try #require(frozen, "publish never froze the filesystem")
            // What the service manager does: the signal to every process of the unit's cgroup.
            let members = Self.members(cgroup)
            #expect(!members.isEmpty)
            for pid in members { kill(pid, number) }
            let (output, _) = publish.readToEnd()
            let (status, signaled) = publish.wait()
            let text = String(decoding: output, as: UTF8.self)
            TestLog.write(text)
            var thawed = false
            for _ in 0..<200 where !thawed {  // the guard thaws at once; this only ends a hung test
                thawed = try !Self.isFrozen(host.mountPoint)
                if !thawed { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(thawed, "\(host.mountPoint) stayed frozen")
            if number == SIGTERM {
                #expect(!signaled && status == 75, "exit \(status), signaled \(signaled): \(text)")
                #expect(text.contains("stopped") || text.contains("signal"), "\(text)")
            } else {
                #expect(signaled, "publish was killed")
            }
        }
    }
}
