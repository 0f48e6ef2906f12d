import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

@Suite("Distillation: tiny-l learns tiny-sam-vit's embeddings")
struct DistillationRunTests {
  /// The fixture images and their tiny-sam-vit embeddings in a fresh cache folder.
  static func teacherCache() throws -> (images: [URL], cache: EmbeddingFolder, folder: URL) {
    let architecture = try Architecture.load(json: Fixtures.url("sam/models/tiny-sam-vit.json"))
    let checkpoint = try Fixtures.url("sam/models/tiny-sam-vit.pth")
    let tensors = try Checkpoint.load(contentsOf: checkpoint)
    let model = try SegmentAnythingModel.load(architecture: architecture, checkpoint: checkpoint)
    let identity = EncoderIdentity(model: model, name: "tiny-sam-vit", tensors: tensors)
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-teacher-\(UUID().uuidString)")
    let cache = try EmbeddingFolder(preparing: folder, for: identity)
    let images = try ["astronaut.png", "chelsea.png", "coffee.png", "coffee.jpg"].map {
      try Fixtures.url("images/\($0)")
    }
    let teacher = ModelTeacher(model: model, identity: identity)
    for image in images {
      #expect(!cache.contains(image))
      let picture = try RGBImage(contentsOf: image, applyEXIFOrientation: false)
      try cache.write(
        teacher.embedding(for: image), for: image, originalSize: (picture.height, picture.width))
      #expect(cache.contains(image))
    }
    // A folder keeps one teacher's embeddings.
    let other = EncoderIdentity(
      model: "tiny-sam-vit", weights: "0000", preprocessing: identity.preprocessing)
    #expect(throws: DistillationError.self) { try EmbeddingFolder(preparing: folder, for: other) }
    #expect(try EmbeddingFolder(opening: folder).identity == identity)
    return (images, cache, folder)
  }

  static func student() throws -> (config: ModelConfig, tensors: [String: Tensor]) {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    return (config, tensors)
  }

  /// The mean over `images` of the MSE between the student's inference embedding and the cached one.
  static func meanSquaredError(
    _ model: EfficientViTSAM, images: [URL], cache: EmbeddingFolder
  ) throws -> Double {
    var total = 0.0
    for image in images {
      let input = preprocess(
        try RGBImage(contentsOf: image, applyEXIFOrientation: false),
        targetSize: model.config.imageSize
      ).tensor
      total +=
        DistillationLoss.meanSquaredError(
          model.imageEncoder(input), target: try cache.embedding(for: image)
        ).loss
    }
    return total / Double(images.count)
  }

  static func settings(steps: Int, images: [URL], cache: EmbeddingFolder) -> DistillationSettings {
    DistillationSettings(
      steps: steps, batchSize: 1, lr: 3e-3, warmupSteps: 0, seed: 7, imageSize: 512,
      teacher: cache.identity, weights: "tiny-l", data: DistillationSettings.fingerprint(images))
  }

  @Test func theStudentHalvesItsErrorAndItsModelPtLoads() throws {
    let (images, cache, folder) = try Self.teacherCache()
    defer { try? FileManager.default.removeItem(at: folder) }
    let (config, tensors) = try Self.student()
    let before = try Self.meanSquaredError(
      EfficientViTSAM(config: config, reader: WeightReader(tensors, origin: "tiny-l")),
      images: images, cache: cache)
    let run = try DistillationRun(
      settings: Self.settings(steps: 48, images: images, cache: cache), config: config,
      tensors: tensors, images: images, teacher: cache)
    // The distillation loss (train mode, batch statistics) over the first and the last epoch.
    var losses: [Double] = []
    for _ in 0..<48 { losses.append(try run.distillStep().loss) }
    let first = losses.prefix(images.count).reduce(0, +) / Double(images.count)
    let last = losses.suffix(images.count).reduce(0, +) / Double(images.count)

    // model.pt as `evsam distill` writes it, loaded back strictly.
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let trained = run.trainedTensors
    let file = folder.appendingPathComponent("model.pt")
    try TorchWriter.archive(
      declared.map { TorchWriter.Entry(key: $0.key, tensor: trained[$0.key]!, dtype: $0.dtype) }
    ).write(to: file)
    let reloaded = try EfficientViTSAM.load(config: config, checkpoint: file)
    let after = try Self.meanSquaredError(reloaded, images: images, cache: cache)
    print(
      "distillation: MSE first epoch \(first) → last \(last); inference mode \(before) → \(after)")
    #expect(last <= 0.5 * first, "MSE \(first) → \(last)")
    // In inference mode (running BatchNorm statistics, which trail batch-1 training) the
    // reloaded student is closer to the teacher too.
    #expect(after < 0.75 * before, "inference-mode MSE \(before) → \(after)")
    // Only the encoder trains: the prompt encoder and mask decoder are the checkpoint's.
    for key in tensors.keys where !key.hasPrefix("image_encoder.") {
      #expect(trained[key] == tensors[key], "\(key) changed")
    }
  }

  @Test func aResumedRunEqualsAnUninterruptedOne() throws {
    let (images, cache, folder) = try Self.teacherCache()
    defer { try? FileManager.default.removeItem(at: folder) }
    let (config, tensors) = try Self.student()
    let settings = Self.settings(steps: 6, images: images, cache: cache)
    let straight = try DistillationRun(
      settings: settings, config: config, tensors: tensors, images: images, teacher: cache)
    var straightLosses: [Double] = []
    for _ in 0..<6 { straightLosses.append(try straight.distillStep().loss) }

    let first = try DistillationRun(
      settings: settings, config: config, tensors: tensors, images: images, teacher: cache)
    var losses: [Double] = []
    for _ in 0..<3 { losses.append(try first.distillStep().loss) }
    try first.state.write(to: folder, saveID: "3-test")
    let saved = try DistillationState.read(from: folder)

    var changed = settings
    changed.lr = 1e-3
    #expect(throws: TrainingStateError.self) {
      try DistillationRun(
        settings: changed, config: config, tensors: tensors, images: images, teacher: cache,
        resuming: saved)
    }
    let second = try DistillationRun(
      settings: settings, config: config, tensors: tensors, images: images, teacher: cache,
      resuming: saved)
    #expect(second.step == 3 && second.imagesSeen == 3)
    for _ in 0..<3 { losses.append(try second.distillStep().loss) }
    #expect(losses == straightLosses)
    let a = straight.trainedTensors
    let b = second.trainedTensors
    #expect(a.keys.filter { a[$0]!.storage != b[$0]!.storage }.isEmpty)
  }

  @Test func initialWeightsFollowPyTorchDefaults() throws {
    let (config, _) = try Self.student()
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let weights = initialWeights(declared: declared, seed: 1)
    #expect(Set(weights.keys) == Set(declared.map(\.key)))
    for d in declared {
      let t = weights[d.key]!
      #expect(t.shape == d.shape)
      if d.key.hasSuffix("running_var") { #expect(t.storage.allSatisfy { $0 == 1 }) }
      if d.key.hasSuffix("norm.weight") { #expect(t.storage.allSatisfy { $0 == 1 }) }
      if d.key.hasSuffix("conv.weight") {
        let bound = 1 / Float(d.shape.dropFirst().reduce(1, *)).squareRoot()
        #expect(t.storage.allSatisfy { abs($0) <= bound })
        #expect(Set(t.storage).count > t.count / 2)
      }
    }
    #expect(initialWeights(declared: declared, seed: 1) == weights)
  }
}
