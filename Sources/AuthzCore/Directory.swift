/// An immutable snapshot of the membership data, bound to the compiled policy whose names it
/// resolved: orgs, users, members with their effective permissions, custom roles, api keys and
/// invitations. `applying(_:)` validates a batch against the snapshot as it stands and returns
/// a new snapshot, sharing every part the batch did not touch; a batch with any error
/// throws every error and changes nothing.
public struct Directory: Sendable {
    public let policy: CompiledPolicy

    // The entries below are laid out for size (a million members make ~2M of them): no
    // `String` or array of their own (each would be a heap object), optional timestamps in
    // 12 bytes, small fields last. Strings of a record live in the map's payload bytes or in
    // a shared `NameList`.

    /// 24 bytes with its map entry's key length and offset (a count of members, kept but
    /// never read, made it 32).
    struct OrgEntry: Sendable {
        var suspendedUntil: PackedTimestamp
        var ownerCount: Int32 = 0
        var personal: Bool
        var suspended: Bool
    }

    /// Payload: the email.
    struct UserEntry: Sendable {
        /// Bytes of the email; 0 for none (an email is never empty).
        var emailLength: UInt32
        var emailVerified: Bool
    }

    /// A member is its role and its assignment list, which carries the global assignments
    /// and permissions it grants: 16 bytes, plain memory.
    ///
    /// The list is held without a reference count: `assignmentLists` (the same directory's)
    /// holds every list a member entry points at, with as many uses as entries point at it,
    /// and `emptyAssignments` is the directory's own. So copying entries (a shard's
    /// copy-on-write, a batch's `applying`; a million of them at a start-up) retains nothing:
    /// those retains were a cache miss each and 10-20% of a start-up's and an apply's time.
    /// Sendable as `NameList` is: the list it points at is immutable.
    struct MemberEntry: @unchecked Sendable {
        /// The assignment list, unretained.
        private(set) var list: Unmanaged<NameListStorage>
        var role: RoleKind

        init(assignments: NameList, role: RoleKind) {
            list = Unmanaged.passUnretained(assignments.storage)
            self.role = role
        }

        init(list: Unmanaged<NameListStorage>, role: RoleKind) {
            self.list = list
            self.role = role
        }

        /// As the record listed them (names as sent, aliases included); `emptyAssignments`
        /// for none. Its custom role ids are resolved at check time, so a role change applies
        /// at once. Valid while the directory the entry was read from is.
        var assignments: NameList { NameList(storage: list.takeUnretainedValue()) }

        /// The list's address, not dereferenced (tests: is it one the table holds?).
        var listAddress: UnsafeMutableRawPointer { list.toOpaque() }
    }

    struct RoleEntry: Sendable {
        var mask: PermissionSet
        var permissions: NameList?
        /// How many members hold it: a role still assigned cannot be deleted.
        var assigned: Int32 = 0
        /// How many invitations offer it: neither can a role still offered (the invitation
        /// would no longer rebuild from `records()`).
        var invited: Int32 = 0
    }

    /// Payload: the org id, then the user id.
    struct KeyEntry: Sendable {
        var mask: PermissionSet
        var permissions: NameList?
        var expiresAt: PackedTimestamp
        var orgLength: UInt32
    }

    /// Payload: the org id, then the email.
    struct InvitationEntry: Sendable {
        var role: String
        var status: String
        /// Assignments as sent.
        var assignments: NameList
        var expiresAt: PackedTimestamp
        var orgLength: UInt32
        var emailLength: UInt32
        var open: Bool
    }

    var orgs = ByteMap<OrgEntry>(shardBits: 10)
    var users = Directory.usersMap()
    var members = MemberTable()
    var roles = ByteMap<RoleEntry>(shardBits: 8)
    var keys = ByteMap<KeyEntry>(shardBits: 12, payloads: true)
    var invitations = ByteMap<InvitationEntry>(shardBits: 10, payloads: true)
    /// The distinct assignment lists of members and invitations.
    var assignmentLists = NameListTable(shardBits: 10)
    /// The distinct permission lists of api keys and custom roles.
    var permissionLists = NameListTable(shardBits: 8)

