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
    /// `snapmount push`: on the release server, after `publish`, rsync the release to the
    /// instances already running in the Auto Scaling groups.
    struct PushCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "push",
            abstract: "Push the release to the running instances of Auto Scaling groups: sync, switch, activate, check.",
            discussion: """
                Run on the release server after snapmount publish: the release here must be \
                the published one (its manifest). On each host, rsync fills a staged tree \
                beside the release in use (unchanged files hard-linked), the manifest last; \
                the host's snapmount switch then puts it in use whole, runs the host's \
                activate command and health check, and goes back to the release it had if \
                either fails. The volume's identity tag follows what the host holds. Host \
                keys are known per instance id. Lists the groups again until no new instance \
                appears; exits 69 naming the hosts that failed or went back. See \
                snapmount(8), PUSH and DEPLOY.
                """
        )

        @OptionGroup var push: PushArguments

        func run() throws {
            try push.run(configure: { _ in }, waves: false, json: false)
        }
    }

    /// `snapmount deploy`: the published release to the groups' instances in waves, each
    /// activated and checked; stopped past --max-failures, the moved hosts put back with
    /// --rollback-on-failure.
    struct DeployCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "deploy",
            abstract: "Deploy the published release to Auto Scaling groups in waves: sync, switch, activate, check; stop and roll back on failure.",
            discussion: """
                Run on the release server after snapmount publish. Each wave (--wave N or P% \
                of the hosts; --by-zone: one availability zone at a time) is pushed as \
                snapmount push does; after each wave, failures past --max-failures stop the \
                deployment, and with --rollback-on-failure the hosts it moved go back to the \
                release they had and the published id to the previous release. A progress \
                line per wave, the table (or --json) at the end; exits 69 naming the hosts \
                that failed. See snapmount(8), DEPLOY.
                """
        )

        @OptionGroup var push: PushArguments

        @Option(help: ArgumentHelp("Hosts per wave: a number, or a share of the hosts (rounded up); 1 when not given.", valueName: "n|p%"),
                transform: OptionValue.hostCount)
        var wave = HostCount.hosts(1)

        @Flag(help: "Each wave within one availability zone, zone after zone.")
        var byZone = false

        @Option(help: ArgumentHelp("Failures the deployment goes on with (a share rounds down; 0 when not given); past them it stops after the wave.", valueName: "n|p%"),
                transform: OptionValue.hostCount)
        var maxFailures = HostCount.hosts(0)

        @Flag(help: "When it stops: the hosts it moved go back to the release they had, the published id to the previous release.")
        var rollbackOnFailure = false

        @Flag(help: "Print the result as JSON on standard output instead of the table.")
        var json = false

        func validate() throws {
            if case .hosts(0) = wave { throw ValidationError("--wave must be at least 1 host") }
        }

        func run() throws {
            try push.run(configure: { options in
                options.wave = wave
                options.byZone = byZone
                options.maxFailures = maxFailures
                options.rollbackOnFailure = rollbackOnFailure
            }, waves: true, json: json)
        }
    }
}

/// The options push and deploy share, and how either runs.
struct PushArguments: ParsableArguments {
    @Option(name: .customLong("group"), help: ArgumentHelp("An Auto Scaling group whose instances get the release (repeatable).", valueName: "name"))
    var groups: [String] = []

    @Option(help: ArgumentHelp("The release's directory here, and where it is mounted on the instances.", valueName: "path",
                               default: AbsolutePath.release),
            transform: OptionValue.remotePath)
    var mountPoint = AbsolutePath.release

    @Option(help: ArgumentHelp("Where publish wrote the id (its --output): the release here must be that one.", valueName: "path|ssm:/name"),
            transform: OptionValue.target)
    var published: PublishTarget

    @Option(help: ArgumentHelp("Hosts synced at once.", valueName: "n"))
    var parallel = 8

    @Option(help: ArgumentHelp("The ssh command and its options, quoted as for a shell.", valueName: "command", default: Self.defaultSSH),
            transform: OptionValue.command)
    var ssh = Self.defaultSSH

    static let defaultSSH = CommandWords(words: ["ssh"])

    @Option(help: ArgumentHelp("The user to log in as on the instances.", valueName: "name"))
    var user = "root"

    // Accepted for scripts written for the push that kept pushed.json; the volume's identity tag replaced it.
    @Option(help: .hidden)
    var remoteStateDir: String?

