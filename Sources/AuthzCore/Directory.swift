/// An immutable snapshot of the membership data, bound to the compiled policy whose names it
/// resolved: orgs, users, members with their effective permissions, custom roles, api keys and
/// invitations. `applying(_:)` validates a batch against the snapshot as it stands and returns
/// a new snapshot, sharing every part the batch did not touch; a batch with any error
/// throws every error and changes nothing.
public struct Directory: Sendable {
    public let policy: CompiledPolicy

    struct OrgEntry: Sendable {
        var personal: Bool
        var suspended: Bool
        var suspendedUntil: Timestamp?
        var ownerCount: Int32 = 0
        var memberCount: Int32 = 0
    }

    struct UserEntry: Sendable {
        var email: String?
        var emailFolded: String?
        var emailVerified: Bool
    }

    struct MemberEntry: Sendable {
        var role: RoleKind
        /// As the record listed them (names as sent, aliases included).
        var assignments: [String]
        /// Global assignments held, the implied one included (bit = assignment index).
        var globalMask: UInt64
        /// Permissions from global assignments; for an owner with all permissions, every one.
        var base: PermissionSet
        /// Custom role ids of the org, resolved at check time so a role change applies at once.
        var customRoles: [String]
    }

    struct RoleEntry: Sendable {
        var permissions: [String]
        var mask: PermissionSet
        /// How many members hold it: a role still assigned cannot be deleted.
        var assigned: Int32 = 0
        /// How many invitations offer it: neither can a role still offered (the invitation
        /// would no longer rebuild from `records()`).
        var invited: Int32 = 0
    }

    struct KeyEntry: Sendable {
        var org: String
        var user: String
        var permissions: [String]
        var mask: PermissionSet
        var expiresAt: Timestamp?
    }

    struct InvitationEntry: Sendable {
        var org: String
        var email: String
        var emailFolded: String
        var role: String
        var assignments: [String]
        /// Custom role ids of the org among `assignments`.
        var customRoles: [String]
        var status: String
        var open: Bool
        var expiresAt: Timestamp?
    }

    var orgs = ByteMap<OrgEntry>(shardBits: 10)
    var users = ByteMap<UserEntry>(shardBits: 12)
    var members = ByteMap<MemberEntry>(shardBits: 12)
    var roles = ByteMap<RoleEntry>(shardBits: 8)
    var keys = ByteMap<KeyEntry>(shardBits: 12)
    var invitations = ByteMap<InvitationEntry>(shardBits: 10)

    /// An empty directory for `policy`.
    public init(policy: CompiledPolicy) { self.policy = policy }

    /// Sizes, for metrics and listings.
    public struct Counts: Sendable, Hashable, Codable {
        public var orgs, users, members, roles, apiKeys, invitations: Int
        public init(orgs: Int, users: Int, members: Int, roles: Int, apiKeys: Int, invitations: Int) {
            self.orgs = orgs
            self.users = users
            self.members = members
            self.roles = roles
            self.apiKeys = apiKeys
            self.invitations = invitations
        }
    }

    public var counts: Counts {
        Counts(orgs: orgs.count, users: users.count, members: members.count, roles: roles.count,
               apiKeys: keys.count, invitations: invitations.count)
    }

    /// What a batch changed.
    public struct ApplyStats: Sendable, Hashable {
        public var upserted = 0
        public var deleted = 0
        public init() {}
    }

    /// Builds a directory from records, in order.
    public static func build(_ records: [LocatedRecord], policy: CompiledPolicy) throws(DataErrors) -> Directory {
        var directory = Directory(policy: policy)
        directory.reserve(for: records)
        // In place: the fresh maps are uniquely referenced, so no shard is copied.
        _ = try directory.apply(records)
        return directory
    }

