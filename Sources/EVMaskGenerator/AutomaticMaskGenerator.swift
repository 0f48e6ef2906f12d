import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation

/// One mask as SAM's generator writes its record.
public struct GeneratedMask: Sendable, Equatable {
  /// The mask over the whole image, as SAM's uncompressed RLE.
  public var segmentation: UncompressedRLE
  /// Set pixels (`area_from_rle`).
  public var area: Int
  /// XYXY with the last row/column inside the mask; `bbox` is its XYWH form.
  public var box: BoxXYXY
  public var predictedIoU: Float
  /// NaN when no pixel exceeds `-offset` (PyTorch's 0/0), possible only without the filter.
  public var stabilityScore: Float
  /// The point prompt that produced the mask, in image pixels.
  public var pointCoords: Point
  /// The crop the mask was found in (XYXY, exclusive ends).
  public var cropBox: BoxXYXY

  /// SAM's `bbox`: `[x, y, w, h]` with `w = x1 - x0`.
  public var bbox: [Int] { box.xywh }
}

/// Where time went in one `generate` call.
public struct GenerationTiming: Sendable, Equatable {
  /// Image encoder runs (one per crop), including preprocessing.
  public var encoder: Duration = .zero
  /// Prompt encoder and mask decoder over all point batches.
  public var decoder: Duration = .zero
  /// Upscaling, stability scores, thresholding, boxes, crop-edge filter and RLE encoding.
  public var postprocess: Duration = .zero
  /// NMS within and across crops and the small-region clean-up.
  public var filtering: Duration = .zero

  public var total: Duration { encoder + decoder + postprocess + filtering }
}

public struct MaskGeneration: Sendable {
  public var masks: [GeneratedMask]
  public var imageHeight: Int
  public var imageWidth: Int
  public var timing: GenerationTiming
  /// Masks produced by the decoder before any filter (prompts × 3).
  public var candidates: Int
}

/// Progress after each decoded batch.
public struct GenerationProgress: Sendable {
  public var crop: Int
  public var crops: Int
  /// Batches done over all crops, and how many there are in all.
  public var batchesDone: Int
  public var batches: Int
  /// Masks kept so far (before NMS).
  public var masksSoFar: Int
}

/// SAM's automatic mask generator ("segment everything") on top of `SamPredictor`, following
/// the official `EfficientViTSamAutomaticMaskGenerator` step for step: a point grid per crop,
/// prompts decoded in batches, predicted-IoU filter, stability filter, crop-edge filter, NMS
/// within each crop and across crops, then optional small-region clean-up with NMS again.
///
/// The arithmetic that decides which pixels and masks survive is the official one (see
/// `MaskUpscaler`); the speed comes from filtering on predicted IoU before upscaling (the
/// official code upscales first, but the filter does not depend on the masks) — prompts none of
/// whose masks can pass skip the decoder's own upscaling stage too — from streaming each mask's
/// upscaling instead of materialising 1024² images, and from spreading masks over the cores.
///
/// `generate` uses the predictor's image state: one call at a time per generator.
public final class AutomaticMaskGenerator {
  public let predictor: SamPredictor
  public let settings: MaskGeneratorSettings
  /// The normalised point grid of each crop layer.
  public let pointGrids: [[Point]]
  /// The official `mask_threshold`.
  public static let maskThreshold = 0.0
  /// Decode the prompts of a batch on all cores at once, one group per core with
  /// single-threaded kernels (see `decode`); off, each batch is one decoder call whose kernels
  /// are threaded. The results are the same either way. It takes every core for the batch, so
  /// it suits a command-line run better than a server decoding several requests side by side.
  public var parallelPrompts = false

  public init(predictor: SamPredictor, settings: MaskGeneratorSettings = .init())
    throws(MaskGeneratorError)
  {
    self.predictor = predictor
    self.settings = settings
    pointGrids = try settings.layerPointGrids()
  }

  public convenience init(model: SegmentAnythingModel, settings: MaskGeneratorSettings = .init())
    throws(MaskGeneratorError)
  {
    try self.init(predictor: SamPredictor(model: model), settings: settings)
  }

