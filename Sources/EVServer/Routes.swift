import EVImage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The HTTP face of `SegmentationService`: routes, body limits, timeouts and JSON errors.
public enum SegmentationServer {
  /// The router with every route of the API and the web page.
  public static func router(service: SegmentationService) -> Router<ServiceRequestContext> {
    let router = Router(context: ServiceRequestContext.self, options: .autoGenerateHeadEndpoints)
    // One line per request at debug level (`evsam serve --log-level debug`).
    router.add(middleware: LogRequestsMiddleware(.debug))
    // Outside the error middleware, so that error answers carry the CORS headers too.
    if !service.configuration.corsOrigins.isEmpty {
      router.add(middleware: CORSPolicyMiddleware(origins: service.configuration.corsOrigins))
    }
    router.add(middleware: APIErrorMiddleware(logger: service.logger))
    let routes = Routes(service: service)

    router.get("/") { _, _ in Routes.asset(WebAssets.indexHTML, type: "text/html; charset=utf-8") }
    router.get("/app.js") { _, _ in
      Routes.asset(WebAssets.script, type: "text/javascript; charset=utf-8")
    }
    router.get("/app.css") { _, _ in Routes.asset(WebAssets.style, type: "text/css; charset=utf-8")
    }
    router.get("/openapi.json") { _, _ in
      Routes.asset(OpenAPIDocument.json, type: "application/json")
    }
    router.get("/v1/health") { _, _ in try Routes.json(service.health()) }
    router.get("/v1/models") { _, _ in try Routes.json(service.models()) }
    router.post("/v1/images") { request, context in try await routes.upload(request, context) }
    router.post("/v1/embeddings") { request, context in
      try await routes.upload(request, context, embedding: true)
    }
    router.get("/v1/images/:id") { _, context in
      let entry = try service.image(try context.parameters.require("id"))
      return try Routes.json(
        ImageResponse(
          id: entry.id, width: entry.width, height: entry.height,
          encodeMs: entry.encodeTime.milliseconds, model: service.modelName, cacheBytes: entry.bytes
        ))
    }
    router.delete("/v1/images/:id") { _, context in
      let id = try context.parameters.require("id")
      guard service.removeImage(id) else { throw APIError.imageNotFound(id) }
      return Response(status: .noContent)
    }
    router.post("/v1/images/:id/segment") { request, context in
      try await routes.segment(request, context, id: try context.parameters.require("id"))
    }
    router.post("/v1/images/:id/everything") { request, context in
      try await routes.everything(request, context, id: try context.parameters.require("id"))
    }
    if let settings = service.configuration.labelStudio {
      let backend = LabelStudioBackend(service: service, settings: settings)
      let group = router.group().add(middleware: BasicAuthMiddleware(backend: backend))
      group.get("/health") { _, _ in try Routes.jsonObject(backend.health()) }
      group.post("/setup") { request, context in
        try Routes.jsonObject(backend.setup(try await routes.jsonObject(request, context)))
      }
      group.post("/predict") { request, context in
        let deadline = routes.deadline()
        let body = try await routes.jsonObject(request, context)
        return try Routes.jsonObject(try await backend.predict(body, deadline: deadline))
      }
      // Label Studio reports annotation events here; the model does not learn from them.
      group.post("/webhook") { _, _ in try Routes.jsonObject(["status": "Unknown event"]) }
      group.get("/metrics") { _, _ in try Routes.jsonObject([:]) }
    }
    return router
  }

  /// The application: `service` behind HTTP/1.1 on the configured address.
  ///
  /// - Parameter onServerRunning: called with the bound port once the server listens (the
  ///   configured one, or the one picked for port 0).
  public static func application(
    service: SegmentationService, logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) -> some ApplicationProtocol {
    let c = service.configuration
    let idle = TimeAmount.nanoseconds(Int64(c.idleTimeout.seconds * 1e9))
    let header = TimeAmount.nanoseconds(Int64(c.headerTimeout.seconds * 1e9))
    let connections = service.connections
    // Called once per connection: every connection gets handlers of its own.
    let guards: @Sendable () -> [any RemovableChannelHandler] = {
      [
        ConnectionLimitHandler(counter: connections),
        HeaderTimeoutHandler(timeout: header, counter: connections),
      ]
    }
    return Application(
      router: router(service: service),
      server: .http1(configuration: .init(additionalChannelHandlers: guards(), idleTimeout: idle)),
      configuration: .init(address: .hostname(c.host, port: c.port), serverName: "evsam"),
      onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? c.port) },
      logger: logger)
  }
}

