/// The decision function. Pure: everything it reads is in the directory (and its policy) or
/// in its arguments, `now` included.
///
/// The steps, in order; the first that fails gives the reason:
/// 1. The request is well formed, checked in this order: `subject` is `user:<id>` or
///    `api_key:<id>`, `resource` is `<type>:<id>`, the resource type exists, the action is not
///    empty and the type has it, `org` is not empty. Otherwise a `CheckError`, never a decision.
/// 2. An api_key subject: the action is not `session_only` (`session_only`), the key exists
///    (`unknown_key`), is unexpired (`key_expired`: `expires_at` <= now), belongs to the org
///    (`key_wrong_org`). Its user is the subject's user from here on.
/// 3. Membership: the org exists and the user is a member of it (`not_member`); for an action
///    whose requirement is `invitee`, the org exists instead (`not_invitee`).
/// 4. Effective permissions: a session has its assignments' permissions (an owner all of
///    them when the policy says so); a key, its own permissions intersected with its user's.
/// 5. The requirement: `member` holds; `owner` needs the owner role (`owner_required`) and a
///    session (`session_only`); a permission list needs one of them (`missing_permission`).
/// 6. The conditions, in catalog order: `not_personal` (`personal_org`), `not_suspended`
///    (`org_suspended`), `not_self` (`self_update`), `not_last_owner` (`last_owner`),
///    `invitee` (`not_invitee`), `own_key_or_owner` (`not_key_owner`).
extension Directory {
    /// Decides a request given as strings.
    public func check(_ request: CheckRequest, now: Timestamp) throws(CheckError) -> Decision {
        try check(subject: request.subject, action: request.action, resource: request.resource, org: request.org, now: now)
    }

    public func check(subject: String, action: String, resource: String, org: String, now: Timestamp) throws(CheckError) -> Decision {
        let result: Result<Decision, CheckError> = withBytes(subject) { s in
            withBytes(action) { a in
                withBytes(resource) { r in
                    withBytes(org) { o in decide(subject: s, action: a, resource: r, org: o, now: now) }
                }
            }
        }
        return try result.get()
    }

    /// Decides a request given as UTF-8 bytes (slices of a query string, say). Allocates
    /// nothing unless the request is malformed.
    public func check(
        subject: UnsafeRawBufferPointer, action: UnsafeRawBufferPointer, resource: UnsafeRawBufferPointer,
        org: UnsafeRawBufferPointer, now: Timestamp
    ) throws(CheckError) -> Decision {
        try decide(subject: subject, action: action, resource: resource, org: org, now: now).get()
    }

    /// Resolves `resource` + `action` to a compiled action, or says what is wrong with them.
    public func resolveAction(resource: UnsafeRawBufferPointer, action: UnsafeRawBufferPointer) -> Result<CompiledAction, CheckError> {
        guard let colon = resource.firstIndex(of: 0x3A), colon > 0, colon < resource.count - 1 else {
            return .failure(requestError(.invalidResource, "resource", resource, "must be `<type>:<id>`"))
        }
        let type = UnsafeRawBufferPointer(rebasing: resource[..<colon])
        guard let typeID = policy.typeID(type) else {
            return .failure(requestError(.unknownResourceType, "resource", type, "is not a resource type of the policy"))
        }
        guard !action.isEmpty else {
            return .failure(requestError(.invalidAction, "action", action, "must not be empty"))
        }
        guard let id = policy.actionID(type, action) else {
            let names = policy.actions(ofType: typeID).map(\.name).joined(separator: ", ")
            return .failure(requestError(.unknownAction, "action", action, "is not an action of `\(policy.resourceTypes[typeID])` (it has: \(names))"))
        }
        return .success(policy.actions[id])
    }

    private func requestError(_ code: CheckError.Code, _ parameter: String, _ value: UnsafeRawBufferPointer, _ what: String) -> CheckError {
        let text = String(decoding: value, as: UTF8.self)
        return CheckError(code: code, parameter: parameter, message: "\(parameter) `\(text)` \(what)")
    }

