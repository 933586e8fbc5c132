import Logging
import SnapmountCore
import SnapmountSystem

public enum VolumeError: SnapmountError, Equatable {
    case snapshotNotFound(SnapshotID, region: String)
    case snapshotPending(SnapshotID, progress: String)
    case snapshotUnusable(SnapshotID, state: String)
    case snapshotOwner(SnapshotID, owner: String, allowed: String)
    case timedOut(volume: VolumeID, waitingFor: String, after: Duration, lastState: String)
    case volumeFailed(VolumeID, state: String)
    case attachedElsewhere(VolumeID, instance: InstanceID)
    case tokensUsedUp(SnapshotID, generations: Int)
    /// An earlier release's volume could not be given back, so the new one cannot take its place.
    case cannotRetire(VolumeID, String)
    /// A dry run: IAM denies these actions (`ec2:AttachVolume`, …).
    case permissionsLacking([String])
    case ec2(EC2CallError)

    public var exitStatus: ExitStatus {
        switch self {
        case .snapshotNotFound, .snapshotPending, .snapshotUnusable, .volumeFailed, .tokensUsedUp, .cannotRetire: .unavailable
        case .snapshotOwner: .dataRefused
        case .timedOut: .timedOut
        case .attachedElsewhere: .dataRefused
        case .permissionsLacking: .permissionDenied
        case .ec2(let error): error.exitStatus
        }
    }

    /// The volume belongs to another instance: nothing of ours to give back.
    var isElsewhere: Bool {
        if case .attachedElsewhere = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .snapshotNotFound(let id, let region):
            "snapshot \(id) does not exist in \(region), or is not shared with this account"
        case .snapshotPending(let id, let progress):
            "snapshot \(id) is still pending (\(progress.isEmpty ? "in progress" : progress)): the release is not published yet; the release server should publish an id only once its snapshot is completed"
        case .snapshotUnusable(let id, let state):
            "snapshot \(id) is in state \(state), not completed"
        case .snapshotOwner(let id, let owner, let allowed):
            "snapshot \(id) is owned by account \(owner), but snapshot-owner allows only \(allowed); refusing it"
        case .timedOut(let volume, let waitingFor, let after, let lastState):
            "volume \(volume) did not become \(waitingFor) within \(DurationText.format(after)) (last state: \(lastState))"
        case .volumeFailed(let volume, let state):
            "volume \(volume) failed (state \(state))"
        case .attachedElsewhere(let volume, let instance):
            "volume \(volume) is attached to another instance, \(instance); refusing to touch it"
        case .tokensUsedUp(let snapshot, let generations):
            "the volumes of the last \(generations) CreateVolume tokens for \(snapshot) on this instance were all deleted; look for what keeps deleting them"
        case .cannotRetire(let volume, let problem):
            "\(volume), this instance's volume of another release, could not be given back (\(problem)); the release named now is not attached beside it"
        case .permissionsLacking(let actions):
            "UnauthorizedOperation: the instance role lacks " + actions.joined(separator: ", ")
        case .ec2(let error):
            error.description
        }
    }
}

/// When to ask EC2 about a volume's state, fitted to how long EC2 takes: a volume from a
/// snapshot is `available` after about 1.5 s (median), 4 s at the 99th percentile. So the
/// first look is at 1.5 s, the next half a second later, and each gap after that 1.3 times
/// the one before (up to 5 s): looks at 1.5, 2.0, 2.65, 3.5, 4.6, 6.0 s… A volume at EC2's
/// median costs one look, at its 99th percentile five, and a cloud ten times slower about
/// twice as many — calls grow with the logarithm of the wait, not with the wait.
public struct PollSchedule: Sendable {
    public var first: Duration = .milliseconds(1500)
    public var step: Duration = .milliseconds(500)
    public var growth: Double = 1.3
    public var maximum: Duration = .seconds(5)
    /// While the device is the attach signal: when to ask EC2 first (EC2 attaches in a few
    /// seconds and the device answers then), and how often after that.
    public var attachedFirstLook: Duration = .seconds(10)
    public var attachedEvery: Duration = .seconds(5)

    public init() {}

