import SnapmountCore
import Testing

private let label = (try? FilesystemLabel(parsing: "code_release"))!
private let volumeID = VolumeID("vol-0123456789abcdef0")!
private let instance = InstanceID("i-0123456789abcdef0")!
private let otherInstance = InstanceID("i-0fedcba9876543210")!
private let gib: UInt64 = 1 << 30

/// What to do with the volume's device: one row per kind of content (DESIGN.md §5 rule 1).
@Suite("Decision: what to do with a probed device")
struct FilesystemDecisionTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let content: DeviceContent
        var expected = Filesystem.ext4
        var zeroed = true
        let action: FilesystemAction
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(name: "ext4 with the label", content: .filesystem(type: "ext4", label: "code_release"), action: .check(.ext4)),
        Row(name: "xfs with the label, xfs expected", content: .filesystem(type: "xfs", label: "code_release"), expected: .xfs,
            action: .check(.xfs)),
        Row(name: "ext4, another label", content: .filesystem(type: "ext4", label: "other"),
            action: .refuse(found: "ext4 filesystem labelled \"other\"")),
        Row(name: "ext4 without a label", content: .filesystem(type: "ext4", label: nil),
            action: .refuse(found: "ext4 filesystem without a label")),
        Row(name: "xfs with the label, ext4 expected", content: .filesystem(type: "xfs", label: "code_release"),
            action: .refuse(found: "xfs filesystem labelled \"code_release\"")),
        Row(name: "a label that differs only in case", content: .filesystem(type: "ext4", label: "CODE_RELEASE"),
            action: .refuse(found: "ext4 filesystem labelled \"CODE_RELEASE\"")),
        Row(name: "blank, zeros at both ends", content: .blank, action: .format(.ext4)),
        Row(name: "blank, xfs expected", content: .blank, expected: .xfs, action: .format(.xfs)),
        Row(name: "no signature but data (encrypted, random)", content: .blank, zeroed: false,
            action: .refuse(found: "data without any known signature (not zeros)")),
        Row(name: "a partition table", content: .other("a gpt partition table"), action: .refuse(found: "a gpt partition table")),
        Row(name: "a RAID member", content: .other("a RAID member (linux_raid_member)"),
            action: .refuse(found: "a RAID member (linux_raid_member)")),
        Row(name: "swap", content: .other("swap space"), action: .refuse(found: "swap space")),
        Row(name: "several signatures", content: .other("several conflicting signatures"),
            action: .refuse(found: "several conflicting signatures")),
    ]

    @Test("fsck / mkfs / refuse, and why", arguments: rows)
    func decide(row: Row) {
        var asked = 0
        let action = FilesystemDecision.decide(row.content, expected: row.expected, label: label) { () -> Bool in
            asked += 1
            return row.zeroed
        }
        #expect(action == row.action)
        // The zero check reads the device: only for a device with no signature.
        #expect(asked == (row.content == .blank ? 1 : 0))
    }

    @Test("a failing zero check is the decision's failure, never a format")
    func zeroCheckFails() {
        struct ReadFailed: Error {}
        #expect(throws: ReadFailed.self) {
            try FilesystemDecision.decide(.blank, expected: .ext4, label: label) { () throws(ReadFailed) -> Bool in throw ReadFailed() }
        }
    }
}

