import EVTensor
import Testing

@Suite struct LinearAlgebraTests {
  struct GemmCase: CustomTestStringConvertible, Sendable {
    let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, pad: Int, alpha: Float, beta: Float
    var testDescription: String {
      "tA=\(transA) tB=\(transB) \(m)×\(n)×\(k) pad \(pad) α=\(alpha) β=\(beta)"
    }

    /// Operands stored as the flags say, each row `pad` floats longer than the matrix.
    var lda: Int { (transA ? m : k) + pad }
    var ldb: Int { (transB ? k : n) + pad }
    var ldc: Int { n + pad }
    func operands(seeds: (UInt64, UInt64)) -> (a: Tensor, b: Tensor) {
      (
        .random([max(transA ? k : m, 1), lda], seed: seeds.0),
        .random([max(transB ? n : k, 1), ldb], seed: seeds.1)
      )
    }

    enum Product { case split, serial, reference }

    /// `c = alpha·op(a)·op(b) + beta·c` with `BLAS.sgemm`, `BLAS.serialSgemm` or the reference.
    func multiply(_ a: Tensor, _ b: Tensor, into c: inout Tensor, with product: Product) {
      a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
          c.withUnsafeMutableBufferPointer { pc in
            let (a, b, c) = (pa.baseAddress!, pb.baseAddress!, pc.baseAddress!)
            switch product {
            case .split:
              BLAS.sgemm(
                transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            case .serial:
              BLAS.serialSgemm(
                transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            case .reference:
              Reference.sgemm(
                transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            }
          }
        }
      }
    }
  }

  static let gemmCases: [GemmCase] = {
    var cases: [GemmCase] = []
    for transA in [false, true] {
      for transB in [false, true] {
        cases.append(
          GemmCase(transA: transA, transB: transB, m: 7, n: 13, k: 5, pad: 0, alpha: 1, beta: 0))
        cases.append(
          GemmCase(
            transA: transA, transB: transB, m: 33, n: 17, k: 65, pad: 3, alpha: 0.5, beta: 1.5))
        cases.append(
          GemmCase(transA: transA, transB: transB, m: 1, n: 129, k: 31, pad: 1, alpha: -2, beta: 0))
      }
    }
    cases.append(
      GemmCase(transA: false, transB: false, m: 4, n: 3, k: 0, pad: 0, alpha: 1, beta: 0.5))
    return cases
  }()

