import AuthzCore
internal import CAuthzMHD
import Prometheus
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The server's metrics, on swift-prometheus.
///
/// What every request records (its route and status, its latency, a check's decision) is
/// counted per thread (`ThreadCounts`) and summed when `/metrics` is read: shared counters and
/// the library's histogram, which takes a lock, made the pool threads write to the same cache
/// lines on every request (about 0.5 µs of CPU per request on 2 cores, FINDINGS.md). At each
/// scrape the counters' sums go into the library's counters (by the difference since the last
/// scrape), so the registry still writes them; the latency histogram has no such entry point
/// in swift-prometheus 2.4.1 (no bulk add, no public collector protocol), so its family is
/// written after the registry's output, in the same format. The rest (revision, sizes,
/// reloads, synced records) changes rarely and stays on the library's objects.
final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    /// Status codes the server answers with; anything else counts as `other`.
    static let statuses = [200, 400, 401, 404, 405, 409, 413, 415, 422, 500, 503]

    private let requests: [[Counter]]          // [route][status index]
    private let decisions: [Counter]           // [reason]
    /// The latency buckets' upper bounds, in nanoseconds and as exposed (`le`).
    private let bounds: [Int64]
    private let boundLabels: [String]
    /// The latency histogram's family, written by `writeLatency` (not registered: see the type).
    static let latencyName = "authz_http_request_duration_seconds"
    static let latencyHelp = "Time from the request's headers to its queued response, by route"
    private let counts: ThreadCounts
    private let layout: Layout
    /// The counter sums already added to the library's counters.
    private let pushed: Mutex<[UInt64]>
    let revision: Gauge
    private let sizes: [Gauge]                 // orgs, users, members, roles, api_keys, invitations
    let reloads: Counter
    let reloadFailures: Counter
    private let syncedRecords: Counter
    /// Bytes of check and batch bodies held now (`--max-body-memory`), set at each scrape.
    private let bodyMemoryHeld: Gauge
    /// Check and batch requests answered 503 `overloaded` (rare: counted on the library's
    /// counter directly).
    private let bodyMemoryRefused: Counter

    init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        let requestName = MetricNameDescriptor(
            namespace: "authz", subsystem: "http", metricName: "requests", unitName: "total",
            helpText: "HTTP requests answered, by route and status")
        let statusLabels = ServerMetrics.statuses.map(String.init) + ["other"]
        requests = Route.allCases.map { route in
            statusLabels.map { registry.makeCounter(descriptor: requestName, labels: [("route", route.label), ("status", $0)]) }
        }
        let buckets: [Duration] = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(2),
        ]
        bounds = buckets.map { Self.nanoseconds($0) }
        boundLabels = buckets.map(\.bucketRepresentation)
        layout = Layout(routes: Route.allCases.count, statuses: statusLabels.count, reasons: Reason.allCases.count,
                        buckets: buckets.count + 1)
        counts = ThreadCounts(width: layout.width)
        pushed = Mutex([UInt64](repeating: 0, count: layout.countersEnd))
        let decisionName = MetricNameDescriptor(
            namespace: "authz", metricName: "decisions", unitName: "total",
            helpText: "Decisions made, by outcome and reason")
        decisions = Reason.allCases.map {
            registry.makeCounter(descriptor: decisionName, labels: [("outcome", $0.allows ? "allow" : "deny"), ("reason", $0.code)])
        }
        revision = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "authz", metricName: "revision", unitName: "",
            helpText: "Revision of the snapshot being served"))
        let sizeName = MetricNameDescriptor(
            namespace: "authz", subsystem: "directory", metricName: "entries", unitName: "",
            helpText: "Entries in the served directory, by kind")
        sizes = ["orgs", "users", "members", "roles", "api_keys", "invitations"].map {
            registry.makeGauge(descriptor: sizeName, labels: [("kind", $0)])
        }
        let reloadName = MetricNameDescriptor(
            namespace: "authz", subsystem: "policy", metricName: "reloads", unitName: "total",
            helpText: "Policy reloads, by result")
        reloads = registry.makeCounter(descriptor: reloadName, labels: [("result", "success")])
        reloadFailures = registry.makeCounter(descriptor: reloadName, labels: [("result", "failure")])
        syncedRecords = registry.makeCounter(descriptor: MetricNameDescriptor(
            namespace: "authz", subsystem: "sync", metricName: "records", unitName: "total",
            helpText: "Membership records accepted through /v1/sync"))
        bodyMemoryHeld = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "authz", subsystem: "http", metricName: "body_memory", unitName: "bytes",
            helpText: "Bytes of check and batch request bodies held now, within --max-body-memory"))
        bodyMemoryRefused = registry.makeCounter(descriptor: MetricNameDescriptor(
            namespace: "authz", subsystem: "http", metricName: "body_memory_refused", unitName: "total",
            helpText: "Check and batch requests refused with 503 overloaded: their bodies would have passed --max-body-memory"))
    }

    func bodyRefused() { bodyMemoryRefused.increment() }

    func synced(records: Int) { syncedRecords.increment(by: Int64(records)) }

    func request(_ route: Route, status: Int, duration: Duration) {
        request(route, status: status, nanoseconds: Self.nanoseconds(duration))
    }

    /// One answered request, `nanoseconds` after its headers were in.
    @inline(__always)
    func request(_ route: Route, status: Int, nanoseconds ns: Int64) {
        let c = counts.local()
        let i = ServerMetrics.statuses.firstIndex(of: status) ?? ServerMetrics.statuses.count
        authz_counter_add(c + layout.request(route.rawValue, i), 1)
        var b = 0
        while b < bounds.count && ns > bounds[b] { b += 1 }
        authz_counter_add(c + layout.bucket(route.rawValue, b), 1)
        authz_counter_add(c + layout.latencySum(route.rawValue), UInt64(max(ns, 0)))
    }

    @inline(__always)
    func decision(_ reason: Reason) {
        authz_counter_add(counts.local() + layout.decision(Int(reason.rawValue)), 1)
    }

    func published(_ snapshot: Snapshot) {
        revision.set(Double(snapshot.revision))
        let c = snapshot.directory.counts
        for (gauge, n) in zip(sizes, [c.orgs, c.users, c.members, c.roles, c.apiKeys, c.invitations]) {
            gauge.set(Double(n))
        }
    }

    /// The exposition: the registry's metrics, after adding what the threads counted since the
    /// last scrape, then the latency histogram. Scrapes are serialized.
    func exposition(bodyMemoryHeld held: Int) -> [UInt8] {
        bodyMemoryHeld.set(Double(held))
        return pushed.withLock { pushed in
            let totals = counts.totals()
            for (r, row) in requests.enumerated() {
                for (i, counter) in row.enumerated() {
                    push(counter, totals, layout.request(r, i), &pushed)
                }
            }
            for (reason, counter) in decisions.enumerated() {
                push(counter, totals, layout.decision(reason), &pushed)
            }
            var out = registry.emitToBuffer()
            writeLatency(totals, into: &out)
            return out
        }
    }

    private func push(_ counter: Counter, _ totals: [UInt64], _ at: Int, _ pushed: inout [UInt64]) {
        // Sums only grow (arrays are never freed, each written by one thread), so this is the
        // count since the last scrape.
        guard totals[at] > pushed[at] else { return }
        counter.increment(by: Int64(clamping: totals[at] - pushed[at]))
        pushed[at] = totals[at]
    }

    /// `authz_http_request_duration_seconds`, as swift-prometheus writes a histogram: cumulative
    /// buckets by route, then `+Inf`, `_sum` (seconds) and `_count`.
    private func writeLatency(_ totals: [UInt64], into out: inout [UInt8]) {
        let name = Self.latencyName
        out.append(contentsOf: "# HELP \(name) \(Self.latencyHelp)\n# TYPE \(name) histogram\n".utf8)
        for route in Route.allCases {
            let labels = "route=\"\(route.label)\""
            var cumulative: UInt64 = 0
            for b in 0..<layout.buckets {
                cumulative += totals[layout.bucket(route.rawValue, b)]
                let le = b < boundLabels.count ? boundLabels[b] : "+Inf"
                out.append(contentsOf: "\(name)_bucket{\(labels),le=\"\(le)\"} \(cumulative)\n".utf8)
            }
            let sum = Duration.nanoseconds(Int64(clamping: totals[layout.latencySum(route.rawValue)]))
            out.append(contentsOf: "\(name)_sum{\(labels)} \(sum.bucketRepresentation)\n".utf8)
            out.append(contentsOf: "\(name)_count{\(labels)} \(cumulative)\n".utf8)
        }
    }

    @inline(__always)
    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Where each count sits in a thread's array: the request counters, the decision counters
    /// (these two pushed into the registry's counters), then per route the latency buckets (not
    /// cumulative; the last is `+Inf`) and the latency sum in nanoseconds.
    struct Layout: Sendable {
        let routes, statuses, reasons, buckets: Int
        var countersEnd: Int { routes * statuses + reasons }
        var width: Int { countersEnd + routes * buckets + routes }
        @inline(__always) func request(_ route: Int, _ status: Int) -> Int { route * statuses + status }
        @inline(__always) func decision(_ reason: Int) -> Int { routes * statuses + reason }
        @inline(__always) func bucket(_ route: Int, _ b: Int) -> Int { countersEnd + route * buckets + b }
        @inline(__always) func latencySum(_ route: Int) -> Int { countersEnd + routes * buckets + route }
    }
}