/// Which device is the volume (DESIGN.md §4, §5 rule 2).
@Suite("Decision: which device is the volume")
struct DeviceIdentificationTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let name: String
        let devices: [BlockDevice]
        var attachedAs = "/dev/sdf"
        /// A Xen instance, where names identify.
        var xen = false
        /// The device name expected, and how it was proven; nil: none may be used.
        let found: (String, ProvenDevice.Evidence)?
        var testDescription: String { name }
    }

    static func nvme(_ name: String, serial: String? = "vol0123456789abcdef0", size: UInt64 = gib, node: Bool = true) -> BlockDevice {
        BlockDevice(name: name, serial: serial, sizeBytes: size, number: "259:1", hasNode: node)
    }

    static func disk(_ name: String, size: UInt64 = gib, node: Bool = true) -> BlockDevice {
        BlockDevice(name: name, serial: nil, sizeBytes: size, number: "202:80", hasNode: node)
    }

    static let rows: [Row] = [
        Row(name: "NVMe serial and size", devices: [nvme("nvme0n1", serial: "vol0aaaaaaaaaaaaaaaa0", size: 8 * gib), nvme("nvme1n1")],
            found: ("nvme1n1", .nvmeSerial)),
        Row(name: "NVMe serial, wrong size", devices: [nvme("nvme1n1", size: gib - 512)], found: nil),
        Row(name: "NVMe serial, no device node yet", devices: [nvme("nvme1n1", node: false)], found: nil),
        Row(name: "another volume's serial", devices: [nvme("nvme1n1", serial: "vol0fedcba9876543210")], found: nil),
        Row(name: "multipath: the hidden controller path is skipped, the namespace used",
            devices: [nvme("nvme1c1n1", node: false), nvme("nvme1n1")], found: ("nvme1n1", .nvmeSerial)),
        Row(name: "multipath: a controller path alone is never used", devices: [nvme("nvme1c1n1", node: true)], found: nil),
        Row(name: "Xen: xvdf for /dev/sdf at the size", devices: [disk("xvda", size: 8 * gib), disk("xvdf")], xen: true, found: ("xvdf", .xenName)),
        Row(name: "Xen: sdf itself at the size", devices: [disk("sdf")], xen: true, found: ("sdf", .xenName)),
        Row(name: "Xen: /dev/xvdg attachment", devices: [disk("xvdg")], attachedAs: "/dev/xvdg", xen: true, found: ("xvdg", .xenName)),
        Row(name: "Xen: the right name, the wrong size", devices: [disk("xvdf", size: 2 * gib)], xen: true, found: nil),
        Row(name: "Xen: another name at the size", devices: [disk("xvdg")], xen: true, found: nil),
        Row(name: "Xen: the right name, no node", devices: [disk("xvdf", node: false)], xen: true, found: nil),
        Row(name: "Nitro: a same-size disk named xvdf is never taken", devices: [nvme("nvme0n1", serial: "vol0aaaaaaaaaaaaaaa0", size: 8 * gib), disk("xvdf")],
            found: nil),
        Row(name: "Nitro: a same-size disk named sdf is never taken", devices: [disk("sdf")], found: nil),
        Row(name: "the serial wins over a name match", devices: [disk("xvdf"), nvme("nvme2n1")], xen: true, found: ("nvme2n1", .nvmeSerial)),
        Row(name: "a volume EC2 says has no size is never matched", devices: [nvme("nvme1n1", size: 0)], found: nil),
        Row(name: "nothing attached", devices: [], found: nil),
    ]

    @Test("NVMe serial, Xen name and size, multipath, wrong size", arguments: rows)
    func identify(row: Row) {
        let size = row.name.contains("no size") ? 0 : 1
        let proven = DeviceIdentification.identify(volumeID, sizeGiB: size, attachedAs: row.attachedAs, byName: row.xen, devDirectory: "/dev",
                                                   among: row.devices)
        #expect(proven?.device.name == row.found?.0)
        #expect(proven?.evidence == row.found?.1)
        if let proven { #expect(proven.path == "/dev/\(proven.device.name)") }
    }

    @Test("names identify only on Xen: the hypervisor says xen and no disk has an EBS serial", arguments: [
        ("xen", [disk("xvda"), disk("xvdf")], true),
        ("xen", [nvme("nvme0n1"), disk("xvdf")], false),
        (nil, [disk("xvda"), disk("xvdf")], false),
        (nil, [nvme("nvme0n1")], false),
        ("kvm", [disk("sda")], false),
    ] as [(String?, [BlockDevice], Bool)])
    func namesIdentify(hypervisor: String?, devices: [BlockDevice], expected: Bool) {
        #expect(DeviceIdentification.namesIdentify(hypervisor: hypervisor, among: devices) == expected)
    }

    @Test("multipath controller paths by name", arguments: [
        ("nvme1c1n1", true), ("nvme10c2n31", true), ("nvme1n1", false), ("nvme1n1p1", false), ("nvme1c1n", false),
        ("nvmec1n1", false), ("sda", false), ("xvdf", false),
    ])
    func multipath(name: String, hidden: Bool) {
        #expect(BlockDevice(name: name, serial: nil, sizeBytes: 0, number: "").isMultipathPath == hidden)
    }
}

