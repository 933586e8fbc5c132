import Logging
import SnapmountCore
import SnapmountSystem

/// One line of the `--dry-run` checklist.
public struct ChecklistItem: Sendable, Equatable {
    public enum Mark: String, Sendable {
        case ok = "✓"
        case failed = "✗"
        case notApplicable = "—"
    }

    public let mark: Mark
    public let step: String
    public let detail: String
    /// For a ✗: the exit status the real run would end with.
    public let exitStatus: ExitStatus?

    public var line: String {
        "\(mark.rawValue) \(step.padding(12)) \(detail)"
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

/// `snapmount --dry-run`: every read-only step for real, every mutating EC2 call with
/// `DryRun=true`, a read-only probe of the device if one is attached, the fstab line it
/// would add — and nothing changed on the machine or in the account.
public final class DryRun {
    private let flow: BootFlow
    private let configuration: Configuration
    private let environment: [String: String]
    private let host: HostEdges
    private let logger: Logger
    private let tuning: CloudTuning
    public private(set) var items: [ChecklistItem] = []

    public init(configuration: Configuration, environment: [String: String], host: HostEdges, logger: Logger,
                tuning: CloudTuning = CloudTuning()) {
        self.configuration = configuration
        self.environment = environment
        self.host = host
        self.logger = logger
        self.tuning = tuning
        flow = BootFlow(configuration: configuration, environment: environment, host: host, logger: logger, tuning: tuning)
    }

    private func add(_ mark: ChecklistItem.Mark, _ step: String, _ detail: String, _ status: ExitStatus? = nil) {
        items.append(ChecklistItem(mark: mark, step: step, detail: detail, exitStatus: status))
    }

    private func fail(_ step: String, _ error: any Error) {
        add(.failed, step, "\(error)", ExitStatus(for: error))
    }

    /// The exit status the checklist predicts: that of the first ✗, else 0.
    public var exitStatus: ExitStatus {
        items.first { $0.mark == .failed }?.exitStatus ?? .success
    }

    public func run() -> [ChecklistItem] {
        items = []
        let lockPath = host.stateDirectory + "/lock"
        add(.ok, "lock", isLockHeld(lockPath) ? "\(lockPath) is held by another snapmount; a run would wait for it" : "\(lockPath) is free")

        do {
            if let device = try flow.alreadyMounted() {
                add(.ok, "check", "\(configuration.mountPoint) is already mounted from \(device): a run would do nothing")
                return items
            }
            add(.ok, "check", "\(configuration.mountPoint) is not mounted yet")
        } catch {
            fail("check", error)
            return items
        }

        let session: CloudSession
        do {
            session = try CloudSession.connect(environment: environment, logger: logger, tuning: tuning)
            let identity = session.identity
            add(.ok, "identity", "\(identity.instanceID) in \(identity.availabilityZone) (account \(identity.accountID))")
        } catch {
            fail("identity", error)
            return items
        }
        do {
            let credentials = try session.credentials.current()
            add(.ok, "credentials", session.credentials.sourceDescription
                + (credentials.expiration.map { ", valid until \($0)" } ?? ""))
        } catch {
            fail("credentials", error)
            return items
        }
        let snapshot: EC2Snapshot
        do {
            snapshot = try session.resolveSnapshot(configuration.source, owner: configuration.snapshotOwner)
            add(.ok, "snapshot", "\(snapshot.id) is \(snapshot.state), \(snapshot.volumeSizeGiB) GiB, owner \(snapshot.ownerID)")
        } catch {
            fail("snapshot", error)
            return items
        }

        let identity = session.identity
        let request = VolumeRequest(availabilityZone: identity.availabilityZone, snapshot: snapshot.id, instance: identity.instanceID,
                                    settings: configuration.volume)
        var existing: EC2Volume?
        do {
            existing = try session.volumes.findExisting(request)
            if let existing {
                add(.ok, "volume", "would reuse \(existing.id) (\(existing.state))")
            } else {
                check("volume", session, "CreateVolume", request.parameters, then: "would create a \(configuration.volume.type) volume from \(snapshot.id) in \(identity.availabilityZone)")
            }
        } catch {
            fail("volume", error)
        }

        let placeholder = VolumeID("vol-00000000000000000")
        let mine = existing?.attachments.first { $0.instanceID == identity.instanceID }
        if let mine, mine.state == "attached" {
            add(.ok, "attach", "\(existing.map(\.id.text) ?? "") is attached at \(mine.device)")
        } else if let volume = existing?.id ?? placeholder {
            let device = configuration.device.text
            let checks: [(String, QueryParameters)] = [
                ("AttachVolume", session.ec2.attachParameters(volume, identity.instanceID, device)),
                ("ModifyInstanceAttribute", session.ec2.deleteOnTerminationParameters(identity.instanceID, device: device)),
                ("DetachVolume", ["VolumeId": volume.text]),
                ("DeleteVolume", ["VolumeId": volume.text]),
            ]
            var denied: [String] = []
            for (action, parameters) in checks {
                switch try? session.ec2.dryRun(action, parameters) {
                case .permitted?: continue
                case .denied?: denied.append("ec2:\(action)")
                case nil: denied.append("ec2:\(action) (no answer)")
                }
            }
            if denied.isEmpty {
                add(.ok, "attach", "would attach at \(device) and set DeleteOnTermination (DryRunOperation)")
            } else {
                add(.failed, "attach", "UnauthorizedOperation: the instance role lacks " + denied.joined(separator: ", "), .permissionDenied)
            }
        }

        var devicePath: String?
        if let existing, mine != nil {
            devicePath = host.devices.find(existing.id, requestedName: configuration.device.text, sizeGiB: existing.sizeGiB)
            if let devicePath {
                add(.ok, "device", "\(existing.id) is \(devicePath)")
            } else {
                add(.failed, "device", "no block device for \(existing.id) now; seen: \(host.devices.scan().map(\.description).joined(separator: ", "))", .timedOut)
            }
        } else {
            add(.notApplicable, "device", "nothing attached yet; a run would wait up to \(DurationText.format(configuration.deviceTimeout)) for it")
        }

        if let devicePath {
            do {
                let content = try host.prober.probe(devicePath)
                switch content {
                case .filesystem(let type, let label) where type == configuration.filesystem.rawValue && label == configuration.label.text:
                    add(.ok, "filesystem", "\(content); would fsck it")
                case .blank where try host.prober.isZeroed(devicePath):
                    add(.ok, "filesystem", "blank; would format it \(configuration.filesystem) labelled \(configuration.label)")
                default:
                    fail("filesystem", HostError.refusedContent(device: devicePath, found: content.description, expected: "\(configuration.filesystem) labelled \(configuration.label)"))
                }
            } catch {
                fail("filesystem", error)
            }
        } else {
            add(.notApplicable, "filesystem", "no device to probe yet")
        }

        let entry = flow.fstabEntry
        do {
            let current = (try? readFile(configuration.fstab.text, limit: 1 << 20)) ?? []
            switch try FstabEditor.ensure(entry, in: current) {
            case .unchanged: add(.ok, "fstab", "\(configuration.fstab) already has: \(entry.line)")
            case .append: add(.ok, "fstab", "would add to \(configuration.fstab): \(entry.line)")
            }
        } catch {
            fail("fstab", error)
        }
        add(.notApplicable, "mount", "would mount \(devicePath ?? "the device") on \(configuration.mountPoint) (\(configuration.filesystem))")
        return items
    }

    private func check(_ step: String, _ session: CloudSession, _ action: String, _ parameters: QueryParameters, then detail: String) {
        do {
            switch try session.ec2.dryRun(action, parameters) {
            case .permitted: add(.ok, step, detail + " (DryRunOperation)")
            case .denied(let error): add(.failed, step, "\(error)", .permissionDenied)
            }
        } catch {
            fail(step, error)
        }
    }

    private func isLockHeld(_ path: String) -> Bool {
        FileLock.isHeld(path)
    }
}
