import ArgumentParser
import Logging
import SnapmountCore
import SnapmountAgent
import SnapmountSystem

@main
struct Snapmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapmount",
        abstract: "Mount the current release's EBS snapshot on this instance at boot.",
        discussion: """
            Configuration comes from /etc/snapmount.conf (or --config, or SNAPMOUNT_CONFIG), \
            SNAPMOUNT_* environment variables and long options; an option beats a variable, \
            which beats the file, which beats the default.

            Exit status: \(ExitStatus.helpSummary). See snapmount(8).
            """,
        version: "snapmount \(SnapmountVersion.current) (\(LibraryVersions.summary))",
        subcommands: [RunCommand.self, StatusCommand.self, ConfigCommand.self, PublishCommand.self, PushCommand.self, DeployCommand.self, RollbackCommand.self, SwitchCommand.self, FleetCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// What every command does first: read the process environment — the only place it is
/// read — set up logging, and check the environment, which ends the process with 78 when a
/// variable is wrong.
enum Diagnostics {
    static func start() throws -> (Logger, AgentEnvironment) {
        // Instance credentials will be in this process's memory: never in a core file.
        try? forbidCoreDumps()
        let variables = processEnvironment()
        let style = LogStyle.detect(journalStream: variables["JOURNAL_STREAM"])
        LoggingSystem.bootstrap { _ in SnapmountLogHandler(style: style) }
        let logger = Logger(label: "snapmount")
        do {
            let environment = try AgentEnvironment(variables)
            Failpoint.arm(environment.failpoint)
            return (logger, environment)
        } catch {
            throw fail(error, logger: logger)
        }
    }

    /// Logs an error — one line per problem — and ends with its exit status.
    static func fail(_ error: any Error, logger: Logger) -> ArgumentParser.ExitCode {
        if let configurationError = error as? ConfigurationError {
            for issue in configurationError.issues { logger.error("\(issue.description)") }
        } else {
            logger.error("\(String(describing: error))")
        }
        return ExitCode(ExitStatus(for: error).rawValue)
    }
}