struct Routes: Sendable {
  let service: SegmentationService
  var configuration: ServerConfiguration { service.configuration }

  /// The methods each path serves ("*" is one path segment), for 405 answers.
  static let table: [(path: [String], methods: [String])] = [
    ([], ["GET", "HEAD"]), (["app.js"], ["GET", "HEAD"]), (["app.css"], ["GET", "HEAD"]),
    (["openapi.json"], ["GET", "HEAD"]), (["v1", "health"], ["GET", "HEAD"]),
    (["v1", "models"], ["GET", "HEAD"]), (["v1", "images"], ["POST"]),
    (["v1", "embeddings"], ["POST"]),
    (["v1", "images", "*"], ["GET", "HEAD", "DELETE"]),
    (["v1", "images", "*", "segment"], ["POST"]), (["v1", "images", "*", "everything"], ["POST"]),
  ]

  /// The methods `path` serves, nil when no route has this path.
  static func methods(forPath path: String) -> [String]? {
    let segments = path.split(separator: "/").map(String.init)
    return table.first { route in
      route.path.count == segments.count
        && zip(route.path, segments).allSatisfy { $0 == "*" || $0 == $1 }
    }?.methods
  }

  static func asset(_ text: String, type: String) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = type
    headers[.cacheControl] = "no-cache"
    return Response(
      status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
  }

  /// A JSON object built from dictionaries (Label Studio's loosely typed messages).
  static func jsonObject(_ object: [String: Any]) throws -> Response {
    data(
      try JSONSerialization.data(
        withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
  }

  /// A request body that must be one JSON object.
  func jsonObject(_ request: Request, _ context: ServiceRequestContext) async throws
    -> [String: Any]
  {
    let body = try await readBody(
      request, context, limit: configuration.maxJSONBytes, deadline: deadline())
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)),
      let dictionary = object as? [String: Any]
    else { throw APIError.invalidJSON("the body is not a JSON object") }
    return dictionary
  }

