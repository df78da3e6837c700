/// Where a directory's bytes are, for profiling (`CheckProfile ... build` prints it): each
/// map's own storage (slots, entries, key and payload arena, as allocated), and the heap
/// objects its values hold (shared name lists, strings too long to be stored inline), with
/// glibc's chunk overhead. An estimate of what the directory keeps alive,
/// not of the resident size: pages never touched are allocated but not resident.
extension Directory {
    public struct MemoryUse: Sendable, CustomStringConvertible {
        public var name: String
        public var count = 0
        public var slotBytes = 0
        public var entryBytes = 0
        public var entryStride = 0
        public var entryCapacity = 0
        public var arenaBytes = 0
        public var arenaUsed = 0
        /// Heap objects (arrays, out-of-line strings) held by the values, and their bytes.
        public var objects = 0
        public var objectBytes = 0

        public var total: Int { slotBytes + entryBytes + arenaBytes + objectBytes }

        public var description: String {
            func mb(_ b: Int) -> String {
                let tenths = (b * 10 + 524_288) / 1_048_576
                return "\(tenths / 10).\(tenths % 10)"
            }
            return "\(name): \(count) entries (capacity \(entryCapacity), stride \(entryStride)); slots \(mb(slotBytes)) MB, entries \(mb(entryBytes)) MB, arena \(mb(arenaBytes)) MB (\(mb(arenaUsed)) used), \(objects) objects \(mb(objectBytes)) MB; total \(mb(total)) MB"
        }
    }

    @_spi(Profiling)
    public func memoryBreakdown() -> [MemoryUse] {
        func chunk(_ n: Int) -> Int { max(32, (n + 8 + 15) & ~15) }
        func string(_ s: String, _ use: inout MemoryUse) {
            guard s.utf8.count > 15 else { return }
            use.objects += 1
            use.objectBytes += chunk(32 + s.utf8.count + 1)
        }
        func table<V>(_ name: String, _ map: ByteMap<V>, _ values: (V, inout MemoryUse) -> Void) -> MemoryUse {
            var use = MemoryUse(name: name)
            let s = map.storageStats()
            use.count = map.count
            use.slotBytes = s.slotBytes
            use.entryBytes = s.entryBytes
            use.entryStride = MemoryLayout<ByteMapEntry<V>>.stride
            use.entryCapacity = s.entryCapacity
            use.arenaBytes = s.arenaBytes
            use.arenaUsed = s.arenaUsed
            map.forEachBytes { _, v, _ in values(copy v, &use) }
            return use
        }
        func memberIndex() -> MemoryUse {
            var use = MemoryUse(name: "members (uuid ids)")
            use.count = members.index.count
            use.entryStride = MemberIndexShard.stride
            use.entryCapacity = members.index.recordCapacity
            use.entryBytes = members.index.recordBytes
            return use
        }
        func lists(_ name: String, _ t: NameListTable) -> MemoryUse {
            var use = table(name, t.map) { _, _ in }
            t.forEach { list, _ in
                use.objects += 1
                use.objectBytes += chunk(list.allocatedBytes)
            }
            return use
        }
        return [
            table("orgs", orgs) { _, _ in },
            table("users", users) { _, _ in },
            memberIndex(),
            table("members (other ids)", members.others) { _, _ in },
            table("roles", roles) { _, _ in },
            table("keys", keys) { _, _ in },
            table("invitations", invitations) { i, use in string(i.role, &use); string(i.status, &use) },
            lists("assignment lists", assignmentLists),
            lists("permission lists", permissionLists),
        ]
    }
}

extension ByteMap {
    struct StorageStats {
        var slotBytes = 0, entryBytes = 0, entryCapacity = 0, arenaBytes = 0, arenaUsed = 0
    }

    /// Bytes allocated by the shards, with glibc's chunk overhead (and the shard objects).
    func storageStats() -> StorageStats {
        func chunk(_ n: Int) -> Int { max(32, (n + 8 + 15) & ~15) }
        var s = StorageStats()
        var seen = Set<ObjectIdentifier>()
        for shard in shardsForStats where seen.insert(ObjectIdentifier(shard)).inserted {
            s.slotBytes += chunk((shard.slotMask + 1) * MemoryLayout<UInt64>.stride)
            s.entryBytes += chunk(max(shard.entryCapacity, 1) * MemoryLayout<ByteMapEntry<Value>>.stride) + chunk(80)
            s.entryCapacity += shard.entryCapacity
            s.arenaBytes += chunk(max(shard.arenaCapacity, 1))
            s.arenaUsed += shard.arenaUsed
        }
        return s
    }
}
