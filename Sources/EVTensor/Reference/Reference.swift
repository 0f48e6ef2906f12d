import Foundation

/// Plain, obviously-correct twins of the fast kernels: the same signatures, nested loops over the
/// mathematical definition, Double accumulation, libm for transcendental functions, no BLAS and
/// no threads. Tests hold every fast kernel against its twin; nothing else should call these.
package enum Reference {
  package static func activation(_ x: Float, _ act: Activation) -> Float {
    let v = Double(x)
    switch act {
    case .identity: return x
    case .relu: return max(x, 0)
    // The textbook forms 0.5·v·(1 + tanh u) and 0.5·v·(1 + erf z) cancel catastrophically for
    // v below about −6 even in Double, so the reference uses the equal forms v·σ(2u) and
    // 0.5·v·erfc(−z), which are accurate in relative terms down to underflow.
    case .geluTanh:
      let u = (2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)
      return Float(v / (1 + Foundation.exp(-2 * u)))
    case .geluErf:
      return Float(0.5 * v * Foundation.erfc(-v / 2.0.squareRoot()))
    case .hardswish:
      return Float(v * min(max(v + 3, 0), 6) / 6)
    }
  }

  package static func activate(_ x: Tensor, _ act: Activation) -> Tensor {
    Tensor(shape: x.shape, storage: x.storage.map { activation($0, act) })
  }

  package static func activateInPlace(_ x: inout Tensor, _ act: Activation) {
    x = activate(x, act)
  }

  /// Row-major C = alpha·op(A)·op(B) + beta·C, one dot product per element.
  package static func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    for i in 0..<m {
      for j in 0..<n {
        var acc = 0.0
        for p in 0..<k {
          let av = transA ? a[p * lda + i] : a[i * lda + p]
          let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
          acc += Double(av) * Double(bv)
        }
        let prior = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
        c[i * ldc + j] = Float(Double(alpha) * acc + prior)
      }
    }
  }

  // MARK: Elementwise

  package static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape)
    return Tensor(shape: a.shape, storage: zip(a.storage, b.storage).map { $0 + $1 })
  }

  package static func subtract(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape)
    return Tensor(shape: a.shape, storage: zip(a.storage, b.storage).map { $0 - $1 })
  }

  package static func multiply(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape)
    return Tensor(shape: a.shape, storage: zip(a.storage, b.storage).map { $0 * $1 })
  }

  package static func multiply(_ a: Tensor, _ s: Float) -> Tensor {
    Tensor(shape: a.shape, storage: a.storage.map { $0 * s })
  }

  package static func addInPlace(_ a: inout Tensor, _ b: Tensor) {
    a = add(a, b)
  }

  package static func addChannelBias(_ x: Tensor, _ v: Tensor) -> Tensor {
    let c = x.shape[1]
    let inner = x.shape.dropFirst(2).reduce(1, *)
    var y = x
    for i in 0..<x.count { y.storage[i] += v.storage[(i / inner) % c] }
    return y
  }

  // MARK: Shape

  package static func pad2d(
    _ x: Tensor, top: Int, bottom: Int, left: Int, right: Int, value: Float = 0
  ) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var y = Tensor(repeating: value, shape: [n, c, h + top + bottom, w + left + right])
    for b in 0..<n {
      for ch in 0..<c {
        for i in 0..<h {
          for j in 0..<w { y[b, ch, i + top, j + left] = x[b, ch, i, j] }
        }
      }
    }
    return y
  }

  /// Row-major strides of a shape.
  static func strides(_ shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    for i in stride(from: shape.count - 2, through: 0, by: -1) { s[i] = s[i + 1] * shape[i + 1] }
    return s
  }

  /// Visits every element of `shape` in row-major order, passing its flat position and the
  /// matching position in a tensor with `strides` (an odometer, so no index arrays per element).
  static func walk(_ shape: [Int], strides: [Int], _ body: (Int, Int) -> Void) {
    let count = shape.reduce(1, *)
    guard count > 0 else { return }
    var index = [Int](repeating: 0, count: shape.count)
    var source = 0
    for flat in 0..<count {
      body(flat, source)
      var d = shape.count - 1
      while d >= 0 {
        index[d] += 1
        source += strides[d]
        if index[d] < shape[d] { break }
        source -= strides[d] * shape[d]
        index[d] = 0
        d -= 1
      }
    }
  }

  package static func concat(_ xs: [Tensor], axis: Int) -> Tensor {
    let a = axis < 0 ? axis + xs[0].rank : axis
    var shape = xs[0].shape
    shape[a] = xs.reduce(0) { $0 + $1.shape[a] }
    var y = Tensor(zeros: shape)
    let outStrides = strides(shape)
    var offset = 0
    for t in xs {
      // Element i of t lands at its own multi-index, shifted by `offset` along the axis.
      walk(t.shape, strides: outStrides) { i, target in
        y.storage[target + offset * outStrides[a]] = t.storage[i]
      }
      offset += t.shape[a]
    }
    return y
  }

  package static func split(_ x: Tensor, sizes: [Int], axis: Int) -> [Tensor] {
    var start = 0
    return sizes.map { size in
      defer { start += size }
      return slice(x, axis: axis, range: start..<(start + size))
    }
  }

  package static func slice(_ x: Tensor, axis: Int, range: Range<Int>) -> Tensor {
    let a = axis < 0 ? axis + x.rank : axis
    var shape = x.shape
    shape[a] = range.count
    var y = Tensor(zeros: shape)
    let inStrides = strides(x.shape)
    let base = range.lowerBound * inStrides[a]
    walk(shape, strides: inStrides) { i, source in y.storage[i] = x.storage[base + source] }
    return y
  }

  package static func permute(_ x: Tensor, _ perm: [Int]) -> Tensor {
    let shape = perm.map { x.shape[$0] }
    var y = Tensor(zeros: shape)
    // Output axis d walks input axis perm[d].
    let inStrides = strides(x.shape)
    walk(shape, strides: perm.map { inStrides[$0] }) { i, source in
      y.storage[i] = x.storage[source]
    }
    return y
  }
}