  static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return data(try encoder.encode(value), status: status)
  }

  static func data(
    _ data: Data, status: HTTPResponse.Status = .ok, type: String = "application/json"
  )
    -> Response
  {
    var headers = HTTPFields()
    headers[.contentType] = type
    return Response(
      status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
  }

  /// When the request must be answered by.
  func deadline() -> ContinuousClock.Instant {
    .now + configuration.requestTimeout
  }

  /// The whole body, refused when larger than `limit` or slower than the deadline.
  func readBody(
    _ request: Request, _ context: ServiceRequestContext, limit: Int,
    deadline: ContinuousClock.Instant
  ) async throws -> ByteBuffer {
    let tooLarge = APIError(
      .contentTooLarge, code: "payload_too_large",
      "the body is larger than this server's limit of \(limit) bytes")
    if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
      throw tooLarge
    }
    enum Arrival: Sendable {
      case body(ByteBuffer)
      case late
    }
    do {
      return try await withThrowingTaskGroup(of: Arrival.self) { group in
        group.addTask { .body(try await request.body.collect(upTo: limit)) }
        group.addTask {
          try await Task.sleep(until: deadline, clock: .continuous)
          return .late
        }
        defer { group.cancelAll() }
        guard case .body(let body)? = try await group.next() else {
          // Reading the body does not end on cancellation: closing the connection's input
          // ends it (the 408 still goes out, then the connection closes).
          context.channel.close(mode: .input, promise: nil)
          throw APIError.requestTimeout(configuration.requestTimeout)
        }
        return body
      }
    } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
      throw tooLarge
    }
  }

  func decodeJSON<T: Decodable>(_ type: T.Type, from body: ByteBuffer, emptyMeans empty: T?) throws
    -> T
  {
    let data = Data(body.readableBytesView)
    if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
      guard let empty else { throw APIError.invalidJSON("the body is empty: send a JSON object") }
      return empty
    }
    do {
      return try JSONDecoder().decode(T.self, from: data)
    } catch let error as DecodingError {
      throw APIError.invalidJSON(Self.describe(error))
    } catch let error as UnknownFields {
      throw APIError.invalidJSON(error.description)
    }
  }

  /// A decoding failure in one line that points at the offending field.
  static func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
      let p = context.codingPath.map { key in
        key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)"
      }.joined()
      return p.isEmpty ? "the body" : String(p.drop { $0 == "." })
    }
    func typeName(_ type: Any.Type) -> String {
      switch type {
      case is Double.Type, is Int.Type: "a number"
      case is String.Type: "a string"
      case is Bool.Type: "true or false"
      case is [Double].Type, is [[Double]].Type, is [Int].Type, is [[[Double]]].Type: "a list"
      default: "an object"
      }
    }
    switch error {
    case .dataCorrupted(let context):
      if context.codingPath.isEmpty {
        return "the body is not valid JSON"
          + ((context.underlyingError as NSError?).map { ": \($0.localizedDescription)" } ?? "")
      }
      return "\(path(context)): \(context.debugDescription)"
    case .typeMismatch(let type, let context):
      return "\(path(context)) must be \(typeName(type))"
    case .valueNotFound(let type, let context):
      return "\(path(context)) must be \(typeName(type)), not null"
    case .keyNotFound(let key, let context):
      return "\(path(context)) lacks the field \"\(key.stringValue)\""
    @unknown default:
      return "the body does not match the expected JSON: \(error)"
    }
  }

  // MARK: Handlers

  /// An image (`POST /v1/images`), or with `embedding` the file `evsam embed` wrote for one
  /// (`POST /v1/embeddings`): raw bytes or a multipart file part.
  func upload(_ request: Request, _ context: ServiceRequestContext, embedding: Bool = false)
    async throws -> Response
  {
    let deadline = deadline()
    let rawContentType = request.headers[.contentType] ?? ""
    let contentType = rawContentType.lowercased()
    let body = try await readBody(
      request, context, limit: configuration.maxUploadBytes, deadline: deadline)
    let bytes: [UInt8]
    if contentType.hasPrefix("multipart/form-data") {
      do {
        bytes = try Multipart.fileBytes(Array(body.readableBytesView), contentType: rawContentType)
      } catch {
        throw APIError.invalidRequest(error.description)
      }
    } else {
      // The format is read from the bytes, so any other Content-Type will do (curl's
      // --data-binary sends application/x-www-form-urlencoded); what is not an image is
      // refused with 415 by the service.
      bytes = Array(body.readableBytesView)
    }
    let image =
      embedding
      ? try await service.addEmbedding(bytes, deadline: deadline)
      : try await service.addImage(bytes, deadline: deadline)
    var response = try Self.json(image, status: .created)
    response.headers[.location] = "/v1/images/\(image.id)"
    return response
  }

  func segment(_ request: Request, _ context: ServiceRequestContext, id: String) async throws
    -> Response
  {
    let deadline = deadline()
    let query = request.uri.queryParameters
    let format = query.get("format") ?? "json"
    guard format == "json" || format == "png" else {
      throw APIError.invalidRequest("format must be json or png, got \(format)")
    }
    let body = try await readBody(
      request, context, limit: configuration.maxJSONBytes, deadline: deadline)
    let prompt = try decodeJSON(SegmentRequest.self, from: body, emptyMeans: nil)
    let result = try await service.segment(imageID: id, prompt, deadline: deadline)
    guard format == "png" else { return try Self.json(result) }

    let promptIndex = try Self.integer(query.get("prompt"), name: "prompt") ?? 0
    guard result.prompts.indices.contains(promptIndex) else {
      throw APIError.invalidRequest(
        "prompt \(promptIndex) does not exist; this request made \(result.prompts.count)")
    }
    let chosen = result.prompts[promptIndex]
    let candidate = try Self.integer(query.get("candidate"), name: "candidate") ?? chosen.best
    guard chosen.masks.indices.contains(candidate) else {
      throw APIError.invalidRequest(
        "candidate \(candidate) does not exist; this prompt has \(chosen.masks.count) mask(s)")
    }
    let mask = chosen.masks[candidate]
    let pixels = mask.segmentation.decodeRowMajor().map { $0 == 0 ? UInt8(0) : 255 }
    let png = try GrayImage(width: result.width, height: result.height, pixels: pixels).pngData()
    var response = Self.data(png, type: "image/png")
    response.headers[HTTPField.Name("X-Mask-Score")!] = String(mask.score)
    response.headers[HTTPField.Name("X-Mask-Area")!] = String(mask.area)
    response.headers[HTTPField.Name("X-Mask-Handle")!] = mask.handle
    return response
  }

  static func integer(_ text: String?, name: String) throws -> Int? {
    guard let text else { return nil }
    guard let value = Int(text) else {
      throw APIError.invalidRequest("\(name) must be an integer, got \(text)")
    }
    return value
  }

  func everything(_ request: Request, _ context: ServiceRequestContext, id: String) async throws
    -> Response
  {
    let deadline = deadline()
    let body = try await readBody(
      request, context, limit: configuration.maxJSONBytes, deadline: deadline)
    let settings = try decodeJSON(
      EverythingRequest.self, from: body, emptyMeans: EverythingRequest())
    return Self.data(try await service.everything(imageID: id, settings, deadline: deadline))
  }
}

