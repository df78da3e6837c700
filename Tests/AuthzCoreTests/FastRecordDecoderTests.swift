import AuthzCore
@testable import AuthzData
import AuthzPolicy
import AuthzWorkload
import Foundation
import Testing

/// `FastRecordDecoder` held against the reference decoder (`RecordCodec.foundationDecode`:
/// JSONSerialization, then `RecordReader`). Wherever the fast path returns a record, the
/// reference must return the same record, byte for byte; wherever it gives up, `RecordCodec`
/// must still answer what the reference answers, record or error. Inputs: every line of a
/// generated corpus (which the fast path must decode itself), hand-written edge cases, and
/// seeded random mutations of valid lines.
@Suite struct FastRecordDecoderTests {
    /// What a decoder made of a line: the record and its canonical encoding (so that strings
    /// are compared byte for byte, not by canonical equivalence as `String ==` does), or the error.
    enum Outcome: Equatable, CustomStringConvertible {
        case record(Record, [UInt8])
        case error(DataError)

        init(_ record: Record) { self = .record(record, Array(RecordCodec.encode(record).utf8)) }

        var description: String {
            switch self {
            case .record(_, let line): "record \(String(decoding: line, as: UTF8.self))"
            case .error(let error): "error \(error)"
            }
        }
    }

    static func reference(_ line: [UInt8]) -> Outcome {
        do { return Outcome(try RecordCodec.foundationDecode(line: Data(line), number: 3)) } catch { return .error(error) }
    }

    static func fast(_ line: [UInt8]) -> Record? {
        var decoder = FastRecordDecoder()
        return line.withUnsafeBytes { decoder.decode($0) }
    }

    static func decode(_ line: [UInt8]) -> Outcome {
        do { return Outcome(try RecordCodec.decode(line: Data(line), number: 3)) } catch { return .error(error) }
    }

    static func show(_ line: [UInt8]) -> String {
        String(bytes: line, encoding: .utf8)?.debugDescription ?? line.map { String($0, radix: 16) }.joined(separator: " ")
    }

    /// Checks one line against the reference: nil if it agrees (and whether the fast path
    /// decoded it), else what went wrong.
    static func disagreement(_ line: [UInt8]) -> (handled: Bool, problem: String?) {
        let expected = reference(line)
        var fastOutcome: Outcome?
        if let record = fast(line) {
            fastOutcome = Outcome(record)
            if fastOutcome != expected {
                return (true, "\(show(line)): the fast path gave \(fastOutcome!), the reference \(expected)")
            }
        }
        let outcome = decode(line)
        if outcome != expected { return (fastOutcome != nil, "\(show(line)): RecordCodec.decode gave \(outcome), the reference \(expected)") }
        return (fastOutcome != nil, nil)
    }

    static let corpusLines: [[UInt8]] = {
        let policy = try! DifferentialTests.loadPolicy()
        let corpus = Corpus(memberships: 3_000, seed: 42, policy: policy)
        var records = corpus.records
        // A delete of every kind, and the awkward records of the codec tests (escapes, Unicode,
        // extreme timestamps).
        for r in corpus.records.prefix(50) + corpus.records.suffix(300) { records.append(.delete(r.key)) }
        records += RecordCodecTests.records
        return RecordCodec.encodeLines(records).split(separator: "\n").map { Array($0.utf8) }
    }()

    // MARK: Valid lines take the fast path

    @Test func theFastPathDecodesEveryCorpusLineAsTheReferenceDoes() {
        var problems: [String] = []
        var fallbacks: [String] = []
        for line in Self.corpusLines {
            let (handled, problem) = Self.disagreement(line)
            if let problem { problems.append(problem) }
            if !handled { fallbacks.append(Self.show(line)) }
        }
        #expect(Self.corpusLines.count > 6_000)
        #expect(problems.isEmpty, "\(problems.count) disagreements")
        for p in problems.prefix(10) { Issue.record(Comment(rawValue: p)) }
        #expect(fallbacks.isEmpty, "the fast path gave up on \(fallbacks.count) valid lines, first: \(fallbacks.prefix(3))")
    }

