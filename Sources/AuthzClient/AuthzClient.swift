import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A client for an `authz serve` endpoint: checks, batch checks and membership sync.
///
///     let authz = AuthzClient(server: URL(string: "http://127.0.0.1:8180")!, token: checkToken)
///     let answer = try await authz.check(subject: "user:u1", action: "delete", resource: "sandbox:sb1", org: "acme")
///     if answer.allowed { ... } else { log(answer.reason, answer.message) }
public struct AuthzClient: Sendable {
    public let server: URL
    public let token: String?
    private let session: URLSession

    public init(server: URL, token: String? = nil, timeout: TimeInterval = 30) {
        self.server = server
        self.token = token
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        config.timeoutIntervalForResource = max(timeout, 600)
        self.session = URLSession(configuration: config)
    }

    /// One decision.
    public struct Decision: Sendable, Codable, Equatable {
        public var allowed: Bool
        public var reason: String
        public var message: String
        public var revision: Int64
    }

    /// One item of a batch answer: a decision, or the error of an invalid item.
    public struct BatchItem: Sendable, Decodable, Equatable {
        public var allowed: Bool?
        public var reason: String?
        public var message: String?
        public var error: ErrorBody?
    }

    private struct ErrorWrapper: Decodable { var error: ErrorBody }

    public struct ErrorBody: Sendable, Codable, Equatable {
        public var code: String
        public var message: String
    }

    /// The answer to a sync.
    public struct SyncOutcome: Sendable, Codable, Equatable {
        public var revision: Int64
        public var upserted: Int
        public var deleted: Int
    }

    /// What can go wrong talking to the server.
    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// No answer: connection refused, DNS, timeout.
        case unreachable(String)
        /// The server answered with an error status and body.
        case refused(status: Int, code: String, message: String, body: Data)
        /// The server answered something this client does not understand.
        case badResponse(String)

        public var description: String {
            switch self {
            case .unreachable(let m): "server unreachable: \(m)"
            case .refused(let status, let code, let message, _): "server refused (\(status) \(code)): \(message)"
            case .badResponse(let m): "unexpected response: \(m)"
            }
        }
    }

    public func check(subject: String, action: String, resource: String, org: String, minRevision: Int64? = nil) async throws(Failure) -> Decision {
        var items = [URLQueryItem(name: "subject", value: subject), URLQueryItem(name: "action", value: action),
                     URLQueryItem(name: "resource", value: resource), URLQueryItem(name: "org", value: org)]
        if let minRevision { items.append(URLQueryItem(name: "min_revision", value: String(minRevision))) }
        return try await send("GET", "/v1/check", query: items, body: nil, contentType: nil)
    }

    public struct CheckItem: Sendable, Codable, Equatable {
        public var subject, action, resource, org: String
        public init(subject: String, action: String, resource: String, org: String) {
            self.subject = subject
            self.action = action
            self.resource = resource
            self.org = org
        }
    }

    private struct BatchBody: Encodable { var checks: [CheckItem] }
    public struct BatchAnswer: Sendable, Decodable, Equatable {
        public var results: [BatchItem]
        public var revision: Int64
    }

    public func checkBatch(_ checks: [CheckItem]) async throws(Failure) -> BatchAnswer {
        let body: Data
        do { body = try JSONEncoder().encode(BatchBody(checks: checks)) } catch { throw .badResponse("cannot encode the batch: \(error)") }
        return try await send("POST", "/v1/check/batch", query: [], body: body, contentType: "application/json")
    }

    public enum SyncMode: String, Sendable { case apply, replace }

    /// Pushes JSON Lines records; `ifRevision` makes the server refuse (409) unless it is at it.
    public func sync(_ jsonLines: Data, mode: SyncMode = .apply, ifRevision: Int64? = nil) async throws(Failure) -> SyncOutcome {
        var items = [URLQueryItem(name: "mode", value: mode.rawValue)]
        if let ifRevision { items.append(URLQueryItem(name: "if_revision", value: String(ifRevision))) }
        return try await send("POST", "/v1/sync", query: items, body: jsonLines, contentType: "application/x-ndjson")
    }

    /// Pushes a JSON Lines file as it is, streamed from disk (a replace of a million records
    /// is a few hundred megabytes).
    public func sync(file: URL, mode: SyncMode = .apply, ifRevision: Int64? = nil) async throws(Failure) -> SyncOutcome {
        var items = [URLQueryItem(name: "mode", value: mode.rawValue)]
        if let ifRevision { items.append(URLQueryItem(name: "if_revision", value: String(ifRevision))) }
        return try await send("POST", "/v1/sync", query: items, body: nil, file: file, contentType: "application/x-ndjson")
    }

    private func send<T: Decodable>(_ method: String, _ path: String, query: [URLQueryItem], body: Data?, file: URL? = nil,
                                    contentType: String?) async throws(Failure) -> T {
        guard var components = URLComponents(url: server.appendingPathComponent(path), resolvingAgainstBaseURL: false) else {
            throw .badResponse("invalid server URL \(server)")
        }
        if !query.isEmpty { components.queryItems = query }
        guard let url = components.url else { throw .badResponse("invalid request URL") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        let data: Data
        let response: URLResponse
        do {
            if let file {
                (data, response) = try await session.upload(for: request, fromFile: file)
            } else if let body {
                (data, response) = try await session.upload(for: request, from: body)
            } else {
                (data, response) = try await session.data(for: request)
            }
        } catch {
            throw .unreachable("\(server): \(error.localizedDescription)")
        }
        guard let http = response as? HTTPURLResponse else { throw .badResponse("not HTTP") }
        guard (200..<300).contains(http.statusCode) else {
            let e = try? JSONDecoder().decode(ErrorWrapper.self, from: data)
            throw .refused(status: http.statusCode, code: e?.error.code ?? "http_\(http.statusCode)",
                           message: e?.error.message ?? String(decoding: data.prefix(300), as: UTF8.self), body: data)
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw .badResponse("cannot decode \(T.self): \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
    }
}
