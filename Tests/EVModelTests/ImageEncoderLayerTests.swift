import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// Deterministic test inputs from the project's generator, so failures reproduce.
extension SplitMix64 {
  /// Uniform in [lo, hi).
  mutating func uniform(_ lo: Float, _ hi: Float) -> Float {
    lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
  }

  mutating func tensor(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> Tensor {
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, storage: (0..<n).map { _ in uniform(lo, hi) })
  }
}

/// Plain-loop versions of the official layers, written straight from the PyTorch code, in
/// Double, for checking the fast layers on random weights.
enum Naive {
  /// nn.Conv2d with "same" padding, stride 1.
  static func conv(_ x: [Double], c: Int, h: Int, w: Int, weight: Tensor, groups: Int) -> [Double] {
    let o = weight.dim(0)
    let cg = weight.dim(1)
    let k = weight.dim(2)
    let p = k / 2
    let og = o / groups
    var y = [Double](repeating: 0, count: o * h * w)
    for oc in 0..<o {
      let g = oc / og
      for i in 0..<h {
        for j in 0..<w {
          var s = 0.0
          for ic in 0..<cg {
            for ki in 0..<k {
              for kj in 0..<k {
                let yi = i + ki - p
                let xj = j + kj - p
                guard yi >= 0, yi < h, xj >= 0, xj < w else { continue }
                s +=
                  Double(weight[oc, ic, ki, kj]) * x[((g * cg + ic) * h + yi) * w + xj]
              }
            }
          }
          y[(oc * h + i) * w + j] = s
        }
      }
    }
    return y
  }

  static func batchNorm(
    _ x: inout [Double], c: Int, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor
  ) {
    let plane = x.count / c
    for ch in 0..<c {
      let scale = Double(gamma.storage[ch]) / (Double(variance.storage[ch]) + 1e-6).squareRoot()
      for i in 0..<plane {
        x[ch * plane + i] =
          (x[ch * plane + i] - Double(mean.storage[ch])) * scale + Double(beta.storage[ch])
      }
    }
  }

  /// `LiteMLA.forward` for batch 1: qkv, aggregation, concat, per-head ReLU attention, proj + BN.
  static func liteMLA(
    _ x: Tensor, weights: [String: Tensor], heads: Int, dim d: Int, scale: Int
  ) -> [Double] {
    let c = x.dim(1)
    let h = x.dim(2)
    let w = x.dim(3)
    let n = h * w
    let total = heads * d
    let input = x.storage.map(Double.init)
    let qkv = conv(input, c: c, h: h, w: w, weight: weights["qkv.conv.weight"]!, groups: 1)
    let dw = conv(
      qkv, c: 3 * total, h: h, w: w, weight: weights["aggreg.0.0.weight"]!, groups: 3 * total)
    let agg = conv(
      dw, c: 3 * total, h: h, w: w, weight: weights["aggreg.0.1.weight"]!, groups: 3 * heads)
    let all = qkv + agg
    let groupsOut = all.count / (3 * d * n)
    var out = [Double](repeating: 0, count: groupsOut * d * n)
    for g in 0..<groupsOut {
      func at(_ row: Int, _ t: Int) -> Double { all[(g * 3 * d + row) * n + t] }
      let q = { (r: Int, t: Int) in max(at(r, t), 0) }
      let k = { (r: Int, t: Int) in max(at(d + r, t), 0) }
      let v = { (r: Int, t: Int) in at(2 * d + r, t) }
      if n > d {
        // vk = [v; 1] kᵀ, out = vk q, divide by the last row + eps.
        var vk = [Double](repeating: 0, count: (d + 1) * d)
        for i in 0...d {
          for j in 0..<d {
            var s = 0.0
            for t in 0..<n { s += (i == d ? 1 : v(i, t)) * k(j, t) }
            vk[i * d + j] = s
          }
        }
        for t in 0..<n {
          var column = [Double](repeating: 0, count: d + 1)
          for i in 0...d {
            for j in 0..<d { column[i] += vk[i * d + j] * q(j, t) }
          }
          for i in 0..<d { out[(g * d + i) * n + t] = column[i] / (column[d] + 1e-15) }
        }
      } else {
        // att = kᵀ q normalised over keys, out = v att.
        var att = [Double](repeating: 0, count: n * n)
        for a in 0..<n {
          for b in 0..<n {
            var s = 0.0
            for j in 0..<d { s += k(j, a) * q(j, b) }
            att[a * n + b] = s
          }
        }
        for b in 0..<n {
          let s = (0..<n).reduce(0.0) { $0 + att[$1 * n + b] } + 1e-15
          for a in 0..<n { att[a * n + b] /= s }
        }
        for i in 0..<d {
          for b in 0..<n {
            var s = 0.0
            for a in 0..<n { s += v(i, a) * att[a * n + b] }
            out[(g * d + i) * n + b] = s
          }
        }
      }
    }
    var projected = conv(
      out, c: groupsOut * d, h: h, w: w, weight: weights["proj.conv.weight"]!, groups: 1)
    batchNorm(
      &projected, c: c, gamma: weights["proj.norm.weight"]!, beta: weights["proj.norm.bias"]!,
      mean: weights["proj.norm.running_mean"]!, variance: weights["proj.norm.running_var"]!)
    return projected
  }
}

func relativeError(_ a: Tensor, _ b: [Double]) -> Double {
  var diff = 0.0
  var norm = 0.0
  for (x, y) in zip(a.storage, b) {
    diff += (Double(x) - y) * (Double(x) - y)
    norm += y * y
  }
  return (diff / norm).squareRoot()
}

