import EVLoadTest
import EVServer
import Foundation
import HummingbirdTesting
import NIOCore
import Testing

extension ServerTests {
  /// The service over a real loopback socket: limits that need concurrency or time. One at a
  /// time, so that their slow jobs do not slow each other down.
  @Suite struct LoopbackTests {
    /// Polls `/v1/health` until `condition` holds (or fails after `seconds`).
    static func waitFor(
      _ client: any TestClientProtocol, seconds: Double = 30, _ condition: (HealthResponse) -> Bool
    ) async throws {
      let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
      while ContinuousClock.now < end {
        let response = try await client.execute(uri: "/v1/health", method: .get)
        let health = try JSONDecoder().decode(
          HealthResponse.self, from: Data(buffer: response.body))
        if condition(health) { return }
        try await Task.sleep(for: .milliseconds(20))
      }
      throw TestFailure("the server did not reach the expected state within \(seconds) s")
    }

    /// The grid side that makes the fixture model's mask generator run for about `seconds`
    /// here, measured on a 2×2 grid (the speed of the decoder changes as the kernels improve,
    /// so a fixed grid would not stay slow).
    static func slowSide(
      _ client: any TestClientProtocol, image: String, seconds: Double
    ) async throws -> Int {
      let response = try await client.postJSON(
        "/v1/images/\(image)/everything",
        #"{"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0}"#)
      guard response.status == .ok,
        let document = try JSONSerialization.jsonObject(with: Data(buffer: response.body))
          as? [String: Any],
        let timing = document["timing_ms"] as? [String: Double],
        let decoder = timing["decoder"], let post = timing["postprocess"]
      else {
        throw TestFailure("the calibration run failed: \(String(buffer: response.body))")
      }
      let perPoint = max((decoder + post) / 4, 0.01)
      return min(64, max(4, Int((seconds * 1000 / perPoint).squareRoot().rounded(.up))))
    }

    /// Starts the mask generator on a `side`×`side` grid on a connection of its own (the test
    /// client sends one request at a time). Returns the answer's status and error code.
    static func slowEverything(port: Int?, image: String, side: Int) throws -> Task<
      (Int, String?), any Error
    > {
      let port = try #require(port)
      return Task.detached {
        let connection = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        let response = try connection.request(
          "POST", "/v1/images/\(image)/everything", headers: ["Content-Type": "application/json"],
          body: Array(
            #"{"points_per_side": \#(side), "pred_iou_thresh": 0, "stability_score_thresh": 0}"#
              .utf8))
        let error = try? JSONDecoder().decode(ErrorResponse.self, from: Data(response.body))
        return (response.status, error?.error.code)
      }
    }

    @Test func uploadAndSegmentOverLoopback() async throws {
      try await TestServer.withClient(.live) { client, _ in
        #expect(client.port != nil)
        let image = try await client.upload(try TestServer.coffeePNG())
        let answer = try await client.segment(image.id, SegmentRequest(box: [100, 50, 400, 300]))
        #expect(answer.prompts[0].masks.count == 3)
        // The same through the project's own blocking client (which the load test uses).
        let connection = try LoopbackHTTPConnection(
          host: "127.0.0.1", port: try #require(client.port))
        let health = try connection.request("GET", "/v1/health")
        #expect(health.status == 200)
        let again = try connection.request(
          "POST", "/v1/images/\(image.id)/segment", headers: ["Content-Type": "application/json"],
          body: Array(#"{"box": [100, 50, 400, 300]}"#.utf8))
        #expect(again.status == 200)
        let decoded = try JSONDecoder().decode(SegmentResponse.self, from: Data(again.body))
        // Handles are new for every answer; the masks and scores are the same.
        #expect(
          decoded.prompts[0].masks.map(\.segmentation)
            == answer.prompts[0].masks.map(\.segmentation))
        #expect(decoded.prompts[0].masks.map(\.score) == answer.prompts[0].masks.map(\.score))
      }
    }

    /// One worker, no queue: while it runs a long job, a second model request is refused at
    /// once with 503 and Retry-After, health still answers, and afterwards work resumes.
    @Test func fullQueueAnswers503WithRetryAfter() async throws {
      try await TestServer.withClient(
        .live,
        TestServer.configuration {
          $0.workers = 1
          $0.queueCapacity = 0
        }
      ) { client, service in
        let image = try await client.upload(try TestServer.coffeePNG())
        let side = try await Self.slowSide(client, image: image.id, seconds: 2)
        let slow = try Self.slowEverything(port: client.port, image: image.id, side: side)
        try await Self.waitFor(client) { $0.queue.running == 1 }

        let refused = try await client.postJSON(
          "/v1/images/\(image.id)/segment", #"{"points": [[10, 10]], "labels": [1]}"#)
        #expect(refused.status == .serviceUnavailable)
        #expect(refused.apiError?.code == "overloaded")
        let retryAfter = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
        #expect(retryAfter >= 1)
        let upload = try await client.execute(
          uri: "/v1/images", method: .post, body: ByteBuffer(bytes: try TestServer.coffeePNG()))
        #expect(upload.status == .serviceUnavailable && upload.apiError?.code == "overloaded")
        let health = try await client.execute(uri: "/v1/health", method: .get)
        #expect(health.status == .ok)

        #expect(try await slow.value == (200, nil))
        let after = try await client.segment(
          image.id, SegmentRequest(points: [[10, 10]], labels: [1]))
        #expect(after.prompts.count == 1)
        #expect(service.compute.stats.rejected == 2)
      }
    }

    /// A job that outlives the request timeout is answered 503 `timeout`; a request waiting
    /// behind it in the queue times out too and leaves the queue; the server goes on.
    @Test func slowJobsTimeOut() async throws {
      try await TestServer.withClient(
        .live,
        TestServer.configuration {
          $0.workers = 1
          $0.queueCapacity = 4
          $0.requestTimeout = .seconds(2)
        }
      ) { client, service in
        let image = try await client.upload(try TestServer.coffeePNG())
        let side = try await Self.slowSide(client, image: image.id, seconds: 4)
        let slow = try Self.slowEverything(port: client.port, image: image.id, side: side)
        try await Self.waitFor(client) { $0.queue.running == 1 }
        let queued = try await client.postJSON(
          "/v1/images/\(image.id)/segment", #"{"points": [[10, 10]], "labels": [1]}"#)
        #expect(queued.status == .serviceUnavailable && queued.apiError?.code == "timeout")
        #expect(queued.headers[.retryAfter] != nil)
        #expect(try await slow.value == (503, "timeout"))
        // The dropped request left the queue; once the running job ends, requests succeed.
        #expect(service.compute.stats.waiting == 0)
        try await Self.waitFor(client) { $0.queue.running == 0 }
        let after = try await client.segment(
          image.id, SegmentRequest(points: [[10, 10]], labels: [1]))
        #expect(after.prompts.count == 1)
        #expect(service.compute.stats.timedOut == 2)
      }
    }

    /// A body that stops arriving is answered 408 when the request timeout passes.
    @Test func stalledBodyAnswers408() async throws {
      try await TestServer.withClient(
        .live, TestServer.configuration { $0.requestTimeout = .milliseconds(500) }
      ) {
        client, _ in
        let port = try #require(client.port)
        let connection = try LoopbackHTTPConnection(
          host: "127.0.0.1", port: port, timeout: .seconds(20))
        try connection.send(
          Array(
            "POST /v1/images HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n".utf8)
            + [UInt8](repeating: 0x89, count: 100))
        let start = ContinuousClock.now
        let response = try connection.readResponse()
        #expect(response.status == 408)
        let error = try JSONDecoder().decode(ErrorResponse.self, from: Data(response.body))
        #expect(error.error.code == "request_timeout")
        #expect(ContinuousClock.now - start < .seconds(10))
        let health = try await client.execute(uri: "/v1/health", method: .get)
        #expect(health.status == .ok)
      }
    }

    /// Least recently used images leave when the cache bound is reached; their ids then answer
    /// 404 and the bytes stay within the bound.
    @Test func cacheEvictsLeastRecentlyUsed() async throws {
      let perImage = CachedImage.estimatedBytes(width: 600, height: 400, maxHandles: 32)
      try await TestServer.withClient(
        .live, TestServer.configuration { $0.cacheBytes = 2 * perImage + perImage / 2 }
      ) { client, service in
        let png = try TestServer.coffeePNG()
        let a = try await client.upload(png)
        let b = try await client.upload(png)
        // Using a makes it newer than b.
        _ = try await client.segment(a.id, SegmentRequest(points: [[5, 5]], labels: [1]))
        let c = try await client.upload(png)
        let stats = service.cache.stats
        #expect(stats.images == 2 && stats.evictions == 1 && stats.bytes <= stats.limitBytes)
        let gone = try await client.postJSON(
          "/v1/images/\(b.id)/segment", #"{"points": [[5, 5]], "labels": [1]}"#)
        #expect(gone.status == .notFound && gone.apiError?.code == "image_not_found")
        for kept in [a, c] {
          let answer = try await client.segment(
            kept.id, SegmentRequest(points: [[5, 5]], labels: [1]))
          #expect(answer.imageId == kept.id)
        }
      }
    }
  }
}
