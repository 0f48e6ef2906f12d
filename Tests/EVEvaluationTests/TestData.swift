import EVEvaluation
import EVImage
import EVMask
import Foundation
import TestSupport

/// A small COCO-format dataset on the shipped images, written to a fresh folder.
struct SmallDataset {
  let folder: URL
  let annotationsURL: URL
  let dataset: COCODataset
  var imagesURL: URL { get throws { try Fixtures.url("images") } }

  private struct File: Encodable {
    let images: [COCOImage]
    let annotations: [COCOAnnotation]
    let categories: [COCOCategory]
  }

  /// Images 2 (coffee) and 3 (chelsea) of `coco/gt.json` with eight objects covering crowds
  /// (uncompressed RLE), compressed RLE and polygons, small to large.
  static let objectIDs = [12, 13, 18, 19, 21, 22, 24, 25]

  static func make(
    objectIDs: [Int] = objectIDs, editing edit: (inout COCODataset) -> Void = { _ in }
  ) throws -> SmallDataset {
    let full = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    let keep = Set(objectIDs)
    var dataset = full
    dataset.annotations = full.annotations.filter { keep.contains($0.id) }
    let imageIDs = Set(dataset.annotations.map(\.imageID))
    dataset.images = full.images.filter { imageIDs.contains($0.id) }
    edit(&dataset)
    return try write(dataset)
  }

  static func write(_ dataset: COCODataset) throws -> SmallDataset {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-eval-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let url = folder.appendingPathComponent("annotations.json")
    try JSONEncoder().encode(
      File(images: dataset.images, annotations: dataset.annotations, categories: dataset.categories)
    )
    .write(to: url)
    return SmallDataset(
      folder: folder, annotationsURL: url, dataset: try COCODataset.load(contentsOf: url))
  }

  func configuration(
    _ prompt: PromptKind, clicks: [Int] = [1], detections: String? = nil, shard: Shard = .whole,
    limit: Int? = nil, skipMissing: Bool = false, dataset kind: DatasetKind = .coco
  ) throws -> ZeroShotConfiguration {
    ZeroShotConfiguration(
      model: "test", checkpoint: nil, annotations: annotationsURL.path, images: try imagesURL.path,
      prompt: prompt, clicks: clicks, detections: detections, dataset: kind, limit: limit,
      shard: shard,
      skipMissingImages: skipMissing)
  }

  /// The ground-truth mask of an annotation, row-major.
  func groundTruth(_ annotation: COCOAnnotation) throws -> RLE {
    let image = dataset.images.first { $0.id == annotation.imageID }!
    return try annotation.segmentation!.rle(height: image.height, width: image.width)
  }
}

/// IoU × 100 the official way, computed from run lengths (independently of `maskIoU`).
func officialIoU(_ a: RLE, _ b: RLE) throws -> Double {
  let intersection = try RLE.merge([a, b], intersect: true).area
  let union = try RLE.merge([a, b]).area
  return Double(intersection) / (Double(union) + 1e-7) * 100
}

struct Interrupted: Error {}

/// A stand-in model: a box prompt yields the box itself, a point prompt the 21×21 square around
/// the first click. Counts encodes and can fail on the n-th image to simulate an interruption.
final class BoxSegmenter: PromptSegmenter {
  var height = 0
  var width = 0
  var encodes = 0
  var failOnEncode: Int?

  func setImage(_ image: RGBImage) throws {
    encodes += 1
    if let failOnEncode, encodes == failOnEncode { throw Interrupted() }
    height = image.height
    width = image.width
  }

  func bestMasks(boxes: [Box]) throws -> [[Bool]] {
    boxes.map { b in
      RLE(
        box: BoxXYWH(x: b.x0, y: b.y0, width: b.x1 - b.x0, height: b.y1 - b.y0), height: height,
        width: width
      )
      .decodeRowMajorBool()
    }
  }

  func bestMasks(pointSets: [[Point]], labels: [[Int]]) throws -> [[Bool]] {
    pointSets.map { points in
      let p = points[0]
      return RLE(
        box: BoxXYWH(x: p.x - 10, y: p.y - 10, width: 21, height: 21), height: height, width: width
      )
      .decodeRowMajorBool()
    }
  }
}
