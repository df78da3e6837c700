@testable import AuthzHTTP
import Foundation
import Testing
import Yams

@Suite("docs/openapi.yaml")
struct OpenAPITests {
    static let specURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/openapi.yaml")

    /// (path, METHOD) pairs the spec documents.
    static func documented() throws -> Set<String> {
        let text = try String(contentsOf: specURL, encoding: .utf8)
        let spec = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(spec["paths"] as? [String: Any])
        var out: Set<String> = []
        for (path, item) in paths {
            let operations = try #require(item as? [String: Any])
            for method in operations.keys where ["get", "post", "put", "delete", "patch", "head", "options"].contains(method) {
                out.insert("\(method.uppercased()) \(path)")
            }
        }
        return out
    }

    @Test func everyServedRouteIsDocumentedAndEveryDocumentedRouteIsServed() throws {
        let documented = try Self.documented()
        let served = Set(Route.served.flatMap { r in r.methods.map { "\($0.name) \(r.label)" } })
        #expect(documented == served)

        // And the live server agrees: no documented route answers 404 or 405.
        let live = try TestServer()
        defer { live.stop() }
        for entry in documented.sorted() {
            let parts = entry.split(separator: " ")
            let method = String(parts[0]), path = String(parts[1])
            let r = try live.client().request(method, path, body: method == "POST" ? Array("{}".utf8) : nil,
                                               headers: ["Content-Type": "application/json", "Authorization": "Bearer admin-secret"])
            #expect(r.status != 404 && r.status != 405, "\(entry) answered \(r.status)")
        }
    }

    /// libmicrohttpd refuses an over-long request line (414) or headers (431) on any route,
    /// before the route is known: every operation documents both.
    @Test func everyOperationDocumentsLibmicrohttpdsOwnRefusals() throws {
        let text = try String(contentsOf: Self.specURL, encoding: .utf8)
        let spec = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(spec["paths"] as? [String: Any])
        var operations = 0
        for (path, item) in paths {
            for (method, operation) in try #require(item as? [String: Any]) where ["get", "post"].contains(method) {
                let responses = try #require((operation as? [String: Any])?["responses"] as? [String: Any])
                #expect(responses["414"] != nil && responses["431"] != nil, "\(method.uppercased()) \(path)")
                operations += 1
            }
        }
        #expect(operations == Route.served.reduce(0) { $0 + $1.methods.count })
    }

    /// Every POST route whose body is read answers 415 to a `Content-Encoding` it does not take,
    /// and says so; `/v1/sync` documents the header it takes.
    @Test func everyRouteReadingABodyDocuments415() throws {
        let text = try String(contentsOf: Self.specURL, encoding: .utf8)
        let spec = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(spec["paths"] as? [String: Any])
        let live = try TestServer()
        defer { live.stop() }
        for route in Route.served where route.methods.contains(.post) && route != .policyReload {
            let post = try #require((paths[route.label] as? [String: Any])?["post"] as? [String: Any], "\(route.label)")
            let responses = try #require(post["responses"] as? [String: Any])
            #expect(responses["415"] != nil, "POST \(route.label)")
            let r = try live.client().request("POST", route.label, body: Array("{}".utf8), headers: [
                "Content-Type": route == .sync ? "application/x-ndjson" : "application/json", "Content-Encoding": "br",
                "Authorization": "Bearer admin-secret",
            ])
            #expect(r.status == 415 && r.errorCode == "unsupported_encoding", "POST \(route.label): \(r.status) \(r.text)")
        }
        // A policy reload ignores its body, and so its encoding.
        let reload = try live.client().request("POST", "/v1/policy/reload", body: Array("x".utf8), headers: [
            "Content-Encoding": "br", "Authorization": "Bearer admin-secret",
        ])
        #expect(reload.status == 200, "\(reload.text)")
        let sync = try #require((paths["/v1/sync"] as? [String: Any])?["post"] as? [String: Any])
        let parameters = try #require(sync["parameters"] as? [[String: Any]])
        let encoding = try #require(parameters.first { $0["name"] as? String == "Content-Encoding" })
        #expect((encoding["schema"] as? [String: Any])?["enum"] as? [String] == ["identity", "gzip", "x-gzip"])
    }

    /// Every POST route whose body counts against `--max-body-memory` (checks and batches)
    /// documents its 503 `overloaded` and the `Retry-After` it carries; the others do not.
    @Test func everyRouteHoldingABodyDocumentsOverloaded() throws {
        let text = try String(contentsOf: Self.specURL, encoding: .utf8)
        let spec = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(spec["paths"] as? [String: Any])
        let responses = try #require((spec["components"] as? [String: Any])?["responses"] as? [String: Any])
        for route in Route.served where route.methods.contains(.post) && !route.holdsBody {
            let post = try #require((paths[route.label] as? [String: Any])?["post"] as? [String: Any], "\(route.label)")
            let ref = ((post["responses"] as? [String: Any])?["503"] as? [String: Any])?["$ref"] as? String
            #expect(ref.map { responses[String($0.split(separator: "/").last!)] as? [String: Any] }??["headers"] == nil, "POST \(route.label)")
        }
        for route in Route.served where route.methods.contains(.post) && route.holdsBody {
            let post = try #require((paths[route.label] as? [String: Any])?["post"] as? [String: Any], "\(route.label)")
            let ref = try #require(((post["responses"] as? [String: Any])?["503"] as? [String: Any])?["$ref"] as? String,
                                   "POST \(route.label) has no 503")
            let answer = try #require(responses[String(ref.split(separator: "/").last!)] as? [String: Any])
            #expect((answer["description"] as? String)?.contains("`overloaded`") == true, "POST \(route.label)")
            #expect((answer["headers"] as? [String: Any])?["Retry-After"] != nil, "POST \(route.label)")
        }
        #expect(text.contains("no_memory, overloaded]"))
    }
}
