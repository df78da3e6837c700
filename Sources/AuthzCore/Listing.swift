/// Listings over a snapshot: what one subject may do in an org (`permissions`), and which
/// users may do one thing (`subjects`). Pure, like `check`: both are answered by the same
/// decision function, so a listing never disagrees with a check.

/// What a subject may do in an organization, for each resource type of the policy.
public struct PermissionListing: Sendable, Hashable {
    /// An action allowed only if conditions on the target resource hold (`not_self`,
    /// `not_last_owner`, `invitee`, `own_key_or_owner`): a listing has no target to test.
    public struct ConditionalAction: Sendable, Hashable {
        public var action: String
        public var conditions: [Condition]
    }

    public struct ResourceTypeEntry: Sendable, Hashable {
        public var resourceType: String
        /// Actions allowed on every resource of this type, in declaration order.
        public var allowed: [String]
        /// Actions allowed depending on the target, in declaration order.
        public var conditional: [ConditionalAction]
    }

    public var resourceTypes: [ResourceTypeEntry]
}

extension Directory {
    /// A target id no record can have (ids may not contain control characters): deciding on
    /// it makes every target-dependent condition either pass vacuously or fail, and the
    /// listing reports those actions as conditional.
    private static let noTarget = "\u{1F}"

    /// The conditions of `action` whose outcome depends on the target resource, for a subject
    /// that is (or is not) an owner session.
    private func targetConditions(_ action: CompiledAction, ownerSession: Bool) -> [Condition] {
        action.conditions.conditions.filter { c in
            switch c {
            case .notSelf, .notLastOwner: action.target == .resource
            case .invitee: true
            case .ownKeyOrOwner: !ownerSession
            case .sessionOnly, .notPersonal, .notSuspended: false
            }
        }
    }

    /// For each resource type, the actions `subject` may take in `org` at `now`. Throws for a
    /// malformed subject or an empty org, as `check` does.
    public func permissions(subject: String, org: String, now: Timestamp) throws(CheckError) -> PermissionListing {
        let parts = subject.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "user" || parts[0] == "api_key", !parts[1].isEmpty else {
            throw CheckError(code: .invalidSubject, parameter: "subject", message: "subject `\(subject)` must be `user:<id>` or `api_key:<id>`")
        }
        guard !org.isEmpty else { throw CheckError(code: .invalidOrg, parameter: "org", message: "org must not be empty") }
        let orgExists = orgs[org] != nil
        let ownerSession = parts[0] == "user" && members[org, String(parts[1])]?.role == .owner
        var entries: [PermissionListing.ResourceTypeEntry] = []
        for (t, typeName) in policy.resourceTypes.enumerated() {
            var entry = PermissionListing.ResourceTypeEntry(resourceType: typeName, allowed: [], conditional: [])
            let resource = typeName + ":" + Directory.noTarget
            for action in policy.actions(ofType: t) {
                let decision = try check(subject: subject, action: action.name, resource: resource, org: org, now: now)
                let conditions = targetConditions(action, ownerSession: ownerSession)
                if conditions.isEmpty {
                    if decision.allowed { entry.allowed.append(action.name) }
                    continue
                }
                let failedOnTarget: Bool = switch decision.reason {
                case .selfUpdate, .lastOwner, .notKeyOwner: true
                case .notInvitee: orgExists
                default: false
                }
                if decision.allowed || failedOnTarget {
                    entry.conditional.append(.init(action: action.name, conditions: conditions))
                }
            }
            entries.append(entry)
        }
        return PermissionListing(resourceTypes: entries)
    }

    /// The users (as `user:<id>` subjects, sorted) whose session may take `action` on
    /// `resource` in `org` at `now`: exactly those for whom `check` allows it. Throws for a
    /// malformed request, as `check` does.
    ///
    /// A scan over every member of every org, filtered by org: O(members) per call. Good
    /// enough for an administrative listing; an index of members by org would make it
    /// O(members of the org) if it ever sits on a hot path. An action an invitee may take
    /// without being a member (accept, decline) also passes over the users' emails: O(users).
    public func subjects(org: String, action: String, resource: String, now: Timestamp) throws(CheckError) -> [String] {
        let resolved: Result<CompiledAction, CheckError> = withBytes(resource) { r in withBytes(action) { a in resolveAction(resource: r, action: a) } }
        let compiled = try resolved.get()
        guard !org.isEmpty else { throw CheckError(code: .invalidOrg, parameter: "org", message: "org must not be empty") }
        var candidates = Set(members.users(of: org))
        // Only an invitee action (accept, decline) admits a non-member: the users whose verified
        // email is the invitation's are candidates too (`check` decides the rest: open, this
        // org, not expired). One pass over the users, comparing bytes, for these actions only.
        if compiled.requirement == .invitee, let colon = resource.firstIndex(of: ":") {
            withBytes(String(resource[resource.index(after: colon)...])) { target in
                _ = invitations.withEntry(target) { (inv: borrowing InvitationEntry, payload: UnsafeRawBufferPointer) in
                    let invited = Directory.invitedEmail(inv, payload)
                    users.forEachBytes { id, user, email in
                        if Directory.isInvitee(user, email: email, invited: invited) { candidates.insert(String(decoding: id, as: UTF8.self)) }
                    }
                }
            }
        }
        var out: [String] = []
        for user in candidates.sorted() {
            let subject = "user:" + user
            if try check(subject: subject, action: action, resource: resource, org: org, now: now).allowed {
                out.append(subject)
            }
        }
        return out
    }
}
