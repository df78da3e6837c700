// A plain harness for profilers (valgrind --tool=callgrind, perf): builds a corpus, then runs
// checks in `runChecks`, which callgrind can isolate with --toggle-collect='*runChecks*'.
//   swift build -c release --product CheckProfile
//   .build/release/CheckProfile 100000 2000000          # memberships, checks: prints ns/check
//   valgrind --tool=callgrind --toggle-collect='*runChecks*' .build/release/CheckProfile 1000 100000
import AuthzCore
import AuthzPolicy
import AuthzWorkload
import Foundation

let args = CommandLine.arguments
let memberships = args.count > 1 ? Int(args[1])! : 1_000
let checks = args.count > 2 ? Int(args[2])! : 100_000
let mode = args.count > 3 ? args[3] : "string"

var url = URL(fileURLWithPath: #filePath)
url.deleteLastPathComponent(); url.deleteLastPathComponent(); url.deleteLastPathComponent()
let policy = try PolicyLoader.load(path: url.appendingPathComponent("policies/daytona.yaml").path)
let corpus = Corpus(memberships: memberships, seed: 42, policy: policy)
let directory = try Directory.build(corpus.located, policy: policy)
let queries = corpus.queries(1 << 14, seed: 43, policy: policy)

var allowed = 0
let bytes: [[UInt8]] = queries.flatMap { [Array($0.subject.utf8), Array($0.action.utf8), Array($0.resource.utf8), Array($0.org.utf8)] }

@inline(never)
func runChecks(_ n: Int) -> Int {
    var allowed = 0
    if mode == "bytes" {
        for i in 0..<n {
            let q = (i & (queries.count - 1)) * 4
            let d = bytes[q].withUnsafeBytes { s in bytes[q + 1].withUnsafeBytes { a in bytes[q + 2].withUnsafeBytes { r in
                bytes[q + 3].withUnsafeBytes { o in try? directory.check(subject: s, action: a, resource: r, org: o, now: Corpus.now) } } } }
            if d?.allowed == true { allowed += 1 }
        }
    } else {
        for i in 0..<n {
            if let d = try? directory.check(queries[i & (queries.count - 1)], now: Corpus.now), d.allowed { allowed += 1 }
        }
    }
    return allowed
}

_ = runChecks(min(checks, 20_000)) // warm
let start = ContinuousClock.now
allowed = runChecks(checks)
let elapsed = ContinuousClock.now - start
let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
print("memberships \(memberships) checks \(checks) mode \(mode): \(String(format: "%.1f", ns / Double(checks))) ns/check, allowed \(allowed)")
