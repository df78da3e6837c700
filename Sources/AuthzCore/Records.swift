/// Membership data as the platform sends it: one record per JSON line (see `AuthzData`).
/// An upsert replaces the whole record with the same key; a delete removes it.
public enum Record: Sendable, Hashable {
    case org(Org)
    case user(User)
    case member(Member)
    case role(Role)
    // The two largest kinds, and among the rarest, are boxed: a record is as large as its
    // largest case, and a sync of a million memberships holds two million of them.
    indirect case apiKey(APIKey)
    indirect case invitation(Invitation)
    case delete(RecordKey)

    public struct Org: Sendable, Hashable {
        public var id: String
        public var personal: Bool
        public var suspended: Bool
        public var suspendedUntil: Timestamp?
        public init(id: String, personal: Bool = false, suspended: Bool = false, suspendedUntil: Timestamp? = nil) {
            self.id = id
            self.personal = personal
            self.suspended = suspended
            self.suspendedUntil = suspendedUntil
        }
    }

    public struct User: Sendable, Hashable {
        public var id: String
        public var email: String?
        public var emailVerified: Bool
        public init(id: String, email: String?, emailVerified: Bool) {
            self.id = id
            self.email = email
            self.emailVerified = emailVerified
        }
    }

    public struct Member: Sendable, Hashable {
        public var org: String
        public var user: String
        public var role: String
        public var assignments: [String]
        public init(org: String, user: String, role: String, assignments: [String] = []) {
            self.org = org
            self.user = user
            self.role = role
            self.assignments = assignments
        }
    }

    /// A custom assignment of one organization.
    public struct Role: Sendable, Hashable {
        public var org: String
        public var id: String
        public var permissions: [String]
        public init(org: String, id: String, permissions: [String]) {
            self.org = org
            self.id = id
            self.permissions = permissions
        }
    }

    public struct APIKey: Sendable, Hashable {
        public var id: String
        public var org: String
        public var user: String
        public var permissions: [String]
        public var expiresAt: Timestamp?
        public init(id: String, org: String, user: String, permissions: [String], expiresAt: Timestamp? = nil) {
            self.id = id
            self.org = org
            self.user = user
            self.permissions = permissions
            self.expiresAt = expiresAt
        }
    }

    public struct Invitation: Sendable, Hashable {
        public var id: String
        public var org: String
        public var email: String
        public var role: String
        public var assignments: [String]
        public var status: String
        public var expiresAt: Timestamp?
        public init(id: String, org: String, email: String, role: String, assignments: [String] = [], status: String, expiresAt: Timestamp? = nil) {
            self.id = id
            self.org = org
            self.email = email
            self.role = role
            self.assignments = assignments
            self.status = status
            self.expiresAt = expiresAt
        }
    }

    /// The key of the record this upsert replaces.
    public var key: RecordKey {
        switch self {
        case .org(let r): .org(r.id)
        case .user(let r): .user(r.id)
        case .member(let r): .member(org: r.org, user: r.user)
        case .role(let r): .role(org: r.org, id: r.id)
        case .apiKey(let r): .apiKey(r.id)
        case .invitation(let r): .invitation(r.id)
        case .delete(let k): k
        }
    }
}

/// What identifies a record: the target of a delete.
public enum RecordKey: Sendable, Hashable {
    case org(String)
    case user(String)
    case member(org: String, user: String)
    case role(org: String, id: String)
    case apiKey(String)
    case invitation(String)

    /// The `kind` a JSON line names it with.
    public var kind: String {
        switch self {
        case .org: "org"
        case .user: "user"
        case .member: "member"
        case .role: "role"
        case .apiKey: "api_key"
        case .invitation: "invitation"
        }
    }
}

/// A record and the line it came from, for error messages.
public struct LocatedRecord: Sendable, Hashable {
    public var line: Int
    public var record: Record
    public init(line: Int, record: Record) {
        self.line = line
        self.record = record
    }
}

/// A record the directory refuses: where, which field, why.
public struct DataError: Error, Sendable, Hashable, CustomStringConvertible {
    /// 1-based line of the record in its batch or file; 0 when not tied to a line.
    public var line: Int
    /// The field at fault (`assignments[1]`), or nil for the record as a whole.
    public var field: String?
    public var message: String
    public init(line: Int, field: String?, message: String) {
        self.line = line
        self.field = field
        self.message = message
    }
    public var description: String { "\(line > 0 ? "line \(line)" : "data"): \(detail)" }

    /// The error without its position (`field `org`: unknown org `x``), for callers that name
    /// the place themselves (`file.jsonl:3: ...`).
    public var detail: String {
        if let field { return "field `\(field)`: \(message)" }
        return message
    }
}

/// Every error of a refused batch, in line order. Nothing of the batch was applied.
public struct DataErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [DataError]
    public init(_ errors: [DataError]) { self.errors = errors }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
