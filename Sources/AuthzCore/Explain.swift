/// Human messages for decisions. Off the hot path: a decision carries indices; this turns
/// them into names.
extension Directory {
    /// A sentence saying why `decision` was made for `request` (lowercase, no final period,
    /// user input in backticks).
    public func explain(_ decision: Decision, for request: CheckRequest) -> String {
        let action = policy.actions[Int(decision.action)]
        let what = "`\(action.name)` on `\(policy.resourceTypes[action.resourceType])`"
        let subject = "`\(request.subject)`"
        let org = "org `\(request.org)`"
        let permission = decision.permission >= 0 ? "`\(policy.permissions[Int(decision.permission)])`" : ""
        let target = request.resource.split(separator: ":", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        switch decision.reason {
        case .owner:
            return "\(subject) is an owner of \(org)"
        case .membership:
            return "\(subject) is a member of \(org), which is all \(what) requires"
        case .assignment, .apiKey:
            let grantedBy = grantingNames(decision, request: request)
            let via = grantedBy.isEmpty ? "" : " through \(grantedBy.map { "`\($0)`" }.joined(separator: ", "))"
            if decision.reason == .apiKey {
                return "api key \(subject) holds \(permission), and so does its user\(via)"
            }
            return "\(subject) holds \(permission)\(via)"
        case .invitee:
            return "\(subject) is the invitee of invitation `\(target)`"
        case .unknownKey:
            return "api key \(subject) does not exist"
        case .keyExpired:
            return "api key \(subject) has expired"
        case .keyWrongOrg:
            return "api key \(subject) does not belong to \(org)"
        case .sessionOnly:
            return "\(what) needs a signed-in user's session, not an api key"
        case .notMember:
            if orgs[request.org] == nil { return "\(org) does not exist" }
            return "\(subject) is not a member of \(org)"
        case .notInvitee:
            return "\(subject) is not the invitee of a pending, unexpired invitation `\(target)` of \(org) with a verified email"
        case .ownerRequired:
            return "\(what) requires an owner of \(org)"
        case .missingPermission:
            guard case .anyOf(let set) = action.requirement, set.count > 1 else {
                return "\(what) requires \(permission), which \(subject) does not hold in \(org)"
            }
            let names = policy.names(of: set).map { "`\($0)`" }.joined(separator: " or ")
            return "\(what) requires \(names), and \(subject) holds none of them in \(org)"
        case .personalOrg:
            return "\(org) is a personal organization"
        case .orgSuspended:
            return "\(org) is suspended"
        case .selfUpdate:
            return "a member cannot change their own access"
        case .lastOwner:
            return "`\(action.target == .subject ? request.subject : target)` is the only owner of \(org)"
        case .notKeyOwner:
            return "api key `\(target)` is not \(subject)'s own key in \(org), and only an owner may act on others' keys"
        }
    }

    /// The assignments (global, then custom) of the subject's user that hold the granting permission.
    private func grantingNames(_ decision: Decision, request: CheckRequest) -> [String] {
        var names = policy.assignmentNames(mask: decision.grantingAssignments)
        let parts = request.subject.split(separator: ":", maxSplits: 1).map(String.init)
        guard decision.permission >= 0, parts.count == 2 else { return names }
        let user = parts[0] == "api_key" ? keys[parts[1]]?.user : parts[1]
        guard let user, let m = members[request.org, user] else { return names }
        for c in m.customRoles where roles[request.org, c]?.mask.contains(index: Int(decision.permission)) == true {
            names.append(c)
        }
        return names
    }
}
