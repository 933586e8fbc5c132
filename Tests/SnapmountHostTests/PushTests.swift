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

/// Instances for `snapmount push` on this machine: one real sshd per loopback address
/// (127.0.0.N), each in a mount namespace of its own where the release directory is that
/// instance's own directory (bind-mounted, so a mount point) — or not mounted at all. Its
/// own host key, an authorized key, a known_hosts file: nothing of the machine's ssh set-up
/// is used or changed.
final class SSHFleet: @unchecked Sendable {
    let root: String
    let port: Int
    /// The release here (the release server's side), a mount point.
    var release: String { root + "/release" }
    /// Where each instance's snapmount state lives (bind-mounted per instance).
    var state: String { root + "/state" }
    var sshConfig: String { root + "/ssh_config" }
    /// Where push keeps the instances' host keys (its --known-hosts).
    var knownHosts: String { root + "/push_known_hosts" }
    private var daemons: [(address: String, child: Child)] = []
    private var volumes: [String] = []

    init() throws {
        root = "/var/tmp/snapmount-push-\(UUID().uuidString.prefix(8))"
        port = Int.random(in: 20000..<40000)
        for directory in [release, state, root + "/keys"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try Images.sh("mount", ["--bind", release, release])
        try Images.sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", root + "/keys/host", "-C", "snapmount-test-host"])
        try Images.sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", root + "/keys/client", "-C", "snapmount-test-client"])
        try FileManager.default.copyItem(atPath: root + "/keys/client.pub", toPath: root + "/keys/authorized_keys")
        // sshd's privilege separation directory (Debian's unit makes it; no unit runs here).
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        try """
            Host *
              Port \(port)
              User root
              IdentityFile \(root)/keys/client
              IdentitiesOnly yes
              UserKnownHostsFile \(root)/known_hosts
              StrictHostKeyChecking yes
              GlobalKnownHostsFile /dev/null
              LogLevel ERROR

            """.write(toFile: sshConfig, atomically: true, encoding: .utf8)
        try "".write(toFile: root + "/known_hosts", atomically: true, encoding: .utf8)
    }

    func directory(_ address: String) -> String { root + "/hosts/" + address }
    func stateDirectory(_ address: String) -> String { root + "/hosts/" + address + "-state" }

    /// A host key of its own (and, with `signedFor`, a certificate from this fleet's CA naming
    /// that principal): the path of its private key.
    func hostKey(_ name: String, signedFor principal: String? = nil) throws -> String {
        let key = root + "/keys/" + name
        try Images.sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key, "-C", name])
        if let principal {
            if !FileManager.default.fileExists(atPath: root + "/keys/ca") {
                try Images.sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", root + "/keys/ca", "-C", "snapmount-test-ca"])
            }
            try Images.sh("ssh-keygen", ["-q", "-s", root + "/keys/ca", "-I", name, "-h", "-n", principal, key + ".pub"])
        }
        return key
    }

    /// Stops the sshd on `address`.
    func stop(_ address: String) {
        for daemon in daemons where daemon.address == address {
            daemon.child.signal(SIGTERM)
            daemon.child.wait()
        }
        daemons.removeAll { $0.address == address }
    }

    /// Starts an sshd on `address`; `mounted`: its release directory is a mount point.
    /// `capacity`: its release is a filesystem of that size (`mount -t tmpfs -o size=`), which
    /// a large enough release fills. `configuration`: lines of its snapmount.conf besides the
    /// source and the mount point.
    func start(_ address: String, mounted: Bool, files: [String: String], hostKey: String? = nil, capacity: String? = nil,
               configuration lines: [String] = []) throws {
        let hostKey = hostKey ?? root + "/keys/host"
        for directory in [directory(address), stateDirectory(address)] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        if let capacity, !volumes.contains(directory(address)) {
            try Images.sh("mount", ["-t", "tmpfs", "-o", "size=\(capacity)", "tmpfs", directory(address)])
            volumes.append(directory(address))
        }
        for (name, text) in files {
            let path = directory(address) + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            // The earlier release's files are older: rsync compares size and time.
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -7200)], ofItemAtPath: path)
        }
        // The instance's own snapmount reads this (push runs it with SNAPMOUNT_CONFIG).
        try (["source = http://127.0.0.1:9/snap.txt", "mount-point = \(release)"] + lines).joined(separator: "\n")
            .appending("\n").write(toFile: stateDirectory(address) + "/snapmount.conf", atomically: true, encoding: .utf8)
        let configuration = root + "/sshd-\(address).conf"
        try """
            ListenAddress \(address):\(port)
            HostKey \(hostKey)
            \(FileManager.default.fileExists(atPath: hostKey + "-cert.pub") ? "HostCertificate \(hostKey)-cert.pub" : "")
            AuthorizedKeysFile \(root)/keys/authorized_keys
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            PidFile none
            LogLevel ERROR

            """.write(toFile: configuration, atomically: true, encoding: .utf8)
        let release = mounted ? "mount --bind \(directory(address)) \(self.release)" : "umount \(self.release)"
        let script = "\(release) && mount --bind \(stateDirectory(address)) \(state) && exec /usr/sbin/sshd -D -e -f \(configuration)"
        daemons.append((address, try Child("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script],
                                           environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"])))
        let key = try String(contentsOfFile: hostKey + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: root + "/known_hosts"))
        handle.seekToEndOfFile()
        handle.write("[\(address)]:\(port) \(key)\n".data(using: .utf8)!)
        try handle.close()
        // Ready when it accepts connections.
        for _ in 0..<100 {
            if canConnect(address, port) { return }
            usleep(50_000)
        }
        throw HarnessError.command("sshd on \(address):\(port) did not start")
    }

    func stop() {
        for daemon in daemons {
            daemon.child.signal(SIGTERM)
            daemon.child.wait()
        }
        try? Images.sh("umount", ["-l", release])
        for volume in volumes { try? Images.sh("umount", ["-l", volume]) }
        try? FileManager.default.removeItem(atPath: root)
    }
}