  /// BLAS.sgemm with leading dimensions larger than the matrices, against dot products.
  @Test(arguments: gemmCases)
  func sgemmMatchesReference(_ c: GemmCase) {
    let (a, b) = c.operands(seeds: (1, 2))
    let ldc = c.ldc
    let c0 = Tensor.random([c.m, ldc], seed: 3)
    var fast = c0
    var reference = c0
    c.multiply(a, b, into: &fast, with: .split)
    c.multiply(a, b, into: &reference, with: .reference)
    expectClose(fast, reference, c.testDescription)
    // Padding columns of C are outside the product and must be untouched.
    for i in 0..<c.m {
      for j in c.n..<ldc { #expect(fast[i, j] == c0[i, j]) }
    }
  }

  /// Products above `BLAS.ownKernelThreshold`, which on an AVX-512 CPU run in our packed
  /// kernel (`evk_sgemm_large`) and below that level in the platform BLAS: ragged 8-row tiles
  /// and 48/32/16-column panels, several k blocks (k > 320), several column blocks, more rows
  /// than one row block (256), both transposes, alpha and beta, padded leading dimensions. Run
  /// on the calling thread at every instruction-set level this CPU has.
  static let largeGemmCases: [GemmCase] = [
    GemmCase(transA: false, transB: false, m: 37, n: 101, k: 700, pad: 3, alpha: 0.5, beta: 1.5),
    GemmCase(transA: true, transB: false, m: 37, n: 101, k: 700, pad: 0, alpha: 1, beta: 0),
    GemmCase(transA: false, transB: true, m: 9, n: 2000, k: 300, pad: 5, alpha: 1, beta: 1),
    GemmCase(transA: true, transB: true, m: 300, n: 50, k: 40, pad: 1, alpha: -2, beta: 0),
    GemmCase(transA: false, transB: false, m: 64, n: 1030, k: 96, pad: 0, alpha: 1, beta: 0),
  ]

  @Test(arguments: largeGemmCases)
  func largeSgemmMatchesReferenceAtEveryLevel(_ c: GemmCase) {
    let (a, b) = c.operands(seeds: (11, 12))
    let ldc = c.ldc
    // NaN in C where beta = 0: the product must overwrite it, never scale it.
    let c0 =
      c.beta == 0 ? Tensor(repeating: .nan, shape: [c.m, ldc]) : .random([c.m, ldc], seed: 13)
    var reference = c.beta == 0 ? Tensor(zeros: [c.m, ldc]) : c0
    c.multiply(a, b, into: &reference, with: .reference)
    for level in SIMDLevel.supported {
      var fast = c0
      SIMDLevel.capped(at: level) { c.multiply(a, b, into: &fast, with: .serial) }
      let product = fast.withUnsafeBufferPointer { p in
        (0..<c.m).flatMap { i in (0..<c.n).map { p[i * ldc + $0] } }
      }
      let expected = reference.withUnsafeBufferPointer { p in
        (0..<c.m).flatMap { i in (0..<c.n).map { p[i * ldc + $0] } }
      }
      expectClose(
        Tensor(shape: [c.m, c.n], storage: product), Tensor(shape: [c.m, c.n], storage: expected),
        "\(c.testDescription) at \(level)")
      // Padding columns of C are outside the product and must be untouched.
      for i in 0..<c.m {
        for j in c.n..<ldc where !(fast[i, j] == c0[i, j] || (fast[i, j].isNaN && c0[i, j].isNaN)) {
          Issue.record("\(c.testDescription) at \(level): padding C[\(i), \(j)] changed")
        }
      }
    }
  }

  /// The fused per-row bias and activation (`rowBias:`, `activation:`) against the product
  /// followed by a separate bias add and `activate`: bit for bit, at every instruction-set
  /// level, for products above and below `BLAS.ownKernelThreshold`, split over threads or not,
  /// and for activations the AVX-512 kernel fuses (identity, ReLU, tanh GELU) and one it
  /// leaves to the separate pass (erf GELU).
  @Test(arguments: [Activation.identity, .relu, .geluTanh, .geluErf])
  func rowEpilogueMatchesASeparatePass(_ activation: Activation) {
    for (m, n, k) in [(37, 301, 100), (64, 4100, 72), (5, 9, 7)] {
      let a = Tensor.random([m, k], seed: 21)
      let b = Tensor.random([k, n], seed: 22)
      let bias = Tensor.random([m], seed: 23, in: -2...2)
      for level in SIMDLevel.supported {
        for split in [false, true] {
          // Row-major, unpadded; the epilogue's bias and activation optional.
          func product(
            into c: inout Tensor, rowBias: UnsafePointer<Float>?, activation: Activation
          ) {
            a.withUnsafeBufferPointer { pa in
              b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                  let (a, b, c) = (pa.baseAddress!, pb.baseAddress!, pc.baseAddress!)
                  if split {
                    BLAS.sgemm(
                      transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k,
                      b: b, ldb: n, beta: 0, c: c, ldc: n, rowBias: rowBias,
                      activation: activation)
                  } else {
                    BLAS.serialSgemm(
                      transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k,
                      b: b, ldb: n, beta: 0, c: c, ldc: n, rowBias: rowBias,
                      activation: activation)
                  }
                }
              }
            }
          }
          var fused = Tensor(repeating: .nan, shape: [m, n])
          var separate = Tensor(repeating: .nan, shape: [m, n])
          SIMDLevel.capped(at: level) {
            bias.withUnsafeBufferPointer { pbias in
              product(into: &fused, rowBias: pbias.baseAddress!, activation: activation)
              product(into: &separate, rowBias: nil, activation: .identity)
            }
          }
          separate.withUnsafeMutableBufferPointer { pc in
            for i in 0..<m where bias.storage[i] != 0 {
              for j in 0..<n { pc[i * n + j] += bias.storage[i] }
            }
          }
          separate = activate(separate, activation)
          let context = "\(m)×\(n)×\(k) \(activation) at \(level), split \(split)"
          let written = fused.storage.allSatisfy { $0.isFinite }
          #expect(written, "\(context): C not fully written")
          let identical = zip(fused.storage, separate.storage).allSatisfy {
            $0.bitPattern == $1.bitPattern
          }
          #expect(identical, "\(context): fused epilogue differs from the separate pass")
        }
      }
    }
  }

