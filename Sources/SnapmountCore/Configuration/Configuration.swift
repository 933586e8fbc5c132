/// The settings for a new volume (CreateVolume's parameters).
public struct VolumeSettings: Sendable, Equatable {
    public var type: VolumeType = .gp3
    /// GiB; `nil` means the snapshot's size.
    public var sizeGiB: Int?
    public var iops: Int?
    /// MiB/s
    public var throughput: Int?
    /// `nil` means the snapshot's setting.
    public var encrypted: Bool?
    public var kmsKeyID: KMSKeyID?
    public var tags: [VolumeTag] = []
    /// MiB/s: EBS fetches the snapshot's blocks at this provisioned rate instead of lazily on
    /// first read (`VolumeInitializationRate`).
    public var initializationRate: Int?

    public init() {}
}

/// The effective value of one key and where it came from.
public struct ConfigSetting: Sendable, Equatable {
    public let value: String
    public let origin: ConfigOrigin
}

/// The validated configuration: every key of DESIGN.md §3, typed. Built only by
/// ``resolve(file:fileIssues:environment:options:)``, so a value that exists is a valid one.
public struct Configuration: Sendable, Equatable {
    public var source: SnapshotSource
    public var mountPoint: AbsolutePath
    public var label: FilesystemLabel
    public var filesystem: Filesystem
    public var device: AttachmentDeviceName
    public var volume: VolumeSettings
    public var deviceTimeout: Duration
    /// The whole run's deadline; every wait and retry is bounded by what is left of it.
    public var runTimeout: Duration
    public var snapshotOwner: SnapshotOwner
    public var fstab: AbsolutePath
    public var mountOptions: MountOptions
    /// What a new release needs on this host: `activate`, `health-check` and their timeouts.
    public var activation: Activation
    /// The effective text and origin of every key that has a value.
    public var settings: [ConfigKey: ConfigSetting]

    /// Layers the sources — option > environment > file > default — and validates every
    /// value given in any layer, so a broken file line is reported even while an option
    /// overrides it. All problems are reported together.
    ///
    /// - Parameters:
    ///   - file: the parsed configuration file, if one was read.
    ///   - fileIssues: what ``ConfigFile/parse(_:path:)`` found wrong with it.
    ///   - environment: the process environment; only `SNAPMOUNT_*` names are read. An empty
    ///     variable counts as unset.
    ///   - options: values given as long options, by key.
    public static func resolve(
        file: ConfigFile?, fileIssues: [ConfigIssue] = [], environment: [String: String],
        options: [ConfigKey: String]
    ) throws(ConfigurationError) -> Configuration {
        var issues = fileIssues
        var settings: [ConfigKey: ConfigSetting] = [:]

        var offered: Set<ConfigKey> = []
        func offer(_ key: ConfigKey, _ value: String, _ origin: ConfigOrigin) {
            offered.insert(key)
            do {
                try check(key, value)
                settings[key] = ConfigSetting(value: value, origin: origin)
            } catch {
                issues.append(ConfigIssue(origin, "\(key): \(value.quotedForMessage()) \(error.problem); expected \(error.expected)"))
            }
        }

        for key in ConfigKey.allCases {
            if let value = key.defaultValue { settings[key] = ConfigSetting(value: value, origin: .defaultValue) }
        }
        for entry in file?.entries ?? [] {
            offer(entry.key, entry.value, .file(path: file?.path ?? "", line: entry.line))
        }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("SNAPMOUNT_") {
            if let key = ConfigKey.allCases.first(where: { $0.environmentVariable == name }) {
                if !value.isEmpty { offer(key, value, .environment(name)) }
            } else if !ConfigKey.otherEnvironmentVariables.contains(name) {
                var message = "unknown variable \(name)"
                if let hint = ConfigKey.closest(to: String(name.dropFirst("SNAPMOUNT_".count))) {
                    message += " (did you mean \(hint.environmentVariable)?)"
                }
                issues.append(ConfigIssue(.environment(name), message))
            }
        }
        for (key, value) in options.sorted(by: { $0.key < $1.key }) {
            offer(key, value, .option(key.optionName))
        }

        guard offered.contains(.source) else {
            issues.append(ConfigIssue(nil, "source is required: set `source = http://…/snap.txt` (or ssm:/NAME, or tag:KEY=VALUE) in the configuration file, SNAPMOUNT_SOURCE, or --source"))
            throw ConfigurationError(issues)
        }
        guard issues.isEmpty else { throw ConfigurationError(issues) }

        do {
            let configuration = try build(settings)
            let crossIssues = configuration.crossFieldIssues()
            guard crossIssues.isEmpty else { throw ConfigurationError(crossIssues) }
            return configuration
        } catch let error as ConfigurationError {
            throw error
        } catch {
            // Unreachable: every value was checked above.
            throw ConfigurationError([ConfigIssue(nil, "internal error: \(error)")])
        }
    }

