// swift-tools-version:6.2
//
// snapmount — a boot agent that mounts the current release's EBS snapshot.
// Layout (DESIGN.md §6): C bridges → SnapmountCore (pure) → SnapmountSystem (edges)
// → the `snapmount` executable (command tree only).
import PackageDescription

let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "snapmount",
    products: [
        .executable(name: "snapmount", targets: ["snapmount"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Tests only: a real HTTP server on 127.0.0.1 (and, later, the local cloud).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // System libraries every distribution ships. Each shim.h holds prefixed static inline
        // wrappers where Swift cannot call the C API directly.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CBlkid", pkgConfig: "blkid", providers: [.apt(["libblkid-dev"])]),
        .systemLibrary(name: "CXML2", pkgConfig: "libxml-2.0", providers: [.apt(["libxml2-dev"])]),
        // glibc's GNU extensions and variadic calls, declared and wrapped (no library of its own).
        .systemLibrary(name: "CLinux"),
        // Keeps the release binary's glibc symbol versions at 2.34 or below (scripts/check-binary).
        .target(name: "CGlibcFloor"),

        // Pure logic: configuration, SigV4, errors. Hashing through libcrypto is computation,
        // not I/O, so the signer stays here and is tested byte for byte.
        .target(
            name: "SnapmountCore",
            dependencies: ["CCrypto", "CXML2"],
            swiftSettings: strict
        ),
        // Edges that touch the world: HTTP over libcurl, stderr logging, files.
        .target(
            name: "SnapmountSystem",
            dependencies: [
                "SnapmountCore", "CCurl", "CCrypto", "CBlkid", "CXML2", "CLinux",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The boot flow: the steps of DESIGN.md §2 over the edges.
        .target(
            name: "SnapmountAgent",
            dependencies: [
                "SnapmountCore", "SnapmountSystem",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The local cloud for tests and the demo (never linked into the product).
        .target(
            name: "DevCloud",
            dependencies: [
                "SnapmountCore", "SnapmountSystem",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "devcloud",
            dependencies: [
                "DevCloud", "SnapmountCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        // @main and the command tree only.
        .executableTarget(
            name: "snapmount",
            dependencies: [
                "SnapmountCore", "SnapmountSystem", "SnapmountAgent", "CGlibcFloor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Helpers shared by the test targets: threads for blocking calls, log capture,
        // recording clocks, in-process servers.
        .target(
            name: "SnapmountTestSupport",
            dependencies: [
                "SnapmountCore", "SnapmountSystem", "SnapmountAgent", "DevCloud", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Tests/SnapmountTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapmountCoreTests",
            dependencies: ["SnapmountCore", "SnapmountTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapmountSystemTests",
            dependencies: [
                "SnapmountCore", "SnapmountSystem", "SnapmountTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapmountCloudTests",
            dependencies: [
                "SnapmountCore", "SnapmountSystem", "SnapmountAgent", "DevCloud", "SnapmountTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapmountHostTests",
            dependencies: [
                "SnapmountCore", "SnapmountSystem", "SnapmountAgent", "DevCloud", "SnapmountTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapmountCLITests",
            dependencies: ["snapmount", "SnapmountCore", "DevCloud", "SnapmountTestSupport", .product(name: "Hummingbird", package: "hummingbird")],
            // The expected --help texts, read by the tests from the source tree.
            exclude: ["Help"],
            swiftSettings: strict
        ),
    ]
)