private func canConnect(_ address: String, _ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var socketAddress = sockaddr_in()
    socketAddress.sin_family = sa_family_t(AF_INET)
    socketAddress.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, address, &socketAddress.sin_addr)
    return withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

@Suite("Push over real ssh and rsync", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
struct PushTests {
    static let release = ["VERSION": "release 44\n", "app/main.py": "print('release 44')\n", "app/static/logo.txt": "44\n"]
    static let old = ["VERSION": "release 43\n", "app/main.py": "print('release 43')\n", "app/removed.py": "gone in 44\n"]
    static let identity = "rel-20261201T100000Z-44444444"
    /// The release as it arrives: its files and its manifest.
    static var pushed: [String: String] {
        var files = release
        files[ReleaseManifest.relativePath] = String(decoding: ReleaseManifest(id: ReleaseID(identity)!, release: "release",
                                                                                createdAt: "2026-12-01T10:00:00Z").bytes, as: UTF8.self)
        return files
    }

    @Test("a fleet: pushed where mounted, booting left alone, a host that appears during the push pushed too, the unmounted and the unreachable named")
    func fleet() async throws {
        guard requireRoot("push fleet") else { return }
        try await Self.withFleet { fleet, cloud in
            for (name, text) in Self.release {
                let path = fleet.release + "/" + name
                try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try text.write(toFile: path, atomically: true, encoding: .utf8)
            }
            let published = fleet.root + "/snap.txt"
            try (releaseSnapshot + "\n").write(toFile: published, atomically: true, encoding: .utf8)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)

            // (address, group, lifecycle, sshd: mounted / not mounted / none)
            let plan: [(String, String, String, Bool?)] = [
                ("127.0.0.2", "web", "InService", true), ("127.0.0.3", "web", "InService", true), ("127.0.0.4", "api", "InService", true),
                ("127.0.0.5", "web", "Pending", false), ("127.0.0.6", "web", "InService", false), ("127.0.0.7", "web", "InService", nil),
                ("127.0.0.9", "web", "Terminating:Wait", true),
            ]
            var volumes: [String: String] = [:]
            for (address, group, lifecycle, sshd) in plan {
                let id = instanceID(address)
                await cloud.state.addInstance(DevInstance(id: id, availabilityZone: "eu-west-1a", roleName: nil, privateAddress: address,
                                                          group: group, lifecycleState: lifecycle))
                if sshd == true { volumes[address] = await cloud.state.addReleaseVolume(instance: id, snapshot: "snap-0aaaaaaaaaaaaaaa1", mountPoint: fleet.release) }
                if let sshd { try fleet.start(address, mounted: sshd, files: Self.old) }
            }
            // 127.0.0.8 launches while the first round runs: listed only by the second listing.
            try fleet.start("127.0.0.8", mounted: true, files: Self.old)
            let state = cloud.state
            let volume8 = await state.addReleaseVolume(instance: instanceID("127.0.0.8"), snapshot: "snap-0aaaaaaaaaaaaaaa1", mountPoint: fleet.release)
            let scaleOut = Task {
                while await !state.callLog().contains(where: { $0.action == "DescribeAutoScalingGroups" }) {
                    try await Task.sleep(for: .milliseconds(20))
                }
                await state.addInstance(DevInstance(id: instanceID("127.0.0.8"), availabilityZone: "eu-west-1a", roleName: nil,
                                                    privateAddress: "127.0.0.8", group: "web", lifecycleState: "InService"))
            }

            let (rows, error) = try await Self.push(fleet, cloud) {
                $0.groups = ["web", "api"]
                $0.parallel = 3
            }
            _ = await scaleOut.result
            let byAddress = Dictionary(uniqueKeysWithValues: rows.map { ($0.address, $0) })
            print(PushFlow.table(rows))

            // The failures: named, exit 69; nothing else counted as failed.
            let failure = try #require(error as? PushError)
            #expect(failure.exitStatus == .unavailable)
            #expect(failure.description.contains("2 of 7 hosts"), "\(failure)")
            #expect(failure.description.contains("127.0.0.6") && failure.description.contains("not a mount point"), "\(failure)")
            #expect(failure.description.contains("127.0.0.7") && failure.description.contains("unreachable"), "\(failure)")
            #expect(byAddress["127.0.0.5"]?.outcome == .booting)
            #expect(byAddress["127.0.0.9"] == nil, "a terminating instance is not pushed to")

            // The pushed: the new files exactly (removed.py deleted), the manifest, and the volume's identity.
            let held = Dictionary(uniqueKeysWithValues: await cloud.state.volumeTable().map { ($0.id, $0.tags[ReleaseTags.releaseID]) })
            for address in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.8"] {
                let outcome = try #require(byAddress[address]?.outcome, "\(address)")
                guard case .pushed(let summary, recorded: true) = outcome else {
                    Issue.record("\(address): \(outcome)")
                    continue
                }
                #expect(summary.bytesSent > 0 && summary.filesTransferred >= 2)
                #expect(try releaseTree(fleet.directory(address)) == Self.pushed, "\(address)")
                #expect(try tree(fleet.directory(address) + "/.snapmount/previous") == Self.old, "\(address): the release it had, to go back to")
                let volume = try #require(address == "127.0.0.8" ? volume8 : volumes[address])
                #expect(held[volume] == .some(Self.identity), "\(address)")
            }
            // Not touched where the guard said no.
            for address in ["127.0.0.5", "127.0.0.6"] {
                #expect(try tree(fleet.directory(address)) == Self.old, "\(address)")
            }
            let listings = await cloud.state.callLog().filter { $0.action == "DescribeAutoScalingGroups" }.count
            #expect(listings >= 3, "listed until stable: a first listing, one that found 127.0.0.8, one that found nothing new")
        }
    }

    @Test("dry run: the guard and rsync -n run, nothing is sent or recorded; a release not mounted here is refused (78)")
    func dryRunAndSourceGuard() async throws {
        guard requireRoot("push dry run") else { return }
        try await Self.withFleet { fleet, cloud in
            try "release 44\n".write(toFile: fleet.release + "/VERSION", atomically: true, encoding: .utf8)
            let published = fleet.root + "/snap.txt"
            try (releaseSnapshot + "\n").write(toFile: published, atomically: true, encoding: .utf8)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            await cloud.state.addInstance(DevInstance(id: instanceID("127.0.0.2"), availabilityZone: "eu-west-1a", roleName: nil,
                                                      privateAddress: "127.0.0.2", group: "web"))
            await cloud.state.addReleaseVolume(instance: instanceID("127.0.0.2"), snapshot: releaseSnapshot, mountPoint: fleet.release)
            try fleet.start("127.0.0.2", mounted: true, files: Self.old)
            let (rows, error) = try await Self.push(fleet, cloud, mode: .check)
            #expect(error == nil, "\(String(describing: error))")
            let outcome = try #require(rows.first?.outcome)
            guard case .wouldPush(let summary) = outcome else {
                Issue.record("\(outcome)")
                return
            }
            #expect(summary.filesTransferred >= 1)
            #expect(try tree(fleet.directory("127.0.0.2")) == Self.old)
            #expect(await cloud.state.callLog().filter { $0.action == "CreateTags" }.isEmpty, "a dry run marks nothing")

            // The release directory here unmounted: an empty directory is never pushed with --delete.
            let unmounted = try AbsolutePath(parsing: fleet.root + "/hosts")
            let (_, refused) = try await Self.push(fleet, cloud, mode: .check) { $0.directory = unmounted }
            #expect(refused as? PushError == .sourceNotMounted(fleet.root + "/hosts"))
            #expect(ExitStatus(for: PushError.sourceNotMounted("/x")) == .configuration)
        }
    }
}

