import EVCheckpoint
import EVMask
import EVTensor
import Foundation
import TestSupport
import Testing

/// What `evsam everything` writes, read with JSONDecoder (exact float64 parsing).
struct EverythingOutput: Decodable {
  struct Record: Decodable {
    struct Segmentation: Decodable {
      let size: [Int]
      let counts: String
    }
    let segmentation: Segmentation
    let area: Int
    let bbox: [Double]
    let predicted_iou: Double
    let stability_score: Double
    let point_coords: [[Double]]
    let crop_box: [Double]?
  }
  let image: String?
  let size: [Int]?
  let annotations: [Record]
}

@Suite struct EverythingCommandTests {
  func modelArguments(checkpoint: URL? = nil) throws -> [String] {
    let models = try Fixtures.url("models")
    return [
      "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", (checkpoint ?? models.appendingPathComponent("tiny-l.pt")).path,
    ]
  }

  /// A setting's value as the fixture writes it (JSONDecoder keeps float64 values exact).
  enum SettingValue: Decodable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case string(String)

    init(from decoder: any Decoder) throws {
      let c = try decoder.singleValueContainer()
      if let v = try? c.decode(Int.self) {
        self = .int(v)
      } else if let v = try? c.decode(Double.self) {
        self = .double(v)
      } else {
        self = .string(try c.decode(String.self))
      }
    }