    /// Sizes the maps for `records`, so that a large build rebuilds no table as it grows.
    private mutating func reserve(for records: [LocatedRecord]) {
        guard records.count > 10_000 else { return }
        var n = (orgs: 0, users: 0, members: 0, roles: 0, keys: 0, invitations: 0)
        var bytes = n
        for located in records {
            switch located.record {
            case .org(let r): n.orgs += 1; bytes.orgs += r.id.utf8.count
            case .user(let r): n.users += 1; bytes.users += r.id.utf8.count
            case .member(let r): n.members += 1; bytes.members += r.org.utf8.count + 1 + r.user.utf8.count
            case .role(let r): n.roles += 1; bytes.roles += r.org.utf8.count + 1 + r.id.utf8.count
            case .apiKey(let r): n.keys += 1; bytes.keys += r.id.utf8.count
            case .invitation(let r): n.invitations += 1; bytes.invitations += r.id.utf8.count
            case .delete: break
            }
        }
        orgs.reserve(n.orgs, keyBytes: bytes.orgs)
        users.reserve(n.users, keyBytes: bytes.users)
        members.reserve(n.members, keyBytes: bytes.members)
        roles.reserve(n.roles, keyBytes: bytes.roles)
        keys.reserve(n.keys, keyBytes: bytes.keys)
        invitations.reserve(n.invitations, keyBytes: bytes.invitations)
    }

    /// Validates `batch` record by record against the state so far and applies it. Either every
    /// record is valid and the new directory is returned, or every error is thrown.
    public func applying(_ batch: [LocatedRecord]) throws(DataErrors) -> (directory: Directory, stats: ApplyStats) {
        var next = self
        let stats = try next.apply(batch)
        return (next, stats)
    }

    /// `applying`, in place: on error, `self` is left half changed (callers throw it away).
    private mutating func apply(_ batch: [LocatedRecord]) throws(DataErrors) -> ApplyStats {
        var errors: [DataError] = []
        var stats = ApplyStats()
        for located in batch {
            do {
                try apply(located.record)
                if case .delete = located.record { stats.deleted += 1 } else { stats.upserted += 1 }
            } catch {
                errors.append(DataError(line: located.line, field: error.field, message: error.message))
                if errors.count >= 100 { break }
            }
        }
        if !errors.isEmpty { throw DataErrors(errors) }
        return stats
    }

    /// The same data compiled against another policy (a policy reload): fails, changing
    /// nothing, if the data uses a name the new policy lacks.
    public func rebound(to policy: CompiledPolicy) throws(DataErrors) -> Directory {
        try Directory.build(records().enumerated().map { LocatedRecord(line: 0, record: $1) }, policy: policy)
    }

    /// Every record, in an order that rebuilds this directory: orgs, users, roles, members,
    /// api keys, invitations.
    public func records() -> [Record] {
        var out: [Record] = []
        out.reserveCapacity(orgs.count + users.count + roles.count + members.count + keys.count + invitations.count)
        orgs.forEach { id, o in
            out.append(.org(.init(id: id, personal: o.personal, suspended: o.suspended, suspendedUntil: o.suspendedUntil)))
        }
        users.forEach { id, u in out.append(.user(.init(id: id, email: u.email, emailVerified: u.emailVerified))) }
        roles.forEach { k, r in
            let (org, id) = ByteMap<RoleEntry>.parts(k)
            out.append(.role(.init(org: org, id: id, permissions: r.permissions)))
        }
        members.forEach { k, m in
            let (org, user) = ByteMap<MemberEntry>.parts(k)
            out.append(.member(.init(org: org, user: user, role: policy.roleName(m.role), assignments: m.assignments)))
        }
        keys.forEach { id, k in
            out.append(.apiKey(.init(id: id, org: k.org, user: k.user, permissions: k.permissions, expiresAt: k.expiresAt)))
        }
        invitations.forEach { id, i in
            out.append(.invitation(.init(id: id, org: i.org, email: i.email, role: i.role, assignments: i.assignments,
                                         status: i.status, expiresAt: i.expiresAt)))
        }
        return out
    }

    // MARK: Applying one record

    struct RecordError: Error {
        var field: String?
        var message: String
        init(_ field: String?, _ message: String) {
            self.field = field
            self.message = message
        }
    }

