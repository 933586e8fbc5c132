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
    /// `snapmount switch`: on an instance, put the release a push staged in use, whole;
    /// activate it and check its health as this host's configuration declares; go back on failure.
    struct SwitchCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "switch",
            abstract: "Put the staged release in use on this instance, whole; activate it, check its health, and go back if either fails.",
            discussion: """
                snapmount push runs it on every instance after it has synced the release into \
                <mount-point>/.snapmount/staging. The tree in use becomes the previous one \
                (--to previous switches back to it). Runs the configuration's activate command \
                and health check; when either fails, switches back and activates the previous \
                release again, and exits 69 (75 when activate timed out). With --json, the \
                last line of standard output says how it ended. See snapmount(8), DEPLOY.
                """
        )

        @OptionGroup var options: ConfigurationOptions

        @Option(help: ArgumentHelp("The tree to put in use: staged, or previous (the one the last switch replaced).", valueName: "staged|previous"),
                transform: OptionValue.side)
        var to = ReleaseTree.Side.staged

        @Option(help: ArgumentHelp("The release the tree must be (its manifest's id); anything else is refused (65).", valueName: "id"),
                transform: OptionValue.release)
        var expect: ReleaseID?

        @Flag(help: "Only get ready for a push: finish a switch that was interrupted, empty the staged tree.")
        var prepare = false

        @Flag(help: "Print how it ended as one line of JSON on standard output.")
        var json = false

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            // Run over ssh by push: a dropped connection must not kill it half way through a switch.
            signal(SIGPIPE, SIG_IGN)
            signal(SIGHUP, SIG_IGN)
            do {
                let configuration = try ConfigLoader.load(configPath: options.config, environment: environment, options: options.given)
                let flow = SwitchFlow(mountPoint: configuration.mountPoint.text, side: to, activation: configuration.activation,
                                      host: .system(environment), clock: SystemClock(), logger: logger)
                flow.expected = expect
                if prepare {
                    try flow.prepare()
                    return
                }
                let report: SwitchReport
                do {
                    report = try flow.run()
                } catch {
                    // The caller tags the volume from this line: it must say that nothing changed.
                    if json { print(flow.unchanged(error).json.text) }
                    throw error
                }
                if json { print(report.json.text) }
                guard report.result == .switched else { throw SwitchError.failed(report) }
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
        }
    }
}

extension OptionValue {
    static func side(_ text: String) throws -> ReleaseTree.Side {
        switch text {
        case "staged": .staged
        case "previous": .previous
        default: throw OptionValueError("is not a tree", expected: "staged or previous")
        }
    }

    static func release(_ text: String) throws -> ReleaseID {
        guard let release = ReleaseID(text) else {
            throw OptionValueError("is not a release identity", expected: "rel-<UTC time>-<random>, or a snapshot id")
        }
        return release
    }
}