extension PushTests {
    /// A fleet of sshds and a DevCloud for one test, both stopped however it ends.
    static func withFleet(_ body: (SSHFleet, DevCloud) async throws -> Void) async throws {
        let fleet = try SSHFleet()
        defer { fleet.stop() }
        let cloud = try await DevCloud.start(fastSettings())
        do {
            try await body(fleet, cloud)
        } catch {
            await stopCloud(cloud)
            throw error
        }
        await stopCloud(cloud)
    }

    /// One push of the staged release (published in `<root>/snap.txt`) to the group `web`, as
    /// the release server makes it; the rows, and the error it ended with.
    static func push(_ fleet: SSHFleet, _ cloud: DevCloud, mode: FlowMode = .apply, ssh extra: [String] = [],
                     configure: (inout PushOptions) -> Void = { _ in }) async throws -> (rows: [HostReport], error: (any Error)?) {
        var options = PushOptions(groups: ["web"], directory: try AbsolutePath(parsing: fleet.release),
                                  published: try PublishTarget(parsing: fleet.root + "/snap.txt"))
        options.ssh = ["ssh", "-F", fleet.sshConfig] + extra
        options.knownHosts = fleet.knownHosts
        options.lockDirectory = fleet.root
        // Each instance's snapmount: this build's, with that instance's configuration and state.
        options.remoteSnapmount = ["env", "SNAPMOUNT_CONFIG=\(fleet.state)/snapmount.conf", "SNAPMOUNT_STATE_DIR=\(fleet.state)", snapmountBinary.path]
        options.retryDelay = .milliseconds(200)
        configure(&options)
        let frozen = options
        let environment = try AgentEnvironment(cloud.environment)
        return try await onThread { () -> ([HostReport], (any Error)?) in
            let flow = PushFlow(options: frozen, mode: mode, clock: SystemClock(), logger: quietLogger, runner: SystemCommandRunner(),
                                mounter: SystemMounter()) {
                try CloudSession.connect(environment: environment, logger: quietLogger, tuning: fastTuning())
            }
            do {
                return (try flow.run(), nil)
            } catch {
                return (flow.lastReports, error)
            }
        }
    }

