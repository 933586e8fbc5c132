import SnapmountCore
import SnapmountSystem

/// One instance as `snapmount fleet` shows it: where it is, and what its release volume's
/// tags say it holds — the identity every change of the volume's contents keeps (no ssh).
public struct FleetRow: Sendable, Equatable {
    public var member: GroupMember
    /// `nil`: EC2 does not list the instance (yet).
    public var instance: EC2Instance?
    public var volume: VolumeID?
    /// The release its volume holds; `nil` when it has no release volume or holds no known release.
    public var release: ReleaseID?
    /// How the last push to it ended (``ReleaseTags/lastDeployment``), as its volume says.
    public var lastDeployment: String?

    /// The RELEASE column: the identity, or why there is none.
    public var releaseText: String {
        if let release { return release.text }
        return volume == nil ? "(no release volume)" : "(unknown)"
    }
}

/// `snapmount fleet`: every instance of the groups, and how many hold the published release.
public struct FleetReport: Sendable, Equatable {
    public var rows: [FleetRow]
    /// The published release and its snapshot, when `--published` names it.
    public var published: EC2Snapshot?

    public var onPublished: Int {
        guard let published else { return 0 }
        return rows.filter { $0.release == published.releaseIdentity }.count
    }

    /// Lists the groups, their instances and their release volumes: three calls for any size
    /// of fleet (and a fourth, with the published snapshot, for `published`).
    public static func collect(groups: [String], mountPoint: String, published: PublishTarget?, session: CloudSession) throws -> FleetReport {
        let queries = GroupQueries(session: session)
        let members = try queries.members(groups)
        let ids = members.map(\.instance)
        let instances = try queries.instances(ids)
        let volumes = try queries.releaseVolumes(ids, mountPoint: mountPoint)
        let rows = members.map { member in
            let volume = volumes[member.instance]
            return FleetRow(member: member, instance: instances[member.instance], volume: volume?.id, release: volume?.heldRelease,
                            lastDeployment: volume?.tags[ReleaseTags.lastDeployment])
        }.sorted { ($0.member.group, $0.member.instance.text) < ($1.member.group, $1.member.instance.text) }
        return FleetReport(rows: rows, published: try published.map { try queries.publishedSnapshot($0) })
    }

    public var table: String {
        var lines = [["INSTANCE", "GROUP", "ZONE", "STATE", "LIFECYCLE", "ADDRESS", "RELEASE", "LAST DEPLOYMENT"]]
        for row in rows {
            lines.append([row.member.instance.text, row.member.group, row.instance?.availabilityZone ?? "-",
                          row.instance.map { "\($0.state)" } ?? "(not in EC2 yet)", row.member.lifecycleState,
                          row.instance?.privateAddress ?? "-", row.releaseText, row.lastDeployment ?? "-"])
        }
        var text = textTable(lines)
        if let published {
            text += "\(onPublished) of \(rows.count) on the published release \(published.releaseIdentity) (\(published.id))\n"
        }
        return text
    }

    public var json: JSONValue {
        func text(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
        var members: [(key: String, value: JSONValue)] = [("instances", .array(rows.map { row in
            .object([
                ("instance", .string(row.member.instance.text)), ("group", .string(row.member.group)),
                ("zone", text(row.instance?.availabilityZone)), ("state", text(row.instance.map { "\($0.state)" })),
                ("lifecycleState", .string(row.member.lifecycleState)), ("address", text(row.instance?.privateAddress)),
                ("volume", text(row.volume?.text)), ("release", text(row.release?.text)), ("lastDeployment", text(row.lastDeployment)),
                ("onPublished", published.map { .bool(row.release == $0.releaseIdentity) } ?? .null),
            ])
        }))]
        if let published {
            members.append(("published", .object([("release", .string(published.releaseIdentity.text)), ("snapshot", .string(published.id.text)),
                                                  ("instances", .number(String(onPublished))), ("of", .number(String(rows.count)))])))
        }
        return .object(members)
    }
}
