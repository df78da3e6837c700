// A plain harness for profilers (valgrind --tool=callgrind, perf): builds a corpus, then runs
// checks in `runChecks`, which callgrind can isolate with --toggle-collect='*runChecks*'.
//   swift build -c release --product CheckProfile
//   .build/release/CheckProfile 100000 2000000          # memberships, checks: prints ns/check
//   valgrind --tool=callgrind --toggle-collect='*runChecks*' .build/release/CheckProfile 1000 100000
//   .build/release/CheckProfile 1000000 1 build [breakdown]   # build time, RSS growth (bytes held by map)
//   .build/release/CheckProfile 1000000 1 stream [breakdown]  # the same, built as the server starts
//   .build/release/CheckProfile 1000000 1 store               # store replace (validation meanwhile), load, start-up
// `decode FILE [RUNS]` times `RecordCodec.decodeLines` of a JSON Lines file instead (median of
// RUNS, default 3); callgrind can isolate it with --toggle-collect='*runDecode*'.
@_spi(Profiling) import AuthzCore
import AuthzData
import AuthzPolicy
import AuthzStore
import AuthzWorkload
import Foundation

let args = CommandLine.arguments
func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

@inline(never)
func runDecode(_ data: Data) -> (records: [LocatedRecord], errors: [DataError]) {
    RecordCodec.decodeLines(data)
}

if args.count > 2, args[1] == "decode" {
    let data = try Data(contentsOf: URL(fileURLWithPath: args[2]))
    let runs = args.count > 3 ? Int(args[3])! : 3
    var times: [Double] = []
    for _ in 0..<runs {
        let start = ContinuousClock.now
        let decoded = runDecode(data)
        times.append(seconds(ContinuousClock.now - start)) // freeing the records is not timed
        print("decode \(data.count) bytes: \(decoded.records.count) records, \(decoded.errors.count) errors, \(String(format: "%.3f", times.last!)) s")
    }
    times.sort()
    print("decode median of \(runs): \(String(format: "%.3f", times[times.count / 2])) s")
    exit(0)
}
let memberships = args.count > 1 ? Int(args[1])! : 1_000
let checks = args.count > 2 ? Int(args[2])! : 100_000
let mode = args.count > 3 ? args[3] : "string"

