import FuzzSupport
import SnapmountCore

/// Property: no input crashes the XML decoders; what decodes has valid ids.
func fuzzOne(_ bytes: [UInt8]) {
    if let volumes = try? EC2Decoder.volumes(bytes) {
        for volume in volumes { precondition(VolumeID(volume.id.text) != nil) }
    }
    _ = try? EC2Decoder.snapshots(bytes)
    _ = try? EC2Decoder.createdVolume(bytes)
    _ = try? EC2Decoder.attachment(bytes, action: "AttachVolume")
    _ = try? EC2Decoder.emptyOutput(bytes, action: "DeleteVolume")
    _ = EC2ErrorBody.parse(bytes)
}

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("FuzzEC2XML_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
