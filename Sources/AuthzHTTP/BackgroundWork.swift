internal import CAuthzMHD
import Foundation
import Synchronization

/// Background work of the server (a sync): a thread of its own in the idle scheduling class,
/// below every request thread, with a limit on how long it may stay there.
///
/// The idle class runs only on a core nothing else wants, so a request thread that wakes takes
/// the core at once (benchmarks/FINDINGS.md: at nice 10 a sync's thread kept it for its whole
/// slice, milliseconds). The price: while checks keep every core busy the work gets nothing,
/// and a large sync could wait without bound (a 1M-membership replace took six minutes under a
/// saturating load). So once the work has run for `idleLimit`, the process's idle-class
/// threads (this work's, the threads it started, the reclaimer) are raised to normal priority
/// and the work finishes competing with the checks as an equal.
enum BackgroundWork {
    /// What raising found: threads raised, and threads the kernel refused to raise (leaving the
    /// idle class from nice 10 needs CAP_SYS_NICE or an RLIMIT_NICE of at least 10).
    typealias Raised = (raised: Int, refused: Int)

    /// Whether the work has returned. Checking and raising happen under the same lock as
    /// finishing, so a raise never follows the end of the work. (A timer that finds the work
    /// done does nothing; it is left to expire rather than cancelled.)
    private final class State: Sendable {
        let done = Mutex(false)
    }

    /// Runs `work` on a new idle-class thread (at normal priority when `idleLimit` is zero).
    /// `onRaise` is called (on another thread) if the limit passed before `work` returned.
    static func start(idleLimit: Duration, onRaise: @escaping @Sendable (Raised) -> Void,
                      _ work: @escaping @Sendable () -> Void) {
        let state = State()
        Thread.detachNewThread {
            if idleLimit > .zero {
                authz_lower_thread_priority(10)
                // Armed once the thread is lowered, so a short limit cannot fire before it.
                let limit = DispatchTimeInterval.nanoseconds(Int(idleLimit / .nanoseconds(1)))
                DispatchQueue.global().asyncAfter(deadline: .now() + limit) {
                    let found: Raised? = state.done.withLock { done in
                        guard !done else { return nil }
                        var refused: Int32 = 0
                        let raised = authz_raise_idle_threads(&refused)
                        return (Int(raised), Int(refused))
                    }
                    if let found { onRaise(found) }
                }
            }
            work()
            state.done.withLock { $0 = true }
        }
    }
}
