import EVMask
import Foundation

/// A coding key for any field name, to list the fields a client sent.
struct AnyKey: CodingKey {
  var stringValue: String
  var intValue: Int? { nil }
  init(stringValue: String) { self.stringValue = stringValue }
  init?(intValue: Int) { nil }
}

/// Refuses fields a type does not know, so that a misspelt `"point"` is an error and not a
/// prompt silently ignored.
func rejectUnknownFields(_ decoder: any Decoder, known: [String]) throws {
  let container = try decoder.container(keyedBy: AnyKey.self)
  let unknown = container.allKeys.map(\.stringValue).filter { !known.contains($0) }.sorted()
  guard unknown.isEmpty else {
    throw UnknownFields(names: unknown, known: known)
  }
}

struct UnknownFields: Error, CustomStringConvertible {
  let names: [String]
  let known: [String]
  var description: String {
    "unknown field\(names.count > 1 ? "s" : "") \(names.map { "\"\($0)\"" }.joined(separator: ", ")); "
      + "known fields are \(known.joined(separator: ", "))"
  }
}

/// `POST /v1/images/{id}/segment`: one prompt, or one per box.
public struct SegmentRequest: Codable, Sendable, Equatable {
  /// Clicks as [x, y] in original-image pixels.
  public var points: [[Double]]?
  /// 1 (foreground) or 0 (background) per point.
  public var labels: [Int]?
  /// One box [x0, y0, x1, y1].
  public var box: [Double]?
  /// Several boxes, one prompt each (the points, if any, go with every box).
  public var boxes: [[Double]]?
  /// The `handle` of a mask from an earlier answer for this image, to refine it.
  public var maskInput: String?
  /// Three candidate masks per prompt instead of one (default true).
  public var multimask: Bool?

  static let fields = ["points", "labels", "box", "boxes", "mask_input", "multimask"]

  enum CodingKeys: String, CodingKey {
    case points, labels, box, boxes, multimask
    case maskInput = "mask_input"
  }

  public init(
    points: [[Double]]? = nil, labels: [Int]? = nil, box: [Double]? = nil,
    boxes: [[Double]]? = nil, maskInput: String? = nil, multimask: Bool? = nil
  ) {
    self.points = points
    self.labels = labels
    self.box = box
    self.boxes = boxes
    self.maskInput = maskInput
    self.multimask = multimask
  }

  public init(from decoder: any Decoder) throws {
    try rejectUnknownFields(decoder, known: Self.fields)
    let c = try decoder.container(keyedBy: CodingKeys.self)
    points = try c.decodeIfPresent([[Double]].self, forKey: .points)
    labels = try c.decodeIfPresent([Int].self, forKey: .labels)
    box = try c.decodeIfPresent([Double].self, forKey: .box)
    boxes = try c.decodeIfPresent([[Double]].self, forKey: .boxes)
    maskInput = try c.decodeIfPresent(String.self, forKey: .maskInput)
    multimask = try c.decodeIfPresent(Bool.self, forKey: .multimask)
  }
}

/// `POST /v1/images/{id}/everything`: SAM's automatic mask generator parameters, under SAM's
/// names; every field is optional and defaults as in SAM.
public struct EverythingRequest: Codable, Sendable, Equatable {
  public var pointsPerSide: Int?
  public var pointGrids: [[[Double]]]?
  public var pointsPerBatch: Int?
  public var predIoUThresh: Double?
  public var stabilityScoreThresh: Double?
  public var stabilityScoreOffset: Double?
  public var boxNMSThresh: Double?
  public var cropNLayers: Int?
  public var cropNMSThresh: Double?
  public var cropOverlapRatio: Double?
  public var cropNPointsDownscaleFactor: Int?
  public var minMaskRegionArea: Int?
  public var outputMode: String?

  enum CodingKeys: String, CodingKey, CaseIterable {
    case pointsPerSide = "points_per_side"
    case pointGrids = "point_grids"
    case pointsPerBatch = "points_per_batch"
    case predIoUThresh = "pred_iou_thresh"
    case stabilityScoreThresh = "stability_score_thresh"
    case stabilityScoreOffset = "stability_score_offset"
    case boxNMSThresh = "box_nms_thresh"
    case cropNLayers = "crop_n_layers"
    case cropNMSThresh = "crop_nms_thresh"
    case cropOverlapRatio = "crop_overlap_ratio"
    case cropNPointsDownscaleFactor = "crop_n_points_downscale_factor"
    case minMaskRegionArea = "min_mask_region_area"
    case outputMode = "output_mode"
  }

  public init() {}