  /// beta = 0 must overwrite C even if it holds NaN (conv and matmul hand BLAS uninitialised memory).
  @Test func sgemmBetaZeroIgnoresGarbage() {
    let a = Tensor.random([3, 4], seed: 5)
    let b = Tensor.random([4, 2], seed: 6)
    var c = Tensor(repeating: .nan, shape: [3, 2])
    a.withUnsafeBufferPointer { pa in
      b.withUnsafeBufferPointer { pb in
        c.withUnsafeMutableBufferPointer { pc in
          BLAS.sgemm(
            transA: false, transB: false, m: 3, n: 2, k: 4, alpha: 1, a: pa.baseAddress!, lda: 4,
            b: pb.baseAddress!, ldb: 2, beta: 0, c: pc.baseAddress!, ldc: 2)
        }
      }
    }
    expectClose(c, Reference.matmul(a, b))
  }

  struct MatmulCase: CustomTestStringConvertible, Sendable {
    let a: [Int], b: [Int], transA: Bool, transB: Bool
    var testDescription: String { "\(a)\(transA ? "ᵀ" : "") × \(b)\(transB ? "ᵀ" : "")" }
  }

  static let matmulCases: [MatmulCase] = [
    MatmulCase(a: [5, 7], b: [7, 3], transA: false, transB: false),
    MatmulCase(a: [7, 5], b: [7, 3], transA: true, transB: false),
    MatmulCase(a: [5, 7], b: [3, 7], transA: false, transB: true),
    MatmulCase(a: [7, 5], b: [3, 7], transA: true, transB: true),
    MatmulCase(a: [2, 3, 9, 17], b: [2, 3, 17, 11], transA: false, transB: false),
    MatmulCase(a: [4, 17, 9], b: [4, 11, 17], transA: true, transB: true),
    MatmulCase(a: [3, 33, 8], b: [3, 33, 5], transA: true, transB: false),
    // Rank-2 right operand broadcast over the left's batch (folded into one GEMM when possible).
    MatmulCase(a: [2, 3, 6, 10], b: [10, 4], transA: false, transB: false),
    MatmulCase(a: [2, 3, 6, 10], b: [4, 10], transA: false, transB: true),
    MatmulCase(a: [5, 10, 6], b: [10, 4], transA: true, transB: false),
    // Rank-2 left operand broadcast over the right's batch.
    MatmulCase(a: [6, 10], b: [2, 3, 10, 4], transA: false, transB: false),
    MatmulCase(a: [10, 6], b: [3, 4, 10], transA: true, transB: true),
    MatmulCase(a: [1, 1], b: [1, 1], transA: false, transB: false),
  ]

  @Test(arguments: matmulCases)
  func matmulMatchesReference(_ c: MatmulCase) {
    let a = Tensor.random(c.a, seed: 21)
    let b = Tensor.random(c.b, seed: 22)
    let fast = matmul(a, b, transposeA: c.transA, transposeB: c.transB)
    let reference = Reference.matmul(a, b, transposeA: c.transA, transposeB: c.transB)
    expectClose(fast, reference, c.testDescription)
  }

  @Test func matmulSmallKnownProduct() {
    let a = Tensor(shape: [2, 3], storage: [1, 2, 3, 4, 5, 6])
    let b = Tensor(shape: [3, 2], storage: [7, 8, 9, 10, 11, 12])
    let y = matmul(a, b)
    #expect(y.shape == [2, 2])
    #expect(y.storage == [58, 64, 139, 154])
    #expect(matmul(a, a, transposeB: true).storage == [14, 32, 32, 77])
  }

  @Test(arguments: [Activation.identity, .relu, .geluTanh, .geluErf, .hardswish])
  func linearMatchesReference(_ act: Activation) {
    let x = Tensor.random([2, 7, 37], seed: 31, in: -2...2)
    let w = Tensor.random([19, 37], seed: 32, in: -0.5...0.5)
    let b = Tensor.random([19], seed: 33)
    expectClose(
      linear(x, weight: w, bias: b, activation: act),
      Reference.linear(x, weight: w, bias: b, activation: act), "with bias, \(act)")
    expectClose(
      linear(x, weight: w, bias: nil, activation: act),
      Reference.linear(x, weight: w, bias: nil, activation: act), "no bias, \(act)")
  }

  @Test func linearOnVectorAndLargeBatch() {
    let w = Tensor.random([64, 48], seed: 41)
    let b = Tensor.random([64], seed: 42)
    let v = Tensor.random([48], seed: 43)
    expectClose(linear(v, weight: w, bias: b), Reference.linear(v, weight: w, bias: b))
    // Enough rows that the epilogue is split across threads.
    let x = Tensor.random([1500, 48], seed: 44)
    expectClose(
      linear(x, weight: w, bias: b, activation: .geluErf),
      Reference.linear(x, weight: w, bias: b, activation: .geluErf))
  }
}
