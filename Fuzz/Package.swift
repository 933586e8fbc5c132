// swift-tools-version:6.2
//
// libFuzzer targets for snapmount's parsers. Built only with
//   swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
// (make fuzz, make fuzz-smoke); each target is one binary taking libFuzzer's options.
// SnapmountCore and its C bridges are the main package's own sources (symlinks), so this
// package has no dependencies — and no plugins to build with the fuzzer's flags.
import PackageDescription

let fuzzTargets = ["FuzzSnapshotID", "FuzzEC2XML", "FuzzIMDSJSON", "FuzzConfig", "FuzzFstab"]

let package = Package(
    name: "snapmount-fuzz",
    targets: [
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto"),
        .systemLibrary(name: "CXML2", pkgConfig: "libxml-2.0"),
        .target(name: "SnapmountCore", dependencies: ["CCrypto", "CXML2"]),
        .target(name: "FuzzSupport"),
    ] + fuzzTargets.map { name in
        .executableTarget(name: name, dependencies: ["SnapmountCore", "FuzzSupport"], path: "Sources/\(name)")
    }
)
