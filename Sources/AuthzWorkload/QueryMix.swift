import AuthzCore

extension Corpus {
    /// `count` check requests over the corpus, hitting allow and deny, every action of the
    /// policy drawn uniformly:
    /// - 70% sessions of members of the org (the resource a fellow member, one of their
    ///   keys, an invitation of the org, or a fresh id, as the type calls for);
    /// - 12% api keys (10% of them sent with another org);
    /// - 4% invitees answering an invitation (`invitee` actions);
    /// - 9% strangers: an existing user and an org they are most likely not in;
    /// - 5% unknown subjects (users and keys that do not exist).
    public func queries(_ count: Int, seed: UInt64, policy: CompiledPolicy) -> [CheckRequest] {
        var rng = SplitMix64(seed: seed)
        let actions = policy.actions
        let inviteeActions = actions.filter { $0.requirement == .invitee }
        let invited = invitations.filter { $0.invitee >= 0 }
        var out: [CheckRequest] = []
        out.reserveCapacity(count)

        func resource(_ rng: inout SplitMix64, _ a: CompiledAction, membership m: Int) -> String {
            let type = policy.resourceTypes[a.resourceType]
            let ms = memberships[m]
            let id: String
            switch type {
            case "organization":
                id = orgIDs[Int(ms.org)]
            case "member":
                let range = orgMembers[Int(ms.org)]
                id = rng.chance(0.4) ? userIDs[Int(ms.user)]
                    : userIDs[Int(memberships[Int(range.lowerBound) + rng.below(range.count)].user)]
            case "api_key":
                if membershipKey[m] >= 0 && rng.chance(0.6) {
                    id = keys[Int(membershipKey[m])].id
                } else if !keys.isEmpty {
                    id = keys[rng.below(keys.count)].id
                } else {
                    id = rng.uuid()
                }
            case "invitation":
                let range = orgInvitations[Int(ms.org)]
                id = range.isEmpty ? rng.uuid() : invitations[Int(range.lowerBound) + rng.below(range.count)].id
            default:
                id = rng.uuid()
            }
            return "\(type):\(id)"
        }

        while out.count < count {
            var a = actions[rng.below(actions.count)]
            let r = rng.below(100)
            if r < 70 {
                let m = rng.below(memberships.count)
                let ms = memberships[m]
                out.append(CheckRequest(subject: "user:\(userIDs[Int(ms.user)])", action: a.name,
                                        resource: resource(&rng, a, membership: m), org: orgIDs[Int(ms.org)]))
            } else if r < 82 && !keys.isEmpty {
                let k = keys[rng.below(keys.count)]
                let m = Int(k.membership)
                let org = rng.chance(0.9) ? orgIDs[Int(memberships[m].org)] : orgIDs[rng.below(orgIDs.count)]
                out.append(CheckRequest(subject: "api_key:\(k.id)", action: a.name,
                                        resource: resource(&rng, a, membership: m), org: org))
            } else if r < 86 && !invited.isEmpty && !inviteeActions.isEmpty {
                let inv = invited[rng.below(invited.count)]
                a = inviteeActions[rng.below(inviteeActions.count)]
                out.append(CheckRequest(subject: "user:\(userIDs[Int(inv.invitee)])", action: a.name,
                                        resource: "\(policy.resourceTypes[a.resourceType]):\(inv.id)",
                                        org: orgIDs[Int(inv.org)]))
            } else if r < 95 {
                let org = rng.below(orgIDs.count)
                let type = policy.resourceTypes[a.resourceType]
                out.append(CheckRequest(subject: "user:\(userIDs[rng.below(userIDs.count)])", action: a.name,
                                        resource: "\(type):\(type == "organization" ? orgIDs[org] : rng.uuid())",
                                        org: orgIDs[org]))
            } else {
                let type = policy.resourceTypes[a.resourceType]
                out.append(CheckRequest(subject: rng.chance(0.5) ? "user:\(rng.uuid())" : "api_key:\(rng.uuid())",
                                        action: a.name, resource: "\(type):\(rng.uuid())",
                                        org: orgIDs[rng.below(orgIDs.count)]))
            }
        }
        return out
    }

    /// `count` (org, user) pairs of members, for `permissions`-style listings.
    public func subjects(_ count: Int, seed: UInt64) -> [(org: String, user: String)] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let m = memberships[rng.below(memberships.count)]
            return (orgIDs[Int(m.org)], userIDs[Int(m.user)])
        }
    }
}