    private func requireID(_ id: String, _ field: String) throws(RecordError) {
        guard Identifier.isValid(id) else {
            throw RecordError(field, id.isEmpty ? "must not be empty" : "`\(id)` is not a valid id (no spaces or control characters, at most 512 bytes)")
        }
    }

    private func requireOrg(_ org: String) throws(RecordError) {
        try requireID(org, "org")
        guard orgs[org] != nil else { throw RecordError("org", "unknown org `\(org)`") }
    }

    private func permissionMask(_ names: [String], _ field: String) throws(RecordError) -> PermissionSet {
        var set = PermissionSet()
        for (i, n) in names.enumerated() {
            guard let p = policy.permission(named: n) else {
                throw RecordError("\(field)[\(i)]", "unknown permission `\(n)`")
            }
            set.insertIndex(p)
        }
        return set
    }

    private func roleKind(_ name: String) throws(RecordError) -> RoleKind {
        guard let kind = policy.roleKind(named: name) else {
            throw RecordError("role", "unknown role `\(name)`; expected `\(policy.ownerRole)` or `\(policy.memberRole)`")
        }
        return kind
    }

    /// Resolves assignment names: global ones into a mask, custom ones checked against the org.
    private func resolveAssignments(_ names: [String], org: String) throws(RecordError) -> (UInt64, [String]) {
        var mask: UInt64 = 0
        var custom: [String] = []
        for (i, n) in names.enumerated() {
            if let a = policy.assignmentID(named: n) {
                mask |= 1 << UInt64(a)
            } else if roles[org, n] != nil {
                if !custom.contains(n) { custom.append(n) }
            } else {
                throw RecordError("assignments[\(i)]", "unknown assignment `\(n)`: not a global assignment nor a custom role of org `\(org)`")
            }
        }
        if let implied = policy.impliedAssignment { mask |= 1 << UInt64(implied) }
        return (mask, custom)
    }

    /// Applies one record to this (scratch) directory, or throws without changing it.
    mutating func apply(_ record: Record) throws(RecordError) {
        switch record {
        case .org(let r):
            try requireID(r.id, "id")
            var entry = OrgEntry(personal: r.personal, suspended: r.suspended, suspendedUntil: r.suspendedUntil)
            if let old = orgs[r.id] {
                entry.ownerCount = old.ownerCount
                entry.memberCount = old.memberCount
            }
            orgs.upsert(r.id, entry)

        case .user(let r):
            try requireID(r.id, "id")
            if let email = r.email, email.isEmpty || !withBytes(email, { allBytes($0, above: 0x1F) }) {
                throw RecordError("email", "`\(email)` is not a valid email")
            }
            users.upsert(r.id, UserEntry(email: r.email, emailFolded: r.email.map(Directory.folded), emailVerified: r.emailVerified))

        case .member(let r):
            try requireOrg(r.org)
            try requireID(r.user, "user")
            let kind = try roleKind(r.role)
            let (mask, custom) = try resolveAssignments(r.assignments, org: r.org)
            let base = policy.basePermissions(role: kind, globalMask: mask)
            let old = members.upsert(r.org, r.user, MemberEntry(role: kind, assignments: r.assignments, globalMask: mask, base: base, customRoles: custom))
            if let old { unlink(member: old, org: r.org) }
            link(role: kind, customRoles: custom, org: r.org)

        case .role(let r):
            try requireOrg(r.org)
            try requireID(r.id, "id")
            if policy.assignmentID(named: r.id) != nil {
                throw RecordError("id", "`\(r.id)` is a global assignment name; a custom role needs another id")
            }
            guard !r.permissions.isEmpty else { throw RecordError("permissions", "a custom role needs at least one permission") }
            let mask = try permissionMask(r.permissions, "permissions")
            var entry = RoleEntry(permissions: r.permissions, mask: mask)
            if let old = roles[r.org, r.id] {
                entry.assigned = old.assigned
                entry.invited = old.invited
            }
            roles[r.org, r.id] = entry

        case .apiKey(let r):
            try requireID(r.id, "id")
            try requireOrg(r.org)
            try requireID(r.user, "user")
            let mask = try permissionMask(r.permissions, "permissions")
            keys.upsert(r.id, KeyEntry(org: r.org, user: r.user, permissions: r.permissions, mask: mask, expiresAt: r.expiresAt))

        case .invitation(let r):
            try requireID(r.id, "id")
            try requireOrg(r.org)
            guard !r.email.isEmpty, withBytes(r.email, { allBytes($0, above: 0x1F) }) else {
                throw RecordError("email", "`\(r.email)` is not a valid email")
            }
            _ = try roleKind(r.role)
            let (_, custom) = try resolveAssignments(r.assignments, org: r.org)
            guard let statusIndex = policy.invitationStatuses.firstIndex(of: r.status) else {
                throw RecordError("status", "unknown status `\(r.status)`; expected one of \(policy.invitationStatuses.map { "`\($0)`" }.joined(separator: ", "))")
            }
            let old = invitations.upsert(r.id, InvitationEntry(
                org: r.org, email: r.email, emailFolded: Directory.folded(r.email), role: r.role,
                assignments: r.assignments, customRoles: custom, status: r.status, open: statusIndex == 0,
                expiresAt: r.expiresAt))
            if let old { unlink(invitation: old) }
            for c in custom { roles.update(r.org, c) { $0.invited += 1 } }

        case .delete(let key):
            try delete(key)
        }
    }

