import EVCheckpoint
import EVImage
import EVMask
import EVMaskGenerator
import EVModel
import EVPredictor
import EVTensor
import Foundation
import TestSupport
import Testing

/// An `amg/<name>.json` fixture: the official generator's settings and records.
struct AMGFixture {
  let name: String
  let json: JSONValue
  let settings: MaskGeneratorSettings
  let annotations: [JSONValue]
  let image: String

  init(_ name: String) throws {
    self.name = name
    json = try JSONValue.load("amg/\(name).json")
    annotations = try json["annotations"].require(\.array, "annotations")
    image = try json["image"].require(\.string, "image")
    let s = try json["settings"].require(\.object, "settings")
    var settings = MaskGeneratorSettings()
    // Keys the fixture leaves out keep SAM's defaults.
    if let v = s["points_per_side"]?.int { settings.pointsPerSide = v }
    if let v = s["points_per_batch"]?.int { settings.pointsPerBatch = v }
    if let v = s["pred_iou_thresh"]?.double { settings.predIoUThresh = v }
    if let v = s["stability_score_thresh"]?.double { settings.stabilityScoreThresh = v }
    if let v = s["box_nms_thresh"]?.double { settings.boxNMSThresh = v }
    if let v = s["crop_n_layers"]?.int { settings.cropNLayers = v }
    if let v = s["crop_nms_thresh"]?.double { settings.cropNMSThresh = v }
    if let v = s["crop_n_points_downscale_factor"]?.int { settings.cropNPointsDownscaleFactor = v }
    if let v = s["min_mask_region_area"]?.int { settings.minMaskRegionArea = v }
    let known: Set<String> = [
      "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
      "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_n_points_downscale_factor",
      "min_mask_region_area", "output_mode",
    ]
    let unknown = Set(s.keys).subtracting(known)
    #expect(unknown.isEmpty, "\(name): settings this test does not apply: \(unknown)")
    #expect(s["output_mode"]?.string == "coco_rle")
    settings.outputMode = .cocoRLE
    self.settings = settings
  }

  /// The model the fixture was made with, `weights_transform` applied after loading.
  func model() throws -> EfficientViTSAM {
    let modelName = name.hasPrefix("tiny-xl") ? "tiny-xl" : "tiny-l"
    let config = try ModelConfig.load(json: Fixtures.url("models/\(modelName).json"))
    var tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/\(modelName).pt"))
    if let transform = json["weights_transform"] {
      #expect(transform.keys == ["multiply"], "\(name): unknown weights_transform")
      let multiply = try transform["multiply"].require(\.object, "multiply")
      #expect(!multiply.keys.isEmpty)
      for key in multiply.keys {
        let factor = try multiply[key].require(\.double, key)
        // `param.mul_(factor)` on a float32 tensor: float32 products.
        let t = try #require(tensors[key], "\(name): no parameter \(key)")
        tensors[key] = Tensor(shape: t.shape, storage: t.storage.map { $0 * Float(factor) })
      }
    }
    let reader = WeightReader(tensors, origin: modelName)
    let model = EfficientViTSAM(config: config, reader: reader)
    try reader.finish()
    return model
  }

  func loadImage() throws -> RGBImage {
    try RGBImage(contentsOf: Fixtures.url("images/\(image)"))
  }
}

