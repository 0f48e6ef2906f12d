import Foundation

/// SAM's three published image encoders (segment-anything's `build_sam_vit_b/l/h`).
public enum SamViTVariant: String, CaseIterable, Sendable, Codable {
  case b, l, h

  /// Accepts "sam-vit-h", "sam_vit_h", "vit_h" or "vit-h", in any letter case.
  public init?(name: String) {
    var s = name.lowercased().trimmingCharacters(in: .whitespaces)
    s = s.replacingOccurrences(of: "_", with: "-")
    if s.hasPrefix("sam-") { s.removeFirst(4) }
    guard s.hasPrefix("vit-") else { return nil }
    self.init(rawValue: String(s.dropFirst(4)))
  }

  /// The model name used on the command line and in reports: `sam-vit-h`.
  public var modelName: String { "sam-vit-\(rawValue)" }

  /// The file name of the released checkpoint.
  public var checkpointFileName: String {
    switch self {
    case .b: "sam_vit_b_01ec64.pth"
    case .l: "sam_vit_l_0b3195.pth"
    case .h: "sam_vit_h_4b8939.pth"
    }
  }
}

/// The constructor arguments of segment-anything's `ImageEncoderViT`. The JSON form uses the
/// constructor's names (`embed_dim`, `depth`, `num_heads`, `global_attn_indexes`, …), as in the
/// fixture `tiny-sam-vit.json`; omitted fields take the constructor's defaults.
public struct SamViTConfig: Sendable, Equatable {
  public var imageSize: Int
  public var patchSize: Int
  public var inChannels: Int
  public var embedDim: Int
  public var depth: Int
  public var numHeads: Int
  public var mlpRatio: Double
  public var outChannels: Int
  public var qkvBias: Bool
  public var useAbsolutePositions: Bool
  public var useRelativePositions: Bool
  /// 0 means every block attends globally.
  public var windowSize: Int
  public var globalAttentionIndexes: [Int]

  public init(
    imageSize: Int = 1024, patchSize: Int = 16, inChannels: Int = 3, embedDim: Int = 768,
    depth: Int = 12, numHeads: Int = 12, mlpRatio: Double = 4, outChannels: Int = 256,
    qkvBias: Bool = true, useAbsolutePositions: Bool = true, useRelativePositions: Bool = false,
    windowSize: Int = 0, globalAttentionIndexes: [Int] = []
  ) {
    self.imageSize = imageSize
    self.patchSize = patchSize
    self.inChannels = inChannels
    self.embedDim = embedDim
    self.depth = depth
    self.numHeads = numHeads
    self.mlpRatio = mlpRatio
    self.outChannels = outChannels
    self.qkvBias = qkvBias
    self.useAbsolutePositions = useAbsolutePositions
    self.useRelativePositions = useRelativePositions
    self.windowSize = windowSize
    self.globalAttentionIndexes = globalAttentionIndexes
  }

  /// The published architectures (segment_anything/build_sam.py): 14×14 windows with four
  /// global blocks, relative positions.
  public static func preset(_ variant: SamViTVariant) -> SamViTConfig {
    let (dim, depth, heads, global): (Int, Int, Int, [Int]) =
      switch variant {
      case .b: (768, 12, 12, [2, 5, 8, 11])
      case .l: (1024, 24, 16, [5, 11, 17, 23])
      case .h: (1280, 32, 16, [7, 15, 23, 31])
      }
    return SamViTConfig(
      embedDim: dim, depth: depth, numHeads: heads, useRelativePositions: true, windowSize: 14,
      globalAttentionIndexes: global)
  }

  /// Side of the token grid, `imageSize / patchSize` (64 for the published models).
  public var gridSide: Int { imageSize / patchSize }
  public var headDim: Int { embedDim / numHeads }
  /// `int(embed_dim * mlp_ratio)`, as the official `Block` computes it.
  public var mlpDim: Int { Int(Double(embedDim) * mlpRatio) }

  /// Whether block `i` attends over the whole grid rather than within windows.
  public func isGlobal(block i: Int) -> Bool {
    windowSize == 0 || globalAttentionIndexes.contains(i)
  }

