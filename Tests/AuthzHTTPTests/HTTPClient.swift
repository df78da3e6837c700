import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP answer as read off the socket.
struct HTTPResponse {
    var status: Int
    var headers: [String: String]   // lowercased names
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
    /// `error.code` of an error answer.
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
}

struct SocketError: Error, CustomStringConvertible {
    var description: String
}

/// A blocking TCP connection to the server under test, with a receive timeout so that a test
/// never hangs. Raw on purpose: tests also send garbage, stall and hang up mid-request.
final class RawSocket {
    let fd: Int32

    init(port: Int, receiveTimeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError(description: "socket: \(errno)") }
        var tv = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // Not closed here: a class whose init throws once its properties are set is still
        // deinitialized, and a second close could close a descriptor the server under test
        // had got meanwhile (libmicrohttpd aborts when epoll loses one of its sockets).
        guard rc == 0 else { throw SocketError(description: "connect: \(errno)") }
    }

    deinit { if fd >= 0 { close(fd) } }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SocketError(description: "send: \(errno)") }
            sent += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads until the peer closes (or the timeout): everything received.
    func readToEnd() throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return out }
            if n < 0 {
                if errno == ECONNRESET { return out }
                throw SocketError(description: "recv: errno \(errno) after \(out.count) bytes")
            }
            out.append(contentsOf: buffer[0..<n])
        }
    }

    /// Reads one response (headers and a Content-Length body), leaving the connection open.
    func readResponse() throws -> HTTPResponse {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if let r = HTTPClient.parse(data, complete: false) { return r }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw SocketError(description: "connection closed after \(data.count) bytes") }
            data.append(contentsOf: buffer[0..<n])
        }
    }
}

/// One request per connection (`Connection: close`), or several on one with `keepAlive`.
struct HTTPClient {
    let port: Int

    func request(_ method: String, _ target: String, body: [UInt8]? = nil, headers: [String: String] = [:]) throws -> HTTPResponse {
        let socket = try RawSocket(port: port)
        do {
            try socket.send(Self.encode(method, target, body: body, headers: headers, close: true))
        } catch let e as SocketError where e.description == "send: \(EPIPE)" || e.description == "send: \(ECONNRESET)" {
            // The server may answer before reading the whole body (413 on Content-Length) and
            // close; like any HTTP client, read the answer it sent.
        }
        let raw = try socket.readToEnd()
        guard let r = Self.parse(raw, complete: true) else {
            throw SocketError(description: "unparsable response: \(String(decoding: raw.prefix(200), as: UTF8.self))")
        }
        return r
    }

    func get(_ target: String, token: String? = nil) throws -> HTTPResponse {
        try request("GET", target, headers: token.map { ["Authorization": "Bearer \($0)"] } ?? [:])
    }

    func post(_ target: String, json: String, token: String? = nil, contentType: String = "application/json") throws -> HTTPResponse {
        var h = ["Content-Type": contentType]
        if let token { h["Authorization"] = "Bearer \(token)" }
        return try request("POST", target, body: Array(json.utf8), headers: h)
    }

    static func encode(_ method: String, _ target: String, body: [UInt8]?, headers: [String: String], close: Bool) -> [UInt8] {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if close { head += "Connection: close\r\n" }
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (body ?? [])
    }

    /// Parses a response; with `complete` false, nil until the whole body has arrived.
    static func parse(_ raw: [UInt8], complete: Bool) -> HTTPResponse? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard raw.count >= 4, let end = (0...(raw.count - 4)).first(where: { Array(raw[$0..<$0 + 4]) == separator }) else { return nil }
        let head = String(decoding: raw[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(raw[(end + 4)...])
        if let length = headers["content-length"].flatMap(Int.init) {
            if body.count < length { return complete ? HTTPResponse(status: status, headers: headers, body: body) : nil }
            body = Array(body.prefix(length))
        } else if !complete {
            return nil
        }
        return HTTPResponse(status: status, headers: headers, body: body)
    }
}
