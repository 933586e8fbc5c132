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

/// The debug `snapmount` binary beside this test bundle: its failpoints are compiled in.
let debugBinary: String = {
    let bundle = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (bundle as NSString).deletingLastPathComponent + "/snapmount"
}()

/// Runs the binary as systemd would (options instead of a file), returning the raw wait status.
func runBinary(_ host: HostHarness, failpoint: String?) throws -> (status: Int32, signaled: Bool, output: String) {
    let arguments = ["run", "--source", host.cloud.sourceURL, "--mount-point", host.mountPoint, "--fstab", host.fstab,
                         "--device-timeout", "10s", "--config", host.root + "/empty.conf"]
    var environment = host.environment
    environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    environment["AWS_MAX_ATTEMPTS"] = "3"
    if let failpoint { environment["SNAPMOUNT_FAILPOINT"] = failpoint }
    _ = FileManager.default.createFile(atPath: host.root + "/empty.conf", contents: Data())
    let result = try Child.run(debugBinary, arguments, environment: environment, merged: true)
    TestLog.write(result.stdout)
    return (result.status, result.signaled, result.stdout)
}

/// Kill the agent with SIGKILL at every step boundary of DESIGN.md §2 — and between the
/// fstab's temporary file and its rename — then run it again: it must converge.
@Suite("Crash matrix", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
struct CrashTests {
    static let failpoints = [
        "after-lock", "after-snapshot", "after-create-volume", "after-volume", "after-attach-call", "after-attach",
        "after-device", "after-filesystem", "fstab-before-rename", "after-fstab", "after-mount",
        // A blank snapshot: killed with the format marker written, and killed (with mkfs) mid-format.
        "after-format-marker", "during-mkfs",
    ]

    @Test("SIGKILL at each step, then a rerun: mounted, one volume, one fstab entry, the rest of fstab unchanged",
          arguments: failpoints)
    func killAndRerun(failpoint: String) async throws {
        guard requireRoot("crash matrix (\(failpoint))") else { return }
        let formats = failpoint.contains("format") || failpoint.contains("mkfs")
        try await withHost(image: formats ? try Images.blank() : try Images.release()) { host in
            let first = try await onThread { try runBinary(host, failpoint: failpoint) }
            let killed = first.signaled && first.status == SIGKILL
            #expect(killed, "not killed at \(failpoint): \(first.output)")
            let afterKill = await host.cloud.state.volumeTable().count
            let second = try await onThread { try runBinary(host, failpoint: nil) }
            let rerunOK = second.status == 0 && !second.signaled
            #expect(rerunOK, "rerun after \(failpoint): \(second.output)")
            let mounted = host.isMounted
            let volumes = await host.cloud.state.volumeTable().count
            let fstab = try host.fstabText()
            let fstabOK = fstab.hasPrefix(HostHarness.initialFstab + "\n") && fstab.components(separatedBy: "LABEL=code_release").count == 2
                && fstab.components(separatedBy: "\n").filter { !$0.isEmpty }.count == HostHarness.initialFstab.components(separatedBy: "\n").count + 1
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: host.root))?.filter { $0.contains(".snapmount-") } ?? []
            #expect(mounted)
            #expect(volumes == 1)
            #expect(fstabOK)
            #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
            ReliabilityReport.record("crash-matrix", [
                "failpoint": failpoint, "killed": killed ? "yes" : "no", "volumesAfterKill": String(afterKill),
                "rerun": rerunOK ? "exit 0" : "exit \(second.status)", "mounted": mounted ? "yes" : "no", "volumes": String(volumes),
                "fstab": fstabOK ? "original + 1 entry" : "WRONG", "temporaryFiles": String(leftovers.count),
                "pass": killed && rerunOK && mounted && volumes == 1 && fstabOK && leftovers.isEmpty ? "yes" : "no",
            ])
        }
    }
}