    var description: String {
      switch self {
      case .int(let v): "\(v)"
      case .double(let v): "\(v)"
      case .string(let v): v
      }
    }
  }

  struct Settings: Decodable { let settings: [String: SettingValue] }

  /// The fixture's settings as command-line options (SAM's names in kebab case).
  func settingsArguments(_ fixture: String) throws -> [String] {
    let data = try Data(contentsOf: Fixtures.url("amg/\(fixture).json"))
    let settings = try JSONDecoder().decode(Settings.self, from: data).settings
    #expect(!settings.isEmpty)
    var args: [String] = []
    for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
      args += ["--" + key.replacingOccurrences(of: "_", with: "-"), value.description]
    }
    return args
  }

  static func decode(_ url: URL) throws -> EverythingOutput {
    try JSONDecoder().decode(EverythingOutput.self, from: Data(contentsOf: url))
  }

  static func golden(_ fixture: String) throws -> EverythingOutput {
    try decode(Fixtures.url("amg/\(fixture).json"))
  }

  /// Same masks in the same order: point and crop exact, predicted IoU within 1e-4, stability
  /// within 1e-3, each segmentation differing in at most 0.1 % of its pixels (or, with
  /// `min_mask_region_area`, for at most 2 % of the masks, by one region at that threshold),
  /// and at least 75 % byte-identical RLEs. The library tests explain these tolerances.
  func expectSameMasks(
    _ ours: EverythingOutput, _ golden: EverythingOutput, minRegionArea: Int = 0
  ) throws {
    try #require(ours.annotations.count == golden.annotations.count)
    var identical = 0
    var regionFlips = 0
    for (a, g) in zip(ours.annotations, golden.annotations) {
      #expect(a.point_coords == g.point_coords)
      if let crop = g.crop_box { #expect(a.crop_box == crop) }
      #expect(abs(a.predicted_iou - g.predicted_iou) <= 1e-4)
      #expect(abs(a.stability_score - g.stability_score) <= 1e-3)
      let size = a.segmentation.size
      let rle = try RLE(compressed: a.segmentation.counts, height: size[0], width: size[1])
      let gold = try RLE(
        compressed: g.segmentation.counts, height: g.segmentation.size[0],
        width: g.segmentation.size[1])
      #expect(a.area == rle.area)
      let common = try RLE.merge([rle, gold], intersect: true).area
      let differing = a.area + g.area - 2 * common
      if differing > max(1, g.area / 1000) {
        regionFlips += 1
        #expect(differing <= minRegionArea + max(1, g.area / 1000))
      }
      if a.segmentation.counts == g.segmentation.counts { identical += 1 }
    }
    let n = golden.annotations.count
    #expect(n - identical <= max(1, n / 4), "\(identical) of \(n) RLEs identical")
    #expect(regionFlips <= (minRegionArea > 0 ? max(1, n / 50) : 0))
  }

  @Test func writesTheOfficialRecordsAndAnOverlay() throws {
    let fixture = "tiny-l__chelsea"
    let dir = try temporaryDirectory()
    let out = dir.appendingPathComponent("chelsea.json")
    let overlay = dir.appendingPathComponent("chelsea-overlay.png")
    let result = try CLIRunner.run(
      ["everything"] + modelArguments() + settingsArguments(fixture)
        + [try Fixtures.url("images/chelsea.png").path, "-o", out.path, "--overlay", overlay.path])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stderr.contains("1 masks"), "\(result.stderr)")
    let ours = try Self.decode(out)
    try expectSameMasks(ours, try Self.golden(fixture))
    #expect(ours.size == [300, 451])
    let picture = try Data(contentsOf: overlay)
    #expect(picture.starts(with: [0x89, 0x50, 0x4E, 0x47]))
  }

  /// The decisive-mask fixtures, through the command line: the weights transform is applied
  /// to a copy of the checkpoint that the command then loads.
  @Test(arguments: ["sharp__tiny-l__coffee__grid8", "sharp__tiny-l__coffee__crops_minarea"])
  func decisiveMasksThroughTheCommandLine(_ fixture: String) throws {
    let dir = try temporaryDirectory()
    let data = try Data(contentsOf: Fixtures.url("amg/\(fixture).json"))
    let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let multiply = try #require(
      (json["weights_transform"] as? [String: Any])?["multiply"] as? [String: Double])
    var tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    for (key, factor) in multiply {
      let t = try #require(tensors[key])
      tensors[key] = Tensor(shape: t.shape, storage: t.storage.map { $0 * Float(factor) })
    }
    let weights = dir.appendingPathComponent("sharp.safetensors")
    try SafeTensors.write(tensors, to: weights)
    let out = dir.appendingPathComponent("out.json")
    let result = try CLIRunner.run(
      ["everything"] + modelArguments(checkpoint: weights) + settingsArguments(fixture)
        + [try Fixtures.url("images/coffee.png").path, "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    try expectSameMasks(
      try Self.decode(out), try Self.golden(fixture),
      minRegionArea: fixture.hasSuffix("minarea") ? 100 : 0)
  }

  @Test func foldersAreResumable() throws {
    let dir = try temporaryDirectory()
    let input = dir.appendingPathComponent("images")
    try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
    // coffee.jpg and coffee.png share a stem: each must get its own output.
    for name in ["coffee.png", "coffee.jpg", "chelsea.png"] {
      try FileManager.default.copyItem(
        at: Fixtures.url("images/\(name)"), to: input.appendingPathComponent(name))
    }
    try Data("not an image".utf8).write(to: input.appendingPathComponent("notes.txt"))
    let broken = input.appendingPathComponent("broken.png")
    try Data("not a PNG either".utf8).write(to: broken)
    let out = dir.appendingPathComponent("out")
    let overlays = dir.appendingPathComponent("overlays")
    let args =
      ["everything"] + (try modelArguments())
      + ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
      + [input.path, "-o", out.path, "--overlay", overlays.path]
    // A bad image is reported and fails the run, after the others are done.
    var result = try CLIRunner.run(args)
    #expect(result.status != 0)
    #expect(result.stderr.contains("broken.png"), "\(result.stderr)")
    #expect(result.stderr.contains("[4/4]"), "\(result.stderr)")
    #expect(result.stderr.contains("3 image(s) written"), "\(result.stderr)")
    try FileManager.default.removeItem(at: broken)
    let coffee = out.appendingPathComponent("coffee.png.json")
    let coffeeJPEG = out.appendingPathComponent("coffee.jpg.json")
    let chelsea = out.appendingPathComponent("chelsea.png.json")
    #expect(try Self.decode(coffeeJPEG).image == "coffee.jpg")
    #expect(try Self.decode(coffee).image == "coffee.png")
    let written = try FileManager.default.contentsOfDirectory(atPath: out.path)
    #expect(Set(written) == ["coffee.png.json", "coffee.jpg.json", "chelsea.png.json"])
    let before = try Data(contentsOf: coffee)
    #expect(try Self.decode(coffee).annotations.count >= 1)
    #expect(try Self.decode(chelsea).image == "chelsea.png")
    #expect(
      FileManager.default.fileExists(
        atPath: overlays.appendingPathComponent("chelsea.png.png").path))

    // A damaged output is redone, a complete one is left alone (its timings would differ).
    try Data("{\"annotations\": [".utf8).write(to: chelsea)
    result = try CLIRunner.run(args)
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stderr.contains("skipping 2 image"), "\(result.stderr)")
    #expect(try Data(contentsOf: coffee) == before)
    #expect(try Self.decode(chelsea).annotations.count >= 1)

    // Everything done: nothing to do, no model needed.
    result = try CLIRunner.run(args)
    #expect(result.status == 0 && result.stderr.contains("skipping 3 image"), "\(result.stderr)")

    // Other settings or another checkpoint must not reuse these outputs silently.
    var changed = args
    changed[changed.firstIndex(of: "--points-per-side")! + 1] = "3"
    result = try CLIRunner.run(changed)
    #expect(result.status != 0)
    #expect(result.stderr.contains("points_per_side"), "\(result.stderr)")
    #expect(result.stderr.contains("--overwrite"), "\(result.stderr)")
    #expect(try Data(contentsOf: coffee) == before)
    let copied = dir.appendingPathComponent("copy.pt")
    try FileManager.default.copyItem(
      at: Fixtures.url("models/tiny-l.pt"), to: copied)
    var otherCheckpoint = args
    otherCheckpoint[otherCheckpoint.firstIndex(of: "--checkpoint")! + 1] = copied.path
    result = try CLIRunner.run(otherCheckpoint)
    #expect(result.status != 0 && result.stderr.contains("checkpoint"), "\(result.stderr)")
    result = try CLIRunner.run(args + ["--overwrite"])
    #expect(result.status == 0)
    #expect(try Data(contentsOf: coffee) != before)
  }

  @Test func uncompressedRunsAndBinaryMasks() throws {
    let dir = try temporaryDirectory()
    let image = try Fixtures.url("images/chelsea.png").path
    let base =
      ["everything"] + (try modelArguments()) + [
        "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", image,
      ]
    let runs = dir.appendingPathComponent("runs.json")
    var result = try CLIRunner.run(base + ["-o", runs.path, "--output-mode", "uncompressed_rle"])
    #expect(result.status == 0, "\(result.stderr)")
    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: runs)) as? [String: Any])
    let records = try #require(json["annotations"] as? [[String: Any]])
    let first = try #require(records.first)
    let segmentation = try #require(first["segmentation"] as? [String: Any])
    let counts = try #require(segmentation["counts"] as? [Int])
    #expect(counts.reduce(0, +) == 300 * 451)
    #expect(
      stride(from: 1, to: counts.count, by: 2).map { counts[$0] }.reduce(0, +) == first["area"]
        as? Int)

    let masks = dir.appendingPathComponent("binary.json")
    result = try CLIRunner.run(base + ["-o", masks.path, "--output-mode", "binary-mask"])
    #expect(result.status == 0, "\(result.stderr)")
    let binary = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: masks)) as? [String: Any])
    let file = try #require(
      (binary["annotations"] as? [[String: Any]])?.first?["segmentation"] as? String)
    #expect(file == "binary_masks/0.png")  // a single image keeps the name given with -o
    #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent(file).path))
  }

  @Test(arguments: [
    (["--points-per-batch", "0"], "points_per_batch"),
    (["--output-mode", "polygons"], "output-mode"),
    (["--crop-n-layers", "1", "--crop-n-points-downscale-factor", "0"], "downscale"),
    (["--points-per-side", "0"], "points_per_side must be at least 1"),
    (["--pred-iou-thresh", "5"], "pred_iou_thresh must be in [0, 1]"),
    (["--box-nms-thresh", "2"], "box_nms_thresh"),
    (["--crop-overlap-ratio", "1"], "crop_overlap_ratio"),
    (["--stability-score-offset=-1"], "stability_score_offset"),
  ])
  func badSettingsAreRefused(_ arguments: [String], _ message: String) throws {
    let dir = try temporaryDirectory()
    let result = try CLIRunner.run(
      ["everything"] + modelArguments() + arguments
        + [
          try Fixtures.url("images/chelsea.png").path, "-o",
          dir.appendingPathComponent("x.json").path,
        ])
    #expect(result.status != 0)
    #expect(result.stderr.contains(message), "\(result.stderr)")
    // One line about this command's input, not the top-level usage.
    #expect(!result.stderr.contains("<subcommand>"), "\(result.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.json").path))
  }

  @Test func pointGridsOutsideTheUnitSquareAreRefused() throws {
    let dir = try temporaryDirectory()
    let grids = dir.appendingPathComponent("grids.json")
    try Data("[[[0.5, 0.5], [1.5, 0.2]]]".utf8).write(to: grids)
    let result = try CLIRunner.run(
      ["everything"] + modelArguments() + ["--point-grids", grids.path]
        + [
          try Fixtures.url("images/chelsea.png").path, "-o",
          dir.appendingPathComponent("x.json").path,
        ])
    #expect(result.status != 0)
    #expect(result.stderr.contains("[0, 1]"), "\(result.stderr)")
  }
}
