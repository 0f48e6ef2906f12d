import HTTPTypes
import Hummingbird

/// Cross-origin access for web apps served from other origins (`--cors-origin`): the listed
/// origins (or every origin, `*`) get `Access-Control-Allow-Origin` on every answer, and their
/// browsers' preflight requests (`OPTIONS` with `Access-Control-Request-Method`) are answered
/// before routing. Other origins get no CORS headers, so their browsers keep the answers from
/// their scripts. Off by default: the page the server serves itself needs none.
struct CORSPolicyMiddleware<Context: RequestContext>: RouterMiddleware {
  let origins: Set<String>
  let anyOrigin: Bool

  init(origins: [String]) {
    anyOrigin = origins.contains("*")
    self.origins = Set(origins)
  }

  static var allowedMethods: String { "GET, POST, DELETE, HEAD, OPTIONS" }
  static var allowedHeaders: String { "Content-Type, Accept" }

  func handle(
    _ request: Request, context: Context,
    next: (Request, Context) async throws -> Response
  ) async throws -> Response {
    guard let origin = request.headers[.origin] else { return try await next(request, context) }
    let allowed = anyOrigin || origins.contains(origin)
    if request.method == .options && request.headers[.accessControlRequestMethod] != nil {
      var headers: HTTPFields = [:]
      if allowed {
        headers[.accessControlAllowOrigin] = anyOrigin ? "*" : origin
        headers[.accessControlAllowMethods] = Self.allowedMethods
        headers[.accessControlAllowHeaders] = Self.allowedHeaders
        headers[.accessControlMaxAge] = "600"
      }
      if !anyOrigin { headers[.vary] = "Origin" }
      return Response(status: .noContent, headers: headers)
    }
    var response = try await next(request, context)
    if allowed {
      response.headers[.accessControlAllowOrigin] = anyOrigin ? "*" : origin
      // Scripts may read the one non-standard header the API sends.
      response.headers[.accessControlExposeHeaders] = "Retry-After"
    }
    if !anyOrigin { response.headers[values: .vary].append("Origin") }
    return response
  }
}
