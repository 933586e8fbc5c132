import Foundation
import SnapmountCore

/// How DevCloud's world is set up. The defaults are a plausible single instance in one
/// zone, with EC2's published throttling buckets and state changes that take about a second.
public struct DevCloudSettings: Sendable {
    public var region = "eu-west-1"
    public var availabilityZone = "eu-west-1a"
    /// Other zones of the region, for cross-zone refusals.
    public var otherZones = ["eu-west-1b", "eu-west-1c"]
    public var accountID = "123456789012"
    public var instanceID = "i-0123456789abcdef0"
    /// The instance profile's role; `nil` for an instance without one.
    public var roleName: String? = "snapmount-release-role"
    /// Long-term keys EC2 accepts too, as if from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    public var staticAccessKeyID = "AKIADEVCLOUDSTATIC01"
    public var staticSecretAccessKey = "devcloud/static/secret/key/0000000000000"
    /// How long role credentials live, and how long before expiry IMDS hands out new ones.
    public var roleCredentialLifetime: Duration = .seconds(6 * 3600)
    public var roleCredentialRotateBefore: Duration = .seconds(15 * 60)
    public var delays = StateDelays()
    public var buckets = ThrottleBuckets()
    /// How long a `noResponse` fault holds a request before giving up on it.
    public var hangDuration: Duration = .seconds(60)
    /// How the EC2 endpoint answers: as EC2 does, or as EC2-compatible emulators do.
    public var dialect = Dialect.ec2
    /// EC2 answers a request signed more than five minutes off with `RequestExpired` (400) or,
    /// as it also does, `AuthFailure` (401): true for the second.
    public var skewIsAuthFailure = false

    public init() {}
}

/// EC2 as AWS documents it, or as the EC2-compatible emulators people run in CI answer (the
/// ways, seen in moto 5, in which they differ from EC2 and in which the AWS SDKs still work).
public enum Dialect: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case ec2
    /// No `<return>` in empty outputs; `<ErrorResponse>` error documents for authentication
    /// and authorisation; no `deleteOnTermination` in attachments; state changes at once;
    /// ClientToken ignored; DryRun answered 412 in the `<ErrorResponse>` form; DetachVolume
    /// needs the InstanceId.
    case emulator

    public var description: String { rawValue }
}

/// An instance DevCloud serves: its identity document, its role, its address.
public struct DevInstance: Sendable, Codable, Equatable {
    public var id: String
    public var availabilityZone: String
    public var roleName: String?
    public var privateAddress: String
    /// The Auto Scaling group it belongs to, if any.
    public var group: String?
    /// Its Auto Scaling lifecycle state (`nil`: `InService`).
    public var lifecycleState: String?
    /// EC2's instance state (`nil`: `running`).
    public var state: String?

    public init(id: String, availabilityZone: String, roleName: String?, privateAddress: String, group: String? = nil,
                lifecycleState: String? = nil, state: String? = nil) {
        self.id = id
        self.availabilityZone = availabilityZone
        self.roleName = roleName
        self.privateAddress = privateAddress
        self.group = group
        self.lifecycleState = lifecycleState
        self.state = state
    }
}

/// How long EC2's state changes take in DevCloud.
public struct StateDelays: Sendable, Codable, Equatable {
    /// creating → available
    public var volumeCreate: Duration = .seconds(1)
    /// attaching → attached
    public var attach: Duration = .seconds(1)
    /// detaching → detached
    public var detach: Duration = .milliseconds(500)
    /// deleting → gone
    public var delete: Duration = .milliseconds(500)
    /// A new snapshot: pending → completed, its progress rising on the way
    public var snapshot: Duration = .seconds(2)

    public init() {}
}

/// The sizes of the token buckets, by category of action, like EC2's published defaults; each
/// action has a bucket of its own (EC2 throttles per API, per account and region).
public struct ThrottleBuckets: Sendable, Codable, Equatable {
    public var describe = BucketSize(capacity: 100, refillPerSecond: 20)
    public var createVolume = BucketSize(capacity: 100, refillPerSecond: 5)
    public var mutating = BucketSize(capacity: 50, refillPerSecond: 5)

