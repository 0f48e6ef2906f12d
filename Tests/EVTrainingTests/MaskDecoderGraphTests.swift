import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The trainer's decoder (on the tape) against the plain oracle and the official outputs, and
/// its parameter gradients against central differences.
@Suite struct MaskDecoderGraphTests {
  struct Setup {
    let parameters: Parameters
    let oracle: ReferenceMaskDecoder
    let promptEncoder: PromptEncoder
    let embedding: Tensor
    let golden: [String: Tensor]

    init() throws {
      let all = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      let decoder = all.filter { $0.key.hasPrefix("mask_decoder.") }
      parameters = Parameters(decoder) { !$0.contains("iou_prediction_head") }
      let reader = WeightReader(decoder, origin: "tiny-l mask_decoder")
      oracle = ReferenceMaskDecoder(reader.root["mask_decoder"])
      let promptReader = WeightReader(
        all.filter { $0.key.hasPrefix("prompt_encoder.") }, origin: "tiny-l prompt_encoder")
      promptEncoder = PromptEncoder(promptReader.root["prompt_encoder"])
      golden = try Fixtures.golden("tiny-l__coffee")
      embedding = try #require(golden["embedding"])
    }

    /// The golden `box` case's prompt embeddings (box 150,20,460,250 ... from the json).
    func boxPrompt() throws -> PromptEmbeddings {
      let json = try #require(
        JSONSerialization.jsonObject(
          with: Data(contentsOf: Fixtures.url("golden/tiny-l__coffee.json"))) as? [String: Any])
      let cases = try #require(json["cases"] as? [[String: Any]])
      let box = try #require(cases.first { $0["name"] as? String == "box" }?["box"] as? [Double])
      let original = try #require(json["original_size"] as? [Int])
      let input = try #require(json["input_size"] as? [Int])
      let sx = Double(input[1]) / Double(original[1])
      let sy = Double(input[0]) / Double(original[0])
      let corners = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy].map { Float($0) }
      return promptEncoder(points: nil, boxes: Tensor(shape: [1, 4], storage: corners), masks: nil)
    }
  }

  @Test func evalForwardEqualsTheOracleAndTheGolden() throws {
    let s = try Setup()
    let prompts = try s.boxPrompt()
    let dense = prompts.dense.materialized(batch: 1)
    let expected = s.oracle(
      imageEmbedding: s.embedding, imagePE: s.promptEncoder.getDensePE(), sparse: prompts.sparse,
      dense: dense, multimask: false)
    let tape = Tape()
    let out = MaskDecoderGraph(parameters: s.parameters)(
      tape, imageEmbedding: Variable(s.embedding), imagePE: s.promptEncoder.getDensePE(),
      sparse: Variable(prompts.sparse), dense: Variable(dense), multimask: false)
    #expect(relativeL2Error(out.masks.value, expected.masks) <= 1e-6)
    #expect(relativeL2Error(out.iouPredictions.value, expected.iouPredictions) <= 1e-6)
    let goldenLogits = try #require(s.golden["box.low_res_logits"])
    #expect(relativeL2Error(out.masks.value.reshaped(goldenLogits.shape), goldenLogits) <= 1e-3)
  }

  /// A few parameters from each part of the decoder, through `L = Σ r·masks`.
  @Test func parameterGradientsMatchFiniteDifferences() throws {
    let s = try Setup()
    let prompts = try s.boxPrompt()
    let dense = prompts.dense.materialized(batch: 1)
    let graph = MaskDecoderGraph(parameters: s.parameters)
    var rng = Fuzz.Generator(seed: 5)
    let r = (0..<(3 * 256 * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
    func run(_ tape: Tape) -> Variable {
      graph(
        tape, imageEmbedding: Variable(s.embedding), imagePE: s.promptEncoder.getDensePE(),
        sparse: Variable(prompts.sparse), dense: Variable(dense), multimask: true
      ).masks
    }
    let tape = Tape()
    let masks = run(tape)
    tape.backward(from: masks, gradient: r)
    let picks: [(String, Int)] = [
      ("mask_decoder.output_upscaling.1.bias", 7),
      ("mask_decoder.output_hypernetworks_mlps.2.layers.2.bias", 3),
      ("mask_decoder.transformer.layers.1.cross_attn_image_to_token.v_proj.bias", 5),
      ("mask_decoder.transformer.layers.0.self_attn.q_proj.weight", 1000),
    ]
    for (key, index) in picks {
      let v = s.parameters[key]
      let analytic = Double(try #require(v.grad)[index])
      let original = v.value.storage[index]
      let step: Float = 5e-3
      func objective() -> Double {
        zip(run(Tape()).value.storage, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
      }
      v.value.storage[index] = original + step
      let plus = objective()
      v.value.storage[index] = original - step
      let minus = objective()
      v.value.storage[index] = original
      let numeric = (plus - minus) / (Double(original + step) - Double(original - step))
      #expect(
        abs(numeric - analytic) <= 2e-2 * max(abs(numeric), 1e-2),
        "\(key)[\(index)]: analytic \(analytic), numeric \(numeric)")
    }
    // The token path, along the gradient of one mask token (a larger signal than one entry,
    // which float32 rounding and the MLPs' ReLU kinks make noisy).
    let tokens = s.parameters["mask_decoder.mask_tokens.weight"]
    let row = 256..<512
    let g = try #require(tokens.grad)[row].map(Double.init)
    let norm = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
    let saved = tokens.value.storage
    func shifted(_ epsilon: Double) -> Double {
      for (j, i) in row.enumerated() {
        tokens.value.storage[i] = Float(Double(saved[i]) + epsilon * g[j] / norm)
      }
      defer { tokens.value.storage = saved }
      return zip(run(Tape()).value.storage, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    let epsilon = 1e-2
    let directional = (shifted(epsilon) - shifted(-epsilon)) / (2 * epsilon)
    #expect(
      abs(directional - norm) <= 2e-2 * norm,
      "mask token 1: |g| \(norm), directional \(directional)")
    #expect(s.parameters["mask_decoder.iou_prediction_head.layers.0.weight"].grad == nil)
  }

  /// Several prompts on one image, as training runs them (the embedding and the dense prompt
  /// at batch 1, so the first token→image attention projects the image once for all): each
  /// prompt's masks are the oracle's, and every parameter's gradient is the sum of what the
  /// prompts give one at a time (through the folded attentions only).
  @Test func promptsOfOneImageShareTheImageSide() throws {
    let s = try Setup()
    let boxes = Tensor(
      shape: [3, 4], storage: [150, 40, 700, 520, 20, 300, 400, 900, 500, 500, 1000, 1000])
    let prompts = s.promptEncoder(points: nil, boxes: boxes, masks: nil)
    let expected = s.oracle(
      imageEmbedding: s.embedding, imagePE: s.promptEncoder.getDensePE(), sparse: prompts.sparse,
      dense: prompts.dense.materialized(batch: 3), multimask: true)
    let graph = MaskDecoderGraph(parameters: s.parameters)
    let dense = prompts.dense.materialized(batch: 1)
    var rng = Fuzz.Generator(seed: 6)
    let r = (0..<(3 * 3 * 256 * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
    func gradients(of rows: Range<Int>) -> (Tensor, [String: Tensor]) {
      s.parameters.zeroGradients()
      let tape = Tape()
      let out = graph(
        tape, imageEmbedding: Variable(s.embedding), imagePE: s.promptEncoder.getDensePE(),
        sparse: Variable(Reference.slice(prompts.sparse, axis: 0, range: rows)),
        dense: Variable(dense), multimask: true)
      let plane = 3 * 256 * 256
      tape.backward(
        from: out.masks, gradient: Array(r[(rows.lowerBound * plane)..<(rows.upperBound * plane)]))
      return (out.masks.value, s.parameters.gradients)
    }
    let (masks, together) = gradients(of: 0..<3)
    #expect(relativeL2Error(masks, expected.masks) <= 1e-6)
    var summed: [String: [Double]] = [:]
    for i in 0..<3 {
      for (key, g) in gradients(of: i..<(i + 1)).1 {
        let d = g.storage.map(Double.init)
        summed[key] = summed[key].map { zip($0, d).map { $0 + $1 } } ?? d
      }
    }
    #expect(Set(summed.keys) == Set(together.keys))
    // Gradients through the scores of a 4096-key softmax are differences of nearly equal
    // sums, so float rounding shows at 1e-4 of them; a key bias's is rounding noise alone (a
    // bias added to every key shifts each row of scores, which the softmax ignores). Mistakes
    // in the shared path would be of the order of the gradients themselves.
    let largest = summed.values.map { v in v.reduce(0) { $0 + $1 * $1 }.squareRoot() }.max() ?? 0
    for (key, g) in together {
      let reference = try #require(summed[key])
      var difference = 0.0
      var norm = 0.0
      for (a, b) in zip(g.storage, reference) {
        difference += (Double(a) - b) * (Double(a) - b)
        norm += b * b
      }
      #expect(
        difference.squareRoot() <= 1e-3 * norm.squareRoot() + 1e-5 * largest,
        "\(key): |Δ| \(difference.squareRoot()) against |g| \(norm.squareRoot())")
    }
    // And the shared path against central differences, along the gradient of the first
    // token→image attention's key projection (the one its image side feeds).
    let key = "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.weight"
    let weight = s.parameters[key]
    let g = try #require(together[key]).storage.map(Double.init)
    let norm = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
    let saved = weight.value.storage
    func shifted(_ epsilon: Double) -> Double {
      for i in g.indices {
        weight.value.storage[i] = Float(Double(saved[i]) + epsilon * g[i] / norm)
      }
      defer { weight.value.storage = saved }
      let out = graph(
        Tape(), imageEmbedding: Variable(s.embedding), imagePE: s.promptEncoder.getDensePE(),
        sparse: Variable(prompts.sparse), dense: Variable(dense), multimask: true)
      return zip(out.masks.value.storage, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    let epsilon = 1e-2
    let directional = (shifted(epsilon) - shifted(-epsilon)) / (2 * epsilon)
    #expect(abs(directional - norm) <= 2e-2 * norm, "|g| \(norm), directional \(directional)")
  }
}
