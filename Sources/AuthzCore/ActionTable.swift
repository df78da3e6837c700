/// The actions of a policy by the bytes of their type and name, and what the decision reads of
/// each (`ActionRule`), for the check path. A policy has a few dozen actions: the table is a
/// few hundred slots, always in cache, so what a lookup costs is instructions. Through a
/// `ByteMap` (the whole-key hash of both parts, a shard head, a composite-key comparison) it
/// took ~260 instructions a check; here the hash reads at most two words of each part and a
/// lookup is ~40.
///
/// Immutable once built, its storage reached through raw pointers in `let` properties (no
/// retain, no exclusivity check), and shared by every copy of the policy and directory.
final class ActionTable: @unchecked Sendable {
    /// Action id + 1 at each slot, 0 for none.
    private let slots: UnsafeMutablePointer<Int32>
    private let slotMask: Int
    /// Every type and action name, back to back.
    private let names: UnsafeMutablePointer<UInt8>
    /// Per action id: where its type's and its own name's bytes are in `names`.
    private let spans: UnsafeMutablePointer<Span>
    /// Per action id: its rule.
    let rules: UnsafeMutablePointer<ActionRule>
    let count: Int

    struct Span {
        var typeOffset: Int32
        var typeLength: Int32
        var actionOffset: Int32
        var actionLength: Int32
    }

    /// `actions` in id order: no two with the same type and name (the policy compiler refuses those).
    init(_ actions: [(type: String, name: String, rule: ActionRule)]) {
        count = actions.count
        var slotCount = 16
        while slotCount < 4 * count { slotCount *= 2 }
        slotMask = slotCount - 1
        slots = .allocate(capacity: slotCount)
        slots.initialize(repeating: 0, count: slotCount)
        let bytes = actions.reduce(0) { $0 + $1.type.utf8.count + $1.name.utf8.count }
        names = .allocate(capacity: max(bytes, 1))
        spans = .allocate(capacity: max(count, 1))
        rules = .allocate(capacity: max(count, 1))
        var at = 0
        for (id, a) in actions.enumerated() {
            let typeOffset = at
            for b in a.type.utf8 { names[at] = b; at += 1 }
            let actionOffset = at
            for b in a.name.utf8 { names[at] = b; at += 1 }
            (spans + id).initialize(to: Span(typeOffset: Int32(typeOffset), typeLength: Int32(actionOffset - typeOffset),
                                             actionOffset: Int32(actionOffset), actionLength: Int32(at - actionOffset)))
            (rules + id).initialize(to: a.rule)
            let h = withBytes(a.type) { t in withBytes(a.name) { n in Self.hash(t, n) } }
            var i = h & slotMask
            while slots[i] != 0 { i = (i + 1) & slotMask }
            slots[i] = Int32(id + 1)
        }
    }

    deinit {
        slots.deallocate()
        names.deallocate()
        spans.deallocate()
        rules.deinitialize(count: count)
        rules.deallocate()
    }

    /// The id of the action `action` of the type `type`, if the policy has it.
    @inline(__always)
    func find(_ type: UnsafeRawBufferPointer, _ action: UnsafeRawBufferPointer) -> Int? {
        var i = Self.hash(type, action) & slotMask
        while true {
            let s = Int(slots[i])
            if s == 0 { return nil }
            let span = spans[s - 1]
            if Int(span.typeLength) == type.count && Int(span.actionLength) == action.count
                && bytesEqual(UnsafeRawBufferPointer(start: names + Int(span.typeOffset), count: type.count), type)
                && bytesEqual(UnsafeRawBufferPointer(start: names + Int(span.actionOffset), count: action.count), action) {
                return s - 1
            }
            i = (i + 1) & slotMask
        }
    }

    /// A hash of the two parts from their lengths and at most their first and last 8 bytes
    /// (all of a name up to 16 bytes; a longer one only collides more often, and every
    /// candidate is compared in full).
    @inline(__always)
    static func hash(_ type: UnsafeRawBufferPointer, _ action: UnsafeRawBufferPointer) -> Int {
        var h = word(type) &* 0x9E37_79B9_7F4A_7C15
        h ^= word(action) &+ (UInt64(truncatingIfNeeded: type.count) << 48 | UInt64(truncatingIfNeeded: action.count) << 32)
        h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return Int(truncatingIfNeeded: h >> 40)
    }

    /// Up to 16 bytes of `b` folded into a word, reading nothing outside it.
    @inline(__always)
    private static func word(_ b: UnsafeRawBufferPointer) -> UInt64 {
        let n = b.count
        guard n > 0, let p = b.baseAddress else { return 0 }
        if n >= 8 {
            let last = p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
            return p.loadUnaligned(as: UInt64.self) &+ (last << 23 | last >> 41)
        }
        if n >= 4 {
            return UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)) << 32
        }
        return UInt64(p.load(as: UInt8.self)) | UInt64(p.load(fromByteOffset: n >> 1, as: UInt8.self)) << 8
            | UInt64(p.load(fromByteOffset: n - 1, as: UInt8.self)) << 16
    }
}