/// What an attachment state means for the attach step; which tagged volume is reused; what
/// a state means while waiting for `available`.
@Suite("Decision: volume and attachment states")
struct VolumeDecisionTests {
    static func volume(_ state: VolumeState, _ attachments: [(InstanceID, AttachmentState)] = []) -> EC2Volume {
        EC2Volume(id: volumeID, sizeGiB: 1, availabilityZone: "eu-west-1a", state: state, snapshotID: nil, volumeType: "gp3",
                  attachments: attachments.map {
                      EC2Attachment(volumeID: volumeID, instanceID: $0.0, device: "/dev/sdf", state: $0.1, deleteOnTermination: false)
                  })
    }

    @Test("what the attachment means for the next step", arguments: [
        ("no attachment", volume(.available), "attach"),
        ("attaching to us", volume(.inUse, [(instance, .attaching)]), "waitAttached"),
        ("attached to us", volume(.inUse, [(instance, .attached)]), "ready"),
        ("busy on us", volume(.inUse, [(instance, .busy)]), "ready"),
        ("detaching from us", volume(.inUse, [(instance, .detaching)]), "waitDetached"),
        ("detached from us", volume(.available, [(instance, .detached)]), "attach"),
        ("a state EC2 adds later", volume(.inUse, [(instance, .other("hibernating"))]), "waitAttached"),
        ("attached elsewhere", volume(.inUse, [(otherInstance, .attached)]), "elsewhere"),
        ("attaching elsewhere", volume(.inUse, [(otherInstance, .attaching)]), "elsewhere"),
    ])
    func attachment(_ name: String, volume: EC2Volume, next: String) {
        let decided = VolumeDecisions.attachment(of: volume, for: instance)
        let kind: String
        switch decided {
        case .attach: kind = "attach"
        case .waitAttached: kind = "waitAttached"
        case .waitDetached: kind = "waitDetached"
        case .ready: kind = "ready"
        case .elsewhere(let other): kind = other == otherInstance ? "elsewhere" : "elsewhere (wrong instance)"
        }
        #expect(kind == next, "\(name)")
    }

    @Test("which tagged volume is reused")
    func reusable() {
        func tagged(_ id: String, _ state: VolumeState, attachedToUs: Bool = false) -> EC2Volume {
            var volume = Self.volume(state, attachedToUs ? [(instance, .attached)] : [])
            volume.id = VolumeID(id) ?? volumeID
            return volume
        }
        let gone = tagged("vol-00000000000000001", .deleting)
        let failed = tagged("vol-00000000000000002", .error)
        let creating = tagged("vol-00000000000000003", .creating)
        let available = tagged("vol-00000000000000004", .available)
        let attached = tagged("vol-00000000000000005", .inUse, attachedToUs: true)
        #expect(VolumeDecisions.reusable([gone, failed, creating, available, attached], for: instance) == attached)
        #expect(VolumeDecisions.reusable([gone, creating, available], for: instance) == available)
        #expect(VolumeDecisions.reusable([gone, failed, creating], for: instance) == creating)
        #expect(VolumeDecisions.reusable([gone, failed, tagged("vol-00000000000000006", .deleted)], for: instance) == nil)
        #expect(VolumeDecisions.reusable([], for: instance) == nil)
    }