    /// `user:` and `api_key:` as little-endian words.
    @inline(__always) static var userWord: UInt32 { 0x7265_7375 }
    @inline(__always) static var apiKeyWord: UInt64 { 0x3A79_656B_5F69_7061 }

    /// The position of the first `:` in `b`, eight bytes at a time (a resource type is a
    /// few bytes; a plain loop took ~4 instructions a byte).
    @inline(__always)
    private func colon(_ b: UnsafeRawBufferPointer) -> Int? {
        guard let p = b.baseAddress else { return nil }
        let n = b.count
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        var i = 0
        while i + 8 <= n {
            // A zero byte of x is a colon of the word; the lowest flagged byte is exact.
            let x = p.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ (ones &* 0x3A)
            let found = (x &- ones) & ~x & highs
            if found != 0 { return i + UInt64(littleEndian: found).trailingZeroBitCount / 8 }
            i += 8
        }
        while i < n {
            if p.load(fromByteOffset: i, as: UInt8.self) == 0x3A { return i }
            i += 1
        }
        return nil
    }

    @inline(__always)
    private func split(_ b: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer)? {
        guard let colon = colon(b), colon > 0, colon < b.count - 1 else { return nil }
        return (UnsafeRawBufferPointer(rebasing: b[..<colon]), UnsafeRawBufferPointer(rebasing: b[(colon + 1)...]))
    }

    @inline(__always)
    private func expired(_ t: Timestamp?, _ now: Timestamp) -> Bool {
        guard let t else { return false }
        return !(now < t)
    }

    /// The effective permissions of a session user who is this member: its global
    /// assignments' permissions and its custom roles' (resolved now, so a role change applies
    /// at once), all of them for an owner when the policy says so. `assignments` is the
    /// member's list, unretained: the directory holds it for as long as the check runs.
    @inline(__always)
    func sessionPermissions(role: RoleKind, assignments: Unmanaged<NameListStorage>, org: UnsafeRawBufferPointer) -> PermissionSet {
        if role == .owner && ownerHasAllPermissions { return allPermissions }
        return assignments._withUnsafeGuaranteedRef { list in
            let fields = list.fields
            var p = fields.base
            if fields.customCount > 0 {
                list.forEachCustomRole { c in
                    if let mask = roles.withValue(org, c, { $0.mask }) { p.formUnion(mask) }
                }
            }
            return p
        }
    }

    /// What the decision needs of a member, read in place by a closure that captures no
    /// `self` (a capture copied the whole `Directory`: two dozen retains and releases).
    struct MemberFacts {
        var role: RoleKind
        /// Its assignment list, unretained (no ARC).
        var assignments: Unmanaged<NameListStorage>
    }

    /// The payload of a member in `members.others` (ids that are not both UUIDs): its
    /// assignment list's address (unretained, as the entry next to it holds it: the
    /// directory's `assignmentLists` owns the list; the two are only ever written together, by
    /// `upsert`), then 1 for an owner, 0 for a member.
    static var memberFactsLength: Int { 9 }