    @Test func decodeLinesOfTheCorpusIsTheReferenceLineByLine() {
        let text = Self.corpusLines.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n")
        let (records, errors) = RecordCodec.decodeLines(text)
        #expect(errors.isEmpty)
        #expect(records.map(\.line) == Array(1...Self.corpusLines.count))
        #expect(records.map { Outcome($0.record) } == Self.corpusLines.map(Self.reference))
    }

    /// Lines the fast path must decode itself (and the same as the reference).
    static let plainLines: [String] = [
        #"{"kind":"user","id":"\u0041\u00e9\u00C9\u4e2d\ud83d\ude00\uFEFF","email":"a\"b\\c\/d\b\f\n\r\t@x"}"#,
        #"{"kind":"user","id":"\u0000","email":"\u001f\u007f"}"#,
        "{\"kind\":\"user\",\"id\":\"é中😀\u{7F}\u{FFFE}\u{10FFFF}\",\"email\":\"e\u{301}\"}",
        " \t\r{ \t\r\"kind\" \r\t: \"member\" , \"org\":\"a\",\"user\" :\"u\", \"role\":\"member\",\"assignments\" : [ \"x\" , \"y\" ] } \t\r",
        #"{"kind":"member","org":"a","user":"u","role":"member","assignments":[ ]}"#,
        #"{"kind":"member","org":"a","user":"u","role":"member","assignments":null,"op":null}"#,
        #"{"role":"member","user":"u","org":"a","kind":"member","op":"upsert"}"#,
        #"{"kind":"user","id":"u","email":null,"email_verified":null}"#,
        #"{"kind":"user","id":"u","email":"","email_verified":true}"#,
        #"{"kind":"org","id":"o","personal":true,"suspended":false,"suspended_until":"2027-01-01T02:00:00.25+02:00"}"#,
        #"{"kind":"org","id":"o","personal":null,"suspended":null,"suspended_until":null}"#,
        #"{"kind":"role","org":"a","id":"r","permissions":[]}"#,
        #"{"kind":"api_key","id":"k","org":"a","user":"u","expires_at":"2027-01-01t00:00:00z"}"#,
        #"{"kind":"invitation","id":"i","org":"a","email":"e","role":"r","status":"s","assignments":["\u00e9"]}"#,
        #"{"kind":"org","op":"delete","id":"o"}"#,
        #"{"kind":"member","op":"delete","user":"u","org":"a"}"#,
        #"{"kind":"role","op":"delete","org":"a","id":"r"}"#,
        #"{"kind":"api_key","op":"delete","id":"k"}"#,
        #"{"kind":"invitation","op":"delete","id":"i"}"#,
        #"{"kind":"user","op":"delete","id":"u"}"#,
        #"{"kind":"user","id":""}"#,
        // U+FEFF written as bytes: starting a string, after an escape, in an array, twice, alone.
        "{\"kind\":\"member\",\"org\":\"\u{FEFF}a\",\"user\":\"\\n\u{FEFF}u\",\"role\":\"\u{FEFF}\",\"assignments\":[\"\u{FEFF}\u{FEFF}x\"]}",
    ]

    @Test(arguments: plainLines)
    func theFastPathDecodesPlainLines(line: String) {
        let (handled, problem) = Self.disagreement(Array(line.utf8))
        #expect(problem == nil, "\(problem ?? "")")
        #expect(handled, "the fast path gave up")
    }

    // MARK: Edge cases

