/// The routes of API v1. The path table is the single source for dispatch, for `Allow`
/// headers and for the metrics' `route` label (unknown paths count as `unmatched`, so a
/// scanner cannot grow the label set).
enum Route: Int, CaseIterable, Sendable {
    case check, checkBatch, permissions, subjects, sync, policyReload, healthz, readyz, metrics, unmatched

    var path: StaticString {
        switch self {
        case .check: "/v1/check"
        case .checkBatch: "/v1/check/batch"
        case .permissions: "/v1/permissions"
        case .subjects: "/v1/subjects"
        case .sync: "/v1/sync"
        case .policyReload: "/v1/policy/reload"
        case .healthz: "/healthz"
        case .readyz: "/readyz"
        case .metrics: "/metrics"
        case .unmatched: "unmatched"
        }
    }

    var label: String { path.description }

    /// Whether a POST's body counts against `--max-body-memory` (checks and batches; a sync
    /// has its own limit and a reload ignores its body).
    var holdsBody: Bool { self == .check || self == .checkBatch }

    var methods: [HTTPMethod] {
        switch self {
        case .check: [.get, .post]
        case .checkBatch, .sync, .policyReload: [.post]
        case .permissions, .subjects, .healthz, .readyz, .metrics: [.get]
        case .unmatched: []
        }
    }

    /// The `Allow` header value.
    var allow: String { methods.map(\.name).joined(separator: ", ") }

    /// Which token guards it.
    var guardedBy: Guard {
        switch self {
        case .check, .checkBatch, .permissions, .subjects: .check
        case .sync, .policyReload: .admin
        case .healthz, .readyz, .metrics, .unmatched: .none
        }
    }

    enum Guard { case none, check, admin }

    /// Every served route, for the OpenAPI test.
    /// Made once: `match` runs for every request.
    static let served: [Route] = allCases.filter { $0 != .unmatched }

    /// The route of a NUL-terminated path, compared without building a String.
    static func match(_ url: UnsafePointer<CChar>) -> Route {
        for route in served {
            let p = route.path
            let n = p.utf8CodeUnitCount
            var equal = true
            let start = p.utf8Start
            for i in 0..<n where UInt8(bitPattern: url[i]) != start[i] {
                equal = false
                break
            }
            if equal && url[n] == 0 { return route }
        }
        return .unmatched
    }
}

enum HTTPMethod: Sendable, Equatable {
    case get, post, other(String)

    var name: String {
        switch self {
        case .get: "GET"
        case .post: "POST"
        case .other(let m): m
        }
    }

    init(_ method: UnsafePointer<CChar>) {
        if strEquals(method, "GET") {
            self = .get
        } else if strEquals(method, "POST") {
            self = .post
        } else {
            self = .other(String(cString: method))
        }
    }
}

@inline(__always)
func strEquals(_ c: UnsafePointer<CChar>, _ s: StaticString) -> Bool {
    let n = s.utf8CodeUnitCount
    let p = s.utf8Start
    for i in 0..<n where UInt8(bitPattern: c[i]) != p[i] { return false }
    return c[n] == 0
}
