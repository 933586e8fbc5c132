import FuzzSupport
import SnapmountCore

/// Property: whatever the body, the reader either throws or returns a valid id that the
/// body holds.
func fuzzOne(_ bytes: [UInt8]) {
    guard let id = try? SnapshotSourceBody.parse(bytes, url: "http://fuzz/snap.txt") else { return }
    precondition(SnapshotID(id.text) == id, "returned an invalid id")
    precondition(String(decoding: bytes, as: UTF8.self).contains(id.text), "returned an id the body does not hold")
}

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("FuzzSnapshotID_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