    /// A schedule for a fast local cloud (tests): looks from `first`, growing to `maximum`.
    public static func fast(first: Duration = .milliseconds(100), maximum: Duration = .seconds(1)) -> PollSchedule {
        var schedule = PollSchedule()
        schedule.first = first
        schedule.step = first
        schedule.growth = 1.25
        schedule.maximum = maximum
        schedule.attachedFirstLook = first * 10
        schedule.attachedEvery = first * 5
        return schedule
    }

    /// A pending snapshot: first after 2 s, then growing to every 15 s.
    public static var snapshot: PollSchedule {
        var schedule = PollSchedule()
        schedule.first = .seconds(2)
        schedule.step = .seconds(2)
        schedule.growth = 1.5
        schedule.maximum = .seconds(15)
        return schedule
    }

    /// The pause before poll number `poll` (0 for the first).
    public func delay(beforePoll poll: Int) -> Duration {
        guard poll > 0 else { return first }
        var delay = step
        for _ in 1..<min(poll, 60) { delay = min(maximum, delay * growth) }
        return min(maximum, delay)
    }
}

/// How the attach step learns that a volume is attached: on Nitro the kernel shows the NVMe
/// device the moment the attachment completes, so the device itself is the signal;
/// DescribeVolumes is only the slow fallback (the device never shows up, or a Xen instance
/// where the name, not a serial, tells the volume).
public struct AttachSignal {
    /// Whether the volume's device is there now.
    public var deviceIsPresent: () -> Bool
    /// Sleeps until something may have changed in `/dev`, or `timeout` at the latest.
    public var waitForChange: (Duration) -> Void

    public init(deviceIsPresent: @escaping () -> Bool, waitForChange: @escaping (Duration) -> Void) {
        self.deviceIsPresent = deviceIsPresent
        self.waitForChange = waitForChange
    }
}

/// What the volume step came to.
public enum VolumeOutcome: Sendable, Equatable {
    /// This instance's volume for the snapshot, found by its tags: made by an earlier run.
    case existing(EC2Volume)
    /// Made by this run, and available.
    case created(EC2Volume)
    /// Check mode: none exists, and EC2 would let CreateVolume make one.
    case wouldCreate
    /// Check mode: none exists, and EC2's answer to the dry run said neither yes nor no.
    case notChecked(String)

    public var volume: EC2Volume? {
        switch self {
        case .existing(let volume), .created(let volume): volume
        case .wouldCreate, .notChecked: nil
        }
    }
}

/// What the attach step came to.
public enum AttachOutcome: Sendable, Equatable {
    /// Attached to this instance, with DeleteOnTermination set (apply), or as found (check).
    case attached(EC2Attachment)
    /// Check mode: EC2 would let AttachVolume and ModifyInstanceAttribute go ahead.
    case wouldAttach
    /// Check mode: nothing to check against; the reason says why.
    case notChecked(String)
}

/// The volume and attach steps of the boot flow (DESIGN.md §2, steps 4–6) — reuse, create,
/// attach, DeleteOnTermination, roll-back — each idempotent, each in apply or check mode.
public final class VolumeManager {
    private let ec2: EC2Client
    public let identity: InstanceIdentity
    private let clock: any AgentClock
    private let logger: Logger
    public var schedule = PollSchedule()
    /// How long CreateVolume may take to reach `available`.
    public var availableTimeout: Duration = .seconds(300)
    /// How long AttachVolume may take to reach `attached`.
    public var attachedTimeout: Duration = .seconds(120)
    /// Giving a volume back goes on this long after the run's deadline or a stop signal.
    public static let rollBackGrace: Duration = .seconds(30)

    public init(ec2: EC2Client, identity: InstanceIdentity, clock: any AgentClock = SystemClock(), logger: Logger) {
        self.ec2 = ec2
        self.identity = identity
        self.clock = clock
        self.logger = logger
    }

