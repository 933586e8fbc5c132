#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// Runs `work(0)` … `work(count - 1)` on at most `limit` threads at once and returns when all
/// have returned. For blocking work such as a push's ssh and rsync children; each thread
/// takes the next index when it is done with one. The corresponding C functions are
/// `pthread_create` and `pthread_join`.
public func forEachConcurrently(_ count: Int, limit: Int, _ work: @escaping @Sendable (Int) -> Void) {
    guard count > 0 else { return }
    let shared = ConcurrentWork(count: count, work: work)
    let threads = max(1, min(limit, count))
    var started: [pthread_t] = []
    for _ in 0..<threads {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(shared).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            Unmanaged<ConcurrentWork>.fromOpaque(context!).takeRetainedValue().drain()
            return nil
        }, context)
        if result == 0 {
            started.append(thread)
        } else {
            Unmanaged<ConcurrentWork>.fromOpaque(context).release()
        }
    }
    // Without a thread of its own (the system refused), the work still gets done here.
    if started.isEmpty { shared.drain() }
    for thread in started { pthread_join(thread, nil) }
}

private final class ConcurrentWork: Sendable {
    let count: Int
    let work: @Sendable (Int) -> Void
    let next = Mutex(0)

    init(count: Int, work: @escaping @Sendable (Int) -> Void) {
        self.count = count
        self.work = work
    }

    func drain() {
        while true {
            let index = next.withLock { value -> Int in
                defer { value += 1 }
                return value
            }
            guard index < count else { return }
            work(index)
        }
    }
}
