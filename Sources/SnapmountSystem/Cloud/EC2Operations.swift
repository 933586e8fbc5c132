import SnapmountCore

/// The EC2 actions snapmount uses, typed.
extension EC2Client {
    public func describeSnapshot(_ id: SnapshotID) throws(EC2CallError) -> EC2Snapshot? {
        let snapshots = try perform("DescribeSnapshots", ["SnapshotId.1": id.text], decode: EC2Decoder.snapshots)
        return snapshots.first { $0.id == id }
    }

    public func createVolume(_ request: VolumeRequest) throws(EC2CallError) -> EC2Volume {
        try perform("CreateVolume", request.parameters, decode: EC2Decoder.createdVolume)
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

    public func detachVolume(_ volume: VolumeID) throws(EC2CallError) -> EC2Attachment {
        try perform("DetachVolume", ["VolumeId": volume.text]) { (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.attachment(body, action: "DetachVolume")
        }
    }

    public func deleteVolume(_ volume: VolumeID) throws(EC2CallError) {
        _ = try perform("DeleteVolume", ["VolumeId": volume.text]) { (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.returnValue(body, action: "DeleteVolume")
        }
    }

    public func deleteOnTerminationParameters(_ instance: InstanceID, device: String) -> QueryParameters {
        ["InstanceId": instance.text, "BlockDeviceMapping.1.DeviceName": device,
         "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true"]
    }

    /// ModifyInstanceAttribute: the volume at `device` dies with the instance.
    public func setDeleteOnTermination(_ instance: InstanceID, device: String) throws(EC2CallError) {
        _ = try perform("ModifyInstanceAttribute", deleteOnTerminationParameters(instance, device: device)) {
            (body: [UInt8]) throws(EC2DecodeError) in
            try EC2Decoder.returnValue(body, action: "ModifyInstanceAttribute")
        }
    }
}
