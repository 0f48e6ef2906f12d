import Foundation

/// The five published EfficientViT-SAM models.
public enum Variant: String, CaseIterable, Sendable, Codable {
  case l0, l1, l2, xl0, xl1

  /// Accepts the bare variant ("l0") or the model name ("efficientvit-sam-l0",
  /// "efficientvit_sam_l0"), in any letter case.
  public init?(name: String) {
    var s = name.lowercased().trimmingCharacters(in: .whitespaces)
    for prefix in ["efficientvit-sam-", "efficientvit_sam_"] where s.hasPrefix(prefix) {
      s.removeFirst(prefix.count)
    }
    self.init(rawValue: s)
  }

  /// Like `init(name:)`, but says which names are valid when `name` is none of them.
  public static func parse(_ name: String) throws(ModelConfigError) -> Variant {
    guard let v = Variant(name: name) else { throw .unknownVariant(name) }
    return v
  }

  /// The official model name, as used for checkpoints and manifests: `efficientvit-sam-l0`.
  public var modelName: String { "efficientvit-sam-\(rawValue)" }
}

/// The block a backbone stage repeats (`block_list` of `EfficientViTLargeBackbone`).
public enum BlockType: String, Codable, Sendable, CaseIterable {
  case res, fmb, mb
  /// EfficientViT block with a 5×5 multi-scale aggregation.
  case att
  /// EfficientViT block with a 3×3 multi-scale aggregation (the XL models).
  case att3 = "att@3"

  public var isAttention: Bool { self == .att || self == .att3 }

  /// The aggregation kernel of LiteMLA for attention stages.
  package var attentionScale: Int { self == .att3 ? 3 : 5 }
}

/// The block the SAM neck repeats `head_depth` times.
public enum MiddleOp: String, Codable, Sendable, CaseIterable {
  case mb, fmb, res
}

/// Arguments of the official `EfficientViTLargeBackbone`. Omitted optional fields take the
/// official defaults (those of L0–L2).
public struct BackboneConfig: Sendable, Equatable {
  public var widthList: [Int]
  public var depthList: [Int]
  public var blockList: [BlockType]
  public var expandList: [Double]
  public var fewerNormList: [Bool]
  public var qkvDim: Int
  public var inChannels: Int

  public static let defaultBlockList: [BlockType] = [.res, .fmb, .fmb, .mb, .att]
  public static let defaultExpandList: [Double] = [1, 4, 4, 4, 6]
  public static let defaultFewerNormList: [Bool] = [false, false, false, true, true]

  public init(
    widthList: [Int], depthList: [Int], blockList: [BlockType]? = nil,
    expandList: [Double]? = nil, fewerNormList: [Bool]? = nil, qkvDim: Int = 32,
    inChannels: Int = 3
  ) {
    self.widthList = widthList
    self.depthList = depthList
    self.blockList = blockList ?? Self.defaultBlockList
    self.expandList = expandList ?? Self.defaultExpandList
    self.fewerNormList = fewerNormList ?? Self.defaultFewerNormList
    self.qkvDim = qkvDim
    self.inChannels = inChannels
  }

  public var stageCount: Int { widthList.count }
}

/// Arguments of the official `SamNeck`.
public struct NeckConfig: Sendable, Equatable {
  /// Backbone outputs the neck reads, e.g. `["stage4", "stage3", "stage2"]`.
  public var fidList: [String]
  public var inChannelList: [Int]
  public var headWidth: Int
  public var headDepth: Int
  public var expandRatio: Double
  public var middleOp: MiddleOp

  public init(
    fidList: [String], inChannelList: [Int], headWidth: Int, headDepth: Int,
    expandRatio: Double, middleOp: MiddleOp
  ) {
    self.fidList = fidList
    self.inChannelList = inChannelList
    self.headWidth = headWidth
    self.headDepth = headDepth
    self.expandRatio = expandRatio
    self.middleOp = middleOp
  }

  /// The backbone stage index of each `fid_list` entry ("stage4" → 4), nil when malformed.
  public var stageIndices: [Int?] {
    fidList.map { fid in
      guard fid.hasPrefix("stage"), let i = Int(fid.dropFirst(5)), i >= 0 else { return nil }
      return i
    }
  }
}

/// The architecture of an EfficientViT-SAM image encoder: backbone, neck and the encoder's input
/// size. The JSON form is the one of `fixtures/models/tiny-*.json`:
/// `{"backbone": {"width_list": …, "depth_list": …, "block_list"?: …, "expand_list"?: …,
/// "fewer_norm_list"?: …, "qkv_dim"?: …}, "neck": {…}, "image_size": 512}`.
public struct ModelConfig: Sendable, Equatable {
  public var backbone: BackboneConfig
  public var neck: NeckConfig
  /// The side of the square image the encoder sees (512 for L models, 1024 for XL). Prompts and
  /// masks always use the 1024 frame regardless.
  public var imageSize: Int