  public convenience init(model: EfficientViTSAM, settings: MaskGeneratorSettings = .init())
    throws(MaskGeneratorError)
  {
    try self.init(model: SegmentAnythingModel(model), settings: settings)
  }

  /// All masks of `image`, as SAM's `generate` returns them (same order).
  public func generate(
    _ image: RGBImage, progress: ((GenerationProgress) -> Void)? = nil
  ) throws -> MaskGeneration {
    guard image.width > 0, image.height > 0 else {
      throw MaskGeneratorError.emptyImage(height: image.height, width: image.width)
    }
    let clock = ContinuousClock()
    var timing = GenerationTiming()
    let (allCropBoxes, allLayers) = AMG.generateCropBoxes(
      imageHeight: image.height, imageWidth: image.width, nLayers: settings.cropNLayers,
      overlapRatio: settings.cropOverlapRatio)
    // On an image a pixel or two wide, SAM's crop arithmetic yields crops of zero width or
    // height (the official code then fails); they hold no pixels, so nothing is lost.
    let nonEmpty = allCropBoxes.indices.filter {
      allCropBoxes[$0].x1 > allCropBoxes[$0].x0 && allCropBoxes[$0].y1 > allCropBoxes[$0].y0
    }
    let cropBoxes = nonEmpty.map { allCropBoxes[$0] }
    let layers = nonEmpty.map { allLayers[$0] }
    let batchesPerCrop = layers.map {
      (pointGrids[$0].count + settings.pointsPerBatch - 1) / settings.pointsPerBatch
    }
    var tracker = ProgressTracker(
      crops: cropBoxes.count, batches: batchesPerCrop.reduce(0, +), report: progress)

    var masks: [GeneratedMask] = []
    var candidates = 0
    for (index, (cropBox, layer)) in zip(cropBoxes, layers).enumerated() {
      tracker.crop = index
      let crop = try processCrop(
        image, cropBox: cropBox, grid: pointGrids[layer], timing: &timing, tracker: &tracker,
        candidates: &candidates)
      masks += crop
    }

    let start = clock.now
    if cropBoxes.count > 1 {
      // Prefer masks from smaller crops.
      let keep = AMG.batchedNMS(
        boxes: masks.map(\.box.floats), scores: masks.map { 1 / Float($0.cropBox.area) },
        iouThreshold: settings.cropNMSThresh)
      masks = keep.map { masks[$0] }
    }
    if settings.minMaskRegionArea > 0 {
      masks = postprocessSmallRegions(
        masks, height: image.height, width: image.width, minArea: settings.minMaskRegionArea,
        nmsThreshold: max(settings.boxNMSThresh, settings.cropNMSThresh))
    }
    timing.filtering += clock.now - start
    return MaskGeneration(
      masks: masks, imageHeight: image.height, imageWidth: image.width, timing: timing,
      candidates: candidates)
  }

