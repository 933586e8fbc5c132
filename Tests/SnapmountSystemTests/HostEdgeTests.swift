import Foundation
import SnapmountCore
import SnapmountSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real edges that need no root: files, locks, processes, the sysfs scan.
@Suite("Host edges without root")
struct HostEdgeTests {
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "snapmount-edges-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("the mount flag table agrees with <sys/mount.h>")
    func mountFlagBits() {
        let glibc: [MountFlag: UInt] = [
            .ro: UInt(MS_RDONLY), .nosuid: UInt(MS_NOSUID), .nodev: UInt(MS_NODEV), .noexec: UInt(MS_NOEXEC),
            .sync: UInt(MS_SYNCHRONOUS), .dirsync: UInt(MS_DIRSYNC), .noatime: UInt(MS_NOATIME), .nodiratime: UInt(MS_NODIRATIME),
            .relatime: UInt(MS_RELATIME), .strictatime: UInt(MS_STRICTATIME), .lazytime: 1 << 25, .mand: UInt(MS_MANDLOCK),
        ]
        for flag in MountFlag.allCases { #expect(flag.bit == glibc[flag], "\(flag)") }
    }

    @Test("the sysfs scan reads names, sizes, numbers and padded serials, and which have nodes")
    func sysfsScan() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        for (name, serial) in [("nvme1n1", "vol0123456789abcdef0   \n"), ("nvme1c1n1", "vol0123456789abcdef0\n"), ("xvdf", nil)] {
            let base = "\(root)/sys/block/\(name)"
            try FileManager.default.createDirectory(atPath: base + "/device", withIntermediateDirectories: true)
            try "2097152\n".write(toFile: base + "/size", atomically: true, encoding: .utf8)
            try "259:1\n".write(toFile: base + "/dev", atomically: true, encoding: .utf8)
            if let serial { try serial.write(toFile: base + "/device/serial", atomically: true, encoding: .utf8) }
        }
        try FileManager.default.createDirectory(atPath: root + "/dev", withIntermediateDirectories: true)
        // A regular file is not a device node.
        try "".write(toFile: root + "/dev/nvme1n1", atomically: true, encoding: .utf8)
        let devices = SysfsBlockDevices(devDirectory: root + "/dev", sysDirectory: root + "/sys").scan()
        #expect(devices.map(\.name) == ["nvme1c1n1", "nvme1n1", "xvdf"])
        #expect(devices.map(\.serial) == ["vol0123456789abcdef0", "vol0123456789abcdef0", nil])
        #expect(devices.allSatisfy { $0.sizeBytes == 1 << 30 && $0.number == "259:1" && !$0.hasNode })
        #expect(devices[0].isMultipathPath && !devices[1].isMultipathPath)
        #expect(SysfsBlockDevices(devDirectory: root + "/dev", sysDirectory: root + "/nonexistent").scan().isEmpty)
    }

