import FuzzSupport
import SnapmountCore

/// Property: adding the entry either throws, leaves the file alone, or returns the input
/// followed by at most a newline and exactly one line.
func fuzzOne(_ bytes: [UInt8]) {
    guard let label = try? FilesystemLabel(parsing: "code_release"), let mountPoint = try? AbsolutePath(parsing: "/release"),
          let options = try? MountOptions(parsing: "defaults,nofail")
    else { return }
    let entry = FstabEntry(label: label, mountPoint: mountPoint, filesystem: .ext4, options: options)
    guard case .append(let output)? = try? FstabEditor.ensure(entry, in: bytes) else { return }
    precondition(output.count > bytes.count && Array(output.prefix(bytes.count)) == bytes, "the input was not kept")
    var added = Array(output.dropFirst(bytes.count))
    if !bytes.isEmpty && bytes.last != UInt8(ascii: "\n") {
        precondition(added.first == UInt8(ascii: "\n"), "no newline before the entry")
        added.removeFirst()
    }
    precondition(added == Array((entry.line + "\n").utf8), "more than the entry was added")
}

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("FuzzFstab_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
