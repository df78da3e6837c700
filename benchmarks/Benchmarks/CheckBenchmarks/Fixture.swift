import AuthzCore
import AuthzPolicy
import AuthzWorkload
import Foundation

/// The daytona policy of this repository, found from this file's path (the benchmark
/// process's working directory is not promised).
let policyPath: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() } // Fixture.swift, CheckBenchmarks, Benchmarks, benchmarks
    return url.appendingPathComponent("policies/daytona.yaml").path
}()

func loadPolicy() -> CompiledPolicy {
    do { return try PolicyLoader.load(path: policyPath) } catch { fatalError("\(policyPath): \(error)") }
}

/// Corpus sizes (memberships) every data-dependent suite runs at.
let sizes: [(label: String, memberships: Int)] = [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)]

/// How many distinct queries a check benchmark cycles through: enough that lookups spread
/// over the whole directory (and its cache misses), not one request repeated.
let queryCount = 1 << 14
let seed: UInt64 = 42

/// A built directory and what to ask it: made in `setup:`, outside every measurement.
final class Fixture: @unchecked Sendable {
    let policy: CompiledPolicy
    let corpus: Corpus
    let directory: Directory
    let queries: [CheckRequest]
    /// The queries as raw bytes, back to back, as a server would see them in a request.
    let bytes: UnsafeMutableRawBufferPointer
    /// Per query: (offset, length) of subject, action, resource, org in `bytes`.
    let spans: [(Int, Int)]
    var cursor = 0

    init(memberships: Int, withDirectory: Bool = true) {
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
