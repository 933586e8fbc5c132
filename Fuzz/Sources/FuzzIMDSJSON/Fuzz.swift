import FuzzSupport
import SnapmountCore

/// Properties: the JSON reader never crashes; what it reads, written back, reads the same;
/// the IMDS documents decode or throw.
func fuzzOne(_ bytes: [UInt8]) {
    if let value = try? parseJSON(bytes) {
        precondition((try? parseJSON(Array(value.text.utf8))) == value, "text form does not read back")
        precondition((try? parseJSON(Array(value.pretty().utf8))) == value, "pretty form does not read back")
    }
    _ = try? IMDSDocuments.identity(bytes)
    _ = try? IMDSDocuments.roleCredentials(bytes, role: "fuzz")
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