    /// Step 5: this instance's volume for the snapshot — reused if an earlier run made it,
    /// else created — and available. A volume this run created and then gave up on is
    /// deleted (DESIGN.md §5 rule 4). In check mode nothing is created: CreateVolume goes
    /// with `DryRun=true`.
    public func ensureVolume(_ request: VolumeRequest, mode: FlowMode, existing: EC2Volume?) throws(VolumeError) -> VolumeOutcome {
        if mode == .check {
            if let existing { return .existing(existing) }
            let unchecked = try requirePermission([("CreateVolume", request.parameters)])
            return unchecked.isEmpty ? .wouldCreate : .notChecked("could not check: " + unchecked.joined(separator: "; "))
        }
        let (found, created) = try findOrCreate(request, existing: existing)
        Failpoint.hit("after-create-volume")
        do {
            // Usable as found (an implementation that creates at once, a volume attached here
            // already): no question to ask.
            let volume = VolumeDecisions.availability(of: found, for: identity.instanceID) == .ready ? found : try waitAvailable(found.id)
            return created ? .created(volume) : .existing(volume)
        } catch {
            // Made for this instance — by this run or an earlier one — and unusable: given back.
            if !error.isElsewhere, !found.isReleaseSource { _ = clock.withGrace(Self.rollBackGrace) { rollBack(found.id, neverAttached: created) } }
            throw error
        }
    }

    /// Step 6: the volume attached to this instance at `device`, and DeleteOnTermination set
    /// straight after. If attaching proves impossible, or the volume would outlive the
    /// instance, the volume — made for this instance by this run or an earlier one — is
    /// detached and deleted; the next run makes it afresh. In check mode AttachVolume and
    /// ModifyInstanceAttribute go with `DryRun=true`.
    public func ensureAttached(_ outcome: VolumeOutcome, device: String, mode: FlowMode,
                               signal: AttachSignal? = nil) throws(VolumeError) -> AttachOutcome {
        guard let volume = outcome.volume else {
            return .notChecked("no volume yet to check ec2:AttachVolume against; a run attaches the new volume at \(device) and sets DeleteOnTermination")
        }
        do throws(VolumeError) {
            var attachment: EC2Attachment
            let next = VolumeDecisions.attachment(of: volume, for: identity.instanceID)
            switch next {
            case .elsewhere(let other):
                throw .attachedElsewhere(volume.id, instance: other)
            case .ready(let found):
                attachment = found
            case .waitAttached(let found):
                attachment = mode == .check ? found : try waitAttached(volume.id, expected: found, signal: signal)
            case .attach, .waitDetached:
                if mode == .check {
                    let unchecked = try requirePermission([
                        ("AttachVolume", ec2.attachParameters(volume.id, identity.instanceID, device)),
                        ("ModifyInstanceAttribute", ec2.deleteOnTerminationParameters(identity.instanceID, device: device)),
                    ])
                    return unchecked.isEmpty ? .wouldAttach : .notChecked("could not check: " + unchecked.joined(separator: "; "))
                }
                if next == .waitDetached { _ = try waitDetached(volume.id) }
                let answered = try attach(volume.id, device: device)
                Failpoint.hit("after-attach-call")
                attachment = try waitAttached(volume.id, expected: answered, signal: signal)
            }
            // Unknown (the answer did not say) is set too, once: the call is idempotent. Never on
            // the release source: it must outlive any one instance of the release server.
            if attachment.deleteOnTermination != true && !volume.isReleaseSource {
                if mode == .check {
                    let unchecked = try requirePermission([
                        ("ModifyInstanceAttribute", ec2.deleteOnTerminationParameters(identity.instanceID, device: attachment.device)),
                    ])
                    if !unchecked.isEmpty { return .notChecked("could not check: " + unchecked.joined(separator: "; ")) }
                } else {
                    try setDeleteOnTermination(volume.id, device: attachment.device)
                    attachment.deleteOnTermination = true
                }
            }
            return .attached(attachment)
        } catch {
            if mode == .apply, !error.isElsewhere, !volume.isReleaseSource { _ = clock.withGrace(Self.rollBackGrace) { rollBack(volume.id) } }
            throw error
        }
    }