    /// The assignment list of members with no assignments (the implied one only).
    let emptyAssignments: NameList

    /// The org a record applied last named, known to exist (or empty): deleting an org
    /// forgets it (see `requireOrg`).
    private var lastOrg = ""
    /// Members' lists of global assignments resolved lately (see `RecentLists`).
    private var recentLists = RecentLists()

    // What the check path reads of the policy, held here: read through `policy`, `decide`
    // copied the whole 384-byte `CompiledPolicy` (a memcpy a check) to call `actionID`.
    /// `policy.actionTable`: the actions by type and name, and their rules.
    let actionTable: ActionTable
    /// `policy.assignmentsGranting`.
    let assignmentsGranting: [UInt64]
    let allPermissions: PermissionSet
    let ownerHasAllPermissions: Bool

    /// An empty directory for `policy`.
    public init(policy: CompiledPolicy) {
        self.policy = policy
        actionTable = policy.actionTable
        assignmentsGranting = policy.assignmentsGranting
        allPermissions = policy.allPermissions
        ownerHasAllPermissions = policy.ownerHasAllPermissions
        let implied: UInt64 = policy.impliedAssignment.map { 1 << UInt64($0) } ?? 0
        emptyAssignments = NameList.empty(globalMask: implied, base: policy.basePermissions(role: .member, globalMask: implied))
    }

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

    /// Sizes the maps for `records`, so that a large build rebuilds few tables as it grows.
    /// From totals: sizing each shard exactly needs every key hashed in a pass of its own,
    /// which re-reads every record (~0.25 s at 1M members, ~7% of the build) to save ~30 MB.
    private mutating func reserve(for records: [LocatedRecord]) {
        guard records.count > 10_000 else { return }
        var e = DirectoryBuilder.Expected()
        for located in records { e.count(located.record) }
        reserve(e)
    }

    /// Sizes the maps for `e` (see `DirectoryBuilder.Expected`).
    mutating func reserve(_ e: DirectoryBuilder.Expected) {
        if e.orgs > 0 { orgs.reserve(e.orgs, arenaBytes: e.orgKeyBytes) }
        Directory.reserveUsers(&users, e)
        if e.members > 0 { members.reserve(e) }
        if e.roles > 0 { roles.reserve(e.roles, arenaBytes: e.roleKeyBytes) }
        if e.apiKeys > 0 { keys.reserve(e.apiKeys, arenaBytes: e.apiKeyKeyBytes + e.apiKeyPayloadBytes) }
        if e.invitations > 0 { invitations.reserve(e.invitations, arenaBytes: e.invitationKeyBytes + e.invitationPayloadBytes) }
    }

    /// Sizes every map to what it holds (see `ByteMap.shrinkToFit`).
    mutating func shrinkToFit() {
        recentLists = RecentLists()
        orgs.shrinkToFit()
        users.shrinkToFit()
        members.shrinkToFit()
        roles.shrinkToFit()
        keys.shrinkToFit()
        invitations.shrinkToFit()
        assignmentLists.shrinkToFit()
        permissionLists.shrinkToFit()
    }

