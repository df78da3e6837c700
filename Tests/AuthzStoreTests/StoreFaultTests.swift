import AuthzCore
import AuthzData
@testable import AuthzStore
import Foundation
import GRDBSQLite
import Synchronization
import Testing

/// SQLite I/O errors a test cannot cause otherwise, from a VFS that wraps the default one and
/// fails only the files under a directory a test armed (other tests' stores, in parallel, pass
/// through): `FaultyFiles.arm(directory, .sync)` makes every xSync of a file there fail with
/// `SQLITE_IOERR_FSYNC`, `.write(code)` every xWrite with `code`.
enum FaultyFiles {
    enum Fault: Equatable { case sync, write(Int32) }

    private static let armed = Mutex<[String: Fault]>([:])
    /// Each open file (its `sqlite3_file` address) and the directory it is in.
    private static let files = Mutex<[UInt: String]>([:])
    /// The default VFS's methods for a file, by the wrapper's address.
    private static let originals = Mutex<[UInt: UInt]>([:])
    private static let wrappers = Mutex<[UInt: UInt]>([:])
    nonisolated(unsafe) private static var base: UnsafeMutablePointer<sqlite3_vfs>?

    /// Arms (or, with nil, disarms) `directory`. Call it before opening a store there: files
    /// opened before the VFS was registered do not go through it.
    static func arm(_ directory: String, _ fault: Fault?) {
        precondition(installed, "the faulty VFS could not be registered")
        armed.withLock { $0[directory] = fault }
    }

    private static func fault(_ file: UnsafeMutablePointer<sqlite3_file>?) -> Fault? {
        guard let file, let dir = files.withLock({ $0[UInt(bitPattern: file)] }) else { return nil }
        return armed.withLock { $0[dir] }
    }

    private static func original(_ file: UnsafeMutablePointer<sqlite3_file>?) -> UnsafePointer<sqlite3_io_methods> {
        let bits = originals.withLock { $0[UInt(bitPattern: file!.pointee.pMethods!)]! }
        return UnsafePointer(bitPattern: bits)!
    }

    /// Registered once, as the default VFS; a pass-through for every file not armed.
    private static let installed: Bool = {
        base = sqlite3_vfs_find(nil)
        let vfs = UnsafeMutablePointer<sqlite3_vfs>.allocate(capacity: 1)
        vfs.initialize(to: base!.pointee)
        vfs.pointee.zName = UnsafePointer(strdup("authz-faulty-files"))
        vfs.pointee.pNext = nil
        vfs.pointee.xOpen = { _, name, file, flags, outFlags in
            let rc = FaultyFiles.base!.pointee.xOpen!(FaultyFiles.base, name, file, flags, outFlags)
            guard rc == SQLITE_OK, let file, let methods = file.pointee.pMethods else { return rc }
            if let name {
                let dir = (String(cString: name) as NSString).deletingLastPathComponent
                FaultyFiles.files.withLock { $0[UInt(bitPattern: file)] = dir }
            }
            file.pointee.pMethods = FaultyFiles.wrapper(of: methods)
            return rc
        }
        return sqlite3_vfs_register(vfs, 1) == SQLITE_OK
    }()