  /// Checks that the official code can build this encoder and that its embedding fits SAM's
  /// prompt encoder and mask decoder (256 channels on a 64×64 grid).
  public func validate() throws(ModelConfigError) {
    func fail(_ reason: String) -> ModelConfigError { .invalid(file: nil, reason: reason) }
    guard patchSize > 0, imageSize > 0, imageSize % patchSize == 0 else {
      throw fail(
        "img_size \(imageSize) is not a positive multiple of patch_size \(patchSize)")
    }
    guard gridSide == ModelConfig.embeddingSize else {
      throw fail(
        "img_size / patch_size is \(gridSide); SAM's mask decoder takes a \(ModelConfig.embeddingSize)×\(ModelConfig.embeddingSize) embedding"
      )
    }
    guard outChannels == ModelConfig.embeddingChannels else {
      throw fail(
        "out_chans is \(outChannels); SAM's mask decoder takes \(ModelConfig.embeddingChannels) channels"
      )
    }
    guard inChannels > 0 else { throw fail("in_chans is \(inChannels); it must be positive") }
    guard depth >= 0 else { throw fail("depth is \(depth); it cannot be negative") }
    guard numHeads > 0, embedDim > 0, embedDim % numHeads == 0 else {
      throw fail("embed_dim \(embedDim) is not a positive multiple of num_heads \(numHeads)")
    }
    guard mlpRatio.isFinite, mlpDim >= 1 else {
      throw fail("mlp_ratio is \(mlpRatio); it must leave at least one hidden unit")
    }
    guard windowSize >= 0 else { throw fail("window_size is \(windowSize); it cannot be negative") }
    if let i = globalAttentionIndexes.first(where: { $0 < 0 || $0 >= depth }) {
      throw fail("global_attn_indexes holds \(i), but the blocks are 0…\(depth - 1)")
    }
  }

  /// Reads a JSON of `ImageEncoderViT`'s constructor arguments.
  public static func decode(_ json: Data) throws(ModelConfigError) -> SamViTConfig {
    let config = try decodeConfig(SamViTConfig.self, from: json)
    try config.validate()
    return config
  }

  /// Whether a JSON object's keys are those of `ImageEncoderViT` rather than of an
  /// EfficientViT-SAM config (`backbone`, `neck`, `image_size`).
  static func recognises(keys: Set<String>) -> Bool {
    keys.contains("embed_dim") || keys.contains("num_heads") || keys.contains("depth")
  }
}

extension SamViTConfig: Codable {
  enum CodingKeys: String, CodingKey, CaseIterable {
    case imageSize = "img_size"
    case patchSize = "patch_size"
    case inChannels = "in_chans"
    case embedDim = "embed_dim"
    case depth
    case numHeads = "num_heads"
    case mlpRatio = "mlp_ratio"
    case outChannels = "out_chans"
    case qkvBias = "qkv_bias"
    case useAbsolutePositions = "use_abs_pos"
    case useRelativePositions = "use_rel_pos"
    case relPosZeroInit = "rel_pos_zero_init"
    case windowSize = "window_size"
    case globalAttentionIndexes = "global_attn_indexes"
  }

  public init(from decoder: any Decoder) throws {
    try rejectUnknownKeys(
      decoder, allowed: CodingKeys.allCases.map(\.rawValue), in: "the SAM ViT config")
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = SamViTConfig()
    // `ImageEncoderViT`'s own defaults (those of `init`), not ViT-B's preset: a JSON means
    // what the constructor would build from it.
    self.init(
      imageSize: try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? d.imageSize,
      patchSize: try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? d.patchSize,
      inChannels: try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? d.inChannels,
      embedDim: try c.decodeIfPresent(Int.self, forKey: .embedDim) ?? d.embedDim,
      depth: try c.decodeIfPresent(Int.self, forKey: .depth) ?? d.depth,
      numHeads: try c.decodeIfPresent(Int.self, forKey: .numHeads) ?? d.numHeads,
      mlpRatio: try c.decodeIfPresent(Double.self, forKey: .mlpRatio) ?? d.mlpRatio,
      outChannels: try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? d.outChannels,
      qkvBias: try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? d.qkvBias,
      useAbsolutePositions: try c.decodeIfPresent(Bool.self, forKey: .useAbsolutePositions)
        ?? d.useAbsolutePositions,
      useRelativePositions: try c.decodeIfPresent(Bool.self, forKey: .useRelativePositions)
        ?? d.useRelativePositions,
      windowSize: try c.decodeIfPresent(Int.self, forKey: .windowSize) ?? d.windowSize,
      globalAttentionIndexes: try c.decodeIfPresent([Int].self, forKey: .globalAttentionIndexes)
        ?? d.globalAttentionIndexes)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(imageSize, forKey: .imageSize)
    try c.encode(patchSize, forKey: .patchSize)
    try c.encode(inChannels, forKey: .inChannels)
    try c.encode(embedDim, forKey: .embedDim)
    try c.encode(depth, forKey: .depth)
    try c.encode(numHeads, forKey: .numHeads)
    try c.encode(mlpRatio, forKey: .mlpRatio)
    try c.encode(outChannels, forKey: .outChannels)
    try c.encode(qkvBias, forKey: .qkvBias)
    try c.encode(useAbsolutePositions, forKey: .useAbsolutePositions)
    try c.encode(useRelativePositions, forKey: .useRelativePositions)
    try c.encode(windowSize, forKey: .windowSize)
    try c.encode(globalAttentionIndexes, forKey: .globalAttentionIndexes)
  }
}
