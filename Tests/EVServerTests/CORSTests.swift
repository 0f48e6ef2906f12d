import EVServer
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

extension ServerTests {
  /// `--cors-origin`: off by default; the listed origins (or `*`) get the CORS headers on
  /// answers, errors included, and on preflight requests; other origins get none.
  @Suite struct CORSTests {
    static let app = "https://app.example.com"

    @Test func offByDefault() async throws {
      try await TestServer.withClient { client, _ in
        let health = try await client.execute(
          uri: "/v1/health", method: .get, headers: [.origin: Self.app])
        #expect(health.status == .ok)
        #expect(health.headers[.accessControlAllowOrigin] == nil)
      }
    }

    @Test func listedOriginsMayCallTheAPI() async throws {
      let configuration = TestServer.configuration {
        $0.corsOrigins = [Self.app, "http://localhost:3000"]
      }
      try await TestServer.withClient(.router, configuration) { client, _ in
        // The browser's preflight before a JSON POST.
        let preflight = try await client.execute(
          uri: "/v1/images/abc/segment", method: .options,
          headers: [
            .origin: Self.app, .accessControlRequestMethod: "POST",
            .accessControlRequestHeaders: "content-type",
          ])
        #expect(preflight.status == .noContent)
        #expect(preflight.headers[.accessControlAllowOrigin] == Self.app)
        #expect(preflight.headers[.accessControlAllowMethods]?.contains("POST") == true)
        #expect(preflight.headers[.accessControlAllowHeaders]?.contains("Content-Type") == true)
        #expect(preflight.headers[.vary] == "Origin")

        let health = try await client.execute(
          uri: "/v1/health", method: .get, headers: [.origin: "http://localhost:3000"])
        #expect(health.status == .ok)
        #expect(health.headers[.accessControlAllowOrigin] == "http://localhost:3000")
        // Errors carry them too, so that the page's script can read the message.
        let missing = try await client.execute(
          uri: "/v1/images/nope", method: .get, headers: [.origin: Self.app])
        #expect(missing.status == .notFound)
        #expect(missing.headers[.accessControlAllowOrigin] == Self.app)

        // Another origin: no CORS headers, so its browser keeps the answer from its script.
        let other = try await client.execute(
          uri: "/v1/health", method: .get, headers: [.origin: "https://evil.example"])
        #expect(other.headers[.accessControlAllowOrigin] == nil)
        let otherPreflight = try await client.execute(
          uri: "/v1/health", method: .options,
          headers: [.origin: "https://evil.example", .accessControlRequestMethod: "GET"])
        #expect(otherPreflight.headers[.accessControlAllowOrigin] == nil)
      }
    }

    @Test func anyOrigin() async throws {
      let configuration = TestServer.configuration { $0.corsOrigins = ["*"] }
      try await TestServer.withClient(.router, configuration) { client, _ in
        let health = try await client.execute(
          uri: "/v1/health", method: .get, headers: [.origin: "https://anywhere.example"])
        #expect(health.headers[.accessControlAllowOrigin] == "*")
      }
    }

    @Test func originsAreChecked() {
      var configuration = ServerConfiguration()
      configuration.corsOrigins = ["https://app.example.com/path", "app.example.com"]
      let problems = configuration.problems()
      #expect(problems.count == 2, "\(problems)")
      configuration.corsOrigins = ["https://app.example.com:8443", "*", "http://127.0.0.1:5173"]
      #expect(configuration.problems().isEmpty)
    }
  }
}
