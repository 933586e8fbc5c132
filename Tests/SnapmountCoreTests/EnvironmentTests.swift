import SnapmountCore
import Testing

@Suite("The environment, read once")
struct EnvironmentTests {
    @Test("no variables: the defaults")
    func defaults() throws {
        let environment = try AgentEnvironment([:])
        #expect(environment == AgentEnvironment())
        #expect(environment.region == nil)
        #expect(environment.ec2Endpoint == nil)
        #expect(environment.imdsEndpoint == "http://169.254.169.254")
        #expect(!environment.imdsDisabled)
        #expect(environment.credentials == nil)
        #expect(environment.retry.maxAttempts == RetryPolicy.defaultMaxAttempts)
        #expect(environment.retryMode == .standard)
        #expect(environment.devDirectory == "/dev" && environment.sysDirectory == "/sys")
        #expect(environment.lockDirectory == "/run/snapmount")
        #expect(environment.recordDirectory == "/var/lib/snapmount")
        #expect(environment.proxy == ProxySettings())
    }

    @Test("an empty variable counts as unset")
    func emptyIsUnset() throws {
        let environment = try AgentEnvironment([
            "AWS_REGION": "", "AWS_ENDPOINT_URL_EC2": "", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_MAX_ATTEMPTS": "",
            "SNAPMOUNT_STATE_DIR": "", "http_proxy": "",
        ])
        #expect(environment.region == nil && environment.ec2Endpoint == nil && environment.credentials == nil)
        #expect(environment.lockDirectory == "/run/snapmount")
        #expect(environment.proxy.http == nil)
    }

    @Test("the AWS variables, as the SDKs read them")
    func awsVariables() throws {
        let environment = try AgentEnvironment([
            "AWS_REGION": "eu-central-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:1/", "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:2/",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:3/", "AWS_EC2_METADATA_DISABLED": "TRUE",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
            "AWS_MAX_ATTEMPTS": "4", "AWS_RETRY_MODE": "Adaptive", "AWS_CA_BUNDLE": "/etc/ca.pem",
        ])
        #expect(environment.region == "eu-central-1")
        #expect(environment.ec2Endpoint?.url == "http://127.0.0.1:2")
        #expect(environment.imdsEndpoint == "http://127.0.0.1:3")
        #expect(environment.imdsDisabled)
        #expect(environment.credentials?.accessKeyID == "AKIAEXAMPLE")
        #expect(environment.credentials?.secretAccessKey.exposedValue() == "secret")
        #expect(environment.credentials?.sessionToken?.exposedValue() == "token")
        #expect(environment.retry.maxAttempts == 4)
        #expect(environment.retryMode == .adaptive)
        #expect(environment.caBundle == "/etc/ca.pem")
        #expect(environment.imds.endpoint == "http://127.0.0.1:3" && environment.imds.disabled)
        // AWS_DEFAULT_REGION after AWS_REGION, as the SDKs read them.
        #expect(try AgentEnvironment(["AWS_DEFAULT_REGION": "us-east-2"]).region == "us-east-2")
        #expect(try AgentEnvironment(["AWS_DEFAULT_REGION": "us-east-2", "AWS_REGION": "eu-west-1"]).region == "eu-west-1")
        // AWS_ENDPOINT_URL applies when the EC2-specific one is not set.
        #expect(try AgentEnvironment(["AWS_ENDPOINT_URL": "https://ec2.example"]).ec2Endpoint?.host == "ec2.example")
    }

    @Test("snapmount's own variables")
    func snapmountVariables() throws {
        let environment = try AgentEnvironment([
            "SNAPMOUNT_DEV_DIR": "/tmp/dev", "SNAPMOUNT_SYS_DIR": "/tmp/sys", "SNAPMOUNT_STATE_DIR": "/tmp/state",
            "SNAPMOUNT_CONFIG": "/tmp/snapmount.conf", "SNAPMOUNT_LABEL": "x", "PATH": "/bin",
        ])
        #expect(environment.devDirectory == "/tmp/dev" && environment.sysDirectory == "/tmp/sys")
        #expect(environment.lockDirectory == "/tmp/state" && environment.recordDirectory == "/tmp/state")
        #expect(environment.configPath == "/tmp/snapmount.conf")
        #expect(environment.snapmountVariables["SNAPMOUNT_LABEL"] == "x")
        #expect(environment.snapmountVariables["PATH"] == nil)
    }

    @Test("every bad variable is reported at once, each by name, exit 78")
    func problems() throws {
        #expect {
            try AgentEnvironment([
                "AWS_MAX_ATTEMPTS": "zero", "AWS_RETRY_MODE": "fast", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_ENDPOINT_URL_EC2": "ftp://x",
            ])
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            let text = error.description
            return error.exitStatus == .configuration && error.issues.count == 4
                && text.contains("environment AWS_MAX_ATTEMPTS: \"zero\" is not valid")
                && text.contains("environment AWS_RETRY_MODE: \"fast\"")
                && text.contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
                && text.contains("environment AWS_ENDPOINT_URL_EC2")
        }
        #expect(throws: ConfigurationError.self) { try AgentEnvironment(["AWS_MAX_ATTEMPTS": "0"]) }
        // A region goes into a host name and the signing scope: checked like the instance's.
        for bad in ["EU-WEST-1", "eu west 1", "eu-west-1.evil.example", "eu-west-1/", "x"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try AgentEnvironment(["AWS_REGION": bad]) }
            #expect(throws: ConfigurationError.self, "\(bad)") { try AgentEnvironment(["AWS_DEFAULT_REGION": bad]) }
        }
        #expect(throws: ConfigurationError.self) { try AgentEnvironment(["AWS_MAX_ATTEMPTS": "101"]) }
        #expect(throws: ConfigurationError.self) { try AgentEnvironment(["AWS_SECRET_ACCESS_KEY": "secret"]) }
        #expect(try AgentEnvironment(["AWS_MAX_ATTEMPTS": "100"]).retry.maxAttempts == 100)
    }

    @Test("proxies as libcurl reads them: http_proxy only in lower case")
    func proxies() {
        let proxy = ProxySettings(["HTTP_PROXY": "http://evil:1", "HTTPS_PROXY": "http://secure:3128", "no_proxy": "169.254.169.254",
                                   "NO_PROXY": "ignored"])
        #expect(proxy.http == nil)
        #expect(proxy.https == "http://secure:3128")
        #expect(proxy.noProxy == "169.254.169.254")
        #expect(proxy.proxy(forURL: "http://releasesrvr/snap.txt") == nil)
        #expect(proxy.proxy(forURL: "HTTPS://ec2.eu-west-1.amazonaws.com/") == "http://secure:3128")
        let all = ProxySettings(["http_proxy": "http://web:80", "ALL_PROXY": "socks5://all:1080"])
        #expect(all.proxy(forURL: "http://releasesrvr/snap.txt") == "http://web:80")
        #expect(all.proxy(forURL: "https://ec2.eu-west-1.amazonaws.com/") == "socks5://all:1080")
    }
}
