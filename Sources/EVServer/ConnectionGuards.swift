import NIOCore
import NIOHTTPTypes
import Synchronization

/// The connections open at once, shared by every connection's `ConnectionLimitHandler`, and
/// what the guards did, for `/v1/health`.
public final class ConnectionCounter: Sendable {
  public struct Stats: Sendable, Equatable, Codable {
    public var open: Int
    public var limit: Int
    /// Connections closed at once because `limit` were open.
    public var refused: Int
    /// Connections closed because a request head was not complete in time.
    public var headerTimeouts: Int

    enum CodingKeys: String, CodingKey {
      case open, limit, refused
      case headerTimeouts = "header_timeouts"
    }
  }

  public let limit: Int
  private let openCount = Atomic<Int>(0)
  private let refusedCount = Atomic<Int>(0)
  private let headerTimeoutCount = Atomic<Int>(0)

  public init(limit: Int) {
    self.limit = limit
  }

  /// Counts a new connection; false when it is one too many (it still counts until `leave`,
  /// so that every `enter` has its `leave` whatever the outcome).
  func enter() -> Bool {
    let now = openCount.wrappingAdd(1, ordering: .relaxed).newValue
    guard now <= limit else {
      refusedCount.wrappingAdd(1, ordering: .relaxed)
      return false
    }
    return true
  }

  func leave() {
    openCount.wrappingSubtract(1, ordering: .relaxed)
  }

  func headerTimedOut() {
    headerTimeoutCount.wrappingAdd(1, ordering: .relaxed)
  }

  public var stats: Stats {
    Stats(
      open: openCount.load(ordering: .relaxed), limit: limit,
      refused: refusedCount.load(ordering: .relaxed),
      headerTimeouts: headerTimeoutCount.load(ordering: .relaxed))
  }
}

/// Closes a connection at once when `counter.limit` others are open. Nothing is answered: no
/// request has been read yet, and a refusal that costs no work is the point of the cap.
///
/// Hummingbird adds its extra handlers to a channel that is already active, so the count is
/// taken in `handlerAdded` and given back in `handlerRemoved` (which runs for every handler
/// when the channel closes).
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPRequestPart
  typealias InboundOut = HTTPRequestPart

  private let counter: ConnectionCounter
  private var counted = false

  init(counter: ConnectionCounter) {
    self.counter = counter
  }

  func handlerAdded(context: ChannelHandlerContext) {
    counted = true
    guard counter.enter() else {
      // Closing from inside the pipeline's setup would make the handlers still to be added
      // fail; the close runs right after it instead.
      let channel = context.channel
      context.eventLoop.assumeIsolated().execute { channel.close(promise: nil) }
      return
    }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    if counted {
      counted = false
      counter.leave()
    }
  }
}

/// Closes a connection whose request head is not complete within `timeout`: counted from the
/// connection's opening, and for later requests from the first byte after the previous
/// response (the wait before that byte is the idle timeout's business). Without it, a client
/// trickling header bytes holds a connection for as long as it likes, since the HTTP decoder
/// hands nothing on before the head is complete and Hummingbird's idle timeout counts
/// HTTP parts, not bytes.
final class HeaderTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPRequestPart
  typealias InboundOut = HTTPRequestPart
  typealias OutboundIn = HTTPResponsePart
  typealias OutboundOut = HTTPResponsePart

  private let timeout: TimeAmount
  private let counter: ConnectionCounter?
  private var context: ChannelHandlerContext?
  private var timer: Scheduled<Void>?
  private var started = false
  /// Requests whose head has arrived and whose response has not ended.
  private var inFlight = 0
  /// True from the end of a response until the next byte arrives.
  private var betweenRequests = false

  init(timeout: TimeAmount, counter: ConnectionCounter?) {
    self.timeout = timeout
    self.counter = counter
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    // The raw bytes are seen before the HTTP decoder, which holds them until a head is whole.
    try? context.pipeline.syncOperations.addHandler(
      ByteArrivalHandler(owner: self), position: .first)
    if context.channel.isActive { start() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    start()
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if case .head = unwrapInboundIn(data) {
      timer?.cancel()
      timer = nil
      inFlight += 1
      betweenRequests = false
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if case .end = unwrapOutboundIn(data), inFlight > 0 {
      inFlight -= 1
      if inFlight == 0 { betweenRequests = true }
    }
    context.write(data, promise: promise)
  }

  private func start() {
    guard !started else { return }
    started = true
    arm()
  }

  /// Called by `ByteArrivalHandler` for every read of raw bytes.
  fileprivate func bytesArrived() {
    guard betweenRequests else { return }
    betweenRequests = false
    arm()
  }

  private func arm() {
    guard let context else { return }
    timer?.cancel()
    timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
      guard let self, let context = self.context else { return }
      self.timer = nil
      self.counter?.headerTimedOut()
      context.close(promise: nil)
    }
  }
}

/// Tells `HeaderTimeoutHandler` when bytes arrive; passes them on untouched.
private final class ByteArrivalHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  private weak var owner: HeaderTimeoutHandler?

  init(owner: HeaderTimeoutHandler) {
    self.owner = owner
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    owner?.bytesArrived()
    context.fireChannelRead(data)
  }
}