    public init() {}
}

public struct BucketSize: Sendable, Codable, Equatable {
    public var capacity: Double
    public var refillPerSecond: Double

    public init(capacity: Double, refillPerSecond: Double) {
        self.capacity = capacity
        self.refillPerSecond = refillPerSecond
    }
}

/// A snapshot DevCloud knows; `image` is the file a volume made from it starts as.
public struct DevSnapshot: Sendable, Codable, Equatable {
    public var id: String
    /// `completed` or `pending`
    public var state: String
    public var ownerID: String
    public var sizeGiB: Int
    public var encrypted: Bool
    public var image: String?
    /// When it was taken (ISO 8601), which tells releases apart in time.
    public var startTime: String?
    /// The volume it was taken from (CreateSnapshot), its description and tags.
    public var volumeID: String?
    public var description: String?
    public var tags: [String: String]?

    public init(id: String, state: String = "completed", ownerID: String = "123456789012", sizeGiB: Int = 1,
                encrypted: Bool = false, image: String? = nil, startTime: String? = nil, volumeID: String? = nil,
                description: String? = nil, tags: [String: String]? = nil) {
        self.id = id
        self.state = state
        self.ownerID = ownerID
        self.sizeGiB = sizeGiB
        self.encrypted = encrypted
        self.image = image
        self.startTime = startTime
        self.volumeID = volumeID
        self.description = description
        self.tags = tags
    }
}

public struct DevAttachment: Sendable, Codable, Equatable {
    public var instanceID: String
    public var device: String
    /// `attaching`, `attached`, `detaching`
    public var state: String
    public var deleteOnTermination: Bool
}

/// A volume as DevCloud holds it.
public struct DevVolume: Sendable, Codable, Equatable {
    public var id: String
    public var sizeGiB: Int
    public var availabilityZone: String
    /// `creating`, `available`, `in-use`, `deleting`
    public var state: String
    public var snapshotID: String?
    public var volumeType: String
    public var iops: Int?
    public var throughput: Int?
    public var encrypted: Bool
    public var kmsKeyID: String?
    public var tags: [String: String]
    public var attachment: DevAttachment?
    public var clientToken: String?
}

/// What a fault does to a request.
public enum FaultKind: String, Sendable, Codable, CaseIterable {
    /// HTTP 500 with EC2's InternalError.
    case http500
    /// HTTP 503 with EC2's Unavailable.
    case http503
    /// HTTP 503 RequestLimitExceeded, whatever the buckets say.
    case throttle
    /// The connection is reset (TCP RST) before any answer.
    case reset
    /// No answer at all until the client gives up.
    case noResponse
    /// HTTP 200 with the first half of a well-formed answer. An EC2 action is carried out
    /// first: a 200 means the service did it; the body broke on the way.
    case truncated
    /// HTTP 200 with a body that is not XML (an EC2 action is carried out first).
    case malformed
    /// HTTP 502 with a load balancer's HTML error page.
    case html
    /// The request is carried out, then the connection is reset: the answer is lost.
    case lostResponse
}

/// When a fault applies, counting the calls to its target from 1.
public enum FaultTrigger: Sendable, Codable, Equatable {
    /// Only the n-th call.
    case nthCall(Int)
    /// Every call from now on.
    case always
    /// Every call from the n-th on (`fromCall(2)`: all but the first).
    case fromCall(Int)
    /// Each call with this probability.
    case fraction(Double)
    /// Every call for this many seconds after the fault is added (a service down at boot).
    case during(seconds: Double)
    /// The first `count` calls (a service down at boot, however long the boot takes to call it).
    case firstCalls(count: Int)
}

public struct Fault: Sendable, Codable, Equatable {
    /// An EC2 action (`CreateVolume`), `imds:token`, `imds:<path>` (`imds:dynamic/instance-identity/document`)
    /// or `release`.
    public var target: String
    public var kind: FaultKind
    public var trigger: FaultTrigger

