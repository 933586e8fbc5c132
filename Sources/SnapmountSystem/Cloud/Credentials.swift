import Logging
import SnapmountCore

public enum CredentialsError: SnapmountError, Equatable {
    case noRole
    case metadata(IMDSError)
    case document(IMDSDocumentError)
    case expiringTooSoon(role: String, expiration: UTCTimestamp)

    public var exitStatus: ExitStatus {
        switch self {
        case .noRole: .permissionDenied
        case .metadata(let error): error.exitStatus
        case .document(let error): error.exitStatus
        case .expiringTooSoon: .unavailable
        }
    }

    public var description: String {
        switch self {
        case .noRole: "no AWS credentials: none in the environment, and the instance has no IAM role (instance profile)"
        case .metadata(let error): "cannot get the instance role's credentials: \(error)"
        case .document(let error): "cannot get the instance role's credentials: \(error)"
        case .expiringTooSoon(let role, let expiration):
            "the instance role \(role)'s credentials expire at \(expiration), too soon to use, and IMDS has no newer ones"
        }
    }
}

/// Supplies credentials for each EC2 request: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
/// `AWS_SESSION_TOKEN` when the environment sets them, else the instance profile role's from IMDS, fetched again
/// before they come within `refreshWindow` of their expiration — so a request is never
/// signed with credentials about to expire. The expiration is AWS's time, so it is compared
/// with the local clock corrected by what AWS's answers measured (``AWSTime``).
public final class CredentialsProvider {
    /// The SDKs refresh instance credentials in their last minutes; five minutes keeps a
    /// margin for a slow, retried request.
    public static let defaultRefreshWindow: Duration = .seconds(300)

    private enum Source {
        case environment(AWSCredentials)
        case instanceProfile(IMDSClient)
    }

    private let source: Source
    /// Expiry is judged on AWS's time: the run's corrected clock.
    private let time: AWSTime
    private let logger: Logger
    public let refreshWindow: Duration
    private var cached: AWSCredentials?
    private var role: String?

    /// - Parameter fixed: credentials from the environment (``AgentEnvironment/credentials``);
    ///   `nil` for the instance profile's.
    public init(fixed: AWSCredentials?, imds: IMDSClient, clock: any AgentClock = SystemClock(), time: AWSTime? = nil, logger: Logger,
                refreshWindow: Duration = defaultRefreshWindow) {
        self.time = time ?? AWSTime(clock: clock)
        self.logger = logger
        self.refreshWindow = refreshWindow
        source = fixed.map(Source.environment) ?? .instanceProfile(imds)
    }

    /// Where credentials come from, for the dry-run checklist.
    public var sourceDescription: String {
        switch source {
        case .environment: "environment (AWS_ACCESS_KEY_ID)"
        case .instanceProfile: role.map { "instance role \($0)" } ?? "instance role"
        }
    }

    /// Credentials good for at least `refreshWindow` more.
    public func current() throws(CredentialsError) -> AWSCredentials {
        switch source {
        case .environment(let credentials):
            return credentials
        case .instanceProfile(let imds):
            let now = time.now()
            if let cached, usable(cached, at: now) { return cached }
            let fresh = try fetch(imds)
            guard usable(fresh, at: now) else {
                throw .expiringTooSoon(role: role ?? "?", expiration: fresh.expiration ?? now)
            }
            if cached != nil { logger.debug("instance role credentials refreshed", metadata: ["role": "\(role ?? "")"]) }
            cached = fresh
            return fresh
        }
    }

    private func usable(_ credentials: AWSCredentials, at now: UTCTimestamp) -> Bool {
        guard let expiration = credentials.expiration else { return true }
        return now.adding(seconds: refreshWindow.components.seconds) < expiration
    }

    /// The instance profile's role, listed once per run.
    private func listedRole(_ imds: IMDSClient) throws -> String {
        if let role { return role }
        guard let listed = try imds.document("meta-data/iam/security-credentials/", decode: IMDSDocuments.roleName) else {
            throw CredentialsError.noRole
        }
        role = listed
        return listed
    }

    private func roleCredentials(_ imds: IMDSClient, _ name: String) throws(IMDSError) -> AWSCredentials {
        try imds.document("meta-data/iam/security-credentials/\(name)") { (body: [UInt8]) throws(IMDSDocumentError) in
            try IMDSDocuments.roleCredentials(body, role: name)
        }
    }

    private func fetch(_ imds: IMDSClient) throws(CredentialsError) -> AWSCredentials {
        do {
            let name = try listedRole(imds)
            do {
                return try roleCredentials(imds, name)
            } catch IMDSError.notFound {
                // The role just listed has no credentials: the list was stale (the instance
                // profile changed) or cut short. Ask once more which role it is.
                logger.debug("instance metadata has no credentials for role \(name); listing the role again")
                role = nil
                return try roleCredentials(imds, try listedRole(imds))
            }
        } catch let error as CredentialsError {
            throw error
        } catch IMDSError.notFound(let path) where path == "meta-data/iam/security-credentials/" {
            throw .noRole
        } catch let error as IMDSError {
            throw .metadata(error)
        } catch let error as IMDSDocumentError {
            throw .document(error)
        } catch {
            throw .metadata(.unavailable(path: "meta-data/iam/security-credentials/", detail: "\(error)"))
        }
    }
}