    /// Parses one value for its key, discarding the result.
    static func check(_ key: ConfigKey, _ text: String) throws(InvalidValue) {
        switch key {
        case .source: _ = try SnapshotSource(parsing: text)
        case .mountPoint: _ = try AbsolutePath(parsing: text)
        case .fstab: _ = try AbsolutePath(parsing: text)
        case .label: _ = try FilesystemLabel(parsing: text)
        case .filesystem: _ = try Filesystem(parsing: text)
        case .device: _ = try AttachmentDeviceName(parsing: text)
        case .volumeType: _ = try VolumeType(parsing: text)
        case .volumeSize: _ = try parseVolumeSize(text)
        case .iops: _ = try parseInteger(text, in: 100...256_000, unit: "IOPS")
        case .throughput: _ = try parseInteger(text, in: 125...2000, unit: "MiB/s")
        case .initializationRate: _ = try parseInteger(text, in: 100...300, unit: "MiB/s")
        case .encrypted: _ = try parseBoolean(text)
        case .kmsKeyID: _ = try KMSKeyID(parsing: text)
        case .tags: _ = try VolumeTag.parseList(text)
        case .deviceTimeout:
            let duration = try DurationText.parse(text)
            guard duration >= .seconds(1), duration <= .seconds(3600) else {
                throw InvalidValue("is out of range", expected: "a duration from 1s to 1h")
            }
        case .runTimeout:
            let duration = try DurationText.parse(text)
            guard duration >= .seconds(10), duration <= .seconds(7200) else {
                throw InvalidValue("is out of range", expected: "a duration from 10s to 2h")
            }
        case .snapshotOwner: _ = try SnapshotOwner(parsing: text)
        case .mountOptions: _ = try MountOptions(parsing: text)
        case .activate: _ = try HostCommand(parsing: text)
        case .healthCheck: _ = try HealthCheck(parsing: text)
        case .activateTimeout, .healthTimeout:
            let duration = try DurationText.parse(text)
            guard duration >= .seconds(1), duration <= .seconds(3600) else {
                throw InvalidValue("is out of range", expected: "a duration from 1s to 1h")
            }
        }
    }

    private static func build(_ settings: [ConfigKey: ConfigSetting]) throws -> Configuration {
        func text(_ key: ConfigKey) -> String? { settings[key]?.value }
        func required(_ key: ConfigKey) -> String { text(key) ?? key.defaultValue ?? "" }

        var volume = VolumeSettings()
        volume.type = try VolumeType(parsing: required(.volumeType))
        volume.sizeGiB = try text(.volumeSize).map(parseVolumeSize)
        volume.iops = try text(.iops).map { try parseInteger($0, in: 100...256_000, unit: "IOPS") }
        volume.throughput = try text(.throughput).map { try parseInteger($0, in: 125...2000, unit: "MiB/s") }
        volume.encrypted = try text(.encrypted).map(parseBoolean)
        volume.kmsKeyID = try text(.kmsKeyID).map { try KMSKeyID(parsing: $0) }
        volume.tags = try text(.tags).map(VolumeTag.parseList) ?? []
        volume.initializationRate = try text(.initializationRate).map { try parseInteger($0, in: 100...300, unit: "MiB/s") }
        var activation = Activation()
        activation.command = try text(.activate).map { try HostCommand(parsing: $0) }
        activation.commandTimeout = try DurationText.parse(required(.activateTimeout))
        activation.healthCheck = try text(.healthCheck).map { try HealthCheck(parsing: $0) }
        activation.healthTimeout = try DurationText.parse(required(.healthTimeout))

        return Configuration(
            source: try SnapshotSource(parsing: required(.source)),
            mountPoint: try AbsolutePath(parsing: required(.mountPoint)),
            label: try FilesystemLabel(parsing: required(.label)),
            filesystem: try Filesystem(parsing: required(.filesystem)),
            device: try AttachmentDeviceName(parsing: required(.device)),
            volume: volume,
            deviceTimeout: try DurationText.parse(required(.deviceTimeout)),
            runTimeout: try DurationText.parse(required(.runTimeout)),
            snapshotOwner: try SnapshotOwner(parsing: required(.snapshotOwner)),
            fstab: try AbsolutePath(parsing: required(.fstab)),
            mountOptions: try MountOptions(parsing: required(.mountOptions)),
            activation: activation,
            settings: settings)
    }

    /// Rules between keys: the label must fit the filesystem, IOPS and throughput only
    /// where the volume type takes them, a KMS key only for an encrypted volume.
    private func crossFieldIssues() -> [ConfigIssue] {
        var issues: [ConfigIssue] = []
        func origin(_ key: ConfigKey) -> ConfigOrigin? { settings[key]?.origin }

        if case .tag = source, snapshotOwner == .any {
            issues.append(ConfigIssue(origin(.snapshotOwner), "snapshot-owner: any cannot go with a tag: source: anyone can make a public snapshot with any tag; name the owner (self or an account id)"))
        }
        if label.text.utf8.count > filesystem.maximumLabelLength {
            issues.append(ConfigIssue(origin(.label), "label: \(label.text.quotedForMessage()) is \(label.text.utf8.count) bytes, but \(filesystem) labels hold at most \(filesystem.maximumLabelLength)"))
        }
        if volume.iops != nil && !volume.type.supportsIOPS {
            issues.append(ConfigIssue(origin(.iops), "iops: volume type \(volume.type) does not take provisioned IOPS; remove iops or use gp3, io1 or io2"))
        }
        if volume.iops == nil && volume.type.requiresIOPS {
            issues.append(ConfigIssue(origin(.volumeType), "volume-type: \(volume.type) needs iops to be set"))
        }
        if volume.throughput != nil && !volume.type.supportsThroughput {
            issues.append(ConfigIssue(origin(.throughput), "throughput: only gp3 volumes take a throughput setting, not \(volume.type)"))
        }
        if volume.kmsKeyID != nil && volume.encrypted != true {
            issues.append(ConfigIssue(origin(.kmsKeyID), "kms-key-id: a KMS key needs encrypted = true"))
        }
        return issues
    }
}
