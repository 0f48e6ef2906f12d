import Foundation

/// What the service accepts and how much it may hold. Every limit has a command-line option in
/// `evsam serve`; the defaults suit an interactive annotation tool on a small machine.
public struct ServerConfiguration: Sendable, Equatable {
  /// Address to bind. Loopback by default: the service has no authentication.
  public var host = "127.0.0.1"
  /// TCP port; 0 picks a free one (tests).
  public var port = 8080
  /// Upper bound of the embedding cache (embeddings, decoder state, decoded images and mask
  /// handles), in bytes.
  public var cacheBytes = 1024 * 1024 * 1024
  /// Freed memory the allocator may keep for the next job, beyond the process's footprint
  /// when the service starts (the model) and the cache bound. The process keeps freed blocks
  /// for speed (`HeapPolicy.retainFreedMemory`); when a job leaves it above this budget, the
  /// free pages go back to the system.
  public var retainedHeapBytes = 256 * 1024 * 1024
  /// Threads that run the model. Each encode or decode also spreads its kernels over the cores.
  public var workers = 2
  /// Requests that may wait for a worker; one more is refused with 503 and `Retry-After`.
  public var queueCapacity = 32
  /// Time allowed for a request, from its arrival until the answer is ready (reading the body,
  /// waiting for a worker, computing).
  public var requestTimeout: Duration = .seconds(60)
  /// Largest request body (an uploaded image), in bytes.
  public var maxUploadBytes = 32 * 1024 * 1024
  /// Largest JSON body of a prompt or generator request, in bytes.
  public var maxJSONBytes = 1024 * 1024
  /// Largest image side, in pixels.
  public var maxImageSide = 8192
  /// Largest image area, in pixels (full-size masks are `candidates × pixels` floats).
  public var maxImagePixels = 4096 * 4096
  /// Most points in one prompt, and most boxes in one batch.
  public var maxPoints = 64
  public var maxBoxes = 64
  /// Full-size mask pixels one segment request may make (masks × width × height): each takes
  /// a float logit and a byte while the answer is built.
  public var maxMaskPixels = 64 * 1024 * 1024
  /// Low-res masks kept per image for refinement (`mask_input`); older handles expire.
  public var maskHandlesPerImage = 32
  /// Ceiling on the automatic mask generator's grid and crop layers, which bound its run time.
  public var maxPointsPerSide = 64
  public var maxCropLayers = 2
  /// How long an idle keep-alive connection stays open.
  public var idleTimeout: Duration = .seconds(75)
  /// Time a request head (request line and headers) has to arrive in whole: from the
  /// connection's opening, and for later requests on it from their first byte. A connection
  /// that misses it is closed without an answer.
  public var headerTimeout: Duration = .seconds(10)
  /// Connections open at once; one more is closed as soon as it is accepted, without an answer.
  public var maxConnections = 256
  /// Origins (`https://app.example.com`, or `*` for any) whose web pages may call the API from
  /// the browser (CORS); none by default.
  public var corsOrigins: [String] = []
  /// Serve Label Studio's ML backend protocol (`/health`, `/setup`, `/predict`, `/webhook`)
  /// beside the API, fetching task images as these settings say; nil: off.
  public var labelStudio: LabelStudioSettings?

  public init() {}

  /// Reasons a configuration cannot run, one per line; empty when it is valid.
  public func problems() -> [String] {
    var found: [String] = []
    if !(0...65535).contains(port) { found.append("port must be 0…65535, got \(port)") }
    for origin in corsOrigins where !Self.isOrigin(origin) {
      found.append(
        "CORS origin '\(origin)' is not an origin: give scheme://host[:port] (no path), or *")
    }
    if workers < 1 { found.append("workers must be at least 1, got \(workers)") }
    if queueCapacity < 0 { found.append("queue capacity must be 0 or more, got \(queueCapacity)") }
    if cacheBytes < 1 { found.append("the cache bound must be positive, got \(cacheBytes) bytes") }
    if retainedHeapBytes < 0 { found.append("the retained heap must be 0 or more bytes") }
    if requestTimeout <= .zero { found.append("the request timeout must be positive") }
    if maxUploadBytes < 1 { found.append("the upload limit must be positive") }
    if maxImageSide < 1 || maxImagePixels < 1 { found.append("image limits must be positive") }
    if maxPoints < 1 || maxBoxes < 1 || maxMaskPixels < 1 {
      found.append("prompt limits must be positive")
    }
    if maskHandlesPerImage < 1 { found.append("mask handles per image must be at least 1") }
    if idleTimeout <= .zero { found.append("the idle timeout must be positive") }
    if headerTimeout <= .zero { found.append("the header timeout must be positive") }
    if maxConnections < 1 {
      found.append("the connection limit must be at least 1, got \(maxConnections)")
    }
    return found
  }
}

extension ServerConfiguration {
  /// `*`, or `scheme://host[:port]` as a browser sends it in `Origin` (no path, no slash).
  static func isOrigin(_ text: String) -> Bool {
    if text == "*" { return true }
    guard let range = text.range(of: "://") else { return false }
    let scheme = text[..<range.lowerBound]
    let rest = text[range.upperBound...]
    return !scheme.isEmpty && scheme.allSatisfy { $0.isLetter || $0 == "+" || $0 == "-" }
      && !rest.isEmpty && !rest.contains("/") && !rest.contains(where: \.isWhitespace)
  }
}
