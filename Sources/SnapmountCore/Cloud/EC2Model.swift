/// An EBS snapshot as DescribeSnapshots reports it.
public struct EC2Snapshot: Sendable, Equatable {
    public var id: SnapshotID
    public var state: SnapshotState
    public var ownerID: String
    public var volumeSizeGiB: Int
    public var encrypted: Bool
    public var progress: String
    /// When the snapshot was taken: which of two releases is newer.
    public var startTime: UTCTimestamp?
    /// The volume it was taken from, when the answer says.
    public var volumeID: VolumeID?
    public var tags: [String: String]

    public init(id: SnapshotID, state: SnapshotState, ownerID: String, volumeSizeGiB: Int, encrypted: Bool, progress: String = "100%",
                startTime: UTCTimestamp? = nil, volumeID: VolumeID? = nil, tags: [String: String] = [:]) {
        self.id = id
        self.state = state
        self.ownerID = ownerID
        self.volumeSizeGiB = volumeSizeGiB
        self.encrypted = encrypted
        self.progress = progress
        self.startTime = startTime
        self.volumeID = volumeID
        self.tags = tags
    }
}

/// One attachment of a volume to an instance.
public struct EC2Attachment: Sendable, Equatable {
    public var volumeID: VolumeID
    public var instanceID: InstanceID
    public var device: String
    public var state: AttachmentState
    /// `nil`: the answer did not say (EC2 always does; some emulators never do).
    public var deleteOnTermination: Bool?

    public init(volumeID: VolumeID, instanceID: InstanceID, device: String, state: AttachmentState, deleteOnTermination: Bool?) {
        self.volumeID = volumeID
        self.instanceID = instanceID
        self.device = device
        self.state = state
        self.deleteOnTermination = deleteOnTermination
    }
}

/// An EBS volume as CreateVolume and DescribeVolumes report it.
public struct EC2Volume: Sendable, Equatable {
    public var id: VolumeID
    public var sizeGiB: Int
    public var availabilityZone: String
    public var state: VolumeState
    public var snapshotID: SnapshotID?
    public var volumeType: String
    public var attachments: [EC2Attachment]
    public var tags: [String: String]

    public init(id: VolumeID, sizeGiB: Int, availabilityZone: String, state: VolumeState, snapshotID: SnapshotID?,
                volumeType: String, attachments: [EC2Attachment] = [], tags: [String: String] = [:]) {
        self.id = id
        self.sizeGiB = sizeGiB
        self.availabilityZone = availabilityZone
        self.state = state
        self.snapshotID = snapshotID
        self.volumeType = volumeType
        self.attachments = attachments
        self.tags = tags
    }
}

/// A response body that is not the document the action returns.
public struct EC2DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public let action: String
    public let problem: String

    public init(action: String, problem: String) {
        self.action = action
        self.problem = problem
    }

    public var description: String { "\(action): unreadable response (\(problem))" }
}

/// Decoders from EC2's XML responses (API version 2016-11-15) to typed values. They find
/// elements by local name, ignore unknown ones and the namespace, and refuse a document
/// that lacks what the action promises.
public enum EC2Decoder {
    public static func document(_ bytes: [UInt8], action: String) throws(EC2DecodeError) -> XMLElement {
        guard let root = parseXML(bytes) else {
            throw EC2DecodeError(action: action, problem: bytes.isEmpty ? "empty body" : "not well-formed XML: \(String(decoding: bytes.prefix(80), as: UTF8.self).quotedForMessage())")
        }
        guard root.name == "\(action)Response" else {
            throw EC2DecodeError(action: action, problem: "root element is <\(root.name)>, expected <\(action)Response>")
        }
        return root
    }

    public static func snapshots(_ bytes: [UInt8]) throws(EC2DecodeError) -> [EC2Snapshot] {
        let root = try document(bytes, action: "DescribeSnapshots")
        guard root.child("snapshotSet") != nil else { throw EC2DecodeError(action: "DescribeSnapshots", problem: "no snapshotSet") }
        var result: [EC2Snapshot] = []
        for item in root.items("snapshotSet") { result.append(try snapshot(item, action: "DescribeSnapshots")) }
        return result
    }

    /// CreateSnapshot answers with the snapshot's fields at the top level.
    public static func createdSnapshot(_ bytes: [UInt8]) throws(EC2DecodeError) -> EC2Snapshot {
        let root = try document(bytes, action: "CreateSnapshot")
        return try snapshot(root, action: "CreateSnapshot")
    }

    private static func snapshot(_ element: XMLElement, action: String) throws(EC2DecodeError) -> EC2Snapshot {
        guard let id = element.value("snapshotId").flatMap(SnapshotID.init), let state = element.value("status") else {
            throw EC2DecodeError(action: action, problem: "a snapshot without id or status")
        }
        return EC2Snapshot(
            id: id, state: SnapshotState(text: state), ownerID: element.value("ownerId") ?? "",
            volumeSizeGiB: try gibibytes(element.value("volumeSize"), action: action),
            encrypted: element.value("encrypted") == "true", progress: element.value("progress") ?? "",
            startTime: element.value("startTime").flatMap(UTCTimestamp.init(iso8601:)),
            volumeID: element.value("volumeId").flatMap(VolumeID.init), tags: tags(element))
    }

