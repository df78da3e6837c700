@testable import AuthzHTTP
import CAuthzMHD
import Foundation
import Synchronization
import Testing

/// Background work (a sync, the reclaimer) runs at the lowest priority the kernel has, so that
/// a request thread that wakes takes the core at once; at nice 10 alone, a sync's thread kept it
/// for its whole slice (benchmarks/FINDINGS.md). Past a limit, a sync still running is raised to
/// normal priority, so that it cannot wait without bound while checks keep the cores busy.
/// Serialized: raising acts on every idle-class thread of the process, so it must not run
/// while the first test looks at its own.
@Suite(.serialized) struct BackgroundPriorityTests {
    typealias Scheduling = (policy: Int, nice: Int)

    /// The fields of a task's /proc stat file after the command name (which ends at the last
    /// ')'), from the state on.
    static func statFields(_ path: String) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: path, encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// The calling thread's scheduling policy and nice value, from /proc (Linux).
    static func scheduling() -> Scheduling? {
        guard let fields = statFields("/proc/thread-self/stat"), fields.count > 38,
              let nice = Int(fields[16]), let policy = Int(fields[38]) else { return nil }
        return (policy, nice)
    }

    final class Seen: @unchecked Sendable {
        var before, after, child: Scheduling?
        let done = DispatchSemaphore(value: 0)
    }

    @Test func aLoweredThreadAndTheThreadsItStartsRunAtIdlePolicy() {
        #if os(Linux)
        let seen = Seen()
        Thread.detachNewThread {
            seen.before = Self.scheduling()
            authz_lower_thread_priority(10)
            seen.after = Self.scheduling()
            // A thread it starts (a decode or validation thread) inherits both.
            let childDone = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                seen.child = Self.scheduling()
                childDone.signal()
            }
            childDone.wait()
            seen.done.signal()
        }
        seen.done.wait()
        let schedOther = 0, schedIdle = 5
        #expect(seen.before?.policy == schedOther && seen.before?.nice == 0)
        #expect(seen.after?.policy == schedIdle && seen.after?.nice == 10)
        #expect(seen.child?.policy == schedIdle && seen.child?.nice == 10)
        #endif
    }

    /// Polls the calling thread's policy until it is `policy` or `seconds` pass.
    static func waitForPolicy(_ policy: Int, seconds: Double) -> Scheduling? {
        let deadline = Date().addingTimeInterval(seconds)
        var now = scheduling()
        while now?.policy != policy && Date() < deadline {
            usleep(5_000)
            now = scheduling()
        }
        return now
    }

    final class Raising: @unchecked Sendable {
        var first, later, child: Scheduling?
        let raised = Mutex<[BackgroundWork.Raised]>([])
        let done = DispatchSemaphore(value: 0)
        let reported = DispatchSemaphore(value: 0)
        func report(_ found: BackgroundWork.Raised) {
            raised.withLock { $0.append(found) }
            reported.signal()
        }
    }

    // Needs the right to leave the idle class (root with CAP_SYS_NICE, as CI runs); without it
    // the raise is refused, which the server logs.
    @Test func backgroundWorkStillRunningAtItsLimitIsRaisedWithTheThreadsItStarted() {
        #if os(Linux)
        let schedOther = 0
        let seen = Raising()
        BackgroundWork.start(idleLimit: .milliseconds(50), onRaise: seen.report) {
            let childDone = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                seen.child = Self.waitForPolicy(schedOther, seconds: 10)
                childDone.signal()
            }
            seen.later = Self.waitForPolicy(schedOther, seconds: 10)
            childDone.wait()
            seen.done.signal()
        }
        seen.done.wait()
        #expect(seen.reported.wait(timeout: .now() + 10) == .success)
        #expect(seen.later?.policy == schedOther && seen.later?.nice == 0)
        #expect(seen.child?.policy == schedOther && seen.child?.nice == 0)
        let found = seen.raised.withLock { $0 }
        #expect(found.count == 1 && found.first.map { $0.raised >= 1 && $0.refused == 0 } == true)
        #endif
    }

    @Test func backgroundWorkDoneWithinItsLimitIsLeftAlone() {
        #if os(Linux)
        let seen = Raising()
        BackgroundWork.start(idleLimit: .seconds(1), onRaise: seen.report) {
            seen.first = Self.scheduling()
            seen.done.signal()
        }
        seen.done.wait()
        // Past the limit: the work had finished, so nothing may have been raised.
        #expect(seen.reported.wait(timeout: .now() + 1.5) == .timedOut)
        #expect(seen.first?.policy == 5 && seen.first?.nice == 10)
        #expect(seen.raised.withLock { $0 }.isEmpty)
        #endif
    }

    @Test func backgroundWorkWithNoIdleLimitRunsAtNormalPriority() {
        #if os(Linux)
        let seen = Raising()
        BackgroundWork.start(idleLimit: .zero, onRaise: seen.report) {
            seen.first = Self.scheduling()
            seen.done.signal()
        }
        seen.done.wait()
        #expect(seen.first?.policy == 0 && seen.first?.nice == 0)
        #expect(seen.raised.withLock { $0 }.isEmpty)
        #endif
    }

    /// A raise catches the reclaimer too (it is idle-class), most likely while it waits; the
    /// free it then wakes for must still run below the checks.
    @Test func theReclaimerLowersItselfAgainWhenItWakes() {
        #if os(Linux)
        let reclaimer = SnapshotStore.reclaimer
        let seen = Raising()
        final class Found: @unchecked Sendable { var path: String? }
        let reclaimerTask = Found()
        reclaimer.onItsThread {
            seen.first = Self.scheduling()
            reclaimerTask.path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")
            seen.done.signal()
        }
        seen.done.wait()
        // Raise while it waits for its next round (state S), as a sync past its limit would.
        let stat = "/proc/\(reclaimerTask.path ?? "self")/stat"
        for _ in 0..<2000 {
            if Self.statFields(stat)?.first == "S" { break }
            usleep(1_000)
        }
        var refused: Int32 = 0
        _ = authz_raise_idle_threads(&refused)
        reclaimer.onItsThread {
            seen.later = Self.scheduling()
            seen.done.signal()
        }
        seen.done.wait()
        #expect(seen.first?.policy == 5 && seen.first?.nice == 10)
        #expect(refused == 0)
        #expect(seen.later?.policy == 5 && seen.later?.nice == 10)
        #endif
    }
}
