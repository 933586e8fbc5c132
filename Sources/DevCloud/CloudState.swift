import Foundation
import SnapmountCore

/// A request as it arrived on the wire, for signature verification.
struct ReceivedRequest: Sendable {
    var method: String
    var path: String
    var query: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }
}

/// Issued role credentials, kept after rotation so that old ones are recognised as expired.
struct RoleCredentials: Sendable {
    var accessKeyID: String
    var secret: String
    var token: String
    var issued: Date
    var expiration: Date
}

/// DevCloud's whole world and every rule it enforces. An actor: the servers call into it
/// concurrently, tests read and change it through ``DevCloud``.
public actor CloudState {
    nonisolated public let settings: DevCloudSettings
    /// When this cloud started: a call record's `time` is seconds after it.
    public nonisolated let started = ContinuousClock.now
    private var delays: StateDelays
    private var buckets: ThrottleBuckets
    private var bucketLevels: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]
    private var imdsTokens: [String: ContinuousClock.Instant] = [:]
    /// Issued role credentials, by instance (each instance has a role of its own).
    private var roleCredentials: [String: [RoleCredentials]] = [:]
    /// The instances this cloud serves; the settings' instance first.
    private var instances: [String: DevInstance] = [:]
    /// Instances Auto Scaling lists but EC2 does not know yet (eventual consistency just
    /// after a launch): DescribeInstances answers InvalidInstanceID.NotFound for them.
    private var unknownToEC2: Set<String> = []
    private var roleLifetime: Duration
    private var snapshots: [String: DevSnapshot] = [:]
    private var volumes: [String: DevVolume] = [:]
    private var volumeReadyAt: [String: ContinuousClock.Instant] = [:]
    /// Deleted volumes, as EC2 still answers their ClientToken with them.
    private var deletedVolumes: [String: DevVolume] = [:]
    private var issuedIMDSTokens: [String] = []
    private var clientTokens: [String: (fingerprint: String, volumeID: String)] = [:]
    private var permissions: Set<String>?
    private var faults: [(fault: Fault, added: ContinuousClock.Instant)] = []
    private var callCounts: [String: Int] = [:]
    private var calls: [CallRecord] = []
    private var release = ReleaseResponse(body: "")
    private var hook: (@Sendable (AttachmentEvent) async -> Void)?
    /// Makes a new snapshot's image from its volume's (the device plane's backing file).
    private var imageHook: (@Sendable (_ volumeID: String, _ snapshotID: String) async -> String?)?
    private var snapshotReadyAt: [String: ContinuousClock.Instant] = [:]
    private var snapshotsStarted: [String: ContinuousClock.Instant] = [:]
    /// SSM Parameter Store: name → value, version.
    private var parameters: [String: (value: String, version: Int)] = [:]
    /// Every value each parameter had, oldest first (GetParameterHistory).
    private var parameterHistory: [String: [String]] = [:]
    /// Snapshots created from now on end in `error` instead of `completed`.
    private var snapshotsFail = false
    private var failingSnapshots: Set<String> = []
    /// Seconds added to DevCloud's clock, to test clock skew.
    private var clockOffset: TimeInterval = 0
    private var groupPageSize = 50

    public static let actions: Set<String> = [
        "DescribeSnapshots", "CreateVolume", "DescribeVolumes", "AttachVolume", "DetachVolume", "DeleteVolume",
        "ModifyInstanceAttribute", "CreateTags", "DescribeInstances", "CreateSnapshot", "DeleteSnapshot",
    ]

    init(settings: DevCloudSettings) {
        self.settings = settings
        self.delays = settings.delays
        self.buckets = settings.buckets
        self.roleLifetime = settings.roleCredentialLifetime
        instances[settings.instanceID] = DevInstance(id: settings.instanceID, availabilityZone: settings.availabilityZone,
                                                     roleName: settings.roleName, privateAddress: "10.0.0.10")
    }

    /// Adds an instance with an identity and a role of its own, in the settings' zone. Its
    /// metadata is served under `<IMDS>/<instance id>/latest/…`.
    public func addInstance(_ instance: DevInstance) { instances[instance.id] = instance }
    /// A volume made from `snapshot` and attached to `instance` as snapmount's boot leaves it
    /// (tagged with the instance and snapshot): for tests and demos of the release side.
    @discardableResult
    public func addReleaseVolume(instance: String, snapshot: String, device: String = "/dev/sdf", mountPoint: String? = nil) -> String {
        let id = "vol-" + randomHex(17)
        volumes[id] = DevVolume(id: id, sizeGiB: snapshots[snapshot]?.sizeGiB ?? 1, availabilityZone: instances[instance]?.availabilityZone ?? settings.availabilityZone,
                                state: "in-use", snapshotID: snapshot, volumeType: "gp3", iops: 3000, throughput: 125, encrypted: false, kmsKeyID: nil,
                                tags: ["snapmount:instance-id": instance, "snapmount:snapshot-id": snapshot].merging(mountPoint.map { ["snapmount:mount-point": $0] } ?? [:]) { $1 },
                                attachment: DevAttachment(instanceID: instance, device: device, state: "attached", deleteOnTermination: true),
                                clientToken: nil)
        return id
    }
    /// Whether EC2's DescribeInstances knows the instance yet (Auto Scaling may list it first).
    public func setKnownToEC2(_ id: String, _ known: Bool) {
        if known { unknownToEC2.remove(id) } else { unknownToEC2.insert(id) }
    }
    /// Changes an instance's Auto Scaling lifecycle state (`Pending`, `InService`, `Terminating`…).
    public func setLifecycleState(_ id: String, _ state: String) { instances[id]?.lifecycleState = state }
    /// DescribeAutoScalingGroups answers with at most this many groups a page (and MaxRecords).
    public func setGroupPageSize(_ size: Int) { groupPageSize = max(1, size) }
    public func instance(_ id: String) -> DevInstance? { instances[id] }
    public func instanceList() -> [DevInstance] { instances.values.sorted { $0.id < $1.id } }

    /// Which instance each role access key was issued to: to count a storm's calls per boot.
    public func accessKeyOwners() -> [String: String] {
        var owners: [String: String] = [:]
        for (instance, issued) in roleCredentials { for credentials in issued { owners[credentials.accessKeyID] = instance } }
        return owners
    }

    // MARK: - Control

    public func addSnapshot(_ snapshot: DevSnapshot) { snapshots[snapshot.id] = snapshot }
    public func snapshot(_ id: String) -> DevSnapshot? { refreshedSnapshot(id) }
    public func snapshotTable() -> [DevSnapshot] { snapshots.keys.sorted().compactMap { refreshedSnapshot($0) } }
    public func setSnapshotsFail(_ value: Bool) { snapshotsFail = value }
    public func setParameter(_ name: String, _ value: String) {
        parameters[name] = (value, (parameters[name]?.version ?? 0) + 1)
        parameterHistory[name, default: []].append(value)
    }
    public func parameter(_ name: String) -> String? { parameters[name]?.value }
    public func onSnapshot(_ hook: @escaping @Sendable (_ volumeID: String, _ snapshotID: String) async -> String?) { imageHook = hook }
    public func setSnapshotState(_ id: String, _ state: String) { snapshots[id]?.state = state }
    public func setRelease(_ response: ReleaseResponse) { release = response }
    public func setDelays(_ delays: StateDelays) { self.delays = delays }
    public func setBuckets(_ buckets: ThrottleBuckets) {
        self.buckets = buckets
        bucketLevels = [:]
    }
    /// `nil` allows every action; otherwise only those named (`AttachVolume`, …).
    public func setPermissions(_ actions: Set<String>?) { permissions = actions }
    public func addFault(_ fault: Fault) { faults.append((fault, ContinuousClock.now)) }
    public func clearFaults() { faults = [] }
    public func setRoleCredentialLifetime(_ lifetime: Duration) { roleLifetime = lifetime }
    public func setClockOffset(seconds: TimeInterval) { clockOffset = seconds }
    public func onAttachment(_ hook: @escaping @Sendable (AttachmentEvent) async -> Void) { self.hook = hook }
    public func callLog() -> [CallRecord] { calls }
    /// As if IMDS restarted: every session token stops working.
    public func forgetIMDSTokens() { imdsTokens = [:] }
    public func clearCallLog() { calls = [] }
    /// Sets a tag on a volume, as CreateTags would (tests: what a push left behind).
    public func tagVolume(_ id: String, _ key: String, _ value: String) { volumes[id]?.tags[key] = value }
    public func volumeTable() -> [DevVolume] {
        volumes.keys.sorted().compactMap { refreshed($0) }
    }
    /// Every secret and token handed out, for tests that check no log line leaks one.
    /// Every secret DevCloud handed out: role secret keys and session tokens, the static
    /// secret key, and IMDS session tokens — none may ever appear in a log line.
    public func issuedSecrets() -> [String] {
        roleCredentials.values.flatMap { $0.flatMap { [$0.secret, $0.token] } } + [settings.staticSecretAccessKey] + issuedIMDSTokens
    }

    var now: Date { Date().addingTimeInterval(clockOffset) }
    var elapsed: Double {
        let duration = ContinuousClock.now - started
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    func record(_ service: String, _ action: String, _ parameters: [String: String] = [:], outcome: String,
                dryRun: Bool = false, accessKeyID: String? = nil) {
        calls.append(CallRecord(service: service, action: action, parameters: parameters, time: elapsed, outcome: outcome,
                                dryRun: dryRun, accessKeyID: accessKeyID))
    }

    /// Counts a call to `target` and returns the fault that applies to it, if any.
    func fault(for target: String) -> FaultKind? {
        callCounts[target, default: 0] += 1
        let count = callCounts[target, default: 0]
        for (fault, added) in faults where fault.target == target {
            switch fault.trigger {
            case .nthCall(let n) where n == count: return fault.kind
            case .always: return fault.kind
            case .fromCall(let n) where count >= n: return fault.kind
            case .fraction(let p) where Double.random(in: 0..<1) < p: return fault.kind
            case .during(let window) where ContinuousClock.now - added < .milliseconds(Int64(window * 1000)): return fault.kind
            case .firstCalls(let n) where count <= n: return fault.kind
            default: continue
            }
        }
        return nil
    }

    // MARK: - IMDS

    func issueIMDSToken(ttlHeader: String?) -> Answer {
        guard let text = ttlHeader, let ttl = Int(text), (1...21600).contains(ttl) else {
            record("imds", "api/token", outcome: "400")
            return Answer(status: 400, body: "", contentType: "text/plain")
        }
        let token = "AQAE" + randomHex(52)
        imdsTokens[token] = ContinuousClock.now + .seconds(ttl)
        issuedIMDSTokens.append(token)
        record("imds", "api/token", outcome: "ok")
        return Answer(status: 200, body: token, contentType: "text/plain",
                      headers: [("X-aws-ec2-metadata-token-ttl-seconds", String(ttl))])
    }

    func imdsGet(path: String, token: String?, instance: String? = nil) -> Answer {
        guard let token, let expiry = imdsTokens[token], ContinuousClock.now < expiry else {
            record("imds", path, outcome: "401")
            return Answer(status: 401, body: "", contentType: "text/plain")
        }
        let answer = imdsDocument(path, instance: instance)
        record("imds", path, outcome: answer.status == 200 ? "ok" : String(answer.status))
        return answer
    }

    /// What a path would answer, for a fault that cuts it short (nothing recorded).
    func imdsFaultDocument(_ path: String, instance: String? = nil) -> String { imdsDocument(path, instance: instance).body }

    /// What `snap.txt` would answer, for a fault that cuts it short (nothing recorded).
    func releaseFaultDocument() -> String { release.current.body }

    private func imdsDocument(_ path: String, instance id: String?) -> Answer {
        let text = { (body: String) in Answer(status: 200, body: body, contentType: "text/plain") }
        guard let instance = instances[id ?? settings.instanceID] else { return Answer(status: 404, body: "", contentType: "text/plain") }
        switch path {
        case "meta-data/instance-id": return text(instance.id)
        case "meta-data/placement/availability-zone": return text(instance.availabilityZone)
        case "meta-data/local-ipv4": return text(instance.privateAddress)
        case "meta-data/placement/region": return text(settings.region)
        case "dynamic/instance-identity/document":
            return Answer(status: 200, body: """
                {
                  "accountId" : "\(settings.accountID)",
                  "architecture" : "x86_64",
                  "availabilityZone" : "\(instance.availabilityZone)",
                  "billingProducts" : null,
                  "devpayProductCodes" : null,
                  "marketplaceProductCodes" : null,
                  "imageId" : "ami-0123456789abcdef0",
                  "instanceId" : "\(instance.id)",
                  "instanceType" : "m6i.large",
                  "kernelId" : null,
                  "pendingTime" : "2026-11-28T10:00:00Z",
                  "privateIp" : "\(instance.privateAddress)",
                  "ramdiskId" : null,
                  "region" : "\(settings.region)",
                  "version" : "2017-09-30"
                }
                """, contentType: "application/json")
        case "meta-data/iam/security-credentials/", "meta-data/iam/security-credentials":
            guard let role = instance.roleName else { return Answer(status: 404, body: "", contentType: "text/plain") }
            return text(role)
        default:
            if let role = instance.roleName, path == "meta-data/iam/security-credentials/\(role)" {
                let credentials = currentRoleCredentials(instance.id)
                let iso = ISO8601DateFormatter()
                return Answer(status: 200, body: """
                    {
                      "Code" : "Success",
                      "LastUpdated" : "\(iso.string(from: credentials.issued))",
                      "Type" : "AWS-HMAC",
                      "AccessKeyId" : "\(credentials.accessKeyID)",
                      "SecretAccessKey" : "\(credentials.secret)",
                      "Token" : "\(credentials.token)",
                      "Expiration" : "\(iso.string(from: credentials.expiration))"
                    }
                    """, contentType: "text/plain")
            }
            return Answer(status: 404, body: "", contentType: "text/plain")
        }
    }

    /// The role's current credentials; new ones once the current are within the rotation window.
    private func currentRoleCredentials(_ instance: String) -> RoleCredentials {
        let rotateBefore = settings.roleCredentialRotateBefore
        if let current = roleCredentials[instance]?.last,
           current.expiration.timeIntervalSince(now) > seconds(rotateBefore) {
            return current
        }
        let issued = now
        let credentials = RoleCredentials(
            accessKeyID: "ASIA" + randomHex(16).uppercased(), secret: randomHex(40), token: "IQoJb3JpZ2luX2VjE" + randomHex(120),
            issued: issued, expiration: issued.addingTimeInterval(seconds(roleLifetime)))
        roleCredentials[instance, default: []].append(credentials)
        return credentials
    }

    // MARK: - EC2

    /// Verifies the request, applies throttling and permissions, and carries out the action.
    func ec2(_ request: ReceivedRequest, fault: FaultKind?) async -> Answer {
        let id = requestID()
        guard let form = QueryParameters.parse(formEncoded: String(decoding: request.body, as: UTF8.self)) else {
            return error("MalformedQueryString", "The request body is not form-encoded.", 400, id, action: "?", parameters: [:])
        }
        let parameters = Self.actionParameters(form)
        let action = form["Action"] ?? ""
        let dryRun = parameters["DryRun"] == "true"
        func fail(_ code: String, _ message: String, _ status: Int, key: String? = nil) -> Answer {
            error(code, message, status, id, action: action, parameters: parameters, dryRun: dryRun, accessKeyID: key)
        }

        // Faults that answer HTTP 200, or lose the answer, come after the action is carried out.
        if let fault, ![.lostResponse, .truncated, .malformed].contains(fault) {
            record("ec2", action, parameters, outcome: "fault:\(fault.rawValue)", dryRun: dryRun)
            return Answer(status: 0, body: "")  // the server shapes the fault
        }
        guard !action.isEmpty else { return fail("MissingAction", "The request must contain the parameter Action.", 400) }
        guard form["Version"] != nil else { return fail("MissingParameter", "The request must contain the parameter Version.", 400) }

        let key: String
        switch verifySignature(request) {
        case .success(let accessKeyID): key = accessKeyID
        case .failure(let rejection): return fail(rejection.code, rejection.message, rejection.status, key: rejection.key)
        }
        guard takeToken(for: action) else { return fail("RequestLimitExceeded", "Request limit exceeded.", 503, key: key) }
        guard Self.actions.contains(action) else {
            return fail("InvalidAction", "The action \(action) is not valid for this web service.", 400, key: key)
        }
        let allowed = permissions?.contains(action) ?? true
        if dryRun {
            return allowed
                ? fail("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412, key: key)
                : fail("UnauthorizedOperation", "You are not authorized to perform this operation.", 403, key: key)
        }
        if settings.dialect == .emulator, action == "DetachVolume", parameters["InstanceId"] == nil {
            return fail("MissingParameter", "The request must contain the parameter InstanceId", 400, key: key)
        }
        guard allowed else { return fail("UnauthorizedOperation", "You are not authorized to perform this operation.", 403, key: key) }

        let result: Result<String, Rejection>
        switch action {
        case "DescribeSnapshots": result = describeSnapshots(parameters)
        case "CreateVolume": result = createVolume(parameters)
        case "DescribeVolumes": result = describeVolumes(parameters)
        case "AttachVolume": result = attachVolume(parameters)
        case "DetachVolume": result = detachVolume(parameters)
        case "DeleteVolume": result = deleteVolume(parameters)
        case "ModifyInstanceAttribute": result = modifyInstanceAttribute(parameters)
        case "CreateTags": result = createTags(parameters)
        case "CreateSnapshot": result = await createSnapshot(parameters, owner: key)
        case "DeleteSnapshot": result = deleteSnapshot(parameters)
        default: result = describeInstances(parameters)
        }
        switch result {
        case .success(let inner):
            record("ec2", action, parameters, outcome: fault.map { "fault:\($0.rawValue)" } ?? "ok", accessKeyID: key)
            return .xml(XMLText.response(action, requestID: id, inner))
        case .failure(let rejection):
            return fail(rejection.code, rejection.message, rejection.status, key: key)
        }
    }

    /// A Query request's parameters other than Action and Version, by name.
    private static func actionParameters(_ form: QueryParameters) -> [String: String] {
        var parameters: [String: String] = [:]
        for item in form.items where item.name != "Action" && item.name != "Version" { parameters[item.name] = item.value }
        return parameters
    }

    private func error(_ code: String, _ message: String, _ status: Int, _ id: String, action: String,
                       parameters: [String: String], dryRun: Bool = false, accessKeyID: String? = nil) -> Answer {
        record("ec2", action, parameters, outcome: code, dryRun: dryRun, accessKeyID: accessKeyID)
        // Emulators answer authentication, authorisation and dry runs in the generic Query form.
        let generic: Set<String> = ["AuthFailure", "SignatureDoesNotMatch", "MissingAuthenticationToken", "IncompleteSignature",
                                    "UnauthorizedOperation", "DryRunOperation", "RequestExpired"]
        if settings.dialect == .emulator, generic.contains(code) {
            return Answer(status: status, body: XMLText.errorResponse(code: code == "UnauthorizedOperation" ? "AccessDenied" : code,
                                                                      message: message, requestID: id))
        }
        return Answer(status: status, body: XMLText.error(code: code, message: message, requestID: id))
    }

    struct Rejection: Error {
        var code: String
        var message: String
        var status = 400
        var key: String?
    }

    // MARK: Signature

    /// Recomputes the SigV4 signature from the request as received.
    private func verifySignature(_ request: ReceivedRequest, service: String = "ec2") -> Result<String, Rejection> {
        guard let authorization = request.header("Authorization") else {
            return .failure(Rejection(code: "MissingAuthenticationToken", message: "Request is missing Authentication Token", status: 401))
        }
        guard authorization.hasPrefix("AWS4-HMAC-SHA256 ") else {
            return .failure(Rejection(code: "IncompleteSignature", message: "Unsupported signing algorithm.", status: 400))
        }
        var fields: [String: String] = [:]
        for part in authorization.dropFirst("AWS4-HMAC-SHA256 ".count).split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard let credential = fields["Credential"], let signedHeaders = fields["SignedHeaders"], let signature = fields["Signature"] else {
            return .failure(Rejection(code: "IncompleteSignature", message: "Authorization header requires Credential, SignedHeaders and Signature.", status: 400))
        }
        let scope = credential.split(separator: "/").map(String.init)
        guard scope.count == 5 else {
            return .failure(Rejection(code: "IncompleteSignature", message: "Credential is malformed.", status: 400))
        }
        let key = scope[0]
        guard let dateText = request.header("X-Amz-Date"), let time = UTCTimestamp(amzDate: dateText) else {
            return .failure(Rejection(code: "AuthFailure", message: "X-Amz-Date is missing or malformed.", status: 401, key: key))
        }
        let skew = abs(Double(time.secondsSinceEpoch) - now.timeIntervalSince1970)
        guard skew <= 300 else {
            if settings.skewIsAuthFailure {
                return .failure(Rejection(code: "AuthFailure", message: "AWS was not able to validate the provided access credentials", status: 401, key: key))
            }
            return .failure(Rejection(code: "RequestExpired", message: "Request has expired.", status: 400, key: key))
        }
        guard scope[1] == time.dateStamp, scope[2] == settings.region, scope[3] == service, scope[4] == "aws4_request" else {
            return .failure(Rejection(code: "SignatureDoesNotMatch", message: "Credential should be scoped to \(time.dateStamp)/\(settings.region)/\(service)/aws4_request.", status: 403, key: key))
        }

        let secret: String
        let token = request.header("X-Amz-Security-Token")
        if key == settings.staticAccessKeyID {
            secret = settings.staticSecretAccessKey
        } else if let role = roleCredentials.values.lazy.compactMap({ $0.first { $0.accessKeyID == key } }).first {
            guard token == role.token else {
                return .failure(Rejection(code: "AuthFailure", message: "AWS was not able to validate the provided access credentials", status: 401, key: key))
            }
            guard role.expiration > now else {
                return .failure(Rejection(code: "RequestExpired", message: "Request has expired.", status: 400, key: key))
            }
            secret = role.secret
        } else {
            return .failure(Rejection(code: "AuthFailure", message: "AWS was not able to validate the provided access credentials", status: 401, key: key))
        }

        let names = signedHeaders.split(separator: ";").map(String.init)
        guard names.contains("host"), names.contains("x-amz-date"), token == nil || names.contains("x-amz-security-token") else {
            return .failure(Rejection(code: "SignatureDoesNotMatch", message: "Host, X-Amz-Date and X-Amz-Security-Token must be signed.", status: 403, key: key))
        }
        var headers: [(name: String, value: String)] = []
        for name in names {
            let values = request.headers.filter { $0.name.lowercased() == name }
            guard !values.isEmpty else {
                return .failure(Rejection(code: "SignatureDoesNotMatch", message: "Signed header \(name) is missing.", status: 403, key: key))
            }
            headers += values
        }
        var query: [(name: String, value: String)] = []
        if !request.query.isEmpty {
            guard let parsed = QueryParameters.parse(formEncoded: request.query) else {
                return .failure(Rejection(code: "SignatureDoesNotMatch", message: "Malformed query.", status: 403, key: key))
            }
            query = parsed.items
        }
        let signer = SigV4Signer(region: settings.region, service: service)
        let expected: String
        do {
            let canonical = try SigV4Signer.canonicalRequest(SigV4Request(
                method: request.method, path: request.path.removingPercentEncoding ?? request.path, query: query,
                headers: headers, body: request.body))
            let stringToSign = try signer.stringToSign(canonicalRequest: canonical.text, at: time)
            expected = try signer.signature(stringToSign: stringToSign, secret: Secret(secret), at: time)
        } catch {
            return .failure(Rejection(code: "SignatureDoesNotMatch", message: "\(error)", status: 403, key: key))
        }
        guard constantTimeEqual(Array(expected.utf8), Array(signature.utf8)) else {
            return .failure(Rejection(code: "SignatureDoesNotMatch", message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.", status: 403, key: key))
        }
        return .success(key)
    }

    // MARK: Throttling

    /// One bucket per action, as EC2 evaluates each API on its own; its size is its category's.
    private func takeToken(for action: String) -> Bool {
        let size = action.hasPrefix("Describe") ? buckets.describe : action == "CreateVolume" ? buckets.createVolume : buckets.mutating
        let now = ContinuousClock.now
        var level = bucketLevels[action] ?? (size.capacity, now)
        let refill = seconds(now - level.at) * size.refillPerSecond
        level = (min(size.capacity, level.tokens + refill), now)
        guard level.tokens >= 1 else {
            bucketLevels[action] = level
            return false
        }
        level.tokens -= 1
        bucketLevels[action] = level
        return true
    }

    // MARK: Actions

    private func list(_ parameters: [String: String], _ prefix: String) -> [String] {
        parameters.filter { $0.key.hasPrefix(prefix + ".") && Int($0.key.dropFirst(prefix.count + 1)) != nil }
            .sorted { (Int($0.key.dropFirst(prefix.count + 1)) ?? 0) < (Int($1.key.dropFirst(prefix.count + 1)) ?? 0) }
            .map(\.value)
    }

    private func filters(_ parameters: [String: String]) -> [(name: String, values: [String])] {
        var result: [(String, [String])] = []
        var index = 1
        while let name = parameters["Filter.\(index).Name"] {
            result.append((name, list(parameters, "Filter.\(index).Value")))
            index += 1
        }
        return result
    }

    /// EC2's `Filter.N`: `tag:KEY`, `tag-key`, and the named fields; an item stays when each
    /// filter's field is one of its values. An unknown filter name is refused, as EC2 does.
    private func filtered<T>(_ items: [T], _ parameters: [String: String], tags: @escaping (T) -> [String: String],
                             fields: [String: (T) -> String?]) -> Result<[T], Rejection> {
        var selected = items
        for (name, values) in filters(parameters) {
            let test: (T) -> String?
            if name.hasPrefix("tag:") {
                let key = String(name.dropFirst(4))
                test = { tags($0)[key] }
            } else if name == "tag-key" {
                test = { item in values.first { tags(item)[$0] != nil } }
            } else if let field = fields[name] {
                test = field
            } else {
                return .failure(Rejection(code: "InvalidParameterValue", message: "The filter '\(name)' is invalid"))
            }
            selected = selected.filter { test($0).map(values.contains) ?? false }
        }
        return .success(selected)
    }

    private func describeSnapshots(_ parameters: [String: String]) -> Result<String, Rejection> {
        let ids = list(parameters, "SnapshotId")
        for id in ids where SnapshotID(id) == nil {
            return .failure(Rejection(code: "InvalidSnapshotID.Malformed", message: "Invalid id: \"\(id)\""))
        }
        for id in ids where snapshots[id] == nil {
            return .failure(Rejection(code: "InvalidSnapshot.NotFound", message: "The snapshot '\(id)' does not exist."))
        }
        let owners = list(parameters, "Owner").map { $0 == "self" ? settings.accountID : $0 }
        let fields: [String: (DevSnapshot) -> String?] = [
            "status": { $0.state }, "volume-id": { $0.volumeID }, "owner-id": { $0.ownerID }, "snapshot-id": { $0.id },
        ]
        let candidates = (ids.isEmpty ? snapshots.keys.sorted() : ids).compactMap { refreshedSnapshot($0) }
            .filter { owners.isEmpty || owners.contains($0.ownerID) }
        let selected: [DevSnapshot]
        switch filtered(candidates, parameters, tags: { $0.tags ?? [:] }, fields: fields) {
        case .success(let found): selected = found
        case .failure(let rejection): return .failure(rejection)
        }
        return .success("    <snapshotSet>" + selected.map { "<item>" + snapshotFields($0) + "</item>" }.joined() + "</snapshotSet>")
    }

    private func snapshotFields(_ snapshot: DevSnapshot) -> String {
        var text = XMLText.element("snapshotId", snapshot.id) + XMLText.element("volumeId", snapshot.volumeID ?? "vol-ffffffffffffffff0")
            + XMLText.element("status", snapshot.state) + XMLText.element("startTime", snapshot.startTime ?? "2026-11-28T09:00:00.000Z")
            + XMLText.element("progress", snapshotProgress(snapshot))
            + XMLText.element("ownerId", snapshot.ownerID) + XMLText.element("volumeSize", String(snapshot.sizeGiB))
            + XMLText.element("description", snapshot.description ?? "release") + XMLText.element("encrypted", snapshot.encrypted ? "true" : "false")
        if let tags = snapshot.tags {
            text += "<tagSet>" + tags.sorted { $0.key < $1.key }.map { "<item>" + XMLText.element("key", $0.key) + XMLText.element("value", $0.value) + "</item>" }.joined() + "</tagSet>"
        }
        return text
    }

    /// `completed`: 100%; a pending snapshot made here: how far its time has gone.
    private func snapshotProgress(_ snapshot: DevSnapshot) -> String {
        guard snapshot.state == "pending" else { return snapshot.state == "completed" ? "100%" : "42%" }
        guard let started = snapshotsStarted[snapshot.id], let ready = snapshotReadyAt[snapshot.id], ready > started else { return "42%" }
        let fraction = seconds(ContinuousClock.now - started) / seconds(ready - started)
        return "\(min(99, max(0, Int(fraction * 100))))%"
    }

    /// The snapshot with its timed state change applied.
    private func refreshedSnapshot(_ id: String) -> DevSnapshot? {
        guard var snapshot = snapshots[id] else { return nil }
        if snapshot.state == "pending", let ready = snapshotReadyAt[id], ContinuousClock.now >= ready {
            snapshot.state = failingSnapshots.contains(id) ? "error" : "completed"
            snapshots[id] = snapshot
        }
        return snapshot
    }

    /// CreateSnapshot of a volume: its image is copied at once (EC2 takes the point in time
    /// when it accepts the call), then it is `pending` for the snapshot delay.
    private func createSnapshot(_ parameters: [String: String], owner key: String) async -> Result<String, Rejection> {
        guard let volumeID = parameters["VolumeId"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter VolumeId"))
        }
        guard let volume = refreshed(volumeID) else {
            return .failure(Rejection(code: "InvalidVolume.NotFound", message: "The volume '\(volumeID)' does not exist."))
        }
        guard volume.state == "available" || volume.state == "in-use" else {
            return .failure(Rejection(code: "IncorrectState", message: "The volume '\(volumeID)' is '\(volume.state)'."))
        }
        if let description = parameters["Description"], description.utf8.count > 255 {
            return .failure(Rejection(code: "InvalidParameterValue", message: "Value for parameter Description is too long (at most 255 characters)."))
        }
        let tags: [String: String]
        switch tagSpecifications(parameters, for: "snapshot") {
        case .success(let found): tags = found
        case .failure(let rejection): return .failure(rejection)
        }
        let id = "snap-" + randomHex(17)
        let image = await imageHook?(volumeID, id)
        if snapshotsFail { failingSnapshots.insert(id) }
        let snapshot = DevSnapshot(id: id, state: "pending", ownerID: settings.accountID, sizeGiB: volume.sizeGiB, encrypted: volume.encrypted,
                                   image: image ?? volume.snapshotID.flatMap { snapshots[$0]?.image },
                                   startTime: ISO8601DateFormatter().string(from: now), volumeID: volumeID,
                                   description: parameters["Description"], tags: tags)
        snapshots[id] = snapshot
        snapshotsStarted[id] = ContinuousClock.now
        snapshotReadyAt[id] = ContinuousClock.now + (settings.dialect == .emulator ? .zero : delays.snapshot)
        return .success(snapshotFields(refreshedSnapshot(id) ?? snapshot))
    }

    private func deleteSnapshot(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let id = parameters["SnapshotId"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter SnapshotId"))
        }
        guard SnapshotID(id) != nil else {
            return .failure(Rejection(code: "InvalidSnapshotID.Malformed", message: "Invalid id: \"\(id)\""))
        }
        guard snapshots[id] != nil else {
            return .failure(Rejection(code: "InvalidSnapshot.NotFound", message: "The snapshot '\(id)' does not exist."))
        }
        if let user = volumes.values.first(where: { $0.snapshotID == id && $0.state == "creating" }) {
            return .failure(Rejection(code: "InvalidSnapshot.InUse", message: "The snapshot \(id) is currently in use by \(user.id)"))
        }
        snapshots[id] = nil
        return .success(emptyOutput)
    }

    private func createVolume(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let zone = parameters["AvailabilityZone"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter AvailabilityZone"))
        }
        guard zone == settings.availabilityZone || settings.otherZones.contains(zone) else {
            return .failure(Rejection(code: "InvalidZone.NotFound", message: "The zone '\(zone)' does not exist."))
        }
        if let token = parameters["ClientToken"], settings.dialect == .ec2 {
            let fingerprint = parameters.filter { $0.key != "DryRun" }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
            if let previous = clientTokens[token] {
                guard previous.fingerprint == fingerprint else {
                    return .failure(Rejection(code: "IdempotentParameterMismatch", message: "The client token you have provided is associated with a resource that is already created with different parameters."))
                }
                if let volume = refreshed(previous.volumeID) { return .success(volumeFields(volume)) }
                // Like EC2, the token stays bound to its volume after that volume is deleted.
                if var gone = deletedVolumes[previous.volumeID] {
                    gone.state = "deleted"
                    gone.attachment = nil
                    return .success(volumeFields(gone))
                }
            }
        }
        var size = parameters["Size"].flatMap { Int($0) }
        var encrypted = parameters["Encrypted"] == "true"
        let snapshotID = parameters["SnapshotId"]
        if let snapshotID {
            guard SnapshotID(snapshotID) != nil else {
                return .failure(Rejection(code: "InvalidSnapshotID.Malformed", message: "Invalid id: \"\(snapshotID)\""))
            }
            guard let snapshot = refreshedSnapshot(snapshotID) else {
                return .failure(Rejection(code: "InvalidSnapshot.NotFound", message: "The snapshot '\(snapshotID)' does not exist."))
            }
            guard snapshot.state == "completed" else {
                return .failure(Rejection(code: "IncorrectState", message: "Snapshot is in invalid state - \(snapshot.state)"))
            }
            if let requested = size, requested < snapshot.sizeGiB {
                return .failure(Rejection(code: "InvalidParameterValue", message: "Volume of \(requested)GiB is smaller than snapshot '\(snapshotID)', expect size >= \(snapshot.sizeGiB)GiB"))
            }
            size = size ?? snapshot.sizeGiB
            encrypted = encrypted || snapshot.encrypted
        }
        guard let size, size >= 1 else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter size/snapshot"))
        }
        let type = parameters["VolumeType"] ?? "gp2"
        guard ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"].contains(type) else {
            return .failure(Rejection(code: "InvalidParameterValue", message: "Value (\(type)) for parameter volumeType is invalid."))
        }
        if let rate = parameters["VolumeInitializationRate"] {
            guard let value = Int(rate), (100...300).contains(value) else {
                return .failure(Rejection(code: "InvalidParameterValue", message: "Value (\(rate)) for parameter VolumeInitializationRate is invalid. Valid range is 100 - 300 MiB/s."))
            }
            guard snapshotID != nil else {
                return .failure(Rejection(code: "InvalidParameterCombination", message: "VolumeInitializationRate can only be specified when creating a volume from a snapshot."))
            }
        }
        if parameters["KmsKeyId"] != nil && !encrypted {
            return .failure(Rejection(code: "InvalidParameterDependency", message: "The parameter KmsKeyId requires the parameter Encrypted to be set."))
        }
        let tags: [String: String]
        switch tagSpecifications(parameters, for: "volume") {
        case .success(let found): tags = found
        case .failure(let rejection): return .failure(rejection)
        }
        let id = "vol-" + randomHex(17)
        let volume = DevVolume(
            id: id, sizeGiB: size, availabilityZone: zone, state: "creating", snapshotID: snapshotID, volumeType: type,
            iops: parameters["Iops"].flatMap { Int($0) }, throughput: parameters["Throughput"].flatMap { Int($0) },
            encrypted: encrypted, kmsKeyID: parameters["KmsKeyId"], tags: tags, attachment: nil,
            clientToken: parameters["ClientToken"])
        volumes[id] = volume
        volumeReadyAt[id] = ContinuousClock.now + (settings.dialect == .emulator ? .zero : delays.volumeCreate)
        if let token = parameters["ClientToken"], settings.dialect == .ec2 {
            let fingerprint = parameters.filter { $0.key != "DryRun" }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
            clientTokens[token] = (fingerprint, id)
        }
        return .success(volumeFields(refreshed(id) ?? volume))
    }

    /// The volume with its timed state changes applied.
    private func refreshed(_ id: String) -> DevVolume? {
        guard var volume = volumes[id] else { return nil }
        if volume.state == "creating", let ready = volumeReadyAt[id], ContinuousClock.now >= ready {
            volume.state = "available"
            volumes[id] = volume
        }
        return volume
    }

    private func volumeFields(_ volume: DevVolume) -> String {
        var text = XMLText.element("volumeId", volume.id) + XMLText.element("size", String(volume.sizeGiB))
            + XMLText.element("snapshotId", volume.snapshotID ?? "") + XMLText.element("availabilityZone", volume.availabilityZone)
            + XMLText.element("status", volume.state) + XMLText.element("createTime", "2026-11-28T10:00:00.000Z")
            + XMLText.element("volumeType", volume.volumeType) + XMLText.element("encrypted", volume.encrypted ? "true" : "false")
            + XMLText.element("multiAttachEnabled", "false")
        if let iops = volume.iops { text += XMLText.element("iops", String(iops)) }
        if let throughput = volume.throughput { text += XMLText.element("throughput", String(throughput)) }
        text += "<attachmentSet>"
        if let attachment = volume.attachment {
            text += "<item>" + XMLText.element("volumeId", volume.id) + XMLText.element("instanceId", attachment.instanceID)
                + XMLText.element("device", attachment.device) + XMLText.element("status", attachment.state)
                + XMLText.element("attachTime", "2026-11-28T10:00:01.000Z")
                + (settings.dialect == .ec2 ? XMLText.element("deleteOnTermination", attachment.deleteOnTermination ? "true" : "false") : "")
                + "</item>"
        }
        text += "</attachmentSet><tagSet>"
        for (key, value) in volume.tags.sorted(by: { $0.key < $1.key }) {
            text += "<item>" + XMLText.element("key", key) + XMLText.element("value", value) + "</item>"
        }
        return text + "</tagSet>"
    }

    private func describeVolumes(_ parameters: [String: String]) -> Result<String, Rejection> {
        let ids = list(parameters, "VolumeId")
        for id in ids where volumes[id] == nil {
            return .failure(Rejection(code: "InvalidVolume.NotFound", message: "The volume '\(id)' does not exist."))
        }
        let fields: [String: (DevVolume) -> String?] = [
            "attachment.instance-id": { $0.attachment?.instanceID }, "attachment.device": { $0.attachment?.device },
            "attachment.status": { $0.attachment?.state },
            "attachment.delete-on-termination": { $0.attachment.map { String($0.deleteOnTermination) } },
            "status": { $0.state }, "availability-zone": { $0.availabilityZone }, "snapshot-id": { $0.snapshotID }, "volume-id": { $0.id },
        ]
        let selected: [DevVolume]
        switch filtered((ids.isEmpty ? volumes.keys.sorted() : ids).compactMap { refreshed($0) }, parameters, tags: \.tags, fields: fields) {
        case .success(let found): selected = found
        case .failure(let rejection): return .failure(rejection)
        }
        return .success("    <volumeSet>" + selected.map { "<item>" + volumeFields($0) + "</item>" }.joined() + "</volumeSet>")
    }

    private func attachVolume(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let id = parameters["VolumeId"], let instance = parameters["InstanceId"], let device = parameters["Device"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameters VolumeId, InstanceId and Device"))
        }
        guard var volume = refreshed(id) else {
            return .failure(Rejection(code: "InvalidVolume.NotFound", message: "The volume '\(id)' does not exist."))
        }
        guard let attachedTo = instances[instance] else {
            return .failure(Rejection(code: "InvalidInstanceID.NotFound", message: "The instance ID '\(instance)' does not exist"))
        }
        guard volume.attachment == nil else {
            return .failure(Rejection(code: "VolumeInUse", message: "\(id) is already attached to an instance"))
        }
        guard volume.state == "available" else {
            return .failure(Rejection(code: "IncorrectState", message: "\(id) is not 'available'."))
        }
        guard volume.availabilityZone == attachedTo.availabilityZone else {
            return .failure(Rejection(code: "InvalidVolume.ZoneMismatch", message: "The volume '\(id)' is not in the same availability zone as instance '\(instance)'"))
        }
        guard AttachmentDeviceNameCheck.isValid(device) else {
            return .failure(Rejection(code: "InvalidParameterValue", message: "Value (\(device)) for parameter device is invalid. \(device) is not a valid EBS device name."))
        }
        guard !volumes.values.contains(where: { $0.attachment?.instanceID == instance && $0.attachment?.device == device }) else {
            return .failure(Rejection(code: "InvalidParameterValue", message: "Invalid value '\(device)' for unixDevice. Attachment point \(device) is already in use"))
        }
        let attachment = DevAttachment(instanceID: instance, device: device, state: "attaching", deleteOnTermination: false)
        volume.attachment = attachment
        volume.state = "in-use"
        volumes[id] = volume
        let delay = settings.dialect == .emulator ? .zero : delays.attach
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.completeAttachment(id)
        }
        return .success(XMLText.element("volumeId", id) + XMLText.element("instanceId", instance) + XMLText.element("device", device)
            + XMLText.element("status", "attaching") + XMLText.element("attachTime", "2026-11-28T10:00:01.000Z"))
    }

    private func completeAttachment(_ id: String) async {
        guard var volume = volumes[id], var attachment = volume.attachment, attachment.state == "attaching" else { return }
        attachment.state = "attached"
        volume.attachment = attachment
        volumes[id] = volume
        await hook?(.attached(volume: volume, instanceID: attachment.instanceID, device: attachment.device))
    }

    private func detachVolume(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let id = parameters["VolumeId"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter VolumeId"))
        }
        guard var volume = refreshed(id) else {
            return .failure(Rejection(code: "InvalidVolume.NotFound", message: "The volume '\(id)' does not exist."))
        }
        guard var attachment = volume.attachment, attachment.state != "detaching" else {
            return .failure(Rejection(code: "IncorrectState", message: "Volume '\(id)' is in the '\(volume.state)' state."))
        }
        attachment.state = "detaching"
        volume.attachment = attachment
        volumes[id] = volume
        let delay = settings.dialect == .emulator ? .zero : delays.detach
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.completeDetachment(id)
        }
        return .success(XMLText.element("volumeId", id) + XMLText.element("instanceId", attachment.instanceID)
            + XMLText.element("device", attachment.device) + XMLText.element("status", "detaching")
            + XMLText.element("attachTime", "2026-11-28T10:00:01.000Z"))
    }

    private func completeDetachment(_ id: String) async {
        guard var volume = volumes[id], let attachment = volume.attachment else { return }
        volume.attachment = nil
        volume.state = "available"
        volumes[id] = volume
        await hook?(.detached(volume: volume, instanceID: attachment.instanceID, device: attachment.device))
    }

    private func deleteVolume(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let id = parameters["VolumeId"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter VolumeId"))
        }
        guard var volume = refreshed(id) else {
            return .failure(Rejection(code: "InvalidVolume.NotFound", message: "The volume '\(id)' does not exist."))
        }
        guard volume.attachment == nil else {
            return .failure(Rejection(code: "VolumeInUse", message: "Volume \(id) is currently attached to \(volume.attachment?.instanceID ?? "")"))
        }
        guard volume.state == "available" || volume.state == "error" else {
            return .failure(Rejection(code: "IncorrectState", message: "The volume '\(id)' is '\(volume.state)'."))
        }
        volume.state = "deleting"
        volumes[id] = volume
        let delay = settings.dialect == .emulator ? .zero : delays.delete
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            await self?.completeDeletion(id)
        }
        return .success(emptyOutput)
    }

    private func completeDeletion(_ id: String) async {
        deletedVolumes[id] = volumes[id]
        volumes[id] = nil
        await hook?(.deleted(volumeID: id))
    }

    private func modifyInstanceAttribute(_ parameters: [String: String]) -> Result<String, Rejection> {
        guard let instance = parameters["InstanceId"] else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter InstanceId"))
        }
        guard instances[instance] != nil else {
            return .failure(Rejection(code: "InvalidInstanceID.NotFound", message: "The instance ID '\(instance)' does not exist"))
        }
        var index = 1
        var changed = false
        while let device = parameters["BlockDeviceMapping.\(index).DeviceName"] {
            guard let flag = parameters["BlockDeviceMapping.\(index).Ebs.DeleteOnTermination"] else {
                return .failure(Rejection(code: "MissingParameter", message: "BlockDeviceMapping.\(index).Ebs.DeleteOnTermination is required"))
            }
            guard let id = volumes.first(where: { $0.value.attachment?.instanceID == instance && $0.value.attachment?.device == device })?.key,
                  var volume = volumes[id], var attachment = volume.attachment
            else {
                return .failure(Rejection(code: "InvalidInstanceAttributeValue", message: "No device is currently mapped at \(device)"))
            }
            attachment.deleteOnTermination = flag == "true"
            volume.attachment = attachment
            volumes[id] = volume
            changed = true
            index += 1
        }
        guard changed else {
            return .failure(Rejection(code: "InvalidParameterCombination", message: "No attribute specified."))
        }
        return .success(emptyOutput)
    }

    private func createTags(_ parameters: [String: String]) -> Result<String, Rejection> {
        let resources = list(parameters, "ResourceId")
        guard !resources.isEmpty else {
            return .failure(Rejection(code: "MissingParameter", message: "The request must contain the parameter ResourceId"))
        }
        for id in resources where volumes[id] == nil && snapshots[id] == nil {
            let kind = id.hasPrefix("snap-") ? ("InvalidSnapshot.NotFound", "snapshot") : ("InvalidVolume.NotFound", "volume")
            return .failure(Rejection(code: kind.0, message: "The \(kind.1) '\(id)' does not exist."))
        }
        var index = 1
        while let key = parameters["Tag.\(index).Key"] {
            for id in resources {
                let value = parameters["Tag.\(index).Value"] ?? ""
                if volumes[id] != nil {
                    volumes[id]?.tags[key] = value
                } else if var snapshot = snapshots[id] {
                    snapshot.tags = (snapshot.tags ?? [:]).merging([key: value]) { $1 }
                    snapshots[id] = snapshot
                }
            }
            index += 1
        }
        return .success(emptyOutput)
    }

    /// The tags of `TagSpecification.N` for a resource being created, which must be of `resourceType`.
    private func tagSpecifications(_ parameters: [String: String], for resourceType: String) -> Result<[String: String], Rejection> {
        var tags: [String: String] = [:]
        var index = 1
        while let given = parameters["TagSpecification.\(index).ResourceType"] {
            guard given == resourceType else {
                return .failure(Rejection(code: "InvalidParameterValue", message: "'\(given)' is not a valid taggable resource type for this operation."))
            }
            var tagIndex = 1
            while let key = parameters["TagSpecification.\(index).Tag.\(tagIndex).Key"] {
                tags[key] = parameters["TagSpecification.\(index).Tag.\(tagIndex).Value"] ?? ""
                tagIndex += 1
            }
            index += 1
        }
        return .success(tags)
    }

    /// What an action with an empty output answers: EC2 adds `<return>true</return>`.
    private var emptyOutput: String {
        settings.dialect == .ec2 ? XMLText.element("return", "true") : ""
    }

    private func describeInstances(_ parameters: [String: String]) -> Result<String, Rejection> {
        let ids = list(parameters, "InstanceId")
        for id in ids where instances[id] == nil || unknownToEC2.contains(id) {
            return .failure(Rejection(code: "InvalidInstanceID.NotFound", message: "The instance ID '\(id)' does not exist"))
        }
        let fields: [String: (DevInstance) -> String?] = ["instance-id": { $0.id }, "instance-state-name": { $0.state ?? "running" }]
        let selected: [DevInstance]
        switch filtered((ids.isEmpty ? instances.keys.sorted() : ids).compactMap { instances[$0] }.filter { !unknownToEC2.contains($0.id) },
                        parameters, tags: { _ in [:] }, fields: fields) {
        case .success(let found): selected = found
        case .failure(let rejection): return .failure(rejection)
        }
        let items = selected.map { instance -> String in
            let mappings = volumes.values.compactMap { volume -> (String, DevVolume, DevAttachment)? in
                guard let attachment = volume.attachment, attachment.instanceID == instance.id else { return nil }
                return (attachment.device, volume, attachment)
            }.sorted { $0.0 < $1.0 }
            let blockDevices = mappings.map { device, volume, attachment in
                "<item>" + XMLText.element("deviceName", device) + "<ebs>" + XMLText.element("volumeId", volume.id)
                    + XMLText.element("status", attachment.state) + XMLText.element("attachTime", "2026-11-28T10:00:01.000Z")
                    + XMLText.element("deleteOnTermination", attachment.deleteOnTermination ? "true" : "false") + "</ebs></item>"
            }.joined()
            return "<item>" + XMLText.element("instanceId", instance.id)
                + "<instanceState><code>\(Self.stateCodes[instance.state ?? "running"] ?? 16)</code><name>\(instance.state ?? "running")</name></instanceState>"
                + XMLText.element("privateIpAddress", instance.privateAddress)
                + "<placement>" + XMLText.element("availabilityZone", instance.availabilityZone) + "</placement>"
                + "<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping>\(blockDevices)</blockDeviceMapping></item>"
        }.joined()
        return .success("""
                <reservationSet><item><reservationId>r-0123456789abcdef0</reservationId><ownerId>\(settings.accountID)</ownerId><instancesSet>\
            \(items)</instancesSet></item></reservationSet>
            """)
    }

    static let stateCodes = ["pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80]

    // MARK: - Auto Scaling

    /// Auto Scaling's Query API (version 2011-01-01, SigV4 service `autoscaling`):
    /// DescribeAutoScalingGroups, paged by NextToken; names it does not know are left out of
    /// the answer, as Auto Scaling does. Errors in the `<ErrorResponse>` form.
    func autoScaling(_ request: ReceivedRequest, fault: FaultKind?) -> Answer {
        let id = requestID()
        let form = QueryParameters.parse(formEncoded: String(decoding: request.body, as: UTF8.self))
        let parameters = form.map(Self.actionParameters) ?? [:]
        let action = form?["Action"] ?? ""
        func fail(_ code: String, _ message: String, _ status: Int, key: String? = nil) -> Answer {
            record("autoscaling", action, parameters, outcome: code, accessKeyID: key)
            return Answer(status: status, body: XMLText.errorResponse(code: code, message: message, requestID: id))
        }
        if let fault, ![.lostResponse, .truncated, .malformed].contains(fault) {
            record("autoscaling", action, parameters, outcome: "fault:\(fault.rawValue)")
            return Answer(status: 0, body: "")
        }
        guard form?["Version"] == "2011-01-01" else { return fail("InvalidParameterValue", "Version must be 2011-01-01.", 400) }
        let key: String
        switch verifySignature(request, service: "autoscaling") {
        case .success(let accessKeyID): key = accessKeyID
        case .failure(let rejection):
            return fail(rejection.code == "AuthFailure" ? "InvalidClientTokenId" : rejection.code, rejection.message, rejection.status, key: rejection.key)
        }
        guard action == "DescribeAutoScalingGroups" else { return fail("InvalidAction", "Could not find operation \(action) for version 2011-01-01", 400, key: key) }
        guard takeToken(for: "autoscaling:" + action) else { return fail("Throttling", "Rate exceeded", 400, key: key) }
        guard permissions?.contains("autoscaling:" + action) ?? true else {
            return fail("AccessDenied", "User is not authorized to perform: autoscaling:\(action)", 403, key: key)
        }
        let names = list(parameters, "AutoScalingGroupNames.member")
        let known = Set(instances.values.compactMap(\.group))
        let selected = (names.isEmpty ? known.sorted() : names.filter { known.contains($0) }).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let pageSize = min(groupPageSize, Int(parameters["MaxRecords"] ?? "") ?? 50)
        let start = Int(parameters["NextToken"] ?? "") ?? 0
        let page = selected.dropFirst(start).prefix(pageSize)
        let groups = page.map { name -> String in
            let members = instances.values.filter { $0.group == name }.sorted { $0.id < $1.id }.map { instance in
                "<member>" + XMLText.element("InstanceId", instance.id) + XMLText.element("InstanceType", "t3.micro")
                    + XMLText.element("AvailabilityZone", instance.availabilityZone)
                    + XMLText.element("LifecycleState", instance.lifecycleState ?? "InService") + XMLText.element("HealthStatus", "Healthy")
                    + "<ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>"
            }.joined()
            return "<member>" + XMLText.element("AutoScalingGroupName", name)
                + XMLText.element("AutoScalingGroupARN", "arn:aws:autoscaling:\(settings.region):\(settings.accountID):autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/\(name)")
                + "<Instances>\(members)</Instances></member>"
        }.joined()
        let next = start + page.count < selected.count ? XMLText.element("NextToken", String(start + page.count)) : ""
        record("autoscaling", action, parameters, outcome: fault.map { "fault:\($0.rawValue)" } ?? "ok", accessKeyID: key)
        return .xml(XMLText.autoScalingResponse(action, requestID: id, "<AutoScalingGroups>\(groups)</AutoScalingGroups>\(next)"))
    }

    // MARK: - SSM

    /// SSM's JSON 1.1 protocol (`X-Amz-Target: AmazonSSM.<Action>`, SigV4 service `ssm`):
    /// GetParameter and PutParameter, with SSM's error shapes.
    func ssm(_ request: ReceivedRequest, fault: FaultKind?) -> Answer {
        let action = String(request.header("X-Amz-Target")?.dropFirst("AmazonSSM.".count) ?? "")
        func fail(_ type: String, _ message: String, _ status: Int = 400, key: String? = nil) -> Answer {
            record("ssm", action, outcome: type, accessKeyID: key)
            let body = "{\"__type\":\"\(type)\",\"message\":\"\(message.replacingOccurrences(of: "\"", with: "'"))\"}"
            return Answer(status: status, body: body, contentType: "application/x-amz-json-1.1")
        }
        if let fault {
            record("ssm", action, outcome: "fault:\(fault.rawValue)")
            return Answer(status: 0, body: "")
        }
        let key: String
        switch verifySignature(request, service: "ssm") {
        case .success(let accessKeyID): key = accessKeyID
        case .failure(let rejection):
            // SSM answers a bad or an expired signature with InvalidSignatureException.
            let code = rejection.code == "SignatureDoesNotMatch" || rejection.code == "RequestExpired" ? "InvalidSignatureException" : "UnrecognizedClientException"
            return fail(code, rejection.code == "RequestExpired" ? "Signature expired: the request's time is more than 5 minutes from the server's" : rejection.message, 400,
                        key: rejection.key)
        }
        guard takeToken(for: "ssm:" + action) else { return fail("ThrottlingException", "Rate exceeded", key: key) }
        guard permissions?.contains("ssm:" + action) ?? true else {
            return fail("AccessDeniedException", "User is not authorized to perform: ssm:\(action)", key: key)
        }
        guard let json = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any], let name = json["Name"] as? String else {
            return fail("ValidationException", "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null", key: key)
        }
        let answer: String
        switch action {
        case "GetParameter":
            guard let parameter = parameters[name] else { return fail("ParameterNotFound", "", key: key) }
            let value = String(data: (try? JSONSerialization.data(withJSONObject: [parameter.value], options: [])) ?? Data(), encoding: .utf8)?
                .dropFirst().dropLast() ?? "\"\""
            answer = "{\"Parameter\":{\"Name\":\"\(name)\",\"Type\":\"String\",\"Value\":\(value),\"Version\":\(parameter.version),\"DataType\":\"text\"}}"
        case "GetParameterHistory":
            let values = parameterHistory[name] ?? []
            guard !values.isEmpty else { return fail("ParameterNotFound", "", key: key) }
            // Pages of MaxResults (at most 50), as SSM pages them.
            let size = min(50, max(1, json["MaxResults"] as? Int ?? 50))
            let start = (json["NextToken"] as? String).flatMap(Int.init) ?? 0
            let page = values.enumerated().dropFirst(start).prefix(size)
            let items = page.map { index, value in
                let quoted = String(data: (try? JSONSerialization.data(withJSONObject: [value], options: [])) ?? Data(), encoding: .utf8)?.dropFirst().dropLast() ?? "\"\""
                return "{\"Name\":\"\(name)\",\"Type\":\"String\",\"Value\":\(quoted),\"Version\":\(index + 1)}"
            }
            let next = start + size < values.count ? ",\"NextToken\":\"\(start + size)\"" : ""
            answer = "{\"Parameters\":[\(items.joined(separator: ","))]\(next)}"
        case "PutParameter":
            guard let value = json["Value"] as? String else { return fail("ValidationException", "Value must not be null", key: key) }
            if parameters[name] != nil, json["Overwrite"] as? Bool != true {
                return fail("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.", key: key)
            }
            setParameter(name, value)
            answer = "{\"Version\":\(parameters[name]?.version ?? 1),\"Tier\":\"Standard\"}"
        default:
            return fail("InvalidAction", "Unknown action \(action)", key: key)
        }
        record("ssm", action, ["Name": name], outcome: "ok", accessKeyID: key)
        return Answer(status: 200, body: answer, contentType: "application/x-amz-json-1.1")
    }

    // MARK: - Release server

    func releaseAnswer() -> ReleaseResponse {
        let answer = release.current
        record("release", "snap.txt", outcome: String(answer.status))
        return answer
    }
}

/// EC2's rule for AttachVolume device names on Linux.
enum AttachmentDeviceNameCheck {
    static func isValid(_ device: String) -> Bool {
        (try? AttachmentDeviceName(parsing: device)) != nil
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
