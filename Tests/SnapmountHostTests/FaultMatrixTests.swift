import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// One remote call of the boot flow, under the name DevCloud gives its faults.
struct RemoteCall: Sendable, CustomTestStringConvertible {
    let target: String
    let label: String
    /// The roll-back calls (DetachVolume, DeleteVolume) happen only when a run gives up on a
    /// volume it created: in their rows IAM denies ModifyInstanceAttribute, so the run
    /// attaches, cannot set DeleteOnTermination, rolls back and exits 77.
    var rollBack = false
    /// The first call the fault applies to: 2 for the DescribeVolumes polls after
    /// CreateVolume (the first DescribeVolumes is the lookup by tag).
    var firstCall = 1
    /// Only EC2 makes a volume `creating` first: an emulator's volume is available at once,
    /// and since the device is the attach signal no DescribeVolumes poll follows at all.
    var dialects: [Dialect] = Dialect.allCases

    var testDescription: String { label }

    /// Whether DevCloud's call record `call` is a call to this target.
    func matches(_ call: CallRecord) -> Bool {
        switch target {
        case "release": call.service == "release"
        case "imds:token": call.service == "imds" && call.action == "api/token"
        case let path where path.hasPrefix("imds:"): call.service == "imds" && call.action == String(path.dropFirst(5))
        default: call.service == "ec2" && call.action == target && !call.dryRun
        }
    }
}

enum FaultMode: String, Sendable, CaseIterable {
    case once
    case persistent
}

/// What a row must come to.
struct FaultExpectation {
    var status: SnapmountCore.ExitStatus
    /// Refused at the first answer, not retried (DESIGN.md §5 rule 5).
    var refusedAtOnce = false
    /// The cloud refused every roll-back call: the volume stays, named in an error line
    /// with the command that deletes it.
    var leavesVolume = false
    /// A mutating call answered 200 whose effect was confirmed: called exactly once.
    var notRetried = false

    var text: String { status == .success ? "mounted" : "exit \(status.rawValue)" }

    init(_ call: RemoteCall, _ kind: FaultKind, _ mode: FaultMode) {
        let mutating = call.target.first?.isUppercase == true && !call.target.hasPrefix("Describe")
        if call.rollBack {
            status = .permissionDenied
            leavesVolume = mode == .persistent
        } else if call.target == "release" && (kind == .truncated || kind == .malformed) {
            // Half a snapshot id, or garbage, is not a snapshot id: the release file is wrong
            // and no retry makes it right.
            status = .unavailable
            refusedAtOnce = true
        } else if (call.target == "CreateVolume" || call.target == "AttachVolume") && kind == .lostResponse {
            // Every answer lost, but the call was carried out: the volume's tags find it, and
            // its attachments show it attached to this instance.
            status = .success
        } else if mutating && (kind == .truncated || kind == .malformed) {
            // HTTP 200 with a body that does not read: EC2 did it. One Describe confirms the
            // effect, and the run goes on; no retry.
            status = .success
            notRetried = true
        } else {
            status = mode == .once ? .success : .unavailable
        }
    }
}

/// Issue #5's fault matrix: every remote call of the whole flow × every fault DevCloud can
/// inject × once or persistent, each on a fresh instance with real devices, checked for
/// its outcome and for the invariants that must hold whatever the outcome.
@Suite("Fault matrix", .serialized, .enabled(if: RootTests.enabled, RootTests.reason))
struct FaultMatrixTests {
    static let role = DevCloudSettings().roleName ?? "snapmount-release-role"
    static let calls: [RemoteCall] = [
        RemoteCall(target: "imds:token", label: "IMDS PUT api/token"),
        RemoteCall(target: "imds:dynamic/instance-identity/document", label: "IMDS identity document"),
        RemoteCall(target: "imds:meta-data/iam/security-credentials/", label: "IMDS role name"),
        RemoteCall(target: "imds:meta-data/iam/security-credentials/\(role)", label: "IMDS role credentials"),
        RemoteCall(target: "release", label: "GET snap.txt"),
        RemoteCall(target: "DescribeSnapshots", label: "DescribeSnapshots"),
        RemoteCall(target: "DescribeVolumes", label: "DescribeVolumes (lookup)"),
        RemoteCall(target: "CreateVolume", label: "CreateVolume"),
        RemoteCall(target: "DescribeVolumes", label: "DescribeVolumes (waiting for available)", firstCall: 2, dialects: [.ec2]),
        RemoteCall(target: "AttachVolume", label: "AttachVolume"),
        RemoteCall(target: "ModifyInstanceAttribute", label: "ModifyInstanceAttribute"),
        RemoteCall(target: "DetachVolume", label: "DetachVolume (roll-back)", rollBack: true),
        RemoteCall(target: "DeleteVolume", label: "DeleteVolume (roll-back)", rollBack: true),
    ]
    static let kinds: [FaultKind] = [.http500, .http503, .throttle, .reset, .noResponse, .truncated, .malformed, .html, .lostResponse]
    /// With the tests' tuning (3 attempts, backoff ≤ 200 ms; a hang lasts 1 s) a persistent
    /// fault ends a run in well under 10 s; the bound catches a run that does not end, with
    /// room for a loaded machine.
    static let persistentBound: Duration = .seconds(40)
    static let everyAction: Set<String> = ["DescribeSnapshots", "DescribeVolumes", "DescribeInstances", "CreateVolume", "CreateTags",
                                           "AttachVolume", "DetachVolume", "DeleteVolume", "ModifyInstanceAttribute"]

