/// A set of permissions of one compiled policy, as a bitset: bit `i` is the permission
/// with index `i` in `CompiledPolicy.permissions`. A policy declares at most 64.
public struct PermissionSet: Hashable, Sendable, SetAlgebra, ExpressibleByArrayLiteral {
    public var bits: UInt64

    public static let maxCount = 64

    public init() { bits = 0 }
    public init(bits: UInt64) { self.bits = bits }
    public init(arrayLiteral elements: Int...) {
        bits = 0
        for e in elements { insertIndex(e) }
    }

    @inline(__always) public func contains(index: Int) -> Bool { bits & (1 << UInt64(index)) != 0 }
    @inline(__always) public mutating func insertIndex(_ index: Int) { bits |= 1 << UInt64(index) }

    /// Indices of the permissions in the set, ascending.
    public var indices: [Int] { (0..<64).filter { contains(index: $0) } }
    public var count: Int { bits.nonzeroBitCount }

    // SetAlgebra over permission indices.
    public var isEmpty: Bool { bits == 0 }
    public func contains(_ member: Int) -> Bool { contains(index: member) }
    public func union(_ other: PermissionSet) -> PermissionSet { PermissionSet(bits: bits | other.bits) }
    public func intersection(_ other: PermissionSet) -> PermissionSet { PermissionSet(bits: bits & other.bits) }
    public func symmetricDifference(_ other: PermissionSet) -> PermissionSet { PermissionSet(bits: bits ^ other.bits) }
    @discardableResult
    public mutating func insert(_ newMember: Int) -> (inserted: Bool, memberAfterInsert: Int) {
        let had = contains(index: newMember)
        insertIndex(newMember)
        return (!had, newMember)
    }
    @discardableResult
    public mutating func remove(_ member: Int) -> Int? {
        guard contains(index: member) else { return nil }
        bits &= ~(1 << UInt64(member))
        return member
    }
    @discardableResult
    public mutating func update(with newMember: Int) -> Int? {
        let had = contains(index: newMember)
        insertIndex(newMember)
        return had ? newMember : nil
    }
    public mutating func formUnion(_ other: PermissionSet) { bits |= other.bits }
    public mutating func formIntersection(_ other: PermissionSet) { bits &= other.bits }
    public mutating func formSymmetricDifference(_ other: PermissionSet) { bits ^= other.bits }
}
