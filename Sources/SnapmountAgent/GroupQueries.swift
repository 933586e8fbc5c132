import SnapmountCore
import SnapmountSystem

/// What the release side asks Auto Scaling and EC2 about a group's instances — push, fleet —
/// each question asked one way.
struct GroupQueries {
    let session: CloudSession

    /// The groups' instances, each once, in the order of the groups named.
    func members(_ groups: [String]) throws -> [GroupMember] {
        let found = try session.autoScaling.describeGroups(groups)
        let missing = groups.filter { found[$0] == nil }
        guard missing.isEmpty else { throw PushError.noSuchGroups(missing) }
        var seen = Set<InstanceID>()
        return groups.flatMap { found[$0] ?? [] }.filter { seen.insert($0.instance).inserted }
    }

    /// The instances EC2 knows, by an `instance-id` filter: an id Auto Scaling lists and EC2
    /// does not know yet is simply absent (by id, one such would fail the whole call).
    func instances(_ ids: [InstanceID]) throws -> [InstanceID: EC2Instance] {
        var byID: [InstanceID: EC2Instance] = [:]
        for instance in try session.ec2.describeInstances(ids) { byID[instance.id] = instance }
        return byID
    }

    /// Each instance's release volume: the one snapmount volume of this mount point attached
    /// to it — or, where none carries this mount point, the only snapmount volume attached (a
    /// host whose configuration names its mount point differently). More than one candidate
    /// is no answer.
    func releaseVolumes(_ ids: [InstanceID], mountPoint: String) throws(EC2CallError) -> [InstanceID: EC2Volume] {
        guard !ids.isEmpty else { return [:] }
        let volumes = try session.ec2.describeVolumes(filters: [("tag:\(VolumeRequest.instanceTag)", ids.map(\.text))])
        var result: [InstanceID: EC2Volume] = [:]
        for id in ids {
            let attached = volumes.filter { $0.attachments.contains { $0.instanceID == id && $0.state == .attached } && !$0.isReleaseSource }
            let here = attached.filter { $0.belongs(to: mountPoint) }
            let candidates = here.isEmpty ? attached : here
            if candidates.count == 1 { result[id] = candidates[0] }
        }
        return result
    }

    /// The snapshot `target` publishes (what `publish --output` wrote there).
    func publishedSnapshot(_ target: PublishTarget) throws -> EC2Snapshot {
        let snapshotID: SnapshotID
        switch target {
        case .file(let path):
            do {
                snapshotID = try SnapshotSourceBody.parse(try readFile(path.text, limit: 4096), url: path.text)
            } catch {
                throw PushError.publishedUnreadable(path.text, "\(error)")
            }
        case .ssm(let name):
            // Read as the boot side reads an ssm: source (the owner plays no part for SSM).
            snapshotID = try session.publishedID(.ssm(name: name), owner: .selfAccount)
        }
        guard let snapshot = try session.ec2.describeSnapshot(snapshotID) else {
            throw PushError.publishedUnreadable(target.description, "EC2 knows no snapshot \(snapshotID)")
        }
        return snapshot
    }
}
