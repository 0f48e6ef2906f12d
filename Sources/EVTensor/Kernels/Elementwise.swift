/// Same-shape elementwise arithmetic. Shapes must match exactly: broadcasting hides shape bugs in
/// a port, so the one broadcast the model needs (per-channel bias) has its own function.

@inline(__always)
private func zipMap(
  _ a: Tensor, _ b: Tensor, _ name: String,
  _ op: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
) -> Tensor {
  precondition(a.shape == b.shape, "\(name): shapes differ, \(a.shape) vs \(b.shape)")
  return Tensor(uninitializedShape: a.shape) { out in
    guard out.count > 0 else { return }
    a.withUnsafeBufferPointer { pa in
      b.withUnsafeBufferPointer { pb in
        let (x, y, z) = (pa.baseAddress!, pb.baseAddress!, out.baseAddress!)
        Parallel.forRanges(count: out.count) { r in
          op(x + r.lowerBound, y + r.lowerBound, z + r.lowerBound, r.count)
        }
      }
    }
  }
}

public func + (a: Tensor, b: Tensor) -> Tensor {
  zipMap(a, b, "+") { x, y, z, n in for i in 0..<n { z[i] = x[i] + y[i] } }
}

public func - (a: Tensor, b: Tensor) -> Tensor {
  zipMap(a, b, "-") { x, y, z, n in for i in 0..<n { z[i] = x[i] - y[i] } }
}

public func * (a: Tensor, b: Tensor) -> Tensor {
  zipMap(a, b, "*") { x, y, z, n in for i in 0..<n { z[i] = x[i] * y[i] } }
}

public func * (a: Tensor, s: Float) -> Tensor {
  Tensor(uninitializedShape: a.shape) { out in
    guard out.count > 0 else { return }
    a.withUnsafeBufferPointer { pa in
      let (x, z) = (pa.baseAddress!, out.baseAddress!)
      Parallel.forRanges(count: out.count) { r in
        for i in r { z[i] = x[i] * s }
      }
    }
  }
}

public func addInPlace(_ a: inout Tensor, _ b: Tensor) {
  precondition(a.shape == b.shape, "addInPlace: shapes differ, \(a.shape) vs \(b.shape)")
  guard a.count > 0 else { return }
  b.withUnsafeBufferPointer { pb in
    a.withUnsafeMutableBufferPointer { pa in
      let (x, y) = (pa.baseAddress!, pb.baseAddress!)
      Parallel.forRanges(count: pa.count) { r in
        for i in r { x[i] += y[i] }
      }
    }
  }
}

/// x [N, C, ...] + v[C], v broadcast over everything after the channel dimension.
public func addChannelBias(_ x: Tensor, _ v: Tensor) -> Tensor {
  precondition(x.rank >= 2, "addChannelBias: input must be [N, C, ...], got \(x.shape)")
  let c = x.shape[1]
  precondition(v.count == c, "addChannelBias: \(v.count) values for \(c) channels")
  let inner = x.shape.dropFirst(2).reduce(1, *)
  let planes = x.shape[0] * c
  return Tensor(uninitializedShape: x.shape) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      v.withUnsafeBufferPointer { pv in
        let (src, dst, bias) = (px.baseAddress!, out.baseAddress!, pv.baseAddress!)
        Parallel.forEach(count: planes, costPerItem: inner) { plane in
          let b = bias[plane % c]
          let s = src + plane * inner
          let d = dst + plane * inner
          for i in 0..<inner { d[i] = s[i] + b }
        }
      }
    }
  }
}
