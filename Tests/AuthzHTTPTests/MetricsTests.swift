@testable import AuthzHTTP
import AuthzCore
import Foundation
import Prometheus
import Testing

/// The request metrics are counted per thread and summed at scrape time; what `/metrics` shows
/// must be what swift-prometheus's own counters and histogram would show for the same requests.
@Suite struct MetricsTests {
    /// The lines of one metric family in an exposition (HELP, TYPE and its series), sorted.
    static func family(_ name: String, in text: String) -> [String] {
        text.split(separator: "\n").map(String.init)
            .filter {
                $0.hasPrefix(name + "_bucket{") || $0.hasPrefix(name + "_sum{") || $0.hasPrefix(name + "_count{")
                    || $0.hasPrefix("# HELP \(name) ") || $0.hasPrefix("# TYPE \(name) ")
            }
            .sorted()
    }

    @Test func countsFromManyThreadsAddUpAndTheHistogramMatchesTheLibrarys() throws {
        let metrics = ServerMetrics()
        // The library's histogram, fed the same durations, as the reference.
        let reference = PrometheusCollectorRegistry()
        let buckets: [Duration] = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(2),
        ]
        let name = "authz_http_request_duration_seconds"
        let descriptor = MetricNameDescriptor(namespace: "authz", subsystem: "http", metricName: "request_duration",
                                              unitName: "seconds", helpText: ServerMetrics.latencyHelp)
        let histograms = Route.allCases.map {
            reference.makeDurationHistogram(descriptor: descriptor, labels: [("route", $0.label)], buckets: buckets)
        }
        // Durations on and around the bounds, and past the last one.
        let durations: [Duration] = [
            .nanoseconds(1), .microseconds(10), .nanoseconds(10_001), .microseconds(99), .microseconds(100),
            .milliseconds(3), .milliseconds(499), .seconds(2), .seconds(3), .nanoseconds(2_000_000_001),
        ]
        let threads = 4, rounds = 250
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<rounds {
                for (i, d) in durations.enumerated() {
                    metrics.request(i % 2 == 0 ? .check : .checkBatch, status: i % 3 == 0 ? 200 : 400, duration: d)
                }
                metrics.decision(.missingPermission)
            }
        }
        for _ in 0..<(threads * rounds) {
            for (i, d) in durations.enumerated() { histograms[(i % 2 == 0 ? Route.check : .checkBatch).rawValue].record(d) }
        }
        let text = String(decoding: metrics.exposition(bodyMemoryHeld: 0), as: UTF8.self)
        let expected = String(decoding: reference.emitToBuffer(), as: UTF8.self)
        #expect(Self.family(name, in: text) == Self.family(name, in: expected))
        #expect(Self.family(name, in: text).count == Route.allCases.count * (buckets.count + 3) + 2)
        // 10 requests a round: 200 for i = 0, 3, 6, 9, /v1/check for even i.
        #expect(text.contains(#"authz_http_requests_total{route="/v1/check",status="200"} \#(threads * rounds * 2)"#))
        #expect(text.contains(#"authz_http_requests_total{route="/v1/check/batch",status="200"} \#(threads * rounds * 2)"#))
        #expect(text.contains(#"authz_http_requests_total{route="/v1/check",status="400"} \#(threads * rounds * 3)"#))
        #expect(text.contains(#"authz_decisions_total{outcome="deny",reason="missing_permission"} \#(threads * rounds)"#))

        // A second scrape adds only what came since the first.
        metrics.decision(.missingPermission)
        let again = String(decoding: metrics.exposition(bodyMemoryHeld: 0), as: UTF8.self)
        #expect(again.contains(#"authz_decisions_total{outcome="deny",reason="missing_permission"} \#(threads * rounds + 1)"#))
        #expect(again.contains(#"authz_http_requests_total{route="/v1/check",status="200"} \#(threads * rounds * 2)"#))
    }
}