  public init(from decoder: any Decoder) throws {
    try rejectUnknownFields(decoder, known: CodingKeys.allCases.map(\.rawValue))
    let c = try decoder.container(keyedBy: CodingKeys.self)
    pointsPerSide = try c.decodeIfPresent(Int.self, forKey: .pointsPerSide)
    pointGrids = try c.decodeIfPresent([[[Double]]].self, forKey: .pointGrids)
    pointsPerBatch = try c.decodeIfPresent(Int.self, forKey: .pointsPerBatch)
    predIoUThresh = try c.decodeIfPresent(Double.self, forKey: .predIoUThresh)
    stabilityScoreThresh = try c.decodeIfPresent(Double.self, forKey: .stabilityScoreThresh)
    stabilityScoreOffset = try c.decodeIfPresent(Double.self, forKey: .stabilityScoreOffset)
    boxNMSThresh = try c.decodeIfPresent(Double.self, forKey: .boxNMSThresh)
    cropNLayers = try c.decodeIfPresent(Int.self, forKey: .cropNLayers)
    cropNMSThresh = try c.decodeIfPresent(Double.self, forKey: .cropNMSThresh)
    cropOverlapRatio = try c.decodeIfPresent(Double.self, forKey: .cropOverlapRatio)
    cropNPointsDownscaleFactor = try c.decodeIfPresent(
      Int.self, forKey: .cropNPointsDownscaleFactor)
    minMaskRegionArea = try c.decodeIfPresent(Int.self, forKey: .minMaskRegionArea)
    outputMode = try c.decodeIfPresent(String.self, forKey: .outputMode)
  }
}

/// The answer to an upload.
public struct ImageResponse: Codable, Sendable, Equatable {
  public var id: String
  public var width: Int
  public var height: Int
  public var encodeMs: Double
  public var model: String
  /// Bytes the image holds in the cache.
  public var cacheBytes: Int

  enum CodingKeys: String, CodingKey {
    case id, width, height, model
    case encodeMs = "encode_ms"
    case cacheBytes = "cache_bytes"
  }
}

/// One mask of a segment answer.
public struct MaskResult: Codable, Sendable, Equatable {
  /// COCO RLE (pycocotools' compressed counts, column-major).
  public var segmentation: RLE
  /// The model's predicted IoU.
  public var score: Double
  public var area: Int
  /// [x, y, width, height] of the mask (pycocotools `toBbox`).
  public var bbox: [Double]
  /// Pass as `mask_input` to refine this mask with more prompts.
  public var handle: String
}

/// The masks of one prompt: one, or three candidates with multimask.
public struct PromptResult: Codable, Sendable, Equatable {
  /// Index of the candidate with the highest score.
  public var best: Int
  public var masks: [MaskResult]
}

public struct SegmentResponse: Codable, Sendable, Equatable {
  public var imageId: String
  public var width: Int
  public var height: Int
  public var multimask: Bool
  public var decodeMs: Double
  /// One entry per prompt: a single one, or one per box.
  public var prompts: [PromptResult]

  enum CodingKeys: String, CodingKey {
    case width, height, multimask, prompts
    case imageId = "image_id"
    case decodeMs = "decode_ms"
  }
}

public struct HealthResponse: Codable, Sendable, Equatable {
  public var status: String
  public var model: String
  public var uptimeS: Double
  public var cache: EmbeddingCache.Stats
  public var queue: ComputeQueue.Stats
  /// Resident memory of the whole process, from /proc (0 where unavailable).
  public var rssBytes: Int
  /// Open connections and what the connection guards refused; optional for clients of older
  /// servers.
  public var connections: ConnectionCounter.Stats?

  enum CodingKeys: String, CodingKey {
    case status, model, cache, queue, connections
    case uptimeS = "uptime_s"
    case rssBytes = "rss_bytes"
  }
}

public struct ModelInfo: Codable, Sendable, Equatable {
  public var name: String
  /// Side of the square the image encoder sees (512 for L models, 1024 for XL).
  public var encoderInputSize: Int
  /// Side of the frame prompts and masks are mapped through (always 1024).
  public var promptFrameSize: Int
  public var embeddingShape: [Int]
  public var lowResMaskSize: Int

  enum CodingKeys: String, CodingKey {
    case name
    case encoderInputSize = "encoder_input_size"
    case promptFrameSize = "prompt_frame_size"
    case embeddingShape = "embedding_shape"
    case lowResMaskSize = "low_res_mask_size"
  }
}

public struct ModelsResponse: Codable, Sendable, Equatable {
  public var models: [ModelInfo]
}

/// The error body every failure carries.
public struct ErrorResponse: Codable, Sendable, Equatable {
  public struct Detail: Codable, Sendable, Equatable {
    public var status: Int
    public var code: String
    public var message: String
  }
  public var error: Detail
}