    /// `email` lowercased, sharing its storage when it has no uppercase letter (the usual
    /// case), so a million users do not hold a million copies.
    private static func folded(_ email: String) -> String {
        let plain = withBytes(email) { b in !b.contains { $0 >= 0x80 || ($0 >= 0x41 && $0 <= 0x5A) } }
        return plain ? email : email.lowercased()
    }

    private mutating func link(role: RoleKind, customRoles: [String], org: String) {
        orgs.update(org) {
            $0.memberCount += 1
            if role == .owner { $0.ownerCount += 1 }
        }
        for c in customRoles { roles.update(org, c) { $0.assigned += 1 } }
    }

    private mutating func unlink(member: MemberEntry, org: String) {
        orgs.update(org) {
            $0.memberCount -= 1
            if member.role == .owner { $0.ownerCount -= 1 }
        }
        for c in member.customRoles { roles.update(org, c) { $0.assigned -= 1 } }
    }

    private mutating func unlink(invitation: InvitationEntry) {
        for c in invitation.customRoles { roles.update(invitation.org, c) { $0.invited -= 1 } }
    }

    private mutating func delete(_ key: RecordKey) throws(RecordError) {
        switch key {
        case .org(let id):
            guard orgs.remove(id) != nil else { return }
            // Ids compare as bytes, as the maps do: `String`'s `==` and `hasPrefix` would also
            // match another id that is only canonically equivalent (`é` and `e` + U+0301).
            let prefix = Array(id.utf8) + [ByteMap<MemberEntry>.separator]
            _ = members.removeAll { k, _ in k.starts(with: prefix) }
            _ = roles.removeAll { k, _ in k.starts(with: prefix) }
            _ = keys.removeAll { _, k in k.org.utf8.elementsEqual(id.utf8) }
            _ = invitations.removeAll { _, i in i.org.utf8.elementsEqual(id.utf8) }

        case .user(let id):
            users.remove(id)
            let suffix = [ByteMap<MemberEntry>.separator] + Array(id.utf8)
            let removed = members.removeAll { k, _ in
                k.count >= suffix.count && UnsafeRawBufferPointer(rebasing: k[(k.count - suffix.count)...]).elementsEqual(suffix)
            }
            for (k, m) in removed { unlink(member: m, org: ByteMap<MemberEntry>.parts(k).0) }
            _ = keys.removeAll { _, k in k.user.utf8.elementsEqual(id.utf8) }

        case .member(let org, let user):
            if let old = members.remove(org, user) { unlink(member: old, org: org) }

        case .role(let org, let id):
            guard let role = roles[org, id] else { return }
            if role.assigned > 0 {
                throw RecordError(nil, "custom role `\(id)` of org `\(org)` is still assigned to \(role.assigned) member\(role.assigned == 1 ? "" : "s"); update them first")
            }
            if role.invited > 0 {
                throw RecordError(nil, "custom role `\(id)` of org `\(org)` is still offered by \(role.invited) invitation\(role.invited == 1 ? "" : "s"); update or delete them first")
            }
            roles[org, id] = nil

        case .apiKey(let id):
            keys.remove(id)

        case .invitation(let id):
            if let old = invitations.remove(id) { unlink(invitation: old) }
        }
    }
}

