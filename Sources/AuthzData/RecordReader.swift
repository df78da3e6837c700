import AuthzCore
import Foundation

/// The kinds of record, and the fields each has in canonical order (the order
/// `RecordCodec.encode` writes and decoding checks).
enum RecordKind: String, CaseIterable {
    case org, user, member, role, apiKey = "api_key", invitation

    /// Every field of an upsert, besides `kind` and `op`.
    var fields: [String] {
        switch self {
        case .org: ["id", "personal", "suspended", "suspended_until"]
        case .user: ["id", "email", "email_verified"]
        case .member: ["org", "user", "role", "assignments"]
        case .role: ["org", "id", "permissions"]
        case .apiKey: ["id", "org", "user", "permissions", "expires_at"]
        case .invitation: ["id", "org", "email", "role", "assignments", "status", "expires_at"]
        }
    }

    /// The fields of a delete: the record's key.
    var keyFields: [String] {
        switch self {
        case .org, .user, .apiKey, .invitation: ["id"]
        case .member: ["org", "user"]
        case .role: ["org", "id"]
        }
    }

    /// Whether a line of this kind may have `key`. Spelled out rather than a lookup in
    /// `fields`: this runs for every field of every line, on several threads at once, and
    /// comparing with literals touches no shared reference count.
    func allows(_ key: String, isDelete: Bool) -> Bool {
        switch key {
        case "kind", "op": return true
        case "id": return self != .member
        case "org": return self == .member || self == .role || (!isDelete && (self == .apiKey || self == .invitation))
        case "user": return self == .member || (!isDelete && self == .apiKey)
        case "personal", "suspended", "suspended_until": return !isDelete && self == .org
        case "email": return !isDelete && (self == .user || self == .invitation)
        case "email_verified": return !isDelete && self == .user
        case "role": return !isDelete && (self == .member || self == .invitation)
        case "assignments": return !isDelete && (self == .member || self == .invitation)
        case "permissions": return !isDelete && (self == .role || self == .apiKey)
        case "expires_at": return !isDelete && (self == .apiKey || self == .invitation)
        case "status": return !isDelete && self == .invitation
        default: return false
        }
    }
}

/// What is wrong with one line, before the line number is known.
struct FieldError: Error {
    var field: String?
    var message: String
    init(_ field: String?, _ message: String) {
        self.field = field
        self.message = message
    }
}

/// Reads a `Record` out of one parsed JSON object, checking every field's presence and type.
/// `FastRecordDecoder.record()` mirrors these rules on the fast path: a change here is a
/// change there (FastRecordDecoderTests holds the two together).
struct RecordReader {
    let object: [String: Any]

    func record() throws(FieldError) -> Record {
        let kind = try string("kind")
        guard let recordKind = RecordKind(rawValue: kind) else {
            let kinds = RecordKind.allCases.map { "`\($0.rawValue)`" }.joined(separator: ", ")
            throw FieldError("kind", "unknown kind `\(Identifier.quotable(kind))`; expected one of \(kinds)")
        }
        var isDelete = false
        if let op = try optionalString("op") {
            switch op {
            case "upsert": isDelete = false
            case "delete": isDelete = true
            default: throw FieldError("op", "unknown op `\(op)`; expected `upsert` or `delete`")
            }
        }
        try rejectUnknownFields(kind: recordKind, isDelete: isDelete)

        if isDelete {
            switch recordKind {
            case .org: return .delete(.org(try string("id")))
            case .user: return .delete(.user(try string("id")))
            case .member: return .delete(.member(org: try string("org"), user: try string("user")))
            case .role: return .delete(.role(org: try string("org"), id: try string("id")))
            case .apiKey: return .delete(.apiKey(try string("id")))
            case .invitation: return .delete(.invitation(try string("id")))
            }
        }
        switch recordKind {
        case .org:
            return .org(.init(
                id: try string("id"), personal: try bool("personal"), suspended: try bool("suspended"),
                suspendedUntil: try timestamp("suspended_until")))
        case .user:
            return .user(.init(id: try string("id"), email: try optionalString("email"), emailVerified: try bool("email_verified")))
        case .member:
            return .member(.init(
                org: try string("org"), user: try string("user"), role: try string("role"),
                assignments: try strings("assignments", required: false, atMost: Directory.maxAssignments)))
        case .role:
            return .role(.init(org: try string("org"), id: try string("id"), permissions: try strings("permissions", required: true)))
        case .apiKey:
            return .apiKey(.init(
                id: try string("id"), org: try string("org"), user: try string("user"),
                permissions: try strings("permissions", required: false), expiresAt: try timestamp("expires_at")))
        case .invitation:
            return .invitation(.init(
                id: try string("id"), org: try string("org"), email: try string("email"), role: try string("role"),
                assignments: try strings("assignments", required: false, atMost: Directory.maxAssignments), status: try string("status"),
                expiresAt: try timestamp("expires_at")))
        }
    }

