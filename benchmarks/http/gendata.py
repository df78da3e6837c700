#!/usr/bin/env python3
"""Deterministic membership data and check queries for the HTTP benchmark.

Writes DIR/data.jsonl (sync-format records: orgs with 1-3 owners, members with 0-3
assignments, custom roles, personal and suspended orgs, api keys, invitations) and
DIR/queries.txt (one `/v1/check?...` path per line: a mix that hits allow and deny,
session users and api keys, members and strangers).

A stand-in until `authz generate` lands; same seed, same files.
usage: gendata.py DIR [--orgs 10000] [--members 100000] [--queries 20000] [--seed 42]
"""
import argparse
import json
import os
import random

ASSIGNMENTS = ["developer", "sandboxes_admin", "snapshots_admin", "registries_admin",
               "volumes_admin", "auditor", "infrastructure_admin"]
PERMISSIONS = ["write:registries", "delete:registries", "write:snapshots", "delete:snapshots",
               "write:sandboxes", "delete:sandboxes", "read:volumes", "write:volumes",
               "delete:volumes", "read:audit_logs"]
# resource type -> actions (policies/daytona.yaml), weighted towards the everyday ones.
ACTIONS = {
    "sandbox": ["read", "create", "start", "resize", "fork", "update", "stop", "archive", "delete"],
    "snapshot": ["read", "create", "activate", "update", "deactivate", "delete"],
    "registry": ["read", "create", "update", "delete", "push"],
    "volume": ["read", "create", "update", "delete"],
    "organization": ["read", "read_usage", "update", "delete"],
    "member": ["read", "update_access", "remove"],
    "runner": ["read", "create", "update", "delete"],
    "audit_log": ["read"],
    "api_key": ["read", "create", "delete"],
}
TYPES = ["sandbox"] * 5 + ["snapshot"] * 2 + ["registry", "volume", "organization", "member",
                                              "runner", "audit_log", "api_key"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--orgs", type=int, default=10000)
    p.add_argument("--members", type=int, default=100000)
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    users = max(1, a.members * 6 // 10)
    per_org = max(1, a.members // a.orgs)
    org_members = []  # org index -> [(user, role)]
    keys = []         # (key id, org, user)
    with open(os.path.join(a.dir, "data.jsonl"), "w") as out:
        w = lambda r: out.write(json.dumps(r, separators=(",", ":")) + "\n")
        for u in range(users):
            w({"kind": "user", "id": f"u{u}", "email": f"u{u}@example.com", "email_verified": True})
        for o in range(a.orgs):
            org = f"org{o}"
            personal = rng.random() < 0.05
            suspended = not personal and rng.random() < 0.03
            w({"kind": "org", "id": org, "personal": personal, "suspended": suspended,
               "suspended_until": None})
            custom = []
            if not personal and rng.random() < 0.2:
                custom = [f"ci-{o}"]
                w({"kind": "role", "org": org, "id": custom[0],
                   "permissions": rng.sample(PERMISSIONS, rng.randint(1, 3))})
            n = 1 if personal else per_org
            chosen = rng.sample(range(users), n)
            owners = 1 if personal else rng.randint(1, min(3, n))
            ms = []
            for i, u in enumerate(chosen):
                role = "owner" if i < owners else "member"
                assignments = [] if role == "owner" else rng.sample(ASSIGNMENTS + custom, rng.randint(0, min(3, len(ASSIGNMENTS + custom))))
                w({"kind": "member", "org": org, "user": f"u{u}", "role": role, "assignments": assignments})
                ms.append((f"u{u}", role))
            org_members.append(ms)
            if not personal and rng.random() < 0.3:
                u, _ = rng.choice(ms)
                kid = f"k{len(keys)}"
                w({"kind": "api_key", "id": kid, "org": org, "user": u,
                   "permissions": rng.sample(PERMISSIONS, rng.randint(1, 4)), "expires_at": None})
                keys.append((kid, org, u))
            if not personal and rng.random() < 0.1:
                w({"kind": "invitation", "id": f"inv{o}", "org": org, "email": f"new{o}@example.com",
                   "role": "member", "assignments": ["developer"], "status": "pending",
                   "expires_at": None})
    with open(os.path.join(a.dir, "queries.txt"), "w") as out:
        for _ in range(a.queries):
            o = rng.randrange(a.orgs)
            org = f"org{o}"
            r = rng.random()
            if r < 0.1 and keys:
                kid, org, _ = rng.choice(keys)
                subject = f"api_key:{kid}"
            elif r < 0.2:
                subject = f"user:u{rng.randrange(users)}"  # most likely not a member
            else:
                subject = f"user:{rng.choice(org_members[o])[0]}"
            t = rng.choice(TYPES)
            action = rng.choice(ACTIONS[t])
            if t == "member":
                rid = rng.choice(org_members[o])[0]
            elif t == "api_key":
                rid = f"k{rng.randrange(max(1, len(keys)))}"
            else:
                rid = f"{t[:2]}{rng.randrange(100000)}"
            out.write(f"/v1/check?subject={subject}&action={action}&resource={t}:{rid}&org={org}\n")


if __name__ == "__main__":
    main()