    /// Validates `batch` record by record against the state so far and applies it. Either every
    /// record is valid and the new directory is returned, or every error is thrown.
    public func applying(_ batch: [LocatedRecord]) throws(DataErrors) -> (directory: Directory, stats: ApplyStats) {
        var next = self
        // A replace applies every record to an empty directory: size it as a build does, and
        // fit the shards after, as the streaming build does (the server hands the freed
        // memory back after a large batch).
        let replace = orgs.count + users.count + members.count + keys.count + invitations.count == 0 && batch.count > 10_000
        if replace { next.reserve(for: batch) }
        let stats = try next.apply(batch)
        if replace { next.shrinkToFit() }
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
        recentLists = RecentLists()
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
            out.append(.org(.init(id: id, personal: o.personal, suspended: o.suspended, suspendedUntil: o.suspendedUntil.value)))
        }
        users.forEachBytes { id, u, payload in
            let email = u.emailLength == 0 ? nil : String(decoding: payload.prefix(Int(u.emailLength)), as: UTF8.self)
            out.append(.user(.init(id: String(decoding: id, as: UTF8.self), email: email, emailVerified: u.emailVerified)))
        }
        roles.forEach { k, r in
            let (org, id) = ByteMap<RoleEntry>.parts(k)
            out.append(.role(.init(org: org, id: id, permissions: r.permissions?.names ?? [])))
        }
        members.forEach { org, user, m in
            out.append(.member(.init(org: org, user: user, role: policy.roleName(m.role), assignments: m.assignments.names)))
        }
        keys.forEachBytes { id, k, payload in
            let org = payload.prefix(Int(k.orgLength)), user = payload.dropFirst(Int(k.orgLength))
            out.append(.apiKey(.init(id: String(decoding: id, as: UTF8.self), org: String(decoding: org, as: UTF8.self),
                                     user: String(decoding: user, as: UTF8.self), permissions: k.permissions?.names ?? [],
                                     expiresAt: k.expiresAt.value)))
        }
        invitations.forEachBytes { id, i, payload in
            let org = payload.prefix(Int(i.orgLength))
            let email = payload.dropFirst(Int(i.orgLength)).prefix(Int(i.emailLength))
            out.append(.invitation(.init(id: String(decoding: id, as: UTF8.self), org: String(decoding: org, as: UTF8.self),
                                         email: String(decoding: email, as: UTF8.self), role: i.role,
                                         assignments: i.assignments.names, status: i.status, expiresAt: i.expiresAt.value)))
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

    /// Validates a user record and upserts it into `users`, or throws without changing it.
    /// A user depends on no other record and no record but a user delete on it, which is what
    /// lets `UsersBuilder` build the users of a load apart.
    static func upsert(_ r: Record.User, into users: inout ByteMap<UserEntry>) throws(RecordError) {
        try requireID(r.id, "id")
        if let email = r.email, email.isEmpty || !withBytes(email, { allBytes($0, above: 0x1F) }) {
            throw RecordError("email", "`\(Identifier.quotable(email))` is not a valid email")
        }
        let email = r.email ?? ""
        users.upsert(r.id, UserEntry(emailLength: UInt32(email.utf8.count), emailVerified: r.emailVerified),
                     payload: email)
    }

    /// An empty map of users, as every directory holds one.
    static func usersMap() -> ByteMap<UserEntry> { ByteMap(shardBits: 12, payloads: true) }

    /// Sizes a map of users for `e`'s (see `reserve(_:)`).
    static func reserveUsers(_ users: inout ByteMap<UserEntry>, _ e: DirectoryBuilder.Expected) {
        if e.users > 0 { users.reserve(e.users, arenaBytes: e.userKeyBytes + e.userPayloadBytes) }
    }

    /// A timestamp the store can keep (a record made in Swift can hold any `Timestamp`; one
    /// parsed from JSON Lines is always in range).
    private static func requireRFC3339(_ t: Timestamp?, _ field: String) throws(RecordError) {
        guard let t, !t.isRFC3339 else { return }
        throw RecordError(field, "\(t.seconds) s \(t.nanoseconds) ns is outside what RFC 3339 writes (years 0000-9999, nanoseconds within the second)")
    }

    private static func requireID(_ id: String, _ field: String) throws(RecordError) {
        guard Identifier.isValid(id) else {
            throw RecordError(field, id.isEmpty ? "must not be empty" : "`\(Identifier.quotable(id))` is not a valid id (no spaces or control characters, at most 512 bytes)")
        }
    }

    private mutating func requireOrg(_ org: String) throws(RecordError) {
        // Rows arrive sorted by org (a store's, a generated file's): the org of the record
        // before is known to exist, and no lookup is needed (it was ~8% of a build). Ids
        // compare as bytes, as the maps do.
        if !lastOrg.isEmpty && withBytes(org, { o in withBytes(lastOrg) { bytesEqual(o, $0) } }) { return }
        try Directory.requireID(org, "org")
        // `contains` reads the slot and the key, not the entry (a miss fewer: ~10% of a
        // start-up's building thread went to these lookups, a personal org's member misses
        // `lastOrg`).
        guard withBytes(org, { orgs.contains($0) }) else { throw RecordError("org", "unknown org `\(org)`") }
        lastOrg = org
    }

    private func permissionMask(_ names: [String], _ field: String) throws(RecordError) -> PermissionSet {
        var set = PermissionSet()
        for (i, n) in names.enumerated() {
            guard let p = policy.permission(named: n) else {
                throw RecordError("\(field)[\(i)]", "unknown permission `\(Identifier.quotable(n))`")
            }
            set.insertIndex(p)
        }
        return set
    }

    /// Assignments a member or an invitation may carry in JSON Lines (global ones and custom
    /// roles; a check reads every custom role of its member). The decoders refuse more; a
    /// store written before the bound still loads.
    public static var maxAssignments: Int { 256 }

    private func roleKind(_ name: String) throws(RecordError) -> RoleKind {
        guard let kind = policy.roleKind(named: name) else {
            throw RecordError("role", "unknown role `\(Identifier.quotable(name))`; expected `\(policy.ownerRole)` or `\(policy.memberRole)`")
        }
        return kind
    }

    /// Resolves assignment names: global ones into a mask, custom ones checked against the
    /// org (returned as indices into `names`, each role once).
    private func resolveAssignments(_ names: [String], org: String) throws(RecordError) -> (UInt64, [Int]) {
        var mask: UInt64 = 0
        var custom: [Int] = []
        var seen: Set<String> = []
        for (i, n) in names.enumerated() {
            if let a = policy.assignmentID(named: n) {
                mask |= 1 << UInt64(a)
            } else if roles[org, n] != nil {
                // A few, compared in place (a set per member cost 1.6% of a build); past 16, a
                // set, so that a long list is not square in its length.
                let repeated: Bool
                if custom.count < 16 {
                    repeated = custom.contains { names[$0] == n }
                } else {
                    if seen.isEmpty { seen = Set(custom.map { names[$0] }) }
                    repeated = !seen.insert(n).inserted
                }
                if !repeated { custom.append(i) }
            } else {
                throw RecordError("assignments[\(i)]", "unknown assignment `\(Identifier.quotable(n))`: not a global assignment nor a custom role of org `\(org)`")
            }
        }
        if let implied = policy.impliedAssignment { mask |= 1 << UInt64(implied) }
        return (mask, custom)
    }

    /// The shared list of resolved assignment names, with one more use. Members and
    /// invitations share the table, and the list carries what it grants (a member's
    /// permissions: an owner who holds them all is answered from the role), so both intern
    /// through here.
    private mutating func internAssignments(_ names: [String], mask: UInt64, customRoles: [Int]) -> NameList {
        // `base` is asked for every list, found or not: a closure computing it only for a new
        // list would capture the policy, and copying it retains two dozen references.
        assignmentLists.intern(names, customRoles: customRoles, globalMask: mask,
                               base: policy.basePermissions(role: .member, globalMask: mask)) ?? emptyAssignments
    }

    /// Applies one record to this (scratch) directory, or throws without changing it.
    mutating func apply(_ record: Record) throws(RecordError) {
        switch record {
        case .org(let r):
            try Directory.requireID(r.id, "id")
            try Directory.requireRFC3339(r.suspendedUntil, "suspended_until")
            var entry = OrgEntry(suspendedUntil: PackedTimestamp(r.suspendedUntil), personal: r.personal, suspended: r.suspended)
            if let old = orgs[r.id] { entry.ownerCount = old.ownerCount }
            orgs.upsert(r.id, entry)

        case .user(let r):
            try Directory.upsert(r, into: &users)

        case .member(let r):
            try requireOrg(r.org)
            try Directory.requireID(r.user, "user")
            let kind = try roleKind(r.role)
            let list: NameList
            if let recent = recentLists[r.assignments], assignmentLists.use(recent) {
                list = recent
            } else {
                let (mask, custom) = try resolveAssignments(r.assignments, org: r.org)
                list = internAssignments(r.assignments, mask: mask, customRoles: custom)
                if custom.isEmpty && !r.assignments.isEmpty { recentLists[r.assignments] = list }
            }
            let old = members.upsert(org: r.org, user: r.user, MemberEntry(assignments: list, role: kind))
            // After interning the new list, so a list the member keeps is never dropped.
            if let old { unlink(member: old, org: r.org) }
            link(role: kind, assignments: list, org: r.org)

        case .role(let r):
            try requireOrg(r.org)
            try Directory.requireID(r.id, "id")
            if policy.assignmentID(named: r.id) != nil {
                throw RecordError("id", "`\(r.id)` is a global assignment name; a custom role needs another id")
            }
            guard !r.permissions.isEmpty else { throw RecordError("permissions", "a custom role needs at least one permission") }
            let mask = try permissionMask(r.permissions, "permissions")
            var entry = RoleEntry(mask: mask, permissions: permissionLists.intern(r.permissions))
            if let old = roles[r.org, r.id] {
                entry.assigned = old.assigned
                entry.invited = old.invited
                permissionLists.release(old.permissions)
            }
            roles[r.org, r.id] = entry

        case .apiKey(let r):
            try Directory.requireID(r.id, "id")
            try Directory.requireRFC3339(r.expiresAt, "expires_at")
            try requireOrg(r.org)
            try Directory.requireID(r.user, "user")
            let mask = try permissionMask(r.permissions, "permissions")
            let entry = KeyEntry(mask: mask, permissions: permissionLists.intern(r.permissions),
                                 expiresAt: PackedTimestamp(r.expiresAt), orgLength: UInt32(r.org.utf8.count))
            if let old = keys.upsert(r.id, entry, payload: r.org, r.user) { permissionLists.release(old.permissions) }

        case .invitation(let r):
            try Directory.requireID(r.id, "id")
            try Directory.requireRFC3339(r.expiresAt, "expires_at")
            try requireOrg(r.org)
            guard !r.email.isEmpty, withBytes(r.email, { allBytes($0, above: 0x1F) }) else {
                throw RecordError("email", "`\(Identifier.quotable(r.email))` is not a valid email")
            }
            _ = try roleKind(r.role)
            let (mask, custom) = try resolveAssignments(r.assignments, org: r.org)
            guard let statusIndex = policy.invitationStatuses.firstIndex(of: r.status) else {
                throw RecordError("status", "unknown status `\(r.status)`; expected one of \(policy.invitationStatuses.map { "`\($0)`" }.joined(separator: ", "))")
            }
            let list = internAssignments(r.assignments, mask: mask, customRoles: custom)
            let entry = InvitationEntry(role: r.role, status: r.status, assignments: list, expiresAt: PackedTimestamp(r.expiresAt),
                                        orgLength: UInt32(r.org.utf8.count), emailLength: UInt32(r.email.utf8.count),
                                        open: statusIndex == 0)
            // The invitation it replaces may be of another org: read which before the payload goes.
            let previous = invitation(r.id)
            invitations.upsert(r.id, entry, payload: r.org, r.email)
            if let (old, org) = previous { unlink(invitation: old, org: org) }
            withBytes(r.org) { org in list.forEachCustomRole { c in roles.update(org, c) { $0.invited += 1 } } }

        case .delete(let key):
            try delete(key)
        }
    }

    /// Whether two emails are the same address for an invitation: equal but for ASCII case
    /// (`A`-`Z` and `a`-`z`), every other byte as it is. Not Unicode case mapping nor canonical
    /// equivalence: they make other strings the same (`\u{212A}im@x.io`, with a KELVIN SIGN,
    /// lowercases to `kim@x.io`), so the holder of one address could accept an invitation sent
    /// to another.
    static func sameEmail(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        if bytesEqual(a, b) { return true }
        for i in 0..<a.count where a[i] != b[i] {
            // The two cases of an ASCII letter differ only in bit 0x20, which the lowercase has.
            guard a[i] ^ b[i] == 0x20, (a[i] | 0x20) &- UInt8(ascii: "a") < 26 else { return false }
        }
        return true
    }

    /// The email an invitation is for, from its entry and payload.
    @inline(__always)
    static func invitedEmail(_ inv: borrowing InvitationEntry, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: payload[Int(inv.orgLength)..<Int(inv.orgLength) + Int(inv.emailLength)])
    }