    @Test("what a state means while waiting for available", arguments: [
        (volume(.creating), AvailabilityNext.wait), (volume(.available), .ready), (volume(.error), .failed),
        (volume(.inUse, [(instance, .attached)]), .ready), (volume(.inUse, [(otherInstance, .attached)]), .elsewhere(otherInstance)),
        (volume(.other("optimizing")), .wait),
    ])
    func availability(volume: EC2Volume, next: AvailabilityNext) {
        #expect(VolumeDecisions.availability(of: volume, for: instance) == next)
    }

    @Test("states read from and written as EC2's text; unknown ones are kept, not guessed")
    func stateText() {
        #expect(VolumeState(text: "in-use") == .inUse)
        #expect(VolumeState.inUse.text == "in-use")
        #expect(VolumeState(text: "optimizing") == .other("optimizing"))
        #expect(VolumeState(text: "optimizing").text == "optimizing")
        #expect(AttachmentState(text: "busy") == .busy)
        #expect(SnapshotState(text: "completed") == .completed)
        #expect(SnapshotState(text: "Completed") == .other("Completed"))
        for (state, text) in VolumeState.known { #expect(VolumeState(text: text) == state) }
        for (state, text) in AttachmentState.known { #expect(AttachmentState(text: text).text == state.text) }
        #expect(VolumeState.deleting.isGone && VolumeState.deleted.isGone && !VolumeState.available.isGone)
    }
}

@Suite("Decision: fsck's exit status and the mount point")
struct HostDecisionTests {
    @Test("fsck exit status: 4 refuses, 8 and 32 are worth another run, 16 and 128 are fsck's own failure", arguments: [
        (Int32(0), FsckOutcome.clean), (1, .corrected), (2, .correctedRebootAdvised), (3, .correctedRebootAdvised),
        (4, .uncorrected), (5, .uncorrected), (6, .uncorrected), (8, .notChecked), (12, .notChecked), (32, .notChecked),
        (36, .notChecked), (16, .fsckBroken), (128, .fsckBroken), (136, .fsckBroken),
    ])
    func fsck(status: Int32, outcome: FsckOutcome) {
        #expect(FsckOutcome(status: status) == outcome)
    }

    static let entry = MountInfo(device: "259:1", mountPoint: "/release", type: "ext4", source: "/dev/nvme1n1")
    static let ebs = BlockDevice(name: "nvme1n1", serial: "vol0123456789abcdef0", sizeBytes: gib, number: "259:1")
    static let release = DeviceContent.filesystem(type: "ext4", label: "code_release")

    @Test("what is mounted at the mount point", arguments: [
        ("nothing", nil, nil, nil, MountPointState.notMounted),
        ("the release volume", entry, ebs, release, .release(device: "/dev/nvme1n1")),
        ("a Xen release volume", entry, BlockDevice(name: "xvdf", serial: nil, sizeBytes: gib, number: "202:80"), release,
         .release(device: "/dev/xvdf")),
        ("an EBS volume with another label", entry, ebs, .filesystem(type: "ext4", label: "data"), .other(source: "/dev/nvme1n1")),
        ("a local NVMe disk with the label", entry, BlockDevice(name: "nvme1n1", serial: "AWS1234", sizeBytes: gib, number: "259:1"),
         release, .other(source: "/dev/nvme1n1")),
        ("a device the scan does not know (tmpfs, NFS)", MountInfo(device: "0:52", mountPoint: "/release", type: "tmpfs", source: "tmpfs"),
         nil, nil, .other(source: "tmpfs")),
        ("an EBS volume that could not be probed", entry, ebs, nil, .other(source: "/dev/nvme1n1")),
    ] as [(String, MountInfo?, BlockDevice?, DeviceContent?, MountPointState)])
    func mountPoint(_ name: String, entry: MountInfo?, device: BlockDevice?, content: DeviceContent?, state: MountPointState) {
        #expect(MountPointCheck.evaluate(entry, device: device, devDirectory: "/dev", content: content, label: label) == state, "\(name)")
    }
}
