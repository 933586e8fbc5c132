/// Where EC2 is: `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, else the regional endpoint
/// (``AgentEnvironment``). SSM's endpoint has the same form.
public struct EC2Endpoint: Sendable, Equatable {
    /// Without a trailing slash.
    public let url: String
    /// The Host header: host, and port when not the scheme's default.
    public let host: String

    public init(url: String) throws(ConfigurationError) {
        let lower = url.lowercased()
        let rest: Substring
        if lower.hasPrefix("https://") {
            rest = url.dropFirst(8)
        } else if lower.hasPrefix("http://") {
            rest = url.dropFirst(7)
        } else {
            throw ConfigurationError([ConfigIssue(nil, "EC2 endpoint \(url.quotedForMessage()) is not an http:// or https:// URL")])
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        guard !authority.isEmpty, !url.hasWhitespaceOrControlCharacter else {
            throw ConfigurationError([ConfigIssue(nil, "EC2 endpoint \(url.quotedForMessage()) has no host")])
        }
        var trimmed = url
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.url = trimmed
        self.host = lower.hasPrefix("https://") && authority.hasSuffix(":443") ? String(authority.dropLast(4))
            : lower.hasPrefix("http://") && authority.hasSuffix(":80") ? String(authority.dropLast(3)) : String(authority)
    }

    /// EC2's own endpoint for a region (or another service's: `ssm`).
    public static func regional(_ region: String, service: String = "ec2") throws(ConfigurationError) -> EC2Endpoint {
        let suffix = region.hasPrefix("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
        return try EC2Endpoint(url: "https://\(service).\(region).\(suffix)")
    }
}

extension String {
    fileprivate var hasWhitespaceOrControlCharacter: Bool {
        unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7f }
    }
}
