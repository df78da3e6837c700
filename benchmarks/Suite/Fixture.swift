import AuthzCore
import AuthzPolicy
import AuthzWorkload
import Foundation

/// The daytona policy of this repository, found from this file's path (the benchmark
/// process's working directory is not promised).
public let policyPath: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() } // Fixture.swift, Suite, benchmarks
    return url.appendingPathComponent("policies/daytona.yaml").path
}()

public func loadPolicy() -> CompiledPolicy {
    do { return try PolicyLoader.load(path: policyPath) } catch { fatalError("\(policyPath): \(error)") }
}

/// Corpus sizes (memberships) every data-dependent suite runs at.
public let sizes: [(label: String, memberships: Int)] = [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)]

/// How many distinct queries a check benchmark cycles through: enough that lookups spread
/// over the whole directory (and its cache misses), not one request repeated.
public let queryCount = 1 << 14
public let seed: UInt64 = 42

/// A built directory and what to ask it: made in `setup:`, outside every measurement.
public final class Fixture: @unchecked Sendable {
    public let policy: CompiledPolicy
    public let corpus: Corpus
    public let directory: Directory
    public let queries: [CheckRequest]
    /// The queries as raw bytes, back to back, as a server would see them in a request.
    let bytes: UnsafeMutableRawBufferPointer
    /// Per query: (offset, length) of subject, action, resource, org in `bytes`.
    let spans: [(Int, Int)]
    /// Where the next operation starts in `queries` (or the subjects of `Permissions`).
    public var cursor = 0

    public init(memberships: Int, withDirectory: Bool = true) {
        policy = loadPolicy()
        corpus = Corpus(memberships: memberships, seed: seed, policy: policy)
        if withDirectory {
            do { directory = try Directory.build(corpus.located, policy: policy) } catch { fatalError("\(error)") }
        } else {
            directory = Directory(policy: policy)
        }
        queries = corpus.queries(queryCount, seed: seed &+ 1, policy: policy)
        var flat: [UInt8] = []
        var spans: [(Int, Int)] = []
        for q in queries {
            for s in [q.subject, q.action, q.resource, q.org] {
                spans.append((flat.count, s.utf8.count))
                flat += s.utf8
            }
        }
        bytes = .allocate(byteCount: flat.count, alignment: 16)
        bytes.copyBytes(from: flat)
        self.spans = spans
    }

    deinit { bytes.deallocate() }

    @inline(__always)
    func span(_ i: Int) -> UnsafeRawBufferPointer {
        let (o, n) = spans[i]
        return UnsafeRawBufferPointer(rebasing: bytes[o..<(o + n)])
    }
}

/// What a `permissions` listing asks: members (org, subject) to list, and a resource for
/// each action of the policy.
public struct PermissionsFixture: @unchecked Sendable {
    public let fixture: Fixture
    let subjects: [(org: String, subject: String)]
    let resources: [String]

    public init(memberships: Int) {
        let f = Fixture(memberships: memberships)
        fixture = f
        subjects = f.corpus.subjects(1024, seed: seed &+ 2).map { ($0.org, "user:" + $0.user) }
        resources = f.policy.actions.map { "\(f.policy.resourceTypes[$0.resourceType]):self" }
    }
}