    /// Lines the fast path may give up on; whatever happens, `RecordCodec.decode` must answer as
    /// the reference does. Strings are UTF-8 text; `bytes` adds raw, possibly invalid, bytes.
    static let edgeLines: [[UInt8]] = {
        func b(_ s: String) -> [UInt8] { Array(s.utf8) }
        let user = b(#"{"kind":"user","id":""#), end = b(#""}"#)
        var lines: [[UInt8]] = [
            // Duplicate keys: an error (Foundation keeps the last), also spelled with escapes.
            b(#"{"kind":"org","id":"a","id":"b"}"#), b(#"{"kind":"org","kind":"user","id":"a"}"#),
            b(#"{"kind":"org","id":"a","personal":true,"personal":false}"#), b(#"{"kind":"org","id":"a","\u0069d":"b"}"#),
            // Trailing commas: Foundation accepts them.
            b(#"{"kind":"org","id":"a",}"#), b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":["x",]}"#),
            b(#"{"kind":"org","id":"a",,}"#), b(#"{,"kind":"org","id":"a"}"#), b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":[,]}"#),
            // Numbers, objects and arrays where strings or booleans are expected.
            b(#"{"kind":"org","id":1}"#), b(#"{"kind":"org","id":"a","personal":1}"#), b(#"{"kind":"org","id":"a","personal":0}"#),
            b(#"{"kind":"org","id":-1.5e3}"#), b(#"{"kind":"org","id":01}"#), b(#"{"kind":1}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":[1]}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":["x",null]}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":[["x"]]}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":[{}]}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":"x"}"#),
            b(#"{"kind":"member","org":"a","user":"u","role":["r"]}"#),
            b(#"{"kind":"user","id":"u","email":{}}"#), b(#"{"kind":"user","id":"u","email":{"a":"b"}}"#),
            b(#"{"kind":"user","id":"u","email_verified":"true"}"#), b(#"{"kind":"user","id":null}"#),
            b(#"{"kind":"role","org":"a","id":"r","permissions":null}"#), b(#"{"kind":"role","org":"a","id":"r"}"#),
            b(#"{"kind":"api_key","id":"k","org":"a","user":"u","expires_at":"2027-02-30T00:00:00Z"}"#),
            b(#"{"kind":"api_key","id":"k","org":"a","user":"u","expires_at":true}"#),
            b(#"{"kind":"org","id":"a","suspended_until":"0000-01-01T00:30:00+01:00"}"#),
            // Trailing garbage, top-level non-objects, empty objects.
            b(#"{"kind":"org","id":"a"}x"#), b(#"{"kind":"org","id":"a"}}"#), b(#"{"kind":"org","id":"a"} {}"#),
            b(#"{"kind":"org","id":"a"}   ,"#), b("{}"), b("[]"), b(#""org""#), b("null"), b("true"), b("1"), b(""), b("   "),
            b(#"["kind","org"]"#), b(#"{"kind":"org","id":"a"]"#), b(#"{"kind":"org" "id":"a"}"#), b(#"{"kind" "org","id":"a"}"#),
            b(#"{"kind":"org";"id":"a"}"#), b(#"{kind:"org","id":"a"}"#), b(#"{'kind':'org','id':'a'}"#),
            // Literals.
            b(#"{"kind":"org","id":"a","personal":tru}"#), b(#"{"kind":"org","id":"a","personal":True}"#),
            b(#"{"kind":"org","id":"a","personal":falsey}"#), b(#"{"kind":"org","id":"a","personal":nul}"#),
            b(#"{"kind":"org","id":"a","personal":true"suspended":true}"#), b(#"{"kind":"org","id":"a","personal":truefalse}"#),
            // Kinds, ops, unknown fields.
            b(#"{"kind":"team","id":"a"}"#), b(#"{"kind":"ORG","id":"a"}"#), b(#"{"kind":"org ","id":"a"}"#),
            b(#"{"kind":"\u006frg","id":"a"}"#), b(#"{"\u006bind":"org","id":"a"}"#), b("{\"kind\":\"org\u{301}\",\"id\":\"a\"}"),
            b(#"{"kind":null,"id":"a"}"#), b(#"{"id":"a"}"#), b(#"{"kind":"org"}"#), b(#"{"kind":"member","org":"a","user":"u"}"#),
            b(#"{"kind":"org","op":"remove","id":"a"}"#), b(#"{"kind":"org","op":"DELETE","id":"a"}"#),
            b(#"{"kind":"org","op":true,"id":"a"}"#), b(#"{"kind":"org","op":"\u0064elete","id":"a"}"#),
            b(#"{"kind":"org","op":"delete","id":"a","personal":true}"#), b(#"{"kind":"org","op":"delete"}"#),
            b(#"{"kind":"member","op":"delete","org":"a","user":"u","role":null}"#),
            b(#"{"kind":"user","id":"u","emial":"a@x.io"}"#), b(#"{"kind":"org","id":"a","owner":null}"#),
            b(#"{"kind":"org","id":"a","zeta":1,"alpha":2}"#), b(#"{"kind":"org","id":"a","":"x"}"#),
            b(#"{"kind":"org","id":"a","Kind":"org"}"#), b(#"{"kind":"org","id":"a","kinds":"x"}"#),
            b(#"{"kind":"org","id":"a","email":"x"}"#), b(#"{"kind":"org","user":"a"}"#),
            // Escapes: unknown ones, short or bad \u, lone and broken surrogates.
            b(#"{"kind":"org","id":"\x"}"#), b(#"{"kind":"org","id":"\'"}"#), b(#"{"kind":"org","id":"\U0041"}"#),
            b(#"{"kind":"org","id":"\u12"}"#), b(#"{"kind":"org","id":"\u12G4"}"#), b(#"{"kind":"org","id":"\u"}"#),
            b(#"{"kind":"org","id":"\"#), b(#"{"kind":"org","id":"\ud800"}"#), b(#"{"kind":"org","id":"\udc00"}"#),
            b(#"{"kind":"org","id":"\ud800\u0041"}"#), b(#"{"kind":"org","id":"\ud800x"}"#), b(#"{"kind":"org","id":"\ud800\"}"#),
            b(#"{"kind":"org","id":"\ud800\ud800"}"#), b(#"{"kind":"org","id":"\udbff\udfff"}"#), b(#"{"kind":"org","id":"\ud800\udc0"}"#),
            b(#"{"kind":"org","id":"a\\"}"#), b(#"{"kind":"org","id":"a\\\"}"#),
            // Whitespace JSON does not have: form feed, vertical tab, NBSP, U+2028.
            b("{\u{0C}\"kind\":\"org\",\"id\":\"a\"}"), b("{\"kind\":\u{0B}\"org\",\"id\":\"a\"}"),
            b("{\"kind\":\u{A0}\"org\",\"id\":\"a\"}"), b("{\"kind\":\"org\",\"id\":\"a\"}\u{2028}"),
            // Raw control characters inside strings.
            b("{\"kind\":\"org\",\"id\":\"a\tb\"}"), b("{\"kind\":\"org\",\"id\":\"a\u{1F}\"}"), b("{\"kind\":\"org\",\"id\":\"a\rb\"}"),
            // Depth.
            b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":"# + String(repeating: "[", count: 600) + "}"),
        ]
        // A byte order mark: before the line, at the start of a string, after an escape, inside one.
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        lines += [bom + b(#"{"kind":"org","id":"a"}"#), user + bom + b("u") + end, user + b(#"\n"#) + bom + b("u") + end,
                  user + b("u") + bom + b("u") + end, user + bom + end, b(#"{"kind":"org","#) + bom + b(#""id":"a"}"#)]
        // Bytes that are not UTF-8, or not well-formed: lone and truncated sequences, overlong
        // forms, surrogates, beyond U+10FFFF; and the edges of what is valid.
        let sequences: [[UInt8]] = [
            [0x80], [0xBF], [0xC0, 0xAF], [0xC1, 0xBF], [0xC2], [0xC3, 0x28], [0xC2, 0x80], [0xDF, 0xBF],
            [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xE0, 0xA0, 0x80], [0xE1, 0x80], [0xED, 0x9F, 0xBF], [0xED, 0xA0, 0x80],
            [0xED, 0xBF, 0xBF], [0xEE, 0x80, 0x80], [0xEF, 0xBF, 0xBF], [0xEF, 0xBB], [0xF0, 0x8F, 0xBF, 0xBF],
            [0xF0, 0x90, 0x80, 0x80], [0xF0, 0x90, 0x80], [0xF3, 0xBF, 0xBF, 0xBF], [0xF4, 0x8F, 0xBF, 0xBF],
            [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xFE], [0xFF],
            [0xE2, 0x82, 0xAC, 0x80], [0xC3, 0xA9, 0xA9],
        ]
        for s in sequences {
            lines.append(user + s + end)
            lines.append(user + b("a") + s + b("b") + end)
            lines.append(user + b(#"\t"#) + s + end)
            lines.append(b(#"{"kind":"member","org":"a","user":"u","role":"r","assignments":[""#) + s + b(#""]}"#))
            lines.append(b(#"{"kind":"org","id":"a""#) + s + b("}"))
            lines.append(b(#"{"kind":"org","#) + b("\"") + s + b(#"":"a","id":"a"}"#))
        }
        // Each byte that needs a look, at every place of an 8-byte word (the scanner skips plain
        // bytes eight at a time).
        for special in [b(#"\""#), b(#"\\"#), b(#"\n"#), b(#"\u00e9"#), [0x1F], [0x00], [0x7F], b("é"), [0x80], [0xFF], bom, b("\"")] {
            for offset in 0..<17 {
                lines.append(user + Array(repeating: UInt8(ascii: "a"), count: offset) + special
                    + Array(repeating: UInt8(ascii: "b"), count: 17 - offset) + end)
            }
        }
        // Every prefix of a few valid lines: truncated input.
        for line in [
            #"{"kind":"invitation","id":"i","org":"a","email":"e\u00e9\ud83d\ude00","role":"r","assignments":["x","y"],"status":"s","expires_at":null}"#,
            #" { "kind" : "org" , "op" : "delete" , "id" : "a" } "#,
            #"{"kind":"org","id":"a","personal":true,"suspended":false}"#,
        ] {
            let bytes = b(line)
            for n in 0...bytes.count { lines.append(Array(bytes.prefix(n))) }
        }
        return lines
    }()

    @Test func edgeCasesAgreeWithTheReference() {
        var problems: [String] = []
        for line in Self.edgeLines {
            if let problem = Self.disagreement(line).problem { problems.append(problem) }
        }
        #expect(problems.isEmpty, "\(problems.count) disagreements")
        for p in problems.prefix(20) { Issue.record(Comment(rawValue: p)) }
    }

    @Test func givesUpOnDuplicateKeysAndWhatFoundationReadsItsOwnWay() {
        for line in [
            #"{"kind":"org","id":"a","id":"b"}"#, // duplicate keys: the reference's error
            #"{"kind":"org","id":"a",}"#, // trailing comma
        ] {
            #expect(Self.fast(Array(line.utf8)) == nil, "\(line)")
            #expect(Self.disagreement(Array(line.utf8)).problem == nil)
        }
    }

    /// A U+FEFF written as bytes is kept, as the escaped one is, on both paths (Foundation
    /// dropped it where it started a run of a string's unescaped characters: "\xEF\xBB\xBFbob"
    /// was `bob`).
    @Test func aByteOrderMarkInAStringIsKeptAsSent() throws {
        let raw = "{\"kind\":\"member\",\"org\":\"acme\",\"user\":\"\u{FEFF}bob\",\"role\":\"member\"}"
        let escaped = #"{"kind":"member","org":"acme","user":"\ufeffbob","role":"member"}"#
        // An escaped key: the fast path gives up, the reference decides.
        let fallback = "{\"\\u006bind\":\"member\",\"org\":\"acme\",\"user\":\"\\t\u{FEFF}bob\",\"role\":\"member\"}"
        #expect(Self.fast(Array(fallback.utf8)) == nil)
        for line in [raw, escaped] {
            let outcome = Self.reference(Array(line.utf8))
            guard case .record(.member(let m), _) = outcome else { Issue.record("\(line): \(outcome)"); continue }
            #expect(Array(m.user.utf8) == [0xEF, 0xBB, 0xBF] + Array("bob".utf8), "\(line)")
            #expect(Self.disagreement(Array(line.utf8)).problem == nil)
        }
        guard case .record(.member(let m), _) = Self.reference(Array(fallback.utf8)) else { Issue.record("not a member"); return }
        #expect(Array(m.user.utf8) == [0x09, 0xEF, 0xBB, 0xBF] + Array("bob".utf8))
        // In a key it is part of the key, which is then no field.
        let key = "{\"kind\":\"org\",\"\u{FEFF}id\":\"a\",\"id\":\"b\"}"
        #expect(Self.decode(Array(key.utf8)) == .error(DataError(line: 3, field: "\u{FEFF}id", message: "unknown field `\u{FEFF}id` for kind `org`")))
        // Malformed JSON is reported at its place in the line as sent: as where three other
        // bytes stand for the U+FEFF.
        let broken = Self.decode(Array("{\"kind\":\"org\",\"id\":\"\u{FEFF}a\" x}".utf8))
        #expect(broken == Self.decode(Array(#"{"kind":"org","id":"abca" x}"#.utf8)))
        #expect("\(broken)".contains("character 26"), "\(broken)")
    }

    // MARK: Random mutations

    static let interestingBytes: [UInt8] = Array(#"{}[]:,"\ /bfnrtu0189aAeEfF+-.xkind"#.utf8)
        + [0x00, 0x09, 0x0A, 0x0D, 0x1F, 0x7F, 0x80, 0xA9, 0xBB, 0xBF, 0xC3, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xFF]
    static let snippets: [String] = [
        #"\u00e9"#, #"\ud83d\ude00"#, #"\ud800"#, #"\udc00"#, #"\""#, #"\\"#, #"\/"#, #"\n"#, #"\u0000"#, "null", "true",
        "false", "1", "-0.5", "{}", "[]", #"[""]"#, #","kind":"org""#, #","id":"x""#, #","op":"delete""#, #","op":null"#,
        #","email":null"#, #","assignments":[]"#, #","permissions":["a"]"#, #","expires_at":"2027-01-01T00:00:00Z""#,
        #","personal":true"#, " ", "\t", "\r", ",", "\"", "é", "😀", "\u{FEFF}", "\u{301}",
    ]

    /// A few random edits of `line`: bytes deleted, inserted, replaced, snippets inserted,
    /// slices duplicated.
    static func mutate(_ line: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var out = line
        for _ in 0..<1 + rng.below(3) {
            let at = rng.below(out.count + 1)
            switch rng.below(6) {
            case 0 where !out.isEmpty: out.remove(at: min(at, out.count - 1))
            case 1: out.insert(rng.pick(interestingBytes), at: at)
            case 2 where !out.isEmpty: out[min(at, out.count - 1)] = rng.pick(interestingBytes)
            case 3: out.insert(contentsOf: Array(rng.pick(snippets).utf8), at: at)
            case 4 where at < out.count:
                let end = min(out.count, at + 1 + rng.below(12))
                out.insert(contentsOf: out[at..<end], at: rng.below(out.count + 1))
            default: out.insert(contentsOf: Array(rng.pick(snippets).utf8), at: at)
            }
        }
        return out
    }

    @Test func randomMutationsOfValidLinesAgreeWithTheReference() {
        var rng = SplitMix64(seed: 0x5EED_DEC0DE)
        let bases = Self.corpusLines.filter { _ in rng.chance(0.2) } + Self.plainLines.map { Array($0.utf8) }
        var problems: [String] = []
        var handled = 0, gaveUp = 0, valid = 0
        let count = 20_000
        for _ in 0..<count {
            let line = Self.mutate(rng.pick(bases), &rng)
            let result = Self.disagreement(line)
            if let problem = result.problem { problems.append(problem) }
            if result.handled { handled += 1 } else { gaveUp += 1 }
            if case .record = Self.reference(line) { valid += 1 }
        }
        #expect(problems.isEmpty, "\(problems.count) disagreements of \(count)")
        for p in problems.prefix(20) { Issue.record(Comment(rawValue: p)) }
        // The mutations must exercise both outcomes, or the test could not fail.
        #expect(handled > count / 20, "fast path decoded \(handled), valid \(valid)")
        #expect(gaveUp > count / 4, "fast path gave up on \(gaveUp)")
    }

    /// Errors in both halves of a parallel decode: records still in line order, each error
    /// reported, as line by line with the reference.
    @Test func decodeLinesWithErrorsInEveryChunkIsTheReferenceLineByLine() {
        var rng = SplitMix64(seed: 2027)
        var lines: [[UInt8]] = []
        while lines.count < 50_000 {
            let line = rng.pick(Self.corpusLines)
            lines.append(rng.chance(0.001) ? Array(#"{"kind":"org","id":7}"#.utf8) : line)
        }
        let data = Data(lines.joined(separator: [0x0A]))
        let (records, errors) = RecordCodec.decodeLines(data)
        var expectedRecords: [LocatedRecord] = []
        var expectedErrors: [DataError] = []
        for (i, line) in lines.enumerated() {
            do {
                expectedRecords.append(LocatedRecord(line: i + 1, record: try RecordCodec.foundationDecode(line: Data(line), number: i + 1)))
            } catch {
                expectedErrors.append(error)
            }
        }
        #expect(expectedErrors.count > 10 && expectedErrors.count < RecordCodec.maxErrors)
        #expect(expectedErrors.first!.line < 25_000 && expectedErrors.last!.line > 25_000)
        #expect(errors == expectedErrors)
        #expect(records == expectedRecords)
    }

    /// `checkLines` (records checked a window at a time, then dropped) reports what
    /// `decodeLines` does: the same errors in the same order, across windows and both halves
    /// of a parallel check, capped at `maxErrors` as it is; and the count of valid records.
    @Test func checkLinesReportsWhatDecodeLinesDoes() {
        for errorRate in [0.0, 0.001, 0.01] {
            var rng = SplitMix64(seed: 2028)
            var lines: [[UInt8]] = []
            while lines.count < 60_000 {
                let line = rng.pick(Self.corpusLines)
                lines.append(rng.chance(errorRate) ? Array(#"{"kind":"member","org":"acme"}"#.utf8) : line)
            }
            // Blank lines are skipped but counted in line numbers.
            lines.insert([], at: 30_001)
            let data = Data(lines.joined(separator: [0x0A]))
            let decoded = RecordCodec.decodeLines(data)
            let checked = RecordCodec.checkLines(data)
            #expect(checked.errors == decoded.errors, "error rate \(errorRate)")
            switch errorRate {
            case 0:
                #expect(checked.errors.isEmpty && checked.count == 60_000)
            case 0.001:
                // Errors on both sides of the split, in more than one window, under the cap.
                #expect(checked.errors.count > 20 && checked.errors.count < RecordCodec.maxErrors)
                #expect(checked.errors.first!.line < 8_192 && checked.errors.last!.line > 30_000)
                #expect(checked.count == decoded.records.count)
            default:
                #expect(checked.errors.count == RecordCodec.maxErrors)
            }
        }
    }

    // MARK: Field names

    @Test func fieldNamesAreTheRecordFields() {
        let names = FastRecordDecoder.Field.allCases.map { $0.name.description }
        #expect(Set(names) == Set(["kind", "op"] + RecordKind.allCases.flatMap(\.fields)))
        #expect(Set(names).count == names.count)
        for field in FastRecordDecoder.Field.allCases {
            let found = Array(field.name.description.utf8).withUnsafeBufferPointer { FastRecordDecoder.Field.named($0) }
            #expect(found == field)
        }
        for other in ["", "Kind", "kinds", "kin", "idx", "i", "emails", "email_verifie", "suspended_untill", "statu", "rolE"] {
            #expect(Array(other.utf8).withUnsafeBufferPointer { FastRecordDecoder.Field.named($0) } == nil, "\(other)")
        }
    }
}

/// Large inputs are decoded on several threads (`RecordCodec.onThreads`): every part runs
/// exactly once, the closure never outlives the call (it did once, and the runtime trapped:
/// a thread kept the closure alive past `withoutActuallyEscaping`), and records come back in
/// line order.
@Suite struct ParallelDecodeTests {
    @Test func everyPartRunsOnceAndTheCallWaitsForAll() {
        for round in 0..<300 {
            let count = 2 + round % 4
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: count)
            hits.initialize(repeating: 0, count: count)
            defer { hits.deallocate() }
            let label = "round \(round)"   // captured: the closure is a real context, not a bare function
            RecordCodec.onThreads(count) { i in
                if !label.isEmpty { hits[i] += 1 }
            }
            #expect((0..<count).map { hits[$0] } == Array(repeating: 1, count: count))
        }
    }

    @Test func largeInputsDecodeInLineOrderOnEveryRun() {
        let lines = (0..<45_000).map { #"{"kind":"org","id":"o\#($0)"}"# }
        let data = Data((lines.joined(separator: "\n") + "\n").utf8)
        for _ in 0..<20 {
            let decoded = RecordCodec.decodeLines(data)
            #expect(decoded.errors.isEmpty)
            #expect(decoded.records.count == 45_000)
            #expect(decoded.records.first?.line == 1 && decoded.records.last?.line == 45_000)
            if case .org(let o) = decoded.records[30_000].record { #expect(o.id == "o30000") } else { Issue.record("not an org") }
        }
    }
}