    /// Sends each call with `DryRun=true`; throws when IAM denies any of them. Returns the
    /// calls whose answer said neither yes nor no (NotFound, no answer): not checked, which
    /// is not a missing permission.
    private func requirePermission(_ calls: [(action: String, parameters: QueryParameters)]) throws(VolumeError) -> [String] {
        var lacking: [String] = []
        var unchecked: [String] = []
        for call in calls {
            do {
                switch try ec2.dryRun(call.action, call.parameters) {
                case .permitted: continue
                case .denied(let error) where calls.count == 1: throw VolumeError.ec2(.service(error))
                case .denied: lacking.append("ec2:\(call.action)")
                }
            } catch let error as VolumeError {
                throw error
            } catch {
                unchecked.append("ec2:\(call.action): \(error)")
            }
        }
        guard lacking.isEmpty else { throw .permissionsLacking(lacking) }
        return unchecked
    }

    /// The snapshot must exist, be completed, and belong to an allowed owner.
    public func verifySnapshot(_ id: SnapshotID, owner: SnapshotOwner) throws(VolumeError) -> EC2Snapshot {
        let snapshot: EC2Snapshot?
        do {
            snapshot = try ec2.describeSnapshot(id)
        } catch {
            if error.code == "InvalidSnapshot.NotFound" { throw .snapshotNotFound(id, region: identity.region) }
            throw .ec2(error)
        }
        guard let snapshot else { throw .snapshotNotFound(id, region: identity.region) }
        switch snapshot.state {
        case .completed: break
        case .pending: throw .snapshotPending(id, progress: snapshot.progress)
        default: throw .snapshotUnusable(id, state: snapshot.state.text)
        }
        let allowed: String
        switch owner {
        case .any: return snapshot
        case .selfAccount: allowed = identity.accountID
        case .account(let account): allowed = account
        }
        guard snapshot.ownerID == allowed else {
            throw .snapshotOwner(id, owner: snapshot.ownerID, allowed: owner == .selfAccount ? "self (\(allowed))" : allowed)
        }
        return snapshot
    }

    /// This instance's volume for the snapshot — found by its tags, or created with a
    /// deterministic ClientToken so that a repeated call returns the same volume.
    public func findOrCreate(_ request: VolumeRequest, existing: EC2Volume?) throws(VolumeError) -> (volume: EC2Volume, created: Bool) {
        if let existing {
            logger.info("reusing volume \(existing.id) (\(existing.state))")
            return (existing, false)
        }
        var request = request
        while true {
            let volume: EC2Volume
            do {
                // Before a retry, look: the lost answer may have been a volume made, and not
                // every EC2 implementation honours the ClientToken that would return it.
                let tagged = request
                volume = try ec2.createVolume(request) { () throws(EC2CallError) -> EC2Volume? in
                    guard let found = try? findExisting(tagged) else { return nil }
                    logger.warning("CreateVolume's answer was lost, but volume \(found.id) was made; using it")
                    return found
                }
            } catch {
                // Out of retries on a failure that may have come after EC2 created the volume
                // (answers lost, 5xx, a 200 that does not read): if it exists, its tags find it.
                if error.exitStatus == .unavailable, let existing = try? findExisting(request) {
                    logger.warning("CreateVolume did not answer readably (\(error)), but volume \(existing.id) was created; using it")
                    return (existing, true)
                }
                throw .ec2(error)
            }
            guard volume.state.isGone else {
                logger.info("created volume \(volume.id) from \(request.snapshot)")
                return (volume, true)
            }
            // This token's volume was made by an earlier run, which then gave up and deleted it.
            guard request.generation < VolumeRequest.maximumGeneration else {
                throw .tokensUsedUp(request.snapshot, generations: request.generation)
            }
            logger.info("CreateVolume token \(request.clientToken) belongs to volume \(volume.id), now \(volume.state); using the next token")
            request.generation += 1
        }
    }

    /// This instance's volumes for the configuration of `mountPoint`, by their instance tag:
    /// one DescribeVolumes, which the volume step sorts into the one to reuse and those of
    /// other releases to retire. Another configuration's volumes are never among them.
    public func ourVolumes(mountPoint: String = AbsolutePath.defaultMountPoint, device: String? = nil) throws(VolumeError) -> [EC2Volume] {
        do {
            return try ec2.describeVolumes(filters: [("tag:\(VolumeRequest.instanceTag)", [identity.instanceID.text])])
                .filter { $0.belongs(to: mountPoint, device: device) }
        } catch {
            throw .ec2(error)
        }
    }