@Suite("Encoder layers")
struct ImageEncoderLayerTests {
  /// Random LiteMLA weights under the official keys, with non-trivial BatchNorm statistics.
  static func liteMLAWeights(channels c: Int, heads: Int, dim d: Int, scale: Int, seed: UInt64)
    -> [String: Tensor]
  {
    var rng = SplitMix64(state: seed)
    let total = heads * d
    return [
      "qkv.conv.weight": rng.tensor([3 * total, c, 1, 1], -0.3, 0.3),
      "aggreg.0.0.weight": rng.tensor([3 * total, 1, scale, scale], -0.3, 0.3),
      "aggreg.0.1.weight": rng.tensor([3 * total, d, 1, 1], -0.3, 0.3),
      "proj.conv.weight": rng.tensor([c, 2 * total, 1, 1], -0.3, 0.3),
      "proj.norm.weight": rng.tensor([c], 0.5, 1.5),
      "proj.norm.bias": rng.tensor([c], -0.5, 0.5),
      "proj.norm.running_mean": rng.tensor([c], -0.2, 0.2),
      "proj.norm.running_var": rng.tensor([c], 0.3, 2),
      "proj.norm.num_batches_tracked": Tensor(zeros: []),
    ]
  }

  /// 5×5 maps (25 pixels > head dim 16) take the linear path; 4×4 (16 ≤ 16) the quadratic one.
  @Test(arguments: [(5, 5, 5), (4, 4, 3), (7, 3, 3)])
  func liteMLAMatchesOfficialFormula(height: Int, width: Int, scale: Int) throws {
    let c = 48
    let d = 16
    let heads = c / d
    let weights = Self.liteMLAWeights(channels: c, heads: heads, dim: d, scale: scale, seed: 7)
    let reader = WeightReader(weights, origin: "random")
    let layer = LiteMLA(reader.root, inChannels: c, outChannels: c, dim: d, scales: [scale])
    try reader.finish()
    #expect(layer.heads == heads)
    var rng = SplitMix64(state: 11)
    let x = rng.tensor([1, c, height, width])
    let y = layer(x)
    #expect(y.shape == [1, c, height, width])
    let expected = Naive.liteMLA(x, weights: weights, heads: heads, dim: d, scale: scale)
    let error = relativeError(y, expected)
    #expect(error < 1e-5, "relative error \(error)")
  }

  @Test func convLayerFoldsBatchNormWithEps1e6() throws {
    var rng = SplitMix64(state: 3)
    let weights: [String: Tensor] = [
      "conv.weight": rng.tensor([4, 3, 3, 3]),
      "conv.bias": rng.tensor([4]),
      "norm.weight": rng.tensor([4], 0.5, 1.5),
      "norm.bias": rng.tensor([4]),
      "norm.running_mean": rng.tensor([4]),
      // Tiny variances make the eps matter: 1e-5 instead of 1e-6 would move the output.
      "norm.running_var": rng.tensor([4], 1e-6, 4e-6),
      "norm.num_batches_tracked": Tensor(zeros: []),
    ]
    let reader = WeightReader(weights, origin: "random")
    let layer = ConvLayer(
      reader.root, inChannels: 3, outChannels: 4, kernelSize: 3, useBias: true, norm: true)
    try reader.finish()
    let x = rng.tensor([1, 3, 6, 5])
    var expected = Naive.conv(
      x.storage.map(Double.init), c: 3, h: 6, w: 5, weight: weights["conv.weight"]!, groups: 1)
    for ch in 0..<4 {
      for i in 0..<30 { expected[ch * 30 + i] += Double(weights["conv.bias"]!.storage[ch]) }
    }
    Naive.batchNorm(
      &expected, c: 4, gamma: weights["norm.weight"]!, beta: weights["norm.bias"]!,
      mean: weights["norm.running_mean"]!, variance: weights["norm.running_var"]!)
    #expect(relativeError(layer(x), expected) < 1e-5)
    #expect(reader.declared.first { $0.key == "norm.num_batches_tracked" }?.dtype == .int64)
    #expect(reader.parameterCount() == 4 * 27 + 4 + 4 + 4, "running stats are buffers")
  }

  @Test func hiddenWidthsRoundLikePython() {
    // Python's round() sends halves to the even neighbour.
    #expect(hiddenChannels(5, expandRatio: 0.5) == 2)
    #expect(hiddenChannels(7, expandRatio: 0.5) == 4)
    #expect(hiddenChannels(32, expandRatio: 4) == 128)
  }

  @Test func convMultiplyAccumulatesFollowTheShapeFormula() {
    let reader = WeightReader.declaringOnly()
    let strided = ConvLayer(
      reader.root["a"], inChannels: 3, outChannels: 32, kernelSize: 3, stride: 2)
    let (macs, out) = strided.multiplyAccumulates(input: FeatureSize(square: 512))
    #expect(out == FeatureSize(square: 256))
    #expect(macs == 32 * 3 * 9 * 256 * 256)
    let depthwise = ConvLayer(
      reader.root["b"], inChannels: 64, outChannels: 64, kernelSize: 5, groups: 64)
    #expect(
      depthwise.multiplyAccumulates(input: FeatureSize(height: 7, width: 9)).macs == 64 * 25 * 63)
    let attention = LiteMLA(reader.root["c"], inChannels: 64, outChannels: 64, dim: 32, scales: [5])
    // qkv 192·64, depthwise 192·25, grouped 192·32, proj 64·128 per pixel, plus per head
    // (4 = 2 heads × 2 branches) two (32+1)×32 products per pixel.
    let perPixel = 192 * 64 + 192 * 25 + 192 * 32 + 64 * 128 + 4 * 2 * 33 * 32
    #expect(attention.multiplyAccumulates(input: FeatureSize(square: 16)).macs == perPixel * 256)
  }
}
