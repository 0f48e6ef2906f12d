import EVExport
import EVImage
import EVMask
import EVServer
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import TestSupport
import Testing

extension ServerTests {
  /// `evsam serve --label-studio`: Label Studio's ML backend protocol, replayed with the
  /// requests Label Studio sends (label-studio-ml-backend's SAM example and test data) and
  /// checked against the responses it expects.
  @Suite struct LabelStudioTests {
    /// The SAM example's labeling config: keypoints and rectangles as smart tools, masks as
    /// brush labels.
    static let labelConfig = """
      <View>
        <Image name="image" value="$image" zoom="true"/>
        <BrushLabels name="tag" toName="image">
          <Label value="Banana" background="#FF0000"/>
          <Label value="Orange" background="#0d14d3"/>
        </BrushLabels>
        <KeyPointLabels name="tag2" toName="image" smart="true">
          <Label value="Banana" smart="true" background="#000000" showInline="true"/>
          <Label value="Orange" smart="true" background="#000000" showInline="true"/>
        </KeyPointLabels>
        <RectangleLabels name="tag3" toName="image" smart="true">
          <Label value="Banana" background="#000000" showInline="true"/>
          <Label value="Orange" background="#000000" showInline="true"/>
        </RectangleLabels>
      </View>
      """

    static func configuration() throws -> ServerConfiguration {
      let images = try Fixtures.url("images")
      return TestServer.configuration {
        $0.labelStudio = LabelStudioSettings(localFilesRoot: images)
      }
    }

    /// A `/predict` request as Label Studio's interactive annotation sends it: one task whose
    /// image is a local file, and the regions just drawn (percentages of 600×400).
    static func predictBody(
      _ context: [[String: Any]], image: String = "/data/local-files/?d=coffee.png"
    ) throws -> String {
      let body: [String: Any] = [
        "tasks": [
          [
            "id": 7, "data": ["image": image],
            "meta": [String: Any](), "created_at": "2026-12-08T01:00:00.000000Z",
            "annotations": [Any](), "predictions": [Any](), "project": 3,
          ]
        ],
        "project": "3.1765155600",
        "label_config": labelConfig,
        "params": [
          "login": NSNull(), "password": NSNull(), "context": ["result": context],
        ] as [String: Any],
      ]
      return String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
    }

    static func keypoint(x: Double, y: Double, positive: Bool, label: String) -> [String: Any] {
      [
        "original_width": 600, "original_height": 400, "image_rotation": 0,
        "value": ["x": x, "y": y, "width": 0.32, "keypointlabels": [label]],
        "is_positive": positive, "id": "fBWv1t0S2L", "from_name": "tag2", "to_name": "image",
        "type": "keypointlabels", "origin": "manual",
      ]
    }