  /// Side of the image embedding the neck produces (SAM's 64×64 grid), fixed by the official neck.
  public static let embeddingSize = 64
  /// Channels of the image embedding, fixed by the official neck and its LayerNorm2d.
  public static let embeddingChannels = 256

  /// Builds and validates a configuration.
  public init(backbone: BackboneConfig, neck: NeckConfig, imageSize: Int) throws(ModelConfigError) {
    self.backbone = backbone
    self.neck = neck
    self.imageSize = imageSize
    try validate()
  }

  private init(unchecked backbone: BackboneConfig, neck: NeckConfig, imageSize: Int) {
    self.backbone = backbone
    self.neck = neck
    self.imageSize = imageSize
  }

  /// The official architecture of a published variant (efficientvit/models/efficientvit/sam.py).
  public static func preset(_ variant: Variant) -> ModelConfig {
    let lWidths = [32, 64, 128, 256, 512]
    let xlWidths = [32, 64, 128, 256, 512, 1024]
    let xlBlocks: [BlockType] = [.res, .fmb, .fmb, .fmb, .att3, .att3]
    let xlExpand: [Double] = [1, 4, 4, 4, 4, 6]
    let xlFewerNorm = [false, false, false, false, true, true]
    func lNeck(depth: Int) -> NeckConfig {
      NeckConfig(
        fidList: ["stage4", "stage3", "stage2"], inChannelList: [512, 256, 128], headWidth: 256,
        headDepth: depth, expandRatio: 1, middleOp: .fmb)
    }
    func xlNeck(depth: Int) -> NeckConfig {
      NeckConfig(
        fidList: ["stage5", "stage4", "stage3"], inChannelList: [1024, 512, 256], headWidth: 256,
        headDepth: depth, expandRatio: 4, middleOp: .fmb)
    }
    switch variant {
    case .l0:
      return ModelConfig(
        unchecked: BackboneConfig(widthList: lWidths, depthList: [1, 1, 1, 4, 4]),
        neck: lNeck(depth: 4), imageSize: 512)
    case .l1:
      return ModelConfig(
        unchecked: BackboneConfig(widthList: lWidths, depthList: [1, 1, 1, 6, 6]),
        neck: lNeck(depth: 8), imageSize: 512)
    case .l2:
      return ModelConfig(
        unchecked: BackboneConfig(widthList: lWidths, depthList: [1, 2, 2, 8, 8]),
        neck: lNeck(depth: 12), imageSize: 512)
    case .xl0:
      return ModelConfig(
        unchecked: BackboneConfig(
          widthList: xlWidths, depthList: [0, 1, 1, 2, 3, 3], blockList: xlBlocks,
          expandList: xlExpand, fewerNormList: xlFewerNorm),
        neck: xlNeck(depth: 6), imageSize: 1024)
    case .xl1:
      return ModelConfig(
        unchecked: BackboneConfig(
          widthList: xlWidths, depthList: [1, 2, 2, 4, 6, 6], blockList: xlBlocks,
          expandList: xlExpand, fewerNormList: xlFewerNorm),
        neck: xlNeck(depth: 12), imageSize: 1024)
    }
  }

