import EVImage

/// How masks are written, SAM's `output_mode`.
public enum OutputMode: String, Sendable, CaseIterable, Codable {
  /// A row-major binary mask per record.
  case binaryMask = "binary_mask"
  /// SAM's uncompressed RLE (`{"size": [h, w], "counts": [...]}`, column-major runs).
  case uncompressedRLE = "uncompressed_rle"
  /// pycocotools' compressed RLE string.
  case cocoRLE = "coco_rle"
}

/// The parameters of SAM's `SamAutomaticMaskGenerator`, with its defaults (those of the official
/// `EfficientViTSamAutomaticMaskGenerator` too).
public struct MaskGeneratorSettings: Sendable, Equatable {
  /// Points sampled along each side of the image (a `n × n` grid); nil when `pointGrids` gives
  /// the points instead.
  public var pointsPerSide: Int? = 32
  /// Prompts decoded together.
  public var pointsPerBatch = 64
  /// Keep masks whose predicted IoU is greater than this (no filter at 0).
  public var predIoUThresh = 0.88
  /// Keep masks whose stability score is at least this (no filter at 0).
  public var stabilityScoreThresh = 0.95
  /// The shift of the logit threshold for the stability score.
  public var stabilityScoreOffset = 1.0
  /// IoU above which NMS drops a box within a crop.
  public var boxNMSThresh = 0.7
  /// Crop layers beyond the whole image; layer i has 2^i × 2^i crops.
  public var cropNLayers = 0
  /// IoU above which NMS drops a box between crops.
  public var cropNMSThresh = 0.7
  /// Overlap of neighbouring first-layer crops, as a fraction of the image's short side.
  public var cropOverlapRatio = 512.0 / 1500.0
  /// Layer i samples `pointsPerSide / factor^i` points per side.
  public var cropNPointsDownscaleFactor = 1
  /// Explicit normalised ([0, 1]²) point grids, one per crop layer; exclusive with
  /// `pointsPerSide`.
  public var pointGrids: [[Point]]? = nil
  /// If > 0, fill holes and remove islands smaller than this area (pixels), then rerun NMS.
  public var minMaskRegionArea = 0
  public var outputMode = OutputMode.binaryMask

  public init() {}

  /// The point grid of every crop layer, validating the settings first.
  public func layerPointGrids() throws(MaskGeneratorError) -> [[Point]] {
    guard pointsPerBatch > 0 else {
      throw .invalidSetting("points_per_batch must be at least 1, got \(pointsPerBatch)")
    }
    guard cropNLayers >= 0 else {
      throw .invalidSetting("crop_n_layers must be 0 or more, got \(cropNLayers)")
    }
    guard minMaskRegionArea >= 0 else {
      throw .invalidSetting("min_mask_region_area must be 0 or more, got \(minMaskRegionArea)")
    }
    for (name, value) in [
      ("pred_iou_thresh", predIoUThresh), ("stability_score_thresh", stabilityScoreThresh),
      ("stability_score_offset", stabilityScoreOffset), ("box_nms_thresh", boxNMSThresh),
      ("crop_nms_thresh", cropNMSThresh), ("crop_overlap_ratio", cropOverlapRatio),
    ] where !value.isFinite {
      throw .invalidSetting("\(name) must be a finite number, got \(value)")
    }
    // Thresholds outside these ranges keep every mask or none, which is never what was meant;
    // SAM does not check them, so a typo (5 for 0.5) silently returned nothing.
    for (name, value) in [
      ("pred_iou_thresh", predIoUThresh), ("stability_score_thresh", stabilityScoreThresh),
      ("box_nms_thresh", boxNMSThresh), ("crop_nms_thresh", cropNMSThresh),
    ] where !(0...1).contains(value) {
      throw .invalidSetting("\(name) must be in [0, 1], got \(value)")
    }
    guard stabilityScoreOffset >= 0 else {
      throw .invalidSetting("stability_score_offset must be 0 or more, got \(stabilityScoreOffset)")
    }
    guard (0..<1).contains(cropOverlapRatio) else {
      throw .invalidSetting(
        "crop_overlap_ratio must be in [0, 1) (a fraction of the short side), got \(cropOverlapRatio)"
      )
    }
    switch (pointsPerSide, pointGrids) {
    case (nil, nil), (.some, .some):
      throw .invalidSetting("give exactly one of points_per_side and point_grids")
    case (let n?, nil):
      guard n >= 1 else { throw .invalidSetting("points_per_side must be at least 1, got \(n)") }
      guard cropNPointsDownscaleFactor >= 1 else {
        throw .invalidSetting(
          "crop_n_points_downscale_factor must be at least 1, got \(cropNPointsDownscaleFactor)")
      }
      for layer in 0...cropNLayers {
        let side = AMG.pointsPerSide(
          nPerSide: n, layer: layer, scalePerLayer: cropNPointsDownscaleFactor)
        guard side >= 1 else {
          throw .invalidSetting(
            "points_per_side \(n) leaves no points in crop layer \(layer) (downscale factor \(cropNPointsDownscaleFactor))"
          )
        }
      }
      return AMG.buildAllLayerPointGrids(
        nPerSide: n, nLayers: cropNLayers, scalePerLayer: cropNPointsDownscaleFactor)
    case (nil, let grids?):
      guard grids.count >= cropNLayers + 1 else {
        throw .invalidSetting(
          "point_grids has \(grids.count) grid(s); crop_n_layers \(cropNLayers) needs \(cropNLayers + 1)"
        )
      }
      for (i, grid) in grids.enumerated() {
        guard !grid.isEmpty else { throw .invalidSetting("point grid \(i) is empty") }
        if let p = grid.first(where: { !(0...1).contains($0.x) || !(0...1).contains($0.y) }) {
          throw .invalidSetting(
            "point grid \(i) has the point (\(p.x), \(p.y)); grid points are normalised to [0, 1]")
        }
      }
      return grids
    }
  }

  /// The settings under SAM's parameter names, as every output file (CLI and server) records them.
  public var jsonRecord: [String: Any] {
    var record: [String: Any] = [
      "points_per_batch": pointsPerBatch, "pred_iou_thresh": predIoUThresh,
      "stability_score_thresh": stabilityScoreThresh,
      "stability_score_offset": stabilityScoreOffset, "box_nms_thresh": boxNMSThresh,
      "crop_n_layers": cropNLayers, "crop_nms_thresh": cropNMSThresh,
      "crop_overlap_ratio": cropOverlapRatio,
      "crop_n_points_downscale_factor": cropNPointsDownscaleFactor,
      "min_mask_region_area": minMaskRegionArea, "output_mode": outputMode.rawValue,
    ]
    if let n = pointsPerSide { record["points_per_side"] = n }
    if let grids = pointGrids { record["point_grids"] = grids.map { $0.map { [$0.x, $0.y] } } }
    return record
  }
}

public enum MaskGeneratorError: Error, Sendable, Equatable, CustomStringConvertible {
  case invalidSetting(String)
  case emptyImage(height: Int, width: Int)

  public var description: String {
    switch self {
    case .invalidSetting(let message): "invalid mask generator setting: \(message)"
    case .emptyImage(let h, let w): "cannot segment an empty image (\(w)×\(h))"
    }
  }
}