    /// A volume of this instance that holds another release than the one the source names
    /// (or none known): detached and deleted before the release's own volume is attached.
    /// Never the release server's source volume.
    public func retire(_ volume: EC2Volume) throws(VolumeError) {
        guard !volume.isReleaseSource else { return }
        let held = volume.heldRelease.map { "holds \($0)" } ?? "holds no known release"
        logger.notice("retiring \(volume.id), which \(held): the source names another release")
        if let problem = rollBack(volume.id) { throw .cannotRetire(volume.id, problem) }
    }

    public func findExisting(_ request: VolumeRequest) throws(VolumeError) -> EC2Volume? {
        let candidates: [EC2Volume]
        do {
            candidates = try ec2.describeVolumes(filters: [
                ("tag:\(VolumeRequest.instanceTag)", [request.instance.text]),
                ("tag:\(VolumeRequest.snapshotTag)", [request.snapshot.text]),
            ])
        } catch {
            throw .ec2(error)
        }
        return VolumeDecisions.reusable(candidates.filter { $0.belongs(to: request.mountPoint) }, for: request.instance)
    }

    /// Waits (bounded) until the volume is `available` — or already attached to us.
    public func waitAvailable(_ id: VolumeID) throws(VolumeError) -> EC2Volume {
        try poll(id, waitingFor: "available", timeout: availableTimeout) { volume throws(VolumeError) in
            switch VolumeDecisions.availability(of: volume, for: identity.instanceID) {
            case .ready: return volume
            case .wait: return nil
            case .failed: throw .volumeFailed(id, state: volume.state.text)
            case .elsewhere(let other): throw .attachedElsewhere(id, instance: other)
            }
        }
    }

    /// AttachVolume; if the volume turns out to be attached to this instance already (a
    /// repeated call), that attachment is the answer.
    public func attach(_ id: VolumeID, device: String) throws(VolumeError) -> EC2Attachment {
        do {
            return try ec2.attachVolume(id, to: identity.instanceID, device: device)
        } catch {
            // VolumeInUse: a repeated call. Out of retries without an answer (lost, 5xx): the
            // call may have been carried out. Either way the volume's attachments tell.
            guard error.code == "VolumeInUse" || error.code == "IncorrectState" || error.exitStatus == .unavailable else { throw .ec2(error) }
            let volumes: [EC2Volume]
            do { volumes = try ec2.describeVolumes(ids: [id]) } catch { throw .ec2(error) }
            if let mine = volumes.first?.attachments.first(where: { $0.instanceID == identity.instanceID }) { return mine }
            if let other = volumes.first?.attachments.first { throw .attachedElsewhere(id, instance: other.instanceID) }
            throw .ec2(error)
        }
    }

    /// Waits (bounded) until this instance's attachment of the volume is `attached`: until its
    /// device appears (`signal`), asking EC2 only after `schedule.attachedFirstLook` and then
    /// every `schedule.attachedEvery`; without a signal, on the poll schedule. `expected` is
    /// the attachment as AttachVolume answered it.
    public func waitAttached(_ id: VolumeID, expected: EC2Attachment, signal: AttachSignal?) throws(VolumeError) -> EC2Attachment {
        guard let signal else { return try waitAttached(id) }
        let timeout = clock.capped(attachedTimeout)
        let deadline = clock.monotonic() + timeout
        var nextLook = clock.monotonic() + schedule.attachedFirstLook
        var lastState = expected.state.text
        while true {
            if signal.deviceIsPresent() {
                var attached = expected
                attached.state = .attached
                return attached
            }
            if clock.monotonic() >= nextLook {
                let volume: EC2Volume?
                do { volume = try ec2.describeVolumes(ids: [id]).first } catch { throw .ec2(error) }
                if let volume {
                    lastState = volume.attachments.first { $0.instanceID == identity.instanceID }?.state.text ?? volume.state.text
                    switch VolumeDecisions.attachment(of: volume, for: identity.instanceID) {
                    case .ready(let attachment): return attachment
                    case .elsewhere(let other): throw .attachedElsewhere(id, instance: other)
                    case .attach, .waitAttached, .waitDetached: break
                    }
                }
                nextLook = clock.monotonic() + schedule.attachedEvery
            }
            let remaining = deadline - clock.monotonic()
            guard remaining > .zero, clock.allows(.milliseconds(1)) else {
                throw .timedOut(volume: id, waitingFor: "attached", after: timeout, lastState: lastState)
            }
            signal.waitForChange(min(remaining, nextLook - clock.monotonic(), .milliseconds(250)))
        }
    }

