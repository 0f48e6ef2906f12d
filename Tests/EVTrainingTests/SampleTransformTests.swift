import EVCheckpoint
import EVEvaluation
import EVImage
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The official training transforms (`train/data.*`): flip, antialiased resize of the long
/// side (masks kept soft) and normalise-and-pad, on SA-1B-style samples from `coco/gt.json`,
/// upsampling (chelsea) and downsampling (coffee to 512) alike.
@Suite struct SampleTransformTests {
  struct Case: Decodable {
    let key: String
    let image: String
    let target: Int
    let flip: Bool
    let annotation_ids: [Int]
    let points_in: [[Double]]
    let bboxs_in: [[Double]]
    let every: Int
  }

  struct File: Decodable { let cases: [Case] }

  @Test func reproducesTheOfficialTransforms() throws {
    let file = try JSONDecoder().decode(
      File.self, from: Data(contentsOf: Fixtures.url("train/data.json")))
    let golden = try SafeTensors.read(contentsOf: Fixtures.url("train/data.safetensors"))
    let coco = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    #expect(file.cases.count == 3)
    for c in file.cases {
      let picture = try RGBImage(
        contentsOf: Fixtures.url("images/\(c.image)"), applyEXIFOrientation: false)
      let (h, w) = (picture.height, picture.width)
      var image = [Float](repeating: 0, count: 3 * h * w)
      for p in 0..<(h * w) {
        for ch in 0..<3 { image[ch * h * w + p] = Float(picture.pixels[p * 3 + ch]) }
      }
      var masks: [Float] = []
      for id in c.annotation_ids {
        let annotation = try #require(coco.annotations.first { $0.id == id })
        let rle = try #require(annotation.segmentation).rle(height: h, width: w)
        masks += rle.decodeRowMajor().map { Float($0) }
      }
      var sample = TrainingSample(
        image: image, masks: masks, points: c.points_in.map { $0.map { Float($0) } },
        boxes: c.bboxs_in.map { $0.map { Float($0) } }, height: h, width: w)
      if c.flip { sample = SampleTransforms.flipHorizontally(sample) }
      sample = SampleTransforms.resizeLongestSide(sample, target: c.target)
      sample = SampleTransforms.normalizeAndPad(sample, target: c.target)

      let expectedImage = try #require(golden["\(c.key).image"])
      let expectedMasks = try #require(golden["\(c.key).masks"])
      let side = c.target / c.every
      func subsampled(_ planes: [Float], _ count: Int) -> Tensor {
        var out = [Float]()
        for k in 0..<count {
          for y in stride(from: 0, to: c.target, by: c.every) {
            for x in stride(from: 0, to: c.target, by: c.every) {
              out.append(planes[(k * c.target + y) * c.target + x])
            }
          }
        }
        return Tensor(shape: [count, side, side], storage: out)
      }
      let ourImage = subsampled(sample.image, 3)
      let ourMasks = subsampled(sample.masks, c.annotation_ids.count)
      #expect(maxAbsDifference(ourImage, expectedImage) <= 1e-3, "\(c.key) image")
      #expect(maxAbsDifference(ourMasks, expectedMasks) <= 1e-4, "\(c.key) masks")
      // Soft masks: the resize leaves values strictly between 0 and 1 on the edges.
      #expect(ourMasks.storage.contains { $0 > 0.01 && $0 < 0.99 }, "\(c.key) masks are soft")
      let points = try #require(golden["\(c.key).points"])
      let boxes = try #require(golden["\(c.key).bboxs_xywh"])
      #expect(
        maxAbsDifference(Tensor(shape: points.shape, storage: sample.points.flatMap { $0 }), points)
          <= 1e-4)
      #expect(
        maxAbsDifference(Tensor(shape: boxes.shape, storage: sample.boxes.flatMap { $0 }), boxes)
          <= 1e-4)
    }
  }
}
