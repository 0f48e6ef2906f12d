import EVModel
import Foundation
import TestSupport
import Testing

@Suite("Model configuration")
struct ConfigTests {
  @Test func tinyLDecodesWithOfficialDefaults() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    #expect(config.imageSize == 512)
    #expect(config.backbone.widthList == [8, 16, 24, 32, 64])
    #expect(config.backbone.depthList == [1, 1, 1, 2, 2])
    #expect(config.backbone.blockList == [.res, .fmb, .fmb, .mb, .att])
    #expect(config.backbone.expandList == [1, 4, 4, 4, 6])
    #expect(config.backbone.fewerNormList == [false, false, false, true, true])
    #expect(config.backbone.qkvDim == 32)
    #expect(config.neck.fidList == ["stage4", "stage3", "stage2"])
    #expect(config.neck.inChannelList == [64, 32, 24])
    #expect(config.neck.headWidth == 32)
    #expect(config.neck.headDepth == 2)
    #expect(config.neck.expandRatio == 1)
    #expect(config.neck.middleOp == .fmb)
  }

  @Test func tinyXLDecodes() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-xl.json"))
    #expect(config.imageSize == 1024)
    #expect(config.backbone.widthList == [8, 16, 16, 24, 32, 64])
    #expect(config.backbone.depthList == [0, 1, 1, 1, 1, 1])
    #expect(config.backbone.blockList == [.res, .fmb, .fmb, .fmb, .att3, .att3])
    #expect(config.backbone.expandList == [1, 4, 4, 4, 4, 6])
    #expect(config.backbone.fewerNormList == [false, false, false, false, true, true])
    #expect(config.neck.fidList == ["stage5", "stage4", "stage3"])
    #expect(config.neck.expandRatio == 4)
  }

  @Test(arguments: Variant.allCases)
  func presetsAreValidAndRoundTrip(_ variant: Variant) throws {
    let preset = ModelConfig.preset(variant)
    try preset.validate()
    #expect(preset.imageSize == (variant.rawValue.hasPrefix("xl") ? 1024 : 512))
    let json = try JSONEncoder().encode(preset)
    #expect(try ModelConfig.decode(json) == preset)
  }

  @Test func presetsMatchTheOfficialBuilders() {
    // efficientvit/models/efficientvit/sam.py and backbone.py.
    #expect(ModelConfig.preset(.l0).backbone.depthList == [1, 1, 1, 4, 4])
    #expect(ModelConfig.preset(.l1).backbone.depthList == [1, 1, 1, 6, 6])
    #expect(ModelConfig.preset(.l2).backbone.depthList == [1, 2, 2, 8, 8])
    #expect(ModelConfig.preset(.xl0).backbone.depthList == [0, 1, 1, 2, 3, 3])
    #expect(ModelConfig.preset(.xl1).backbone.depthList == [1, 2, 2, 4, 6, 6])
    #expect(Variant.allCases.map { ModelConfig.preset($0).neck.headDepth } == [4, 8, 12, 6, 12])
    #expect(ModelConfig.preset(.xl1).neck.inChannelList == [1024, 512, 256])
    #expect(ModelConfig.preset(.l2).neck.inChannelList == [512, 256, 128])
  }

  @Test func variantNames() throws {
    #expect(Variant(name: "efficientvit-sam-l0") == .l0)
    #expect(Variant(name: "l0") == .l0)
    #expect(Variant(name: "XL1") == .xl1)
    #expect(Variant(name: "efficientvit_sam_xl0") == .xl0)
    #expect(Variant(name: "l3") == nil)
    #expect(Variant.xl1.modelName == "efficientvit-sam-xl1")
    #expect(throws: ModelConfigError.unknownVariant("b0")) { try Variant.parse("b0") }
    #expect(try Variant.parse("efficientvit-sam-l2") == .l2)
  }

  /// A valid tiny-L config as a mutable JSON object.
  private func tinyL() throws -> [String: Any] {
    let data = try Data(contentsOf: Fixtures.url("models/tiny-l.json"))
    return try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  /// Decodes `object` and returns the error's message, failing when it decodes.
  private func decodeError(_ object: [String: Any]) throws -> String {
    let data = try JSONSerialization.data(withJSONObject: object)
    do {
      _ = try ModelConfig.decode(data)
      Issue.record("the config decoded, an error was expected")
      return ""
    } catch {
      return error.description
    }
  }

  private func editing(
    _ object: [String: Any], _ part: String, _ edit: (inout [String: Any]) -> Void
  ) -> [String: Any] {
    var object = object
    var inner = object[part] as! [String: Any]
    edit(&inner)
    object[part] = inner
    return object
  }

  @Test func unknownBlockTypeIsNamed() throws {
    let bad = editing(try tinyL(), "backbone") {
      $0["block_list"] = ["res", "fmb", "fmb", "mb", "attention"]
    }
    let message = try decodeError(bad)
    #expect(message.contains("backbone.block_list[4]"))
    #expect(message.contains("unknown block type"))
    #expect(message.contains("\"att@3\""))
  }

  @Test func listLengthsMustAgree() throws {
    let shortDepth = editing(try tinyL(), "backbone") { $0["depth_list"] = [1, 1, 1, 2] }
    #expect(try decodeError(shortDepth).contains("depth_list has 4 entries but width_list has 5"))
    // Six stages with the five-entry default block list.
    let sixStages = editing(try tinyL(), "backbone") {
      $0["width_list"] = [8, 16, 24, 32, 64, 64]
      $0["depth_list"] = [1, 1, 1, 2, 2, 2]
    }
    #expect(try decodeError(sixStages).contains("block_list has 5 entries but width_list has 6"))
    let neck = editing(try tinyL(), "neck") { $0["in_channel_list"] = [64, 32] }
    #expect(try decodeError(neck).contains("fid_list has 3 entries but neck.in_channel_list has 2"))
  }

  @Test func neckMustFitTheBackbone() throws {
    let wrongChannels = editing(try tinyL(), "neck") { $0["in_channel_list"] = [64, 32, 16] }
    #expect(try decodeError(wrongChannels).contains("stage 2 (stage2) outputs 24 channels"))
    let noStage = editing(try tinyL(), "neck") { $0["fid_list"] = ["stage5", "stage3", "stage2"] }
    #expect(try decodeError(noStage).contains("backbone has stages 0…4"))
    let badOp = editing(try tinyL(), "neck") { $0["middle_op"] = "glu" }
    #expect(try decodeError(badOp).contains("neck.middle_op"))
  }

  @Test func malformedInputIsReported() throws {
    let unknownField = editing(try tinyL(), "backbone") { $0["widths"] = [1] }
    #expect(try decodeError(unknownField).contains("unknown field widths"))
    var missing = try tinyL()
    missing["image_size"] = nil
    #expect(try decodeError(missing).contains("image_size"))
    let wrongType = editing(try tinyL(), "backbone") { $0["depth_list"] = "1,1,1,2,2" }
    #expect(try decodeError(wrongType).contains("backbone.depth_list"))
    var badSize = try tinyL()
    badSize["image_size"] = 500
    #expect(try decodeError(badSize).contains("multiple of 32"))
    let attentionStem = editing(try tinyL(), "backbone") {
      $0["block_list"] = ["att", "fmb", "fmb", "mb", "att"]
    }
    #expect(try decodeError(attentionStem).contains("stage 0"))
    #expect(throws: ModelConfigError.self) { try ModelConfig.decode(Data("{".utf8)) }
  }

  @Test func loadNamesTheFile() throws {
    let missing = URL(fileURLWithPath: "/nonexistent/model.json")
    do {
      _ = try ModelConfig.load(json: missing)
      Issue.record("loading a missing file succeeded")
    } catch {
      guard case .unreadable(let file, _) = error else {
        Issue.record("expected .unreadable, got \(error)")
        return
      }
      #expect(file == missing.path)
    }
    let dir = FileManager.default.temporaryDirectory
      .appendingPathComponent("evmodel-config-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("bad.json")
    let bad = editing(try tinyL(), "backbone") { $0["qkv_dim"] = 0 }
    try JSONSerialization.data(withJSONObject: bad).write(to: file)
    do {
      _ = try ModelConfig.load(json: file)
      Issue.record("an invalid config loaded")
    } catch {
      #expect(error.description.hasPrefix(file.path))
      #expect(error.description.contains("qkv_dim"))
    }
  }
}