var url = URL(fileURLWithPath: #filePath)
url.deleteLastPathComponent(); url.deleteLastPathComponent(); url.deleteLastPathComponent()
let policy = try PolicyLoader.load(path: url.appendingPathComponent("policies/daytona.yaml").path)
let corpus = Corpus(memberships: memberships, seed: 42, policy: policy)
func rssMB() -> Int {
    // VmRSS of this process, from /proc (Linux).
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
    return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
}
/// glibc's `malloc_trim` (malloc.h, which Swift's Glibc module does not export), as the server
/// calls it after a load: freed pages go back to the OS, so RSS shows what is still held.
func trimMalloc() {
    typealias Trim = @convention(c) (Int) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
    _ = unsafeBitCast(symbol, to: Trim.self)(0)
}

/// `s` in storage of its own, as a decoder (the server's SQLite read) makes it: the corpus's
/// records share their strings, a store's rows do not.
func fresh(_ s: String) -> String { String(decoding: Array(s.utf8), as: UTF8.self) }
func fresh(_ a: [String]) -> [String] { a.map(fresh) }
func fresh(_ r: Record) -> Record {
    switch r {
    case .org(let o): .org(.init(id: fresh(o.id), personal: o.personal, suspended: o.suspended, suspendedUntil: o.suspendedUntil))
    case .user(let u): .user(.init(id: fresh(u.id), email: u.email.map(fresh), emailVerified: u.emailVerified))
    case .member(let m): .member(.init(org: fresh(m.org), user: fresh(m.user), role: fresh(m.role), assignments: fresh(m.assignments)))
    case .role(let x): .role(.init(org: fresh(x.org), id: fresh(x.id), permissions: fresh(x.permissions)))
    case .apiKey(let k): .apiKey(.init(id: fresh(k.id), org: fresh(k.org), user: fresh(k.user), permissions: fresh(k.permissions), expiresAt: k.expiresAt))
    case .invitation(let i): .invitation(.init(id: fresh(i.id), org: fresh(i.org), email: fresh(i.email), role: fresh(i.role),
                                               assignments: fresh(i.assignments), status: fresh(i.status), expiresAt: i.expiresAt))
    case .delete(let k): .delete(k)
    }
}

let directory: Directory
if mode == "stream" {
    // As the server starts: every record decoded into fresh strings, streamed into a
    // presized `DirectoryBuilder` and dropped, then freed memory handed back to the OS.
    var expected = DirectoryBuilder.Expected()
    for r in corpus.records { expected.count(r) }
    trimMalloc()
    let rssBefore = rssMB()
    let buildStart = ContinuousClock.now
    var builder = DirectoryBuilder(policy: policy, expected: expected)
    for (i, r) in corpus.records.enumerated() { builder.add(fresh(r), line: i + 1) }
    directory = try builder.finish()
    let buildTime = ContinuousClock.now - buildStart
    let rssBuilt = rssMB()
    trimMalloc()
    print("memberships \(memberships): stream build \(String(format: "%.3f", seconds(buildTime))) s for \(corpus.records.count) fresh records, RSS \(rssBefore) MB -> \(rssBuilt) MB, \(rssMB()) MB after malloc_trim")
} else {
    let rssBefore = rssMB()
    let buildStart = ContinuousClock.now
    directory = try Directory.build(corpus.located, policy: policy)
    let buildTime = ContinuousClock.now - buildStart
    print("memberships \(memberships): build \(String(format: "%.3f", seconds(buildTime))) s for \(corpus.located.count) records, RSS \(rssBefore) MB -> \(rssMB()) MB")
}
if mode == "build" || mode == "stream" {
    if args.count > 4 && args[4] == "breakdown" {
        // Estimated bytes held, by map (see `Directory.memoryBreakdown`).
        var total = 0
        for use in directory.memoryBreakdown() {
            print("  \(use)")
            total += use.total
        }
        print("  total \(total / 1_048_576) MB")
    }
    exit(0)
}
if mode == "store" {
    // The store's replace (a full sync's commit) into a new store file under /tmp.
    let path = "/tmp/authz-profile-store-\(getpid()).sqlite"
    defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
    let store = try MembershipStore(path: path)
    let records = corpus.located
    for round in 1...2 {
        // As a sync does it: the directory is built (validation) while the rows are written.
        let t0 = ContinuousClock.now
        let built = try store.replace(with: records, revision: Int64(round), previous: Int64(round - 1)) {
            let t = ContinuousClock.now
            _ = try Directory.build(records, policy: policy)
            return ContinuousClock.now - t
        }
        print("store replace \(records.count) records, round \(round): \(String(format: "%.2f", seconds(ContinuousClock.now - t0))) s (validation meanwhile \(String(format: "%.2f", seconds(built))) s), RSS \(rssMB()) MB")
    }
    let t0 = ContinuousClock.now
    var n = 0
    _ = try store.load { _ in n += 1 }
    print("store load \(n) records: \(String(format: "%.2f", seconds(ContinuousClock.now - t0))) s")
    // A start-up: the store read and the directory built from it, as `authz serve` does.
    for round in 1...2 {
        let t1 = ContinuousClock.now
        let sync = try MembershipSync(store: store, policy: policy, publish: { _, _ in })
        print("start-up \(round): \(String(format: "%.2f", seconds(ContinuousClock.now - t1))) s, \(sync.current.directory.counts.members) members")
    }
    exit(0)
}
if mode == "apply" {
    let batch = corpus.updateBatch(count: 100, seed: 45, policy: policy)
    var times: [Double] = []
    for _ in 0..<21 {
        let t0 = ContinuousClock.now
        let r = try directory.applying(batch)
        times.append(seconds(ContinuousClock.now - t0))
        withExtendedLifetime(r) {}
    }
    times.sort()
    print("apply100: median \(String(format: "%.3f", times[times.count / 2] * 1000)) ms")
    exit(0)
}
// AUTHZ_PROFILE_SUBJECTS=user or api_key keeps the queries of that subject kind only (cycled
// to 16,384), to see what each kind costs.
let queries: [CheckRequest] = {
    let all = corpus.queries(1 << 14, seed: 43, policy: policy)
    guard let kind = ProcessInfo.processInfo.environment["AUTHZ_PROFILE_SUBJECTS"] else { return all }
    let kept = all.filter { $0.subject.hasPrefix(kind + ":") }
    return (0..<all.count).map { kept[$0 % kept.count] }
}()

var allowed = 0
// The queries' bytes back to back, as the benchmark suites' `Fixture` holds them (a server sees
// them in a request buffer): (offset, length) of subject, action, resource, org per query.
let flat: [UInt8] = queries.flatMap { Array($0.subject.utf8) + Array($0.action.utf8) + Array($0.resource.utf8) + Array($0.org.utf8) }
let spans: [(Int, Int)] = {
    var out: [(Int, Int)] = [], at = 0
    for q in queries {
        for n in [q.subject.utf8.count, q.action.utf8.count, q.resource.utf8.count, q.org.utf8.count] { out.append((at, n)); at += n }
    }
    return out
}()
nonisolated(unsafe) let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: flat.count, alignment: 16)
bytes.copyBytes(from: flat)

@inline(never)
func runChecks(_ n: Int) -> Int {
    var allowed = 0
    if mode == "bytes" {
        func span(_ i: Int) -> UnsafeRawBufferPointer {
            let (o, n) = spans[i]
            return UnsafeRawBufferPointer(rebasing: bytes[o..<(o + n)])
        }
        for i in 0..<n {
            let q = (i & (queries.count - 1)) * 4
            let d = try? directory.check(subject: span(q), action: span(q + 1), resource: span(q + 2), org: span(q + 3), now: Corpus.now)
            if d?.allowed == true { allowed += 1 }
        }
    } else if mode == "batch" {
        // 100 decisions collected into an array, as `POST /v1/check/batch` does.
        var i = 0
        while i < n {
            var out: [Decision] = []
            out.reserveCapacity(100)
            for j in i..<min(i + 100, n) {
                if let d = try? directory.check(queries[j & (queries.count - 1)], now: Corpus.now) { out.append(d) }
            }
            allowed += out.reduce(0) { $0 + ($1.allowed ? 1 : 0) }
            i += 100
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
