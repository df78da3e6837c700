import AuthzCore

extension RecordCodec {
    /// One canonical JSON line (no line break): `kind` first, `op` only for a delete, then every
    /// field of the kind in a fixed order, absent values as `null`, timestamps in RFC 3339 UTC.
    /// `decode(line: encode(r), number:)` gives back `r`.
    public static func encode(_ record: Record) -> String {
        var w = JSONObjectWriter()
        switch record {
        case .org(let r):
            w.field("kind", "org")
            w.field("id", r.id)
            w.field("personal", r.personal)
            w.field("suspended", r.suspended)
            w.field("suspended_until", r.suspendedUntil)
        case .user(let r):
            w.field("kind", "user")
            w.field("id", r.id)
            w.field("email", r.email)
            w.field("email_verified", r.emailVerified)
        case .member(let r):
            w.field("kind", "member")
            w.field("org", r.org)
            w.field("user", r.user)
            w.field("role", r.role)
            w.field("assignments", r.assignments)
        case .role(let r):
            w.field("kind", "role")
            w.field("org", r.org)
            w.field("id", r.id)
            w.field("permissions", r.permissions)
        case .apiKey(let r):
            w.field("kind", "api_key")
            w.field("id", r.id)
            w.field("org", r.org)
            w.field("user", r.user)
            w.field("permissions", r.permissions)
            w.field("expires_at", r.expiresAt)
        case .invitation(let r):
            w.field("kind", "invitation")
            w.field("id", r.id)
            w.field("org", r.org)
            w.field("email", r.email)
            w.field("role", r.role)
            w.field("assignments", r.assignments)
            w.field("status", r.status)
            w.field("expires_at", r.expiresAt)
        case .delete(let key):
            w.field("kind", key.kind)
            w.field("op", "delete")
            switch key {
            case .org(let id), .user(let id), .apiKey(let id), .invitation(let id):
                w.field("id", id)
            case .member(let org, let user):
                w.field("org", org)
                w.field("user", user)
            case .role(let org, let id):
                w.field("org", org)
                w.field("id", id)
            }
        }
        return w.finish()
    }

    /// Records as JSON Lines: each encoded line followed by `\n`.
    public static func encodeLines(_ records: some Sequence<Record>) -> String {
        var out = ""
        for r in records {
            out += encode(r)
            out += "\n"
        }
        return out
    }
}

/// Writes one flat JSON object, fields in the order given.
struct JSONObjectWriter {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]

    mutating func finish() -> String {
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func key(_ name: String) {
        if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
        string(name)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func field(_ name: String, _ value: String?) {
        key(name)
        if let value { string(value) } else { bytes.append(contentsOf: "null".utf8) }
    }

    mutating func field(_ name: String, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    mutating func field(_ name: String, _ value: Timestamp?) {
        field(name, value?.description)
    }

    mutating func field(_ name: String, _ values: [String]) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (i, v) in values.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(v)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// A JSON string: quotes, backslashes and control characters escaped, the rest as UTF-8.
    private mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): bytes.append(contentsOf: #"\\"#.utf8)
            case 0x0A: bytes.append(contentsOf: #"\n"#.utf8)
            case 0x0D: bytes.append(contentsOf: #"\r"#.utf8)
            case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: #"\u00"#.utf8)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
