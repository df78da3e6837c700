import AuthzCore
import AuthzData
import Foundation
import Testing

private let t2027 = Timestamp(rfc3339: "2027-01-01T00:00:00Z")!

@Suite struct RecordCodecTests {
    // MARK: Decoding each kind

    static let decodedLines: [(String, Record)] = [
        (#"{"kind":"org","id":"acme","personal":false,"suspended":true,"suspended_until":"2027-01-01T00:00:00Z"}"#,
         .org(.init(id: "acme", personal: false, suspended: true, suspendedUntil: t2027))),
        (#"{"kind":"org","id":"solo","personal":true}"#,
         .org(.init(id: "solo", personal: true, suspended: false, suspendedUntil: nil))),
        (#"{"kind":"user","id":"u1","email":"a@x.io","email_verified":true}"#,
         .user(.init(id: "u1", email: "a@x.io", emailVerified: true))),
        (#"{"kind":"user","id":"u2","email":null}"#,
         .user(.init(id: "u2", email: nil, emailVerified: false))),
        (#"{"kind":"user","id":"u3"}"#,
         .user(.init(id: "u3", email: nil, emailVerified: false))),
        (#"{"kind":"member","org":"acme","user":"u1","role":"member","assignments":["developer","ci-bot"]}"#,
         .member(.init(org: "acme", user: "u1", role: "member", assignments: ["developer", "ci-bot"]))),
        (#"{"kind":"member","op":"upsert","org":"acme","user":"u1","role":"owner"}"#,
         .member(.init(org: "acme", user: "u1", role: "owner", assignments: []))),
        (#"{"kind":"member","org":"acme","user":"u1","role":"owner","assignments":null}"#,
         .member(.init(org: "acme", user: "u1", role: "owner", assignments: []))),
        (#"{"kind":"role","org":"acme","id":"ci-bot","permissions":["write:sandboxes"]}"#,
         .role(.init(org: "acme", id: "ci-bot", permissions: ["write:sandboxes"]))),
        (#"{"kind":"api_key","id":"k1","org":"acme","user":"u1","permissions":["write:sandboxes"],"expires_at":"2027-01-01T00:00:00Z"}"#,
         .apiKey(.init(id: "k1", org: "acme", user: "u1", permissions: ["write:sandboxes"], expiresAt: t2027))),
        (#"{"kind":"api_key","id":"k2","org":"acme","user":"u1","expires_at":null}"#,
         .apiKey(.init(id: "k2", org: "acme", user: "u1", permissions: [], expiresAt: nil))),
        (#"{"kind":"invitation","id":"inv1","org":"acme","email":"b@x.io","role":"member","assignments":["developer"],"status":"pending","expires_at":"2027-01-01T00:00:00Z"}"#,
         .invitation(.init(id: "inv1", org: "acme", email: "b@x.io", role: "member", assignments: ["developer"],
                           status: "pending", expiresAt: t2027))),
        (#"{"kind":"invitation","id":"inv2","org":"acme","email":"b@x.io","role":"owner","status":"accepted"}"#,
         .invitation(.init(id: "inv2", org: "acme", email: "b@x.io", role: "owner", assignments: [],
                           status: "accepted", expiresAt: nil))),
        (#"  { "id" : "acme" , "kind" : "org" }  "#, .org(.init(id: "acme"))),
    ]

    @Test(arguments: decodedLines)
    func decodesEachKind(line: String, expected: Record) throws {
        #expect(try RecordCodec.decode(line: line, number: 1) == expected)
    }

    static let deleteLines: [(String, RecordKey)] = [
        (#"{"kind":"org","op":"delete","id":"acme"}"#, .org("acme")),
        (#"{"kind":"user","op":"delete","id":"u1"}"#, .user("u1")),
        (#"{"kind":"member","op":"delete","org":"acme","user":"u1"}"#, .member(org: "acme", user: "u1")),
        (#"{"kind":"role","op":"delete","org":"acme","id":"ci-bot"}"#, .role(org: "acme", id: "ci-bot")),
        (#"{"kind":"api_key","op":"delete","id":"k1"}"#, .apiKey("k1")),
        (#"{"kind":"invitation","op":"delete","id":"inv1"}"#, .invitation("inv1")),
    ]

    @Test(arguments: deleteLines)
    func decodesDeletes(line: String, key: RecordKey) throws {
        #expect(try RecordCodec.decode(line: line, number: 1) == .delete(key))
    }

    @Test func timestampsWithOffsetsAndFractionsAreInstants() throws {
        let r = try RecordCodec.decode(
            line: #"{"kind":"api_key","id":"k1","org":"acme","user":"u1","expires_at":"2027-01-01T02:00:00.25+02:00"}"#, number: 1)
        guard case .apiKey(let key) = r else { Issue.record("not an api key: \(r)"); return }
        #expect(key.expiresAt == Timestamp(seconds: t2027.seconds, nanoseconds: 250_000_000))
    }

    // MARK: Errors

    /// A bad line, the field the error must name, and a part of its message.
    static let badLines: [(line: String, field: String?, message: String)] = [
        (#"{"kind":"org","id":"acme""#, nil, "malformed JSON: "),
        (#"{"kind":"org","id":acme}"#, nil, "malformed JSON: "),
        (#"not json"#, nil, "malformed JSON: "),
        (#"["org","acme"]"#, nil, "expected a JSON object, found an array"),
        (#""org""#, nil, "expected a JSON object, found a string"),
        (#"{"id":"acme"}"#, "kind", "missing required field `kind`"),
        (#"{"kind":7,"id":"acme"}"#, "kind", "expected a string"),
        (#"{"kind":"team","id":"acme"}"#, "kind",
         "unknown kind `team`; expected one of `org`, `user`, `member`, `role`, `api_key`, `invitation`"),
        (#"{"kind":"org","op":"remove","id":"acme"}"#, "op", "unknown op `remove`; expected `upsert` or `delete`"),
        (#"{"kind":"org","op":true,"id":"acme"}"#, "op", "expected a string"),
        (#"{"kind":"org"}"#, "id", "missing required field `id`"),
        (#"{"kind":"member","org":"acme","user":"u1"}"#, "role", "missing required field `role`"),
        (#"{"kind":"role","org":"acme","id":"r"}"#, "permissions", "missing required field `permissions`"),
        (#"{"kind":"role","org":"acme","id":"r","permissions":null}"#, "permissions", "expected an array of strings"),
        (#"{"kind":"invitation","id":"i","org":"acme","email":"b@x.io","role":"member"}"#, "status",
         "missing required field `status`"),
        (#"{"kind":"invitation","id":"i","org":"acme","role":"member","status":"pending"}"#, "email",
         "missing required field `email`"),
        (#"{"kind":"member","op":"delete","org":"acme"}"#, "user", "missing required field `user`"),
        (#"{"kind":"org","id":42}"#, "id", "expected a string"),
        (#"{"kind":"org","id":null}"#, "id", "expected a string"),
        (#"{"kind":"user","id":"u1","email":["a@x.io"]}"#, "email", "expected a string"),
        (#"{"kind":"org","id":"acme","personal":"yes"}"#, "personal", "expected a boolean"),
        (#"{"kind":"org","id":"acme","suspended":1}"#, "suspended", "expected a boolean"),
        (#"{"kind":"user","id":"u1","email_verified":0}"#, "email_verified", "expected a boolean"),
        (#"{"kind":"member","org":"acme","user":"u1","role":"member","assignments":"developer"}"#, "assignments",
         "expected an array of strings"),
        (#"{"kind":"member","org":"acme","user":"u1","role":"member","assignments":["developer",3]}"#, "assignments[1]",
         "expected a string"),
        (#"{"kind":"api_key","id":"k1","org":"acme","user":"u1","permissions":{"a":1}}"#, "permissions",
         "expected an array of strings"),
        (#"{"kind":"api_key","id":"k1","org":"acme","user":"u1","expires_at":"xyz"}"#, "expires_at",
         "`xyz` is not an RFC 3339 timestamp"),
        (#"{"kind":"api_key","id":"k1","org":"acme","user":"u1","expires_at":"2027-02-30T00:00:00Z"}"#, "expires_at",
         "`2027-02-30T00:00:00Z` is not an RFC 3339 timestamp"),
        (#"{"kind":"api_key","id":"k1","org":"acme","user":"u1","expires_at":1767225600}"#, "expires_at",
         "expected a string"),
        (#"{"kind":"invitation","id":"i","org":"acme","email":"b@x.io","role":"member","status":"pending","expires_at":"2027-01-01"}"#,
         "expires_at", "`2027-01-01` is not an RFC 3339 timestamp"),
        (#"{"kind":"org","id":"acme","suspended_until":"tomorrow"}"#, "suspended_until",
         "`tomorrow` is not an RFC 3339 timestamp"),
        // Outside years 0000-9999 once in UTC: RFC 3339 could not write it back.
        (#"{"kind":"org","id":"acme","suspended_until":"0000-01-01T00:30:00+01:00"}"#, "suspended_until",
         "`0000-01-01T00:30:00+01:00` is not an RFC 3339 timestamp"),
        (#"{"kind":"user","id":"u1","emial":"a@x.io"}"#, "emial", "unknown field `emial` for kind `user`; did you mean `email`?"),
        (#"{"kind":"org","id":"acme","owner":"u1"}"#, "owner", "unknown field `owner` for kind `org`"),
        // Two edits from `id`, but `x` is not a misspelt `id`.
        (#"{"kind":"org","id":"acme","x":1}"#, "x", "unknown field `x` for kind `org`"),
        (#"{"kind":"or\u0000g","id":"acme"}"#, "kind", "unknown kind `or\\u{0}g`; expected one of"),
        (#"{"kind":"org","id":"acme","zeta":1,"alpha":2}"#, "alpha", "unknown field `alpha` for kind `org`"),
        (#"{"kind":"member","op":"delete","org":"acme","user":"u1","role":"member"}"#, "role",
         "unknown field `role` for a delete of kind `member`, which names only `org`, `user`"),
        // A field given twice, however spelled, before anything else is read (the last one won).
        (#"{"kind":"member","org":"acme","user":"bob","role":"member","op":"delete","op":"upsert"}"#, "op",
         "duplicate field `op`; each field may appear only once"),
        (#"{"kind":"member","org":"acme","user":"bob","role":"member","assignments":["super_admin"],"assignments":[]}"#,
         "assignments", "duplicate field `assignments`"),
        (#"{"kind":"org","id":"a", "id" : "b"}"#, "id", "duplicate field `id`"),
        (#"{"kind":"org","id":"a","zeta":1,"alpha":2,"zeta":3}"#, "zeta", "duplicate field `zeta`"),
        (#"{"kind":"team","kind":"org","id":"a","id":"b"}"#, "kind", "duplicate field `kind`"),
        // Keys of a nested object are not the line's fields.
        (#"{"kind":"user","id":"u1","email":{"a":1,"a":2}}"#, "email", "expected a string"),
    ]

    @Test(arguments: badLines)
    func reportsTheLineAndField(line: String, field: String?, message: String) {
        do {
            let record = try RecordCodec.decode(line: line, number: 7)
            Issue.record("decoded \(record)")
        } catch {
            #expect(error.line == 7)
            #expect(error.field == field)
            #expect(error.message.hasPrefix(message), "\(error.message)")
            #expect(!error.message.hasSuffix("."))
        }
    }

    @Test func unknownFieldWithoutACloseMatchSuggestsNothing() {
        do {
            _ = try RecordCodec.decode(line: #"{"kind":"org","id":"acme","owner":"u1"}"#, number: 1)
            Issue.record("decoded")
        } catch {
            #expect(error.message == "unknown field `owner` for kind `org`")
        }
    }

    @Test func malformedJSONMessageIsLowercaseWithoutFinalPeriod() {
        do {
            _ = try RecordCodec.decode(line: #"{"kind":"org","#, number: 3)
            Issue.record("decoded")
        } catch {
            #expect(error.line == 3)
            #expect(error.field == nil)
            let reason = error.message.dropFirst("malformed JSON: ".count)
            #expect(reason.first?.isLowercase == true, "\(error.message)")
            #expect(!error.message.hasSuffix("."))
            #expect(error.description.hasPrefix("line 3: malformed JSON: "))
        }
    }

    // MARK: Lines

    @Test func numbersLinesAsInTheFileSkippingBlankOnesAndCRLF() {
        let text = "\r\n"
            + #"{"kind":"org","id":"acme"}"# + "\r\n"
            + "   \t\n"
            + "\n"
            + #"{"kind":"user","id":"u1","emial":"x"}"# + "\r\n"
            + #"{"kind":"user","id":"u2"}"# // no final line break
        let (records, errors) = RecordCodec.decodeLines(text)
        #expect(records == [
            LocatedRecord(line: 2, record: .org(.init(id: "acme"))),
            LocatedRecord(line: 6, record: .user(.init(id: "u2", email: nil, emailVerified: false))),
        ])
        #expect(errors.map(\.line) == [5])
        #expect(errors.map(\.field) == ["emial"])
    }

    @Test func aCarriageReturnIsNotPartOfTheLastField() throws {
        let (records, errors) = RecordCodec.decodeLines(#"{"kind":"org","id":"acme"}"# + "\r\n")
        #expect(errors.isEmpty)
        #expect(records.map(\.record) == [.org(.init(id: "acme"))])
    }

    @Test func emptyInputHasNoRecordsAndNoErrors() {
        for text in ["", "\n", "\r\n\r\n", "  \n\t"] {
            let (records, errors) = RecordCodec.decodeLines(text)
            #expect(records.isEmpty && errors.isEmpty, "\(text.debugDescription)")
        }
    }

    @Test func decodesBytesOfASliceOfData() {
        let data = Data(("xx\n" + #"{"kind":"org","id":"acme"}"#).utf8).dropFirst(3)
        let (records, errors) = RecordCodec.decodeLines(data)
        #expect(errors.isEmpty)
        #expect(records == [LocatedRecord(line: 1, record: .org(.init(id: "acme")))])
    }

    @Test func collectsEveryErrorUpToTheCap() {
        var lines: [String] = []
        for i in 1...250 { lines.append(i % 2 == 0 ? #"{"kind":"org","id":"o\#(i)"}"# : #"{"kind":"org"}"#) }
        let (records, errors) = RecordCodec.decodeLines(lines.joined(separator: "\n"))
        #expect(errors.count == RecordCodec.maxErrors)
        #expect(errors.map(\.line) == Array(stride(from: 1, through: 199, by: 2)))
        #expect(records.count >= 99)
    }

    /// Large inputs are decoded in chunks on several threads: order, numbering and errors
    /// must come out as if decoded in one pass.
    @Test func largeInputKeepsLineOrderAndNumbers() {
        var text = ""
        let count = 60_000
        for i in 1...count {
            if i == 7 || i == 45_001 || i == 59_999 {
                text += #"{"kind":"user","id":"u\#(i)","email_verified":"no"}"# + "\n"
            } else if i % 1000 == 0 {
                text += "\n"
            } else {
                text += #"{"kind":"user","id":"u\#(i)"}"# + "\n"
            }
        }
        let (records, errors) = RecordCodec.decodeLines(text)
        #expect(errors.map(\.line) == [7, 45_001, 59_999])
        #expect(errors.allSatisfy { $0.field == "email_verified" })
        let expected = (1...count).filter { $0 % 1000 != 0 && ![7, 45_001, 59_999].contains($0) }
        #expect(records.map(\.line) == expected)
        #expect(records.allSatisfy { r in r.record == .user(.init(id: "u\(r.line)", email: nil, emailVerified: false)) })
    }

    // MARK: Encoding

    static let records: [Record] = [
        .org(.init(id: "acme")),
        .org(.init(id: "acme", personal: true, suspended: true,
                   suspendedUntil: Timestamp(rfc3339: "2027-03-04T05:06:07.123456789Z")!)),
        .user(.init(id: "u1", email: "a@x.io", emailVerified: true)),
        .user(.init(id: "u2", email: nil, emailVerified: false)),
        .user(.init(id: "ü\"\\", email: "quote\"back\\slash\nnew\tline\u{01}\u{7F}é😀@x.io", emailVerified: false)),
        .member(.init(org: "acme", user: "u1", role: "member", assignments: ["developer", "ci-bot"])),
        .member(.init(org: "acme", user: "u2", role: "owner", assignments: [])),
        .role(.init(org: "acme", id: "ci-bot", permissions: ["write:sandboxes", "read:sandboxes"])),
        .apiKey(.init(id: "k1", org: "acme", user: "u1", permissions: ["write:sandboxes"], expiresAt: t2027)),
        .apiKey(.init(id: "k2", org: "acme", user: "u1", permissions: [], expiresAt: nil)),
        .invitation(.init(id: "inv1", org: "acme", email: "b@x.io", role: "member", assignments: ["developer"],
                          status: "pending", expiresAt: Timestamp(rfc3339: "1969-12-31T23:59:59.5Z")!)),
        .invitation(.init(id: "inv2", org: "acme", email: "b@x.io", role: "owner", status: "declined")),
        .org(.init(id: "old", suspended: true, suspendedUntil: Timestamp(rfc3339: "0000-01-01T00:00:00Z")!)),
        .org(.init(id: "late", suspended: true, suspendedUntil: Timestamp(rfc3339: "9999-12-31T23:59:59.999999999Z")!)),
        .delete(.org("acme")),
        .delete(.user("u1")),
        .delete(.member(org: "acme", user: "u1")),
        .delete(.role(org: "acme", id: "ci-bot")),
        .delete(.apiKey("k1")),
        .delete(.invitation("inv1")),
    ]

    @Test(arguments: records)
    func roundTrips(record: Record) throws {
        let line = RecordCodec.encode(record)
        #expect(!line.contains("\n"))
        #expect(try RecordCodec.decode(line: line, number: 1) == record)
        // Canonical: decoding and encoding again gives the same line.
        #expect(RecordCodec.encode(try RecordCodec.decode(line: line, number: 1)) == line)
    }

    @Test func encodesInCanonicalOrderWithNulls() {
        #expect(RecordCodec.encode(.org(.init(id: "acme"))) ==
            #"{"kind":"org","id":"acme","personal":false,"suspended":false,"suspended_until":null}"#)
        #expect(RecordCodec.encode(.apiKey(.init(id: "k1", org: "acme", user: "u1", permissions: ["write:sandboxes"], expiresAt: t2027))) ==
            #"{"kind":"api_key","id":"k1","org":"acme","user":"u1","permissions":["write:sandboxes"],"expires_at":"2027-01-01T00:00:00Z"}"#)
        #expect(RecordCodec.encode(.delete(.member(org: "acme", user: "u1"))) ==
            #"{"kind":"member","op":"delete","org":"acme","user":"u1"}"#)
    }

    @Test func encodeLinesDecodesBackInOrder() {
        let (decoded, errors) = RecordCodec.decodeLines(RecordCodec.encodeLines(Self.records))
        #expect(errors.isEmpty)
        #expect(decoded.map(\.record) == Self.records)
        #expect(decoded.map(\.line) == Array(1...Self.records.count))
    }

    /// A line in UTF-16 or UTF-32 is refused (its NUL bytes), not read by Foundation, which
    /// would see through the encoding where the byte checks (a field given twice) do not.
    @Test func aLineThatIsNotUTF8TextIsRefused() {
        let line = #"{"kind":"member","org":"acme","user":"bob","role":"member","op":"delete","op":"upsert"}"#
        for encoding in [String.Encoding.utf16LittleEndian, .utf16BigEndian, .utf32BigEndian] {
            let data = Data(#"{"kind":"org","id":"acme"}"#.utf8) + Data("\n".utf8) + line.data(using: encoding)!
            let decoded = RecordCodec.decodeLines(data)
            #expect(decoded.records.count == 1, "\(encoding)")
            #expect(decoded.errors.map(\.line) == [2], "\(encoding)")
            #expect(decoded.errors.first?.message.hasPrefix("the line holds a NUL byte") == true, "\(encoding): \(decoded.errors)")
        }
    }

    /// A member or invitation in JSON Lines carries at most `Directory.maxAssignments`
    /// assignments: both decoders agree (the fast one leaves the error to the reference one).
    @Test func assignmentsAreBounded() {
        let names = (0...Directory.maxAssignments).map { "\"r\($0)\"" }
        let over = #"{"kind":"member","org":"acme","user":"u","role":"member","assignments":["# + names.joined(separator: ",") + "]}"
        let at = #"{"kind":"member","org":"acme","user":"u","role":"member","assignments":["# + names.dropLast().joined(separator: ",") + "]}"
        let decoded = RecordCodec.decodeLines(over + "\n" + at + "\n")
        #expect(decoded.errors.map { "\($0.line) \($0.field ?? "") \($0.message)" } == ["1 assignments 257 entries; at most 256 are allowed"])
        #expect(decoded.records.count == 1)
    }
}