    /// Waits (bounded) until this instance's attachment of the volume is `attached`, asking
    /// EC2 on the poll schedule.
    public func waitAttached(_ id: VolumeID) throws(VolumeError) -> EC2Attachment {
        let volume = try poll(id, waitingFor: "attached", timeout: attachedTimeout) { volume throws(VolumeError) in
            if let other = volume.attachments.first(where: { $0.instanceID != identity.instanceID }) {
                throw .attachedElsewhere(id, instance: other.instanceID)
            }
            if case .ready = VolumeDecisions.attachment(of: volume, for: identity.instanceID) { return volume }
            return nil
        }
        guard let attachment = volume.attachments.first(where: { $0.instanceID == identity.instanceID }) else {
            throw .volumeFailed(id, state: volume.state.text)
        }
        return attachment
    }

    /// Waits (bounded) until the volume has no attachment left and is `available`.
    public func waitDetached(_ id: VolumeID) throws(VolumeError) -> EC2Volume {
        try poll(id, waitingFor: "detached", timeout: attachedTimeout) { volume throws(VolumeError) in
            volume.attachments.isEmpty && volume.state == .available ? volume : nil
        }
    }

    /// ModifyInstanceAttribute. A 200 that does not read is checked with one DescribeVolumes:
    /// set, or not reported at all (the implementation does not say), goes on; unset fails.
    public func setDeleteOnTermination(_ volume: VolumeID, device: String) throws(VolumeError) {
        do {
            try ec2.setDeleteOnTermination(identity.instanceID, device: device)
        } catch {
            guard case .unreadableSuccess = error else { throw .ec2(error) }
            let attachment: EC2Attachment?
            do {
                attachment = try ec2.describeVolumes(ids: [volume]).first?.attachments.first { $0.instanceID == identity.instanceID }
            } catch {
                throw .ec2(error)
            }
            switch attachment?.deleteOnTermination {
            case true?: return
            case nil where attachment != nil:
                logger.warning("\(error); DescribeVolumes does not report DeleteOnTermination, so HTTP 200 is taken as done")
            default: throw .ec2(error)
            }
        }
    }

    /// Gives back a volume this run created and cannot use (DESIGN.md §5 rule 4): detached
    /// first if it got attached to this instance, then deleted. `neverAttached` (the run gave
    /// up before attaching) goes straight to DeleteVolume, so that a DescribeVolumes that
    /// keeps failing cannot keep the volume alive. Returns nil when it is gone, else what
    /// went wrong — logged with the command that deletes it by hand.
    @discardableResult
    public func rollBack(_ id: VolumeID, neverAttached: Bool = false) -> String? {
        do throws(VolumeError) {
            if !neverAttached {
                // What the volume looks like now — when EC2 says. When DescribeVolumes itself is
                // what fails, the volume (ours: found by its tags, or made by this run) may be
                // attached here: detach it blind, and let DeleteVolume wait for the detach.
                let volume = try? ec2.describeVolumes(ids: [id]).first
                // Not this instance's, or the release server's source: never given back.
                if let volume, volume.tags[VolumeRequest.instanceTag] != identity.instanceID.text || volume.isReleaseSource { return nil }
                if let other = volume?.attachments.first(where: { $0.instanceID != identity.instanceID }) {
                    throw .attachedElsewhere(id, instance: other.instanceID)
                }
                if volume == nil || volume?.attachments.isEmpty == false {
                    do {
                        _ = try ec2.detachVolume(id, from: identity.instanceID)
                    } catch {
                        // A DetachVolume repeated after its answer was lost finds the volume
                        // detaching already, and a 200 that does not read was most likely
                        // carried out; the wait below tells. Blind, anything may be answered.
                        let carriedOut = { if case .unreadableSuccess = error { return true } else { return false } }()
                        guard carriedOut || volume == nil || ["IncorrectState", "InvalidAttachment.NotFound"].contains(error.code ?? "") else {
                            throw .ec2(error)
                        }
                    }
                    if volume != nil { _ = try waitDetached(id) }
                }
            }
            try deleteWhenReady(id)
            logger.info("deleted volume \(id), made for this instance and unusable")
            return nil
        } catch {
            logger.error("volume \(id) is left behind: \(error); \(leftBehindAdvice(id))")
            return "\(error)"
        }
    }

