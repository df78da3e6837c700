import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Who may write a store: one process at a time, through an exclusive `flock` on
/// `<store>.lock` held for as long as a `MembershipStore` of that path is open in it.
///
/// A replace is written into a new file and renamed over the store (see
/// `MembershipStore.replace`). A second process with the store open would keep its
/// connections on the replaced file and write into a WAL that now belongs to the new one,
/// so `authz sync --store` must not run beside a server on the same store: it now fails to
/// open it. Inside one process several `MembershipStore`s may share a path (tests read a live
/// store); the file is then only swapped while just one of them is open (`alone`).
final class StoreLock: @unchecked Sendable {
    let key: String
    /// Whether no other store of this path was open in the process when this one opened.
    let first: Bool

    private struct Entry {
        var fd: Int32
        var count: Int
    }
    /// Open stores by path, in this process. Held across a swap, so that no store of the same
    /// path opens (or closes) in the middle of one.
    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var registry: [String: Entry] = [:]

    struct Busy: Error, CustomStringConvertible {
        var path: String
        var description: String {
            "the store `\(path)` is in use by another process (a running `authz serve`?)"
        }
    }

    /// Takes the lock for the store at `path` (whose directory exists), or joins this
    /// process's hold on it.
    init(path: String) throws {
        let key = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        self.key = key
        first = try Self.registryLock.withLock {
            if var entry = Self.registry[key] {
                entry.count += 1
                Self.registry[key] = entry
                return false
            }
            let lockPath = key + ".lock"
            let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: lockPath]) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                close(fd)
                throw Busy(path: path)
            }
            Self.registry[key] = Entry(fd: fd, count: 1)
            return true
        }
    }

    deinit {
        Self.registryLock.withLock {
            guard var entry = Self.registry[key] else { return }
            entry.count -= 1
            if entry.count == 0 {
                close(entry.fd)  // releases the flock
                Self.registry[key] = nil
            } else {
                Self.registry[key] = entry
            }
        }
    }

    /// Runs `body` if this is the only open store of its path in the process, with no other
    /// opening or closing meanwhile; nil (without running it) otherwise.
    func alone<T>(_ body: () throws -> T) rethrows -> T? {
        Self.registryLock.lock()
        defer { Self.registryLock.unlock() }
        guard Self.registry[key]?.count == 1 else { return nil }
        return try body()
    }
}