/// Compares our records with the official ones.
///
/// Exact: the number of masks, `point_coords` (float64 grid arithmetic) and `crop_box` of
/// every mask, and the order (except between masks whose predicted IoUs are within the
/// tolerance, where float noise may swap them). Within tolerance, because our float32 decoder
/// sums in another order than PyTorch (relative error ~1e-6 on logits): `predicted_iou`
/// |Δ| ≤ 1e-4, `stability_score` |Δ| ≤ 1e-3, and each segmentation differing from the
/// official one in at most 0.1 % of its area (a pixel whose logit sits at the threshold can
/// flip), with bbox sides within 1 px; at least 75 % of the segmentations are byte-identical
/// to pycocotools' RLE strings. With `min_mask_region_area`, one flipped pixel can also decide
/// whether a region of about that area is a hole or island to remove, so a mask may instead
/// differ by at most that area (then its bbox may move), for at most 2 % of the masks.
func compare(
  _ ours: [GeneratedMask], golden: [JSONValue], fixture: String, minRegionArea: Int = 0
) throws {
  try #require(
    ours.count == golden.count, "\(fixture): \(ours.count) masks, official \(golden.count)")
  let goldenIoU = try golden.map { try $0["predicted_iou"].require(\.double, "predicted_iou") }
  var used = Set<Int>()
  var identical = 0
  var regionFlips = 0
  for (i, g) in golden.enumerated() {
    let point = try #require(g["point_coords"]?.array?.first?.doubles, "point_coords")
    let crop = g["crop_box"]?.ints
    let iou = goldenIoU[i]
    let stability = try g["stability_score"].require(\.double, "stability_score")
    let segmentation = try g["segmentation"].require(\.object, "segmentation")
    let size = try segmentation["size"].require(\.ints, "size")
    let counts = try segmentation["counts"].require(\.string, "counts")
    let goldenRLE = try RLE(compressed: counts, height: size[0], width: size[1])

    let candidates = ours.indices.filter { j in
      !used.contains(j) && ours[j].pointCoords == Point(x: point[0], y: point[1])
        && (crop == nil || ours[j].cropBox.xywh == crop!)
        && abs(Double(ours[j].predictedIoU) - iou) <= 1e-4
    }
    let best = candidates.max { a, b in
      RLE.pairIoU(ours[a].segmentation.cocoRLE, goldenRLE)
        < RLE.pairIoU(ours[b].segmentation.cocoRLE, goldenRLE)
    }
    let j = try #require(
      best, "\(fixture): official mask \(i) (point \(point), IoU \(iou)) has no counterpart")
    used.insert(j)
    if j != i {
      #expect(abs(goldenIoU[j] - iou) <= 1e-4, "\(fixture): mask \(i) comes at position \(j)")
    }
    let m = ours[j]
    let rle = m.segmentation.cocoRLE
    if rle.compressedCounts == counts && [rle.height, rle.width] == size { identical += 1 }
    let area = try g["area"].require(\.int, "area")
    #expect(m.area == rle.area)
    let common = try RLE.merge([rle, goldenRLE], intersect: true).area
    let differing = m.area + area - 2 * common
    let pixelTolerance = max(1, area / 1000)
    let bbox = try g["bbox"].require(\.doubles, "bbox")
    if differing <= pixelTolerance {
      for k in 0..<4 {
        #expect(
          abs(Double(m.bbox[k]) - bbox[k]) <= 1, "\(fixture): mask \(i) bbox \(m.bbox) vs \(bbox)")
      }
    } else {
      regionFlips += 1
      #expect(
        differing <= minRegionArea + pixelTolerance,
        "\(fixture): mask \(i) differs in \(differing) of \(area) pixels")
    }
    #expect(abs(Double(m.stabilityScore) - stability) <= 1e-3, "\(fixture): mask \(i) stability")
  }
  #expect(
    golden.count - identical <= max(1, golden.count / 4),
    "\(fixture): only \(identical) of \(golden.count) segmentations are byte-identical")
  #expect(
    regionFlips <= (minRegionArea > 0 ? max(1, golden.count / 50) : 0),
    "\(fixture): \(regionFlips) masks differ by a whole region")
}

@Suite struct GeneratorGoldenTests {
  @Test(arguments: [
    "tiny-l__coffee", "tiny-l__astronaut", "tiny-l__chelsea",
    "tiny-xl__coffee", "tiny-xl__astronaut", "tiny-xl__chelsea",
  ])
  func randomWeightModelsMatchTheOfficialGenerator(_ name: String) throws {
    let fixture = try AMGFixture(name)
    let generator = try AutomaticMaskGenerator(
      model: try fixture.model(), settings: fixture.settings)
    let result = try generator.generate(try fixture.loadImage())
    // Random weights: every mask covers most of the image, so NMS leaves one; the candidates
    // before it are all 8×8 prompts × 3 masks.
    #expect(result.candidates == 8 * 8 * 3)
    try compare(result.masks, golden: fixture.annotations, fixture: name)
  }