    static func join(_ cloud: DevCloud, _ fleet: SSHFleet, _ id: String, _ address: String) async {
        await cloud.state.addInstance(DevInstance(id: id, availabilityZone: "eu-west-1a", roleName: nil, privateAddress: address, group: "web"))
        await cloud.state.addReleaseVolume(instance: id, snapshot: releaseSnapshot, mountPoint: fleet.release)
    }

    @Test("host keys by instance id: a new instance accepted on first contact, a changed key for it refused, its address reused by another instance no conflict, a CA-signed key accepted without any known key")
    func hostKeyPolicy() async throws {
        guard requireRoot("push host keys") else { return }
        try await Self.withFleet { fleet, cloud in
            try (releaseSnapshot + "\n").write(toFile: fleet.root + "/snap.txt", atomically: true, encoding: .utf8)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            let first = "i-0000000000000a002", second = "i-0000000000000b002"
            await Self.join(cloud, fleet, first, "127.0.0.2")
            try fleet.start("127.0.0.2", mounted: true, files: Self.old, hostKey: try fleet.hostKey("first"))

            // 1. A new instance, nothing known: accepted, and remembered by its instance id.
            let (accepted, acceptedError) = try await Self.push(fleet, cloud)
            #expect(acceptedError == nil, "\(String(describing: acceptedError))")
            #expect(accepted.first?.outcome.label == "pushed", "\(accepted)")
            let known = try String(contentsOfFile: fleet.knownHosts, encoding: .utf8)
            #expect(known.hasPrefix(first + " ssh-ed25519 "), "\(known)")
            #expect(!known.contains("127.0.0.2"), "keyed by instance, not by address")

            // 2. The same instance presents another key: refused, and the message says what to do.
            fleet.stop("127.0.0.2")
            try fleet.start("127.0.0.2", mounted: true, files: Self.old, hostKey: try fleet.hostKey("impostor"))
            let (_, refusedError) = try await Self.push(fleet, cloud)
            let refused = try #require(refusedError as? PushError)
            #expect(refused.description.contains("refused the host key") && refused.description.contains("ssh-keygen -R \(first)"), "\(refused)")

            // 3. The instance is replaced; its successor gets the same address (and its own key): no conflict.
            await cloud.state.setLifecycleState(first, "Terminated")
            await Self.join(cloud, fleet, second, "127.0.0.2")
            let (reused, reusedError) = try await Self.push(fleet, cloud)
            #expect(reusedError == nil, "\(String(describing: reusedError))")
            #expect(reused.first { $0.member.instance.text == second }?.outcome.label == "pushed", "\(reused)")

            // 4. A host certificate from the fleet's CA, for the instance id: accepted with no key
            //    of its own known, even with StrictHostKeyChecking=yes.
            let third = "i-0000000000000c003"
            await cloud.state.setLifecycleState(second, "Terminated")
            await Self.join(cloud, fleet, third, "127.0.0.3")
            try fleet.start("127.0.0.3", mounted: true, files: Self.old, hostKey: try fleet.hostKey("certified", signedFor: third))
            let ca = try String(contentsOfFile: fleet.root + "/keys/ca.pub", encoding: .utf8)
            try ("@cert-authority * " + ca).write(toFile: fleet.knownHosts, atomically: true, encoding: .utf8)
            let (certified, certifiedError) = try await Self.push(fleet, cloud, ssh: ["-o", "StrictHostKeyChecking=yes"])
            #expect(certifiedError == nil, "\(String(describing: certifiedError))")
            #expect(certified.first { $0.member.instance.text == third }?.outcome.label == "pushed", "\(certified)")
        }
    }

