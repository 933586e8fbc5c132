import FuzzSupport
import SnapmountCore

/// Properties: the JSON reader never crashes; what it reads, written back, reads the same;
/// the IMDS documents decode or throw; a role name is always a single path segment and a
/// session token always fits a header.
func fuzzOne(_ bytes: [UInt8]) {
    if let value = try? parseJSON(bytes) {
        precondition((try? parseJSON(Array(value.text.utf8))) == value, "text form does not read back")
        precondition((try? parseJSON(Array(value.pretty().utf8))) == value, "pretty form does not read back")
    }
    _ = try? IMDSDocuments.identity(bytes)
    _ = try? IMDSDocuments.roleCredentials(bytes, role: "fuzz")
    if let role = try? IMDSDocuments.roleName(bytes) {
        precondition((1...64).contains(role.utf8.count) && !role.contains("/"), "a role name that cannot be a path segment")
    }
    if let token = try? IMDSDocuments.sessionToken(bytes) {
        precondition(!token.exposedValue().contains(" ") && !token.exposedValue().contains("\n"), "a token that breaks a header")
    }
}

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("FuzzIMDSJSON_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
