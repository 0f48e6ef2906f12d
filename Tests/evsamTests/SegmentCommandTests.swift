import EVCheckpoint
import EVImage
import EVMask
import EVTensor
import Foundation
import TestSupport
import Testing

/// Golden prompt cases as the official implementation ran them (`golden/<model>__<image>.json`).
struct GoldenCase {
  let name: String
  let points: [[Double]]
  let labels: [Int]
  let boxes: [[Double]]
  let multimask: Bool

  static func load(_ golden: String) throws -> (image: String, cases: [GoldenCase]) {
    let data = try Data(contentsOf: Fixtures.url("golden/\(golden).json"))
    let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let image = try #require(json["image"] as? String)
    let cases = try #require(json["cases"] as? [[String: Any]]).map { c in
      var boxes = (c["boxes"] as? [[Double]]) ?? []
      if let box = c["box"] as? [Double] { boxes = [box] }
      return GoldenCase(
        name: c["name"] as! String, points: (c["points"] as? [[Double]]) ?? [],
        labels: (c["labels"] as? [Int]) ?? [], boxes: boxes, multimask: c["multimask"] as! Bool)
    }
    return (image, cases)
  }

  var arguments: [String] {
    var args: [String] = []
    for (p, l) in zip(points, labels) { args += ["--point", "\(p[0]),\(p[1]),\(l)"] }
    for b in boxes { args += ["--box", b.map { "\($0)" }.joined(separator: ",")] }
    if multimask { args.append("--multimask") }
    return args
  }
}

@Suite struct SegmentCommandTests {
  static let model = "tiny-l"

  func modelArguments() throws -> [String] {
    let models = try Fixtures.url("models")
    return [
      "--config", models.appendingPathComponent("\(Self.model).json").path,
      "--checkpoint", models.appendingPathComponent("\(Self.model).pt").path,
    ]
  }

