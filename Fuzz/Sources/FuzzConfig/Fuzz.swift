import FuzzSupport
import SnapmountCore

/// Properties: the configuration parser never crashes; every issue names a line of the
/// file; a configuration that resolves has fstab-safe values.
func fuzzOne(_ bytes: [UInt8]) {
    let (file, issues) = ConfigFile.parse(bytes, path: "/fuzz.conf")
    let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).count
    for issue in issues {
        guard case .file(_, let line)? = issue.origin else { preconditionFailure("an issue without a line") }
        precondition((1...max(lines, 1)).contains(line), "an issue names line \(line) of \(lines)")
    }
    if let configuration = try? Configuration.resolve(file: file, fileIssues: issues, environment: [:], options: [:]) {
        for text in [configuration.mountPoint.text, configuration.label.text, configuration.mountOptions.description] {
            precondition(!text.unicodeScalars.contains { $0.properties.isWhitespace || $0.value < 0x20 }, "unsafe fstab field")
        }
    }
}

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("FuzzConfig_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzTestOneInput)
}
