/// Who and where this instance is, from the instance identity document.
public struct InstanceIdentity: Sendable, Equatable {
    public var instanceID: InstanceID
    public var region: String
    public var availabilityZone: String
    public var accountID: String

    public init(instanceID: InstanceID, region: String, availabilityZone: String, accountID: String) {
        self.instanceID = instanceID
        self.region = region
        self.availabilityZone = availabilityZone
        self.accountID = accountID
    }
}

/// An IMDS document that is not what its path promises.
public struct IMDSDocumentError: SnapmountError, Equatable {
    public let path: String
    public let problem: String

    public var exitStatus: ExitStatus { .unavailable }
    public var description: String { "instance metadata \(path): \(problem)" }
}

/// Decoders for the JSON documents IMDS serves.
public enum IMDSDocuments {
    /// `dynamic/instance-identity/document`
    public static func identity(_ bytes: [UInt8]) throws(IMDSDocumentError) -> InstanceIdentity {
        let path = "dynamic/instance-identity/document"
        guard let document = try? parseJSON(bytes), let instanceID = document["instanceId"]?.string,
              let region = document["region"]?.string, let zone = document["availabilityZone"]?.string,
              let account = document["accountId"]?.string
        else {
            throw IMDSDocumentError(path: path, problem: "not an identity document: \(String(decoding: bytes.prefix(80), as: UTF8.self).quotedForMessage())")
        }
        guard let instance = InstanceID(instanceID) else {
            throw IMDSDocumentError(path: path, problem: "instanceId \(instanceID.quotedForMessage()) is not an instance id")
        }
        guard isRegionName(region), zone.hasPrefix(region), zone.count > region.count, isRegionName(zone) else {
            throw IMDSDocumentError(path: path, problem: "region \(region.quotedForMessage()) and zone \(zone.quotedForMessage()) do not match")
        }
        return InstanceIdentity(instanceID: instance, region: region, availabilityZone: zone, accountID: account)
    }

    /// `meta-data/iam/security-credentials/<role>`: temporary credentials with their expiry.
    public static func roleCredentials(_ bytes: [UInt8], role: String) throws(IMDSDocumentError) -> AWSCredentials {
        let path = "meta-data/iam/security-credentials/\(role)"
        guard let document = try? parseJSON(bytes), let code = document["Code"]?.string else {
            // Never quote this body: it may hold a secret.
            throw IMDSDocumentError(path: path, problem: "not a credentials document (\(bytes.count) bytes)")
        }
        guard code == "Success" else {
            throw IMDSDocumentError(path: path, problem: "IMDS reports \(code.quotedForMessage(limit: 40)) for role \(role)")
        }
        guard let key = document["AccessKeyId"]?.string, !key.isEmpty, let secret = document["SecretAccessKey"]?.string, !secret.isEmpty,
              let token = document["Token"]?.string, !token.isEmpty, let expirationText = document["Expiration"]?.string
        else { throw IMDSDocumentError(path: path, problem: "a credentials document without key, secret, token or expiration") }
        guard let expiration = UTCTimestamp(iso8601: expirationText) else {
            throw IMDSDocumentError(path: path, problem: "Expiration \(expirationText.quotedForMessage(limit: 40)) is not a time")
        }
        return AWSCredentials(accessKeyID: key, secretAccessKey: Secret(secret), sessionToken: Secret(token), expiration: expiration)
    }

    /// `meta-data/iam/security-credentials/`: the instance profile's role, one name per line
    /// (there is one). IAM role names are 1–64 characters of letters, digits and `+=,.@_-`;
    /// anything else is a garbled answer, not a role — nil when the list is empty.
    public static func roleName(_ bytes: [UInt8]) throws(IMDSDocumentError) -> String? {
        let path = "meta-data/iam/security-credentials/"
        guard let first = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true).first else { return nil }
        let line = first.last == UInt8(ascii: "\r") ? first.dropLast() : first
        guard (1...64).contains(line.count), line.allSatisfy(isRoleNameByte) else {
            throw IMDSDocumentError(path: path, problem: "not a role name: \(String(decoding: line.prefix(80), as: UTF8.self).quotedForMessage())")
        }
        return String(decoding: line, as: UTF8.self)
    }

    /// `PUT api/token`: a session token is printable ASCII without spaces; anything else
    /// (empty, cut to nothing, garbled) cannot go into a header. Never quoted: it is a secret.
    public static func sessionToken(_ bytes: [UInt8]) throws(IMDSDocumentError) -> Secret {
        guard (1...4096).contains(bytes.count), bytes.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw IMDSDocumentError(path: "api/token", problem: "not a session token (\(bytes.count) bytes)")
        }
        return Secret(String(decoding: bytes, as: UTF8.self))
    }

    private static func isRoleNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "+"), UInt8(ascii: "="), UInt8(ascii: ","), UInt8(ascii: "."), UInt8(ascii: "@"), UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    /// A region (or zone) name: lower-case letters, digits and dashes, as `eu-west-1`. It
    /// goes into the endpoint's host name and the signature's scope, so nothing else passes.
    public static func isRegionName(_ text: String) -> Bool {
        !text.isEmpty && text.count <= 32 && text.utf8.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
        }
    }
}
