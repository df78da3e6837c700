import AuthzCore

/// An error answer: HTTP status, a stable snake_case code, a message (lowercase, no final
/// period, user input in backticks), and optionally a list of details.
struct HTTPError: Error, Sendable {
    var status: Int
    var code: String
    var message: String
    /// `Allow` for a 405, `WWW-Authenticate` for a 401, `Accept-Encoding` for a 415.
    var header: (name: String, value: String)? = nil
    /// Every error found, for answers that have several (a policy that does not compile).
    var errors: [String]? = nil

    static func invalidParameter(_ message: String) -> HTTPError {
        HTTPError(status: 400, code: "invalid_parameter", message: message)
    }
    static func invalidJSON(_ message: String) -> HTTPError {
        HTTPError(status: 400, code: "invalid_json", message: message)
    }
    static func unsupportedMediaType(_ got: String?, expected: String = "application/json") -> HTTPError {
        HTTPError(status: 400, code: "unsupported_media_type",
                  message: got.map { "content type `\($0)` is not supported; send `\(expected)`" }
                      ?? "the request has no content type; send `\(expected)`")
    }
    /// `got`: what was sent, as the message names it ("content encoding `br`").
    static func unsupportedEncoding(_ got: String, route: String, gzip: Bool) -> HTTPError {
        HTTPError(status: 415, code: "unsupported_encoding",
                  message: "\(got) is not supported on `\(route)`; send the body as is\(gzip ? " or gzip" : "")",
                  header: ("Accept-Encoding", gzip ? "gzip" : "identity"))
    }
    /// A body whose `Content-Encoding` it does not follow (a damaged or truncated gzip sync).
    static func invalidEncoding(_ message: String) -> HTTPError {
        HTTPError(status: 400, code: "invalid_encoding", message: message)
    }
    static func staleRevision(current: UInt64, wanted: UInt64) -> HTTPError {
        HTTPError(status: 409, code: "stale_revision",
                  message: "the server is at revision \(current), not yet at \(wanted); retry shortly")
    }
    static func unauthorized(_ message: String) -> HTTPError {
        HTTPError(status: 401, code: "unauthorized", message: message, header: ("WWW-Authenticate", "Bearer"))
    }
    static func notFound(_ path: String) -> HTTPError {
        HTTPError(status: 404, code: "not_found", message: "no route `\(path)`")
    }
    static func methodNotAllowed(_ method: String, _ path: String, allow: String) -> HTTPError {
        HTTPError(status: 405, code: "method_not_allowed", message: "`\(method)` is not allowed on `\(path)`; use \(allow)",
                  header: ("Allow", allow))
    }
    static func payloadTooLarge(_ message: String) -> HTTPError {
        HTTPError(status: 413, code: "payload_too_large", message: message)
    }
    static func overloaded(_ limit: Int) -> HTTPError {
        HTTPError(status: 503, code: "overloaded",
                  message: "the request bodies held across connections would pass --max-body-memory (\(limit) bytes); this one was not kept, send it again",
                  header: ("Retry-After", "1"))
    }
    static let notReady = HTTPError(status: 503, code: "not_ready", message: "the membership data is not loaded yet")
    static let stopping = HTTPError(status: 503, code: "stopping", message: "the server is stopping; nothing changed, send the sync again")

    /// A request the engine cannot decide on.
    init(_ e: CheckError) {
        self.init(status: 400, code: e.code.rawValue, message: e.message)
    }

    init(status: Int, code: String, message: String, header: (name: String, value: String)? = nil, errors: [String]? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.header = header
        self.errors = errors
    }

    /// `{"code":"...","message":"..."}`
    func writeObject(into w: inout JSONWriter) {
        w.raw("{\"code\":")
        w.string(code)
        w.raw(",\"message\":")
        w.string(message)
        if let errors {
            w.raw(",\"errors\":")
            w.stringArray(errors)
        }
        w.byte(0x7D)
    }

    /// `{"error":{...}}`
    var body: [UInt8] {
        var w = JSONWriter(capacity: 128 + message.utf8.count)
        w.raw("{\"error\":")
        writeObject(into: &w)
        w.raw("}\n")
        return w.bytes
    }
}
