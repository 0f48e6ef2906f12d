import EVCheckpoint
import EVMask
import EVModel
import Foundation
import TestSupport
import Testing

/// `evsam train` on the fixtures: the files of a run, dataset folders, epochs, batches and
/// validation, the option errors, and a run stopped by Ctrl-C and resumed.
@Suite struct TrainCommandTests {
  static func modelArguments() throws -> [String] {
    let models = try Fixtures.url("models")
    return [
      "train", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
    ]
  }

  static func cocoArguments() throws -> [String] {
    try modelArguments() + [
      "--annotations", Fixtures.url("coco/gt.json").path, "--images", Fixtures.url("images").path,
    ]
  }

  /// The state's tensors file that `state.json` names (exactly one is left in the folder).
  static func stateTensors(_ folder: URL) throws -> URL {
    let json = try JSONSerialization.jsonObject(
      with: Data(contentsOf: folder.appendingPathComponent("state.json")))
    let name = try #require((json as? [String: Any])?["tensors"] as? String)
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
      $0.hasPrefix("state-") && $0 != name
    }
    #expect(leftovers.isEmpty, "files of earlier saves are left: \(leftovers)")
    return folder.appendingPathComponent(name)
  }

  static func records(_ folder: URL) throws -> [[String: Any]] {
    try String(contentsOf: folder.appendingPathComponent("log.jsonl"), encoding: .utf8)
      .split(separator: "\n").map {
        try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
      }
  }

  @Test func fineTunesAndWritesALoadableModel() throws {
    let models = try Fixtures.url("models")
    let out = try temporaryDirectory().appendingPathComponent("run")
    let result = try CLIRunner.run(
      try Self.cocoArguments() + [
        "--steps", "3", "--masks-per-image", "4", "--lr", "1e-3", "-o", out.path,
      ])
    #expect(result.status == 0, "\(result.stderr)")
    let config = try ModelConfig.load(json: models.appendingPathComponent("tiny-l.json"))
    _ = try EfficientViTSAM.load(config: config, checkpoint: out.appendingPathComponent("model.pt"))
    _ = try EfficientViTSAM.load(
      config: config, checkpoint: out.appendingPathComponent("model.safetensors"))
    let records = try Self.records(out)
    #expect(records.count == 3)
    for record in records {
      #expect((record["loss"] as? Double).map { $0.isFinite && $0 > 0 } == true)
      #expect(record["val_miou"] == nil, "no validation without --val-fraction")
    }
    for file in ["loss.png", "state.json"] {
      #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path))
    }
    #expect(FileManager.default.fileExists(atPath: try Self.stateTensors(out).path))
    // The whole model trained (the encoder's BatchNorm statistics moved too); the IoU head
    // did not, as in the official recipe.
    let before = try Checkpoint.load(contentsOf: models.appendingPathComponent("tiny-l.pt"))
    let after = try Checkpoint.load(contentsOf: out.appendingPathComponent("model.pt"))
    for key in [
      "mask_decoder.mask_tokens.weight", "image_encoder.norm.weight",
      "image_encoder.backbone.stages.0.op_list.0.norm.running_mean",
      "prompt_encoder.point_embeddings.2.weight",
    ] {
      #expect(after[key]!.storage != before[key]!.storage, "\(key) did not change")
    }
    #expect(
      after["mask_decoder.iou_prediction_head.layers.0.weight"]!.storage
        == before["mask_decoder.iou_prediction_head.layers.0.weight"]!.storage)

    // The folder now holds a run: a new one is not started over it.
    let again = try CLIRunner.run(try Self.cocoArguments() + ["--steps", "3", "-o", out.path])
    #expect(again.status != 0)
    #expect(again.stderr.contains("already holds a training run"), "\(again.stderr)")
  }

  /// An SA-1B folder as released (one JPEG and one JSON per image), two epochs of batches of
  /// two with a third of the images validating: 1 training image → 2 steps, both logged with
  /// the validation mIoU only at the end.
  @Test func trainsOnAnSA1BFolderByEpochsWithValidation() throws {
    let data = try temporaryDirectory()
    let images = [("astronaut", 512, 512), ("chelsea", 451, 300)]
    for (i, (name, width, height)) in images.enumerated() {
      let stem = "sa_\(i + 1)"
      try FileManager.default.copyItem(
        at: Fixtures.url("images/\(name).png"), to: data.appendingPathComponent("\(stem).png"))
      let boxes = [
        BoxXYWH(x: 40, y: 30, width: 120, height: 90),
        BoxXYWH(x: 200, y: 100, width: 80, height: 150),
      ]
      let annotations: [[String: Any]] = boxes.enumerated().map { j, box in
        let rle = RLE(box: box, height: height, width: width)
        return [
          "id": j, "bbox": box.array, "area": rle.area, "point_coords": [[box.x + 5, box.y + 5]],
          "segmentation": ["size": [height, width], "counts": rle.compressedCounts],
        ]
      }
      let json: [String: Any] = [
        "image": ["image_id": i + 1, "width": width, "height": height, "file_name": "\(stem).png"],
        "annotations": annotations,
      ]
      try JSONSerialization.data(withJSONObject: json).write(
        to: data.appendingPathComponent("\(stem).json"))
    }
    let out = try temporaryDirectory().appendingPathComponent("run")
    let result = try CLIRunner.run(
      try Self.modelArguments() + [
        "--data", data.path, "--epochs", "2", "--batch-size", "1", "--masks-per-image", "2",
        "--val-fraction", "0.5", "-o", out.path,
      ])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stderr.contains("val mIoU"), "\(result.stderr)")
    let records = try Self.records(out)
    #expect(records.map { $0["step"] as? Int } == [1, 2])
    #expect(records[0]["val_miou"] == nil)
    let miou = try #require(records[1]["val_miou"] as? Double)
    #expect(miou >= 0 && miou <= 1)
  }

  /// `--freeze` keeps the parts it names: their tensors (and BatchNorm statistics) are
  /// written back unchanged; with `--iou-loss mse` the IoU head trains too (here with the
  /// focal point loss).
  @Test func frozenPartsStayAsTheyWere() throws {
    let models = try Fixtures.url("models")
    let out = try temporaryDirectory().appendingPathComponent("frozen")
    let result = try CLIRunner.run(
      try Self.cocoArguments() + [
        "--steps", "1", "--masks-per-image", "2", "--freeze", "encoder,prompt-encoder",
        "--loss", "focal", "--iou-loss", "mse", "-o", out.path,
      ])
    #expect(result.status == 0, "\(result.stderr)")
    let before = try Checkpoint.load(contentsOf: models.appendingPathComponent("tiny-l.pt"))
    let after = try Checkpoint.load(contentsOf: out.appendingPathComponent("model.pt"))
    for (key, value) in before {
      let same = after[key]!.storage == value.storage
      if key.hasPrefix("image_encoder.") || key.hasPrefix("prompt_encoder.") {
        #expect(same, "\(key) changed though frozen")
      }
    }
    for key in [
      "mask_decoder.mask_tokens.weight", "mask_decoder.iou_prediction_head.layers.0.weight",
    ] {
      #expect(after[key]!.storage != before[key]!.storage, "\(key) did not change")
    }
  }

  @Test func optionErrorsAreClear() throws {
    let cases: [([String], String)] = [
      (["--freeze", "encoder,decoder", "--freeze", "prompt-encoder"], "nothing would train"),
      (["--freeze", "head"], "--freeze"),
      (["--steps", "3", "--epochs", "1"], "either --steps or --epochs"),
      (["--batch-size", "0"], "--batch-size must be at least 1"),
      (["--val-fraction", "1"], "--val-fraction must be at least 0 and below 1"),
      (["--val-fraction", "0.9", "--steps", "1"], "leaves none to train on"),
    ]
    for (extra, message) in cases {
      let result = try CLIRunner.run(
        try Self.cocoArguments() + extra + [
          "-o", try temporaryDirectory().appendingPathComponent("x").path,
        ])
      #expect(result.status != 0)
      #expect(result.stderr.contains(message), "\(extra): \(result.stderr)")
    }
    let empty = try temporaryDirectory()
    let result = try CLIRunner.run(
      try Self.modelArguments() + ["--data", empty.path, "-o", "/tmp/unused"])
    #expect(result.stderr.contains("\(empty.path) is empty"), "\(result.stderr)")
  }

  /// Ctrl-C after the first save: the step finishes, the state and the model are saved, the
  /// exit status is 130; `--resume` then ends with the same model, byte for byte, as a run
  /// that was never stopped. Other settings are refused by name.
  @Test func ctrlCSavesAndResumeContinuesBitForBit() throws {
    let common =
      try Self.cocoArguments() + [
        "--steps", "4", "--batch-size", "2", "--masks-per-image", "1", "--lr", "1e-3", "--seed",
        "3",
      ]
    let straight = try temporaryDirectory().appendingPathComponent("straight")
    let full = try CLIRunner.run(common + ["-o", straight.path])
    #expect(full.status == 0, "\(full.stderr)")

    let stopped = try temporaryDirectory().appendingPathComponent("stopped")
    let process = Process()
    process.executableURL = try CLIRunner.binary
    process.arguments = common + ["--save-every", "1", "-o", stopped.path]
    let err = Pipe()
    process.standardError = err
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let state = stopped.appendingPathComponent("state.json")
    let deadline = Date().addingTimeInterval(120)
    while !FileManager.default.fileExists(atPath: state.path) && Date() < deadline {
      Thread.sleep(forTimeInterval: 0.05)
    }
    process.interrupt()
    let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 130, "\(stderr)")
    #expect(stderr.contains("--resume \(stopped.path)"), "\(stderr)")
    let steps = try Self.records(stopped).count
    #expect(steps >= 1 && steps < 4, "stopped after step \(steps)")

    let refused = try CLIRunner.run(common + ["--seed", "4", "--resume", stopped.path])
    #expect(refused.status != 0)
    #expect(refused.stderr.contains("--seed (saved 3, now 4)"), "\(refused.stderr)")

    let resumed = try CLIRunner.run(common + ["--resume", stopped.path])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    for file in ["model.safetensors", "model.pt"] {
      let a = try Data(contentsOf: straight.appendingPathComponent(file))
      let b = try Data(contentsOf: stopped.appendingPathComponent(file))
      #expect(a == b, "\(file) differs after stopping at step \(steps) and resuming")
    }
    // The optimiser's moments too (the state files differ only in their save id).
    let a = try Checkpoint.load(contentsOf: Self.stateTensors(straight))
    let b = try Checkpoint.load(contentsOf: Self.stateTensors(stopped))
    #expect(a.keys.sorted() == b.keys.sorted())
    #expect(a.keys.allSatisfy { a[$0]!.storage == b[$0]!.storage })
    let losses = { (folder: URL) in try Self.records(folder).map { $0["loss"] as? Double } }
    #expect(try losses(straight) == losses(stopped))
  }
}
