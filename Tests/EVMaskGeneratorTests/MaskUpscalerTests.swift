import EVMaskGenerator
import EVTensor
import Foundation
import TestSupport
import Testing

/// The fused, streamed upscaling must give the very pixels of the official two-step
/// post-processing: bilinear 256 → 1024, keep the top-left input size, bilinear to the image.
@Suite struct MaskUpscalerTests {
  /// The official steps, each one PyTorch-exact `F.interpolate` (EVTensor's `resizeBilinear`).
  static func reference(
    _ logits: [Float], inputSize: (height: Int, width: Int), outputSize: (height: Int, width: Int)
  ) -> [Float] {
    var x = resizeBilinear(
      Tensor(shape: [1, 1, 256, 256], storage: logits), height: 1024, width: 1024)
    x = slice(x, axis: 2, range: 0..<inputSize.height)
    x = slice(x, axis: 3, range: 0..<inputSize.width)
    return resizeBilinear(x, height: outputSize.height, width: outputSize.width).storage
  }

  /// Smooth blobs plus noise, scaled so many values sit near the thresholds 0 and ±1.
  static func logits(seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    let centers = (0..<6).map { _ in
      (Float(rng.next() % 256), Float(rng.next() % 256), Float(rng.next() % 60 + 10))
    }
    return (0..<(256 * 256)).map { i in
      let (y, x) = (Float(i / 256), Float(i % 256))
      var v: Float = -2
      for (cy, cx, r) in centers {
        let d = ((y - cy) * (y - cy) + (x - cx) * (x - cx)).squareRoot()
        v += 3 * max(0, 1 - d / r)
      }
      return v + Float(Int(rng.next() % 2001) - 1000) / 4000
    }
  }

  @Test(arguments: [
    // (input size in the 1024 frame, image or crop size)
    ((683, 1024), (400, 600)),  // coffee.png: downscale
    ((1024, 1024), (512, 512)),  // astronaut.png
    ((681, 1024), (300, 451)),  // chelsea.png
    ((746, 1024), (268, 368)),  // a first-layer crop of coffee.png
    ((768, 1024), (1500, 2000)),  // a large photo: upscale
    ((1024, 731), (7, 5)),  // a tiny image
    ((1024, 1024), (1024, 1024)),  // equal sizes: the second resize copies
  ])
  func matchesTheTwoStepPostprocessing(_ sizes: ((Int, Int), (Int, Int))) {
    let (input, output) = sizes
    let upscaler = MaskUpscaler(
      inputSize: (input.0, input.1), outputSize: (output.0, output.1))
    for seed in UInt64(1)...2 {
      let logits = Self.logits(seed: seed &* 31 &+ UInt64(output.1))
      let full = Self.reference(
        logits, inputSize: (input.0, input.1), outputSize: (output.0, output.1))
      let result = upscaler.threshold(logits, high: 1, low: -1, maskThreshold: 0)
      #expect(result.high == full.filter { $0 > 1 }.count)
      #expect(result.low == full.filter { $0 > -1 }.count)
      #expect(result.mask == full.map { $0 > 0 ? 1 : 0 })
      if full.count > 1000 {
        #expect(
          result.high > 0 && result.low < full.count, "the test data straddles the thresholds")
      }
      // And the stability score is the official one computed on the upscaled logits.
      let fromCounts = Float(result.high) / Float(result.low)
      #expect(fromCounts == AMG.stabilityScore(logits: full, offset: 1))
    }
  }
}