    /// Whether a user (its entry and payload, its email) is the invitee of an invitation for
    /// `invited` (`invitedEmail`): its email is verified and the same (`sameEmail`).
    @inline(__always)
    static func isInvitee(_ user: borrowing UserEntry, email: UnsafeRawBufferPointer, invited: UnsafeRawBufferPointer) -> Bool {
        let length = Int(user.emailLength)
        guard user.emailVerified, length > 0 else { return false }
        return sameEmail(UnsafeRawBufferPointer(rebasing: email[..<length]), invited)
    }

    /// The invitation `id` and its org.
    private func invitation(_ id: String) -> (InvitationEntry, String)? {
        withBytes(id) { k in
            invitations.withEntry(k) { i, payload in (copy i, String(decoding: payload.prefix(Int(i.orgLength)), as: UTF8.self)) }
        }
    }

    private mutating func link(role: RoleKind, assignments: NameList, org: String) {
        if role == .owner { orgs.update(org) { $0.ownerCount += 1 } }
        guard assignments.hasCustomRoles else { return }
        withBytes(org) { org in assignments.forEachCustomRole { c in roles.update(org, c) { $0.assigned += 1 } } }
    }

    private mutating func unlink(member: MemberEntry, org: String) {
        if member.role == .owner { orgs.update(org) { $0.ownerCount -= 1 } }
        let list = member.assignments
        if list.hasCustomRoles {
            withBytes(org) { org in list.forEachCustomRole { c in roles.update(org, c) { $0.assigned -= 1 } } }
        }
        assignmentLists.release(list)
    }

