/// What CreateVolume is asked for: everything the configuration says about the volume,
/// plus the tags that let a rerun find it and the token that makes a repeated call safe.
public struct VolumeRequest: Sendable, Equatable {
    public var availabilityZone: String
    public var snapshot: SnapshotID
    public var instance: InstanceID
    public var settings: VolumeSettings
    /// 1, unless an earlier run's volume for the same token was deleted (see ``clientToken``).
    public var generation: Int
    /// The configuration's mount point: only it retires the volume.
    public var mountPoint: String
    /// The release the snapshot's bytes are (its identity tag), copied to the volume.
    public var release: ReleaseID

    public init(availabilityZone: String, snapshot: SnapshotID, instance: InstanceID, settings: VolumeSettings, generation: Int = 1,
                mountPoint: String = AbsolutePath.defaultMountPoint, release: ReleaseID? = nil) {
        self.availabilityZone = availabilityZone
        self.snapshot = snapshot
        self.instance = instance
        self.settings = settings
        self.generation = generation
        self.mountPoint = mountPoint
        self.release = release ?? ReleaseID(snapshot: snapshot)
    }

    /// How many tokens a run tries before it gives up: each deleted generation costs one.
    public static let maximumGeneration = 5

    public static let instanceTag = "snapmount:instance-id"
    public static let snapshotTag = "snapmount:snapshot-id"

    /// Derived from instance, snapshot and (when not the default) mount point only, so that a rerun after a crash — even with
    /// its memory gone — repeats the same CreateVolume and gets the same volume back. EC2
    /// keeps answering a token with its volume even once that volume is deleted (after a
    /// run gave up on it), so the next run moves on to `-g2`, `-g3`, … (at most 64 characters).
    public var clientToken: String {
        // Two configurations on one instance with the same snapshot get two volumes.
        let place = mountPoint == AbsolutePath.defaultMountPoint ? "" : "/" + mountPoint
        let digest = (try? SHA256.hash("snapmount/\(instance.text)/\(snapshot.text)\(place)").hexString) ?? "\(instance.text)-\(snapshot.text)"
        return "snapmount-" + String(digest.prefix(40)) + (generation > 1 ? "-g\(generation)" : "")
    }

    /// Our tags — owner, origin, mount point, what it holds —, then the configured ones.
    public var tags: [VolumeTag] {
        [VolumeTag(key: Self.instanceTag, value: instance.text), VolumeTag(key: Self.snapshotTag, value: snapshot.text),
         VolumeTag(key: ReleaseTags.mountPoint, value: mountPoint), VolumeTag(key: ReleaseTags.releaseID, value: release.text)]
            + settings.tags
    }

    public var parameters: QueryParameters {
        var parameters = QueryParameters()
        parameters.append("AvailabilityZone", availabilityZone)
        parameters.append("SnapshotId", snapshot.text)
        parameters.append("VolumeType", settings.type.rawValue)
        if let size = settings.sizeGiB { parameters.append("Size", String(size)) }
        if let iops = settings.iops { parameters.append("Iops", String(iops)) }
        if let throughput = settings.throughput { parameters.append("Throughput", String(throughput)) }
        if let encrypted = settings.encrypted { parameters.append("Encrypted", encrypted ? "true" : "false") }
        if let key = settings.kmsKeyID { parameters.append("KmsKeyId", key.text) }
        if let rate = settings.initializationRate { parameters.append("VolumeInitializationRate", String(rate)) }
        parameters.append("ClientToken", clientToken)
        parameters.append(contentsOf: tagSpecification("volume", tags))
        return parameters
    }
}

/// EC2's `TagSpecification.1.*` encoding: tags set on the resource as it is created.
public func tagSpecification(_ resourceType: String, _ tags: [VolumeTag]) -> QueryParameters {
    var parameters: QueryParameters = ["TagSpecification.1.ResourceType": resourceType]
    for (index, tag) in tags.enumerated() {
        parameters.append("TagSpecification.1.Tag.\(index + 1).Key", tag.key)
        parameters.append("TagSpecification.1.Tag.\(index + 1).Value", tag.value)
    }
    return parameters
}

/// EC2's `Filter.N.Name` / `Filter.N.Value.M` encoding.
public func ec2Filters(_ filters: [(name: String, values: [String])]) -> QueryParameters {
    var parameters = QueryParameters()
    for (index, filter) in filters.enumerated() {
        parameters.append("Filter.\(index + 1).Name", filter.name)
        for (valueIndex, value) in filter.values.enumerated() {
            parameters.append("Filter.\(index + 1).Value.\(valueIndex + 1)", value)
        }
    }
    return parameters
}

extension QueryParameters {
    public mutating func append(contentsOf other: QueryParameters) {
        for item in other.items { append(item.name, item.value) }
    }
}
