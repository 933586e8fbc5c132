import ArgumentParser
import SnapmountAgent
import SnapmountCore
import SnapmountSystem

extension Snapmount {
    /// `snapmount fleet`: which instance of the groups holds which release, from the volumes'
    /// tags; no ssh.
    struct FleetCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fleet",
            abstract: "Show every instance of Auto Scaling groups and the release its volume holds (from the volume tags; no ssh).",
            discussion: """
                Lists the groups (DescribeAutoScalingGroups), their instances \
                (DescribeInstances) and release volumes (DescribeVolumes): each instance's \
                state, zone, lifecycle state, the release its volume holds and how the last \
                push to it ended; with --published, how many hold the published release. \
                See snapmount(8), FLEET.
                """
        )

        @Option(name: .customLong("group"), help: ArgumentHelp("An Auto Scaling group to show (repeatable).", valueName: "name"))
        var groups: [String] = []

        @Option(help: ArgumentHelp("Where the instances mount the release (which of their volumes is the release volume).", valueName: "path",
                                   default: AbsolutePath.release),
                transform: OptionValue.path)
        var mountPoint = AbsolutePath.release

        @Option(help: ArgumentHelp("Where publish wrote the id (its --output): count the instances on that release.", valueName: "path|ssm:/name"),
                transform: OptionValue.target)
        var published: PublishTarget?

        @Flag(help: "Print JSON.")
        var json = false

        func validate() throws {
            try OptionValue.checkGroups(groups)
        }

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            do {
                let session = try CloudSession.connect(environment: environment, logger: logger)
                let report = try FleetReport.collect(groups: groups, mountPoint: mountPoint.text, published: published, session: session)
                print(json ? report.json.pretty() : report.table, terminator: json ? "\n" : "")
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }
}