    private mutating func unlink(invitation: InvitationEntry, org: String) {
        let list = invitation.assignments
        if list.hasCustomRoles {
            withBytes(org) { org in list.forEachCustomRole { c in roles.update(org, c) { $0.invited -= 1 } } }
        }
        assignmentLists.release(invitation.assignments)
    }

    private mutating func delete(_ key: RecordKey) throws(RecordError) {
        switch key {
        case .org(let id):
            lastOrg = ""
            guard orgs.remove(id) != nil else { return }
            // Ids compare as bytes, as the maps do: `String`'s `==` and `hasPrefix` would also
            // match another id that is only canonically equivalent (`é` and `e` + U+0301).
            // The org's roles go with it, so its members' and invitations' role counts need no
            // update; their lists do.
            let prefix = Array(id.utf8) + [ByteMap<MemberEntry>.separator]
            for m in members.removeAll(org: id) { assignmentLists.release(m.assignments) }
            for (_, r) in roles.removeAll(where: { k, _, _ in k.starts(with: prefix) }) { permissionLists.release(r.permissions) }
            for (_, k) in keys.removeAll(where: { _, k, p in p.prefix(Int(k.orgLength)).elementsEqual(id.utf8) }) {
                permissionLists.release(k.permissions)
            }
            for (_, i) in invitations.removeAll(where: { _, i, p in p.prefix(Int(i.orgLength)).elementsEqual(id.utf8) }) {
                assignmentLists.release(i.assignments)
            }

        case .user(let id):
            users.remove(id)
            for (org, m) in members.removeAll(user: id) { unlink(member: m, org: org) }
            for (_, k) in keys.removeAll(where: { _, k, p in p.dropFirst(Int(k.orgLength)).elementsEqual(id.utf8) }) {
                permissionLists.release(k.permissions)
            }

        case .member(let org, let user):
            if let old = members.remove(org: org, user: user) { unlink(member: old, org: org) }

        case .role(let org, let id):
            guard let role = roles[org, id] else { return }
            if role.assigned > 0 {
                throw RecordError("id", "custom role `\(id)` of org `\(org)` is still assigned to \(role.assigned) member\(role.assigned == 1 ? "" : "s"); update them first")
            }
            if role.invited > 0 {
                throw RecordError("id", "custom role `\(id)` of org `\(org)` is still offered by \(role.invited) invitation\(role.invited == 1 ? "" : "s"); update or delete them first")
            }
            roles[org, id] = nil
            permissionLists.release(role.permissions)

        case .apiKey(let id):
            if let old = keys.remove(id) { permissionLists.release(old.permissions) }

        case .invitation(let id):
            guard let (old, org) = invitation(id) else { return }
            invitations.remove(id)
            unlink(invitation: old, org: org)
        }
    }
}

