import AuthzCore
import AuthzPolicy
import AuthzWorkload

/// The operations the in-process suites measure, shared by the package-benchmark suites
/// (wall clock, mallocs) and `InstructionCounts` (instructions, under callgrind), so both
/// measure the same code. Each returns what it computed, for the caller to consume.
public enum Operations {
    public static let now = Corpus.now

    /// `n` decisions, each from four Strings (the `Directory.check(_: CheckRequest)` API),
    /// from the fixture's cursor on: how many allowed.
    @inline(never)
    public static func check(_ f: Fixture, _ n: Int) -> Int {
        let queries = f.queries, directory = f.directory
        var c = f.cursor, allowed = 0
        for _ in 0..<n {
            if let d = try? directory.check(queries[c & (queryCount - 1)], now: now), d.allowed { allowed += 1 }
            c &+= 1
        }
        f.cursor = c
        return allowed
    }

    /// `n` decisions, each from raw UTF-8 bytes (the server's path: slices of a query string).
    @inline(never)
    public static func checkBytes(_ f: Fixture, _ n: Int) -> Int {
        let directory = f.directory
        var c = f.cursor, allowed = 0
        for _ in 0..<n {
            let q = (c & (queryCount - 1)) * 4
            if let d = try? directory.check(subject: f.span(q), action: f.span(q + 1), resource: f.span(q + 2),
                                            org: f.span(q + 3), now: now), d.allowed {
                allowed += 1
            }
            c &+= 1
        }
        f.cursor = c
        return allowed
    }

    /// A batch of 100 decisions collected into an array (POST /v1/check/batch).
    @inline(never)
    public static func batch100(_ f: Fixture) -> [Decision?] {
        let queries = f.queries, directory = f.directory
        var c = f.cursor
        var decisions: [Decision?] = []
        decisions.reserveCapacity(100)
        for _ in 0..<100 {
            decisions.append(try? directory.check(queries[c & (queryCount - 1)], now: now))
            c &+= 1
        }
        f.cursor = c
        return decisions
    }

    /// A `permissions` listing: every action of the policy for the next member of its org.
    @inline(never)
    public static func permissions(_ p: PermissionsFixture) -> [Int] {
        let f = p.fixture, directory = f.directory
        let (org, subject) = p.subjects[f.cursor & (p.subjects.count - 1)]
        f.cursor &+= 1
        var allowed: [Int] = []
        for (i, a) in f.policy.actions.enumerated() {
            if let d = try? directory.check(subject: subject, action: a.name, resource: p.resources[i], org: org, now: now),
               d.allowed {
                allowed.append(i)
            }
        }
        return allowed
    }

    /// Building the directory from the corpus's records (a start-up or `sync --replace`).
    @inline(never)
    public static func directoryBuild(_ f: Fixture) -> Directory? {
        try? Directory.build(f.corpus.located, policy: f.policy)
    }

    /// A sync batch applied to the fixture's directory: a new snapshot, sharing the rest.
    @inline(never)
    public static func apply(_ f: Fixture, _ batch: [LocatedRecord]) -> Directory? {
        try? f.directory.applying(batch).directory
    }

    /// The 100-record batch `apply` is measured with.
    public static func apply100Batch(_ f: Fixture) -> [LocatedRecord] {
        f.corpus.updateBatch(count: 100, seed: BenchmarkSuite.seed &+ 3, policy: f.policy)
    }

    /// Compiling the policy (a reload): YAML text to `CompiledPolicy`.
    @inline(never)
    public static func compileYAML(_ yaml: String) -> CompiledPolicy? {
        try? PolicyLoader.compile(yaml: yaml, file: "daytona.yaml")
    }

    /// Compiling a policy definition alone.
    @inline(never)
    public static func compileDefinition(_ definition: PolicyDefinition) -> CompiledPolicy? {
        try? CompiledPolicy(definition)
    }
}
