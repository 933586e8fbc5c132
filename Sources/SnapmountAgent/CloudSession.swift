import Logging
import SnapmountCore
import SnapmountSystem

/// Knobs the product leaves at their defaults and tests turn down, so that a fault matrix
/// runs in seconds rather than minutes.
public struct CloudTuning: Sendable {
    /// `nil`: the environment's policy (`AWS_MAX_ATTEMPTS`).
    public var retry: RetryPolicy?
    public var ec2Timeout: Duration = .seconds(20)
    public var sourceTimeout: Duration = .seconds(10)
    /// IMDS retries and per-request timeout; `nil`: the IMDS client's defaults.
    public var imdsRetry: RetryPolicy?
    public var imdsTimeout: Duration?
    public var credentialRefreshWindow = CredentialsProvider.defaultRefreshWindow
    public var poll = PollSchedule()
    /// How `snapmount publish` polls a pending snapshot: EBS takes minutes for a large one.
    public var snapshotPoll = PollSchedule.snapshot


    public init() {}
}

/// The instance's view of the cloud — identity, credentials, EC2, the snapshot source —
/// wired from the environment the way the boot flow uses it.
public final class CloudSession {
    public let identity: InstanceIdentity
    public let imds: IMDSClient
    public let credentials: CredentialsProvider
    public let ec2: EC2Client
    public let volumes: VolumeManager
    public let source: SnapshotSourceClient
    public let ssm: SSMClient
    /// Auto Scaling's Query API, for `snapmount push`.
    public let autoScaling: EC2Client
    /// AWS's time as the run's answers taught it, shared by every signed client.
    public let time: AWSTime

    /// Reads the identity document (IMDSv2), then sets up credentials and the EC2 client for
    /// the instance's region (or `AWS_REGION`).
    public static func connect(environment: AgentEnvironment, clock: any AgentClock = SystemClock(), logger: Logger,
                               tuning: CloudTuning = CloudTuning()) throws -> CloudSession {
        let http = try HTTPClient(trustedCertificatesFile: environment.caBundle, proxy: environment.proxy)
        let retry = tuning.retry ?? environment.retry
        var imdsSettings = environment.imds
        if let imdsRetry = tuning.imdsRetry { imdsSettings.retry = imdsRetry }
        if let imdsTimeout = tuning.imdsTimeout { imdsSettings.timeout = imdsTimeout }
        let imds = IMDSClient(settings: imdsSettings, http: http, clock: clock, logger: logger)
        let identity = try imds.document("dynamic/instance-identity/document", decode: IMDSDocuments.identity)
        let region = environment.region ?? identity.region
        let time = AWSTime(clock: clock)
        let credentials = CredentialsProvider(fixed: environment.credentials, imds: imds, clock: clock, time: time, logger: logger,
                                              refreshWindow: tuning.credentialRefreshWindow)
        let ec2 = EC2Client(endpoint: try environment.ec2Endpoint ?? EC2Endpoint.regional(region), region: region,
                            credentials: credentials, http: http, retry: retry, clock: clock, time: time, logger: logger)
        ec2.timeout = tuning.ec2Timeout
        let volumes = VolumeManager(ec2: ec2, identity: identity, clock: clock, logger: logger)
        volumes.schedule = tuning.poll
        var source = SnapshotSourceClient(http: http, retry: retry, clock: clock, logger: logger)
        source.timeout = tuning.sourceTimeout
        let ssm = SSMClient(endpoint: try environment.ssmEndpoint ?? EC2Endpoint.regional(region, service: "ssm"), region: region,
                            credentials: credentials, http: http, retry: retry, clock: clock, time: time, logger: logger)
        ssm.timeout = tuning.ec2Timeout
        let autoScaling = EC2Client(endpoint: try environment.autoScalingEndpoint ?? EC2Endpoint.regional(region, service: "autoscaling"),
                                    region: region, credentials: credentials, http: http, retry: retry, clock: clock, time: time, logger: logger,
                                    service: .autoScaling)
        autoScaling.timeout = tuning.ec2Timeout
        if environment.retryMode == .adaptive {
            for loop in [ec2.retry, ssm.retry, autoScaling.retry] { loop.limiter = AdaptiveRateLimiter() }
        }
        return CloudSession(identity: identity, imds: imds, credentials: credentials, ec2: ec2, volumes: volumes, source: source, ssm: ssm,
                            autoScaling: autoScaling, time: time)
    }

    private init(identity: InstanceIdentity, imds: IMDSClient, credentials: CredentialsProvider, ec2: EC2Client,
                 volumes: VolumeManager, source: SnapshotSourceClient, ssm: SSMClient, autoScaling: EC2Client, time: AWSTime) {
        self.time = time
        self.autoScaling = autoScaling
        self.identity = identity
        self.imds = imds
        self.credentials = credentials
        self.ec2 = ec2
        self.volumes = volumes
        self.source = source
        self.ssm = ssm
    }

    /// Step 4: the snapshot the source names, checked: it must exist, be completed, and
    /// belong to an allowed owner. A malformed id never reaches EC2.
    public func resolveSnapshot(_ source: SnapshotSource, owner: SnapshotOwner) throws -> EC2Snapshot {
        if case .tag(let key, let value) = source { return try newestTagged(key, value, owner: owner) }
        return try volumes.verifySnapshot(try publishedID(source, owner: owner), owner: owner)
    }

    /// The id the source names now: `snap.txt` read strictly, the SSM parameter's value read
    /// as strictly, or the newest completed snapshot with the tag.
    public func publishedID(_ source: SnapshotSource, owner: SnapshotOwner) throws -> SnapshotID {
        switch source {
        case .url(let url):
            return try self.source.fetch(url)
        case .ssm(let name):
            let value = try ssm.parameter(name)
            do {
                return try SnapshotSourceBody.parse(Array(value.utf8), url: source.description)
            } catch {
                throw SnapshotSourceFetchError.content(error)
            }
        case .tag(let key, let value):
            return try newestTagged(key, value, owner: owner).id
        }
    }

    /// `tag:KEY=VALUE`: of the snapshots the allowed owner has with that tag, the newest
    /// completed one. (`snapshot-owner = any` is refused with a tag source: anyone can make
    /// a public snapshot with any tag.) A snapshot publish made but never marked as a release
    /// — a failed round's late snapshot, a publish that died — is never chosen.
    private func newestTagged(_ key: String, _ value: String, owner: SnapshotOwner) throws -> EC2Snapshot {
        let ownerText: String = switch owner {
        case .selfAccount, .any: "self"
        case .account(let id): id
        }
        let found = try ec2.describeSnapshots(owner: ownerText, filters: [("tag:\(key)", [value]), ("status", ["completed"])])
        guard let newest = found.filter({ $0.state == .completed && $0.tags[key] == value && !$0.isUnpublishedAttempt })
            .max(by: { ($0.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $0.id.text) < ($1.startTime ?? UTCTimestamp(secondsSinceEpoch: 0), $1.id.text) })
        else { throw SnapshotSourceError.noneTagged(source: "tag:\(key)=\(value)", owner: ownerText) }
        return newest
    }
}
