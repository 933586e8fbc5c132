#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SnapmountCore

/// Reads the configuration file and layers it with the environment and the options.
public enum ConfigLoader {
    public static let defaultPath = "/etc/snapmount.conf"
    /// Larger than any real configuration; a bound so a wrong path cannot exhaust memory.
    static let fileSizeLimit = 256 * 1024

    /// Which file to read: `--config`, else `SNAPMOUNT_CONFIG`, else the default. An
    /// explicitly named file must exist; the default file may be absent.
    public static func load(configPath: String?, environment: AgentEnvironment,
                            options: [ConfigKey: String], defaultPath: String = defaultPath)
        throws(ConfigurationError) -> Configuration
    {
        let explicit = configPath ?? environment.configPath
        let path = explicit ?? defaultPath
        var file: ConfigFile?
        var issues: [ConfigIssue] = []
        do {
            let bytes = try readFile(path, limit: fileSizeLimit)
            (file, issues) = ConfigFile.parse(bytes, path: path)
        } catch where error.errno == ENOENT && explicit == nil {
            file = nil
        } catch {
            throw ConfigurationError([ConfigIssue(nil, "cannot read the configuration file: \(error)")])
        }
        return try Configuration.resolve(file: file, fileIssues: issues, environment: environment.snapmountVariables, options: options)
    }
}