extension Directory {
    /// How many records of this directory `next` no longer has (for a replace's report).
    public func countRemoved(in next: Directory) -> Int {
        var n = 0
        orgs.forEachBytes { k, _, _ in if !next.orgs.contains(k) { n += 1 } }
        users.forEachBytes { k, _, _ in if !next.users.contains(k) { n += 1 } }
        // Composite keys are stored joined by the separator but hashed from their parts.
        roles.forEachBytes { k, _, _ in let (a, b) = ByteMap<RoleEntry>.parts(k); if next.roles.withValue(a, b, { _ in true }) == nil { n += 1 } }
        n += members.countAbsent(from: next.members)
        keys.forEachBytes { k, _, _ in if !next.keys.contains(k) { n += 1 } }
        invitations.forEachBytes { k, _, _ in if !next.invitations.contains(k) { n += 1 } }
        return n
    }
}

/// Builds a directory record by record, for a source too large to hold as one array (a store
/// of millions of rows): each record is validated and applied as it arrives and can be freed
/// at once. Same validation as `Directory.build`.
public struct DirectoryBuilder: Sendable {
    private var directory: Directory
    private var errors: [DataError] = []
    /// Whether a user record or a user delete came: then no users can be built apart.
    private var sawUsers = false
    /// How many errors came before the place of the users built apart (`placeUsers`).
    private var usersPlace: Int?

