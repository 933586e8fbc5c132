import SnapmountCore

/// The EC2 actions snapmount uses, typed.
extension EC2Client {
    public func describeSnapshot(_ id: SnapshotID) throws(EC2CallError) -> EC2Snapshot? {
        let snapshots = try perform("DescribeSnapshots", ["SnapshotId.1": id.text], decode: EC2Decoder.snapshots)
        return snapshots.first { $0.id == id }
    }

    /// DescribeSnapshots by owner (`self`: the caller's account) and filters.
    public func describeSnapshots(owner: String = "self", filters: [(name: String, values: [String])]) throws(EC2CallError) -> [EC2Snapshot] {
        var parameters: QueryParameters = ["Owner.1": owner]
        parameters.append(contentsOf: ec2Filters(filters))
        return try perform("DescribeSnapshots", parameters, decode: EC2Decoder.snapshots)
    }

    /// CreateSnapshot, one attempt bounded by `timeout`: the filesystem is frozen while it
    /// runs, and a retry is the caller's to decide (after thawing).
    public func createSnapshot(_ request: SnapshotRequest, timeout: Duration) throws(EC2CallError) -> EC2Snapshot {
        try perform("CreateSnapshot", request.parameters, once: timeout, decode: EC2Decoder.createdSnapshot)
    }

    /// DeleteSnapshot; a snapshot already gone counts as deleted.
    public func deleteSnapshot(_ id: SnapshotID) throws(EC2CallError) {
        do throws(EC2CallError) {
            try emptyOutput("DeleteSnapshot", ["SnapshotId": id.text])
        } catch {
            guard error.code == "InvalidSnapshot.NotFound" else { throw error }
        }
    }

    /// CreateVolume. `lookUp` runs before each retry: a call whose answer was lost may have
    /// made the volume, and an implementation that ignores ClientToken would make another.
    public func createVolume(_ request: VolumeRequest, lookUp: () throws(EC2CallError) -> EC2Volume? = { nil }) throws(EC2CallError) -> EC2Volume {
        try perform("CreateVolume", request.parameters, beforeRetry: lookUp, decode: EC2Decoder.createdVolume)
    }

    public func describeVolumes(ids: [VolumeID] = [], filters: [(name: String, values: [String])] = []) throws(EC2CallError) -> [EC2Volume] {
        var parameters = QueryParameters()
        for (index, id) in ids.enumerated() { parameters.append("VolumeId.\(index + 1)", id.text) }
        parameters.append(contentsOf: ec2Filters(filters))
        return try perform("DescribeVolumes", parameters, decode: EC2Decoder.volumes)
    }

    public func attachVolume(_ volume: VolumeID, to instance: InstanceID, device: String) throws(EC2CallError) -> EC2Attachment {
        try perform("AttachVolume", attachParameters(volume, instance, device)) { (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.attachment(body, action: "AttachVolume")
        }
    }

    public func attachParameters(_ volume: VolumeID, _ instance: InstanceID, _ device: String) -> QueryParameters {
        ["VolumeId": volume.text, "InstanceId": instance.text, "Device": device]
    }

    /// DetachVolume, naming the instance too: EC2 does not need it, some implementations do.
    public func detachVolume(_ volume: VolumeID, from instance: InstanceID) throws(EC2CallError) -> EC2Attachment {
        try perform("DetachVolume", ["VolumeId": volume.text, "InstanceId": instance.text]) { (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.attachment(body, action: "DetachVolume")
        }
    }

    public func deleteVolume(_ volume: VolumeID) throws(EC2CallError) {
        try emptyOutput("DeleteVolume", ["VolumeId": volume.text])
    }

    /// An action whose output is empty: HTTP 200 is success unless it says `<return>false</return>`.
    fileprivate func emptyOutput(_ action: String, _ parameters: QueryParameters) throws(EC2CallError) {
        let done = try perform(action, parameters) { (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.emptyOutput(body, action: action)
        }
        guard done else { throw .returnedFalse(action: action) }
    }

    public func deleteOnTerminationParameters(_ instance: InstanceID, device: String) -> QueryParameters {
        ["InstanceId": instance.text, "BlockDeviceMapping.1.DeviceName": device,
         "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true"]
    }

    /// ModifyInstanceAttribute: the volume at `device` dies with the instance.
    public func setDeleteOnTermination(_ instance: InstanceID, device: String) throws(EC2CallError) {
        try emptyOutput("ModifyInstanceAttribute", deleteOnTerminationParameters(instance, device: device))
    }
}

/// What `snapmount push` asks: Auto Scaling for the groups' instances, EC2 for their addresses.
extension EC2Client {
    /// DescribeAutoScalingGroups for these names, every page (on an Auto Scaling client).
    /// A name Auto Scaling does not know is simply absent from the answer.
    public func describeGroups(_ names: [String]) throws(EC2CallError) -> [String: [GroupMember]] {
        var groups: [String: [GroupMember]] = [:]
        for start in stride(from: 0, to: names.count, by: 50) {
            var token: String?
            repeat {
                var parameters = QueryParameters()
                for (index, name) in names[start..<min(start + 50, names.count)].enumerated() {
                    parameters.append("AutoScalingGroupNames.member.\(index + 1)", name)
                }
                parameters.append("MaxRecords", "100")
                if let token { parameters.append("NextToken", token) }
                let page = try perform("DescribeAutoScalingGroups", parameters, decode: AutoScalingDecoder.groups)
                groups.merge(page.groups) { $1 }
                token = page.nextToken
            } while token != nil
        }
        return groups
    }

    /// DescribeInstances for these ids, every page, by an `instance-id` filter: an id EC2
    /// does not know yet (Auto Scaling lists an instance before EC2's listing shows it) is
    /// absent from the answer, where naming it would fail the whole call.
    public func describeInstances(_ ids: [InstanceID]) throws(EC2CallError) -> [EC2Instance] {
        var result: [EC2Instance] = []
        for start in stride(from: 0, to: ids.count, by: 200) {
            var token: String?
            repeat {
                var parameters = ec2Filters([("instance-id", ids[start..<min(start + 200, ids.count)].map(\.text))])
                if let token { parameters.append("NextToken", token) }
                let page = try perform("DescribeInstances", parameters, decode: EC2Decoder.instances)
                result += page.instances
                token = page.nextToken
            } while token != nil
        }
        return result
    }
}

/// Tags: what a volume holds, which snapshots are releases.
extension EC2Client {
    public func createTagsParameters(_ resources: [String], _ tags: [VolumeTag]) -> QueryParameters {
        var parameters = QueryParameters()
        for (index, resource) in resources.enumerated() { parameters.append("ResourceId.\(index + 1)", resource) }
        for (index, tag) in tags.enumerated() {
            parameters.append("Tag.\(index + 1).Key", tag.key)
            parameters.append("Tag.\(index + 1).Value", tag.value)
        }
        return parameters
    }

    /// CreateTags: sets (or overwrites) these tags on the resources. Repeating it is harmless.
    public func createTags(_ resources: [String], _ tags: [VolumeTag]) throws(EC2CallError) {
        try emptyOutput("CreateTags", createTagsParameters(resources, tags))
    }
}