    /// The brush mask of a `/predict` answer, with its checks against the expected schema.
    static func brushMask(_ response: TestResponse, label: String) throws -> (
      mask: [UInt8], score: Double
    ) {
      #expect(response.status == .ok, "\(String(buffer: response.body))")
      let object = try #require(
        try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
      let results = try #require(object["results"] as? [[String: Any]])
      #expect(results.count == 1)
      #expect(results[0]["model_version"] as? String == TestServer.modelName)
      let regions = try #require(results[0]["result"] as? [[String: Any]])
      #expect(regions.count == 1)
      let region = regions[0]
      #expect(region["type"] as? String == "brushlabels")
      #expect(region["from_name"] as? String == "tag" && region["to_name"] as? String == "image")
      #expect(region["original_width"] as? Int == 600 && region["original_height"] as? Int == 400)
      #expect(region["image_rotation"] as? Int == 0 && region["readonly"] as? Bool == false)
      #expect(region["id"] is String)
      let value = try #require(region["value"] as? [String: Any])
      #expect(value["format"] as? String == "rle")
      #expect(value["brushlabels"] as? [String] == [label])
      let rle = try #require(value["rle"] as? [Int]).map(UInt8.init)
      let score = try #require(region["score"] as? Double)
      #expect(results[0]["score"] as? Double == score)
      return (try #require(LabelStudioBrush.decode(rle, width: 600, height: 400)), score)
    }

    @Test func healthSetupAndWebhook() async throws {
      try await TestServer.withClient(.router, try Self.configuration()) { client, _ in
        let health = try await client.execute(uri: "/health", method: .get)
        #expect(health.status == .ok)
        let h = try JSONSerialization.jsonObject(with: Data(buffer: health.body)) as? [String: Any]
        #expect(h?["status"] as? String == "UP")
        let setup = try await client.postJSON(
          "/setup",
          """
          {"project": "3.1765155600", "schema": \(String(decoding: try JSONSerialization.data(withJSONObject: [Self.labelConfig]), as: UTF8.self).dropFirst().dropLast()), "hostname": "http://localhost:8080", "access_token": "abc", "extra_params": null}
          """)
        #expect(setup.status == .ok)
        let s = try JSONSerialization.jsonObject(with: Data(buffer: setup.body)) as? [String: Any]
        #expect(s?["model_version"] as? String == TestServer.modelName)
        let webhook = try await client.postJSON(
          "/webhook", #"{"action": "ANNOTATION_CREATED", "project": {"id": 3}}"#)
        #expect(webhook.status == .ok)
        // A pre-annotation request (no context) gets no prediction.
        let empty = try await client.postJSON("/predict", try Self.predictBody([]))
        let e = try JSONSerialization.jsonObject(with: Data(buffer: empty.body)) as? [String: Any]
        #expect(empty.status == .ok && (e?["results"] as? [Any])?.isEmpty == true)
      }
      // Without --label-studio the routes do not exist.
      try await TestServer.withClient { client, _ in
        let health = try await client.execute(uri: "/health", method: .get)
        #expect(health.status == .notFound)
      }
    }

    @Test func clicksAndBoxesComeBackAsTheBestMask() async throws {
      try await TestServer.withClient(.router, try Self.configuration()) { client, _ in
        // Two clicks, one negative: 50 %, 50 % is (300, 200); 20 %, 25 % is (120, 100).
        let clicks = [
          Self.keypoint(x: 50, y: 50, positive: true, label: "Banana"),
          Self.keypoint(x: 20, y: 25, positive: false, label: "Banana"),
        ]
        let first = try await client.postJSON("/predict", try Self.predictBody(clicks))
        let brush = try Self.brushMask(first, label: "Banana")
        // The same prompt through the API: the best of three candidates, the same pixels.
        let image = try await client.upload(try TestServer.coffeePNG())
        let direct = try await client.segment(
          image.id,
          SegmentRequest(points: [[300, 200], [120, 100]], labels: [1, 0], multimask: true))
        let best = direct.prompts[0].masks[direct.prompts[0].best]
        #expect(brush.mask == best.segmentation.decodeRowMajor())
        #expect(brush.score == best.score)

        // A rectangle: 10 %, 10 %, 50 % × 60 % is the box (60, 40)–(360, 280).
        let rectangle: [String: Any] = [
          "original_width": 600, "original_height": 400, "image_rotation": 0,
          "value": [
            "x": 10, "y": 10, "width": 50, "height": 60, "rotation": 0,
            "rectanglelabels": ["Orange"],
          ],
          "id": "r1", "from_name": "tag3", "to_name": "image", "type": "rectanglelabels",
          "origin": "manual",
        ]
        let boxed = try Self.brushMask(
          try await client.postJSON("/predict", try Self.predictBody([rectangle])),
          label: "Orange")
        let viaAPI = try await client.segment(
          image.id, SegmentRequest(box: [60, 40, 360, 280], multimask: true))
        let bestBox = viaAPI.prompts[0].masks[viaAPI.prompts[0].best]
        #expect(boxed.mask == bestBox.segmentation.decodeRowMajor())
      }
    }

    /// Task images Label Studio serves over HTTP (uploads), fetched with the API key: a legacy
    /// token as `Token`, a personal access token exchanged at /api/token/refresh/ for `Bearer`
    /// (here the first access token has already expired: refused, then replaced).
    @Test(arguments: ["legacy-key", "header.payload.signature"])
    func uploadedImagesAreFetchedWithTheToken(key: String) async throws {
      let png = try TestServer.coffeePNG()
      let issued = Atomic<Int>(0)
      let fake = Router()
      fake.post("/api/token/refresh/") { request, context -> Response in
        let body = try await request.body.collect(upTo: 1 << 16)
        let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
        guard object?["refresh"] as? String == key else { return Response(status: .unauthorized) }
        let n = issued.add(1, ordering: .relaxed).newValue
        return Response(
          status: .ok, headers: [.contentType: "application/json"],
          body: .init(byteBuffer: ByteBuffer(string: #"{"access": "access-\#(n)"}"#)))
      }
      fake.get("/data/upload/3/coffee.png") { request, _ -> Response in
        let expected = key.contains(".") ? "Bearer access-2" : "Token \(key)"
        guard request.headers[.authorization] == expected else {
          return Response(status: .unauthorized)
        }
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: png)))
      }
      let labelStudio = Application(
        router: fake, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
      try await labelStudio.test(.live) { labelStudioClient in
        let port = try #require(labelStudioClient.port)
        let configuration = TestServer.configuration {
          $0.labelStudio = LabelStudioSettings(
            url: URL(string: "http://127.0.0.1:\(port)"), apiKey: key)
        }
        try await TestServer.withClient(.router, configuration) { client, _ in
          let body = try Self.predictBody(
            [Self.keypoint(x: 50, y: 50, positive: true, label: "Orange")],
            image: "/data/upload/3/coffee.png")
          let first = try Self.brushMask(
            try await client.postJSON("/predict", body), label: "Orange")
          #expect(first.mask.contains(1) || first.mask.contains(0))
          // The image is cached: a second click does not fetch it again (the fake would
          // still answer, so count the cache's images instead).
          _ = try Self.brushMask(try await client.postJSON("/predict", body), label: "Orange")
          let health = try await client.execute(uri: "/v1/health", method: .get)
          let h = try JSONDecoder().decode(HealthResponse.self, from: Data(buffer: health.body))
          #expect(h.cache.images == 1)
        }
        // Without the key Label Studio refuses, and the answer says so.
        let keyless = TestServer.configuration {
          $0.labelStudio = LabelStudioSettings(url: URL(string: "http://127.0.0.1:\(port)"))
        }
        try await TestServer.withClient(.router, keyless) { client, _ in
          let body = try Self.predictBody(
            [Self.keypoint(x: 50, y: 50, positive: true, label: "Orange")],
            image: "/data/upload/3/coffee.png")
          let refused = try await client.postJSON("/predict", body)
          #expect(refused.status == .badRequest && refused.apiError?.code == "image_unreachable")
          #expect(refused.apiError?.message.contains("401") == true)
        }
      }
    }

    /// With BASIC_AUTH_USER / BASIC_AUTH_PASS the backend's routes need those credentials; the
    /// API's own routes do not change.
    @Test func basicAuthGuardsTheBackendRoutes() async throws {
      let configuration = TestServer.configuration {
        $0.labelStudio = LabelStudioSettings(basicAuth: .init(user: "ls", password: "s3cret"))
      }
      try await TestServer.withClient(.router, configuration) { client, _ in
        let none = try await client.execute(uri: "/health", method: .get)
        #expect(none.status == .unauthorized)
        #expect(none.headers[.wwwAuthenticate] == #"Basic realm="Login required""#)
        let wrong = try await client.execute(
          uri: "/health", method: .get,
          headers: [.authorization: "Basic " + Data("ls:guess".utf8).base64EncodedString()])
        #expect(wrong.status == .unauthorized)
        let right = try await client.execute(
          uri: "/health", method: .get,
          headers: [.authorization: "Basic " + Data("ls:s3cret".utf8).base64EncodedString()])
        #expect(right.status == .ok)
        let setup = try await client.postJSON("/setup", #"{"project": "1.2", "schema": ""}"#)
        #expect(setup.status == .unauthorized)
        #expect(try await client.execute(uri: "/v1/health", method: .get).status == .ok)
      }
    }

    @Test func unusableRequestsAreNamed() async throws {
      try await TestServer.withClient(.router, try Self.configuration()) { client, _ in
        let click = [Self.keypoint(x: 50, y: 50, positive: true, label: "Banana")]
        // No BrushLabels in the config.
        let noBrush = try Self.predictBody(click).replacingOccurrences(
          of: "BrushLabels", with: "PolygonLabels")
        let refused = try await client.postJSON("/predict", noBrush)
        #expect(refused.status == .unprocessableContent)
        #expect(refused.apiError?.code == "invalid_label_config")
        // A local file outside the served folder is never read.
        let escape = try Self.predictBody(
          click, image: "/data/local-files/?d=../models/tiny-l.json")
        let outside = try await client.postJSON("/predict", escape)
        #expect(outside.status == .badRequest && outside.apiError?.code == "image_unreachable")
      }
    }
  }
}