/// One array of counters per thread, each written by its own thread only (relaxed stores, see
/// `authz_counter_add`) and summed by a reader. A thread's array stays after the thread exits,
/// so the sums never go down; there are as many as threads that ever recorded (the pool's).
final class ThreadCounts: Sendable {
    private let key: pthread_key_t
    private let width: Int
    /// Bytes per array, a whole number of cache lines, so two threads never share one.
    private let stride: Int
    /// Every thread's array, by address (pointers are not Sendable).
    private let arrays = Mutex<[UInt]>([])

    init(width: Int) {
        self.width = width
        stride = (width * 8 + 63) & ~63
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, nil)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        self.key = key
    }

    deinit {
        pthread_key_delete(key)
        for a in arrays.withLock({ $0 }) { UnsafeMutableRawPointer(bitPattern: a)?.deallocate() }
    }

    /// This thread's array.
    @inline(__always)
    func local() -> UnsafeMutablePointer<UInt64> {
        if let raw = pthread_getspecific(key) { return raw.assumingMemoryBound(to: UInt64.self) }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: stride, alignment: 64)
        let array = raw.initializeMemory(as: UInt64.self, repeating: 0, count: stride / 8)
        let address = UInt(bitPattern: raw)
        arrays.withLock { $0.append(address) }
        pthread_setspecific(key, raw)
        return array
    }

    /// Every thread's counts, added up.
    func totals() -> [UInt64] {
        var sum = [UInt64](repeating: 0, count: width)
        for address in arrays.withLock({ $0 }) {
            guard let a = UnsafePointer<UInt64>(bitPattern: address) else { continue }
            for i in 0..<width { sum[i] &+= authz_counter_load(a + i) }
        }
        return sum
    }
}

/// Monotonic nanoseconds for request latency, read straight from `clock_gettime` (the vDSO):
/// `ContinuousClock`'s `Instant` arithmetic called a type-metadata accessor on every request
/// (perf: ~2% of the pool threads' user time).
enum Monotonic {
    @inline(__always)
    static func now() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Int64(t.tv_sec) &* 1_000_000_000 &+ Int64(t.tv_nsec)
    }
}
