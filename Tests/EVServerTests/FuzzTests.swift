import EVImage
import EVLoadTest
import EVMask
import EVServer
import EVTensor
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

extension ServerTests {
  /// Garbage at every route, over loopback: malformed and truncated JSON, wrong types, huge
  /// and negative numbers, truncated multipart bodies, odd images. Every answer must be a
  /// success or a JSON error with a 4xx status, and the server must stay up. Deterministic
  /// (one seed) and bounded in count and time.
  @Suite struct FuzzTests {
    static let seed: UInt64 = 20_261_207
    static let requests = 3000
    static let timeLimit: Duration = .seconds(45)

    /// Values of every JSON type, and the extremes: what a field may be given instead of
    /// what it expects.
    static let values: [String] = [
      "0", "-0", "1", "2", "-1", "-5", "0.5", "3.7", "64", "65", "1024", "1025", "1e308",
      "-1e308", "1e999", "-1e999", "4e-324", "9223372036854775807", "9223372036854775808",
      "-9223372036854775809", "1e20", "true", "false", "null", #""""#, #""m1""#, #""coco_rle""#,
      #""binary_mask""#, #""\u0000""#, "[]", "{}", "[1]", "[1, 2]", "[1, 2, 3, 4]",
      "[[1, 2]]", "[[1e308, 5]]", "[[5, -1e308]]", "[[-1, -1]]", "[[0, 0]]", "[[600, 400]]",
      "[[0, 0, 10, 10]]", "[0, 0, 10, 10]", "[-1, -1, 5, 5]", "[5, 5, 1, 1]",
      "[0, 0, 1e308, 1e308]", "[[[0.5, 0.5]]]", "[[[2, 2]]]", "[[[1e308, -1e308]]]",
      #"["a", "b"]"#, "[null]", "[[null, 1]]", #"{"x": 1}"#,
    ]

    static let segmentFields = ["points", "labels", "box", "boxes", "mask_input", "multimask"]
    static let everythingFields = [
      "point_grids", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
      "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
      "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area",
      "output_mode", "unknown_field",
    ]

