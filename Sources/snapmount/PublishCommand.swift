#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import ArgumentParser
import SnapmountAgent
import SnapmountCore
import SnapmountSystem

extension Snapmount {
    /// `snapmount publish`: on the release server, snapshot the release volume and publish
    /// the snapshot's id.
    struct PublishCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish",
            abstract: "Snapshot the release volume (frozen while EC2 takes it) and publish the snapshot's id.",
            discussion: """
                Run on the release server, as root, after the new release is in place. The \
                previous id is kept in <output>.prev, for a rollback. See snapmount(8), PUBLISH.
                """
        )

        @Option(help: ArgumentHelp("Where the release volume is mounted.", valueName: "path", default: AbsolutePath.release), transform: OptionValue.path)
        var mountPoint = AbsolutePath.release

        @Option(help: ArgumentHelp("The release volume (default: the EBS volume mounted at --mount-point).", valueName: "vol-id"),
                transform: OptionValue.volume)
        var volume: VolumeID?

        @Option(help: ArgumentHelp("Where instances read the id: the file the source URL serves, or ssm:/NAME (an SSM parameter).", valueName: "path|ssm:/name"),
                transform: OptionValue.target)
        var output: PublishTarget

        @Option(help: ArgumentHelp("The release's name, tagged on its snapshots; --keep counts within it.", valueName: "name"))
        var release = "release"

        @Option(help: ArgumentHelp("Keep this many of the release's snapshots, the new one included; delete older ones publish made.", valueName: "n"))
        var keep: Int?

        @Option(help: ArgumentHelp("The longest the filesystem stays frozen while CreateSnapshot runs.", valueName: "duration",
                                   default: Self.defaultFreezeLimit),
                transform: OptionValue.duration(in: .seconds(1)...Duration.seconds(60)))
        var freezeLimit = Self.defaultFreezeLimit

        @Option(help: ArgumentHelp("The longest publish takes, the snapshot's completion included.", valueName: "duration", default: Self.defaultTimeout),
                transform: OptionValue.duration(in: .seconds(10)...Duration.seconds(24 * 3600)))
        var timeout = Self.defaultTimeout

        static let defaultFreezeLimit = DurationValue(PublishOptions.defaultFreezeLimit)
        static let defaultTimeout = DurationValue(.seconds(3600))

        @Flag(help: "Check every step (IAM via DryRun), freeze nothing, write nothing; print a checklist.")
        var dryRun = false

        func validate() throws {
            do throws(InvalidValue) { try SnapshotRequest.checkRelease(release) } catch { throw ValidationError("--release \(error.problem); expected \(error.expected)") }
            if let keep, keep < 2 { throw ValidationError("--keep must be at least 2: the published snapshot and the previous one are always kept") }
        }

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            do {
                var options = PublishOptions(mountPoint: mountPoint, volume: volume, target: output, release: release, keep: keep)
                options.freezeLimit = freezeLimit.duration
                StopSignal.catchSignals()
                let terminal: ((String) -> Void)? = isatty(STDERR_FILENO) == 1 && !dryRun
                    ? { text in StandardErrorSink().write(text) } : nil
                let flow = PublishFlow(options: options, environment: environment, host: .system(environment), freezer: SystemFreezer(),
                                       mode: dryRun ? .check : .apply, clock: RunClock(limit: timeout.duration),
                                       logger: logger, progress: SnapshotProgress(logger: logger, terminal: terminal))
                let outcome = try flow.run()
                switch outcome {
                case .checked(let status):
                    for item in flow.checklist { print(item.line) }
                    if status != .success { throw ExitCode(status.rawValue) }
                case .published(let id, _, _):
                    print(id.text)
                }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }
}