extension Directory {
    /// How many records of this directory `next` no longer has (for a replace's report).
    public func countRemoved(in next: Directory) -> Int {
        var n = 0
        orgs.forEachBytes { k, _ in if !next.orgs.contains(k) { n += 1 } }
        users.forEachBytes { k, _ in if !next.users.contains(k) { n += 1 } }
        // Composite keys are stored joined by the separator but hashed from their parts.
        func parts(_ k: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
            let i = k.firstIndex(of: ByteMap<MemberEntry>.separator) ?? k.count
            return (UnsafeRawBufferPointer(rebasing: k[..<i]), UnsafeRawBufferPointer(rebasing: k[min(i + 1, k.count)...]))
        }
        roles.forEachBytes { k, _ in let (a, b) = parts(k); if next.roles.withValue(a, b, { _ in true }) == nil { n += 1 } }
        members.forEachBytes { k, _ in let (a, b) = parts(k); if next.members.withValue(a, b, { _ in true }) == nil { n += 1 } }
        keys.forEachBytes { k, _ in if !next.keys.contains(k) { n += 1 } }
        invitations.forEachBytes { k, _ in if !next.invitations.contains(k) { n += 1 } }
        return n
    }
}

/// Builds a directory record by record, for a source too large to hold as one array (a store
/// of millions of rows): each record is validated and applied as it arrives and can be freed
/// at once. Same validation as `Directory.build`.
public struct DirectoryBuilder: Sendable {
    private var directory: Directory
    private var errors: [DataError] = []

    /// Expected sizes, by kind, and the total bytes of their keys (ids; org+user for members,
    /// org+id for roles), so that no table is rebuilt as it grows. Zero means unknown.
    public struct Expected: Sendable {
        public var orgs = 0, users = 0, members = 0, roles = 0, apiKeys = 0, invitations = 0
        public var orgKeyBytes = 0, userKeyBytes = 0, memberKeyBytes = 0, roleKeyBytes = 0, apiKeyKeyBytes = 0, invitationKeyBytes = 0
        public init() {}
    }

    public init(policy: CompiledPolicy, expected: Expected = Expected()) {
        directory = Directory(policy: policy)
        let e = expected
        if e.orgs > 0 { directory.orgs.reserve(e.orgs, keyBytes: e.orgKeyBytes) }
        if e.users > 0 { directory.users.reserve(e.users, keyBytes: e.userKeyBytes) }
        if e.members > 0 { directory.members.reserve(e.members, keyBytes: e.memberKeyBytes) }
        if e.roles > 0 { directory.roles.reserve(e.roles, keyBytes: e.roleKeyBytes) }
        if e.apiKeys > 0 { directory.keys.reserve(e.apiKeys, keyBytes: e.apiKeyKeyBytes) }
        if e.invitations > 0 { directory.invitations.reserve(e.invitations, keyBytes: e.invitationKeyBytes) }
    }

    /// Validates and applies one record; an invalid one is remembered (up to 100) and skipped.
    public mutating func add(_ record: Record, line: Int = 0) {
        do {
            try directory.apply(record)
        } catch {
            if errors.count < 100 { errors.append(DataError(line: line, field: error.field, message: error.message)) }
        }
    }

    /// The directory, or every error found.
    public func finish() throws(DataErrors) -> Directory {
        if !errors.isEmpty { throw DataErrors(errors) }
        return directory
    }
}
