import AuthzCore
import Prometheus

/// The server's metrics, on swift-prometheus. Every labelled series is created up front and
/// kept in arrays, so recording on the request path is an index and an atomic add (the
/// histogram takes its own short lock), never a registry lookup. The arrays hold the series
/// unretained (`Series`): the registry keeps every metric it made alive (it is private to this
/// object and nothing unregisters), and a retain and release around every call would be two
/// more atomic writes to a line the pool threads share.
final class ServerMetrics: Sendable {
    /// A series the registry keeps alive, called without a retain.
    struct Series<Metric: AnyObject & Sendable>: @unchecked Sendable {
        private let metric: Unmanaged<Metric>
        init(_ metric: Metric) { self.metric = Unmanaged.passUnretained(metric) }
        @inline(__always)
        func use<R>(_ body: (Metric) -> R) -> R { metric._withUnsafeGuaranteedRef(body) }
    }

    let registry: PrometheusCollectorRegistry

    /// Status codes the server answers with; anything else counts as `other`.
    static let statuses = [200, 400, 401, 404, 405, 409, 413, 422, 500, 503]

    private let requests: [[Series<Counter>]]          // [route][status index]
    private let latency: [Series<DurationHistogram>]   // [route]
    private let decisions: [Series<Counter>]           // [reason]
    let revision: Gauge
    private let sizes: [Gauge]                 // orgs, users, members, roles, api_keys, invitations
    let reloads: Counter
    let reloadFailures: Counter
    private let syncedRecords: Counter

    init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        let requestName = MetricNameDescriptor(
            namespace: "authz", subsystem: "http", metricName: "requests", unitName: "total",
            helpText: "HTTP requests answered, by route and status")
        let statusLabels = ServerMetrics.statuses.map(String.init) + ["other"]
        requests = Route.allCases.map { route in
            statusLabels.map { Series(registry.makeCounter(descriptor: requestName, labels: [("route", route.label), ("status", $0)])) }
        }
        let latencyName = MetricNameDescriptor(
            namespace: "authz", subsystem: "http", metricName: "request_duration", unitName: "seconds",
            helpText: "Time from the request's headers to its queued response, by route")
        let buckets: [Duration] = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(2),
        ]
        latency = Route.allCases.map {
            Series(registry.makeDurationHistogram(descriptor: latencyName, labels: [("route", $0.label)], buckets: buckets))
        }
        let decisionName = MetricNameDescriptor(
            namespace: "authz", metricName: "decisions", unitName: "total",
            helpText: "Decisions made, by outcome and reason")
        decisions = Reason.allCases.map {
            Series(registry.makeCounter(descriptor: decisionName, labels: [("outcome", $0.allows ? "allow" : "deny"), ("reason", $0.code)]))
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
    }

    func synced(records: Int) { syncedRecords.increment(by: Int64(records)) }

    @inline(__always)
    func request(_ route: Route, status: Int, duration: Duration) {
        let i = ServerMetrics.statuses.firstIndex(of: status) ?? ServerMetrics.statuses.count
        requests[route.rawValue][i].use { $0.increment() }
        latency[route.rawValue].use { $0.record(duration) }
    }

    @inline(__always)
    func decision(_ reason: Reason) { decisions[Int(reason.rawValue)].use { $0.increment() } }

    func published(_ snapshot: Snapshot) {
        revision.set(Double(snapshot.revision))
        let c = snapshot.directory.counts
        for (gauge, n) in zip(sizes, [c.orgs, c.users, c.members, c.roles, c.apiKeys, c.invitations]) {
            gauge.set(Double(n))
        }
    }

    func exposition() -> [UInt8] { registry.emitToBuffer() }
}
