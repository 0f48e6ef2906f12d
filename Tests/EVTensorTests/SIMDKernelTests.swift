import EVTensor
import Foundation
import TestSupport
import Testing

/// The run-time-dispatched kernels of `CKernels` at every instruction-set level this CPU has
/// (portable loops, AVX2 + FMA, AVX-512), against double-precision plain loops, and against each
/// other where they must agree bit for bit. `SIMDLevel.capped` only affects the test's own
/// thread, so other tests running meanwhile keep their level.
@Suite struct SIMDKernelTests {
  static func values(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    return (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) }
  }

  static let levels = SIMDLevel.supported

  /// Also says, in the test log, which levels every test of this suite ran and which this CPU
  /// lacks (those kernels are then untested here: run the suite on a CPU that has them).
  @Test func levelCapIsPerThread() {
    let lacking = SIMDLevel.allCases.filter { !Self.levels.contains($0) }
    print(
      "SIMD levels tested: \(Self.levels.map { "\($0)" }.joined(separator: ", ")); "
        + "this CPU lacks: \(lacking.isEmpty ? "none" : lacking.map { "\($0)" }.joined(separator: ", "))"
    )
    #expect(Self.levels.first == .portable)
    for level in Self.levels {
      SIMDLevel.capped(at: level) { #expect(SIMDLevel.current == level) }
    }
    #expect(SIMDLevel.current == Self.levels.last)
  }

  /// `C = op(A)·B (+ C)` for odd shapes (ragged row tiles and column panels), strided operands,
  /// transposed A and accumulation, against a double-precision product.
  @Test(arguments: [
    (false, 1, 1, 1), (false, 7, 5, 3), (true, 13, 37, 29), (false, 64, 56, 256),
    (true, 56, 256, 300), (false, 6, 16, 0), (true, 33, 8, 17),
  ])
  func gemmMatchesAPlainProduct(transA: Bool, m: Int, n: Int, k: Int) {
    let (lda, ldb, ldc) = ((transA ? m : k) + 3, n + 5, n + 2)
    let a = Self.values((transA ? k : m) * lda, seed: UInt64(m * 31 + k))
    let b = Self.values(k * ldb, seed: UInt64(n * 17 + k))
    let c0 = Self.values(m * ldc, seed: 5)
    for level in Self.levels {
      for accumulate in [false, true] {
        var c = c0
        SIMDLevel.capped(at: level) {
          c.withUnsafeMutableBufferPointer {
            SmallGEMM.multiply(
              transA: transA, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
              c: $0.baseAddress!, ldc: ldc, accumulate: accumulate)
          }
        }
        var worst = 0.0
        for i in 0..<m {
          for j in 0..<n {
            var s = accumulate ? Double(c0[i * ldc + j]) : 0
            for p in 0..<k {
              s += Double(transA ? a[p * lda + i] : a[i * lda + p]) * Double(b[p * ldb + j])
            }
            worst = max(worst, abs(Double(c[i * ldc + j]) - s))
          }
          // Columns past n are untouched.
          #expect(c[(i * ldc + n)..<(i * ldc + ldc)] == c0[(i * ldc + n)..<(i * ldc + ldc)])
        }
        #expect(worst <= 1e-5 * Double(max(k, 1)).squareRoot(), "\(level) accumulate \(accumulate)")
      }
    }
  }

  /// With AVX2 every element is one chain over k in order, so products split into row blocks
  /// and column panels at any points, prepacked or not, on one thread or several, are
  /// bit-identical. (Below AVX2 the products go to BLAS, whose results depend on the split;
  /// the parallel products still split at fixed points.)
  @Test func gemmIsSplitInvariant() {
    let (m, n, k) = (45, 70, 131)
    let a = Self.values(m * k, seed: 1)
    let b = Self.values(k * n, seed: 2)
    let packed = PackedMatrix(b, rows: k, columns: n, ld: n)
    for level in Self.levels where level >= .avx2 {
      SIMDLevel.capped(at: level) {
        var whole = [Float](repeating: 0, count: m * n)
        whole.withUnsafeMutableBufferPointer {
          SmallGEMM.multiply(
            m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: $0.baseAddress!, ldc: n)
        }
        var pieces = [Float](repeating: 0, count: m * n)
        pieces.withUnsafeMutableBufferPointer { c in
          a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
              for (r0, r1) in [(0, 7), (7, 8), (8, 45)] {
                for (j0, j1) in [(0, 3), (3, 19), (19, 70)] {
                  SmallGEMM.multiply(
                    m: r1 - r0, n: j1 - j0, k: k, a: a.baseAddress! + r0 * k, lda: k,
                    b: b.baseAddress! + j0, ldb: n, c: c.baseAddress! + r0 * n + j0, ldc: n)
                }
              }
            }
          }
        }
        #expect(pieces == whole, "\(level): split product differs")
        var prepacked = [Float](repeating: 0, count: m * n)
        prepacked.withUnsafeMutableBufferPointer {
          SmallGEMM.multiply(m: m, k: k, a: a, lda: k, b: packed, c: $0.baseAddress!, ldc: n)
        }
        #expect(prepacked == whole, "\(level): prepacked product differs")
      }
    }
    guard SIMDLevel.current >= .avx2 else { return }
    var parallel = [Float](repeating: 0, count: m * n)
    var serial = parallel
    parallel.withUnsafeMutableBufferPointer {
      SmallGEMM.parallelMultiply(
        m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: $0.baseAddress!, ldc: n)
    }
    serial.withUnsafeMutableBufferPointer {
      SmallGEMM.multiply(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: $0.baseAddress!, ldc: n)
    }
    #expect(parallel == serial)
    var parallelPacked = [Float](repeating: 0, count: m * n)
    parallelPacked.withUnsafeMutableBufferPointer {
      SmallGEMM.parallelMultiply(m: m, k: k, a: a, lda: k, b: packed, c: $0.baseAddress!, ldc: n)
    }
    #expect(parallelPacked == serial)
  }

  /// Prepacked products run two 16-column panels at a time where they can (AVX-512): the
  /// same chains, so the same bits as the unpacked kernel, for a ragged second panel, a
  /// transposed A, accumulation and row counts that give every tile height.
  @Test(arguments: [(1, 58), (5, 32), (16, 17), (23, 58), (64, 128), (13, 47)])
  func prepackedPanelPairsMatchTheUnpackedKernel(m: Int, n: Int) {
    let k = 37
    let b = Self.values(k * n, seed: UInt64(n))
    let packed = PackedMatrix(b, rows: k, columns: n, ld: n)
    let c0 = Self.values(m * n, seed: 3)
    for level in Self.levels where level >= .avx2 {
      for transA in [false, true] {
        let a = Self.values(m * k, seed: UInt64(m + 100))
        for accumulate in [false, true] {
          var plain = c0
          var fromPacked = c0
          SIMDLevel.capped(at: level) {
            plain.withUnsafeMutableBufferPointer {
              SmallGEMM.multiply(
                transA: transA, m: m, n: n, k: k, a: a, lda: transA ? m : k, b: b, ldb: n,
                c: $0.baseAddress!, ldc: n, accumulate: accumulate)
            }
            fromPacked.withUnsafeMutableBufferPointer {
              SmallGEMM.multiply(
                transA: transA, m: m, k: k, a: a, lda: transA ? m : k, b: packed,
                c: $0.baseAddress!, ldc: n, accumulate: accumulate)
            }
          }
          #expect(
            fromPacked == plain,
            "\(level) m=\(m) n=\(n) transA=\(transA) accumulate=\(accumulate)")
        }
      }
    }
  }

  /// The per-head scores, the softmax over prompt tokens, the partial softmax down columns and
  /// the weighted values, in the token-major head-interleaved layout, against plain loops.
  @Test(arguments: [(1, 1, 1), (70, 7, 16), (33, 12, 5)])
  func headAttentionMatchesPlainLoops(rows: Int, t: Int, d: Int) {
    let h = HeadAttention.heads
    let (ldq, ldo) = (d * h + 3, t * h + 5)
    let q = Self.values(rows * ldq, seed: 11)
    let k = Self.values(t * d * h, seed: 12)
    let bias = Self.values(t * h, seed: 13)
    let v = Self.values(rows * d * h, seed: 14)
    let scale: Float = 0.25
    for level in Self.levels {
      var scores = [Float](repeating: 9, count: rows * ldo)
      SIMDLevel.capped(at: level) {
        scores.withUnsafeMutableBufferPointer {
          HeadAttention.scores(
            q, ldq: ldq, rows: rows, keys: k, tokens: t, headDim: d, into: $0.baseAddress!,
            ldo: ldo)
        }
      }
      var expected = [Double](repeating: 0, count: rows * t * h)
      var worst = 0.0
      for p in 0..<rows {
        for j in 0..<t {
          for head in 0..<h {
            var s = 0.0
            for c in 0..<d {
              s += Double(q[p * ldq + c * h + head]) * Double(k[(j * d + c) * h + head])
            }
            expected[(p * t + j) * h + head] = s
            worst = max(worst, abs(Double(scores[p * ldo + j * h + head]) - s))
          }
        }
        #expect(scores[(p * ldo + t * h)..<(p * ldo + ldo)].allSatisfy { $0 == 9 })
      }
      #expect(worst <= 1e-5, "\(level) scores")

      // Softmax over tokens, per head, with and without the per-column bias.
      for withBias in [false, true] {
        var s = scores
        SIMDLevel.capped(at: level) {
          s.withUnsafeMutableBufferPointer { sp in
            bias.withUnsafeBufferPointer { bp in
              HeadAttention.softmaxOverTokens(
                sp.baseAddress!, rows: rows, tokens: t, ld: ldo, scale: scale,
                bias: withBias ? bp.baseAddress! : nil)
            }
          }
        }
        var err = 0.0
        for p in 0..<rows {
          for head in 0..<h {
            let x = (0..<t).map {
              (Double(scores[p * ldo + $0 * h + head])
                + (withBias ? Double(bias[$0 * h + head]) : 0))
                * Double(scale)
            }
            let m = x.max()!
            let e = x.map { exp($0 - m) }
            let sum = e.reduce(0, +)
            for j in 0..<t { err = max(err, abs(Double(s[p * ldo + j * h + head]) - e[j] / sum)) }
          }
        }
        #expect(err <= 1e-6, "\(level) softmax over tokens, bias \(withBias)")
      }

      // Partial softmax down the columns (over image tokens), then the weighted values.
      let cols = t * h
      var dense = (0..<(rows * cols)).map { Float(expected[$0]) }
      var maxima = [Float](repeating: 0, count: cols)
      var sums = [Float](repeating: 0, count: cols)
      var acc = [Float](repeating: 0, count: t * d * h)
      SIMDLevel.capped(at: level) {
        dense.withUnsafeMutableBufferPointer { sp in
          HeadAttention.partialSoftmaxDownColumns(
            sp.baseAddress!, rows: rows, cols: cols, ld: cols, scale: scale, maxima: &maxima,
            sums: &sums)
          acc.withUnsafeMutableBufferPointer {
            HeadAttention.weightedValues(
              sp.baseAddress!, rows: rows, tokens: t, headDim: d, values: v, ldv: d * h,
              into: $0.baseAddress!)
          }
        }
      }
      var err = 0.0
      for col in 0..<cols {
        let m = (0..<rows).map { expected[$0 * cols + col] }.max()!
        #expect(abs(Double(maxima[col]) - m) <= 1e-5)
        let e = (0..<rows).map { exp((expected[$0 * cols + col] - m) * Double(scale)) }
        err = max(err, abs(Double(sums[col]) - e.reduce(0, +)) / Double(rows))
        let (j, head) = col.quotientAndRemainder(dividingBy: h)
        for c in 0..<d {
          var s = 0.0
          for p in 0..<rows { s += e[p] * Double(v[p * d * h + c * h + head]) }
          err = max(err, abs(Double(acc[(j * d + c) * h + head]) - s) / Double(rows))
        }
      }
      #expect(err <= 1e-6, "\(level) partial softmax and weighted values")
    }
  }

  /// Row-wise dot products (the LayerNorm statistics' quadratic forms) at widths around the
  /// vector lengths, with row strides wider than the rows.
  @Test(arguments: [1, 7, 8, 15, 16, 56, 112, 117])
  func rowDotsMatchPlainLoops(cols: Int) {
    let rows = 13
    let (lda, ldb) = (cols + 3, cols + 9)
    let a = Self.values(rows * lda, seed: 31)
    let b = Self.values(rows * ldb, seed: 32)
    for level in Self.levels {
      var out = [Float](repeating: 0, count: rows)
      SIMDLevel.capped(at: level) {
        HeadAttention.rowDots(a, lda: lda, b, ldb: ldb, rows: rows, cols: cols, into: &out)
      }
      for r in 0..<rows {
        var s = 0.0
        for c in 0..<cols { s += Double(a[r * lda + c]) * Double(b[r * ldb + c]) }
        #expect(abs(Double(out[r]) - s) <= 1e-5 * Double(cols), "\(level) row \(r) of \(cols)")
      }
    }
  }

  /// Per-row scales with shared and per-row offsets (the basis path's image-side rows), every
  /// optional part present and absent, at widths around the vector length, in place too.
  @Test(arguments: [3, 8, 56, 61])
  func scaleRowsMatchesPlainLoops(width: Int) {
    let rows = 5
    let (ldx, ldo, ldy) = (width + 2, width + 5, width + 1)
    let x = Self.values(rows * ldx, seed: 41)
    let inner = Self.values(rows, seed: 42)
    let outer = Self.values(rows, seed: 43)
    let shift = Self.values(width, seed: 44)
    let offset = Self.values(rows * ldo, seed: 45)
    for level in Self.levels {
      for parts in 0..<16 {
        let (useInner, useOuter) = (parts & 1 != 0, parts & 2 != 0)
        let (useShift, useOffset) = (parts & 4 != 0, parts & 8 != 0)
        var y = [Float](repeating: 7, count: rows * ldy)
        var inPlace = x
        SIMDLevel.capped(at: level) {
          HeadAttention.scaleRows(
            x, ldx: ldx, rows: rows, width: width, inner: useInner ? inner : nil,
            outer: useOuter ? outer : nil, shift: useShift ? shift : nil,
            offset: useOffset ? offset : nil, ldo: ldo, into: &y, ldy: ldy)
          inPlace.withUnsafeMutableBufferPointer {
            HeadAttention.scaleRows(
              $0.baseAddress!, ldx: ldx, rows: rows, width: width,
              inner: useInner ? inner : nil, outer: useOuter ? outer : nil,
              shift: useShift ? shift : nil, offset: useOffset ? offset : nil, ldo: ldo,
              into: $0.baseAddress!, ldy: ldx)
          }
        }
        for r in 0..<rows {
          for i in 0..<width {
            var v = Double(useInner ? inner[r] : 1) * Double(x[r * ldx + i])
            if useShift { v += Double(shift[i]) }
            if useOuter { v *= Double(outer[r]) }
            if useOffset { v += Double(offset[r * ldo + i]) }
            #expect(abs(Double(y[r * ldy + i]) - v) <= 1e-6, "\(level) parts \(parts)")
            #expect(inPlace[r * ldx + i] == y[r * ldy + i], "\(level) parts \(parts) in place")
          }
          #expect(y[(r * ldy + width)..<(r * ldy + ldy)].allSatisfy { $0 == 7 })
        }
      }
    }
  }

  /// The decoder's last step: GELU of each 32-channel row plus bias, dotted with each mask's
  /// vector. With one-hot vectors the result is the GELU itself, which must equal
  /// `RowOps.gelu` bit for bit at every level (the decisive everything-mode fixtures amplify
  /// a single ulp).
  @Test func geluDotMatchesTheScalarFormula() {
    let (rows, width) = (45, 32)
    let z = Self.values(rows * width, seed: 21, scale: 6)
    let bias = Self.values(width, seed: 22)
    let hyper = Self.values(3 * width, seed: 23)
    var oneHot = [Float](repeating: 0, count: width * width)
    for c in 0..<width { oneHot[c * width + c] = 1 }
    for level in Self.levels {
      var out = [Float](repeating: 0, count: rows * 3)
      var gelus = [Float](repeating: 0, count: rows * width)
      SIMDLevel.capped(at: level) {
        HeadAttention.geluDot(
          z, rows: rows, width: width, bias: bias, vectors: hyper, count: 3, into: &out)
        HeadAttention.geluDot(
          z, rows: rows, width: width, bias: bias, vectors: oneHot, count: width, into: &gelus)
      }
      var worst = 0.0
      for r in 0..<rows {
        for c in 0..<width {
          #expect(
            gelus[r * width + c] == RowOps.gelu(z[r * width + c] + bias[c]),
            "\(level): GELU of \(z[r * width + c] + bias[c])")
        }
        for m in 0..<3 {
          var s = 0.0
          for c in 0..<width { s += Double(gelus[r * width + c]) * Double(hyper[m * width + c]) }
          worst = max(worst, abs(Double(out[r * 3 + m]) - s))
        }
      }
      #expect(worst <= 1e-5, "\(level) gelu dot")
    }
  }

  /// The folded upscaling's epilogue: two affine maps per row, a LayerNorm per 64 channels and
  /// the erf GELU, against a double-precision LayerNorm followed by the exact erf GELU.
  @Test func foldedLayerNormGELUMatchesPlainLoops() {
    let tokens = 9
    let y0 = Self.values(tokens * 256, seed: 41, scale: 2)
    let base = Self.values(tokens * 256, seed: 42, scale: 2)
    let (a0, a1) = (Self.values(tokens, seed: 43), Self.values(tokens, seed: 44))
    let (u0, u1, u2) = (
      Self.values(256, seed: 45), Self.values(256, seed: 46), Self.values(256, seed: 47)
    )
    let (w, b) = (Self.values(64, seed: 48), Self.values(64, seed: 49))
    for level in Self.levels {
      var y = y0
      SIMDLevel.capped(at: level) {
        HeadAttention.foldedLayerNormGELU(
          &y, base: base, tokens: tokens, innerScale: a0, outerScale: a1, innerOffset: u0,
          middleOffset: u1, outerOffset: u2, weight: w, bias: b, eps: 1e-6)
      }
      var worst = 0.0
      for p in 0..<tokens {
        let v = (0..<256).map { c -> Double in
          let t = Double(a0[p]) * (Double(base[p * 256 + c]) + Double(u0[c])) + Double(u1[c])
          return Double(a1[p]) * (t + Double(y0[p * 256 + c])) + Double(u2[c])
        }
        for s in 0..<4 {
          let x = v[(64 * s)..<(64 * s + 64)]
          let mean = x.reduce(0, +) / 64
          let variance = x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 64
          for c in 0..<64 {
            let n =
              (x[64 * s + c] - mean) / (variance + 1e-6).squareRoot() * Double(w[c]) + Double(b[c])
            let g = 0.5 * n * (1 + erf(n / 2.0.squareRoot()))
            worst = max(worst, abs(Double(y[p * 256 + 64 * s + c]) - g))
          }
        }
      }
      #expect(worst <= 1e-5, "\(level) folded LayerNorm GELU")
    }
  }

  /// The vector GELUs (encoder tanh, decoder erf) perform the portable formulas operation for
  /// operation: bit-identical at every level.
  @Test func vectorGELUsAreBitIdenticalToThePortableLoops() {
    var values = stride(from: Float(-12), through: 12, by: 0.0061).map { $0 }
    values += Self.values(4099, seed: 31, scale: 8)
    let x = Tensor(shape: [values.count], storage: values)
    let bias = Self.values(values.count, seed: 32, scale: 0.5)
    let portable = SIMDLevel.capped(at: .portable) {
      (
        activate(x, .geluTanh),
        Self.biasGELU(values, bias)
      )
    }
    for level in Self.levels where level != .portable {
      let vector = SIMDLevel.capped(at: level) {
        (activate(x, .geluTanh), Self.biasGELU(values, bias))
      }
      #expect(vector.0.storage == portable.0.storage, "\(level): tanh GELU")
      #expect(vector.1 == portable.1, "\(level): erf GELU")
    }
    #expect(portable.1 == zip(values, bias).map { RowOps.gelu($0 + $1) })
  }

  static func biasGELU(_ x: [Float], _ bias: [Float]) -> [Float] {
    var y = x
    y.withUnsafeMutableBufferPointer {
      RowOps.biasGELU(
        $0.baseAddress!, rows: 1, cols: x.count, stride: x.count, bias: bias, serial: true)
    }
    return y
  }
}