    private static func tags(_ element: XMLElement) -> [String: String] {
        var tags: [String: String] = [:]
        for item in element.items("tagSet") {
            if let key = item.value("key") { tags[key] = item.value("value") ?? "" }
        }
        return tags
    }

    /// CreateVolume answers with the volume's fields at the top level.
    public static func createdVolume(_ bytes: [UInt8]) throws(EC2DecodeError) -> EC2Volume {
        let root = try document(bytes, action: "CreateVolume")
        return try volume(root, action: "CreateVolume")
    }

    public static func volumes(_ bytes: [UInt8]) throws(EC2DecodeError) -> [EC2Volume] {
        let root = try document(bytes, action: "DescribeVolumes")
        guard root.child("volumeSet") != nil else { throw EC2DecodeError(action: "DescribeVolumes", problem: "no volumeSet") }
        var result: [EC2Volume] = []
        for item in root.items("volumeSet") { result.append(try volume(item, action: "DescribeVolumes")) }
        return result
    }

    /// AttachVolume and DetachVolume answer with one attachment.
    public static func attachment(_ bytes: [UInt8], action: String) throws(EC2DecodeError) -> EC2Attachment {
        let root = try document(bytes, action: action)
        return try attachment(root, action: action)
    }

    /// Actions whose output is empty (DeleteVolume, ModifyInstanceAttribute), read as the AWS
    /// SDKs read them: HTTP 200 is success. EC2 adds `<return>true</return>`, other
    /// implementations leave it out; only a `<return>` that is there and not `true` is a
    /// refusal. An empty body is success too; a body that is not the action's answer is an
    /// unreadable answer, whose effect the caller checks.
    public static func emptyOutput(_ bytes: [UInt8], action: String) throws(EC2DecodeError) -> Bool {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return true }
        let root = try document(bytes, action: action)
        guard let value = root.value("return") else { return true }
        return value == "true"
    }

    /// A size in GiB as EBS allows it (1 GiB to 64 TiB); 0 when the answer leaves it out. A
    /// negative, huge or non-numeric size is an unreadable answer, never a number to compute with.
    static func gibibytes(_ text: String?, action: String) throws(EC2DecodeError) -> Int {
        guard let text else { return 0 }
        guard let value = Int(text), (1...65536).contains(value) else {
            throw EC2DecodeError(action: action, problem: "size \(text.quotedForMessage(limit: 24)) is not a volume size in GiB")
        }
        return value
    }

    private static func volume(_ element: XMLElement, action: String) throws(EC2DecodeError) -> EC2Volume {
        guard let id = element.value("volumeId").flatMap(VolumeID.init), let state = element.value("status") else {
            throw EC2DecodeError(action: action, problem: "a volume without id or status")
        }
        var attachments: [EC2Attachment] = []
        for item in element.items("attachmentSet") { attachments.append(try attachment(item, action: action)) }
        return EC2Volume(
            id: id, sizeGiB: try gibibytes(element.value("size"), action: action),
            availabilityZone: element.value("availabilityZone") ?? "", state: VolumeState(text: state),
            snapshotID: element.value("snapshotId").flatMap(SnapshotID.init),
            volumeType: element.value("volumeType") ?? "", attachments: attachments, tags: tags(element))
    }

    private static func attachment(_ element: XMLElement, action: String) throws(EC2DecodeError) -> EC2Attachment {
        guard let volume = element.value("volumeId").flatMap(VolumeID.init),
              let instance = element.value("instanceId").flatMap(InstanceID.init),
              let state = element.value("status")
        else { throw EC2DecodeError(action: action, problem: "an attachment without volume, instance or status") }
        return EC2Attachment(volumeID: volume, instanceID: instance, device: element.value("device") ?? "",
                             state: AttachmentState(text: state), deleteOnTermination: element.value("deleteOnTermination").map { $0 == "true" })
    }
}

/// The code, message and request id of an EC2 error response, from either shape AWS uses:
/// `<Response><Errors><Error>…</Error></Errors><RequestID>` (EC2) or
/// `<ErrorResponse><Error>…</Error><RequestId>` (the generic Query form).
public struct EC2ErrorBody: Sendable, Equatable {
    public let code: String
    public let message: String
    public let requestID: String

    public init(code: String, message: String, requestID: String) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    public static func parse(_ bytes: [UInt8]) -> EC2ErrorBody? {
        guard let root = parseXML(bytes), root.name == "Response" || root.name == "ErrorResponse",
              let error = root.descendant("Error"), let code = error.value("Code"), !code.isEmpty
        else { return nil }
        let requestID = root.value("RequestID") ?? root.value("RequestId") ?? ""
        return EC2ErrorBody(code: code, message: error.value("Message") ?? "", requestID: requestID)
    }
}