    /// Expected sizes, by kind, the total bytes of their keys (ids; org+user for members,
    /// org+id for roles) and of what is stored after the keys (users' emails; api keys' org
    /// and user ids; invitations' org ids and emails), so that no table is rebuilt as it
    /// grows. Zero means unknown.
    public struct Expected: Sendable {
        public var orgs = 0, users = 0, members = 0, roles = 0, apiKeys = 0, invitations = 0
        public var orgKeyBytes = 0, userKeyBytes = 0, memberKeyBytes = 0, roleKeyBytes = 0, apiKeyKeyBytes = 0, invitationKeyBytes = 0
        public var userPayloadBytes = 0, apiKeyPayloadBytes = 0, invitationPayloadBytes = 0
        /// Members whose org and user ids are canonical UUIDs (`MemberIndex`).
        public var indexedMembers = 0
        public init() {}

        /// Counts `record` in.
        public mutating func count(_ record: Record) {
            switch record {
            case .org(let r):
                orgs += 1
                orgKeyBytes += r.id.utf8.count
            case .user(let r):
                users += 1
                userKeyBytes += r.id.utf8.count
                userPayloadBytes += r.email?.utf8.count ?? 0
            case .member(let r):
                members += 1
                memberKeyBytes += r.org.utf8.count + 1 + r.user.utf8.count
                if MemberTable.key(r.org, r.user) != nil { indexedMembers += 1 }
            case .role(let r):
                roles += 1
                roleKeyBytes += r.org.utf8.count + 1 + r.id.utf8.count
            case .apiKey(let r):
                apiKeys += 1
                apiKeyKeyBytes += r.id.utf8.count
                apiKeyPayloadBytes += r.org.utf8.count + r.user.utf8.count
            case .invitation(let r):
                invitations += 1
                invitationKeyBytes += r.id.utf8.count
                invitationPayloadBytes += r.org.utf8.count + r.email.utf8.count
            case .delete:
                break
            }
        }
    }

    public init(policy: CompiledPolicy, expected: Expected = Expected()) {
        directory = Directory(policy: policy)
        directory.reserve(expected)
    }

    /// Validates and applies one record; an invalid one is remembered (up to 100) and skipped.
    public mutating func add(_ record: Record, line: Int = 0) {
        switch record {
        case .user, .delete(.user): sawUsers = true
        default: break
        }
        do {
            try directory.apply(record)
        } catch {
            if errors.count < 100 { errors.append(DataError(line: line, field: error.field, message: error.message)) }
        }
    }

