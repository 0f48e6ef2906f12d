import EVMask
import Foundation
import TestSupport
import Testing

/// `--format` of `segment` and `everything`: every format holds the masks the command's own
/// JSON holds, read back as its readers read it.
@Suite struct ExportFormatCommandTests {
  static func json(_ url: URL) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
  }

  /// The masks of a YOLO-seg label file (Ultralytics: class, then normalised x y pairs).
  static func yoloMasks(_ url: URL, width: Int, height: Int) throws -> [(Int, [UInt8])] {
    let text = try String(contentsOf: url, encoding: .utf8)
    return try text.split(separator: "\n").map { line in
      let fields = line.split(separator: " ")
      let values = try fields.dropFirst().map { try #require(Double($0)) }
      let polygon = stride(from: 0, to: values.count, by: 2).map {
        (x: values[$0] * Double(width), y: values[$0 + 1] * Double(height))
      }
      return (
        try #require(Int(fields[0])), MaskShapes.fill([polygon], width: width, height: height)
      )
    }
  }

  @Test func segmentFormatsHoldTheBestMasks() throws {
    let dir = try temporaryDirectory()
    let image = try Fixtures.url("images/coffee.png")
    let prompt = ["--box", "100,80,420,330", "--box", "20,20,200,300", "--multimask"]
    func segment(_ format: String) throws -> URL {
      let out = dir.appendingPathComponent(format)
      let r = try CLIRunner.run(
        ["segment"] + fixtureModelArguments() + [image.path] + prompt
          + ["-o", out.path, "--format", format, "--category", "cup"])
      #expect(r.status == 0, "\(format): \(r.stderr)")
      return out
    }
    // The reference: the best candidate of each prompt in result.json.
    let sam = try Self.json(segment("sam").appendingPathComponent("result.json"))
    let masks = try #require(sam["masks"] as? [[String: Any]]).filter {
      $0["best"] as? Bool == true
    }
    #expect(masks.count == 2)
    let (height, width) = (400, 600)
    let best = try masks.map { m in
      let segmentation = try #require(m["segmentation"] as? [String: Any])
      return try RLE(
        compressed: try #require(segmentation["counts"] as? String), height: height, width: width)
    }

    let coco = try Self.json(segment("coco").appendingPathComponent("instances.json"))
    let annotations = try #require(coco["annotations"] as? [[String: Any]])
    #expect(annotations.count == 2)
    #expect((coco["categories"] as? [[String: Any]])?.map { $0["name"] as? String } == ["cup"])
    #expect((coco["images"] as? [[String: Any]])?.first?["file_name"] as? String == "coffee.png")
    for (a, mask) in zip(annotations, best) {
      let segmentation = try #require(a["segmentation"] as? [String: Any])
      #expect(segmentation["counts"] as? String == mask.compressedCounts)
      #expect(a["area"] as? Int == mask.area)
    }

    let polygons = try Self.json(segment("polygons").appendingPathComponent("instances.json"))
    for (a, mask) in zip(try #require(polygons["annotations"] as? [[String: Any]]), best) {
      let rings = try #require(a["segmentation"] as? [[Double]])
      let union = try RLE.merge(rings.map { RLE(polygon: $0, height: height, width: width) })
      #expect(union == mask, "COCO polygons read back as other pixels")
    }

    let yoloFolder = try segment("yolo-seg")
    #expect(
      try String(contentsOf: yoloFolder.appendingPathComponent("classes.txt"), encoding: .utf8)
        == "cup\n")
    let yolo = try Self.yoloMasks(
      yoloFolder.appendingPathComponent("coffee.txt"), width: width, height: height)
    #expect(yolo.count == 2)
    for ((c, filled), mask) in zip(yolo, best) {
      #expect(c == 0)
      #expect(MaskShapes.iou(filled, mask.decodeRowMajor()) >= 0.98)
    }

    let labelmeFolder = try segment("labelme")
    let labelme = try Self.json(labelmeFolder.appendingPathComponent("coffee.json"))
    let imagePath = try #require(labelme["imagePath"] as? String)
    #expect(
      URL(fileURLWithPath: imagePath, relativeTo: labelmeFolder).standardizedFileURL.path
        == image.standardizedFileURL.path)
    let shapes = try #require(labelme["shapes"] as? [[String: Any]])
    for (group, mask) in best.enumerated() {
      var union = [UInt8](repeating: 0, count: width * height)
      for shape in shapes where shape["group_id"] as? Int == group + 1 {
        #expect(shape["label"] as? String == "cup")
        let points = try #require(shape["points"] as? [[Double]]).map { (x: $0[0], y: $0[1]) }
        let filled = MaskShapes.fill([points], width: width, height: height)
        for i in union.indices { union[i] |= filled[i] }
      }
      #expect(MaskShapes.iou(union, mask.decodeRowMajor()) >= 0.98)
    }

    let png = try FileManager.default.contentsOfDirectory(atPath: segment("png").path).sorted()
    #expect(png == (0..<2).flatMap { b in (0..<3).map { "mask_\(b)_\($0).png" } } + ["overlay.png"])
  }

  @Test func everythingExportsAFolder() throws {
    let dir = try temporaryDirectory()
    let input = dir.appendingPathComponent("images")
    try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
    for name in ["coffee.jpg", "chelsea.png"] {
      try FileManager.default.copyItem(
        at: try Fixtures.url("images/\(name)"), to: input.appendingPathComponent(name))
    }
    let out = dir.appendingPathComponent("out")
    // Random weights: keep every mask, so that there is something to export.
    let settings = [
      "--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
    ]
    func everything(_ format: String) throws -> CLIRunner.Result {
      let r = try CLIRunner.run(
        ["everything"] + fixtureModelArguments() + settings
          + [input.path, "-o", out.path, "--format", format])
      #expect(r.status == 0, "\(format): \(r.stderr)")
      return r
    }
    _ = try everything("coco")
    let coco = try Self.json(out.appendingPathComponent("instances.json"))
    let images = try #require(coco["images"] as? [[String: Any]])
    #expect(images.map { $0["file_name"] as? String } == ["chelsea.png", "coffee.jpg"])
    let annotations = try #require(coco["annotations"] as? [[String: Any]])
    var expected: [RLE] = []
    for name in ["chelsea.png", "coffee.jpg"] {
      let perImage = try Self.json(out.appendingPathComponent(name + ".json"))
      for record in try #require(perImage["annotations"] as? [[String: Any]]) {
        let segmentation = try #require(record["segmentation"] as? [String: Any])
        let size = try #require(segmentation["size"] as? [Int])
        expected.append(
          try RLE(
            compressed: try #require(segmentation["counts"] as? String), height: size[0],
            width: size[1]))
      }
    }
    #expect(!expected.isEmpty && annotations.count == expected.filter { $0.area > 0 }.count)
    for (a, mask) in zip(annotations, expected.filter { $0.area > 0 }) {
      #expect((a["segmentation"] as? [String: Any])?["counts"] as? String == mask.compressedCounts)
    }

    // A second run with another format reuses the per-image results.
    let yolo = try everything("yolo-seg")
    #expect(yolo.stderr.contains("skipping 2 image(s)"), "\(yolo.stderr)")
    let labels = out.appendingPathComponent("labels")
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: labels.path).sorted()
        == ["chelsea.txt", "classes.txt", "coffee.txt"])
    let coffeeLines = try Self.yoloMasks(
      labels.appendingPathComponent("coffee.txt"), width: 600, height: 400)
    let coffeeMasks = expected.filter { $0.width == 600 && $0.area > 0 }
    #expect(coffeeLines.count == coffeeMasks.count)
    for ((_, filled), mask) in zip(coffeeLines, coffeeMasks) {
      #expect(MaskShapes.iou(filled, mask.decodeRowMajor()) >= 0.98)
    }
  }

  @Test func promptsFileMakesOneSet() throws {
    let dir = try temporaryDirectory()
    let coffee = try Fixtures.url("images/coffee.png").path
    let chelsea = try Fixtures.url("images/chelsea.png").path
    let file = dir.appendingPathComponent("prompts.jsonl")
    try Data(
      """
      {"image": "\(coffee)", "points": [[300, 200]], "category": "cup"}
      {"image": "\(coffee)", "boxes": [[100, 80, 420, 330]]}
      {"image": "\(chelsea)", "points": [[100, 100]], "category": "cat"}

      """.utf8
    ).write(to: file)
    let out = dir.appendingPathComponent("set")
    let r = try CLIRunner.run(
      ["segment"] + fixtureModelArguments()
        + ["--prompts", file.path, "-o", out.path, "--format", "coco"])
    #expect(r.status == 0, "\(r.stderr)")
    let coco = try Self.json(out.appendingPathComponent("instances.json"))
    #expect(
      (coco["categories"] as? [[String: Any]])?.map { $0["name"] as? String }
        == ["cup", "object", "cat"])
    #expect((coco["images"] as? [Any])?.count == 2)
    let annotations = try #require(coco["annotations"] as? [[String: Any]])
    #expect(annotations.map { $0["image_id"] as? Int } == [1, 1, 2])
    #expect(annotations.map { $0["category_id"] as? Int } == [1, 2, 3])
  }
}