  /// `_process_crop`: encode the crop, decode its point grid in batches, NMS within the crop,
  /// then move boxes and points into the image frame.
  private func processCrop(
    _ image: RGBImage, cropBox: BoxXYXY, grid: [Point], timing: inout GenerationTiming,
    tracker: inout ProgressTracker, candidates: inout Int
  ) throws -> [GeneratedMask] {
    let clock = ContinuousClock()
    var start = clock.now
    let cropped = image.cropped(to: cropBox)
    try predictor.setImage(cropped)
    timing.encoder += clock.now - start
    guard let inputSize = predictor.inputSize else { throw PredictorError.noImageSet }
    defer { predictor.resetImage() }

    let cropSize = (height: cropped.height, width: cropped.width)
    let plan = MaskUpscaler(inputSize: inputSize, outputSize: cropSize)
    let points = grid.map {
      Point(x: $0.x * Double(cropSize.width), y: $0.y * Double(cropSize.height))
    }
    // The official generator maps points into the 1024 frame in float64 and adds the half-pixel
    // shift before rounding to float32; `SamPredictor` rounds `x * scale` first. Handing it the
    // point whose float32 image is the official shifted value minus 0.5 (exact in float32) makes
    // the prompt encoder see exactly the official coordinates.
    let sx = Double(inputSize.width) / Double(cropSize.width)
    let sy = Double(inputSize.height) / Double(cropSize.height)
    func predictorCoordinate(_ v: Double, _ scale: Double) -> Double {
      let shifted = Float(v * scale + 0.5) - 0.5
      return Double(shifted) / scale
    }
    let prompts = points.map {
      Point(x: predictorCoordinate($0.x, sx), y: predictorCoordinate($0.y, sy))
    }

    var kept: [Candidate] = []
    var batchStart = 0
    while batchStart < points.count {
      let batchEnd = min(batchStart + settings.pointsPerBatch, points.count)
      start = clock.now
      let groups = try decode(prompts[batchStart..<batchEnd])
      timing.decoder += clock.now - start
      start = clock.now
      for (range, prediction) in groups {
        candidates += prediction.iouPredictions.count
        kept += processBatch(
          prediction,
          points: Array(points[(batchStart + range.lowerBound)..<(batchStart + range.upperBound)]),
          plan: plan, cropBox: cropBox, imageSize: (image.height, image.width))
      }
      timing.postprocess += clock.now - start
      tracker.batchDone(masksSoFar: kept.count)
      batchStart = batchEnd
    }

    start = clock.now
    let keep = AMG.batchedNMS(
      boxes: kept.map(\.box.floats), scores: kept.map(\.iou), iouThreshold: settings.boxNMSThresh)
    let masks = keep.map { i in
      let c = kept[i]
      return GeneratedMask(
        segmentation: c.rle, area: c.rle.area, box: c.box.uncropped(from: cropBox),
        predictedIoU: c.iou, stabilityScore: c.stability,
        pointCoords: Point(x: c.point.x + Double(cropBox.x0), y: c.point.y + Double(cropBox.y0)),
        cropBox: cropBox)
    }
    timing.filtering += clock.now - start
    return masks
  }

  /// Decodes one batch of point prompts (1024-frame-exact coordinates, see `processCrop`),
  /// multimask, returning the predictions of consecutive groups of the batch in order.
  ///
  /// The decoder's work per prompt is a chain of GEMMs, several of them small (the prompt's
  /// few tokens); threading each of those over the cores mostly costs synchronisation. With
  /// `parallelPrompts` the batch is split into one group per core instead, each decoded on its
  /// own core with single-threaded kernels: the same arithmetic, prompt by prompt, so the
  /// results are identical, with the cores busy on independent work.
  func decode(_ prompts: ArraySlice<Point>) throws -> [(
    range: Range<Int>, prediction: BatchPrediction
  )] {
    let count = prompts.count
    let threads = ComputeThreads.count
    let workers = parallelPrompts ? min(threads, count) : 1
    func run(_ range: Range<Int>) throws -> BatchPrediction {
      let group = prompts[
        (prompts.startIndex + range.lowerBound)..<(prompts.startIndex + range.upperBound)]
      // Prompts none of whose masks can pass the predicted-IoU filter need no masks.
      return try predictor.predictBatch(
        pointSets: group.map { [$0] }, labelSets: Array(repeating: [1], count: group.count),
        multimask: true, upscale: false,
        skipMasksAtOrBelowIoU: settings.predIoUThresh > 0 ? Float(settings.predIoUThresh) : nil)
    }
    guard workers > 1 else { return [(0..<count, try run(0..<count))] }

    let ranges = (0..<workers).map { (count * $0 / workers)..<(count * ($0 + 1) / workers) }
    var results = [Result<BatchPrediction, any Error>?](repeating: nil, count: workers)
    results.withUnsafeMutableBufferPointer { results in
      let out = UncheckedSendable(results.baseAddress!)
      let work = UncheckedSendable(run)
      DispatchQueue.concurrentPerform(iterations: workers) { g in
        // Each group's kernels stay on its own core (the limit is per thread).
        out.value[g] = Result { try ComputeThreads.limited(to: 1) { try work.value(ranges[g]) } }
      }
    }
    return try zip(ranges, results).map { ($0, try $1!.get()) }
  }