    /// The methods of `methods`' files with xSync, xWrite and xClose wrapped.
    private static func wrapper(of methods: UnsafePointer<sqlite3_io_methods>) -> UnsafePointer<sqlite3_io_methods> {
        if let w = wrappers.withLock({ $0[UInt(bitPattern: methods)] }) { return UnsafePointer(bitPattern: w)! }
        let w = UnsafeMutablePointer<sqlite3_io_methods>.allocate(capacity: 1)
        w.initialize(to: methods.pointee)
        w.pointee.xSync = { f, flags in
            if FaultyFiles.fault(f) == .sync { return 1034 } // SQLITE_IOERR_FSYNC
            return FaultyFiles.original(f).pointee.xSync!(f, flags)
        }
        w.pointee.xWrite = { f, buffer, n, offset in
            if case .write(let code) = FaultyFiles.fault(f) { return code }
            return FaultyFiles.original(f).pointee.xWrite!(f, buffer, n, offset)
        }
        w.pointee.xClose = { f in
            let close = FaultyFiles.original(f).pointee.xClose!
            FaultyFiles.files.withLock { _ = $0.removeValue(forKey: UInt(bitPattern: f!)) }
            return close(f)
        }
        let wBits = UInt(bitPattern: w), mBits = UInt(bitPattern: methods)
        originals.withLock { $0[wBits] = mBits }
        wrappers.withLock { $0[mBits] = wBits }
        return UnsafePointer(w)
    }
}

/// What a sync answers when the store's disk fails under it: "nothing changed" only when that
/// is known, "state unknown" (and later syncs refused) when the batch may be on disk.
@Suite struct StoreFaultTests {
    /// A directory of the test's own, and the store's path in it.
    static func place() -> (directory: String, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-fault-\(UUID().uuidString)").path
        return (directory, directory + "/authz.sqlite")
    }

    /// The commit's frames were written but their sync failed: the batch may be on disk. Later
    /// syncs are refused; a restart finds out.
    @Test func aCommitWhoseSyncFailsLeavesTheStateUnknown() throws {
        let (directory, path) = Self.place()
        FaultyFiles.arm(directory, nil)
        defer { FaultyFiles.arm(directory, nil) }
        do {
            let store = try MembershipStore(path: path)
            let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
            _ = try sync.sync(records(seed), mode: .apply).get()
            FaultyFiles.arm(directory, .sync)
            guard case .failure(.storeStateUnknown(let message)) = sync.sync(records(#"{"kind":"org","id":"second"}"#), mode: .apply) else {
                Issue.record("a commit whose sync failed was not reported as of unknown state")
                return
            }
            #expect(message.contains("revision 2"))
            FaultyFiles.arm(directory, nil)
            guard case .failure(.syncsRefused) = sync.sync(records(#"{"kind":"org","id":"third"}"#), mode: .apply) else {
                Issue.record("a sync after the unknown state was not refused")
                return
            }
            #expect(sync.current.revision == 1)
        }
        // A restart loads the store as it is: with the batch (revision 2) or without it, and
        // never the refused one.
        let restarted = try MembershipSync(store: try MembershipStore(path: path), policy: try policy(), publish: { _, _ in })
        let revision = restarted.current.revision
        let loaded = restarted.current.directory.records()
        #expect(revision == 1 || revision == 2)
        #expect(loaded.contains(.org(.init(id: "second"))) == (revision == 2))
        #expect(!loaded.contains(.org(.init(id: "third"))))
    }

    /// A failed write (a full disk, a full quota) means no complete commit was written:
    /// "nothing changed", the writer is not locked, and the next sync succeeds.
    @Test(arguments: [13, 778] as [Int32]) // SQLITE_FULL, SQLITE_IOERR_WRITE
    func aFailedWriteChangesNothingAndTheNextSyncSucceeds(code: Int32) throws {
        let (directory, path) = Self.place()
        FaultyFiles.arm(directory, nil)
        defer { FaultyFiles.arm(directory, nil) }
        let store = try MembershipStore(path: path)
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        for mode in [MembershipSync.Mode.apply, .replace] {
            FaultyFiles.arm(directory, .write(code))
            guard case .failure(.storage) = sync.sync(records(#"{"kind":"org","id":"second"}"#), mode: mode) else {
                Issue.record("\(mode) with writes failing (\(code)) was not a plain storage failure")
                return
            }
            FaultyFiles.arm(directory, nil)
            #expect(try store.revision() == 1)
        }
        #expect(try sync.sync(records(#"{"kind":"org","id":"third"}"#), mode: .apply).get().revision == 2)
    }
}
