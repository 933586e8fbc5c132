import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The switch on a real filesystem (a tmpfs standing in for the release volume): what is in
/// use before and after, the previous tree, the journal that finishes an interrupted switch.
/// The same switch over ssh, with a reader: PushTests.
@Suite("Switching the release tree on a real filesystem", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
struct ReleaseTreeTests {
    static let a = PushTests.withManifest(["VERSION": "a\n", "app/x.py": "a\n", "app/only-a.py": "a\n", "app/shared.py": "both\n"],
                                          "rel-20261201T100000Z-aaaaaaaa")
    static let b = PushTests.withManifest(["VERSION": "b\n", "app/x.py": "b\n", "docs/new.txt": "b\n", "app/shared.py": "both\n"],
                                          "rel-20261202T100000Z-bbbbbbbb")

    /// A tmpfs mounted at a new directory, release A in use and B staged (its unchanged file
    /// hard-linked, as rsync --link-dest leaves it), unmounted however the test ends.
    static func withVolume(_ body: (String, ReleaseTree) throws -> Void) throws {
        let mountPoint = "/var/tmp/snapmount-tree-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        try Images.sh("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mountPoint])
        defer {
            try? Images.sh("umount", ["-R", "-l", mountPoint])
            try? FileManager.default.removeItem(atPath: mountPoint)
        }
        try PushTests.write(a, in: mountPoint)
        let staged = mountPoint + "/.snapmount/staging"
        try PushTests.write(b.filter { $0.key != "app/shared.py" }, in: staged)
        try FileManager.default.linkItem(atPath: mountPoint + "/app/shared.py", toPath: staged + "/app/shared.py")
        try FileManager.default.createSymbolicLink(atPath: staged + "/current", withDestinationPath: "app/x.py")
        try FileManager.default.setAttributes([.posixPermissions: 0o750, .modificationDate: Date(timeIntervalSince1970: 1_700_000_000)],
                                              ofItemAtPath: staged + "/docs")
        let tree = ReleaseTree(mountPoint: mountPoint)
        tree.grace = .milliseconds(50)
        try body(mountPoint, tree)
    }

    static func mounts(at path: String) throws -> Int {
        try SystemMounter().mounts().filter { $0.mountPoint == path }.count
    }

    static func inode(_ path: String) throws -> UInt64 {
        try #require((FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? NSNumber)?.uint64Value)
    }

    @Test("to the staged tree and back: whole each time, the one it left kept as the previous tree; files hard-linked, not copied; directories keep owner, mode and time; a symbolic link stays one")
    func forwardAndBack() throws {
        guard requireRoot("release tree switch") else { return }
        try Self.withVolume { mountPoint, switcher in
            let shared = try Self.inode(mountPoint + "/app/shared.py")
            let changed = try Self.inode(mountPoint + "/.snapmount/staging/app/x.py")

            try switcher.switchTo(.staged)
            #expect(try releaseTree(mountPoint).filter { $0.key != "current" } == Self.b)
            #expect(try tree(mountPoint + "/.snapmount/previous") == Self.a)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mountPoint + "/current") == "app/x.py")
            #expect(try Self.inode(mountPoint + "/app/shared.py") == shared && Self.inode(mountPoint + "/app/x.py") == changed, "the same files, linked")
            let docs = try FileManager.default.attributesOfItem(atPath: mountPoint + "/docs")
            #expect((docs[.posixPermissions] as? NSNumber)?.intValue == 0o750)
            #expect((docs[.modificationDate] as? Date)?.timeIntervalSince1970 == 1_700_000_000)
            #expect(!FileManager.default.fileExists(atPath: mountPoint + "/.snapmount/staging"))
            #expect(!FileManager.default.fileExists(atPath: mountPoint + "/.snapmount/switch.json"))
            #expect(try Self.mounts(at: mountPoint) == 1, "the bind mount is gone again")
            #expect(ReleaseManifest.load(in: mountPoint)?.id.text == "rel-20261202T100000Z-bbbbbbbb")

            try switcher.switchTo(.previous)
            #expect(try releaseTree(mountPoint) == Self.a)
            #expect(try tree(mountPoint + "/.snapmount/previous").filter { $0.key != "current" } == Self.b)
            #expect(try Self.mounts(at: mountPoint) == 1)

            // Getting ready for the next push empties what the switches retired.
            #expect(try switcher.prepare() == nil)
            #expect(try tree(mountPoint + "/.snapmount/staging").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: mountPoint + "/.snapmount/retired"))
            #expect(try releaseTree(mountPoint) == Self.a)

            // Forward again with a previous tree there: it is set aside, the one in use becomes previous.
            let c = PushTests.withManifest(["VERSION": "c\n"], "rel-20261203T100000Z-cccccccc")
            try PushTests.write(c, in: mountPoint + "/.snapmount/staging")
            try switcher.switchTo(.staged)
            #expect(try releaseTree(mountPoint) == c)
            #expect(try tree(mountPoint + "/.snapmount/previous") == Self.a)
            #expect(try tree(mountPoint + "/.snapmount/retired/previous").filter { $0.key != "current" } == Self.b)
        }
    }

    @Test("a switch that runs out of room half way (no inodes left for its directories) is undone: the old release whole at the root, no bind mount, no journal")
    func failureUndone() throws {
        guard requireRoot("release tree undo") else { return }
        try Self.withVolume { mountPoint, switcher in
            // Three inodes to spare: the journal and the old tree's new place fit, the new tree's directories do not.
            var info = statvfs()
            #expect(statvfs(mountPoint, &info) == 0)
            let used = UInt64(info.f_files - info.f_ffree)
            try Images.sh("mount", ["-o", "remount,nr_inodes=\(used + 3)", mountPoint])
            #expect(throws: ReleaseTreeError.self) { try switcher.switchTo(.staged) }
            #expect(try releaseTree(mountPoint) == Self.a)
            #expect(try Self.mounts(at: mountPoint) == 1)
            #expect(!FileManager.default.fileExists(atPath: mountPoint + "/.snapmount/switch.json"))
            #expect(!FileManager.default.fileExists(atPath: mountPoint + "/.snapmount/outgoing"))
            #expect(switcher.manifest(of: .staged) != nil, "the staged tree is still there to try again")
        }
    }

    @Test("a journal that does not parse, or an old tree set aside that no journal accounts for, is refused (65), never guessed at")
    func unaccountedRefused() throws {
        guard requireRoot("release tree unaccounted") else { return }
        try Self.withVolume { mountPoint, switcher in
            let meta = mountPoint + "/.snapmount"
            try "{\"side\":".write(toFile: meta + "/switch.json", atomically: true, encoding: .utf8)
            #expect(throws: ReleaseTreeError.unaccounted(meta + "/switch.json")) { try switcher.switchTo(.staged) }
            #expect(throws: ReleaseTreeError.unaccounted(meta + "/switch.json")) { try switcher.finishInterrupted() }
            try FileManager.default.removeItem(atPath: meta + "/switch.json")
            try FileManager.default.createDirectory(atPath: meta + "/outgoing/app", withIntermediateDirectories: true)
            #expect(throws: ReleaseTreeError.unaccounted(meta + "/outgoing")) { try switcher.switchTo(.staged) }
            #expect(ExitStatus(for: ReleaseTreeError.unaccounted("/x")) == .dataRefused)
            #expect(try releaseTree(mountPoint) == Self.a)
            #expect(FileManager.default.fileExists(atPath: meta + "/outgoing/app"))
        }
    }

    @Test("a staged tree without its manifest (a sync that did not finish) is refused with 65; nothing in use changes")
    func incompleteRefused() throws {
        guard requireRoot("release tree incomplete") else { return }
        try Self.withVolume { mountPoint, switcher in
            try FileManager.default.removeItem(atPath: mountPoint + "/.snapmount/staging/" + ReleaseManifest.relativePath)
            #expect(throws: ReleaseTreeError.incomplete(mountPoint + "/.snapmount/staging")) { try switcher.switchTo(.staged) }
            #expect(ExitStatus(for: ReleaseTreeError.incomplete("/x")) == .dataRefused)
            #expect(try releaseTree(mountPoint) == Self.a)
            #expect(try Self.mounts(at: mountPoint) == 1)
            let plain = "/var/tmp/snapmount-tree-plain-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: plain) }
            #expect(throws: ReleaseTreeError.notMounted(plain)) { try ReleaseTree(mountPoint: plain).switchTo(.staged) }
        }
    }

    @Test("a switch killed while moving the old tree aside (its bind mount still up), or while linking the new one in (after a reboot), is finished by the next prepare")
    func interruptedSwitchFinished() throws {
        guard requireRoot("release tree resume") else { return }
        // Killed in the first phase: the manifest and part of the old tree moved aside, the staged tree shown over it.
        try Self.withVolume { mountPoint, switcher in
            let meta = mountPoint + "/.snapmount"
            try FileManager.default.createDirectory(atPath: meta + "/outgoing/.snapmount", withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: meta + "/release.json", toPath: meta + "/outgoing/.snapmount/release.json")
            try FileManager.default.moveItem(atPath: mountPoint + "/VERSION", toPath: meta + "/outgoing/VERSION")
            try #"{"side":"staging","phase":"out"}"#.write(toFile: meta + "/switch.json", atomically: true, encoding: .utf8)
            try Images.sh("mount", ["--bind", meta + "/staging", mountPoint])
            #expect(try Self.mounts(at: mountPoint) == 2)

            #expect(try switcher.prepare() == .staged)
            #expect(try releaseTree(mountPoint).filter { $0.key != "current" } == Self.b)
            #expect(try tree(meta + "/previous") == Self.a)
            #expect(try Self.mounts(at: mountPoint) == 1)
            #expect(!FileManager.default.fileExists(atPath: meta + "/switch.json"))
        }
        // Killed in the second phase, then rebooted: the old tree all aside, part of the new one linked in, no bind mount.
        try Self.withVolume { mountPoint, switcher in
            let meta = mountPoint + "/.snapmount"
            try FileManager.default.createDirectory(atPath: meta + "/outgoing/.snapmount", withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: meta + "/release.json", toPath: meta + "/outgoing/.snapmount/release.json")
            for name in ["VERSION", "app"] { try FileManager.default.moveItem(atPath: mountPoint + "/" + name, toPath: meta + "/outgoing/" + name) }
            try FileManager.default.linkItem(atPath: meta + "/staging/VERSION", toPath: mountPoint + "/VERSION")
            try #"{"side":"staging","phase":"in"}"#.write(toFile: meta + "/switch.json", atomically: true, encoding: .utf8)

            #expect(try switcher.prepare() == .staged)
            #expect(try releaseTree(mountPoint).filter { $0.key != "current" } == Self.b)
            #expect(try tree(meta + "/previous") == Self.a)
            #expect(try Self.mounts(at: mountPoint) == 1)
        }
    }

    @Test("snapmount switch's flow: a health check that fails puts the previous release back and activates it again; the report says so, and reads back from its JSON line")
    func healthFailureGoesBack() throws {
        guard requireRoot("switch flow") else { return }
        try Self.withVolume { mountPoint, switcher in
            let state = mountPoint + "-state"
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: state) }
            var activation = Activation()
            activation.command = try HostCommand(parsing: "/bin/sh -c 'cat \(mountPoint)/VERSION >> \(state)/activations'")
            // Passes only on release A: B fails until the bound ends it.
            activation.healthCheck = try HealthCheck(parsing: "/bin/grep -q a \(mountPoint)/VERSION")
            activation.healthTimeout = .seconds(2)
            let host = HostEdges(devices: TableDevices(), prober: TableProber(), runner: SystemCommandRunner(), mounter: SystemMounter(),
                                 lockDirectory: state, recordDirectory: state)
            let flow = SwitchFlow(mountPoint: mountPoint, side: .staged, activation: activation, host: host, clock: SystemClock(),
                                  logger: quietLogger, tree: switcher)
            flow.expected = ReleaseID("rel-20261202T100000Z-bbbbbbbb")
            let report = try flow.run()
            #expect(report.result == .rolledBack)
            #expect(report.reached == .activated)
            #expect(report.before?.text == "rel-20261201T100000Z-aaaaaaaa" && report.after == report.before)
            #expect(report.error?.contains("did not pass within 2s") == true && report.error?.contains("switched back to rel-20261201T100000Z-aaaaaaaa") == true,
                    "\(report.error ?? "")")
            #expect(try releaseTree(mountPoint) == Self.a)
            #expect(try String(contentsOfFile: state + "/activations", encoding: .utf8) == "b\na\n")
            #expect(SwitchReport(output: "a log line\n" + report.json.text + "\n") == report)
            #expect(SwitchError.failed(report).exitStatus == .unavailable)

            // A first release from an image has no manifest: going back still works, to that tree.
            try FileManager.default.removeItem(atPath: mountPoint + "/" + ReleaseManifest.relativePath)
            try FileManager.default.createDirectory(atPath: mountPoint + "/.snapmount/staging", withIntermediateDirectories: true)
            try PushTests.write(Self.b, in: mountPoint + "/.snapmount/staging")
            let again = SwitchFlow(mountPoint: mountPoint, side: .staged, activation: activation, host: host, clock: SystemClock(),
                                   logger: quietLogger, tree: switcher)
            let unnamed = try again.run()
            #expect(unnamed.result == .rolledBack && unnamed.before == nil && unnamed.after == nil, "\(unnamed)")
            #expect(try releaseTree(mountPoint) == Self.a.filter { $0.key != ReleaseManifest.relativePath })

            // The staged tree is not the release the caller sent: refused, nothing switched.
            try FileManager.default.createDirectory(atPath: mountPoint + "/.snapmount/staging", withIntermediateDirectories: true)
            try PushTests.write(Self.b, in: mountPoint + "/.snapmount/staging")
            flow.expected = ReleaseID("rel-20261203T100000Z-cccccccc")
            #expect(throws: SwitchError.notExpected(staged: ReleaseID("rel-20261202T100000Z-bbbbbbbb"), expected: ReleaseID("rel-20261203T100000Z-cccccccc")!)) {
                try flow.run()
            }
            #expect(try releaseTree(mountPoint) == Self.a.filter { $0.key != ReleaseManifest.relativePath })
            #expect(flow.unchanged(SwitchError.lockTimeout("/x")).result == .unchanged)
        }
    }
}
