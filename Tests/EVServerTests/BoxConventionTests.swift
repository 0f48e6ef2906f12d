import EVMask
import EVServer
import Foundation
import HummingbirdTesting
import Testing

extension ServerTests {
  /// One box convention per output format: `/segment` answers COCO boxes (width = x1 + 1 − x0,
  /// pycocotools' `toBbox`), `/everything` SAM's records (width = x1 − x0), and the same mask
  /// through both routes has boxes exactly one pixel apart in width and height.
  @Suite struct BoxConventionTests {
    struct Annotation: Decodable {
      var segmentation: RLE
      var area: Int
      var bbox: [Double]
      var pointCoords: [[Double]]

      enum CodingKeys: String, CodingKey {
        case segmentation, area, bbox
        case pointCoords = "point_coords"
      }
    }

    struct Document: Decodable {
      var annotations: [Annotation]
    }

    @Test func segmentIsCOCOAndEverythingIsSAM() async throws {
      try await TestServer.withClient { client, _ in
        let image = try await client.upload(try TestServer.coffeePNG())
        let run = try await client.postJSON(
          "/v1/images/\(image.id)/everything",
          #"{"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1}"#
        )
        #expect(run.status == .ok)
        let document = try JSONDecoder().decode(Document.self, from: Data(buffer: run.body))
        let found = document.annotations.filter { $0.area > 0 }
        #expect(!found.isEmpty)
        for a in found {
          let coco = a.segmentation.boundingBox.array
          #expect(a.bbox == [coco[0], coco[1], coco[2] - 1, coco[3] - 1], "\(a.bbox) vs \(coco)")
        }

        // The generator's masks come from single points on the whole image (no crops), so
        // /segment with the same point finds the same masks among its candidates.
        var matched = 0
        for a in found.prefix(8) {
          let point = try #require(a.pointCoords.first)
          let answer = try await client.segment(
            image.id, SegmentRequest(points: [point], labels: [1], multimask: true))
          for mask in answer.prompts[0].masks {
            #expect(mask.bbox == mask.segmentation.boundingBox.array)
            if mask.segmentation == a.segmentation {
              matched += 1
              #expect(mask.bbox == [a.bbox[0], a.bbox[1], a.bbox[2] + 1, a.bbox[3] + 1])
            }
          }
        }
        #expect(matched > 0, "no everything mask was found again through /segment")
      }
    }

    /// The OpenAPI document states each route's convention.
    @Test func theDocumentStatesTheConventions() async throws {
      try await TestServer.withClient { client, _ in
        let response = try await client.execute(uri: "/openapi.json", method: .get)
        let text = String(buffer: response.body)
        #expect(text.contains("width = x1 + 1 − x0"))
        #expect(text.contains("w = x1 − x0"))
      }
    }
  }
}