    static func writeMemberFacts(role: RoleKind, list: Unmanaged<NameListStorage>, to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: UInt64(UInt(bitPattern: list.toOpaque())), as: UInt64.self)
        p.storeBytes(of: role == .owner ? 1 : 0, toByteOffset: 8, as: UInt8.self)
    }

    @inline(__always)
    static func memberFacts(_ p: UnsafeRawBufferPointer) -> MemberFacts {
        let bits = UInt(truncatingIfNeeded: p.loadUnaligned(as: UInt64.self))
        return MemberFacts(role: p.load(fromByteOffset: 8, as: UInt8.self) == 1 ? .owner : .member,
                           assignments: Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: bits)!))
    }

    /// What the decision needs of an api key, likewise.
    struct KeyFacts {
        var expired: Bool
        var rightOrg: Bool
        var mask: PermissionSet
        /// The key's user id, in the directory's storage.
        var user: UnsafeRawBufferPointer
    }

    func decide(
        subject: UnsafeRawBufferPointer, action: UnsafeRawBufferPointer, resource: UnsafeRawBufferPointer,
        org orgID: UnsafeRawBufferPointer, now: Timestamp
    ) -> Result<Decision, CheckError> {
        // 1. The request. `user:` or `api_key:` and at least one byte after it is what
        // splitting at the first colon and comparing the kind accepts: compared as words.
        let isKey: Bool
        let subjectID: UnsafeRawBufferPointer
        if let p = subject.baseAddress, subject.count > 5,
           p.loadUnaligned(as: UInt32.self) == Self.userWord, p.load(fromByteOffset: 4, as: UInt8.self) == 0x3A {
            isKey = false
            subjectID = UnsafeRawBufferPointer(start: p + 5, count: subject.count - 5)
        } else if let p = subject.baseAddress, subject.count > 8, p.loadUnaligned(as: UInt64.self) == Self.apiKeyWord {
            isKey = true
            subjectID = UnsafeRawBufferPointer(start: p + 8, count: subject.count - 8)
        } else {
            return .failure(requestError(.invalidSubject, "subject", subject, "must be `user:<id>` or `api_key:<id>`"))
        }
        // The action: the fast path resolves it to an id; any failure is explained by
        // `resolveAction`, which checks the same things in the same order.
        let actions = actionTable
        guard let (type, target) = split(resource), let id = actions.find(type, action) else {
            switch resolveAction(resource: resource, action: action) {
            case .failure(let e): return .failure(e)
            case .success:
                // Unreachable (both paths check the same things), but never trap on a
                // client's request: refuse it.
                return .failure(requestError(.unknownAction, "action", action, "could not be resolved"))
            }
        }
        guard !orgID.isEmpty else {
            return .failure(CheckError(code: .invalidOrg, parameter: "org", message: "org must not be empty"))
        }
        let rule = actions.rules[id]

        // 2. The api key.
        if !isKey { return .success(decideMember(rule, id: id, userID: subjectID, keyMask: nil, orgID: orgID, target: target, now: now)) }
        if rule.conditions.contains(.sessionOnly) { return .success(Decision(.sessionOnly, action: id)) }
        let found = keys.withEntry(subjectID) { (k: borrowing KeyEntry, payload: UnsafeRawBufferPointer) in
            KeyFacts(expired: k.expiresAt.value.map { !(now < $0) } ?? false,
                     rightOrg: bytesEqual(UnsafeRawBufferPointer(rebasing: payload[..<Int(k.orgLength)]), orgID),
                     mask: k.mask, user: UnsafeRawBufferPointer(rebasing: payload[Int(k.orgLength)...]))
        }
        guard let key = found else { return .success(Decision(.unknownKey, action: id)) }
        if key.expired { return .success(Decision(.keyExpired, action: id)) }
        guard key.rightOrg else { return .success(Decision(.keyWrongOrg, action: id)) }
        // Its user is the subject's user from here on.
        return .success(decideMember(rule, id: id, userID: key.user, keyMask: key.mask, orgID: orgID, target: target, now: now))
    }

    @inline(__always)
    private func decideMember(
        _ a: ActionRule, id: Int, userID: UnsafeRawBufferPointer, keyMask: PermissionSet?, orgID: UnsafeRawBufferPointer,
        target: UnsafeRawBufferPointer, now: Timestamp
    ) -> Decision {
        let isKey = keyMask != nil

        // 3. Membership (or, for an invitee action, the org alone). A member's org exists
        // (a member record needs its org, and deleting an org deletes its members), so the
        // org is looked up only when the member is not found and the action needs the
        // invitee, or when a condition reads the org (below): a lookup is up to three cache
        // misses at a million members.
        let member = members.facts(org: orgID, user: userID)
        if member == nil {
            // Without the org, the answer would be `not_member` as well.
            guard a.requirement == .invitee else { return Decision(.notMember, action: id) }
            guard orgs.contains(orgID) else { return Decision(.notInvitee, action: id) }
        }
        let isOwnerSession = !isKey && member?.role == .owner

        // 4 and 5. Effective permissions and the requirement.
        var grant: Reason
        var grantPermission = -1
        var granting: UInt64 = 0
        switch a.requirement {
        case .member:
            grant = .membership
        case .invitee:
            grant = .invitee
        case .owner:
            guard member!.role == .owner else { return Decision(.ownerRequired, action: id) }
            guard !isKey else { return Decision(.sessionOnly, action: id) }
            grant = .owner
        case .anyOf(let required):
            let m = member!
            var effective = sessionPermissions(role: m.role, assignments: m.assignments, org: orgID)
            if let keyMask { effective.formIntersection(keyMask) }
            let held = effective.bits & required.bits
            guard held != 0 else {
                return Decision(.missingPermission, action: id, permission: required.bits.trailingZeroBitCount)
            }
            grantPermission = held.trailingZeroBitCount
            if isOwnerSession && ownerHasAllPermissions {
                grant = .owner
            } else {
                grant = isKey ? .apiKey : .assignment
                granting = m.assignments._withUnsafeGuaranteedRef { $0.fields.globalMask } & assignmentsGranting[grantPermission]
            }
        }

        // 6. Conditions, only for the actions that carry them.
        let conditions = a.conditions
        if conditions.rawValue & ~(1 << Condition.sessionOnly.rawValue) != 0 {
            // The org, for the conditions that read it: it exists (see step 3), but should it
            // not, answer as step 3 did when it looked the org up first.
            var org = OrgEntry(suspendedUntil: PackedTimestamp(nil), personal: false, suspended: false)
            if conditions.rawValue & Self.orgConditions != 0 {
                guard let o = orgs.find(orgID) else {
                    return Decision(a.requirement == .invitee ? .notInvitee : .notMember, action: id)
                }
                org = o
            }
            if conditions.contains(.notPersonal) && org.personal {
                return Decision(.personalOrg, action: id)
            }
            if conditions.contains(.notSuspended) && org.suspended {
                if !(org.suspendedUntil.value.map { !(now < $0) } ?? false) { return Decision(.orgSuspended, action: id) }
            }
            let targetUser = a.target == .subject ? userID : target
            if conditions.contains(.notSelf) && bytesEqual(targetUser, userID) {
                return Decision(.selfUpdate, action: id)
            }
            if conditions.contains(.notLastOwner), org.ownerCount <= 1,
               members.find(orgID, targetUser)?.role == .owner {
                return Decision(.lastOwner, action: id)
            }
            if conditions.contains(.invitee) && !isInvitee(userID: userID, invitation: target, orgID: orgID, now: now) {
                return Decision(.notInvitee, action: id)
            }
            if conditions.contains(.ownKeyOrOwner) && !isOwnerSession {
                let owns = keys.withEntry(target) { (k: borrowing KeyEntry, payload: UnsafeRawBufferPointer) in
                    bytesEqual(UnsafeRawBufferPointer(rebasing: payload[..<Int(k.orgLength)]), orgID)
                        && bytesEqual(UnsafeRawBufferPointer(rebasing: payload[Int(k.orgLength)...]), userID)
                }
                guard owns == true else { return Decision(.notKeyOwner, action: id) }
            }
        }
        return Decision(grant, action: id, permission: grantPermission, granting: granting)
    }

    /// The conditions that read the org's entry.
    @inline(__always)
    static var orgConditions: UInt8 {
        1 << Condition.notPersonal.rawValue | 1 << Condition.notSuspended.rawValue | 1 << Condition.notLastOwner.rawValue
    }

    private func isInvitee(userID: UnsafeRawBufferPointer, invitation: UnsafeRawBufferPointer, orgID: UnsafeRawBufferPointer, now: Timestamp) -> Bool {
        let invitee = invitations.withEntry(invitation) { (inv: borrowing InvitationEntry, payload: UnsafeRawBufferPointer) -> Bool in
            let orgLength = Int(inv.orgLength)
            guard inv.open, !expired(inv.expiresAt.value, now),
                  bytesEqual(UnsafeRawBufferPointer(rebasing: payload[..<orgLength]), orgID) else { return false }
            let invited = Directory.invitedEmail(inv, payload)
            return users.withEntry(userID) { (user: borrowing UserEntry, email: UnsafeRawBufferPointer) -> Bool in
                Directory.isInvitee(user, email: email, invited: invited)
            } ?? false
        }
        return invitee ?? false
    }
}