  /// A mask that passed the per-batch filters, in the crop's frame.
  struct Candidate: Sendable {
    var rle: UncompressedRLE
    var box: BoxXYXY
    var iou: Float
    var stability: Float
    var point: Point
  }

  /// `_process_batch`: IoU filter, stability score and filter, threshold, box, crop-edge
  /// filter and RLE encoding, the masks spread over the cores.
  func processBatch(
    _ prediction: BatchPrediction, points: [Point], plan: MaskUpscaler, cropBox: BoxXYXY,
    imageSize: (height: Int, width: Int)
  ) -> [Candidate] {
    let perPrompt = prediction.masksPerPrompt
    let ious = prediction.iouPredictions.storage
    let iouThreshold = Float(settings.predIoUThresh)
    let selected = ious.indices.filter { settings.predIoUThresh <= 0 || ious[$0] > iouThreshold }
    guard !selected.isEmpty else { return [] }

    let high = Float(Self.maskThreshold + settings.stabilityScoreOffset)
    let low = Float(Self.maskThreshold - settings.stabilityScoreOffset)
    let stabilityThreshold = Float(settings.stabilityScoreThresh)
    let filterStability = settings.stabilityScoreThresh > 0
    let imageBox = BoxXYXY(x0: 0, y0: 0, x1: imageSize.width, y1: imageSize.height)
    let plane = MaskUpscaler.lowResSide * MaskUpscaler.lowResSide
    let (cropHeight, cropWidth) = (plan.outputHeight, plan.outputWidth)

    var results = [Candidate?](repeating: nil, count: selected.count)
    results.withUnsafeMutableBufferPointer { results in
      prediction.lowResLogits.withUnsafeBufferPointer { logits in
        let out = UncheckedSendable(results.baseAddress!)
        let base = logits.baseAddress!
        Parallel.forHeavyRanges(count: selected.count) { range in
          let scratch = MaskUpscaler.Scratch(plan)
          let mask = UnsafeMutablePointer<UInt8>.allocate(capacity: cropHeight * cropWidth)
          defer { mask.deallocate() }
          for k in range {
            let index = selected[k]
            let counts = plan.run(
              base + index * plane, high: high, low: low,
              maskThreshold: Float(Self.maskThreshold), scratch: scratch, mask: mask)
            let stability = Float(counts.high) / Float(counts.low)
            if filterStability && !(stability >= stabilityThreshold) { continue }
            let box = boxOfMask(mask, height: cropHeight, width: cropWidth)
            if AMG.isBoxNearCropEdge(box, cropBox: cropBox, originalBox: imageBox) { continue }
            let rle = encodeUncropped(
              mask, cropBox: cropBox, cropHeight: cropHeight, cropWidth: cropWidth,
              imageHeight: imageSize.height, imageWidth: imageSize.width)
            out.value[k] = Candidate(
              rle: rle, box: box, iou: ious[index], stability: stability,
              point: points[index / perPrompt])
          }
        }
      }
    }
    return results.compactMap { $0 }
  }

  /// `postprocess_small_regions`: fill small holes, remove small islands, recompute boxes, and
  /// NMS preferring masks that did not change; changed masks that survive get their new RLE and
  /// box.
  func postprocessSmallRegions(
    _ masks: [GeneratedMask], height: Int, width: Int, minArea: Int, nmsThreshold: Double
  ) -> [GeneratedMask] {
    guard !masks.isEmpty else { return masks }
    var updates = [(box: BoxXYXY, rle: UncompressedRLE?)](
      repeating: (.zero, nil), count: masks.count)
    updates.withUnsafeMutableBufferPointer { updates in
      let out = UncheckedSendable(updates.baseAddress!)
      Parallel.forHeavyRanges(count: masks.count) { range in
        for i in range {
          var mask = masks[i].segmentation.mask()
          let holes = AMG.removeSmallRegions(
            mask, height: height, width: width, areaThreshold: Double(minArea), mode: .holes)
          let islands = AMG.removeSmallRegions(
            holes.mask, height: height, width: width, areaThreshold: Double(minArea), mode: .islands
          )
          mask = islands.mask
          let changed = holes.changed || islands.changed
          out.value[i] = (
            AMG.maskToBox(mask, height: height, width: width),
            changed ? UncompressedRLE(mask: mask, height: height, width: width) : nil
          )
        }
      }
    }
    let keep = AMG.batchedNMS(
      boxes: updates.map(\.box.floats), scores: updates.map { $0.rle == nil ? 1 : 0 },
      iouThreshold: nmsThreshold)
    return keep.map { i in
      var m = masks[i]
      if let rle = updates[i].rle {
        m.segmentation = rle
        m.area = rle.area
        m.box = updates[i].box
      }
      return m
    }
  }
}

