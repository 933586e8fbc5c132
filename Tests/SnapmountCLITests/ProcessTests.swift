import DevCloud
import Foundation
import SnapmountCore
import SnapmountTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real binary as a process: how it stops, and what it lets others see of it.
@Suite("snapmount as a process", .serialized)
struct ProcessTests {
    /// Starts the binary against `cloud`, with private state and device directories.
    static func start(_ cloud: DevCloud, root: String, user: String? = nil, extra: [String] = []) throws -> Child {
        var arguments = [Snapmount.binary.path, "run", "--config", Snapmount.emptyConfig, "--mount-point", root + "/release",
                         "--fstab", root + "/fstab", "--device-timeout", "5s"] + extra
        if let user { arguments = ["/usr/bin/setpriv", "--reuid=\(user)", "--regid=\(user)", "--clear-groups"] + arguments }
        let environment = cloud.environment.merging([
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SNAPMOUNT_STATE_DIR": root + "/state", "SNAPMOUNT_DEV_DIR": root + "/dev",
            "SNAPMOUNT_SYS_DIR": root + "/sys", "AWS_MAX_ATTEMPTS": "3",
        ]) { _, new in new }
        return try Child(arguments[0], Array(arguments.dropFirst()), environment: environment, capture: .merged)
    }

    static func temporaryRoot() throws -> String {
        let root = NSTemporaryDirectory() + "snapmount-process-\(UUID().uuidString.prefix(8))"
        for directory in ["/state", "/dev", "/sys/block"] {
            try FileManager.default.createDirectory(atPath: root + directory, withIntermediateDirectories: true)
        }
        _ = FileManager.default.createFile(atPath: root + "/fstab", contents: Data())
        chmod(root, 0o777)
        chmod(root + "/state", 0o777)
        return root
    }

    @Test("SIGTERM while waiting for a new volume: exit 75 at the next safe point, and the volume it made is given back")
    func sigterm() async throws {
        var settings = fastSettings()
        settings.delays.volumeCreate = .seconds(3)
        let cloud = try await DevCloud.start(settings)
        await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1))
        await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
        let root = try Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let process = try Self.start(cloud, root: root)
        // Until CreateVolume has been answered.
        let until = ContinuousClock.now + .seconds(10)
        while await cloud.state.callLog().filter({ $0.action == "CreateVolume" }).isEmpty && ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(200))
        let signalled = ContinuousClock.now
        process.signal(SIGTERM)
        let status = try await onThread { process.wait(upTo: .seconds(20)) }
        let stopped = ContinuousClock.now - signalled
        process.stop()
        let text = String(decoding: process.readToEnd().output, as: UTF8.self)
        TestLog.write(text)
        #expect(status == 75, "\(text)")
        #expect(text.contains("stopped by SIGTERM"), "\(text)")
        // The volume is given back once EC2 lets it be deleted (it was still being created).
        #expect(stopped < .seconds(15), "\(stopped)")
        let deletes = await cloud.state.callLog().filter { $0.action == "DeleteVolume" }
        #expect(deletes.last?.outcome == "ok", "\(deletes.map(\.outcome))")
        await stopCloud(cloud)
    }

    @Test("credentials never reach a core dump: the process is not dumpable (its /proc entries belong to root)",
          .enabled(if: RootTests.available, "runs the binary as another user, which needs root"))
    func notDumpable() async throws {
        var settings = fastSettings()
        settings.hangDuration = .seconds(4)
        let cloud = try await DevCloud.start(settings)
        // IMDS holds the first request: the process stays alive long enough to look at it.
        await cloud.state.addFault(Fault(target: "imds:token", kind: .noResponse, trigger: .always))
        let root = try Self.temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let process = try Self.start(cloud, root: root, user: "65534")
        // Its first IMDS request comes after it made itself not dumpable (however slow the
        // machine is to start it).
        let until = ContinuousClock.now + .seconds(60)
        while await cloud.state.callLog().filter({ $0.service == "imds" }).isEmpty && ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(20))
        }
        // setpriv execs snapmount in place: same pid.
        var status = stat()
        let found = stat("/proc/\(process.pid)/status", &status) == 0
        let comm = (try? String(contentsOfFile: "/proc/\(process.pid)/comm", encoding: .utf8)) ?? ""
        try await onThread { process.stop() }
        await stopCloud(cloud)
        #expect(found)
        #expect(comm.hasPrefix("snapmount"), "\(comm)")
        #expect(status.st_uid == 0, "a dumpable process's /proc entries belong to its own user (\(status.st_uid))")
    }
}
