import EVTensor
import Foundation
import Hummingbird

/// A failed request as the API reports it: an HTTP status and a JSON body
/// `{"error": {"status": 422, "code": "prompt_out_of_bounds", "message": "…"}}`.
///
/// `code` is stable for programs; `message` says what was wrong and what to do, for people.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
  public var status: HTTPResponse.Status
  public var code: String
  public var message: String
  /// Seconds after which a retry may succeed (503 only).
  public var retryAfter: Int?

  public init(
    _ status: HTTPResponse.Status, code: String, _ message: String, retryAfter: Int? = nil
  ) {
    self.status = status
    self.code = code
    self.message = message
    self.retryAfter = retryAfter
  }

  public var description: String { "\(status.code) \(code): \(message)" }

  static func invalidJSON(_ message: String) -> APIError {
    APIError(.badRequest, code: "invalid_json", message)
  }

  static func invalidRequest(_ message: String) -> APIError {
    APIError(.badRequest, code: "invalid_request", message)
  }

  static func invalidPrompt(_ message: String) -> APIError {
    APIError(.unprocessableContent, code: "invalid_prompt", message)
  }

  static func outOfBounds(_ message: String) -> APIError {
    APIError(.unprocessableContent, code: "prompt_out_of_bounds", message)
  }

  static func imageNotFound(_ id: String) -> APIError {
    APIError(
      .notFound, code: "image_not_found",
      "no image with id \(id): it was never uploaded or was evicted from the cache; upload it again"
    )
  }

  static func maskNotFound(_ handle: String) -> APIError {
    APIError(
      .notFound, code: "mask_not_found",
      "no mask with handle \(handle) for this image: handles expire as newer masks are made; "
        + "segment again without mask_input")
  }

  static func overloaded(retryAfter: Int) -> APIError {
    APIError(
      .serviceUnavailable, code: "overloaded",
      "the server is busy (every worker is taken and the queue is full); retry after \(retryAfter) s",
      retryAfter: retryAfter)
  }

  static func timeout(_ limit: Duration, retryAfter: Int) -> APIError {
    APIError(
      .serviceUnavailable, code: "timeout",
      "the request did not finish within the server's limit of \(formatSeconds(limit)); "
        + "retry later or with a smaller job",
      retryAfter: retryAfter)
  }

  static func requestTimeout(_ limit: Duration) -> APIError {
    APIError(
      .requestTimeout, code: "request_timeout",
      "the request body did not arrive within \(formatSeconds(limit))")
  }

  /// The JSON body.
  var body: Data {
    let envelope = ErrorResponse(error: .init(status: status.code, code: code, message: message))
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Three plain fields always encode.
    return (try? encoder.encode(envelope)) ?? Data("{}".utf8)
  }
}

func formatSeconds(_ d: Duration) -> String {
  let s = d.seconds
  return s == s.rounded() ? "\(Int(s)) s" : String(format: "%.2f s", s)
}

extension Duration {
  /// The duration in milliseconds, as the API reports timings.
  var milliseconds: Double {
    Double(components.seconds) * 1000 + Double(components.attoseconds) * 1e-15
  }
}