/// Tight box of a row-major byte mask (inclusive ends), `[0, 0, 0, 0]` when empty.
func boxOfMask(_ mask: UnsafePointer<UInt8>, height: Int, width: Int) -> BoxXYXY {
  var (left, top, right, bottom) = (width, -1, -1, -1)
  for y in 0..<height {
    let row = mask + y * width
    var first = 0
    while first < width && row[first] == 0 { first += 1 }
    guard first < width else { continue }
    var last = width - 1
    while row[last] == 0 { last -= 1 }
    if top < 0 { top = y }
    bottom = y
    left = min(left, first)
    right = max(right, last)
  }
  return top < 0 ? .zero : BoxXYXY(x0: left, y0: top, x1: right, y1: bottom)
}

/// SAM's `uncrop_masks` then `mask_to_rle_pytorch`: the crop's row-major 0/1 byte mask placed
/// in the image (zeros elsewhere), run-length encoded in column-major order, without building
/// the image. (Transposing first to scan contiguous columns a word at a time was measured: no
/// faster, the transpose costs what the strided scan does.)
func encodeUncropped(
  _ mask: UnsafePointer<UInt8>, cropBox: BoxXYXY, cropHeight: Int, cropWidth: Int,
  imageHeight: Int, imageWidth: Int
) -> UncompressedRLE {
  var builder = RunBuilder()
  builder.appendZeros(cropBox.x0 * imageHeight)
  for x in 0..<cropWidth {
    builder.appendZeros(cropBox.y0)
    builder.appendColumn(mask + x, rows: cropHeight, stride: cropWidth)
    builder.appendZeros(imageHeight - cropBox.y0 - cropHeight)
  }
  builder.appendZeros((imageWidth - cropBox.x0 - cropWidth) * imageHeight)
  return UncompressedRLE(height: imageHeight, width: imageWidth, runs: builder.finish())
}

struct ProgressTracker {
  var crop = 0
  let crops: Int
  var batchesDone = 0
  let batches: Int
  let report: ((GenerationProgress) -> Void)?

  init(crops: Int, batches: Int, report: ((GenerationProgress) -> Void)?) {
    self.crops = crops
    self.batches = batches
    self.report = report
  }

  mutating func batchDone(masksSoFar: Int) {
    batchesDone += 1
    report?(
      GenerationProgress(
        crop: crop, crops: crops, batchesDone: batchesDone, batches: batches, masksSoFar: masksSoFar
      ))
  }
}

extension RGBImage {
  /// The pixels inside `box` (XYXY, exclusive ends), like `image[y0:y1, x0:x1]`.
  func cropped(to box: BoxXYXY) -> RGBImage {
    if box.x0 == 0 && box.y0 == 0 && box.x1 == width && box.y1 == height { return self }
    let w = box.x1 - box.x0
    let h = box.y1 - box.y0
    var out = [UInt8](repeating: 0, count: w * h * 3)
    for y in 0..<h {
      let src = ((box.y0 + y) * width + box.x0) * 3
      out[(y * w * 3)..<((y + 1) * w * 3)] = pixels[src..<(src + w * 3)]
    }
    return RGBImage(width: w, height: h, pixels: out)
  }
}
