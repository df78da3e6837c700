// swift-tools-version:6.1
// In-process benchmarks of OrgAuthz (package-benchmark). A nested package, so that the main
// build and CI stay light: `cd benchmarks && swift package --disable-sandbox benchmark`.
import PackageDescription

let package = Package(
    name: "OrgAuthzBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "OrgAuthz", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: []
)

// One executable per suite, each in Benchmarks/<Name>/ (the plugin's rule).
for name in ["CheckBenchmarks"] {
    package.targets.append(.executableTarget(
        name: name,
        dependencies: [
            .product(name: "Benchmark", package: "package-benchmark"),
            .product(name: "AuthzCore", package: "OrgAuthz"),
            "BenchmarkSuite",
        ],
        path: "Benchmarks/\(name)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
    ))
}

// The fixture and the operations the suites measure, shared with InstructionCounts.
package.targets.append(.target(
    name: "BenchmarkSuite",
    dependencies: [
        .product(name: "AuthzCore", package: "OrgAuthz"),
        .product(name: "AuthzPolicy", package: "OrgAuthz"),
        .product(name: "AuthzWorkload", package: "OrgAuthz"),
    ],
    path: "Suite"
))

// Instructions per operation under callgrind (this VM has no hardware counters): see
// Instructions/main.swift. CCallgrind: callgrind's client requests (no-ops without valgrind).
package.targets.append(.target(name: "CCallgrind", path: "Callgrind"))
package.targets.append(.executableTarget(
    name: "InstructionCounts",
    dependencies: [.product(name: "AuthzCore", package: "OrgAuthz"), "BenchmarkSuite", "CCallgrind"],
    path: "Instructions"
))

// A plain harness for profilers (callgrind, perf): see Profile/main.swift.
package.targets.append(.executableTarget(
    name: "CheckProfile",
    dependencies: [
        .product(name: "AuthzCore", package: "OrgAuthz"),
        .product(name: "AuthzData", package: "OrgAuthz"),
        .product(name: "AuthzStore", package: "OrgAuthz"),
        .product(name: "AuthzPolicy", package: "OrgAuthz"),
        .product(name: "AuthzWorkload", package: "OrgAuthz"),
    ],
    path: "Profile"
))
