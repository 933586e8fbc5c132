import ArgumentParser
import SnapmountAgent
import SnapmountCore
import SnapmountSystem

extension Snapmount {
    /// `snapmount [run] [--dry-run]`: the boot flow.
    struct RunCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Mount the current release (the boot flow; the default command).",
            discussion: "With --dry-run, check every step without changing anything and print a checklist."
        )

        @OptionGroup var options: ConfigurationOptions

        @Flag(help: "Check every step for real, send mutating EC2 calls with DryRun=true, change nothing; print a checklist.")
        var dryRun = false

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            do {
                let configuration = try ConfigLoader.load(configPath: options.config, environment: environment, options: options.given)
                // From here on SIGTERM and SIGINT stop the run at its next safe point.
                StopSignal.catchSignals()
                let flow = BootFlow(configuration: configuration, environment: environment, host: .system(environment),
                                    mode: dryRun ? .check : .apply, clock: RunClock(limit: configuration.runTimeout), logger: logger)
                let outcome = dryRun ? try flow.run() : try flow.runUntilDeadline()
                if dryRun {
                    for item in flow.checklist { print(item.line) }
                    if case .checked(let status) = outcome, status != .success { throw ExitCode(status.rawValue) }
                }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }

    /// `snapmount status [--json]`.
    struct StatusCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Show what is mounted, from which volume and snapshot, and whether a newer release is published."
        )

        @OptionGroup var options: ConfigurationOptions

        @Flag(help: "Print JSON.")
        var json = false

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            do {
                let configuration = try ConfigLoader.load(configPath: options.config, environment: environment, options: options.given)
                let report = StatusReport.collect(configuration: configuration, environment: environment, host: .system(environment),
                                                  logger: logger)
                print(json ? report.json.pretty() : report.text, terminator: json ? "\n" : "")
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }
}