    /// The directory, or every error found. The maps were sized from totals (`Expected`),
    /// which leaves room in every shard: each is sized to its entries now, in place, so the
    /// old storage is freed as it goes (a caller that returns freed memory to the OS, as the
    /// server does after a load, keeps only what the directory holds).
    public mutating func finish() throws(DataErrors) -> Directory {
        if !errors.isEmpty { throw DataErrors(errors) }
        directory.shrinkToFit()
        return directory
    }

    /// Marks where the users built apart (`UsersBuilder`) stand in the stream: their errors
    /// are reported after the errors so far and before later ones. Unmarked, they come last.
    public mutating func placeUsers() {
        if usersPlace == nil { usersPlace = errors.count }
    }

    /// `finish()`, with the users built apart: the same directory and the same errors, in the
    /// same order, as if their records had been added where `placeUsers()` was called. Users
    /// depend on no other record and no other record on them, but for a user delete: the
    /// builder must have been given no user record and no user delete (it traps otherwise).
    public mutating func finish(users: consuming UsersBuilder) throws(DataErrors) -> Directory {
        precondition(!sawUsers, "users built apart, and user records in the stream")
        let place = usersPlace ?? errors.count
        let all = errors[..<place] + users.errors + errors[place...]
        if !all.isEmpty { throw DataErrors(Array(all.prefix(100))) }
        directory.users = users.users
        directory.shrinkToFit()
        return directory
    }
}

/// The users of a directory, built apart from the rest (on another thread), from user records
/// only: a user's validation reads nothing else, and only a user delete reads users (see
/// `DirectoryBuilder.finish(users:)`). A store's load builds them on its reading thread,
/// which otherwise waits for the directory build.
public struct UsersBuilder: Sendable {
    fileprivate var users = Directory.usersMap()
    fileprivate var errors: [DataError] = []

    /// Sized for `expected`'s users.
    public init(expected: DirectoryBuilder.Expected = DirectoryBuilder.Expected()) {
        Directory.reserveUsers(&users, expected)
    }

    /// Validates and upserts one user record, as `DirectoryBuilder.add` does.
    public mutating func add(_ user: Record.User, line: Int = 0) {
        do {
            try Directory.upsert(user, into: &users)
        } catch {
            if errors.count < 100 { errors.append(DataError(line: line, field: error.field, message: error.message)) }
        }
    }
}

/// Lists of global assignments that members' records carried lately, by the identity of the
/// record's names array, with the list they were interned as: a store's load hands every
/// member that holds the same short list one shared array (`ListCache` in AuthzStore), so most
/// members skip resolving, joining and hashing their names (most of a thousand instructions).
/// Sound because global names resolve the same in every org (a global name wins over a custom
/// role of the same id), the array is held, so its address names it alone, and a list is
/// reused only while the table still holds it (`NameListTable.use`). A direct-mapped table
/// (a slot keeps the last array that hashed to it) of 1,024 slots, made at the first member of
/// a batch: with 64, the few hundred arrays a load circulates collided, and about half as
/// many members hit (see benchmarks/FINDINGS.md).
struct RecentLists: Sendable {
    private static let slots = 1024
    private var entries: [(names: [String], list: NameList)?] = []

    private static func identity(_ names: [String]) -> UInt? {
        names.withUnsafeBufferPointer { $0.baseAddress.map { UInt(bitPattern: $0) } }
    }

    private static func slot(_ id: UInt) -> Int { Int((id >> 4 ^ id >> 10) % UInt(slots)) }

    subscript(names: [String]) -> NameList? {
        get {
            guard !entries.isEmpty, let id = Self.identity(names), let e = entries[Self.slot(id)],
                  Self.identity(e.names) == id, e.names.count == names.count else { return nil }
            return e.list
        }
        set {
            guard let id = Self.identity(names) else { return }
            if entries.isEmpty { entries = Array(repeating: nil, count: Self.slots) }
            entries[Self.slot(id)] = newValue.map { (names, $0) }
        }
    }
}
