/// Where the instance metadata service is, from the standard AWS variables (``AgentEnvironment``).
public struct IMDSSettings: Sendable, Equatable {
    public static let defaultEndpoint = "http://169.254.169.254"

    public var endpoint: String
    /// `AWS_EC2_METADATA_DISABLED=true`: never contact IMDS.
    public var disabled: Bool
    /// Session token lifetime asked for (1 to 21600 seconds).
    public var tokenTTLSeconds: Int
    /// Per request: IMDS answers in milliseconds or not at all.
    public var timeout: Duration
    public var retry: RetryPolicy

    public init(endpoint: String = defaultEndpoint, disabled: Bool = false, tokenTTLSeconds: Int = 21600,
                timeout: Duration = .seconds(2), retry: RetryPolicy = RetryPolicy(maxAttempts: 6, baseDelay: .milliseconds(250), maxBackoff: .seconds(4))) {
        self.endpoint = endpoint
        self.disabled = disabled
        self.tokenTTLSeconds = tokenTTLSeconds
        self.timeout = timeout
        self.retry = retry
    }
}