    /// Typo protection: a field the kind does not have is an error, not ignored. With several,
    /// the first in alphabetical order, so the same line always gives the same error.
    private func rejectUnknownFields(kind: RecordKind, isDelete: Bool) throws(FieldError) {
        var unknown: String? = nil
        for key in object.keys where !kind.allows(key, isDelete: isDelete) {
            if unknown.map({ key < $0 }) ?? true { unknown = key }
        }
        guard let unknown else { return }
        let allowed = isDelete ? kind.keyFields : kind.fields
        let quoted = Identifier.quotable(unknown)
        var message = isDelete
            ? "unknown field `\(quoted)` for a delete of kind `\(kind.rawValue)`, which names only \(allowed.map { "`\($0)`" }.joined(separator: ", "))"
            : "unknown field `\(quoted)` for kind `\(kind.rawValue)`"
        // A near spelling: at most 2 edits, and fewer than half the name's length (`x` is not
        // a misspelt `id`).
        if let near = allowed.first(where: { let d = editDistance($0, unknown); return d <= 2 && 2 * d < unknown.count }) {
            message += "; did you mean `\(near)`?"
        }
        throw FieldError(quoted, message)
    }

    // MARK: Fields

    private func string(_ name: String) throws(FieldError) -> String {
        guard let value = object[name] else { throw FieldError(name, "missing required field `\(name)`") }
        guard let s = value as? String else { throw FieldError(name, "expected a string") }
        return s
    }

    /// Absent or null is nil.
    private func optionalString(_ name: String) throws(FieldError) -> String? {
        guard let value = object[name], !(value is NSNull) else { return nil }
        guard let s = value as? String else { throw FieldError(name, "expected a string") }
        return s
    }

    /// Absent or null is false.
    private func bool(_ name: String) throws(FieldError) -> Bool {
        guard let value = object[name], !(value is NSNull) else { return false }
        guard let b = JSONValue.bool(value) else { throw FieldError(name, "expected a boolean") }
        return b
    }

    /// When not required, absent or null is empty.
    private func strings(_ name: String, required: Bool, atMost limit: Int = .max) throws(FieldError) -> [String] {
        guard let value = object[name] else {
            if required { throw FieldError(name, "missing required field `\(name)`") }
            return []
        }
        if !required && value is NSNull { return [] }
        guard let array = value as? [Any] else { throw FieldError(name, "expected an array of strings") }
        guard array.count <= limit else { throw FieldError(name, "\(array.count) entries; at most \(limit) are allowed") }
        var out: [String] = []
        out.reserveCapacity(array.count)
        for (i, element) in array.enumerated() {
            guard let s = element as? String else { throw FieldError("\(name)[\(i)]", "expected a string") }
            out.append(s)
        }
        return out
    }

    /// Absent or null is nil: never.
    private func timestamp(_ name: String) throws(FieldError) -> Timestamp? {
        guard let text = try optionalString(name) else { return nil }
        guard let t = Timestamp(rfc3339: text) else {
            throw FieldError(name, "`\(text)` is not an RFC 3339 timestamp")
        }
        return t
    }
}

/// What JSONSerialization values are, for type checks and messages.
enum JSONValue {
    /// JSON `true` and `false` come back as a distinct NSNumber subclass; numbers do not pass.
    private static let booleanClass = ObjectIdentifier(type(of: NSNumber(value: true)))

    static func bool(_ value: Any) -> Bool? {
        guard let n = value as? NSNumber, ObjectIdentifier(type(of: n)) == booleanClass else { return nil }
        return n.boolValue
    }

    static func describe(_ value: Any) -> String {
        switch value {
        case is NSNull: "null"
        case is String: "a string"
        case is [Any]: "an array"
        case is [String: Any]: "an object"
        default: bool(value) != nil ? "a boolean" : "a number"
        }
    }
}

/// Levenshtein distance, for "did you mean" on the error path only.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
