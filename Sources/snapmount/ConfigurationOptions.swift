import ArgumentParser
import SnapmountCore

/// The configuration file and one long option per configuration key (DESIGN.md §3); shared
/// by every command that reads the configuration.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Configuration file (default /etc/snapmount.conf).", valueName: "path"))
    var config: String?

    @Option(name: .customLong(ConfigKey.source.rawValue), help: help(.source)) var source: String?
    @Option(name: .customLong(ConfigKey.mountPoint.rawValue), help: help(.mountPoint)) var mountPoint: String?
    @Option(name: .customLong(ConfigKey.label.rawValue), help: help(.label)) var label: String?
    @Option(name: .customLong(ConfigKey.filesystem.rawValue), help: help(.filesystem)) var filesystem: String?
    @Option(name: .customLong(ConfigKey.device.rawValue), help: help(.device)) var device: String?
    @Option(name: .customLong(ConfigKey.volumeType.rawValue), help: help(.volumeType)) var volumeType: String?
    @Option(name: .customLong(ConfigKey.volumeSize.rawValue), help: help(.volumeSize)) var volumeSize: String?
    @Option(name: .customLong(ConfigKey.iops.rawValue), help: help(.iops)) var iops: String?
    @Option(name: .customLong(ConfigKey.throughput.rawValue), help: help(.throughput)) var throughput: String?
    @Option(name: .customLong(ConfigKey.encrypted.rawValue), help: help(.encrypted)) var encrypted: String?
    @Option(name: .customLong(ConfigKey.kmsKeyID.rawValue), help: help(.kmsKeyID)) var kmsKeyID: String?
    @Option(name: .customLong(ConfigKey.tags.rawValue), help: help(.tags)) var tags: String?
    @Option(name: .customLong(ConfigKey.initializationRate.rawValue), help: help(.initializationRate)) var initializationRate: String?
    @Option(name: .customLong(ConfigKey.deviceTimeout.rawValue), help: help(.deviceTimeout)) var deviceTimeout: String?
    @Option(name: .customLong(ConfigKey.runTimeout.rawValue), help: help(.runTimeout)) var runTimeout: String?
    @Option(name: .customLong(ConfigKey.snapshotOwner.rawValue), help: help(.snapshotOwner)) var snapshotOwner: String?
    @Option(name: .customLong(ConfigKey.fstab.rawValue), help: help(.fstab)) var fstab: String?
    @Option(name: .customLong(ConfigKey.mountOptions.rawValue), help: help(.mountOptions)) var mountOptions: String?
    @Option(name: .customLong(ConfigKey.activate.rawValue), help: help(.activate)) var activate: String?
    @Option(name: .customLong(ConfigKey.activateTimeout.rawValue), help: help(.activateTimeout)) var activateTimeout: String?
    @Option(name: .customLong(ConfigKey.healthCheck.rawValue), help: help(.healthCheck)) var healthCheck: String?
    @Option(name: .customLong(ConfigKey.healthTimeout.rawValue), help: help(.healthTimeout)) var healthTimeout: String?

    /// The values given on the command line, by key.
    var given: [ConfigKey: String] {
        let pairs: [(ConfigKey, String?)] = [
            (.source, source), (.mountPoint, mountPoint), (.label, label), (.filesystem, filesystem),
            (.device, device), (.volumeType, volumeType), (.volumeSize, volumeSize), (.iops, iops),
            (.throughput, throughput), (.encrypted, encrypted), (.kmsKeyID, kmsKeyID), (.tags, tags),
            (.initializationRate, initializationRate),
            (.deviceTimeout, deviceTimeout), (.runTimeout, runTimeout), (.snapshotOwner, snapshotOwner), (.fstab, fstab),
            (.mountOptions, mountOptions), (.activate, activate), (.activateTimeout, activateTimeout),
            (.healthCheck, healthCheck), (.healthTimeout, healthTimeout),
        ]
        return Dictionary(uniqueKeysWithValues: pairs.compactMap { key, value in value.map { (key, $0) } })
    }

    private static func help(_ key: ConfigKey) -> ArgumentHelp {
        ArgumentHelp("\(key.summary) [env: \(key.environmentVariable)]", valueName: key.valueName)
    }
}
