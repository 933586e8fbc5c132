/// The process environment, read once at start (by the command) and checked: the standard
/// AWS variables as the AWS SDKs read them, libcurl's proxy variables, and snapmount's own.
/// Nothing below the command reads the environment; everything gets this value instead.
/// An empty variable counts as unset.
public struct AgentEnvironment: Sendable, Equatable {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION` (the SDKs' order): the region to call instead
    /// of the instance's own.
    public var region: String?
    /// `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`; `nil`: the region's endpoint.
    public var ec2Endpoint: EC2Endpoint?
    /// `AWS_ENDPOINT_URL_SSM`, else `AWS_ENDPOINT_URL`; `nil`: the region's endpoint.
    public var ssmEndpoint: EC2Endpoint?
    /// `AWS_ENDPOINT_URL_AUTO_SCALING`, else `AWS_ENDPOINT_URL`; `nil`: the region's endpoint.
    public var autoScalingEndpoint: EC2Endpoint?
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, without a trailing slash.
    public var imdsEndpoint = IMDSSettings.defaultEndpoint
    /// `AWS_EC2_METADATA_DISABLED=true`
    public var imdsDisabled = false
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `nil`: the instance role.
    public var credentials: AWSCredentials?
    /// `AWS_MAX_ATTEMPTS`, in the standard retry policy.
    public var retry = RetryPolicy()
    /// `AWS_RETRY_MODE`
    public var retryMode = RetryMode.standard
    /// `AWS_CA_BUNDLE`: a PEM file of extra certificates to trust.
    public var caBundle: String?
    public var proxy = ProxySettings()
    /// `SNAPMOUNT_DEV_DIR`, `SNAPMOUNT_SYS_DIR`: where devices are found (tests, containers).
    public var devDirectory = "/dev"
    public var sysDirectory = "/sys"
    /// Where the lock is (`/run/snapmount`: gone at a reboot, as a lock should be) and where
    /// the record of what is mounted is (`/var/lib/snapmount`: it must survive a reboot).
    /// `SNAPMOUNT_STATE_DIR` puts both in one directory.
    public var lockDirectory = "/run/snapmount"
    public var recordDirectory = "/var/lib/snapmount"
    /// `SNAPMOUNT_CONFIG`
    public var configPath: String?
    /// `SNAPMOUNT_FAILPOINT`: crash tests only; debug builds.
    public var failpoint: String?
    /// The `SNAPMOUNT_*` variables, for the configuration's environment layer.
    public var snapmountVariables: [String: String] = [:]

    /// The defaults: no variable set.
    public init() {}

    /// Reads and checks the variables; every problem is reported, each naming its variable.
    public init(_ variables: [String: String]) throws(ConfigurationError) {
        var issues: [ConfigIssue] = []
        func value(_ name: String) -> String? {
            guard let text = variables[name], !text.isEmpty else { return nil }
            return text
        }
        func problem(_ name: String, _ text: String) { issues.append(ConfigIssue(.environment(name), text)) }

        for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            guard let text = value(name) else { continue }
            if IMDSDocuments.isRegionName(text) && text.contains("-") {
                region = text
            } else {
                problem(name, "\(text.quotedForMessage()) is not a region name; expected one such as eu-west-1")
            }
            break
        }
        var reported: Set<String> = []
        func endpoint(_ names: [String]) -> EC2Endpoint? {
            for name in names {
                guard let url = value(name) else { continue }
                do throws(ConfigurationError) {
                    return try EC2Endpoint(url: url)
                } catch {
                    if reported.insert(name).inserted { problem(name, error.issues.map(\.message).joined(separator: "; ")) }
                    return nil
                }
            }
            return nil
        }
        ec2Endpoint = endpoint(["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"])
        ssmEndpoint = endpoint(["AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL"])
        autoScalingEndpoint = endpoint(["AWS_ENDPOINT_URL_AUTO_SCALING", "AWS_ENDPOINT_URL"])
        if let endpoint = value("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            imdsEndpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        }
        imdsDisabled = value("AWS_EC2_METADATA_DISABLED")?.lowercased() == "true"

        switch (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY")) {
        case (let key?, let secret?):
            credentials = AWSCredentials(accessKeyID: key, secretAccessKey: Secret(secret),
                                         sessionToken: value("AWS_SESSION_TOKEN").map(Secret.init))
        case (nil, nil):
            credentials = nil
        case (.some, nil):
            problem("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both, or neither to use the instance role")
        case (nil, .some):
            problem("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both, or neither to use the instance role")
        }

        if let text = value("AWS_MAX_ATTEMPTS") {
            if let attempts = Int(text), (1...100).contains(attempts) {
                retry = RetryPolicy(maxAttempts: attempts)
            } else {
                problem("AWS_MAX_ATTEMPTS", "\(text.quotedForMessage()) is not valid; expected a whole number of attempts from 1 to 100")
            }
        }
        if let text = value("AWS_RETRY_MODE") {
            if let mode = RetryMode(rawValue: text.lowercased()) {
                retryMode = mode
            } else {
                problem("AWS_RETRY_MODE", "\(text.quotedForMessage()) is not valid; expected standard, adaptive or legacy")
            }
        }
        caBundle = value("AWS_CA_BUNDLE")
        proxy = ProxySettings(variables)

        devDirectory = value("SNAPMOUNT_DEV_DIR") ?? devDirectory
        sysDirectory = value("SNAPMOUNT_SYS_DIR") ?? sysDirectory
        if let state = value("SNAPMOUNT_STATE_DIR") {
            lockDirectory = state
            recordDirectory = state
        }
        configPath = value("SNAPMOUNT_CONFIG")
        failpoint = value("SNAPMOUNT_FAILPOINT")
        snapmountVariables = variables.filter { $0.key.hasPrefix("SNAPMOUNT_") }
        guard issues.isEmpty else { throw ConfigurationError(issues) }
    }

    /// IMDS where these variables say it is, with the client's own timeouts and retries.
    public var imds: IMDSSettings {
        IMDSSettings(endpoint: imdsEndpoint, disabled: imdsDisabled)
    }
}

/// `AWS_RETRY_MODE`, as the SDKs name the modes.
public enum RetryMode: String, Sendable, Equatable {
    case standard
    /// Standard, plus slowing down the client's own sending after throttling.
    case adaptive
    /// The SDKs' old mode; snapmount treats it as standard.
    case legacy
}

/// The proxy variables libcurl reads, read the way libcurl reads them: `http_proxy` in
/// lower case only (an `HTTP_PROXY` can come from a request header in CGI programs),
/// `https_proxy` or `HTTPS_PROXY`, `all_proxy` or `ALL_PROXY`, `no_proxy` or `NO_PROXY`.
public struct ProxySettings: Sendable, Equatable {
    public var http: String?
    public var https: String?
    public var all: String?
    public var noProxy: String?

    public init(http: String? = nil, https: String? = nil, all: String? = nil, noProxy: String? = nil) {
        self.http = http
        self.https = https
        self.all = all
        self.noProxy = noProxy
    }

    public init(_ variables: [String: String]) {
        func first(_ names: String...) -> String? {
            names.lazy.compactMap { variables[$0] }.first { !$0.isEmpty }
        }
        self.init(http: first("http_proxy"), https: first("https_proxy", "HTTPS_PROXY"), all: first("all_proxy", "ALL_PROXY"),
                  noProxy: first("no_proxy", "NO_PROXY"))
    }

    /// The proxy for a URL of this scheme, before `noProxy` is applied (libcurl applies it).
    public func proxy(forURL url: String) -> String? {
        url.lowercased().hasPrefix("https://") ? https ?? all : http ?? all
    }
}
