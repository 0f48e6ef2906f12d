import EVImage
import EVMask
import EVServer
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

extension ServerTests {
  /// The API driven in-process (HummingbirdTesting's router client, no sockets).
  @Suite struct APITests {
    @Test func healthModelsAndDocuments() async throws {
      try await TestServer.withClient { client, _ in
        let health = try await client.execute(uri: "/v1/health", method: .get)
        #expect(health.status == .ok)
        let h = try JSONDecoder().decode(HealthResponse.self, from: Data(buffer: health.body))
        #expect(h.status == "ok" && h.model == TestServer.modelName)
        #expect(h.queue.workers == 2 && h.cache.images == 0)
        #expect(h.rssBytes > 0)

        let models = try await client.execute(uri: "/v1/models", method: .get)
        let m = try JSONDecoder().decode(ModelsResponse.self, from: Data(buffer: models.body))
        #expect(m.models.map(\.name) == [TestServer.modelName])
        #expect(m.models[0].encoderInputSize == 512 && m.models[0].promptFrameSize == 1024)

        let page = try await client.execute(uri: "/", method: .get)
        #expect(page.status == .ok)
        #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
        let html = String(buffer: page.body)
        #expect(html.contains("<canvas id=\"view\"") && html.contains("/app.js"))
        // No third-party host: the page must work offline.
        #expect(!html.contains("http://") && !html.contains("https://"))
        let script = try await client.execute(uri: "/app.js", method: .get)
        #expect(script.headers[.contentType]?.hasPrefix("text/javascript") == true)
        #expect(String(buffer: script.body).contains("/v1/images"))
        let style = try await client.execute(uri: "/app.css", method: .get)
        #expect(style.status == .ok)
      }
    }

    /// Every route is described, with the operations it serves, and the request schemas name
    /// exactly the fields the service decodes.
    @Test func openAPIDocumentDescribesTheRoutes() async throws {
      try await TestServer.withClient { client, _ in
        let response = try await client.execute(uri: "/openapi.json", method: .get)
        #expect(response.status == .ok)
        let document = try #require(
          try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let operations = paths.mapValues { Set($0.keys.filter { $0 != "parameters" }) }
        #expect(
          operations == [
            "/v1/health": ["get"], "/v1/models": ["get"], "/v1/images": ["post"],
            "/v1/embeddings": ["post"],
            "/v1/images/{id}": ["get", "delete"], "/v1/images/{id}/segment": ["post"],
            "/v1/images/{id}/everything": ["post"],
          ])
        let schemas = try #require(
          (document["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]])
        func fields(_ name: String) -> Set<String> {
          Set((schemas[name]?["properties"] as? [String: Any])?.keys ?? [:].keys)
        }
        #expect(
          fields("SegmentRequest") == [
            "points", "labels", "box", "boxes", "mask_input", "multimask",
          ])
        #expect(fields("EverythingRequest").count == 13)
        #expect(fields("EverythingRequest").contains("crop_n_points_downscale_factor"))
        #expect(fields("Mask") == ["segmentation", "score", "area", "bbox", "handle"])
      }
    }

    @Test func uploadInspectAndDelete() async throws {
      try await TestServer.withClient { client, service in
        let png = try TestServer.coffeePNG()
        let response = try await client.execute(
          uri: "/v1/images", method: .post, headers: [.contentType: "image/png"],
          body: ByteBuffer(bytes: png))
        #expect(response.status == .created)
        let image = try JSONDecoder().decode(ImageResponse.self, from: Data(buffer: response.body))
        #expect(image.width == 600 && image.height == 400 && image.model == TestServer.modelName)
        #expect(image.id.count == 32 && image.encodeMs > 0)
        #expect(response.headers[.location] == "/v1/images/\(image.id)")
        #expect(service.cache.stats.images == 1 && service.cache.stats.bytes == image.cacheBytes)

        let again = try await client.execute(uri: "/v1/images/\(image.id)", method: .get)
        #expect(
          try JSONDecoder().decode(ImageResponse.self, from: Data(buffer: again.body)) == image)

        let deleted = try await client.execute(uri: "/v1/images/\(image.id)", method: .delete)
        #expect(deleted.status == .noContent)
        let gone = try await client.execute(uri: "/v1/images/\(image.id)", method: .get)
        #expect(gone.status == .notFound && gone.apiError?.code == "image_not_found")
        #expect(service.cache.stats.images == 0)
      }
    }

