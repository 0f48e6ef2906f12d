import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The trainer against the official training step of `train/step.*` (the official
/// `efficientvit/samcore` trainer on `tiny-l`, train mode): the encoder on the tape, the
/// loss from the written-out point draws, the 22 gradients, the parameters after AdamW, the
/// BatchNorm running statistics, and the distillation step.
@Suite struct TrainingStepGoldenTests {
  struct Setup {
    let config: ModelConfig
    let tensors: [String: Tensor]
    let step: [String: Tensor]
    let picked: [String]
    let images: [Tensor]
    let embeddings: [Tensor]

    init() throws {
      config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
      tensors = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      step = try SafeTensors.read(contentsOf: Fixtures.url("train/step.safetensors"))
      let json = try #require(
        JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("train/step.json")))
          as? [String: Any])
      picked = try #require(json["picked_parameters"] as? [String])
      let goldens = try ["tiny-l__astronaut", "tiny-l__chelsea"].map { try Fixtures.golden($0) }
      images = try goldens.map { try #require($0["input"]) }
      embeddings = try goldens.map { try #require($0["embedding"]) }
    }

    func trainer() -> Trainer {
      var settings = Trainer.Settings()
      settings.lr = 1e-4
      settings.steps = 1000
      return Trainer(config: config, tensors: tensors, settings: settings)
    }

    /// Image 0 prompted by its masks' boxes, image 1 by 3 positive points per mask.
    func batch() throws -> [Trainer.Example] {
      let masks = try #require(step["masks"])  // [2, 2, 512, 512], 0/1
      let side = masks.dim(-1)
      let perImage = masks.dim(1) * side * side
      func targets(_ b: Int) -> Tensor {
        Tensor(
          shape: [masks.dim(1), side, side],
          storage: Array(masks.storage[(b * perImage)..<((b + 1) * perImage)]))
      }
      let boxes = try #require(step["boxes_xyxy_1024"])
      let points = try #require(step["points_xy_1024"])
      return [
        Trainer.Example(
          image: images[0].reshaped([3, side, side]), prompts: .boxes(boxes),
          targets: targets(0)),
        Trainer.Example(
          image: images[1].reshaped([3, side, side]), prompts: .points(points),
          targets: targets(1)),
      ]
    }

    func randomness() throws -> Trainer.Randomness {
      Trainer.Randomness(
        multimask: true,
        draws: try (0..<3).map { i in
          MaskLoss.Draws(
            oversampled: try #require(step["rand_oversampled.\(i)"]).storage,
            extra: try #require(step["rand_extra.\(i)"]).storage)
        }, selectionLogits: step["low_res_logits"])
    }
  }

  /// In eval mode the tape's encoder computes what the inference encoder does: on the
  /// golden input for `tiny-l`, on a seeded random image for `tiny-xl` (whose golden files
  /// keep no input).
  @Test(arguments: ["tiny-l", "tiny-xl"])
  func evalModeEncoderEqualsTheInferencePath(_ model: String) throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/\(model).json"))
    let tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/\(model).pt"))
    let golden = try Fixtures.golden("\(model)__chelsea")
    let side = config.imageSize
    var rng = Fuzz.Generator(seed: 9)
    let input =
      golden["input"]
      ?? Tensor(
        shape: [1, 3, side, side],
        storage: (0..<(3 * side * side)).map { _ in Float.random(in: -2...2, using: &rng) })
    let parameters = Parameters(tensors) { _ in false }
    let out = EncoderGraph(config: config, parameters: parameters)(
      Tape(), Variable(input), training: false)
    if golden["input"] != nil {
      let expected = try #require(golden["embedding"])
      #expect(relativeL2Error(out.value, expected) <= 1e-4)
    }
    let reader = WeightReader(tensors, origin: model)
    let inference = ImageEncoder(config: config, reader.root["image_encoder"])
    #expect(relativeL2Error(out.value, inference(input)) <= 1e-4)
  }

  @Test func reproducesTheOfficialStep() throws {
    let s = try Setup()
    let trainer = s.trainer()
    let forward = trainer.computeGradients(try s.batch(), randomness: try s.randomness())
    let loss = Double(try #require(s.step["loss"]).storage[0])
    #expect(abs(forward.loss - loss) <= 1e-4 * abs(loss), "loss \(forward.loss) vs \(loss)")
    let logits = try #require(s.step["low_res_logits"])
    #expect(relativeL2Error(forward.logits.reshaped(logits.shape), logits) <= 1e-4)
    let gradients = trainer.parameters.gradients
    for key in s.picked {
      let expected = try #require(s.step["grad.\(key)"])
      let ours = try #require(gradients[key], "no gradient for \(key)")
      let error = relativeL2Error(ours.reshaped(expected.shape), expected)
      #expect(error <= 1e-4, "gradient of \(key): relative L2 \(error)")
    }
    trainer.applyGradients()
    let after = trainer.parameters.tensors
    for (name, expected) in s.step where name.hasPrefix("after_step.") {
      let key = String(name.dropFirst("after_step.".count))
      let ours = try #require(after[key])
      let error = relativeL2Error(ours.reshaped(expected.shape), expected)
      #expect(error <= 1e-4, "\(key) after the step: relative L2 \(error)")
    }
    // The IoU head is not trained.
    #expect(trainer.parameters["mask_decoder.iou_prediction_head.layers.0.weight"].grad == nil)
  }

  /// Distillation, as the golden file takes it after the training step: the train-mode
  /// embedding of the updated model against the eval-mode golden one (the teacher's stand-in),
  /// mean squared error, and its gradients.
  @Test func reproducesTheDistillationStep() throws {
    let s = try Setup()
    let trainer = s.trainer()
    trainer.step(try s.batch(), randomness: try s.randomness())
    let side = s.config.imageSize
    let distiller = Distiller(
      config: s.config, tensors: trainer.parameters.tensors, settings: Distiller.Settings())
    let loss = distiller.computeGradients(
      images: Tensor(shape: [2, 3, side, side], storage: s.images.flatMap(\.storage)),
      targets: Tensor(shape: [2, 256, 64, 64], storage: s.embeddings.flatMap(\.storage)))
    let expected = Double(try #require(s.step["distill.loss"]).storage[0])
    #expect(abs(loss - expected) <= 1e-4 * abs(expected), "\(loss) vs \(expected)")
    for (name, golden) in s.step where name.hasPrefix("distill.grad.") {
      let key = String(name.dropFirst("distill.grad.".count))
      let ours = try #require(distiller.parameters[key].grad)
      let error = relativeL2Error(Tensor(shape: golden.shape, storage: ours), golden)
      #expect(error <= 1e-4, "distillation gradient of \(key): relative L2 \(error)")
    }
    // A full step moves the encoder and only the encoder.
    let before = distiller.parameters.tensors
    distiller.step(
      images: Tensor(shape: [2, 3, side, side], storage: s.images.flatMap(\.storage)),
      targets: Tensor(shape: [2, 256, 64, 64], storage: s.embeddings.flatMap(\.storage)))
    #expect(distiller.parameters.variables.keys.allSatisfy { $0.hasPrefix("image_encoder.") })
    #expect(
      distiller.parameters["image_encoder.norm.weight"].value != before["image_encoder.norm.weight"]
    )
  }
}
