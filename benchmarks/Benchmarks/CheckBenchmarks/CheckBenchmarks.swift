import AuthzCore
import AuthzPolicy
import AuthzWorkload
import Benchmark
import Foundation

// Instructions need hardware counters (perf events), which many VMs lack; the metric is
// then omitted. Set AUTHZ_BENCH_INSTRUCTIONS=1 where `perf stat -e instructions true` works.
let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal]
    + (ProcessInfo.processInfo.environment["AUTHZ_BENCH_INSTRUCTIONS"] != nil ? [.instructions] : [])

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, timeUnits: .automatic, maxDuration: .seconds(2))
    let now = Corpus.now

    for (label, n) in sizes {
        let big = n >= 1_000_000
        let long = Benchmark.Configuration(metrics: metrics, warmupIterations: big ? 0 : 1,
                                           maxDuration: .seconds(big ? 10 : 3), maxIterations: big ? 3 : 50)

        // One decision from four Strings (the `Directory.check(_: CheckRequest)` API).
        Benchmark("check \(label)", configuration: .init(metrics: metrics, scalingFactor: .kilo,
                                                        maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            let queries = f.queries, directory = f.directory
            var c = f.cursor
            for _ in benchmark.scaledIterations {
                blackHole(try? directory.check(queries[c & (queryCount - 1)], now: now))
                c &+= 1
            }
            f.cursor = c
        } setup: { Fixture(memberships: n) }

        // One decision from raw UTF-8 bytes (the server's path: slices of a query string).
        Benchmark("check bytes \(label)", configuration: .init(metrics: metrics, scalingFactor: .kilo,
                                                              maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            let directory = f.directory
            var c = f.cursor
            for _ in benchmark.scaledIterations {
                let q = (c & (queryCount - 1)) * 4
                blackHole(try? directory.check(subject: f.span(q), action: f.span(q + 1), resource: f.span(q + 2),
                                               org: f.span(q + 3), now: now))
                c &+= 1
            }
            f.cursor = c
        } setup: { Fixture(memberships: n) }

        // A batch of 100 decisions (POST /v1/check/batch): per iteration, 100 checks.
        Benchmark("batch100 \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 2 : 3))) { benchmark, f in
            let queries = f.queries, directory = f.directory
            var c = f.cursor
            var decisions: [Decision?] = []
            decisions.reserveCapacity(100)
            for _ in 0..<100 {
                decisions.append(try? directory.check(queries[c & (queryCount - 1)], now: now))
                c &+= 1
            }
            blackHole(decisions)
            f.cursor = c
        } setup: { Fixture(memberships: n) }

        // A `permissions` listing: every action of the policy for one member of one org.
        Benchmark("permissions \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 2 : 3))) { (benchmark: Benchmark, s: (Fixture, [(String, String)], [String])) in
            let (f, subjects, resources) = s
            let directory = f.directory
            let (org, user) = subjects[f.cursor & (subjects.count - 1)]
            f.cursor &+= 1
            var allowed: [Int] = []
            for (i, a) in f.policy.actions.enumerated() {
                if let d = try? directory.check(subject: user, action: a.name, resource: resources[i], org: org, now: now),
                   d.allowed {
                    allowed.append(i)
                }
            }
            blackHole(allowed)
        } setup: {
            let f = Fixture(memberships: n)
            let subjects = f.corpus.subjects(1024, seed: seed &+ 2).map { ($0.org, "user:" + $0.user) }
            let resources = f.policy.actions.map { "\(f.policy.resourceTypes[$0.resourceType]):self" }
            return (f, subjects, resources)
        }

        // Building the directory from records (a start-up or `sync --replace`).
        Benchmark("directory build \(label)", configuration: long) { benchmark, f in
            let records = f.corpus.located
            benchmark.startMeasurement()
            blackHole(try? Directory.build(records, policy: f.policy))
        } setup: { Fixture(memberships: n, withDirectory: false) }

        // A sync batch of 100 upserts applied to the snapshot: a new snapshot, sharing the rest.
        Benchmark("apply100 \(label)", configuration: .init(metrics: metrics, maxDuration: .seconds(big ? 3 : 2))) { (benchmark: Benchmark, s: (Fixture, [LocatedRecord])) in
            let (f, batch) = s
            blackHole(try? f.directory.applying(batch))
        } setup: {
            let f = Fixture(memberships: n)
            return (f, f.corpus.updateBatch(count: 100, seed: seed &+ 3, policy: f.policy))
        }
    }

    // Compiling the policy (a reload): YAML text to `CompiledPolicy`, and definition alone.
    Benchmark("policy compile yaml") { benchmark, yaml in
        blackHole(try? PolicyLoader.compile(yaml: yaml, file: "daytona.yaml"))
    } setup: {
        try String(contentsOfFile: policyPath, encoding: .utf8)
    }

    Benchmark("policy compile definition") { benchmark, definition in
        blackHole(try? CompiledPolicy(definition))
    } setup: {
        loadPolicy().definition
    }
}