    /// WebP and TIFF uploads decode to the same pixels as the PNG they were made from (lossless
    /// WebP; a baseline TIFF written here), and a claimed size is checked before decoding.
    @Test func webPAndTIFFUploads() async throws {
      try await TestServer.withClient { client, _ in
        let picture = try RGBImage(data: Data(try TestServer.coffeePNG()))
        var tiff = Data("II".utf8) + Data([42, 0, 8, 0, 0, 0])
        let entries: [(UInt16, UInt16, UInt32)] = [
          (256, 4, UInt32(picture.width)), (257, 4, UInt32(picture.height)), (258, 3, 8),
          (259, 3, 1), (262, 3, 2), (273, 4, 8 + 2 + 10 * 12 + 4), (277, 3, 3),
          (278, 4, UInt32(picture.height)), (279, 4, UInt32(picture.pixels.count)), (339, 3, 1),
        ]
        func le(_ v: UInt32, _ n: Int) -> Data {
          Data((0..<n).map { UInt8((v >> (8 * $0)) & 0xFF) })
        }
        tiff += le(UInt32(entries.count), 2)
        for (tag, type, value) in entries {
          tiff += le(UInt32(tag), 2) + le(UInt32(type), 2) + le(1, 4)
          tiff += type == 3 ? le(value, 2) + le(0, 2) : le(value, 4)
        }
        tiff += le(0, 4) + Data(picture.pixels)
        for (name, bytes) in [
          ("webp", WebPCodec.encodeLossless(picture)), ("tiff", tiff),
        ] {
          let response = try await client.execute(
            uri: "/v1/images", method: .post, headers: [.contentType: "application/octet-stream"],
            body: ByteBuffer(bytes: [UInt8](bytes)))
          #expect(response.status == .created, "\(name): \(String(buffer: response.body))")
          let image = try JSONDecoder().decode(
            ImageResponse.self, from: Data(buffer: response.body))
          #expect(image.width == 600 && image.height == 400, "\(name)")
        }
      }
    }

    /// A browser form or `curl -F image=@coffee.jpg`: the shipped example, as multipart.
    @Test func multipartUpload() async throws {
      try await TestServer.withClient { client, _ in
        let jpeg = [UInt8](try Data(contentsOf: TestServer.exampleJPEG))
        let boundary = "----evsamBoundary7MA4YWxk"
        var body = Array(
          "--\(boundary)\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n".utf8)
        body += Array(
          "--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"; filename=\"coffee.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
            .utf8)
        body += jpeg
        body += Array("\r\n--\(boundary)--\r\n".utf8)
        let response = try await client.execute(
          uri: "/v1/images", method: .post,
          headers: [.contentType: "multipart/form-data; boundary=\(boundary)"],
          body: ByteBuffer(bytes: body))
        #expect(response.status == .created)
        let image = try JSONDecoder().decode(ImageResponse.self, from: Data(buffer: response.body))
        let decoded = try RGBImage(data: Data(jpeg))
        #expect(image.width == decoded.width && image.height == decoded.height)

        let noFile = try await client.execute(
          uri: "/v1/images", method: .post,
          headers: [.contentType: "multipart/form-data; boundary=\(boundary)"],
          body: ByteBuffer(
            string:
              "--\(boundary)\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--\(boundary)--\r\n"
          ))
        #expect(noFile.status == .badRequest && noFile.apiError?.code == "invalid_request")
      }
    }

