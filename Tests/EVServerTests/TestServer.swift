import EVModel
import EVPredictor
import EVServer
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import TestSupport
import Testing

/// The fixture model and service setup the server tests share.
enum TestServer {
  /// tiny-l from the golden fixtures, loaded once for all tests.
  static let model: Result<EfficientViTSAM, any Error> = Result {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    return try EfficientViTSAM.load(config: config, checkpoint: Fixtures.url("models/tiny-l.pt"))
  }

  static let modelName = "tiny-l"

  /// Quiet unless a test fails loudly: the service logs every encode at info.
  static var logger: Logger {
    var logger = Logger(label: "evsam.test")
    logger.logLevel = .warning
    return logger
  }

  /// Test defaults (any free port, two workers) changed by `change`.
  static func configuration(_ change: (inout ServerConfiguration) -> Void = { _ in })
    -> ServerConfiguration
  {
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.workers = 2
    change(&configuration)
    return configuration
  }

  static func service(
    _ configuration: ServerConfiguration = configuration(), encoder: EncoderIdentity? = nil
  ) throws -> SegmentationService {
    SegmentationService(
      model: try model.get(), modelName: modelName, configuration: configuration,
      encoder: encoder, logger: logger)
  }

  /// Runs `body` against a fresh service, in-process (`.router`) or over loopback (`.live`),
  /// and stops the service's workers afterwards.
  static func withClient<T>(
    _ setup: TestingSetup = .router, _ configuration: ServerConfiguration = configuration(),
    encoder: EncoderIdentity? = nil,
    _ body: @Sendable (any TestClientProtocol, SegmentationService) async throws -> T
  ) async throws -> T {
    let service = try service(configuration, encoder: encoder)
    defer { service.shutdown() }
    let app = SegmentationServer.application(service: service, logger: logger)
    return try await app.test(setup) { client in try await body(client, service) }
  }

  /// The photograph the golden data was made from (600×400).
  static func coffeePNG() throws -> [UInt8] {
    [UInt8](try Data(contentsOf: Fixtures.url("images/coffee.png")))
  }

  /// The example the project ships (examples/coffee.jpg).
  static var exampleJPEG: URL {
    Fixtures.projectRoot.appendingPathComponent("examples/coffee.jpg")
  }
}

extension TestClientProtocol {
  /// Uploads raw image bytes and returns the parsed answer (the test fails on any other status).
  func upload(_ bytes: [UInt8], type: String = "application/octet-stream") async throws
    -> ImageResponse
  {
    let response = try await execute(
      uri: "/v1/images", method: .post, headers: [.contentType: type],
      body: ByteBuffer(bytes: bytes))
    guard response.status == .created else {
      throw TestFailure("upload answered \(response.status): \(String(buffer: response.body))")
    }
    return try JSONDecoder().decode(ImageResponse.self, from: Data(buffer: response.body))
  }

  func postJSON(_ uri: String, _ json: String) async throws -> TestResponse {
    try await execute(
      uri: uri, method: .post, headers: [.contentType: "application/json"],
      body: ByteBuffer(string: json))
  }

  func segment(_ id: String, _ request: SegmentRequest) async throws -> SegmentResponse {
    let body = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
    let response = try await postJSON("/v1/images/\(id)/segment", body)
    guard response.status == .ok else {
      throw TestFailure("segment answered \(response.status): \(String(buffer: response.body))")
    }
    return try JSONDecoder().decode(SegmentResponse.self, from: Data(buffer: response.body))
  }
}

struct TestFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

extension TestResponse {
  /// The API error this response carries (nil when the body is not one).
  var apiError: ErrorResponse.Detail? {
    try? JSONDecoder().decode(ErrorResponse.self, from: Data(buffer: body)).error
  }
}

extension Data {
  init(buffer: ByteBuffer) {
    self.init(buffer.readableBytesView)
  }
}

/// Every server test, one at a time: several start servers and slow jobs, and their timing
/// checks should not compete with each other for the two cores.
@Suite(.serialized) enum ServerTests {}
