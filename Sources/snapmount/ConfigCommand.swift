import ArgumentParser
import SnapmountCore
import SnapmountSystem

extension Snapmount {
    /// `snapmount config`: the effective configuration, each value with where it came from.
    /// The output is itself a valid configuration file.
    struct ConfigCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "config",
            abstract: "Check the configuration and show the effective value of every key.",
            discussion: "Exits 78 and names the file and line of every problem when the configuration is invalid."
        )

        @OptionGroup var options: ConfigurationOptions

        func run() throws {
            let (logger, environment) = try Diagnostics.start()
            let configuration: Configuration
            do {
                configuration = try ConfigLoader.load(configPath: options.config, environment: environment, options: options.given)
            } catch {
                throw Diagnostics.fail(error, logger: logger)
            }
            print(Self.render(configuration), terminator: "")
        }

        static func render(_ configuration: Configuration) -> String {
            let width = ConfigKey.allCases.map(\.rawValue.count).max() ?? 0
            var out = ""
            for key in ConfigKey.allCases {
                let padded = key.rawValue + String(repeating: " ", count: width - key.rawValue.count)
                if let setting = configuration.settings[key] {
                    out += "\(padded) = \(setting.value)   # \(setting.origin)\n"
                } else {
                    out += "# \(padded) =   (not set)\n"
                }
            }
            return out
        }
    }
}