    @Test("a sync that fails half way (the host's volume is full): nothing in use changes, the volume's identity stays, the message says so")
    func halfSync() async throws {
        guard requireRoot("push half sync") else { return }
        try await Self.withFleet { fleet, cloud in
            try (releaseSnapshot + "\n").write(toFile: fleet.root + "/snap.txt", atomically: true, encoding: .utf8)
            try Self.write(Self.release.merging(["app/big.bin": String(repeating: "x", count: 1 << 20)]) { $1 }, in: fleet.release)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            let id = instanceID("127.0.0.2")
            await Self.join(cloud, fleet, id, "127.0.0.2")
            // 256 KiB: the old release fits, the new one's 1 MiB file does not.
            try fleet.start("127.0.0.2", mounted: true, files: Self.old, capacity: "256k")
            let (rows, error) = try await Self.push(fleet, cloud)
            let failure = try #require(error as? PushError, "\(rows)")
            #expect(failure.description.contains("rsync exit") && failure.description.contains("the release in use there is unchanged"), "\(failure)")
            let volume = try #require(await cloud.state.volumeTable().first { $0.attachment?.instanceID == id })
            #expect(volume.tags[ReleaseTags.releaseID] == nil, "never marked: the tree in use did not change")
            #expect(try releaseTree(fleet.directory("127.0.0.2")) == Self.old)
        }
    }

    /// A release with its manifest, as a host holds it: `files` and `.snapmount/release.json`.
    static func withManifest(_ files: [String: String], _ identity: String) -> [String: String] {
        files.merging([ReleaseManifest.relativePath: String(decoding: ReleaseManifest(id: ReleaseID(identity)!, release: "release",
                                                                                       createdAt: "2026-12-01T10:00:00Z").bytes, as: UTF8.self)]) { $1 }
    }