  @Test(arguments: ["sharp__tiny-l__coffee__grid8", "sharp__tiny-l__coffee__crops_minarea"])
  func decisiveMasksMatchTheOfficialGenerator(_ name: String) throws {
    let fixture = try AMGFixture(name)
    #expect(fixture.annotations.count > 100, "the sharp fixtures keep many masks")
    let generator = try AutomaticMaskGenerator(
      model: try fixture.model(), settings: fixture.settings)
    var reports: [GenerationProgress] = []
    let result = try generator.generate(try fixture.loadImage()) { reports.append($0) }
    try compare(
      result.masks, golden: fixture.annotations, fixture: name,
      minRegionArea: fixture.settings.minMaskRegionArea)
    #expect(reports.count == reports.last?.batches)
    #expect(reports.last?.crops == (fixture.settings.cropNLayers == 0 ? 1 : 5))
    #expect(result.timing.total > .zero && result.timing.decoder > .zero)
  }

  /// Batching, and decoding a batch's prompts on several cores, change nothing.
  @Test func batchingDoesNotChangeTheResult() throws {
    let fixture = try AMGFixture("sharp__tiny-l__coffee__grid8")
    let model = try fixture.model()
    let image = try fixture.loadImage()
    let reference = try AutomaticMaskGenerator(model: model, settings: fixture.settings)
    reference.parallelPrompts = false
    let expected = try reference.generate(image).masks
    var settings = fixture.settings
    settings.pointsPerBatch = 7
    let batched = try AutomaticMaskGenerator(model: model, settings: settings)
    #expect(!batched.parallelPrompts, "off by default: it takes every core for each batch")
    batched.parallelPrompts = true
    let masks = try batched.generate(image).masks
    #expect(masks == expected)
    #expect(ComputeThreads.count == ProcessInfo.processInfo.activeProcessorCount)
  }

  /// With a predicted-IoU threshold the decoder skips the upscaling of prompts none of whose
  /// masks pass it. The result must be the official one filtered by that threshold (NMS at 1.0
  /// suppresses nothing in this fixture, so filtering commutes with it).
  @Test func iouFilterSkipsWorkWithoutChangingTheResult() throws {
    let fixture = try AMGFixture("sharp__tiny-l__coffee__grid8")
    #expect(fixture.settings.boxNMSThresh == 1.0 && fixture.settings.predIoUThresh == 0)
    let unsortedIoUs: [Double] = try fixture.annotations.map {
      try $0["predicted_iou"].require(\.double, "iou")
    }
    // Thresholds well away from every official IoU: for the generator, the gap nearest the
    // middle among valid settings (in [0, 1]; this random-weight model also predicts IoUs
    // outside that range); for the decoder's skip below, which is no user setting, the gap
    // nearest the middle of all, so that some prompts are skipped and some are not.
    let ious: [Double] = unsortedIoUs.sorted()
    let valid: ClosedRange<Double> = 0...1
    var gaps: [Int] = []
    var validGaps: [Int] = []
    for i in 1..<ious.count where ious[i] - ious[i - 1] > 2e-3 {
      gaps.append(i)
      if valid.contains((ious[i] + ious[i - 1]) / 2) { validGaps.append(i) }
    }
    let half = ious.count / 2
    let cut = try #require(validGaps.min { abs($0 - half) < abs($1 - half) })
    let threshold = (ious[cut] + ious[cut - 1]) / 2
    let skipCut = try #require(gaps.min { abs($0 - half) < abs($1 - half) })
    let skipThreshold = (ious[skipCut] + ious[skipCut - 1]) / 2
    var settings = fixture.settings
    settings.predIoUThresh = threshold
    let model = try fixture.model()
    let image = try fixture.loadImage()
    let result = try AutomaticMaskGenerator(model: model, settings: settings).generate(image)
    let expected = try fixture.annotations.filter {
      try $0["predicted_iou"].require(\.double, "iou") > threshold
    }
    #expect(expected.count > 10 && expected.count < fixture.annotations.count - 10)
    try compare(result.masks, golden: expected, fixture: "IoU > \(threshold)")

    // The decoder: skipped prompts get -∞ logits, the others exactly the unskipped logits.
    let predictor = SamPredictor(model: model)
    try predictor.setImage(image)
    let points = AMG.buildPointGrid(8).map { [Point(x: $0.x * 600, y: $0.y * 400)] }
    let labels = [[Int]](repeating: [1], count: points.count)
    let full = try predictor.predictBatch(pointSets: points, labelSets: labels, upscale: false)
    let skipping = try predictor.predictBatch(
      pointSets: points, labelSets: labels, upscale: false,
      skipMasksAtOrBelowIoU: Float(skipThreshold))
    #expect(skipping.iouPredictions.storage == full.iouPredictions.storage)
    let plane = 3 * 256 * 256
    var skipped = 0
    for b in 0..<points.count {
      let slice = (b * plane)..<((b + 1) * plane)
      if full.iouPredictions.storage[(3 * b)..<(3 * b + 3)].allSatisfy({
        !($0 > Float(skipThreshold))
      }) {
        skipped += 1
        #expect(skipping.lowResLogits.storage[slice].allSatisfy { $0 == -.infinity })
      } else {
        #expect(skipping.lowResLogits.storage[slice] == full.lowResLogits.storage[slice])
      }
    }
    #expect(skipped > 0 && skipped < points.count)
  }