    @Test("a watch on a directory wakes when a node appears, and waits no longer than asked")
    func watch() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let watch = try SysfsBlockDevices(devDirectory: root).watch()
        var started = ContinuousClock.now
        watch.wait(upTo: .milliseconds(100))
        #expect(ContinuousClock.now - started >= .milliseconds(90))
        let thread = Thread {
            usleep(50_000)
            _ = FileManager.default.createFile(atPath: root + "/nvme1n1", contents: nil)
        }
        started = ContinuousClock.now
        thread.start()
        watch.wait(upTo: .seconds(5))
        #expect(ContinuousClock.now - started < .seconds(4))
        #expect(throws: DeviceError.self) { try SysfsBlockDevices(devDirectory: root + "/nonexistent").watch() }
    }

    @Test("programs run with an argument vector; output is captured up to the limit; exit status and signals")
    func commands() throws {
        let runner = SystemCommandRunner()
        #expect(try runner.run("true", []).status == 0)
        #expect(try runner.run("false", []).status == 1)
        let echoed = try runner.run("sh", ["-c", "echo \"$0\" \"$1\"; echo err >&2", "a b", ";rm -rf /"])
        #expect(echoed.output == "a b ;rm -rf /\nerr\n")
        var limited = SystemCommandRunner()
        limited.outputLimit = 10
        #expect(try limited.run("sh", ["-c", "head -c 100000 /dev/zero | tr '\\0' x"]).output == String(repeating: "x", count: 10))
        #expect(throws: ProcessRunError.signaled("sh", signal: SIGKILL)) { try runner.run("sh", ["-c", "kill -9 $$"]) }
        #expect(throws: ProcessRunError.notFound("no-such-program-snapmount")) { try runner.run("no-such-program-snapmount", []) }
    }

    @Test("a program that runs past its time limit is stopped (SIGTERM, then SIGKILL): 75")
    func timeLimit() throws {
        var runner = SystemCommandRunner()
        runner.killAfter = .milliseconds(300)
        var started = ContinuousClock.now
        #expect(throws: ProcessRunError.timedOut("sleep", after: .milliseconds(300))) { try runner.run("sleep", ["30"], timeout: .milliseconds(300)) }
        #expect(ContinuousClock.now - started < .seconds(10))
        // One that ignores SIGTERM is killed after killAfter.
        started = ContinuousClock.now
        #expect(throws: ProcessRunError.self) { try runner.run("sh", ["-c", "trap '' TERM; sleep 30"], timeout: .milliseconds(200)) }
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(ProcessRunError.timedOut("mkfs.ext4", after: .seconds(1)).exitStatus == .timedOut)
    }

    @Test("mkfs and fsck see no descriptor of ours but 0–2, and the default signal dispositions")
    func childIsolation() throws {
        // Descriptors without close-on-exec, as a library might leave them.
        let leaked = open("/dev/null", O_RDONLY)
        defer { close(leaked) }
        let descriptors = try SystemCommandRunner().run("sh", ["-c", "ls /proc/self/fd"])
        let open = descriptors.output.split(separator: "\n").compactMap { Int($0) }.filter { $0 > 2 }
        // `ls` itself opens one to read the directory.
        #expect(open.count <= 1, "\(descriptors.output)")
        let mask = try SystemCommandRunner().run("sh", ["-c", "grep -E '^(SigBlk|SigIgn)' /proc/self/status"])
        #expect(mask.output.contains("SigBlk:\t0000000000000000"), "\(mask.output)")
    }

    @Test("atomic replace keeps mode and owner, leaves no temporary file, and removes stale ones")
    func atomicReplace() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/fstab"
        try "old\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o640)
        try "stale".write(toFile: root + "/.fstab.snapmount-AbCdEf", atomically: true, encoding: .utf8)
        try AtomicFile.replace(path, with: Array("new\n".utf8))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new\n")
        var status = stat()
        stat(path, &status)
        #expect(status.st_mode & 0o777 == 0o640)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["fstab"])
        #expect(throws: SystemCallError.self) { try AtomicFile.replace(root + "/missing/fstab", with: []) }
    }

    @Test("a reader of a file being replaced again and again sees one whole id or the other, never a part (snap.txt)")
    func readersNeverSeePartialFile() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/snap.txt"
        let ids = ["snap-0123456789abcdef0\n", "snap-0fedcba9876543210\n"]
        try AtomicFile.replace(path, with: Array(ids[0].utf8))
        let done = NSCondition()
        nonisolated(unsafe) var finished = false
        Thread.detachNewThread {
            for round in 1...400 { try? AtomicFile.replace(path, with: Array(ids[round % 2].utf8)) }
            done.withLock { finished = true }
        }
        var reads = 0
        var unexpected: [String] = []
        while !done.withLock({ finished }) {
            let text = String(decoding: try readFile(path, limit: 4096), as: UTF8.self)
            if !ids.contains(text) { unexpected.append(text) }
            reads += 1
        }
        #expect(unexpected.isEmpty, "partial reads: \(unexpected.prefix(3))")
        #expect(reads > 100, "only \(reads) reads while the file was replaced")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == ids[0])
    }

    @Test("a lock is exclusive, bounded, and seen as held from outside")
    func lock() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/state/lock"
        #expect(!FileLock.isHeld(path))
        let first = try #require(try FileLock.acquire(path, timeout: .seconds(1)))
        #expect(FileLock.isHeld(path))
        let started = ContinuousClock.now
        #expect(try FileLock.acquire(path, timeout: .milliseconds(300)) == nil)
        #expect(ContinuousClock.now - started < .seconds(5))
        withExtendedLifetime(first) {}
    }

    @Test("readFile refuses more than its limit and names the errno")
    func readLimit() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try String(repeating: "x", count: 100).write(toFile: root + "/f", atomically: true, encoding: .utf8)
        #expect(try readFile(root + "/f", limit: 100).count == 100)
        #expect(throws: SystemCallError("read", "\(root)/f (larger than 99 bytes)", errno: EFBIG)) { try readFile(root + "/f", limit: 99) }
        #expect(throws: SystemCallError("open", root + "/none", errno: ENOENT)) { try readFile(root + "/none", limit: 99) }
    }
}