    /// A JSON object of 0–4 random fields with random values, sometimes cut short or with a
    /// byte changed.
    static func jsonBody(
      _ fields: [String], fixed: [(String, String)] = [], _ g: inout SeededGenerator
    ) -> [UInt8] {
      var pairs = fixed
      for _ in 0..<Int(g.next() % 5) {
        pairs.append((fields.randomElement(using: &g)!, values.randomElement(using: &g)!))
      }
      var bytes = Array(
        ("{" + pairs.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}").utf8)
      switch g.next() % 10 {
      case 0: bytes = Array(bytes.prefix(Int(g.next() % UInt64(bytes.count))))
      case 1: bytes[Int(g.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: g.next())
      case 2: bytes = Array("[1, 2, 3]".utf8)
      case 3: bytes = Array(repeating: UInt8(ascii: "["), count: 1 + Int(g.next() % 100_000))
      default: break
      }
      return bytes
    }

    /// Grid sizes the server refuses. The generator encodes the image again (and once per
    /// crop), so valid runs are rationed, on 1- or 2-point grids without crops.
    static let invalidGrids = [
      "0", "-1", "65", "1e308", "1.5", #""2""#, "[]", "-9223372036854775808", "true",
    ]

    /// Images that are valid but odd, and bytes that only look like images.
    static func imageBodies() throws -> [(name: String, bytes: [UInt8])] {
      func png(_ w: Int, _ h: Int) throws -> [UInt8] {
        [UInt8](try RGBImage(width: w, height: h, color: RGBColor(200, 30, 90)).pngData())
      }
      let coffee = try TestServer.coffeePNG()
      let jpeg = [UInt8](
        try RGBImage(width: 1, height: 1, color: RGBColor(1, 2, 3)).jpegData())
      var pngHeaderOnly = Array(coffee.prefix(33))
      // IHDR width and height of 2³¹−1: the header probe must refuse it before decoding.
      pngHeaderOnly.replaceSubrange(
        16..<24, with: [0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF])
      return [
        ("1×1 PNG", try png(1, 1)), ("1×1025 PNG", try png(1, 1025)),
        ("1025×1 PNG", try png(1025, 1)), ("1×1 JPEG", jpeg), ("2×8192 PNG", try png(2, 8192)),
        ("truncated PNG", Array(coffee.prefix(coffee.count / 3))),
        ("PNG header of a huge image", pngHeaderOnly),
        ("PNG signature only", Array(coffee.prefix(8))),
        ("truncated JPEG", Array(jpeg.prefix(jpeg.count / 2))),
        ("JPEG start marker only", [0xFF, 0xD8, 0xFF]), ("empty", []),
        ("text", Array("hello".utf8)),
      ]
    }

    static func multipart(_ file: [UInt8], boundary: String) -> [UInt8] {
      Array(
        "--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
          .utf8) + file + Array("\r\n--\(boundary)--\r\n".utf8)
    }

    /// Sends requests over one keep-alive loopback connection (a new one when the server
    /// closed it) and checks every answer. Used by one task at a time: filled on the fuzzing
    /// task, read once that task has ended.
    final class Fuzzer: @unchecked Sendable {
      let port: Int
      private var connection: LoopbackHTTPConnection?
      var requests = 0
      var byStatus: [Int: Int] = [:]
      var failures: [String] = []
      /// The slowest requests, for the summary: where the time goes.
      var slowest: [(label: String, duration: Duration)] = []

      init(port: Int) {
        self.port = port
      }

      /// The answer, or nil (and a failure) when the connection broke without one.
      @discardableResult
      func send(
        _ label: String, _ method: String, _ path: String, type: String? = nil,
        body: [UInt8] = []
      ) -> LoopbackHTTPConnection.Response? {
        requests += 1
        let start = ContinuousClock.now
        defer {
          slowest.append((String(label.prefix(80)), ContinuousClock.now - start))
          slowest = Array(slowest.sorted { $0.duration > $1.duration }.prefix(5))
        }
        do {
          if connection?.isOpen != true {
            // Long enough for an encode in a debug build on a busy machine.
            connection = try LoopbackHTTPConnection(
              host: "127.0.0.1", port: port, timeout: .seconds(120))
          }
          let response = try connection!.request(
            method, path, headers: type.map { ["Content-Type": $0] } ?? [:], body: body)
          check(label, response)
          return response
        } catch {
          connection = nil
          failures.append("\(label): no answer (\(error))")
          return nil
        }
      }

      private func check(_ label: String, _ response: LoopbackHTTPConnection.Response) {
        let status = response.status
        byStatus[status, default: 0] += 1
        let isError = (400..<500).contains(status)
        guard (200..<300).contains(status) || isError else {
          let text = String(decoding: response.body.prefix(300), as: UTF8.self)
          failures.append("\(label): status \(status) \(text)")
          return
        }
        if isError {
          let error = try? JSONDecoder().decode(ErrorResponse.self, from: Data(response.body))
          if error?.error.status != status || response.headers["content-type"] != "application/json"
          {
            failures.append("\(label): \(status) without a JSON error body")
          }
        }
      }

      var summary: String {
        "\(requests) requests; statuses \(byStatus.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }); slowest \(slowest.map { "\($0.label): \($0.duration)" })"
      }
    }

    @Test func everyRouteSurvivesGarbage() async throws {
      try await TestServer.withClient(
        .live, TestServer.configuration { $0.cacheBytes = 512 << 20 }
      ) { client, service in
        let port = try #require(client.port)
        let images = try Self.imageBodies()
        let coffee = try TestServer.coffeePNG()
        // Blocking socket calls: on a thread of their own, not the test's task.
        let fuzzer = try await Task.detached {
          try Self.run(port: port, images: images, coffee: coffee, service: service)
        }.value
        print("fuzz: \(fuzzer.summary)")
        #expect(fuzzer.requests >= 1000, "\(fuzzer.summary)")
        #expect(fuzzer.failures.isEmpty, "\(fuzzer.failures.prefix(10).joined(separator: "\n"))")
        // Still up, and still right: a real prompt on the photograph works. (A new connection:
        // the test client's own has long passed the header and idle timeouts.)
        let connection = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        #expect(try connection.request("GET", "/v1/health").status == 200)
        let upload = try connection.request("POST", "/v1/images", body: coffee)
        let image = try JSONDecoder().decode(ImageResponse.self, from: Data(upload.body))
        let answer = try connection.request(
          "POST", "/v1/images/\(image.id)/segment", headers: ["Content-Type": "application/json"],
          body: Array(#"{"points": [[300, 200]], "labels": [1]}"#.utf8))
        #expect(answer.status == 200)
      }
    }

    static func run(
      port: Int, images: [(name: String, bytes: [UInt8])], coffee: [UInt8],
      service: SegmentationService
    ) throws -> Fuzzer {
      var g = SeededGenerator(seed: Self.seed)
      let fuzzer = Fuzzer(port: port)

      // The images prompts go to: a photograph and the odd sizes the server accepts.
      var ids: [String] = []
      for (name, bytes) in [("coffee", coffee)] + images.prefix(2) {
        let response = fuzzer.send("upload \(name)", "POST", "/v1/images", body: bytes)
        if response?.status == 201,
          let image = try? JSONDecoder().decode(ImageResponse.self, from: Data(response!.body))
        {
          ids.append(image.id)
        }
      }
      #expect(ids.count == 3, "the photograph and the odd images are accepted")
      guard !ids.isEmpty else { return fuzzer }

      // What makes the model work (an upload that decodes, a valid segment-everything run)
      // is done once each here; the generated requests below are all refused or cheap, so
      // that there can be thousands of them.
      for (name, bytes) in images[2..<5] {
        let response = fuzzer.send("upload \(name)", "POST", "/v1/images", body: bytes)
        #expect(response?.status == 201, "upload \(name)")
      }
      fuzzer.send(
        "multipart upload", "POST", "/v1/images", type: "multipart/form-data; boundary=XyZ",
        body: Self.multipart(coffee, boundary: "XyZ"))
      for id in ids {
        let response = fuzzer.send(
          "everything on \(id)", "POST", "/v1/images/\(id)/everything", type: "application/json",
          body: Array(
            #"{"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0}"#.utf8))
        #expect(response?.status == 200)
      }
      let badIDs = [
        "0", "ffffffffffffffffffffffffffffffff", "%00", "..", "a%2Fb",
        String(repeating: "a", count: 2000),
      ]

      let end = ContinuousClock.now + Self.timeLimit
      while fuzzer.requests < Self.requests && ContinuousClock.now < end {
        let id =
          g.next() % 8 == 0 ? badIDs.randomElement(using: &g)! : ids.randomElement(using: &g)!
        switch g.next() % 16 {
        case 0..<6:
          let body = Self.jsonBody(Self.segmentFields, &g)
          let query = [
            "", "?format=png", "?format=gif", "?format=png&candidate=7", "?format=png&prompt=-1",
            "?format=png&candidate=x",
          ].randomElement(using: &g)!
          fuzzer.send(
            "segment \(String(decoding: body.prefix(200), as: UTF8.self))", "POST",
            "/v1/images/\(id)/segment\(query)", type: "application/json", body: body)
        case 6..<10:
          let body = Self.jsonBody(
            Self.everythingFields,
            fixed: [("points_per_side", Self.invalidGrids.randomElement(using: &g)!)], &g)
          fuzzer.send(
            "everything \(String(decoding: body.prefix(200), as: UTF8.self))", "POST",
            "/v1/images/\(id)/everything", type: "application/json", body: body)
        case 10..<13:
          // Uploads of bytes that are not a whole image: broken images as they are, or in a
          // multipart body (of any boundary) cut inside the image.
          var (name, bytes) = images[5...].randomElement(using: &g)!
          var type = ["image/png", "application/octet-stream", "text/plain"].randomElement(
            using: &g)!
          if g.next() % 2 == 0 {
            let boundary = ["XyZ", "", "a b", "\"q\""].randomElement(using: &g)!
            let file = g.next() % 2 == 0 ? coffee : bytes
            let whole = Self.multipart(file, boundary: "XyZ")
            // The part's headers take about 110 bytes; the cut falls before the file's end.
            let cut = Int(g.next() % UInt64(whole.count - 16 - max(file.count / 4, 1)))
            bytes = Array(whole.prefix(cut))
            name = "multipart cut at \(cut) of \(whole.count) bytes, boundary \(boundary)"
            type = "multipart/form-data; boundary=\(boundary)"
          }
          let response = fuzzer.send(
            "upload \(name)", "POST", "/v1/images", type: type, body: bytes)
          // Keep the cache for the images the prompts go to.
          if response?.status == 201,
            let image = try? JSONDecoder().decode(ImageResponse.self, from: Data(response!.body)),
            !service.removeImage(image.id)
          {
            fuzzer.failures.append("upload \(name): the new image is not in the cache")
          }
        case 13:
          let badID = badIDs.randomElement(using: &g)!
          let method = ["GET", "DELETE", "PUT", "PATCH"].randomElement(using: &g)!
          fuzzer.send("\(method) image \(badID.prefix(20))", method, "/v1/images/\(badID)")
        default:
          let path = [
            "/", "/app.js", "/openapi.json", "/v1/health", "/v1/models", "/v1/images",
            "/v1/nothing", "/v1/images/\(id)/segment/extra", "/%ff%fe",
          ].randomElement(using: &g)!
          let method = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"].randomElement(
            using: &g)!
          // A POST to /v1/images with this body is an upload of garbage: refused with 415.
          let body = method == "GET" ? [] : Self.jsonBody(Self.segmentFields, &g)
          fuzzer.send("\(method) \(path)", method, path, type: "application/json", body: body)
        }
      }
      return fuzzer
    }
  }
}
