import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A client for an `authz serve` endpoint: checks, batch checks and membership sync.
///
///     let authz = AuthzClient(server: URL(string: "http://127.0.0.1:8180")!, token: checkToken)
///     let answer = try await authz.check(subject: "user:u1", action: "delete", resource: "sandbox:sb1", org: "acme")
///     if answer.allowed { ... } else { log(answer.reason, answer.message) }
///
/// Requests go through one AsyncHTTPClient client per process (pooled keep-alive connections
/// on SwiftNIO's event loops). FoundationNetworking's URLSession was replaced: on Linux it
/// busy-waits for an answer (~1.7 cores during a long replace, starving the server beside it).
public struct AuthzClient: Sendable {
    public let server: URL
    public let token: String?
    /// How long a request may take, from sending to the last byte of the answer.
    public let timeout: TimeInterval

    /// The largest answer read (a batch of 10,000 explained decisions is a few megabytes).
    static let maxAnswerBytes = 64 << 20

    public init(server: URL, token: String? = nil, timeout: TimeInterval = 30) {
        self.server = server
        self.token = token
        self.timeout = timeout
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
        /// A file to send could not be read (nothing was sent).
        case unreadable(String)

        public var description: String {
            switch self {
            case .unreachable(let m): "server unreachable: \(m)"
            case .refused(let status, let code, let message, _): "server refused (\(status) \(code)): \(message)"
            case .badResponse(let m): "unexpected response: \(m)"
            case .unreadable(let m): "cannot read \(m)"
            }
        }
    }

    public func check(subject: String, action: String, resource: String, org: String, minRevision: Int64? = nil) async throws(Failure) -> Decision {
        var items = [URLQueryItem(name: "subject", value: subject), URLQueryItem(name: "action", value: action),
                     URLQueryItem(name: "resource", value: resource), URLQueryItem(name: "org", value: org)]
        if let minRevision { items.append(URLQueryItem(name: "min_revision", value: String(minRevision))) }
        return try await send(.GET, "/v1/check", query: items, body: nil, contentType: nil)
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
        return try await send(.POST, "/v1/check/batch", query: [], body: body, contentType: "application/json")
    }

    public enum SyncMode: String, Sendable { case apply, replace }

    /// How a sync body travels.
    public enum BodyEncoding: Sendable {
        /// As it is.
        case identity
        /// `Content-Encoding: gzip` at zlib's fastest level, compressed on every core: about a
        /// quarter of the bytes for membership records, for a slow link between the platform
        /// and the server. On a fast one it costs more time than it saves (both sides spend
        /// CPU on it: see benchmarks/FINDINGS.md). Bodies under 1 KiB go as they are, and so
        /// does the body again if the answer is 415 (a proxy, or a server that refuses the
        /// coding). An OrgAuthz server older than gzip support reads the compressed bytes as
        /// records and answers 400 `invalid_data`.
        case gzip
    }

    /// Pushes JSON Lines records; `ifRevision` makes the server refuse (409) unless it is at it.
    public func sync(_ jsonLines: Data, mode: SyncMode = .apply, ifRevision: Int64? = nil,
                     encoding: BodyEncoding = .identity) async throws(Failure) -> SyncOutcome {
        var items = [URLQueryItem(name: "mode", value: mode.rawValue)]
        if let ifRevision { items.append(URLQueryItem(name: "if_revision", value: String(ifRevision))) }
        if encoding == .gzip, jsonLines.count >= 1024, let compressed = await Gzip.compressed(jsonLines) {
            do {
                return try await send(.POST, "/v1/sync", query: items, body: compressed, contentType: "application/x-ndjson",
                                      contentEncoding: "gzip")
            } catch .refused(status: 415, _, _, _) {
                // A server (or a proxy) that takes the body only as it is: send it so.
            }
        }
        return try await send(.POST, "/v1/sync", query: items, body: jsonLines, contentType: "application/x-ndjson")
    }

    /// Pushes a JSON Lines file as it is (mapped, not read into memory).
    public func sync(file: URL, mode: SyncMode = .apply, ifRevision: Int64? = nil,
                     encoding: BodyEncoding = .identity) async throws(Failure) -> SyncOutcome {
        let data: Data
        do { data = try Data(contentsOf: file, options: .alwaysMapped) } catch {
            throw .unreadable("\(file.path): \(error.localizedDescription)")
        }
        return try await sync(data, mode: mode, ifRevision: ifRevision, encoding: encoding)
    }

    private func send<T: Decodable>(_ method: HTTPMethod, _ path: String, query: [URLQueryItem], body: Data?,
                                    contentType: String?, contentEncoding: String? = nil) async throws(Failure) -> T {
        guard var components = URLComponents(url: server.appendingPathComponent(path), resolvingAgainstBaseURL: false) else {
            throw .badResponse("invalid server URL \(server)")
        }
        if !query.isEmpty { components.queryItems = query }
        guard let url = components.url else { throw .badResponse("invalid request URL") }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        if let contentEncoding { request.headers.add(name: "Content-Encoding", value: contentEncoding) }
        if let body { request.body = .bytes(body) }
        let status: Int
        let data: Data
        do {
            let response = try await transport.execute(request, timeout: .nanoseconds(Int64(timeout * 1e9)))
            status = Int(response.status.code)
            data = Data(try await response.body.collect(upTo: Self.maxAnswerBytes).readableBytesView)
        } catch {
            throw .unreachable("\(server): \(error)")
        }
        guard (200..<300).contains(status) else {
            let e = try? JSONDecoder().decode(ErrorWrapper.self, from: data)
            throw .refused(status: status, code: e?.error.code ?? "http_\(status)",
                           message: e?.error.message ?? String(decoding: data.prefix(300), as: UTF8.self), body: data)
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw .badResponse("cannot decode \(T.self): \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
    }
}

/// The process's HTTP client, never shut down (like `HTTPClient.shared`), configured for a
/// service next door: a refused connection fails at once (the caller decides about retries;
/// `authz sync` retries with backoff) instead of being retried until the request's deadline,
/// and redirects are not followed.
private let transport: HTTPClient = {
    var configuration = HTTPClient.Configuration(
        redirectConfiguration: .disallow,
        timeout: .init(connect: .seconds(10))
    )
    configuration.connectionPool.retryConnectionEstablishment = false
    return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
}()