  /// `embed` then `segment --embedding`: the same masks as encoding again; an embedding made
  /// by another encoder, or of an image of another size, is refused by name.
  @Test func segmentReusesASavedEmbedding() throws {
    let dir = try temporaryDirectory()
    let image = try Fixtures.url("images/coffee.png").path
    let file = dir.appendingPathComponent("coffee.safetensors").path
    let embedded = try CLIRunner.run(["embed"] + modelArguments() + [image, "-o", file])
    #expect(embedded.status == 0, "\(embedded.stderr)")
    let prompt = ["--point", "300,200", "--box", "100,80,420,330", "--multimask"]
    let direct = dir.appendingPathComponent("direct").path
    let reused = dir.appendingPathComponent("reused").path
    let a = try CLIRunner.run(["segment"] + modelArguments() + [image] + prompt + ["-o", direct])
    let b = try CLIRunner.run(
      ["segment"] + modelArguments() + [image, "--embedding", file] + prompt + ["-o", reused])
    #expect(a.status == 0 && b.status == 0, "\(a.stderr)\(b.stderr)")
    func masks(_ folder: String) throws -> [String] {
      let json = try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("result.json")))
      let entries = try #require((json as? [String: Any])?["masks"] as? [[String: Any]])
      return entries.map { ($0["segmentation"] as? [String: Any])?["counts"] as? String ?? "" }
    }
    #expect(try masks(direct) == masks(reused))

    let models = try Fixtures.url("models")
    let otherModel = try CLIRunner.run([
      "segment", "--config", models.appendingPathComponent("tiny-xl.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-xl.pt").path, image, "--embedding",
      file, "--point", "300,200", "-o", dir.appendingPathComponent("x").path,
    ])
    #expect(otherModel.status != 0)
    #expect(otherModel.stderr.contains("another image encoder"), "\(otherModel.stderr)")
    let otherImage = try CLIRunner.run(
      ["segment"] + modelArguments() + [
        try Fixtures.url("images/astronaut.png").path, "--embedding", file, "--point", "100,100",
        "-o", dir.appendingPathComponent("y").path,
      ])
    #expect(otherImage.status != 0)
    #expect(
      otherImage.stderr.contains("is the embedding of a 600×400 image"), "\(otherImage.stderr)")
  }

  /// `--prompts FILE.jsonl`: one folder per line, the same masks as one run per line, each
  /// image encoded once for its consecutive lines; a bad line is reported by number before any
  /// work.
  @Test func promptsFileRunsEveryLine() throws {
    let dir = try temporaryDirectory()
    let coffee = try Fixtures.url("images/coffee.png").path
    let chelsea = try Fixtures.url("images/chelsea.png").path
    let file = dir.appendingPathComponent("prompts.jsonl")
    try Data(
      """
      {"image": "\(coffee)", "points": [[300, 200]]}
      {"image": "\(coffee)", "boxes": [[100, 80, 420, 330]], "multimask": true, "name": "box"}

      {"image": "\(chelsea)", "points": [[100, 100], [50, 60]], "labels": [1, 0]}

      """.utf8
    ).write(to: file)
    let out = dir.appendingPathComponent("out")
    let run = try CLIRunner.run(
      ["segment"] + modelArguments() + ["--prompts", file.path, "-o", out.path])
    #expect(run.status == 0, "\(run.stderr)")
    let folders = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
    #expect(folders == ["1_coffee", "4_chelsea", "box"])
    func counts(_ folder: URL) throws -> [String] {
      let json = try JSONSerialization.jsonObject(
        with: Data(contentsOf: folder.appendingPathComponent("result.json")))
      let masks = try #require((json as? [String: Any])?["masks"] as? [[String: Any]])
      return masks.map { ($0["segmentation"] as? [String: Any])?["counts"] as? String ?? "" }
    }
    #expect(try counts(out.appendingPathComponent("box")).count == 3)
    let single = dir.appendingPathComponent("single")
    let one = try CLIRunner.run(
      ["segment"] + modelArguments() + [
        chelsea, "--point", "100,100,1", "--point", "50,60,0", "-o", single.path,
      ])
    #expect(one.status == 0, "\(one.stderr)")
    #expect(try counts(out.appendingPathComponent("4_chelsea")) == counts(single))

    try Data("{\"image\": \"\(coffee)\", \"points\": [[1, 1]]}\n{\"image\": 3}\n".utf8).write(
      to: file)
    let bad = try CLIRunner.run(
      ["segment"] + modelArguments() + [
        "--prompts", file.path, "-o", dir.appendingPathComponent("b").path,
      ])
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("prompts.jsonl line 2: no \"image\""), "\(bad.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("b/1_coffee").path))
  }

  @Test func embedWritesTheGoldenEmbedding() throws {
    let golden = try Fixtures.golden("tiny-l__chelsea")
    let image = try Fixtures.url("images/chelsea.png")
    let out = try temporaryDirectory().appendingPathComponent("embedding.safetensors")
    let result = try CLIRunner.run(["embed"] + modelArguments() + [image.path, "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    let written = try SafeTensors.read(contentsOf: out)
    let embedding = try #require(written["image_embeddings"])
    #expect(embedding.shape == [1, 256, 64, 64])
    #expect(relativeL2Error(embedding, try #require(golden["embedding"])) <= 1e-4)
  }

  /// Runs every golden prompt case that the CLI can express (all but the mask-input case,
  /// which is checked separately) and compares the saved logits.
  @Test(arguments: ["point1_multi", "points_fg_bg", "box", "box_point_multi", "batch_boxes"])
  func segmentSavesTheGoldenLogits(caseName: String) throws {
    let goldenName = "tiny-l__coffee"
    let golden = try Fixtures.golden(goldenName)
    let (imageName, cases) = try GoldenCase.load(goldenName)
    let c = try #require(cases.first { $0.name == caseName })
    let dir = try temporaryDirectory()
    let logitsURL = dir.appendingPathComponent("logits.safetensors")
    let image = try Fixtures.url("images/\(imageName)")
    let result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image.path] + c.arguments
        + ["-o", dir.appendingPathComponent("out").path, "--save-logits", logitsURL.path])
    #expect(result.status == 0, "\(result.stderr)")

    let saved = try SafeTensors.read(contentsOf: logitsURL)
    let iou = try #require(saved["iou_predictions"])
    let low = try #require(saved["low_res_logits"])
    let goldenIoU = try #require(golden["\(caseName).iou_predictions"])
    let goldenLow = try #require(golden["\(caseName).low_res_logits"])
    #expect(iou.count == goldenIoU.count)
    #expect(maxAbsDifference(iou.reshaped(goldenIoU.shape), goldenIoU) <= 1e-3)
    #expect(relativeL2Error(low.reshaped(goldenLow.shape), goldenLow) <= 1e-3)
    let full = try #require(saved["mask_logits"])
    #expect(full.dim(-2) == 400 && full.dim(-1) == 600)
    if let goldenFull = golden["\(caseName).mask_logits"] {
      #expect(relativeL2Error(full.reshaped(goldenFull.shape), goldenFull) <= 1e-3)
    }

    // One PNG per mask, the overlay and a result.json that lists them.
    let out = dir.appendingPathComponent("out")
    let candidates = c.multimask ? 3 : 1
    let prompts = max(c.boxes.count, 1)
    for b in 0..<prompts {
      for k in 0..<candidates {
        #expect(
          FileManager.default.fileExists(
            atPath: out.appendingPathComponent("mask_\(b)_\(k).png").path))
      }
    }
    #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("overlay.png").path))
    let json =
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: out.appendingPathComponent("result.json"))) as? [String: Any]
    let masks = try #require(json?["masks"] as? [[String: Any]])
    #expect(masks.count == prompts * candidates)
    // Each mask also as COCO compressed RLE with its box (pycocotools' toBbox), equal to its PNG.
    for entry in masks {
      let file = try #require(entry["file"] as? String)
      let png = try RGBImage(contentsOf: out.appendingPathComponent(file))
      let segmentation = try #require(entry["segmentation"] as? [String: Any])
      #expect(segmentation["size"] as? [Int] == [png.height, png.width])
      let rle = try RLE(
        compressed: try #require(segmentation["counts"] as? String), height: png.height,
        width: png.width)
      let pixels = stride(from: 0, to: png.pixels.count, by: 3).map { png.pixels[$0] > 127 }
      #expect(rle.decodeRowMajorBool() == pixels, "\(file)")
      #expect(entry["bbox"] as? [Double] == rle.boundingBox.array)
      #expect(entry["area"] as? Int == rle.area)
    }
  }

  @Test func maskInputFromAnEarlierRun() throws {
    let goldenName = "tiny-l__coffee"
    let golden = try Fixtures.golden(goldenName)
    let (imageName, cases) = try GoldenCase.load(goldenName)
    let first = try #require(cases.first { $0.name == "point1_multi" })
    let refine = try #require(cases.first { $0.name == "points_with_mask_input" })
    let dir = try temporaryDirectory()
    let image = try Fixtures.url("images/\(imageName)").path
    let firstLogits = dir.appendingPathComponent("first.safetensors").path
    var result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image] + first.arguments
        + ["-o", dir.appendingPathComponent("a").path, "--save-logits", firstLogits])
    #expect(result.status == 0, "\(result.stderr)")
    let secondLogits = dir.appendingPathComponent("second.safetensors")
    result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image] + refine.arguments
        + [
          "--mask-input", firstLogits, "-o", dir.appendingPathComponent("b").path,
          "--save-logits", secondLogits.path,
        ])
    #expect(result.status == 0, "\(result.stderr)")
    let saved = try SafeTensors.read(contentsOf: secondLogits)
    let goldenLow = try #require(golden["points_with_mask_input.low_res_logits"])
    let low = try #require(saved["low_res_logits"])
    #expect(relativeL2Error(low.reshaped(goldenLow.shape), goldenLow) <= 1e-3)
  }

  @Test(arguments: [
    (["--point", "nan,10"], "finite"),
    (["--point", "10,inf"], "finite"),
    (["--box", "50,50,10,60"], "x1"),
    (["--box", "50,50,60,10"], "y1"),
    (["--point", "10,10,2"], "label"),
  ])
  func badPromptsFailWithOneLineAndWriteNothing(arguments: [String], mentions: String) throws {
    let dir = try temporaryDirectory().appendingPathComponent("out")
    let image = try Fixtures.url("images/coffee.png").path
    let result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image] + arguments + ["-o", dir.path])
    #expect(result.status != 0)
    let message = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(!message.contains("\n"), "expected one line, got: \(message)")
    #expect(message.lowercased().contains(mentions), "\(message)")
    #expect(!FileManager.default.fileExists(atPath: dir.path))
  }

  @Test func badFilesFailWithOneLineAndWriteNothing() throws {
    let tmp = try temporaryDirectory()
    let text = tmp.appendingPathComponent("notes.png")
    try Data("not an image".utf8).write(to: text)
    let wrongMask = tmp.appendingPathComponent("mask.safetensors")
    try SafeTensors.write(["mask_input": Tensor(zeros: [1, 64, 64])], to: wrongMask)
    let models = try Fixtures.url("models")
    let image = try Fixtures.url("images/coffee.png").path
    let cases: [([String], String)] = [
      (try modelArguments() + [text.path, "--point", "1,1"], "notes.png"),
      (
        try modelArguments() + [tmp.appendingPathComponent("missing.png").path, "--point", "1,1"],
        "missing.png"
      ),
      (try modelArguments() + [image, "--mask-input", wrongMask.path], "256"),
      (
        [
          "--model", "l0", "--checkpoint", models.appendingPathComponent("tiny-l.pt").path, image,
          "--point", "1,1",
        ], "does not hold the weights of efficientvit-sam-l0"
      ),
      (
        [
          "--config", models.appendingPathComponent("tiny-l.json").path, "--checkpoint",
          models.appendingPathComponent("tiny-xl.pt").path, image, "--point", "1,1",
        ], "does not hold the weights"
      ),
    ]
    for (arguments, mentions) in cases {
      let out = tmp.appendingPathComponent("out-\(UUID().uuidString)")
      let result = try CLIRunner.run(["segment"] + arguments + ["-o", out.path])
      #expect(result.status != 0)
      let message = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(!message.contains("\n"), "expected one line, got: \(message)")
      #expect(message.contains(mentions), "\(message)")
      #expect(!FileManager.default.fileExists(atPath: out.path))
    }
  }
}
