import CAuthzMHD
import Foundation
import Testing

/// Background work (a sync, the reclaimer) runs at the lowest priority the kernel has, so that
/// a request thread that wakes takes the core at once; at nice 10 alone, a sync's thread kept it
/// for its whole slice (benchmarks/FINDINGS.md).
@Suite struct BackgroundPriorityTests {
    typealias Scheduling = (policy: Int, nice: Int)

    /// The calling thread's scheduling policy and nice value, from /proc (Linux).
    static func scheduling() -> Scheduling? {
        guard let stat = try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // The fields after the command name (which ends at the last ')'), from the state on.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 38, let nice = Int(fields[16]), let policy = Int(fields[38]) else { return nil }
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
}
