import EVImage
import EVMask
import EVMaskGenerator
import EVServer
import EVTensor
import Foundation
import HummingbirdTesting
import NIOCore
import TestSupport
import Testing

extension ServerTests {
  /// `segment` answers checked against the official model's outputs for the fixture model
  /// (../shared/fixtures/golden/tiny-l__coffee.*), through the whole HTTP path.
  @Suite struct GoldenTests {
    struct Case: Decodable {
      var name: String
      var points: [[Double]]?
      var labels: [Int]?
      var box: [Double]?
      var boxes: [[Double]]?
      var multimask: Bool?
    }

    struct Cases: Decodable {
      var cases: [Case]
    }

    static func cases() throws -> [String: Case] {
      let data = try Data(contentsOf: Fixtures.url("golden/tiny-l__coffee.json"))
      return Dictionary(
        uniqueKeysWithValues: try JSONDecoder().decode(Cases.self, from: data).cases.map {
          ($0.name, $0)
        })
    }

    static func request(_ c: Case, maskInput: String? = nil) -> SegmentRequest {
      SegmentRequest(
        points: c.points, labels: c.labels, box: c.box, boxes: c.boxes, maskInput: maskInput,
        multimask: c.multimask ?? false)
    }

    /// Share of pixels where the RLE mask and `logits > 0` agree.
    static func agreement(_ mask: RLE, _ logits: ArraySlice<Float>) -> Double {
      let decoded = mask.decodeRowMajor()
      var same = 0
      for (i, v) in zip(decoded.indices, logits) where (decoded[i] == 1) == (v > 0) { same += 1 }
      return Double(same) / Double(decoded.count)
    }

    @Test func segmentMatchesGoldenLogits() async throws {
      let golden = try Fixtures.golden("tiny-l__coffee")
      let cases = try Self.cases()
      try await TestServer.withClient { client, _ in
        let image = try await client.upload(try TestServer.coffeePNG(), type: "image/png")
        #expect(image.width == 600 && image.height == 400)

        // Full-size masks exist for these two cases (one mask each).
        for name in ["points_fg_bg", "box"] {
          let c = try #require(cases[name])
          let answer = try await client.segment(image.id, Self.request(c))
          let mask = try #require(answer.prompts.first?.masks.first)
          let logits = try #require(golden["\(name).mask_logits"])
          #expect(logits.shape == [1, 400, 600])
          let agree = Self.agreement(mask.segmentation, logits.storage[...])
          #expect(agree >= 0.999, "\(name): masks agree on \(agree * 100)% of pixels")
          let iou = try #require(golden["\(name).iou_predictions"])
          #expect(abs(mask.score - Double(iou.storage[0])) <= 1e-3, "\(name)")
          // The mask is not trivially empty or full, so the comparison means something.
          let goldenArea = logits.storage.filter { $0 > 0 }.count
          #expect(goldenArea > 0 && goldenArea < 400 * 600, "\(name): golden area \(goldenArea)")
        }

        // Three candidates, then refinement with the best one's handle, as the golden data
        // made `points_with_mask_input` from `point1_multi`.
        let first = try await client.segment(
          image.id, Self.request(try #require(cases["point1_multi"])))
        let multi = try #require(first.prompts.first)
        let multiIoU = try #require(golden["point1_multi.iou_predictions"]).storage
        #expect(multi.masks.count == 3)
        for (m, g) in zip(multi.masks, multiIoU) { #expect(abs(m.score - Double(g)) <= 1e-3) }
        let bestGolden = multiIoU.indices.max { multiIoU[$0] < multiIoU[$1] }!
        #expect(multi.best == bestGolden)

        let refined = try await client.segment(
          image.id,
          Self.request(
            try #require(cases["points_with_mask_input"]), maskInput: multi.masks[multi.best].handle
          ))
        let refinedIoU = try #require(golden["points_with_mask_input.iou_predictions"]).storage
        #expect(abs(refined.prompts[0].masks[0].score - Double(refinedIoU[0])) <= 1e-3)

        // A batch of four boxes, three candidates each.
        let batch = try await client.segment(
          image.id, Self.request(try #require(cases["batch_boxes"])))
        let batchIoU = try #require(golden["batch_boxes.iou_predictions"])
        #expect(batchIoU.shape == [4, 3])
        #expect(batch.prompts.count == 4)
        for (b, prompt) in batch.prompts.enumerated() {
          for (c, mask) in prompt.masks.enumerated() {
            #expect(
              abs(mask.score - Double(batchIoU.storage[b * 3 + c])) <= 1e-3, "box \(b) mask \(c)")
          }
        }
      }
    }

    /// `/everything` answers what the generator itself makes, in the form `evsam everything`
    /// writes.
    @Test func everythingMatchesTheGenerator() async throws {
      try await TestServer.withClient { client, _ in
        let png = try TestServer.coffeePNG()
        let image = try await client.upload(png)
        let response = try await client.postJSON(
          "/v1/images/\(image.id)/everything",
          #"{"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1.0}"#
        )
        #expect(response.status == .ok)
        let document = try #require(
          try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
        #expect(
          Set(document.keys) == ["image", "model", "size", "settings", "annotations", "timing_ms"])
        #expect(document["image"] as? String == image.id)
        #expect(document["size"] as? [Int] == [400, 600])
        let settings = try #require(document["settings"] as? [String: Any])
        #expect(
          settings["points_per_side"] as? Int == 4
            && settings["output_mode"] as? String == "coco_rle")
        let annotations = try #require(document["annotations"] as? [[String: Any]])

        var s = MaskGeneratorSettings()
        s.pointsPerSide = 4
        s.predIoUThresh = 0
        s.stabilityScoreThresh = 0
        s.boxNMSThresh = 1.0
        s.outputMode = .cocoRLE
        let expected = try AutomaticMaskGenerator(model: try TestServer.model.get(), settings: s)
          .generate(try RGBImage(data: Data(png)))
        #expect(!expected.masks.isEmpty)
        #expect(annotations.count == expected.masks.count)
        for (a, m) in zip(annotations, expected.masks) {
          let segmentation = try #require(a["segmentation"] as? [String: Any])
          #expect(segmentation["counts"] as? String == m.segmentation.cocoRLE.compressedCounts)
          #expect(a["area"] as? Int == m.area)
          #expect(a["bbox"] as? [Int] == m.bbox)
          #expect(
            Set(a.keys) == [
              "segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords",
              "crop_box",
            ])
        }
      }
    }
  }
}