    /// What an operator must do with a volume a roll-back could not give back, from its
    /// state now (best effort: EC2 may be what failed).
    private func leftBehindAdvice(_ id: VolumeID) -> String {
        let delete = "aws ec2 delete-volume --volume-id \(id)"
        guard let volume = try? ec2.describeVolumes(ids: [id]).first else { return "delete it by hand: \(delete)" }
        guard let attachment = volume.attachments.first else { return "it is \(volume.state); delete it by hand: \(delete)" }
        let deleteOnTermination = switch attachment.deleteOnTermination {
        case true?: "DeleteOnTermination is set, so it goes with the instance"
        case false?: "DeleteOnTermination is not set, so it would outlive the instance"
        case nil: "EC2 does not say whether DeleteOnTermination is set"
        }
        return "it is still attached to \(attachment.instanceID) at \(attachment.device) (\(deleteOnTermination)); "
            + "detach it first, then delete it: aws ec2 detach-volume --volume-id \(id) && aws ec2 wait volume-available --volume-ids \(id) && \(delete)"
    }

    /// DeleteVolume, repeated on the poll schedule (at most 8 times) while EC2 answers that
    /// the volume is still `creating` or still detaching. A volume already `deleting`, or
    /// gone, is done: an earlier DeleteVolume was carried out and its answer lost.
    private func deleteWhenReady(_ id: VolumeID) throws(VolumeError) {
        var poll = 0
        while true {
            do {
                try ec2.deleteVolume(id)
                return
            } catch {
                if error.code == "InvalidVolume.NotFound" { return }
                // Deleting, or gone already: an earlier DeleteVolume was carried out.
                do throws(EC2CallError) {
                    if try ec2.describeVolumes(ids: [id]).first?.state.isGone ?? true { return }
                } catch let describe {
                    if describe.code == "InvalidVolume.NotFound" { return }
                }
                let delay = schedule.delay(beforePoll: poll)
                guard let code = error.code, ["IncorrectState", "VolumeInUse"].contains(code), poll < 20, clock.allows(delay) else {
                    throw .ec2(error)
                }
                clock.sleep(for: delay)
                poll += 1
            }
        }
    }

    private func poll(_ id: VolumeID, waitingFor: String, timeout: Duration,
                      done: (EC2Volume) throws(VolumeError) -> EC2Volume?) throws(VolumeError) -> EC2Volume {
        let deadline = clock.monotonic() + clock.capped(timeout)
        var lastState = "unknown"
        var poll = 0
        while true {
            // Ask only once EC2 can have done it: what was just requested is not done yet.
            let delay = schedule.delay(beforePoll: poll)
            guard clock.monotonic() + delay < deadline, clock.allows(delay) else {
                throw .timedOut(volume: id, waitingFor: waitingFor, after: timeout, lastState: lastState)
            }
            clock.sleep(for: delay)
            poll += 1
            do {
                if let volume = try ec2.describeVolumes(ids: [id]).first {
                    lastState = volume.state.text
                    if let result = try done(volume) { return result }
                }
            } catch let error as VolumeError {
                throw error
            } catch let error as EC2CallError {
                // Right after CreateVolume, EC2 may not know the id yet (eventual consistency).
                guard error.code == "InvalidVolume.NotFound" else { throw .ec2(error) }
                lastState = "not yet visible"
            } catch {
                throw .volumeFailed(id, state: "\(error)")
            }
        }
    }
}
