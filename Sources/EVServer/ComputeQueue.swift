import EVTensor
import Foundation
import Synchronization

/// A fixed set of threads that run the model, fed by a bounded first-in-first-out queue.
///
/// Model calls block a thread for milliseconds (decode) to seconds (encode, segment
/// everything). Running them on Swift's cooperative pool, which has one thread per core, would
/// stall every other request, health checks included; these threads keep the pool free. A job
/// that finds every worker busy and the queue full is refused at once (the caller answers 503
/// with `Retry-After`), and a job whose deadline passes is answered with a timeout: still
/// waiting, it is dropped; already running, it finishes unobserved (the model cannot be
/// interrupted mid-call) and keeps its worker until then.
public final class ComputeQueue: Sendable {
  /// A snapshot for `/v1/health` and the logs.
  public struct Stats: Sendable, Equatable, Codable {
    public var workers: Int
    public var capacity: Int
    public var running: Int
    public var waiting: Int
    public var completed: Int
    public var rejected: Int
    public var timedOut: Int

    enum CodingKeys: String, CodingKey {
      case workers, capacity, running, waiting, completed, rejected
      case timedOut = "timed_out"
    }
  }

  private final class Job: Sendable {
    enum Phase { case queued, running, finished }
    let deadline: ContinuousClock.Instant
    /// Runs the work and returns what delivers its result (called once the worker counts
    /// itself free, so that a client answered at once finds room for its next request); nil
    /// once it ran or was dropped, so that nothing the work captured (an image, a cache entry)
    /// outlives the request.
    let body: Mutex<(@Sendable () -> @Sendable () -> Void)?>
    /// Answers the waiting request with an error unless it was answered; true if it was not.
    let fail: @Sendable (any Error) -> Bool

    init(
      deadline: ContinuousClock.Instant, body: @escaping @Sendable () -> @Sendable () -> Void,
      fail: @escaping @Sendable (any Error) -> Bool
    ) {
      self.deadline = deadline
      self.body = Mutex(body)
      self.fail = fail
    }
  }

  private struct State {
    var queue: [Job] = []
    var phases: [ObjectIdentifier: Job.Phase] = [:]
    var running = 0
    var completed = 0
    var rejected = 0
    var timedOut = 0
    /// Moving average of job run times, for `Retry-After`.
    var meanSeconds = 0.5
    var stopping = false
  }

  public let workers: Int
  public let capacity: Int
  private let state = Mutex(State())
  private let wakeup = DispatchSemaphore(value: 0)
  private let finishedWorkers = DispatchSemaphore(value: 0)

  /// Starts `workers` threads; `capacity` jobs may wait beyond those running.
  public init(workers: Int, capacity: Int, name: String = "evsam.compute") {
    precondition(workers >= 1 && capacity >= 0, "ComputeQueue: workers ≥ 1, capacity ≥ 0")
    self.workers = workers
    self.capacity = capacity
    for i in 0..<workers {
      let thread = Thread { [self] in workerLoop() }
      thread.name = "\(name).\(i)"
      // The kernels keep their scratch on the heap, but be generous: a worker runs whole
      // models.
      thread.stackSize = 8 << 20
      thread.start()
    }
  }

  public var stats: Stats {
    state.withLock { s in
      Stats(
        workers: workers, capacity: capacity, running: s.running, waiting: s.queue.count,
        completed: s.completed, rejected: s.rejected, timedOut: s.timedOut)
    }
  }

  /// Seconds after which a refused request may find room: the queued work spread over the
  /// workers, at least 1.
  public var retryAfter: Int {
    state.withLock { s in retryAfter(s) }
  }

  private func retryAfter(_ s: State) -> Int {
    let pending = Double(s.queue.count + s.running)
    return max(1, Int((pending * s.meanSeconds / Double(workers)).rounded(.up)))
  }

