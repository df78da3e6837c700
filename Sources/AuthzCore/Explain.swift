/// Human messages for decisions. Off the decision path: a decision carries indices; this turns
/// them into names. The byte form allocates nothing, so an HTTP answer can carry its message
/// at the cost of a few copies.
extension Directory {
    /// A sentence saying why `decision` was made for `request` (lowercase, no final period,
    /// user input in backticks).
    public func explain(_ decision: Decision, for request: CheckRequest) -> String {
        var text = ""
        withBytes(request.subject) { s in
            withBytes(request.resource) { r in
                withBytes(request.org) { o in
                    explain(decision, subject: s, resource: r, org: o) { text += String(decoding: $0, as: UTF8.self) }
                }
            }
        }
        return text
    }

    /// The same sentence, handed piece by piece (UTF-8, in order) to `append`, for a request
    /// given as the bytes of its (already validated) subject, resource and org. A server
    /// appends the pieces straight into its answer, escaping as its format needs.
    public func explain(
        _ decision: Decision, subject: UnsafeRawBufferPointer, resource: UnsafeRawBufferPointer,
        org: UnsafeRawBufferPointer, into append: (UnsafeRawBufferPointer) -> Void
    ) {
        let m = MessageWriter()
        func put(_ s: StaticString) { m.put(s, append) }
        func quoted(_ b: UnsafeRawBufferPointer) { m.quoted(b, append) }
        func quoted(_ s: String) { m.quoted(s, append) }
        let action = policy.actions[Int(decision.action)]
        // The resource's id: what follows its first colon (a decided request has one).
        let target = resource.firstIndex(of: 0x3A).map { UnsafeRawBufferPointer(rebasing: resource[($0 + 1)...]) }
            ?? UnsafeRawBufferPointer(start: nil, count: 0)
        func what() {
            quoted(action.name)
            put(" on ")
            quoted(policy.resourceTypes[action.resourceType])
        }
        func subj() { quoted(subject) }
        func inOrg() {
            put("org ")
            quoted(org)
        }
        func permission() {
            if decision.permission >= 0 { quoted(policy.permissions[Int(decision.permission)]) }
        }
        switch decision.reason {
        case .owner:
            subj(); put(" is an owner of "); inOrg()
        case .membership:
            subj(); put(" is a member of "); inOrg(); put(", which is all "); what(); put(" requires")
        case .assignment, .apiKey:
            if decision.reason == .apiKey {
                put("api key "); subj(); put(" holds "); permission(); put(", and so does its user")
            } else {
                subj(); put(" holds "); permission()
            }
            writeGranting(decision, subject: subject, org: org, into: append)
        case .invitee:
            subj(); put(" is the invitee of invitation "); quoted(target)
        case .unknownKey:
            put("api key "); subj(); put(" does not exist")
        case .keyExpired:
            put("api key "); subj(); put(" has expired")
        case .keyWrongOrg:
            put("api key "); subj(); put(" does not belong to "); inOrg()
        case .sessionOnly:
            what(); put(" needs a signed-in user's session, not an api key")
        case .notMember:
            if !orgs.contains(org) {
                inOrg(); put(" does not exist")
            } else {
                subj(); put(" is not a member of "); inOrg()
            }
        case .notInvitee:
            subj(); put(" is not the invitee of a pending, unexpired invitation "); quoted(target)
            put(" of "); inOrg(); put(" with a verified email")
        case .ownerRequired:
            what(); put(" requires an owner of "); inOrg()
        case .missingPermission:
            if case .anyOf(let set) = action.requirement, set.count > 1 {
                what(); put(" requires ")
                var first = true
                var bits = set.bits
                while bits != 0 {
                    if !first { put(" or ") }
                    first = false
                    quoted(policy.permissions[bits.trailingZeroBitCount])
                    bits &= bits - 1
                }
                put(", and "); subj(); put(" holds none of them in "); inOrg()
            } else {
                what(); put(" requires "); permission(); put(", which "); subj(); put(" does not hold in "); inOrg()
            }
        case .personalOrg:
            inOrg(); put(" is a personal organization")
        case .orgSuspended:
            inOrg(); put(" is suspended")
        case .selfUpdate:
            put("a member cannot change their own access")
        case .lastOwner:
            quoted(action.target == .subject ? subject : target); put(" is the only owner of "); inOrg()
        case .notKeyOwner:
            put("api key "); quoted(target); put(" is not "); subj(); put("'s own key in "); inOrg()
            put(", and only an owner may act on others' keys")
        }
    }

    /// ` through `a`, `b``: the assignments (global, then the org's custom roles) of the
    /// subject's user that hold the granting permission; nothing when there are none.
    private func writeGranting(
        _ decision: Decision, subject: UnsafeRawBufferPointer, org: UnsafeRawBufferPointer,
        into append: (UnsafeRawBufferPointer) -> Void
    ) {
        let m = MessageWriter()
        var count = 0
        func name(_ b: UnsafeRawBufferPointer) {
            m.put(count == 0 ? " through " : ", ", append)
            count += 1
            m.quoted(b, append)
        }
        var global = decision.grantingAssignments
        while global != 0 {
            let i = global.trailingZeroBitCount
            global &= global - 1
            if i < policy.assignments.count { withBytes(policy.assignments[i].name) { name($0) } }
        }
        guard decision.permission >= 0, let colon = subject.firstIndex(of: 0x3A), colon > 0, colon < subject.count - 1 else {
            return
        }
        let kind = UnsafeRawBufferPointer(rebasing: subject[..<colon])
        let id = UnsafeRawBufferPointer(rebasing: subject[(colon + 1)...])
        let member: MemberEntry?
        if bytesEqual(kind, "api_key") {
            member = keys.withEntry(id) { (k: borrowing KeyEntry, payload: UnsafeRawBufferPointer) in
                members.find(org, UnsafeRawBufferPointer(rebasing: payload[Int(k.orgLength)...]))
            } ?? nil
        } else {
            member = members.find(org, id)
        }
        guard let member, member.assignments.hasCustomRoles else { return }
        member.assignments.forEachCustomRole { role in
            if roles.find(org, role)?.mask.contains(index: Int(decision.permission)) == true { name(role) }
        }
    }
}

/// Puts literals, names and request bytes into a message, with backticks around names and input.
struct MessageWriter {
    @inline(__always)
    func put(_ s: StaticString, _ append: (UnsafeRawBufferPointer) -> Void) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    @inline(__always)
    func quoted(_ b: UnsafeRawBufferPointer, _ append: (UnsafeRawBufferPointer) -> Void) {
        put("`", append)
        append(b)
        put("`", append)
    }

    @inline(__always)
    func quoted(_ s: String, _ append: (UnsafeRawBufferPointer) -> Void) {
        withBytes(s) { quoted($0, append) }
    }
}
