@testable import AuthzClient
@testable import AuthzHTTP
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `POST /v1/sync` with `Content-Encoding: gzip`, and the client that sends it. The servers
/// run syncs at normal priority (`syncIdleLimit` zero): a 4 MB body's decompression in the
/// idle class could wait past the client's receive timeout on a machine busy with other
/// tests; BackgroundPriorityTests cover the idle class.
@Suite("gzip sync bodies")
struct GzipSyncTests {
    private func gzip(_ text: String) throws -> [UInt8] { [UInt8](try #require(Gzip.compress(Data(text.utf8)))) }

    private func syncGzip(_ live: SyncServer, _ body: [UInt8], query: String = "", encoding: String = "gzip") throws -> HTTPResponse {
        try live.http.request("POST", "/v1/sync\(query)", body: body, headers: [
            "Authorization": "Bearer \(SyncServer.admin)", "Content-Type": "application/x-ndjson", "Content-Encoding": encoding,
        ])
    }

    /// Every seed check's answer, at whatever revision.
    private func answers(_ live: SyncServer) throws -> [Bool] {
        try seedChecks.map { try live.http.allowed($0.0, $0.1, $0.2, $0.3) }
    }

    @Test func aGzipSyncIsAppliedAsThePlainBodyWouldBe() throws {
        let plain = try SyncServer(syncIdleLimit: .zero)
        defer { plain.stop() }
        try plain.synced(syncSeed)
        let live = try SyncServer(syncIdleLimit: .zero)
        defer { live.stop() }

        let r = try syncGzip(live, try gzip(syncSeed))
        #expect(r.status == 200, "\(r.text)")
        #expect(r.json["revision"] as? Int == 1)
        #expect(r.json["upserted"] as? Int == 13)
        #expect(try answers(live) == answers(plain))

        // The other spellings, and gzip made by another encoder (`gzip -9n`, two records).
        let fromTool = try #require(Data(base64Encoded: "H4sIAAAAAAACA6tWys7MS1GyUsovSlfSUcoEMROTc1OVarmqYVK5qblJqUVAWZAaqLSOUmkxUMxKqdQQyC7Kz0kFmVGeBxSr5QIAURKBEFUAAAA="))
        for encoding in ["x-gzip", " GZIP "] {
            let again = try syncGzip(live, [UInt8](fromTool), query: "?mode=apply", encoding: encoding)
            #expect(again.status == 200, "\(encoding): \(again.text)")
            #expect(again.json["upserted"] as? Int == 2, "\(encoding)")
        }
        // `identity` is the body as it is.
        let identity = try syncGzip(live, Array(#"{"kind":"member","org":"acme","user":"u9","role":"member"}"#.utf8), encoding: "identity")
        #expect(identity.status == 200, "\(identity.text)")
        #expect(try live.http.allowed("user:u9", "read", "sandbox:s", "acme"))
    }

    @Test func membersBackToBackAreOneBody() throws {
        let live = try SyncServer(syncIdleLimit: .zero)
        defer { live.stop() }
        let lines = syncSeed.split(separator: "\n", omittingEmptySubsequences: false)
        let half = lines.count / 2
        let body = try gzip(lines[..<half].joined(separator: "\n") + "\n") + gzip(lines[half...].joined(separator: "\n"))
        let r = try syncGzip(live, body)
        #expect(r.status == 200, "\(r.text)")
        #expect(r.json["upserted"] as? Int == 13)
        // The client's own slices: a body of more than one slice, each its own member.
        var big = ""
        var i = 0
        while big.utf8.count <= Gzip.slice + 1000 {
            big += #"{"kind":"user","id":"user-\#(i)","email":"user-\#(i)@example.com","email_verified":true}"# + "\n"
            i += 1
        }
        let compressed = try gzip(big)
        #expect(compressed.count < big.utf8.count / 3)
        let many = try syncGzip(live, compressed, query: "?mode=apply")
        #expect(many.status == 200, "\(many.text)")
        #expect(many.json["upserted"] as? Int == i)
    }

    @Test func aDamagedBodyIsRefusedAndChangesNothing() throws {
        let live = try SyncServer(syncIdleLimit: .zero)
        defer { live.stop() }
        try live.synced(syncSeed)
        let before = try answers(live)
        let change = try gzip(#"{"kind":"member","org":"acme","user":"u9","role":"owner"}"# + "\n" + syncSeed)
        var flipped = change
        flipped[change.count / 2] ^= 0x5A
        let cases: [(String, [UInt8], String)] = [
            ("truncated", Array(change.dropLast(9)), "ends early"),
            ("a flipped byte", flipped, "damaged at byte"),
            ("not gzip", Array(syncSeed.utf8), "damaged at byte 2"),
            ("empty", [], "ends early, after 0 bytes"),
            ("bytes after the member", change + Array("trailing".utf8), "damaged at byte \(change.count + 2)"),
        ]
        for (name, body, message) in cases {
            let r = try syncGzip(live, body)
            #expect(r.status == 400, "\(name): \(r.text)")
            #expect(r.errorCode == "invalid_encoding", "\(name)")
            #expect(r.text.contains(message) && r.text.contains("nothing changed"), "\(name): \(r.text)")
        }
        #expect(try live.http.readyRevision() == 1)
        #expect(try answers(live) == before)
        #expect(try !live.http.allowed("user:u9", "read", "sandbox:s", "acme"))
    }

    @Test func theLimitIsOnTheDecompressedBytes() throws {
        let body = try gzip(syncSeed)
        // Exactly at the limit: taken. One byte over: 413, nothing changed.
        let exact = try SyncServer(maxSyncBody: syncSeed.utf8.count, syncIdleLimit: .zero)
        defer { exact.stop() }
        let taken = try syncGzip(exact, body)
        #expect(taken.status == 200, "\(taken.text)")
        // Full at the limit with input left: an empty member after it adds nothing.
        let withEmpty = try syncGzip(exact, body + gzip(""))
        #expect(withEmpty.status == 200, "\(withEmpty.text)")
        let under = try SyncServer(maxSyncBody: syncSeed.utf8.count - 1, syncIdleLimit: .zero)
        defer { under.stop() }
        let refused = try syncGzip(under, body)
        #expect(refused.status == 413, "\(refused.text)")
        #expect(refused.errorCode == "payload_too_large")
        #expect(refused.text.contains("exceeds \(syncSeed.utf8.count - 1) bytes once decompressed; nothing changed"))
        #expect(try under.http.readyRevision() == 0)

        // Members each under the limit, together over it.
        let twice = try gzip(syncSeed) + gzip(syncSeed)
        let overTogether = try syncGzip(exact, twice, query: "?mode=apply")
        #expect(overTogether.status == 413, "\(overTogether.text)")
        #expect(try exact.http.readyRevision() == 2)

        // A bomb: 64 MB of newlines in ~64 KB, against a 1 MB limit.
        let bomb = try #require(Gzip.compress(Data(repeating: 0x0A, count: 64 << 20)))
        #expect(bomb.count < 1 << 20)
        let small = try SyncServer(maxSyncBody: 1 << 20, syncIdleLimit: .zero)
        defer { small.stop() }
        let r = try syncGzip(small, [UInt8](bomb))
        #expect(r.status == 413, "\(r.text)")
        #expect(try small.http.readyRevision() == 0)
    }

    @Test func otherEncodingsAreRefusedWith415() throws {
        let live = try SyncServer(syncIdleLimit: .zero)
        defer { live.stop() }
        let body = try gzip(syncSeed)
        for encoding in ["br", "deflate", "compress", "gzip, gzip", "zstd", "gzip, br"] {
            let r = try syncGzip(live, body, encoding: encoding)
            #expect(r.status == 415, "\(encoding): \(r.text)")
            #expect(r.errorCode == "unsupported_encoding", "\(encoding)")
            #expect(r.headers["accept-encoding"] == "gzip", "\(r.headers)")
            #expect(r.text.contains("content encoding `\(encoding)` is not supported on `/v1/sync`; send the body as is or gzip"), "\(r.text)")
        }
        // A list (RFC 9110): empty elements and `identity` mean nothing.
        for encoding in [", gzip", "identity, gzip", "gzip ,"] {
            let r = try syncGzip(live, body, query: "?mode=apply", encoding: encoding)
            #expect(r.status == 200, "\(encoding): \(r.text)")
        }
        // Only a sync takes gzip; the decision routes take their small bodies as they are.
        let check = #"{"subject":"user:u1","action":"read","resource":"sandbox:s","org":"acme"}"#
        for path in ["/v1/check", "/v1/check/batch"] {
            let r = try live.http.request("POST", path, body: try gzip(check), headers: ["Content-Type": "application/json", "Content-Encoding": "gzip"])
            #expect(r.status == 415, "\(path): \(r.text)")
            #expect(r.headers["accept-encoding"] == "identity", "\(r.headers)")
            #expect(r.text.contains("send the body as is\""), "\(r.text)")
        }
        for encoding in ["identity", "", " , identity,"] {
            let r = try live.http.request("POST", "/v1/check", body: Array(check.utf8),
                                          headers: ["Content-Type": "application/json", "Content-Encoding": encoding])
            #expect(r.status == 200, "`\(encoding)`: \(r.text)")
        }
        #expect(try live.http.readyRevision() == 3)
    }

    @Test func theClientSendsGzipWhenAsked() async throws {
        // What goes on the wire: gzip, which decompresses to the records.
        let fake = try FakeSyncServer(takesGzip: true)
        defer { fake.stop() }
        let toFake = AuthzClient(server: URL(string: "http://127.0.0.1:\(fake.port)")!, token: "t")
        _ = try await toFake.sync(Data(paddedSeed.utf8), encoding: .gzip)
        let sent = try #require(fake.requests.first)
        #expect(fake.requests.count == 1)
        #expect(sent.encoding == "gzip")
        #expect(sent.body.count < paddedSeed.utf8.count / 2)
        let inflated = sent.body.withUnsafeBytes { GzipBody.gunzip($0, limit: 1 << 20) }
        #expect((try? inflated.get()) == Data(paddedSeed.utf8))

        // And the server takes it.
        let live = try SyncServer(syncIdleLimit: .zero)
        defer { live.stop() }
        let authz = AuthzClient(server: URL(string: "http://127.0.0.1:\(live.port)")!, token: SyncServer.admin)
        let synced = try await authz.sync(Data(paddedSeed.utf8), encoding: .gzip)
        #expect([synced.revision, Int64(synced.upserted)] == [1, 33])
        #expect(try live.http.allowed("user:u2", "create", "sandbox:s", "acme"))
    }

    @Test func theSizeHintReadsTheTrailerOnlyWhenDeflateCouldHaveMadeIt() throws {
        let text = String(repeating: "0123456789", count: 500) // 5000 bytes, one member
        let body = try gzip(text)
        #expect(body.withUnsafeBytes { GzipBody.sizeHint($0) } == 5000)
        // A trailer claiming more than 1032 times the compressed bytes is not believed.
        var lying = body
        lying.replaceSubrange(lying.count - 4..<lying.count, with: [0xFF, 0xFF, 0xFF, 0x7F])
        #expect(lying.withUnsafeBytes { GzipBody.sizeHint($0) } == lying.count * 4)
        #expect(Array(lying[..<10]).withUnsafeBytes { GzipBody.sizeHint($0) } == 40)
        // A wrong hint costs nothing but an allocation: the body still decompresses.
        let truncatedTrailer = lying.withUnsafeBytes { GzipBody.gunzip($0, limit: 1 << 20) }
        #expect(truncatedTrailer == .failure(.corrupt(offset: lying.count, detail: "incorrect length check")))
        #expect((try? body.withUnsafeBytes { GzipBody.gunzip($0, limit: 5000) }.get()) == Data(text.utf8))
    }

    @Test func theClientSendsTheBodyAsItIsAfterA415() async throws {
        let fake = try FakeSyncServer(takesGzip: false)
        defer { fake.stop() }
        let authz = AuthzClient(server: URL(string: "http://127.0.0.1:\(fake.port)")!, token: "t")
        let body = paddedSeed
        let synced = try await authz.sync(Data(body.utf8), encoding: .gzip)
        #expect(synced.revision == 7)
        let seen = fake.requests
        #expect(seen.map(\.encoding) == ["gzip", nil])
        #expect(seen.first?.body.count ?? 0 < body.utf8.count / 2)
        #expect(seen.last?.body == Array(body.utf8))
        // Small bodies and `.identity` go as they are, at once.
        _ = try await authz.sync(Data(#"{"kind":"org","id":"a"}"#.utf8), encoding: .gzip)
        _ = try await authz.sync(Data(syncSeed.utf8))
        #expect(fake.requests.dropFirst(2).map(\.encoding) == [nil, nil])
    }
}

/// The seed and 20 more users: over the 1 KiB under which the client does not compress.
let paddedSeed = syncSeed + (0..<20).map { "\n" + #"{"kind":"user","id":"x\#($0)","email":"x\#($0)@example.com","email_verified":true}"# }.joined()

/// An HTTP/1.1 server that answers `POST /v1/sync` with revision 7, and, unless it takes
/// gzip, a `Content-Encoding` body with a bare 415 (as a proxy might). From the request
/// `garbledFrom` on (0 for the first), if given, it answers 200 with a body that is not the
/// sync's answer (as a confused proxy might). Records what it was sent.
final class FakeSyncServer: @unchecked Sendable {
    private let takesGzip: Bool
    private let garbledFrom: Int?
    struct Seen: Equatable { var encoding: String?; var body: [UInt8] }
    private let listener: Int32
    let port: Int
    private let seen = Mutex<[Seen]>([])
    private let done = DispatchSemaphore(value: 0)
    var requests: [Seen] { seen.withLock { $0 } }

    init(takesGzip: Bool, garbledFrom: Int? = nil) throws {
        self.takesGzip = takesGzip
        self.garbledFrom = garbledFrom
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else {
            close(fd)
            throw SocketError(description: "fake server: cannot listen")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread.detachNewThread { [self] in serve() }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func serve() {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            Thread.detachNewThread { [self] in handle(fd) }
        }
    }

    private func handle(_ fd: Int32) {
        defer { close(fd) }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        func fill() -> Bool {
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { return false }
            buffer += chunk[..<n]
            return true
        }
        while true {
            var headerEnd: Int?
            while headerEnd == nil {
                if let r = buffer.firstRange(of: [13, 10, 13, 10]) { headerEnd = r.upperBound } else if !fill() { return }
            }
            let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self).lowercased()
            func header(_ name: String) -> String? {
                head.split(separator: "\r\n").first { $0.hasPrefix(name + ":") }.map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
            }
            let length = Int(header("content-length") ?? "0") ?? 0
            while buffer.count < headerEnd! + length { if !fill() { return } }
            let body = Array(buffer[headerEnd!..<headerEnd! + length])
            buffer.removeFirst(headerEnd! + length)
            let encoding = header("content-encoding")
            let index = seen.withLock { $0.append(Seen(encoding: encoding, body: body)); return $0.count - 1 }
            let (status, json) = garbledFrom.map({ index >= $0 }) == true
                ? ("200 OK", "<html>welcome</html>")
                : encoding == nil || takesGzip
                ? ("200 OK", #"{"revision":7,"upserted":13,"deleted":0}"#)
                : ("415 Unsupported Media Type", "no content codings here")
            let response = Array("HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n\r\n\(json)".utf8)
            guard response.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == response.count else { return }
        }
    }
}