    static func write(_ files: [String: String], in root: String) throws {
        for (name, text) in files {
            let path = root + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    static let oldIdentity = "rel-20261130T100000Z-43434343"

    @Test("activation and health declared by each host: activated and healthy where they pass; where the health check fails, switched back, activated again on the old release, tagged with it, ROLLED BACK (69)")
    func activationAndHealth() async throws {
        guard requireRoot("push activation") else { return }
        try await Self.withFleet { fleet, cloud in
            try (releaseSnapshot + "\n").write(toFile: fleet.root + "/snap.txt", atomically: true, encoding: .utf8)
            try Self.write(Self.release, in: fleet.release)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            let old = Self.withManifest(Self.old, Self.oldIdentity)
            // Activation records which release it found in use; the health check reads it.
            let activate = "activate = /bin/sh -c 'cat \(fleet.release)/VERSION >> \(fleet.state)/activations'"
            for (address, check) in [("127.0.0.2", "/bin/grep -q 44 \(fleet.release)/VERSION"), ("127.0.0.3", "/bin/grep -q 43 \(fleet.release)/VERSION")] {
                await Self.join(cloud, fleet, instanceID(address), address)
                try fleet.start(address, mounted: true, files: old, configuration: [activate, "health-check = \(check)", "health-timeout = 3s"])
            }
            let (rows, error) = try await Self.push(fleet, cloud)
            print(PushFlow.table(rows))
            let failure = try #require(error as? PushError)
            #expect(failure.exitStatus == .unavailable)
            #expect(failure.description.contains("1 of 2 hosts") && failure.description.contains("127.0.0.3")
                    && failure.description.contains("did not pass") && failure.description.contains("switched back to \(Self.oldIdentity)"), "\(failure)")
            let byAddress = Dictionary(uniqueKeysWithValues: rows.map { ($0.address, $0.outcome.label) })
            #expect(byAddress == ["127.0.0.2": "pushed", "127.0.0.3": "ROLLED BACK"])

            let held = Dictionary(uniqueKeysWithValues: await cloud.state.volumeTable().compactMap { volume in
                volume.attachment.map { ($0.instanceID, volume.tags[ReleaseTags.releaseID]) }
            })
            #expect(held[instanceID("127.0.0.2")] == .some(Self.identity))
            #expect(try releaseTree(fleet.directory("127.0.0.2")) == Self.pushed)
            #expect(try String(contentsOfFile: fleet.stateDirectory("127.0.0.2") + "/activations", encoding: .utf8) == "release 44\n")

            #expect(held[instanceID("127.0.0.3")] == .some(Self.oldIdentity), "tagged with the release it went back to")
            #expect(try releaseTree(fleet.directory("127.0.0.3")) == old, "the old release in use again, whole")
            #expect(try tree(fleet.directory("127.0.0.3") + "/.snapmount/previous") == Self.pushed, "the failed one kept beside it")
            #expect(try String(contentsOfFile: fleet.stateDirectory("127.0.0.3") + "/activations", encoding: .utf8) == "release 44\nrelease 43\n",
                    "activated on the new release, then again on the old one")
        }
    }