  /// Runs `work` on a worker and returns its result.
  ///
  /// - Throws: `APIError` `overloaded` when no worker is free and the queue is full, `timeout`
  ///   when `deadline` passes first (`limit` is only named in the message), `CancellationError`
  ///   when the calling task is cancelled, or whatever `work` throws.
  public func run<T: Sendable>(
    deadline: ContinuousClock.Instant, limit: Duration,
    _ work: @escaping @Sendable () throws -> T
  ) async throws -> T {
    // Whichever of the worker, the timer and cancellation comes first answers; the others
    // find it answered.
    let answer = OnceAnswer<T>()
    let job = Job(
      deadline: deadline,
      body: {
        let result = Result { try work() }
        return { _ = answer.deliver(result) }
      },
      fail: { answer.deliver(.failure($0)) })

    try admit(job)
    let timer = Task { [self] in
      try await Task.sleep(until: deadline, clock: .continuous)
      expire(job, with: APIError.timeout(limit, retryAfter: retryAfter))
    }
    defer { timer.cancel() }
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation {
        (continuation: CheckedContinuation<T, any Error>) in
        answer.install(continuation)
      }
    } onCancel: {
      expire(job, with: CancellationError())
    }
  }

  /// Stops the workers once the queue is empty; waits for them.
  public func shutdown() {
    let alreadyStopping = state.withLock { s in
      defer { s.stopping = true }
      return s.stopping
    }
    guard !alreadyStopping else { return }
    for _ in 0..<workers { wakeup.signal() }
    for _ in 0..<workers { finishedWorkers.wait() }
  }

  private func admit(_ job: Job) throws {
    let refusal: APIError? = state.withLock { s in
      guard !s.stopping else {
        return APIError(
          .serviceUnavailable, code: "shutting_down", "the server is shutting down", retryAfter: 5)
      }
      guard s.queue.count + s.running < workers + capacity else {
        s.rejected += 1
        return .overloaded(retryAfter: retryAfter(s))
      }
      s.queue.append(job)
      s.phases[ObjectIdentifier(job)] = .queued
      return nil
    }
    if let refusal { throw refusal }
    wakeup.signal()
  }

  /// Answers a job's request with `error` unless it was answered already; a waiting job
  /// leaves the queue and never runs.
  private func expire(_ job: Job, with error: any Error) {
    let wasQueued: Bool? = state.withLock { s in
      let id = ObjectIdentifier(job)
      switch s.phases[id] {
      case .queued:
        s.queue.removeAll { $0 === job }
        s.phases[id] = nil
        return true
      case .running:
        // The worker finishes the call unobserved; the request is answered now.
        s.phases[id] = .finished
        return false
      case .finished, nil:
        return nil
      }
    }
    guard let wasQueued else { return }
    // Release what the work captured (an image, a cache entry) now, not when the timer ends.
    if wasQueued { job.body.withLock { $0 = nil } }
    if job.fail(error), error is APIError {
      state.withLock { $0.timedOut += 1 }
    }
  }

  private func workerLoop() {
    while true {
      wakeup.wait()
      let next: Job?? = state.withLock { s in
        if s.queue.isEmpty { return s.stopping ? .some(nil) : nil }
        let job = s.queue.removeFirst()
        s.phases[ObjectIdentifier(job)] = .running
        s.running += 1
        return .some(job)
      }
      guard let next else { continue }  // the job it was woken for expired meanwhile
      guard let job = next else { break }
      let start = ContinuousClock.now
      let body = job.body.withLock { b in
        defer { b = nil }
        return b
      }
      let deliver = body?()
      let seconds = (ContinuousClock.now - start).seconds
      state.withLock { s in
        s.running -= 1
        s.completed += 1
        s.phases[ObjectIdentifier(job)] = nil
        s.meanSeconds = 0.8 * s.meanSeconds + 0.2 * seconds
      }
      deliver?()
    }
    finishedWorkers.signal()
  }
}

/// A result that several parties may race to give; the first one wins. It may come before the
/// waiting continuation exists and is then handed over when it does.
private final class OnceAnswer<T: Sendable>: Sendable {
  private enum State {
    case pending
    case waiting(CheckedContinuation<T, any Error>)
    case early(Result<T, any Error>)
    case done
  }
  private let state = Mutex(State.pending)

  /// True if this call gave the answer.
  func deliver(_ result: Result<T, any Error>) -> Bool {
    let (continuation, first): (CheckedContinuation<T, any Error>?, Bool) = state.withLock { s in
      switch s {
      case .pending:
        s = .early(result)
        return (nil, true)
      case .waiting(let c):
        s = .done
        return (c, true)
      case .early, .done:
        return (nil, false)
      }
    }
    continuation?.resume(with: result)
    return first
  }

  func install(_ continuation: CheckedContinuation<T, any Error>) {
    let early: Result<T, any Error>? = state.withLock { s in
      guard case .early(let r) = s else {
        s = .waiting(continuation)
        return nil
      }
      s = .done
      return r
    }
    if let early { continuation.resume(with: early) }
  }
}
