import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// Every fast decoder schedule against the plain decoder (`ReferenceMaskDecoder`: SAM's
/// `mask_decoder.py` and `transformer.py` on the `Reference` ops): folded or not, with the
/// per-image cache or without it, and the official call order, on the golden prompts (with and
/// without a mask input) and on seeded prompts of 1 to 20 tokens. They must agree to 1e-5
/// relative L2 — float rounding, nothing more.
@Suite struct DecoderOracleTests {
  static let bound = 1e-5

  struct Setup {
    let folded: DecoderModel
    let unfolded: DecoderModel
    let oracle: ReferenceMaskDecoder
    let embedding: Tensor

    init(_ model: String, image: GoldenImage) throws {
      folded = try DecoderModel.load(model)
      unfolded = try DecoderModel.load(model, foldedTokenLimit: 0)
      let all =
        model == "tiny-l"
        ? try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
        : try Checkpoint.load(contentsOf: Fixtures.url("models/\(model).pt"))
      let reader = WeightReader(
        all.filter { $0.key.hasPrefix("mask_decoder.") }, origin: "\(model) mask_decoder")
      oracle = ReferenceMaskDecoder(reader.root["mask_decoder"])
      // The oracle reads exactly the decoder's keys, no more and no fewer.
      try reader.finish()
      embedding = try #require(image.golden["embedding"])
    }

    /// Decodes `prompts` with every schedule and compares each with the oracle.
    func check(_ prompts: PromptEmbeddings, multimask: Bool, _ label: String) {
      let pe = folded.promptEncoder.getDensePE()
      let expected = oracle(
        imageEmbedding: embedding, imagePE: pe, sparse: prompts.sparse,
        dense: prompts.dense.materialized(batch: prompts.batchSize), multimask: multimask)
      let uncached = { (model: DecoderModel) in
        model.maskDecoder.prepare(imageEmbedding: embedding, imagePE: pe, noMaskEmbedding: nil)
      }
      let schedules: [(String, MaskDecoderOutput)] = [
        (
          "folded, cached",
          folded.maskDecoder.decode(
            folded.prepare(embedding), prompts: prompts, multimask: multimask)
        ),
        (
          "folded, uncached",
          folded.maskDecoder.decode(uncached(folded), prompts: prompts, multimask: multimask)
        ),
        (
          "unfolded, cached",
          unfolded.maskDecoder.decode(
            unfolded.prepare(embedding), prompts: prompts, multimask: multimask)
        ),
        (
          "unfolded, uncached",
          unfolded.maskDecoder.decode(uncached(unfolded), prompts: prompts, multimask: multimask)
        ),
        (
          "official order",
          folded.maskDecoder(
            imageEmbeddings: embedding, imagePE: pe, sparsePromptEmbeddings: prompts.sparse,
            densePromptEmbeddings: prompts.dense, multimaskOutput: multimask)
        ),
      ]
      for (name, out) in schedules {
        #expect(out.masks.shape == expected.masks.shape, "\(label) [\(name)]")
        let maskError = relativeL2Error(out.masks, expected.masks)
        let iouError = relativeL2Error(
          out.iouPredictions.reshaped([-1]), expected.iouPredictions.reshaped([-1]))
        #expect(maskError <= DecoderOracleTests.bound, "\(label) [\(name)]: masks \(maskError)")
        #expect(iouError <= DecoderOracleTests.bound, "\(label) [\(name)]: IoU \(iouError)")
      }
    }
  }

  @Test(arguments: ["tiny-l__coffee", "tiny-xl__chelsea"])
  func goldenPromptsMatchTheOracle(file: String) throws {
    let image = try GoldenImage(file)
    let setup = try Setup(String(file.prefix { $0 != "_" }), image: image)
    #expect(image.cases.count == 6)
    for c in image.cases {
      let inputs = try image.prompts(c)
      let prompts = setup.folded.promptEncoder(
        points: inputs.points, boxes: inputs.boxes, masks: inputs.masks)
      setup.check(prompts, multimask: c.multimask, "\(file) \(c.name)")
    }
  }

  /// Seeded prompts: 1 to 20 tokens (5 output tokens, points, box corners or the padding
  /// point), mixed labels, with and without a box, some with a random mask input.
  @Test func seededPromptsMatchTheOracle() throws {
    let file = "tiny-l__astronaut"
    let image = try GoldenImage(file)
    let setup = try Setup("tiny-l", image: image)
    var rng = Fuzz.Generator(seed: 22)
    for (points, withBox, withMask) in [
      (0, true, false), (1, false, true), (4, true, false), (9, true, true), (10, false, false),
      (14, true, false),
    ] {
      var coords: Tensor?
      var labels: [Int] = []
      if points > 0 {
        coords = Tensor(
          shape: [1, points, 2],
          storage: (0..<(2 * points)).map { _ in Float.random(in: 0..<1024, using: &rng) })
        labels = (0..<points).map { _ in Int.random(in: 0...1, using: &rng) }
      }
      let box: Tensor? =
        withBox
        ? Tensor(
          shape: [1, 4],
          storage: [
            Float.random(in: 0..<400, using: &rng), Float.random(in: 0..<400, using: &rng),
            Float.random(in: 500..<1024, using: &rng), Float.random(in: 500..<1024, using: &rng),
          ]) : nil
      let mask: Tensor? =
        withMask
        ? Tensor(
          shape: [1, 1, 256, 256],
          storage: (0..<(256 * 256)).map { _ in Float.random(in: -8...8, using: &rng) }) : nil
      let prompts = setup.folded.promptEncoder(
        points: coords.map { ($0, labels) }, boxes: box, masks: mask)
      let multimask = Bool.random(using: &rng)
      setup.check(
        prompts, multimask: multimask,
        "\(file): \(points) points, box \(withBox), mask \(withMask), tokens \(prompts.sparse.shape[1] + 5)"
      )
    }
  }
}
