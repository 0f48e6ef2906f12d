import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// The decoder's row kernels (`RowOps`, Sources/EVTensor/Kernels/RowOps.swift) against
/// plain double-precision loops, on odd sizes so the unrolled and tail paths both run.
@Suite("Decoder row kernels")
struct DecoderKernelTests {
  /// Deterministic pseudo-random values in [-scale, scale).
  static func values(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
    var state = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return (0..<n).map { _ in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
  }

  static func maxError(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
  }

  static func exactGELU(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }

  static func layerNorm(_ x: ArraySlice<Float>, _ w: [Float], _ b: [Float], eps: Double) -> [Double]
  {
    let v = x.map(Double.init)
    let mean = v.reduce(0, +) / Double(v.count)
    let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)
    return v.indices.map {
      (v[$0] - mean) / (variance + eps).squareRoot() * Double(w[$0]) + Double(b[$0])
    }
  }

  @Test(arguments: [(3, 1, 1), (5, 7, 9), (4, 4099, 4100)])
  func softmaxRows(rows: Int, cols: Int, stride: Int) {
    var x = Self.values(rows * stride, seed: UInt64(cols), scale: 20)
    let original = x
    let scale: Float = 0.25
    x.withUnsafeMutableBufferPointer {
      RowOps.softmax($0.baseAddress!, rows: rows, cols: cols, stride: stride, scale: scale)
    }
    for r in 0..<rows {
      let row = original[(r * stride)..<(r * stride + cols)].map { Double($0) * Double(scale) }
      let m = row.max()!
      let e = row.map { exp($0 - m) }
      let s = e.reduce(0, +)
      let got = Array(x[(r * stride)..<(r * stride + cols)])
      #expect(Self.maxError(got, e.map { $0 / s }) <= 1e-6)
      // Padding between rows is untouched.
      #expect(
        x[(r * stride + cols)..<((r + 1) * stride)]
          == original[(r * stride + cols)..<((r + 1) * stride)])
    }
  }

  @Test(arguments: [(1, 1, 5), (3, 7, 300), (8, 2, 517)])
  func softmaxDownColumns(groups: Int, rows: Int, cols: Int) {
    var x = Self.values(groups * rows * cols, seed: 7, scale: 30)
    let bias = Self.values(groups * rows, seed: 8)
    let original = x
    x.withUnsafeMutableBufferPointer { xp in
      bias.withUnsafeBufferPointer { bp in
        RowOps.softmaxColumns(
          xp.baseAddress!, groups: groups, rows: rows, cols: cols, scale: 0.5,
          rowBias: bp.baseAddress!)
      }
    }
    var worst = 0.0
    for g in 0..<groups {
      for c in 0..<cols {
        let column = (0..<rows).map {
          (Double(original[(g * rows + $0) * cols + c]) + Double(bias[g * rows + $0])) * 0.5
        }
        let m = column.max()!
        let e = column.map { exp($0 - m) }
        let s = e.reduce(0, +)
        for r in 0..<rows {
          worst = max(worst, abs(Double(x[(g * rows + r) * cols + c]) - e[r] / s))
        }
      }
    }
    #expect(worst <= 1e-6)
  }

  @Test func geluMatchesErfGELU() {
    let xs = (0..<40_001).map { Float($0 - 20_000) / 2000 }  // [-10, 10]
    let worst = xs.map { abs(Double(RowOps.gelu($0)) - Self.exactGELU(Double($0))) }.max()!
    #expect(worst <= 2e-6)
    #expect(RowOps.gelu(0) == 0)
    // Far outside the clamp the function saturates to 0 and x.
    #expect(abs(RowOps.gelu(-50)) <= 1e-4 && abs(RowOps.gelu(50) - 50) <= 1e-4)
  }

  @Test(arguments: [false, true])
  func layerNormWithPreBiasAndGELU(gelu: Bool) {
    let (rows, dim) = (37, 64)
    let x = Self.values(rows * dim, seed: 3)
    let w = Self.values(dim, seed: 4)
    let b = Self.values(dim, seed: 5)
    let pre = Self.values(dim, seed: 6)
    var out = [Float](repeating: .nan, count: rows * dim)
    x.withUnsafeBufferPointer { xp in
      out.withUnsafeMutableBufferPointer { op in
        RowOps.layerNorm(
          xp.baseAddress!, op.baseAddress!, rows: rows, dim: dim, weight: w, bias: b, eps: 1e-6,
          preBias: pre, gelu: gelu)
      }
    }
    var expected: [Double] = []
    for r in 0..<rows {
      let shifted = (0..<dim).map { x[r * dim + $0] + pre[$0] }
      let y = Self.layerNorm(shifted[...], w, b, eps: 1e-6)
      expected += gelu ? y.map(Self.exactGELU) : y
    }
    #expect(Self.maxError(out, expected) <= 1e-5)
  }

  @Test func residualLayerNormAlsoAddsTheAddend() {
    let (rows, dim) = (129, 256)
    var x = Self.values(rows * dim, seed: 11)
    let delta = Self.values(rows * dim, seed: 12)
    let addend = Self.values(rows * dim, seed: 13)
    let w = Self.values(dim, seed: 14)
    let b = Self.values(dim, seed: 15)
    let original = x
    var sum = [Float](repeating: .nan, count: rows * dim)
    x.withUnsafeMutableBufferPointer { xp in
      sum.withUnsafeMutableBufferPointer { sp in
        RowOps.residualLayerNorm(
          xp.baseAddress!, delta: delta, rows: rows, dim: dim, weight: w, bias: b, eps: 1e-6,
          addend: addend, sum: sp.baseAddress!)
      }
    }
    var expected: [Double] = []
    for r in 0..<rows {
      let row = (0..<dim).map { original[r * dim + $0] + delta[r * dim + $0] }
      expected += Self.layerNorm(row[...], w, b, eps: 1e-6)
    }
    #expect(Self.maxError(x, expected) <= 1e-5)
    #expect(sum == zip(x, addend).map { $0 + $1 })
  }

  @Test func residualLayerNormReportsScalesAndAddsTheDeltaBias() {
    let (rows, dim) = (67, 256)
    var x = Self.values(rows * dim, seed: 31)
    let delta = Self.values(rows * dim, seed: 32)
    let deltaBias = Self.values(dim, seed: 33)
    let w = Self.values(dim, seed: 34)
    let b = Self.values(dim, seed: 35)
    let original = x
    var rstd = [Float](repeating: .nan, count: rows)
    x.withUnsafeMutableBufferPointer { xp in
      rstd.withUnsafeMutableBufferPointer { rp in
        RowOps.residualLayerNorm(
          xp.baseAddress!, delta: delta, rows: rows, dim: dim, weight: w, bias: b, eps: 1e-6,
          rstd: rp.baseAddress!, deltaBias: deltaBias)
      }
    }
    var expected: [Double] = []
    var worstScale = 0.0
    for r in 0..<rows {
      let row = (0..<dim).map { original[r * dim + $0] + delta[r * dim + $0] + deltaBias[$0] }
      expected += Self.layerNorm(row[...], w, b, eps: 1e-6)
      let v = row.map(Double.init)
      let mean = v.reduce(0, +) / Double(dim)
      let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(dim)
      let scale = 1 / (variance + 1e-6).squareRoot()
      worstScale = max(worstScale, abs(Double(rstd[r]) - scale) / scale)
    }
    #expect(Self.maxError(x, expected) <= 1e-5)
    #expect(worstScale <= 1e-6)
  }

  /// The few-row linear kernel (packed weight) against a double-precision product, for every
  /// row count it takes, output counts that are not multiples of its 32-wide strips, strided
  /// rows, and both activations; more rows than it takes are refused.
  @Test(arguments: [
    (1, 7, 5), (7, 256, 2048), (12, 33, 37), (5, 2048, 256), (3, 256, 4), (6, 40, 37), (4, 64, 50),
  ])
  func linearFewRowsMatchesAPlainProduct(rows: Int, inFeatures: Int, outFeatures: Int) {
    let (ldx, ldy) = (inFeatures + 3, outFeatures + 5)
    let x = Self.values(rows * ldx, seed: UInt64(inFeatures))
    let w = Self.values(outFeatures * inFeatures, seed: UInt64(outFeatures), scale: 0.2)
    let bias = Self.values(outFeatures, seed: 99)
    let packed = w.withUnsafeBufferPointer {
      RowOps.packForFewRows($0.baseAddress!, outFeatures: outFeatures, inFeatures: inFeatures)
    }
    #expect(packed.count == (outFeatures + 31) / 32 * 32 * inFeatures)
    for act in [Activation.identity, .relu] {
      var y = [Float](repeating: -7, count: rows * ldy)
      let done = y.withUnsafeMutableBufferPointer { yp in
        RowOps.linearFewRows(
          x, ldx: ldx, rows: rows, inFeatures: inFeatures, packedWeight: packed, bias: bias,
          outFeatures: outFeatures, into: yp.baseAddress!, ldy: ldy, act)
      }
      guard done else {
        // Only a CPU without AVX2 (or EVSAM_SIMD=portable) declines; then nothing is written.
        #expect(y.allSatisfy { $0 == -7 })
        continue
      }
      var worst = 0.0
      for r in 0..<rows {
        for o in 0..<outFeatures {
          var v = Double(bias[o])
          for i in 0..<inFeatures { v += Double(x[r * ldx + i]) * Double(w[o * inFeatures + i]) }
          if act == .relu { v = max(v, 0) }
          worst = max(worst, abs(Double(y[r * ldy + o]) - v))
        }
        // The gaps between output rows are untouched.
        #expect(y[(r * ldy + outFeatures)..<((r + 1) * ldy)].allSatisfy { $0 == -7 })
      }
      #expect(worst <= 2e-5 * Double(inFeatures).squareRoot())
    }
    var y = [Float](repeating: 0, count: 13 * outFeatures)
    let tooMany = y.withUnsafeMutableBufferPointer { yp in
      RowOps.linearFewRows(
        Self.values(13 * inFeatures, seed: 1), ldx: inFeatures, rows: 13, inFeatures: inFeatures,
        packedWeight: packed, bias: bias, outFeatures: outFeatures, into: yp.baseAddress!,
        ldy: outFeatures, .identity)
    }
    #expect(!tooMany)
  }

  /// `softmaxColumnRange`, column range by column range, against `softmaxColumns` on the same
  /// block.
  @Test func rangedColumnSoftmaxMatchesTheWholeOne() {
    let (groupRows, width) = (7, 300)
    let block = Self.values(groupRows * width, seed: 52, scale: 20)
    let bias = Self.values(groupRows, seed: 53)
    var reference = block
    reference.withUnsafeMutableBufferPointer {
      RowOps.softmaxColumns(
        $0.baseAddress!, groups: 1, rows: groupRows, cols: width, scale: 0.5, rowBias: bias)
    }
    var ranged = block
    ranged.withUnsafeMutableBufferPointer { x in
      for c0 in stride(from: 0, to: width, by: 64) {
        RowOps.softmaxColumnRange(
          x.baseAddress!, rows: groupRows, cols: width, columns: c0..<min(width, c0 + 64),
          scale: 0.5, rowBias: bias)
      }
    }
    #expect(Self.maxError(ranged, reference.map(Double.init)) <= 1e-6)
  }

  @Test func rowAffineScalesShiftsAndOffsetsEachRow() {
    let (rows, dim, ldx) = (9, 37, 40)
    let x = Self.values(rows * ldx, seed: 41)
    let a = Self.values(rows, seed: 42)
    let u = Self.values(dim, seed: 43)
    let v = Self.values(dim, seed: 44)
    var y = [Float](repeating: .nan, count: rows * dim)
    y.withUnsafeMutableBufferPointer {
      RowOps.rowAffine(
        x, ldx: ldx, rows: rows, dim: dim, scale: a, inner: u, outer: v, into: $0.baseAddress!)
    }
    var expected: [Double] = []
    for r in 0..<rows {
      expected += (0..<dim).map {
        Double(a[r]) * (Double(x[r * ldx + $0]) + Double(u[$0])) + Double(v[$0])
      }
    }
    #expect(Self.maxError(y, expected) <= 1e-5)
    // Without scale and offsets it copies.
    var copy = [Float](repeating: .nan, count: rows * dim)
    copy.withUnsafeMutableBufferPointer {
      RowOps.rowAffine(
        x, ldx: ldx, rows: rows, dim: dim, scale: nil, inner: nil, outer: nil,
        into: $0.baseAddress!)
    }
    #expect(copy == (0..<rows).flatMap { r in x[(r * ldx)..<(r * ldx + dim)] })
  }

  @Test func biasActivationAndBiasGELURespectTheStride() {
    let (rows, cols, stride) = (5, 33, 40)
    let bias = Self.values(cols, seed: 21)
    let original = Self.values(rows * stride, seed: 22)
    var relu = original
    var gelu = original
    relu.withUnsafeMutableBufferPointer {
      RowOps.biasActivation(
        $0.baseAddress!, rows: rows, cols: cols, stride: stride, bias: bias, .relu)
    }
    gelu.withUnsafeMutableBufferPointer {
      RowOps.biasGELU($0.baseAddress!, rows: rows, cols: cols, stride: stride, bias: bias)
    }
    for r in 0..<rows {
      for c in 0..<stride {
        let i = r * stride + c
        if c < cols {
          #expect(relu[i] == max(original[i] + bias[c], 0))
          #expect(abs(Double(gelu[i]) - Self.exactGELU(Double(original[i] + bias[c]))) <= 2e-6)
        } else {
          #expect(relu[i] == original[i] && gelu[i] == original[i])
        }
      }
    }
  }
}

