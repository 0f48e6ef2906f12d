import EVCheckpoint
import EVModel
import Foundation
import TestSupport
import Testing

/// `evsam train` on the fixture COCO set: a few steps, then a `model.pt` that loads strictly,
/// a `model.safetensors` and one log line per step.
@Suite struct TrainCommandTests {
  @Test func fineTunesAndWritesALoadableModel() throws {
    let models = try Fixtures.url("models")
    let out = try temporaryDirectory().appendingPathComponent("run")
    let result = try CLIRunner.run([
      "train", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
      "--annotations", try Fixtures.url("coco/gt.json").path,
      "--images", try Fixtures.url("images").path, "--steps", "3", "--masks-per-image", "4",
      "--lr", "1e-3", "-o", out.path,
    ])
    #expect(result.status == 0, "\(result.stderr)")
    let config = try ModelConfig.load(json: models.appendingPathComponent("tiny-l.json"))
    let trained = try EfficientViTSAM.load(
      config: config, checkpoint: out.appendingPathComponent("model.pt"))
    _ = trained
    _ = try EfficientViTSAM.load(
      config: config, checkpoint: out.appendingPathComponent("model.safetensors"))
    let lines = try String(contentsOf: out.appendingPathComponent("log.jsonl"), encoding: .utf8)
      .split(separator: "\n")
    #expect(lines.count == 3)
    for line in lines {
      let record = try #require(
        JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      #expect((record["loss"] as? Double).map { $0.isFinite && $0 > 0 } == true)
    }
    // The decoder changed; the encoder did not.
    let before = try Checkpoint.load(contentsOf: models.appendingPathComponent("tiny-l.pt"))
    let after = try Checkpoint.load(contentsOf: out.appendingPathComponent("model.pt"))
    #expect(
      after["mask_decoder.mask_tokens.weight"]!.storage
        != before["mask_decoder.mask_tokens.weight"]!.storage)
    #expect(
      after["image_encoder.norm.weight"]!.storage == before["image_encoder.norm.weight"]!.storage)
    #expect(
      after["mask_decoder.iou_prediction_head.layers.0.weight"]!.storage
        == before["mask_decoder.iou_prediction_head.layers.0.weight"]!.storage)
  }

  @Test func onlyTheEncoderCanBeFrozenSoFar() throws {
    let models = try Fixtures.url("models")
    let result = try CLIRunner.run([
      "train", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
      "--annotations", try Fixtures.url("coco/gt.json").path,
      "--images", try Fixtures.url("images").path, "--freeze", "decoder", "-o", "/tmp/unused",
    ])
    #expect(result.status != 0)
    #expect(result.stderr.contains("only --freeze encoder"), "\(result.stderr)")
  }
}