    @Test("a deployment one host a wave: the third host's health check fails, the deployment stops, the two moved hosts go back — every host holds the old release, whole, by content")
    func deploymentRollsBack() async throws {
        guard requireRoot("deploy rollback") else { return }
        try await Self.withFleet { fleet, cloud in
            try (releaseSnapshot + "\n").write(toFile: fleet.root + "/snap.txt", atomically: true, encoding: .utf8)
            try Self.write(Self.release, in: fleet.release)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            let old = Self.withManifest(Self.old, Self.oldIdentity)
            let addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
            for address in addresses {
                await Self.join(cloud, fleet, instanceID(address), address)
                // Only 127.0.0.4 finds the new release unhealthy.
                let check = address == "127.0.0.4" ? "/bin/grep -q 43 \(fleet.release)/VERSION" : "/bin/true"
                try fleet.start(address, mounted: true, files: old, configuration: ["health-check = \(check)", "health-timeout = 3s"])
            }
            let (rows, error) = try await Self.push(fleet, cloud) { options in
                options.wave = .hosts(1)
                options.maxFailures = .hosts(0)
                options.rollbackOnFailure = true
            }
            print(PushFlow.table(rows, waves: true))
            let stop = try #require(error as? PushError)
            #expect(stop.exitStatus == .unavailable)
            #expect(stop.description.contains("stopped after wave 3 of 4") && stop.description.contains("127.0.0.4"), "\(stop)")
            let labels = Dictionary(uniqueKeysWithValues: rows.map { ($0.member.instance.text, $0.outcome.label) })
            #expect(labels == [instanceID("127.0.0.2"): "REVERTED", instanceID("127.0.0.3"): "REVERTED",
                               instanceID("127.0.0.4"): "ROLLED BACK", instanceID("127.0.0.5"): "not reached"], "\(labels)")
            for address in addresses {
                #expect(try releaseTree(fleet.directory(address)) == old, "\(address) holds the old release, whole")
            }
            let held = await cloud.state.volumeTable().compactMap { volume in volume.attachment.map { ($0.instanceID, volume.tags[ReleaseTags.releaseID]) } }
            for (instance, tag) in held where instance != instanceID("127.0.0.5") {
                #expect(tag == Self.oldIdentity, "\(instance): \(String(describing: tag))")
            }
        }
    }

    @Test("no mix is ever visible: a reader on the host, reading the tree in a loop through a push, sees the old release or the new one, whole")
    func readerNeverSeesAMix() async throws {
        guard requireRoot("push reader") else { return }
        try await Self.withFleet { fleet, cloud in
            try (releaseSnapshot + "\n").write(toFile: fleet.root + "/snap.txt", atomically: true, encoding: .utf8)
            // 500 more files beside app/main.py: the switch's rebuild of the root takes long
            // enough that a reader without the bind mount would find files missing (it does).
            let library = Dictionary(uniqueKeysWithValues: (0..<500).map { ("app/lib/module\($0).py", "# \($0)\n") })
            try Self.write(Self.release.merging(library) { $1 }, in: fleet.release)
            try await stageRelease(Self.identity, in: fleet.release, cloud: cloud)
            await Self.join(cloud, fleet, instanceID("127.0.0.2"), "127.0.0.2")
            try fleet.start("127.0.0.2", mounted: true, files: Self.old.merging(library) { $1 })
            // Each round looks the tree up once (cd), as a request does, then reads two files of it.
            let reads = fleet.state + "/reads"
            let reader = """
                while [ ! -e \(fleet.state)/stop ]; do
                  ( cd \(fleet.release) && v=$(cat VERSION) && m=$(cat app/main.py) && echo "$v|$m" || echo "FAILED" ) >> \(reads) 2>&1
                done
                """
            let child = try Child("/usr/bin/ssh", ["-F", fleet.sshConfig, "root@127.0.0.2", reader], environment: ["PATH": "/usr/bin:/bin"])
            defer { child.stop() }
            let log = fleet.stateDirectory("127.0.0.2") + "/reads"
            func lines() -> [String] { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
            let until = ContinuousClock.now + .seconds(60)
            while lines().count < 5 && ContinuousClock.now < until { try await Task.sleep(for: .milliseconds(50)) }
            let (rows, error) = try await Self.push(fleet, cloud)
            #expect(error == nil, "\(String(describing: error)) \(rows)")
            while !lines().contains("release 44|print('release 44')") && ContinuousClock.now < until { try await Task.sleep(for: .milliseconds(50)) }
            _ = FileManager.default.createFile(atPath: fleet.stateDirectory("127.0.0.2") + "/stop", contents: Data())
            _ = try await onThread { child.wait(upTo: .seconds(30)) }
            let seen = lines()
            let whole: Set = ["release 43|print('release 43')", "release 44|print('release 44')"]
            #expect(seen.contains("release 43|print('release 43')") && seen.contains("release 44|print('release 44')"), "both releases read: \(seen.count) reads")
            #expect(seen.allSatisfy { whole.contains($0) }, "a mix or a missing file: \(Set(seen).subtracting(whole))")
            TestLog.write("reader: \(seen.count) reads, \(seen.filter { $0.hasPrefix("release 43") }.count) of the old release")
        }
    }
}

/// `i-0…` whose last digits are the address's last byte.
func instanceID(_ address: String) -> String {
    let last = address.split(separator: ".").last.map(String.init) ?? "0"
    return "i-" + String(repeating: "0", count: 17 - last.count) + last
}

/// The release in use under a host's `root`: every file but snapmount's own trees beside it
/// (the manifest is part of the release).
func releaseTree(_ root: String) throws -> [String: String] {
    try tree(root).filter { !$0.key.hasPrefix(ReleaseManifest.directory + "/") || $0.key == ReleaseManifest.relativePath }
}

/// Every regular file under `root`, relative path → contents.
func tree(_ root: String) throws -> [String: String] {
    var files: [String: String] = [:]
    guard let walker = FileManager.default.enumerator(atPath: root) else { return files }
    for case let path as String in walker {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: root + "/" + path, isDirectory: &isDirectory), !isDirectory.boolValue {
            files[path] = try String(contentsOfFile: root + "/" + path, encoding: .utf8)
        }
    }
    return files
}