  @Test func userPointGridsAndOutputRecords() throws {
    let fixture = try AMGFixture("sharp__tiny-l__coffee__grid8")
    let model = try fixture.model()
    let image = try fixture.loadImage()
    var settings = fixture.settings
    // The 8×8 grid given explicitly gives the same masks as points_per_side 8.
    settings.pointsPerSide = nil
    settings.pointGrids = [AMG.buildPointGrid(8)]
    let explicit = try AutomaticMaskGenerator(model: model, settings: settings).generate(image)
    try compare(explicit.masks, golden: fixture.annotations, fixture: "explicit grid")

    let first = try #require(explicit.masks.first)
    let record = first.jsonRecord(outputMode: .cocoRLE)
    let segmentation = try #require(record["segmentation"] as? [String: Any])
    #expect(segmentation["size"] as? [Int] == [image.height, image.width])
    #expect(segmentation["counts"] as? String == first.segmentation.cocoRLE.compressedCounts)
    #expect(record["area"] as? Int == first.area)
    #expect(record["bbox"] as? [Int] == first.bbox)
    #expect(record["crop_box"] as? [Int] == [0, 0, image.width, image.height])
    #expect(
      (record["point_coords"] as? [[Double]])?.first == [first.pointCoords.x, first.pointCoords.y])
    let uncompressed = first.jsonRecord(outputMode: .uncompressedRLE)
    let runs = try #require(uncompressed["segmentation"] as? [String: Any])
    #expect(runs["counts"] as? [Int] == first.segmentation.counts)
    #expect(try JSONSerialization.data(withJSONObject: [record, uncompressed]).count > 0)
  }

  @Test func invalidSettingsAreRefused() throws {
    var s = MaskGeneratorSettings()
    s.pointGrids = [AMG.buildPointGrid(4)]
    #expect(throws: MaskGeneratorError.self) { try s.layerPointGrids() }
    s = MaskGeneratorSettings()
    s.pointsPerBatch = 0
    #expect(throws: MaskGeneratorError.self) { try s.layerPointGrids() }
    s = MaskGeneratorSettings()
    s.pointsPerSide = 2
    s.cropNLayers = 2
    s.cropNPointsDownscaleFactor = 2
    #expect(throws: MaskGeneratorError.self) { try s.layerPointGrids() }
    s.cropNPointsDownscaleFactor = 1
    #expect(try s.layerPointGrids().map(\.count) == [4, 4, 4])
    s = MaskGeneratorSettings()
    s.pointsPerSide = nil
    s.pointGrids = [AMG.buildPointGrid(2)]
    s.cropNLayers = 1
    #expect(throws: MaskGeneratorError.self) { try s.layerPointGrids() }
    #expect(MaskGeneratorSettings().pointsPerSide == 32)
    #expect(MaskGeneratorSettings().pointsPerBatch == 64)
    #expect(MaskGeneratorSettings().predIoUThresh == 0.88)
    #expect(MaskGeneratorSettings().stabilityScoreThresh == 0.95)
    #expect(MaskGeneratorSettings().cropOverlapRatio == 512.0 / 1500.0)
  }
}