    @Test("each remote call × each fault kind, once and persistent, in both dialects: the expected outcome; no volume leaked, fstab unchanged or one line more, mounted only on success",
          arguments: calls, kinds)
    func faultRow(call: RemoteCall, kind: FaultKind) async throws {
        guard requireRoot("fault matrix (\(call.label), \(kind))") else { return }
        for dialect in call.dialects {
            for mode in FaultMode.allCases {
                try await withHost(image: try Images.release(), settings: fastSettings(dialect)) { host in
                    try await Self.run(call, kind, mode, dialect, on: host)
                }
            }
        }
    }

    static func run(_ call: RemoteCall, _ kind: FaultKind, _ mode: FaultMode, _ dialect: Dialect, on host: HostHarness) async throws {
        let expected = FaultExpectation(call, kind, mode)
        if call.rollBack { await host.cloud.state.setPermissions(everyAction.subtracting(["ModifyInstanceAttribute"])) }
        await host.cloud.state.addFault(Fault(target: call.target, kind: kind,
                                              trigger: mode == .once ? .nthCall(call.firstCall) : .fromCall(call.firstCall)))

        let lines = CapturedLines()
        let started = ContinuousClock.now
        var failure: (any Error)?
        do {
            _ = try await host.run(logger: capturingLogger(lines, level: .debug))
        } catch {
            failure = error
        }
        let elapsed = ContinuousClock.now - started
        let status = failure.map { SnapmountCore.ExitStatus(for: $0) } ?? .success
        let outcome = status == .success ? "mounted" : "exit \(status.rawValue)"

        let log = await host.cloud.state.callLog()
        let targetCalls = log.filter(call.matches)
        var problems = try await invariants(host, succeeded: status == .success, expected: expected, lines: lines.lines)
        if status != expected.status { problems.append("expected \(expected.text), got \(outcome): \(failure.map { "\($0)" } ?? "")") }
        if !targetCalls.dropFirst(call.firstCall - 1).contains(where: { $0.outcome.hasPrefix("fault:") }) { problems.append("the fault never fired") }
        if expected.notRetried && targetCalls.dropFirst(call.firstCall - 1).count != 1 {
            problems.append("\(targetCalls.count) calls: a 200 that was carried out is not retried")
        }
        if expected.refusedAtOnce {
            if targetCalls.count != 1 { problems.append("\(targetCalls.count) calls, not one") }
            if log.contains(where: { $0.service == "ec2" }) { problems.append("EC2 was called after a refused snap.txt") }
        }
        if mode == .persistent && elapsed > persistentBound { problems.append("took \(elapsed), more than \(persistentBound)") }

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        ReliabilityReport.record("fault-matrix", [
            "call": call.label, "kind": kind.rawValue, "mode": mode.rawValue, "dialect": dialect.rawValue, "expected": expected.text,
            "outcome": outcome,
            "seconds": String(format: "%.1f", seconds), "calls": String(targetCalls.count),
            "leaves": expected.leavesVolume ? "yes" : "no", "problems": problems.joined(separator: "; "),
        ])
        #expect(problems.isEmpty, "\(call.label) × \(kind) × \(mode) × \(dialect): \(problems.joined(separator: "; "))")
    }

    /// Whatever the outcome: no volume of this instance left `available`; fstab unchanged, or
    /// exactly one line more on success; the mount point mounted if and only if it succeeded.
    static func invariants(_ host: HostHarness, succeeded: Bool, expected: FaultExpectation, lines: [String]) async throws -> [String] {
        var problems: [String] = []
        let instance = DevCloudSettings().instanceID
        let mine = await host.cloud.state.volumeTable().filter { $0.tags[VolumeRequest.instanceTag] == instance }
        let alive = mine.filter { ["creating", "available", "in-use"].contains($0.state) }
        let fstab = try host.fstabText()
        if succeeded {
            if alive.count != 1 || alive.first?.state != "in-use" { problems.append("volumes: \(mine.map { "\($0.id) \($0.state)" })") }
            let added = fstab.hasPrefix(HostHarness.initialFstab + "\n") ? fstab.dropFirst(HostHarness.initialFstab.count + 1) : ""
            if added.split(separator: "\n").count != 1 || !added.hasPrefix("LABEL=code_release \(host.mountPoint) ") {
                problems.append("fstab is not the original plus one entry")
            }
            if !host.isMounted { problems.append("succeeded but not mounted") }
        } else {
            if expected.leavesVolume {
                // The documented exception: EC2 refused every roll-back call.
                if let left = alive.first, !lines.contains(where: { $0.contains(left.id) && $0.contains("delete-volume") }) {
                    problems.append("volume \(left.id) left without an error line naming it")
                }
            } else if !alive.isEmpty {
                problems.append("volumes left: \(alive.map { "\($0.id) \($0.state)" })")
            }
            if fstab != HostHarness.initialFstab { problems.append("fstab changed by a failed run") }
            if host.isMounted { problems.append("mounted by a failed run") }
        }
        return problems
    }
}
