import EVCheckpoint
import EVImage
import EVTensor
import Foundation
import TestSupport
import Testing

/// Inputs that once crashed a command or left it with a misleading message. Each must end
/// with status ≠ 0, one line on stderr that names what is wrong, and nothing written — or,
/// for odd but valid images, simply work.
@Suite struct InputErrorTests {
  func modelArguments(_ model: String = "tiny-l") throws -> [String] {
    let models = try Fixtures.url("models")
    return [
      "--config", models.appendingPathComponent("\(model).json").path,
      "--checkpoint", models.appendingPathComponent("\(model).pt").path,
    ]
  }

  func expectOneLineError(
    _ result: CLIRunner.Result, mentions: String, notWritten paths: [URL] = [],
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    #expect(result.status != 0, sourceLocation: sourceLocation)
    let message = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(
      !message.contains("\n"), "expected one line, got: \(message)", sourceLocation: sourceLocation)
    #expect(message.contains(mentions), "\(message)", sourceLocation: sourceLocation)
    #expect(!message.contains("NSCocoaErrorDomain"), "\(message)", sourceLocation: sourceLocation)
    for path in paths {
      #expect(
        !FileManager.default.fileExists(atPath: path.path), "\(path.path) was written",
        sourceLocation: sourceLocation)
    }
  }

  /// Sides that round to zero pixels at the encoder's or the prompt frame's scale (L: 512,
  /// XL: 1024) once trapped in the resize; the smallest side now rounds up to one pixel.
  @Test(arguments: [
    ("tiny-l", 1, 1025), ("tiny-l", 1025, 1), ("tiny-l", 3, 5000), ("tiny-xl", 1, 2049),
    ("tiny-l", 1, 1),
  ])
  func extremeAspectRatiosSegment(model: String, width: Int, height: Int) throws {
    let dir = try temporaryDirectory()
    let png = dir.appendingPathComponent("thin.png")
    let image = RGBImage(
      width: width, height: height,
      pixels: (0..<(width * height * 3)).map { UInt8(truncatingIfNeeded: $0 * 7) })
    try image.write(to: png)
    let out = dir.appendingPathComponent("out")
    let result = try CLIRunner.run(
      ["segment"] + modelArguments(model)
        + [png.path, "--point", "0,0", "--box", "0,0,\(width),\(height)", "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    let mask = try RGBImage(contentsOf: out.appendingPathComponent("mask_0_0.png"))
    #expect(mask.width == width && mask.height == height)

    // Everything mode with a crop layer: crops of a one-pixel side.
    let json = dir.appendingPathComponent("all.json")
    let everything = try CLIRunner.run(
      ["everything"] + modelArguments(model)
        + [
          png.path, "--points-per-side", "2", "--crop-n-layers", "1",
          "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "-o", json.path, "--quiet",
        ])
    #expect(everything.status == 0, "\(everything.stderr)")
  }

  @Test(arguments: [
    (["--point", "1e20,5"], "outside the 600×400 image"),
    (["--box", "0,0,1e308,1e308"], "outside the 600×400 image"),
    (["--point", "-1,-1"], "point 0 (-1.0, -1.0) lies outside"),
    (["--point", "600.5,10"], "outside"),
    (["--box", "-5,0,10,10"], "box 0"),
  ])
  func coordinatesOffTheImageAreRefused(arguments: [String], mentions: String) throws {
    let out = try temporaryDirectory().appendingPathComponent("out")
    let image = try Fixtures.url("images/coffee.png").path
    let result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image] + arguments + ["-o", out.path])
    expectOneLineError(result, mentions: mentions, notWritten: [out])
  }

  @Test func edgesOfTheImageAreOnIt() throws {
    let out = try temporaryDirectory().appendingPathComponent("out")
    let image = try Fixtures.url("images/coffee.png").path
    let result = try CLIRunner.run(
      ["segment"] + modelArguments()
        + [image, "--point", "600,400", "--box", "0,0,600,400", "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
  }

  @Test func misleadingFileErrors() throws {
    let tmp = try temporaryDirectory()
    let image = try Fixtures.url("images/coffee.png")
    let out = tmp.appendingPathComponent("out")

    // A PNG where logits are expected.
    var result = try CLIRunner.run(
      ["segment"] + modelArguments()
        + [image.path, "--point", "5,5", "--mask-input", image.path, "-o", out.path])
    expectOneLineError(result, mentions: "is a PNG image", notWritten: [out])

    // A mask input of the right size but the wrong shape.
    let oddShape = tmp.appendingPathComponent("odd.safetensors")
    try SafeTensors.write(["mask_input": Tensor(zeros: [4, 128, 128])], to: oddShape)
    result = try CLIRunner.run(
      ["segment"] + modelArguments()
        + [image.path, "--point", "5,5", "--mask-input", oddShape.path, "-o", out.path])
    expectOneLineError(result, mentions: "4x128x128", notWritten: [out])

    // /dev/null and a folder as the checkpoint.
    let models = try Fixtures.url("models")
    for bad in ["/dev/null", tmp.path] {
      result = try CLIRunner.run(
        [
          "segment", "--config", models.appendingPathComponent("tiny-l.json").path,
          "--checkpoint", bad, image.path, "--point", "5,5", "-o", out.path,
        ])
      expectOneLineError(result, mentions: "checkpoint \(bad) is", notWritten: [out])
    }

    // An output path where a file is in the way.
    let file = tmp.appendingPathComponent("taken")
    try Data("x".utf8).write(to: file)
    result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image.path, "--point", "5,5", "-o", file.path])
    expectOneLineError(result, mentions: "is a file")
    result = try CLIRunner.run(
      ["embed"] + modelArguments() + [
        image.path, "-o", tmp.appendingPathComponent("no/such/e.st").path,
      ])
    expectOneLineError(result, mentions: "does not exist")
  }

  @Test func infoPrintsCheckpointErrorsOnStderr() throws {
    let models = try Fixtures.url("models")
    let result = try CLIRunner.run([
      "info", "--config", models.appendingPathComponent("tiny-l.json").path, "--checkpoint",
      models.appendingPathComponent("tiny-xl.pt").path,
    ])
    #expect(result.status != 0)
    #expect(result.stdout.contains("FAILED"))
    #expect(!result.stdout.contains("missing"), "\(result.stdout)")
    #expect(result.stderr.contains("missing") || result.stderr.contains("unexpected"))
  }

  /// An earlier run's masks must not stay beside a new result.json, and a failed run must not
  /// leave half its output.
  @Test func segmentReplacesItsFolderWholeOrNotAtAll() throws {
    let tmp = try temporaryDirectory()
    let image = try Fixtures.url("images/coffee.png").path
    let out = tmp.appendingPathComponent("out")
    var result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image, "--point", "100,100", "--multimask", "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("mask_0_2.png").path))

    result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image, "--point", "100,100", "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    let names = Set(try FileManager.default.contentsOfDirectory(atPath: out.path))
    #expect(names == ["mask_0_0.png", "overlay.png", "result.json"])

    // --save-logits into a missing folder: refused before anything is written.
    let before = try Data(contentsOf: out.appendingPathComponent("result.json"))
    result = try CLIRunner.run(
      ["segment"] + modelArguments()
        + [
          image, "--point", "200,100", "--multimask", "-o", out.path, "--save-logits",
          tmp.appendingPathComponent("missing/logits.safetensors").path,
        ])
    expectOneLineError(result, mentions: "logits.safetensors")
    #expect(try Data(contentsOf: out.appendingPathComponent("result.json")) == before)
    #expect(
      !FileManager.default.fileExists(atPath: out.appendingPathComponent("mask_0_2.png").path))

    // A folder with the user's own files is not ours to replace.
    try Data("keep me".utf8).write(to: out.appendingPathComponent("notes.txt"))
    result = try CLIRunner.run(
      ["segment"] + modelArguments() + [image, "--point", "100,100", "-o", out.path])
    expectOneLineError(result, mentions: "notes.txt")
    #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("notes.txt").path))
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: tmp.path)
    #expect(!leftovers.contains { $0.contains(".partial-") }, "\(leftovers)")
  }

  @Test func negativeRunLengthsAreNamed() throws {
    let tmp = try temporaryDirectory()
    let gt = try Fixtures.url("coco/gt.json")
    let results = tmp.appendingPathComponent("results.json")
    let json = """
      [{"image_id": 1, "category_id": 1, "score": 0.9,
        "segmentation": {"size": [10, 10], "counts": [3, -5, 102]}}]
      """
    try Data(json.utf8).write(to: results)
    let result = try CLIRunner.run([
      "coco-eval", "--annotations", gt.path, "--results", results.path,
    ])
    expectOneLineError(result, mentions: "run 1 is -5")
    #expect(!result.stderr.contains("valid JSON"), "\(result.stderr)")
  }

  /// Help text wraps at the terminal's width, not where the source happened to break a line.
  @Test(arguments: [
    "segment", "everything", "bench", "bench-everything", "eval", "coco-eval", "merge",
  ])
  func helpDiscussionIsNotBrokenMidSentence(command: String) throws {
    let result = try CLIRunner.run([command, "--help"])
    #expect(result.status == 0)
    let lines = result.stdout.components(separatedBy: "\n")
    guard let end = lines.firstIndex(where: { $0.hasPrefix("USAGE:") }) else {
      Issue.record("no USAGE in \(command) --help")
      return
    }
    let overview = Array(lines[..<end])
    for (i, line) in overview.enumerated().dropLast() {
      let text = line.trimmingCharacters(in: .whitespaces)
      let next = overview[i + 1].trimmingCharacters(in: .whitespaces)
      guard !text.isEmpty, !next.isEmpty else { continue }
      // A wrapped line is filled to near the width before the next word moves down.
      #expect(line.count >= 55, "\(command) --help line \(i) is cut short: '\(line)'")
    }
  }

  @Test func evalHeaderOnceAndQuietEverywhere() throws {
    let version = try CLIRunner.run(["--version"])
    #expect(version.status == 0 && !version.stdout.isEmpty)
    for command in ["segment", "embed", "everything", "eval", "bench", "bench-everything"] {
      let help = try CLIRunner.run([command, "--help"])
      #expect(help.stdout.contains("--quiet"), "\(command) has no --quiet")
      #expect(!help.stdout.contains("--no-progress"), "\(command)")
    }
  }
}

/// A single image's output is reused only by an identical run, as a folder's are.
@Suite struct EverythingResumeTests {
  @Test func singleImageOutputMadeOtherwiseIsRefused() throws {
    let models = try Fixtures.url("models")
    let dir = try temporaryDirectory()
    let out = dir.appendingPathComponent("chelsea.json")
    let base = [
      "everything", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
      try Fixtures.url("images/chelsea.png").path, "--points-per-side", "2",
      "--stability-score-thresh", "0", "-o", out.path,
    ]
    var result = try CLIRunner.run(base + ["--pred-iou-thresh", "0"])
    #expect(result.status == 0, "\(result.stderr)")
    let first = try Data(contentsOf: out)
    result = try CLIRunner.run(base + ["--pred-iou-thresh", "0"])
    #expect(result.status == 0 && result.stderr.contains("up to date"), "\(result.stderr)")
    result = try CLIRunner.run(base + ["--pred-iou-thresh", "0.5"])
    #expect(result.status != 0)
    #expect(result.stderr.contains("pred_iou_thresh"), "\(result.stderr)")
    #expect(try Data(contentsOf: out) == first)
  }
}