  /// Reads and validates a JSON configuration file.
  public static func load(json url: URL) throws(ModelConfigError) -> ModelConfig {
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw .unreadable(file: url.path, reason: error.localizedDescription)
    }
    do {
      return try decode(data)
    } catch {
      throw error.naming(url.path)
    }
  }

  /// Decodes and validates a JSON configuration.
  public static func decode(_ json: Data) throws(ModelConfigError) -> ModelConfig {
    try decodeConfig(ModelConfig.self, from: json)
  }

  /// Checks that the configuration describes an encoder the official code can build and run.
  public func validate() throws(ModelConfigError) {
    func fail(_ reason: String) -> ModelConfigError { .invalid(file: nil, reason: reason) }
    let b = backbone
    let n = b.stageCount
    guard n >= 2 else {
      throw fail("backbone.width_list has \(n) entries; a backbone needs at least 2 stages")
    }
    let lengths: [(String, Int)] = [
      ("depth_list", b.depthList.count), ("block_list", b.blockList.count),
      ("expand_list", b.expandList.count), ("fewer_norm_list", b.fewerNormList.count),
    ]
    for (name, count) in lengths where count != n {
      throw fail(
        "backbone.\(name) has \(count) entries but width_list has \(n); give one per stage"
          + (name == "depth_list" ? "" : " (or omit \(name) to use the 5-stage default)"))
    }
    if let i = b.widthList.firstIndex(where: { $0 <= 0 }) {
      throw fail("backbone.width_list[\(i)] is \(b.widthList[i]); widths must be positive")
    }
    if let i = b.depthList.firstIndex(where: { $0 < 0 }) {
      throw fail("backbone.depth_list[\(i)] is \(b.depthList[i]); depths cannot be negative")
    }
    if let i = b.expandList.firstIndex(where: { !($0 > 0) || !$0.isFinite }) {
      throw fail("backbone.expand_list[\(i)] is \(b.expandList[i]); expand ratios must be positive")
    }
    if b.blockList[0].isAttention && b.depthList[0] > 0 {
      throw fail(
        "backbone.block_list[0] is \(b.blockList[0].rawValue); stage 0 runs at full resolution and the official backbone only allows res, fmb or mb there"
      )
    }
    guard b.qkvDim > 0 else { throw fail("backbone.qkv_dim is \(b.qkvDim); it must be positive") }
    guard b.inChannels > 0 else {
      throw fail("backbone.in_channels is \(b.inChannels); it must be positive")
    }
    for s in 1..<n where b.blockList[s].isAttention && b.depthList[s] > 0 {
      guard b.widthList[s] >= b.qkvDim else {
        throw fail(
          "backbone stage \(s) is an attention stage of width \(b.widthList[s]), narrower than qkv_dim \(b.qkvDim), so it would have no heads"
        )
      }
    }
    let k = neck
    guard !k.fidList.isEmpty else { throw fail("neck.fid_list is empty; the neck needs an input") }
    guard k.fidList.count == k.inChannelList.count else {
      throw fail(
        "neck.fid_list has \(k.fidList.count) entries but neck.in_channel_list has \(k.inChannelList.count)"
      )
    }
    for (i, index) in k.stageIndices.enumerated() {
      guard let s = index else {
        throw fail("neck.fid_list[\(i)] is \"\(k.fidList[i])\"; expected stage0…stage\(n - 1)")
      }
      guard s < n else {
        throw fail(
          "neck.fid_list[\(i)] is \"\(k.fidList[i])\" but the backbone has stages 0…\(n - 1)")
      }
      guard k.inChannelList[i] == b.widthList[s] else {
        throw fail(
          "neck.in_channel_list[\(i)] is \(k.inChannelList[i]) but backbone stage \(s) (\(k.fidList[i])) outputs \(b.widthList[s]) channels"
        )
      }
    }
    guard k.headWidth > 0 else {
      throw fail("neck.head_width is \(k.headWidth); it must be positive")
    }
    guard k.headDepth >= 0 else {
      throw fail("neck.head_depth is \(k.headDepth); it cannot be negative")
    }
    guard k.expandRatio.isFinite, hiddenChannels(k.headWidth, expandRatio: k.expandRatio) >= 1
    else {
      throw fail("neck.expand_ratio is \(k.expandRatio); it must leave at least one hidden channel")
    }

    // Stage 0 opens with a stride-2 conv and every later stage with a stride-2 block.
    let stride = 1 << n
    guard imageSize > 0, imageSize % stride == 0 else {
      throw fail(
        "image_size is \(imageSize); with \(n) stride-2 stages it must be a positive multiple of \(stride)"
      )
    }
  }
}

// MARK: - JSON

/// Decodes a configuration, every failure as one `ModelConfigError` naming the field.
func decodeConfig<T: Decodable>(_ type: T.Type, from json: Data) throws(ModelConfigError) -> T {
  do {
    return try JSONDecoder().decode(type, from: json)
  } catch let error as ModelConfigError {
    throw error
  } catch let error as DecodingError {
    throw .malformed(file: nil, reason: describe(error))
  } catch {
    throw .malformed(file: nil, reason: error.localizedDescription)
  }
}

/// Any JSON object key, used to reject fields the official builders do not take.
struct AnyKey: CodingKey {
  var stringValue: String
  var intValue: Int? { nil }
  init(stringValue: String) { self.stringValue = stringValue }
  init?(intValue: Int) { nil }
}

func rejectUnknownKeys(
  _ decoder: any Decoder, allowed: [String], in object: String
) throws {
  let container = try decoder.container(keyedBy: AnyKey.self)
  let unknown = container.allKeys.map(\.stringValue).filter { !allowed.contains($0) }.sorted()
  if !unknown.isEmpty {
    throw ModelConfigError.malformed(
      file: nil,
      reason:
        "\(object) has unknown field\(unknown.count == 1 ? "" : "s") \(unknown.joined(separator: ", ")); allowed: \(allowed.joined(separator: ", "))"
    )
  }
}