@Suite("Mask post-processing")
struct DecoderPostprocessingTests {
  /// The official three steps, done literally with the kernels' bilinear resize.
  static func reference(
    _ x: Tensor, inputSize: (Int, Int), originalSize: (Int, Int)
  ) -> Tensor {
    var y = resizeBilinear(x, height: 1024, width: 1024)
    y = slice(y, axis: 2, range: 0..<inputSize.0)
    y = slice(y, axis: 3, range: 0..<inputSize.1)
    return resizeBilinear(y, height: originalSize.0, width: originalSize.1)
  }

  @Test(arguments: [
    (683, 1024, 400, 600),  // coffee: shrink
    (681, 1024, 300, 451),  // chelsea
    (1024, 1024, 512, 512),  // square
    (1024, 768, 2000, 1500),  // a large photo: the last step enlarges
    (1024, 2, 4000, 7),  // extreme aspect ratio
    (1024, 1024, 1024, 1024),  // both steps but the first are copies
  ])
  func compositeEqualsTheThreeOfficialSteps(ih: Int, iw: Int, oh: Int, ow: Int) {
    let values = DecoderKernelTests.values(2 * 256 * 256, seed: UInt64(ih * 7 + ow), scale: 10)
    let x = Tensor(shape: [1, 2, 256, 256], storage: values)
    let got = MaskPostprocessing.upscale(x, inputSize: (ih, iw), originalSize: (oh, ow))
    let expected = Self.reference(x, inputSize: (ih, iw), originalSize: (oh, ow))
    #expect(got.shape == [1, 2, oh, ow])
    #expect(maxAbsDifference(got, expected) <= 1e-5)
  }

  @Test func axisTapsStayInsideTheInput() {
    for (kept, output) in [(683, 400), (1024, 3000), (1, 1), (2, 9000), (1024, 1)] {
      let axis = MaskPostprocessing.axis(input: 256, frame: 1024, kept: kept, output: output)
      #expect(axis.outputCount == output)
      #expect(axis.taps <= 3)
      for i in 0..<output {
        let w = axis.weight[(i * axis.taps)..<((i + 1) * axis.taps)]
        #expect(abs(w.reduce(0, +) - 1) <= 1e-6, "weights of output \(i) sum to \(w.reduce(0, +))")
      }
    }
  }
}