    @Test func segmentAnswersMasksHandlesAndPNG() async throws {
      try await TestServer.withClient { client, _ in
        let image = try await client.upload(try TestServer.coffeePNG())
        let answer = try await client.segment(
          image.id, SegmentRequest(points: [[300, 200]], labels: [1]))
        #expect(answer.imageId == image.id && answer.multimask)
        #expect(answer.width == 600 && answer.height == 400)
        let prompt = try #require(answer.prompts.first)
        #expect(answer.prompts.count == 1 && prompt.masks.count == 3)
        #expect(
          prompt.best
            == prompt.masks.indices.max { prompt.masks[$0].score < prompt.masks[$1].score })
        for mask in prompt.masks {
          #expect(mask.segmentation.height == 400 && mask.segmentation.width == 600)
          #expect(mask.area == mask.segmentation.decodeRowMajor().reduce(0) { $0 + Int($1) })
          #expect(mask.bbox == mask.segmentation.boundingBox.array)
        }
        #expect(Set(prompt.masks.map(\.handle)).count == 3)

        // Several boxes form a batch; the point goes with each.
        let batch = try await client.segment(
          image.id,
          SegmentRequest(
            points: [[300, 200]], labels: [0], boxes: [[10, 10, 200, 200], [250, 100, 590, 390]],
            multimask: false))
        #expect(batch.prompts.count == 2 && batch.prompts.allSatisfy { $0.masks.count == 1 })

        // Refinement with an earlier mask.
        let refined = try await client.segment(
          image.id,
          SegmentRequest(
            points: [[300, 200], [420, 330]], labels: [1, 1],
            maskInput: prompt.masks[prompt.best].handle, multimask: false))
        #expect(refined.prompts[0].masks.count == 1)

        // The same prompt as a PNG: the best candidate, 255 inside.
        let png = try await client.postJSON(
          "/v1/images/\(image.id)/segment?format=png", #"{"points": [[300, 200]], "labels": [1]}"#)
        #expect(png.status == .ok && png.headers[.contentType] == "image/png")
        let picture = try RGBImage(data: Data(buffer: png.body))
        let expected = prompt.masks[prompt.best].segmentation.decodeRowMajor()
        #expect(picture.width == 600 && picture.height == 400)
        let agree = (0..<(600 * 400)).filter {
          (picture.pixels[3 * $0] == 255) == (expected[$0] == 1)
        }
        #expect(agree.count == 600 * 400)
        #expect(
          png.headers[HTTPField.Name("X-Mask-Area")!] == String(prompt.masks[prompt.best].area))

        let second = try await client.postJSON(
          "/v1/images/\(image.id)/segment?format=png&candidate=2",
          #"{"points": [[300, 200]], "labels": [1]}"#)
        #expect(second.headers[HTTPField.Name("X-Mask-Area")!] == String(prompt.masks[2].area))
      }
    }

