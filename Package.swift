// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "OrgAuthz",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "authz", targets: ["authz"]),
        .library(name: "AuthzCore", targets: ["AuthzCore"]),
        .library(name: "AuthzData", targets: ["AuthzData"]),
        .library(name: "AuthzPolicy", targets: ["AuthzPolicy"]),
        .library(name: "AuthzClient", targets: ["AuthzClient"]),
        .library(name: "AuthzHTTP", targets: ["AuthzHTTP"]),
        .library(name: "AuthzStore", targets: ["AuthzStore"]),
        .library(name: "AuthzWorkload", targets: ["AuthzWorkload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // AuthzClient names NIO's ByteBuffer and HTTP types itself (AsyncHTTPClient's own dependency).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // The decision: vocabulary, compiled policy, directory snapshot, check. Standard library only.
        .target(name: "AuthzCore"),
        // Membership records: JSON Lines decoding into AuthzCore's record values.
        .target(name: "AuthzData", dependencies: ["AuthzCore"]),
        // The durable copy of the membership data (SQLite through GRDB) and its revision.
        .target(
            name: "AuthzStore",
            dependencies: ["AuthzCore", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "GRDBSQLite", package: "GRDB.swift")]
        ),
        // A client of `authz serve` for Swift services and for `authz sync` (AsyncHTTPClient).
        .target(
            name: "AuthzClient",
            dependencies: [
                "CAuthzGzip",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Seeded, realistic membership data and query mixes, for benchmarks and `authz generate`.
        .target(name: "AuthzWorkload", dependencies: ["AuthzCore"]),
        // Policy file (YAML) -> validated definition -> CompiledPolicy; policy test suites.
        .target(
            name: "AuthzPolicy",
            dependencies: ["AuthzCore", "AuthzData", .product(name: "Yams", package: "Yams")]
        ),
        // libmicrohttpd, as the system provides it (Debian: libmicrohttpd-dev).
        .systemLibrary(
            name: "CMicroHTTPD",
            pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev"]), .brew(["libmicrohttpd"])]
        ),
        // Typed, non-variadic C wrappers for what Swift cannot call directly (`MHD_start_daemon`).
        .target(name: "CAuthzMHD", dependencies: ["CMicroHTTPD"]),
        // gzip bodies through the system's zlib (Debian: zlib1g-dev): the server decompresses
        // `Content-Encoding: gzip` syncs, the client compresses them.
        .target(name: "CAuthzGzip", linkerSettings: [.linkedLibrary("z")]),
        // `authz serve`: the decision endpoint over libmicrohttpd. Nothing of MHD in its API.
        .target(
            name: "AuthzHTTP",
            dependencies: [
                "AuthzCore", "AuthzData", "AuthzStore", "CMicroHTTPD", "CAuthzMHD", "CAuthzGzip",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "authz",
            dependencies: [
                "AuthzCore", "AuthzData", "AuthzPolicy", "AuthzStore", "AuthzClient", "AuthzHTTP", "AuthzWorkload",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AuthzCoreTests",
            dependencies: ["AuthzCore", "AuthzData", "AuthzPolicy", "AuthzWorkload"]
        ),
        .testTarget(
            name: "AuthzStoreTests",
            dependencies: ["AuthzCore", "AuthzData", "AuthzStore", .product(name: "GRDBSQLite", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "AuthzPolicyTests",
            dependencies: ["AuthzCore", "AuthzPolicy"]
        ),
        .testTarget(
            name: "AuthzHTTPTests",
            dependencies: ["AuthzClient", "AuthzCore", "AuthzHTTP", "AuthzStore", .product(name: "Yams", package: "Yams"),
                           .product(name: "Prometheus", package: "swift-prometheus")]
        ),
    ]
)

for target in package.targets where target.type != .system {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    settings.append(.enableUpcomingFeature("MemberImportVisibility"))
    target.swiftSettings = settings
}