/// Turns every failure into the API's JSON error form, so clients parse one shape.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
  let logger: Logger

  func handle(
    _ request: Request, context: Context, next: (Request, Context) async throws -> Response
  ) async throws -> Response {
    do {
      return try await next(request, context)
    } catch let error as APIError {
      if error.status.code >= 500 {
        logger.warning("\(request.method) \(request.uri.path): \(error)")
      } else {
        logger.debug("\(request.method) \(request.uri.path): \(error)")
      }
      return Self.response(error)
    } catch let error as any HTTPResponseError {
      let status = error.status
      let apiError: APIError =
        switch status {
        case .notFound:
          if let allowed = Routes.methods(forPath: request.uri.path) {
            APIError(
              .methodNotAllowed, code: "method_not_allowed",
              "\(request.uri.path) answers \(allowed.joined(separator: ", ")), not \(request.method)"
            )
          } else {
            APIError(
              .notFound, code: "not_found",
              "no route for \(request.method) \(request.uri.path); see /openapi.json")
          }
        case .contentTooLarge:
          APIError(.contentTooLarge, code: "payload_too_large", "the body is too large")
        default:
          APIError(status, code: "http_\(status.code)", status.reasonPhrase)
        }
      let allow =
        apiError.status == .methodNotAllowed ? Routes.methods(forPath: request.uri.path) : nil
      return Self.response(apiError, allow: allow)
    } catch is CancellationError {
      return Self.response(
        APIError(.serviceUnavailable, code: "cancelled", "the request was cancelled", retryAfter: 1)
      )
    } catch {
      logger.error("\(request.method) \(request.uri.path) failed: \(error)")
      return Self.response(
        APIError(.internalServerError, code: "internal", "internal error: \(error)"))
    }
  }

  static func response(_ error: APIError, allow: [String]? = nil) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    if let allow { headers[.allow] = allow.joined(separator: ", ") }
    if let retryAfter = error.retryAfter { headers[.retryAfter] = String(retryAfter) }
    return Response(
      status: error.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: error.body))
    )
  }
}

/// The request context of the service's routes: Hummingbird's basics plus the connection,
/// which a stalled upload must be able to close.
public struct ServiceRequestContext: RequestContext {
  public var coreContext: CoreRequestContextStorage
  let channel: any Channel

  public init(source: ApplicationRequestContextSource) {
    coreContext = .init(source: source)
    channel = source.channel
  }
}
