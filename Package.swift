// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "OrgAuthz",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "authz", targets: ["authz"]),
        .library(name: "AuthzCore", targets: ["AuthzCore"]),
        .library(name: "AuthzPolicy", targets: ["AuthzPolicy"]),
        .library(name: "AuthzWorkload", targets: ["AuthzWorkload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // The decision: vocabulary, compiled policy, directory snapshot, check. Standard library only.
        .target(name: "AuthzCore"),
        // Membership records: JSON Lines decoding into AuthzCore's record values.
        .target(name: "AuthzData", dependencies: ["AuthzCore"]),
        // Seeded, realistic membership data and query mixes, for benchmarks and `authz generate`.
        .target(name: "AuthzWorkload", dependencies: ["AuthzCore"]),
        // Policy file (YAML) -> validated definition -> CompiledPolicy; policy test suites.
        .target(
            name: "AuthzPolicy",
            dependencies: ["AuthzCore", "AuthzData", .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "authz",
            dependencies: [
                "AuthzCore", "AuthzData", "AuthzPolicy", "AuthzWorkload",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AuthzCoreTests",
            dependencies: ["AuthzCore", "AuthzData", "AuthzPolicy"]
        ),
        .testTarget(
            name: "AuthzPolicyTests",
            dependencies: ["AuthzCore", "AuthzPolicy"]
        ),
    ]
)

for target in package.targets {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    settings.append(.enableUpcomingFeature("MemberImportVisibility"))
    target.swiftSettings = settings
}