    @Option(help: ArgumentHelp("The instances' host keys, known by instance id; a new instance is accepted on first contact.", valueName: "path",
                               default: PushOptions.defaultKnownHosts),
            transform: OptionValue.path)
    var knownHosts = PushOptions.defaultKnownHosts

    @Option(help: ArgumentHelp("The longest one host's sync may take.", valueName: "duration", default: Self.defaultHostTimeout),
            transform: OptionValue.duration(in: .seconds(10)...Duration.seconds(24 * 3600)))
    var hostTimeout = Self.defaultHostTimeout

    @Option(help: ArgumentHelp("How long an instance still launching may stay unreachable.", valueName: "duration", default: Self.defaultLaunchWait),
            transform: OptionValue.duration(in: .seconds(0)...Duration.seconds(3600)))
    var launchWait = Self.defaultLaunchWait

    @Option(help: ArgumentHelp("snapmount on the instances, as a command for their shell.", valueName: "command", default: Self.defaultRemote),
            transform: OptionValue.command)
    var remoteSnapmount = Self.defaultRemote

    static let defaultRemote = CommandWords(words: ["snapmount"])

    @Option(help: ArgumentHelp("The longest one host's switch may take, activation and health check included.", valueName: "duration",
                               default: Self.defaultSwitchTimeout),
            transform: OptionValue.duration(in: .seconds(10)...Duration.seconds(24 * 3600)))
    var switchTimeout = Self.defaultSwitchTimeout

    static let defaultSwitchTimeout = DurationValue(PushOptions.defaultSwitchTimeout)
    static let defaultHostTimeout = DurationValue(PushOptions.defaultHostTimeout)
    static let defaultLaunchWait = DurationValue(PushOptions.defaultLaunchWait)

    @Flag(help: "List the instances and check each (the mount, rsync -n); send and record nothing.")
    var dryRun = false

    func validate() throws {
        try OptionValue.checkGroups(groups)
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be from 1 to 64") }
        guard !user.isEmpty, user.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }), user.first != "-" else {
            throw ValidationError("--user \(user.quotedForMessage()) is not a user name (letters, digits, . _ -)")
        }
    }

    func run(configure: (inout PushOptions) -> Void, waves: Bool, json: Bool) throws {
        let (logger, environment) = try Diagnostics.start()
        var options = PushOptions(groups: groups, directory: mountPoint, published: published)
        options.parallel = parallel
        options.ssh = ssh.words
        options.user = user
        options.knownHosts = knownHosts.text
        options.lockDirectory = environment.lockDirectory
        options.hostTimeout = hostTimeout.duration
        options.launchWait = launchWait.duration
        options.remoteSnapmount = remoteSnapmount.words
        options.switchTimeout = switchTimeout.duration
        configure(&options)
        StopSignal.catchSignals()
        // ssh finds its keys and agent through these; nothing else of the environment reaches it.
        var runner = SystemCommandRunner()
        let variables = processEnvironment()
        runner.environment = ["HOME", "SSH_AUTH_SOCK"].compactMap { name in variables[name].map { "\(name)=\($0)" } }
        let terminal: (@Sendable (String) -> Void)? = isatty(STDERR_FILENO) == 1 ? { @Sendable text in StandardErrorSink().write(text) } : nil
        let flow = PushFlow(options: options, mode: dryRun ? .check : .apply, clock: SystemClock(), logger: logger, runner: runner,
                            mounter: SystemMounter(), terminal: terminal) {
            try CloudSession.connect(environment: environment, logger: logger)
        }
        func show(_ rows: [HostReport], succeeded: Bool) {
            if json {
                print(PushFlow.json(rows, summary: flow.lastSummary, succeeded: succeeded).text)
            } else if !rows.isEmpty {
                print(PushFlow.table(rows, waves: waves), terminator: "")
            }
        }
        do {
            show(try flow.run(), succeeded: true)
        } catch {
            show(flow.lastReports, succeeded: false)
            throw Diagnostics.fail(error, logger: logger)
        }
    }
}

/// A command and its arguments given as one option, read once (``ShellWords``).
struct CommandWords: Sendable, CustomStringConvertible {
    var words: [String]

    var description: String { words.joined(separator: " ") }
}

extension OptionValue {
    static func hostCount(_ text: String) throws -> HostCount {
        guard let count = HostCount(text) else { throw OptionValueError("is not a number of hosts", expected: "N (0 or more) or P% (1% to 100%)") }
        return count
    }
}