    /// Every kind of bad input gets its status and a JSON error, and the service keeps serving.
    @Test func badInputIsRefusedWithJSONErrors() async throws {
      try await TestServer.withClient(
        .router,
        TestServer.configuration {
          $0.maxPoints = 5
          $0.maxMaskPixels = 5 * 600 * 400
        }
      ) {
        client, _ in
        let image = try await client.upload(try TestServer.coffeePNG())
        let segment = "/v1/images/\(image.id)/segment"
        let cases: [(String, String, HTTPResponse.Status, String)] = [
          ("malformed JSON", #"{"points": [[1, 2]"#, .badRequest, "invalid_json"),
          ("not an object", #"[1, 2]"#, .badRequest, "invalid_json"),
          ("wrong type", #"{"points": "here", "labels": [1]}"#, .badRequest, "invalid_json"),
          ("unknown field", #"{"point": [[1, 2]], "labels": [1]}"#, .badRequest, "invalid_json"),
          ("empty body", "", .badRequest, "invalid_json"),
          ("no prompt", #"{"multimask": true}"#, .unprocessableContent, "invalid_prompt"),
          (
            "label 2", #"{"points": [[1, 2]], "labels": [2]}"#, .unprocessableContent,
            "invalid_prompt"
          ),
          ("labels missing", #"{"points": [[1, 2]]}"#, .unprocessableContent, "invalid_prompt"),
          (
            "three coordinates", #"{"points": [[1, 2, 3]], "labels": [1]}"#, .unprocessableContent,
            "invalid_prompt"
          ),
          ("inverted box", #"{"box": [50, 50, 10, 60]}"#, .unprocessableContent, "invalid_prompt"),
          ("short box", #"{"box": [50, 50, 60]}"#, .unprocessableContent, "invalid_prompt"),
          (
            "box and boxes", #"{"box": [1, 1, 2, 2], "boxes": [[1, 1, 2, 2]]}"#,
            .unprocessableContent, "invalid_prompt"
          ),
          ("empty boxes", #"{"boxes": []}"#, .unprocessableContent, "invalid_prompt"),
          (
            "too many points",
            #"{"points": [[1,1],[2,2],[3,3],[4,4],[5,5],[6,6]], "labels": [1,1,1,1,1,1]}"#,
            .unprocessableContent, "invalid_prompt"
          ),
          (
            "point left of the image", #"{"points": [[-1, 2]], "labels": [1]}"#,
            .unprocessableContent, "prompt_out_of_bounds"
          ),
          (
            "point below the image", #"{"points": [[10, 400.5]], "labels": [1]}"#,
            .unprocessableContent, "prompt_out_of_bounds"
          ),
          (
            "box past the right edge", #"{"box": [10, 10, 601, 50]}"#, .unprocessableContent,
            "prompt_out_of_bounds"
          ),
          (
            "unknown mask handle", #"{"points": [[1, 2]], "labels": [1], "mask_input": "m999"}"#,
            .notFound, "mask_not_found"
          ),
        ]
        for (name, body, status, code) in cases {
          let response = try await client.postJSON(segment, body)
          #expect(response.status == status, "\(name)")
          #expect(response.apiError?.code == code, "\(name): \(String(buffer: response.body))")
          #expect(response.apiError?.status == Int(status.code), "\(name)")
          #expect(response.headers[.contentType] == "application/json", "\(name)")
        }

        let unknownImage = try await client.postJSON(
          "/v1/images/0123456789abcdef/segment", #"{"points": [[1, 2]], "labels": [1]}"#)
        #expect(
          unknownImage.status == .notFound && unknownImage.apiError?.code == "image_not_found")
        let unknownEverything = try await client.postJSON("/v1/images/nope/everything", "{}")
        #expect(
          unknownEverything.status == .notFound
            && unknownEverything.apiError?.code == "image_not_found")
        let unknownDelete = try await client.execute(uri: "/v1/images/nope", method: .delete)
        #expect(
          unknownDelete.status == .notFound && unknownDelete.apiError?.code == "image_not_found")
        let wrongMethod = try await client.execute(uri: segment, method: .get)
        #expect(wrongMethod.status == .methodNotAllowed)
        #expect(wrongMethod.apiError?.code == "method_not_allowed")
        #expect(wrongMethod.headers[.allow] == "POST")
        let put = try await client.execute(uri: "/v1/health", method: .put)
        #expect(put.status == .methodNotAllowed && put.headers[.allow] == "GET, HEAD")
        let head = try await client.execute(uri: "/v1/health", method: .head)
        #expect(head.status == .ok)
        let noRoute = try await client.execute(uri: "/v2/anything", method: .get)
        #expect(noRoute.status == .notFound && noRoute.apiError?.code == "not_found")
        let badFormat = try await client.postJSON(
          segment + "?format=gif", #"{"points": [[1, 2]], "labels": [1]}"#)
        #expect(badFormat.status == .badRequest && badFormat.apiError?.code == "invalid_request")
        // Two boxes with three candidates each would be six full-size masks.
        let manyMasks = try await client.postJSON(
          segment, #"{"boxes": [[1, 1, 50, 50], [60, 60, 90, 90]]}"#)
        #expect(
          manyMasks.status == .unprocessableContent && manyMasks.apiError?.code == "invalid_prompt")
        let fewerMasks = try await client.postJSON(
          segment, #"{"boxes": [[1, 1, 50, 50], [60, 60, 90, 90]], "multimask": false}"#)
        #expect(fewerMasks.status == .ok)
        let huge = try await client.postJSON(
          segment,
          #"{"points": [[1, 2]], "labels": [1], "x": ""#
            + String(repeating: "x", count: 1_100_000) + #""}"#)
        #expect(huge.status == .contentTooLarge && huge.apiError?.code == "payload_too_large")
        let badCandidate = try await client.postJSON(
          segment + "?format=png&candidate=7", #"{"points": [[1, 2]], "labels": [1]}"#)
        #expect(
          badCandidate.status == .badRequest && badCandidate.apiError?.code == "invalid_request")

        // Edges are inside: a click on the last column and a box over the whole image work.
        let edge = try await client.postJSON(
          segment, #"{"points": [[600, 400]], "labels": [1], "box": [0, 0, 600, 400]}"#)
        #expect(edge.status == .ok)
      }
    }

    @Test func badUploadsAreRefused() async throws {
      try await TestServer.withClient(
        .router,
        TestServer.configuration {
          $0.maxUploadBytes = 200_000
          $0.maxImageSide = 500
        }
      ) { client, service in
        func post(_ bytes: [UInt8], type: String = "application/octet-stream") async throws
          -> TestResponse
        {
          try await client.execute(
            uri: "/v1/images", method: .post, headers: [.contentType: type],
            body: ByteBuffer(bytes: bytes))
        }
        let png = try TestServer.coffeePNG()
        #expect(png.count > 200_000)
        let big = try await post(png)
        #expect(big.status == .contentTooLarge && big.apiError?.code == "payload_too_large")

        // A 600×400 image is small in bytes as a JPEG but wider than 500 pixels.
        let jpeg = try RGBImage(data: Data(png)).jpegData(quality: 50)
        #expect(jpeg.count < 200_000)
        let wide = try await post([UInt8](jpeg))
        #expect(wide.status == .contentTooLarge && wide.apiError?.code == "image_too_large")

        // A PNG header claiming 100000×100000 pixels is refused before any decoding.
        var bomb: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]
        bomb +=
          Array("IHDR".utf8) + [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0, 0, 0, 0, 0]
        let claimed = try await post(bomb)
        #expect(claimed.status == .contentTooLarge && claimed.apiError?.code == "image_too_large")

        let text = try await post(Array("hello, this is not an image".utf8))
        #expect(
          text.status == .unsupportedMediaType && text.apiError?.code == "unsupported_media_type")
        let json = try await post(Array(#"{"image": "coffee.jpg"}"#.utf8), type: "application/json")
        #expect(
          json.status == .unsupportedMediaType && json.apiError?.code == "unsupported_media_type")
        let empty = try await post([])
        #expect(empty.status == .badRequest && empty.apiError?.code == "invalid_image")
        let small = try RGBImage(width: 40, height: 30, color: RGBColor(10, 200, 30)).pngData()
        let truncated = try await post(Array([UInt8](small).prefix(60)))
        #expect(truncated.status == .badRequest && truncated.apiError?.code == "invalid_image")

        // After all that, a good upload still works.
        let fine = try await post([UInt8](small), type: "image/png")
        #expect(fine.status == .created)
        // The format comes from the bytes: curl --data-binary's default type does not matter.
        let form = try await post([UInt8](small), type: "application/x-www-form-urlencoded")
        #expect(form.status == .created)
        #expect(service.cache.stats.images == 2)
      }
    }

    @Test func everythingValidatesItsSettings() async throws {
      try await TestServer.withClient { client, _ in
        let image = try await client.upload(try TestServer.coffeePNG())
        let uri = "/v1/images/\(image.id)/everything"
        let cases: [(String, HTTPResponse.Status, String)] = [
          (#"{"points_per_side": 0}"#, .unprocessableContent, "invalid_settings"),
          (#"{"points_per_side": 1000}"#, .unprocessableContent, "invalid_settings"),
          (#"{"crop_n_layers": 9}"#, .unprocessableContent, "invalid_settings"),
          (#"{"output_mode": "binary_mask"}"#, .unprocessableContent, "invalid_settings"),
          // Thresholds that keep every mask or none.
          (#"{"box_nms_thresh": 2}"#, .unprocessableContent, "invalid_settings"),
          (#"{"pred_iou_thresh": 5}"#, .unprocessableContent, "invalid_settings"),
          (#"{"crop_overlap_ratio": 1}"#, .unprocessableContent, "invalid_settings"),
          (
            #"{"point_grids": [[[0.5, 1.5]]]}"#, .unprocessableContent, "invalid_settings"
          ),
          (
            #"{"points_per_side": 4, "point_grids": [[[0.5, 0.5]]]}"#, .unprocessableContent,
            "invalid_settings"
          ),
          (
            #"{"crop_n_points_downscale_factor": 0, "crop_n_layers": 1}"#, .unprocessableContent,
            "invalid_settings"
          ),
          (#"{"points_per_sid": 4}"#, .badRequest, "invalid_json"),
          (#"{"points_per_side": "four"}"#, .badRequest, "invalid_json"),
        ]
        for (body, status, code) in cases {
          let response = try await client.postJSON(uri, body)
          #expect(response.status == status, "\(body)")
          #expect(response.apiError?.code == code, "\(body): \(String(buffer: response.body))")
        }
      }
    }
  }
}