/// Decodes an enum field, naming the allowed values when the string is none of them.
private func decodeEnum<E: RawRepresentable & CaseIterable>(
  _ raw: String, field: String, what: String
) throws -> E where E.RawValue == String {
  guard let value = E(rawValue: raw) else {
    let allowed = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
    throw ModelConfigError.invalid(
      file: nil, reason: "\(field) is \"\(raw)\", an unknown \(what); expected one of \(allowed)")
  }
  return value
}

extension BackboneConfig: Codable {
  enum CodingKeys: String, CodingKey, CaseIterable {
    case widthList = "width_list"
    case depthList = "depth_list"
    case blockList = "block_list"
    case expandList = "expand_list"
    case fewerNormList = "fewer_norm_list"
    case qkvDim = "qkv_dim"
    case inChannels = "in_channels"
    case norm
    case actFunc = "act_func"
  }

  public init(from decoder: any Decoder) throws {
    try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), in: "backbone")
    let c = try decoder.container(keyedBy: CodingKeys.self)
    // Only batch norm and tanh-GELU are implemented; the official builders take them as
    // arguments, so a config may spell them out but not change them.
    if let norm = try c.decodeIfPresent(String.self, forKey: .norm), norm != "bn2d" {
      throw ModelConfigError.invalid(
        file: nil, reason: "backbone.norm is \"\(norm)\"; only \"bn2d\" is supported")
    }
    if let act = try c.decodeIfPresent(String.self, forKey: .actFunc), act != "gelu" {
      throw ModelConfigError.invalid(
        file: nil, reason: "backbone.act_func is \"\(act)\"; only \"gelu\" is supported")
    }
    let blocks = try c.decodeIfPresent([String].self, forKey: .blockList)?.enumerated().map {
      (i, raw) throws -> BlockType in
      try decodeEnum(raw, field: "backbone.block_list[\(i)]", what: "block type")
    }
    self.init(
      widthList: try c.decode([Int].self, forKey: .widthList),
      depthList: try c.decode([Int].self, forKey: .depthList),
      blockList: blocks,
      expandList: try c.decodeIfPresent([Double].self, forKey: .expandList),
      fewerNormList: try c.decodeIfPresent([Bool].self, forKey: .fewerNormList),
      qkvDim: try c.decodeIfPresent(Int.self, forKey: .qkvDim) ?? 32,
      inChannels: try c.decodeIfPresent(Int.self, forKey: .inChannels) ?? 3)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(widthList, forKey: .widthList)
    try c.encode(depthList, forKey: .depthList)
    try c.encode(blockList, forKey: .blockList)
    try c.encode(expandList, forKey: .expandList)
    try c.encode(fewerNormList, forKey: .fewerNormList)
    try c.encode(qkvDim, forKey: .qkvDim)
    try c.encode(inChannels, forKey: .inChannels)
  }
}

extension NeckConfig: Codable {
  enum CodingKeys: String, CodingKey, CaseIterable {
    case fidList = "fid_list"
    case inChannelList = "in_channel_list"
    case headWidth = "head_width"
    case headDepth = "head_depth"
    case expandRatio = "expand_ratio"
    case middleOp = "middle_op"
  }

  public init(from decoder: any Decoder) throws {
    try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), in: "neck")
    let c = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      fidList: try c.decode([String].self, forKey: .fidList),
      inChannelList: try c.decode([Int].self, forKey: .inChannelList),
      headWidth: try c.decode(Int.self, forKey: .headWidth),
      headDepth: try c.decode(Int.self, forKey: .headDepth),
      expandRatio: try c.decode(Double.self, forKey: .expandRatio),
      middleOp: try decodeEnum(
        c.decode(String.self, forKey: .middleOp), field: "neck.middle_op", what: "block type"))
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(fidList, forKey: .fidList)
    try c.encode(inChannelList, forKey: .inChannelList)
    try c.encode(headWidth, forKey: .headWidth)
    try c.encode(headDepth, forKey: .headDepth)
    try c.encode(expandRatio, forKey: .expandRatio)
    try c.encode(middleOp, forKey: .middleOp)
  }
}

extension ModelConfig: Codable {
  enum CodingKeys: String, CodingKey, CaseIterable {
    case backbone, neck
    case imageSize = "image_size"
  }

  public init(from decoder: any Decoder) throws {
    try rejectUnknownKeys(decoder, allowed: CodingKeys.allCases.map(\.rawValue), in: "the config")
    let c = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      unchecked: try c.decode(BackboneConfig.self, forKey: .backbone),
      neck: try c.decode(NeckConfig.self, forKey: .neck),
      imageSize: try c.decode(Int.self, forKey: .imageSize))
    try validate()
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(backbone, forKey: .backbone)
    try c.encode(neck, forKey: .neck)
    try c.encode(imageSize, forKey: .imageSize)
  }
}
