/// What this instance's attachment of a volume means for the attach step.
public enum AttachmentNext: Sendable, Equatable {
    /// Not attached anywhere: AttachVolume.
    case attach
    /// Attaching to this instance (a repeated run, or EC2 still at it): wait for `attached`.
    case waitAttached(EC2Attachment)
    /// Detaching from this instance (an operator, or a roll-back that ended halfway): wait
    /// until it is free, then attach.
    case waitDetached
    /// Attached to this instance.
    case ready(EC2Attachment)
    /// Attached to another instance: never touched.
    case elsewhere(InstanceID)
}

/// What a volume's state means while waiting for it to become usable after CreateVolume.
public enum AvailabilityNext: Sendable, Equatable {
    case ready
    case wait
    case failed
    case elsewhere(InstanceID)
}

/// The volume decisions of the boot flow (DESIGN.md §2, steps 5 and 6). Pure: they see
/// what EC2 answered, not EC2.
public enum VolumeDecisions {
    public static func attachment(of volume: EC2Volume, for instance: InstanceID) -> AttachmentNext {
        if let other = volume.attachments.first(where: { $0.instanceID != instance }) { return .elsewhere(other.instanceID) }
        guard let mine = volume.attachments.first(where: { $0.instanceID == instance }) else { return .attach }
        switch mine.state {
        // `busy`: attached, with I/O in flight.
        case .attached, .busy: return .ready(mine)
        case .detaching: return .waitDetached
        case .detached: return .attach
        case .attaching, .other: return .waitAttached(mine)
        }
    }

    /// Among the volumes tagged for this instance and snapshot: the one attached to this
    /// instance, else an available one, else any that is not gone or failed.
    public static func reusable(_ candidates: [EC2Volume], for instance: InstanceID) -> EC2Volume? {
        let alive = candidates.filter { !$0.state.isGone && $0.state != .error }
        return alive.first { $0.attachments.contains { $0.instanceID == instance } }
            ?? alive.first { $0.state == .available }
            ?? alive.first
    }

    /// This instance's volumes for one mount point, sorted for a boot that wants the release
    /// `wanted`: the one to reuse and those to retire. The release server's source volume
    /// (the one publish snapshots) is reused as it is, whatever it holds now, and never
    /// retired. Otherwise the one to reuse holds `wanted` (its identity tag, which a push
    /// keeps true), and those to retire hold another release or none known — alive, not
    /// attached to another instance, never a source. A retired volume is detached before the
    /// new one is attached, so that two filesystems with one label and UUID never meet.
    /// `sourceVolume`: the volume the wanted snapshot was taken from (its
    /// `snapmount:source-volume` tag) — a source too, even before a publish tagged its role.
    public static func sort(_ ours: [EC2Volume], wanted: ReleaseID, instance: InstanceID,
                            sourceVolume: VolumeID? = nil) -> (reuse: EC2Volume?, retire: [EC2Volume]) {
        let isSource = { (volume: EC2Volume) in volume.isReleaseSource || volume.id == sourceVolume }
        let sources = ours.filter(isSource)
        let reuse = reusable(sources, for: instance) ?? reusable(ours.filter { $0.heldRelease == wanted }, for: instance)
        let retire = ours.filter { volume in
            !isSource(volume) && volume.heldRelease != wanted && !volume.state.isGone && volume.id != reuse?.id
                && !volume.attachments.contains { $0.instanceID != instance }
        }
        return (reuse, retire)
    }

    /// `available` is ready; so is a volume already attached to this instance (a rerun).
    public static func availability(of volume: EC2Volume, for instance: InstanceID) -> AvailabilityNext {
        if volume.state == .error { return .failed }
        if volume.state == .available || volume.attachments.contains(where: { $0.instanceID == instance }) { return .ready }
        if let other = volume.attachments.first(where: { $0.instanceID != instance }) { return .elsewhere(other.instanceID) }
        return .wait
    }
}
