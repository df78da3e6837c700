import AuthzCore
import Benchmark
import BenchmarkSuite
import Foundation

// Instructions need hardware counters (perf events), which many VMs lack; the metric is
// then omitted. Set AUTHZ_BENCH_INSTRUCTIONS=1 where `perf stat -e instructions true` works.
// `make bench` counts instructions with callgrind instead (InstructionCounts, same operations).
let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal]
    + (ProcessInfo.processInfo.environment["AUTHZ_BENCH_INSTRUCTIONS"] != nil ? [.instructions] : [])

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, timeUnits: .automatic, maxDuration: .seconds(2))

    for (label, n) in sizes {
        let big = n >= 1_000_000
        let long = Benchmark.Configuration(metrics: metrics, warmupIterations: big ? 0 : 1,
                                           maxDuration: .seconds(big ? 10 : 3), maxIterations: big ? 3 : 50)

        // One decision from four Strings (the `Directory.check(_: CheckRequest)` API).
        Benchmark("check \(label)", configuration: .init(metrics: metrics, scalingFactor: .kilo,
                                                        maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            blackHole(Operations.check(f, benchmark.scaledIterations.count))
        } setup: { Fixture(memberships: n) }

        // One decision from raw UTF-8 bytes (the server's path: slices of a query string).
        Benchmark("check bytes \(label)", configuration: .init(metrics: metrics, scalingFactor: .kilo,
                                                              maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            blackHole(Operations.checkBytes(f, benchmark.scaledIterations.count))
        } setup: { Fixture(memberships: n) }

        // A batch of 100 decisions (POST /v1/check/batch): per iteration, 100 checks.
        Benchmark("batch100 \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            blackHole(Operations.batch100(f))
        } setup: { Fixture(memberships: n) }

        // A `permissions` listing: every action of the policy for one member of one org.
        Benchmark("permissions \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 2 : 3))) { benchmark, p in
            blackHole(Operations.permissions(p))
        } setup: { PermissionsFixture(memberships: n) }

        // Building the directory from records (a start-up or `sync --replace`).
        Benchmark("directory build \(label)", configuration: long) { benchmark, f in
            benchmark.startMeasurement()
            blackHole(Operations.directoryBuild(f))
        } setup: { Fixture(memberships: n, withDirectory: false) }

        // A sync batch of 100 upserts applied to the snapshot: a new snapshot, sharing the rest.
        Benchmark("apply100 \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 3 : 2))) { (benchmark: Benchmark, s: (Fixture, [LocatedRecord])) in
            blackHole(Operations.apply(s.0, s.1))
        } setup: {
            let f = Fixture(memberships: n)
            return (f, Operations.apply100Batch(f))
        }
    }

    // Compiling the policy (a reload): YAML text to `CompiledPolicy`, and definition alone.
    Benchmark("policy compile yaml") { benchmark, yaml in
        blackHole(Operations.compileYAML(yaml))
    } setup: {
        try String(contentsOfFile: policyPath, encoding: .utf8)
    }

    Benchmark("policy compile definition") { benchmark, definition in
        blackHole(Operations.compileDefinition(definition))
    } setup: {
        loadPolicy().definition
    }
}
