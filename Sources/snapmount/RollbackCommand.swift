import ArgumentParser
import SnapmountAgent
import SnapmountCore
import SnapmountSystem

extension Snapmount {
    /// `snapmount rollback`: on the release server, publish the previous release again.
    struct RollbackCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rollback",
            abstract: "Publish the previous release again (<output>.prev, or the SSM parameter's previous value).",
            discussion: """
                Run on the release server. Checks that the previous release's snapshot is still \
                there and completed, then publishes it; the current one becomes the previous one, \
                so a second rollback goes forward again. Instances converge to it at their next \
                boot. See snapmount(8), ROLLBACK.
                """
        )

        @Option(help: ArgumentHelp("The output publish writes: the file the source URL serves, or ssm:/NAME.", valueName: "path|ssm:/name"),
                transform: OptionValue.target)
        var output: PublishTarget

        @Flag(help: "Say what would be published again; change nothing.")
        var dryRun = false

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            do {
                let flow = RollbackFlow(target: output, mode: dryRun ? .check : .apply,
                                        lockDirectory: environment.lockDirectory)
                let session = try CloudSession.connect(environment: environment, logger: logger)
                let outcome = try flow.run(session: session, clock: SystemClock(), logger: logger)
                if dryRun {
                    print("would publish \(outcome.published) (release \(outcome.identity)) again in \(output); it names \(outcome.replaced)")
                } else {
                    print("\(output) names \(outcome.published) (release \(outcome.identity)) again; it named \(outcome.replaced)")
                }
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }
}