    public init(target: String, kind: FaultKind, trigger: FaultTrigger) {
        self.target = target
        self.kind = kind
        self.trigger = trigger
    }
}

/// One request DevCloud received, and what became of it.
public struct CallRecord: Sendable, Codable, Equatable {
    /// `ec2`, `imds` or `release`
    public var service: String
    /// The EC2 action, the IMDS path, or the release path.
    public var action: String
    /// EC2 parameters without Action and Version.
    public var parameters: [String: String]
    /// Seconds since DevCloud started.
    public var time: Double
    /// `ok`, an EC2 error code, an HTTP status, or `fault:<kind>`.
    public var outcome: String
    public var dryRun: Bool
    public var accessKeyID: String?

    public var isMutating: Bool {
        service == "ec2" && !action.hasPrefix("Describe")
    }
}

/// What the release server answers for `snap.txt`.
public struct ReleaseResponse: Sendable, Codable, Equatable {
    public var status: Int
    public var body: String
    public var contentType: String
    /// Wait this long before answering.
    public var delayMilliseconds: Int
    /// Serve this file's content as it is at each request instead of `body` (the file
    /// `snapmount publish` writes, as a web server would serve it); 404 while it is missing.
    public var file: String?

    public init(status: Int = 200, body: String, contentType: String = "text/plain", delayMilliseconds: Int = 0, file: String? = nil) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.delayMilliseconds = delayMilliseconds
        self.file = file
    }

    /// What a request sees now.
    var current: ReleaseResponse {
        guard let file else { return self }
        guard let data = FileManager.default.contents(atPath: file) else {
            return ReleaseResponse(status: 404, body: "", contentType: contentType, delayMilliseconds: delayMilliseconds, file: file)
        }
        return ReleaseResponse(status: status, body: String(decoding: data, as: UTF8.self), contentType: contentType,
                               delayMilliseconds: delayMilliseconds, file: file)
    }
}

/// A change to an attachment, for the device plane.
public enum AttachmentEvent: Sendable, Equatable {
    case attached(volume: DevVolume, instanceID: String, device: String)
    case detached(volume: DevVolume, instanceID: String, device: String)
    case deleted(volumeID: String)
}

/// An HTTP answer DevCloud's logic decided on, before faults shape how it is delivered.
struct Answer: Sendable {
    var status: Int
    var body: String
    var contentType = "text/xml;charset=UTF-8"
    var headers: [(String, String)] = []

    static func xml(_ body: String) -> Answer {
        Answer(status: 200, body: body)
    }
}

enum XMLText {
    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }

    static func element(_ name: String, _ value: String) -> String {
        "<\(name)>\(escape(value))</\(name)>"
    }

    static let namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

    static func response(_ action: String, requestID: String, _ inner: String) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<\(action)Response xmlns=\"\(namespace)\">\n    <requestId>\(requestID)</requestId>\n\(inner)\n</\(action)Response>"
    }

    /// The generic Query error form: `<ErrorResponse><Error><Type>…`.
    static func errorResponse(code: String, message: String, requestID: String) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>\(escape(code))</Code><Message>\(escape(message))</Message></Error><RequestId>\(requestID)</RequestId></ErrorResponse>"
    }

    static let autoScalingNamespace = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

    /// Auto Scaling's Query answers: `<ActionResult>` and `<ResponseMetadata>`.
    static func autoScalingResponse(_ action: String, requestID: String, _ inner: String) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<\(action)Response xmlns=\"\(autoScalingNamespace)\">\n  <\(action)Result>\(inner)</\(action)Result>\n  <ResponseMetadata><RequestId>\(requestID)</RequestId></ResponseMetadata>\n</\(action)Response>"
    }

    static func error(code: String, message: String, requestID: String) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>\(escape(code))</Code><Message>\(escape(message))</Message></Error></Errors><RequestID>\(requestID)</RequestID></Response>"
    }
}

func randomHex(_ count: Int) -> String {
    let digits = Array("0123456789abcdef")
    return String((0..<count).map { _ in digits[Int.random(in: 0..<16)] })
}

func requestID() -> String {
    UUID().uuidString.lowercased()
}
